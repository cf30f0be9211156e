// swift-tools-version:6.0
import PackageDescription

// `swift test` links every test target into one executable, so test targets that link two plugins see two
// definitions of the entry symbol `ctd_plugin_create`; tests never call it. The shipped plugins are separate .so
// files and are not affected.
let pluginTestLinking: [LinkerSetting] = [.unsafeFlags(["-Xlinker", "--allow-multiple-definition"])]

let package = Package(
    name: "ctd",
    products: [
        .executable(name: "ctd", targets: ["ctd"]),
        .executable(name: "ctd-fill", targets: ["ctd-fill"]),
        // Each plugin is its own shared object, dlopen'ed by the host from the plugin directory.
        .library(name: "AuthSHA", type: .dynamic, targets: ["AuthSHA"]),
        .library(name: "UIDResolver", type: .dynamic, targets: ["UIDResolver"]),
        .library(name: "AuditSQLite", type: .dynamic, targets: ["AuditSQLite"]),
        .library(name: "AuthPAM", type: .dynamic, targets: ["AuthPAM"]),
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
        .systemLibrary(
            name: "CSQLite", path: "Sources/CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // The audit log: shared by the AuditSQLite plugin (writing) and `ctd audit` (reading, verifying).
        .target(name: "AuditLog", dependencies: ["CSQLite", "CCrypt"], path: "Sources/AuditLog"),
        .target(
            name: "CtdHost",
            dependencies: [
                "CConntrack",
                "PasswordFile",
                "AuditLog",
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
        .target(name: "CPAM", path: "Sources/CPAM", linkerSettings: [.linkedLibrary("pam")]),
        .target(name: "NSSLookup", path: "Sources/NSSLookup"),
        .target(
            name: "AuthPAM",
            dependencies: ["CPAM", "NSSLookup", .product(name: "CtdPluginAPI", package: "CtdPluginAPI")],
            path: "Plugins/AuthPAM/Sources"
        ),
        .testTarget(
            name: "AuthPAMTests",
            // dlopens the built libAuthPAM.so as the host does.
            dependencies: [.product(name: "CtdPluginAPI", package: "CtdPluginAPI")],
            path: "Tests/AuthPAMTests"
        ),
        .target(
            name: "AuditSQLite",
            dependencies: ["AuditLog", .product(name: "CtdPluginAPI", package: "CtdPluginAPI")],
            path: "Plugins/AuditSQLite/Sources"
        ),
        .target(
            name: "UIDResolver",
            dependencies: ["NSSLookup", .product(name: "CtdPluginAPI", package: "CtdPluginAPI")],
            path: "Plugins/UIDResolver/Sources"
        ),
        .testTarget(name: "AuditLogTests", dependencies: ["AuditLog"], path: "Tests/AuditLogTests"),
        .testTarget(
            name: "AuditSQLiteTests",
            dependencies: ["AuditSQLite", "AuditLog", .product(name: "CtdPluginAPI", package: "CtdPluginAPI")],
            path: "Plugins/AuditSQLite/Tests/AuditSQLiteTests",
            linkerSettings: pluginTestLinking
        ),
        .testTarget(
            name: "UIDResolverTests",
            dependencies: ["UIDResolver", .product(name: "CtdPluginAPI", package: "CtdPluginAPI")],
            path: "Tests/UIDResolverTests",
            linkerSettings: pluginTestLinking
        ),
        .testTarget(
            name: "CtdHostTests",
            dependencies: ["CtdHost", "PasswordFile"],
            path: "Tests/CtdHostTests"
        ),
    ],
    swiftLanguageModes: [.v5]
)
