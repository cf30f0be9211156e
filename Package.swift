// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "ctd",
    products: [
        .executable(name: "ctd", targets: ["ctd"]),
        .executable(name: "ctd-fill", targets: ["ctd-fill"]),
        // Each plugin is its own shared object, dlopen'ed by the host from the plugin directory.
        .library(name: "AuthSHA", type: .dynamic, targets: ["AuthSHA"]),
        .library(name: "UIDResolver", type: .dynamic, targets: ["UIDResolver"]),
    ],
    dependencies: [
        // The API must be its own package so that host and plugins share one libCtdPluginAPI.so (FACTS.md).
        .package(path: "Sources/CtdPluginAPI"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        .target(
            name: "CConntrack",
            path: "Sources/CConntrack",
            linkerSettings: [.linkedLibrary("netfilter_conntrack"), .linkedLibrary("nfnetlink")]
        ),
        .target(
            name: "CCrypt",
            path: "Sources/CCrypt",
            linkerSettings: [.linkedLibrary("crypt"), .linkedLibrary("crypto")]
        ),
        .target(name: "PasswordFile", dependencies: ["CCrypt"], path: "Sources/PasswordFile"),
        .target(
            name: "CtdHost",
            dependencies: [
                "CConntrack",
                "PasswordFile",
                .product(name: "CtdPluginAPI", package: "CtdPluginAPI"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            path: "Sources/CtdHost"
        ),
        .executableTarget(
            name: "ctd",
            dependencies: ["CtdHost"],
            path: "Sources/ctd",
            // After `make install` the binary lives in PREFIX/bin and the API library in PREFIX/lib/ctd.
            linkerSettings: [.unsafeFlags(["-Xlinker", "-rpath=$ORIGIN/../lib/ctd"])]
        ),
        // Test and benchmark helper: fills a namespace's table through netlink.
        .executableTarget(
            name: "ctd-fill", path: "Tools/ctd-fill",
            linkerSettings: [.linkedLibrary("netfilter_conntrack"), .linkedLibrary("nfnetlink")]
        ),
        .target(
            name: "AuthSHA",
            dependencies: ["PasswordFile", .product(name: "CtdPluginAPI", package: "CtdPluginAPI")],
            path: "Plugins/AuthSHA/Sources"
        ),
        .target(
            name: "UIDResolver",
            dependencies: [.product(name: "CtdPluginAPI", package: "CtdPluginAPI")],
            path: "Plugins/UIDResolver/Sources"
        ),
        .testTarget(
            name: "UIDResolverTests",
            dependencies: ["UIDResolver", .product(name: "CtdPluginAPI", package: "CtdPluginAPI")],
            path: "Tests/UIDResolverTests"
        ),
        .testTarget(
            name: "CtdHostTests",
            dependencies: ["CtdHost", "PasswordFile"],
            path: "Tests/CtdHostTests"
        ),
    ],
    swiftLanguageModes: [.v5]
)
