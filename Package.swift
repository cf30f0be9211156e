// swift-tools-version:6.0
import PackageDescription

// The module graph is the architecture (docs/design.md). Imports go one way:
//
//   CtdRuntime -> Conntrack -> ConntrackQuery -> CtdCore -> ctd
//                                 XMLRPC ------^      ^
//                                 PluginHost ---------'      HTTPTransport -> ctd
//
// A lower module never names a higher one. The plugin API and the shared support library are packages of their own,
// so that every image in the process shares one copy of each (docs/design.md, "Plugins over dlopen").

let nio: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
]
let api: Target.Dependency = .product(name: "CtdPluginAPI", package: "CtdPluginAPI")
let support: Target.Dependency = .product(name: "CtdSupport", package: "CtdSupport")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")

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
        .library(name: "AuditSyslog", type: .dynamic, targets: ["AuditSyslog"]),
    ],
    dependencies: [
        .package(path: "Sources/CtdPluginAPI"),
        .package(path: "Sources/CtdSupport"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C shims, one per C library.
        .target(
            name: "CConntrack",
            path: "Sources/CConntrack",
            linkerSettings: [.linkedLibrary("netfilter_conntrack"), .linkedLibrary("nfnetlink")]
        ),
        .target(name: "CProcess", path: "Sources/CProcess"),
        // Dropping root for a user, keeping CAP_NET_ADMIN (raw system calls; no library needed).
        .target(name: "CPrivileges", path: "Sources/CPrivileges"),
        // libxml2's SAX2 parser (Debian's libxml2), under the XML-RPC decoder.
        .target(
            name: "CXML", path: "Sources/CXML", cSettings: [.unsafeFlags(["-I/usr/include/libxml2"])],
            linkerSettings: [.linkedLibrary("xml2")]
        ),
        .target(name: "CSystemd", path: "Sources/CSystemd", linkerSettings: [.linkedLibrary("systemd")]),
        .target(name: "CPAM", path: "Sources/CPAM", linkerSettings: [.linkedLibrary("pam")]),

        // The host, bottom to top.
        .target(name: "CtdRuntime", dependencies: ["CProcess"], path: "Sources/CtdRuntime"),
        .target(
            name: "Conntrack", dependencies: ["CConntrack", "CtdRuntime", logging] + nio, path: "Sources/Conntrack"),
        .target(name: "ConntrackQuery", dependencies: ["Conntrack"], path: "Sources/ConntrackQuery"),
        .target(name: "XMLRPC", dependencies: ["CXML"], path: "Sources/XMLRPC"),
        .target(name: "PluginHost", dependencies: [api, logging] + nio, path: "Sources/PluginHost"),
        .target(
            name: "CtdCore",
            dependencies: [
                "Conntrack", "ConntrackQuery", "XMLRPC", "PluginHost", "CtdRuntime", api, logging,
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ] + nio,
            path: "Sources/CtdCore"
        ),
        .target(
            name: "HTTPTransport",
            dependencies: [
                logging,
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Sources/HTTPTransport"
        ),
        .executableTarget(
            name: "ctd",
            dependencies: [
                "CtdCore", "HTTPTransport", "PluginHost", "Conntrack", "CtdRuntime", "CSystemd", "CPrivileges", api,
                support, logging,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Sources/ctd",
            // After `make install` the binary lives in PREFIX/bin and the shared libraries in PREFIX/lib/ctd.
            linkerSettings: [.unsafeFlags(["-Xlinker", "-rpath=$ORIGIN/../lib/ctd"])]
        ),
        // Test and benchmark helper: fills a namespace's table through netlink.
        .executableTarget(
            name: "ctd-fill", path: "Tools/ctd-fill",
            linkerSettings: [.linkedLibrary("netfilter_conntrack"), .linkedLibrary("nfnetlink")]
        ),

        // Plugins: one folder each (README, sample config, Sources, Tests).
        .target(name: "AuthSHA", dependencies: [support, api], path: "Plugins/AuthSHA/Sources"),
        .target(name: "AuthPAM", dependencies: ["CPAM", support, api], path: "Plugins/AuthPAM/Sources"),
        .target(name: "AuditSQLite", dependencies: [support, api], path: "Plugins/AuditSQLite/Sources"),
        .target(name: "UIDResolver", dependencies: [support, api], path: "Plugins/UIDResolver/Sources"),
        // AuditSyslog: its TLS and datagram client (Debian's OpenSSL), the formatter and queue, the plugin.
        .target(
            name: "CSyslogTransport", path: "Plugins/AuditSyslog/Sources/CSyslogTransport",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        .target(
            name: "SyslogForwarding", dependencies: ["CSyslogTransport", api],
            path: "Plugins/AuditSyslog/Sources/SyslogForwarding"),
        .target(
            name: "AuditSyslog", dependencies: ["SyslogForwarding", api],
            path: "Plugins/AuditSyslog/Sources/AuditSyslog"),

        // Loads a built plugin .so the way the host does, for the plugins' own tests.
        .target(name: "CtdPluginTestKit", dependencies: ["PluginHost", api], path: "Tests/CtdPluginTestKit"),
        // The randomized tests' generator, shared by the test targets that use one.
        .target(name: "TestSupport", path: "Tests/TestSupport"),

        // Tests: unit tests per module; the kernel suite (KernelIntegration) runs inside `unshare -n`.
        .testTarget(name: "XMLRPCTests", dependencies: ["XMLRPC"], path: "Tests/XMLRPCTests"),
        .testTarget(name: "ConntrackTests", dependencies: ["Conntrack", "CtdRuntime"], path: "Tests/ConntrackTests"),
        .testTarget(
            name: "ConntrackQueryTests", dependencies: ["ConntrackQuery", "Conntrack", "TestSupport"],
            path: "Tests/ConntrackQueryTests"),
        .testTarget(
            name: "CtdCoreTests",
            dependencies: [
                "CtdCore", "Conntrack", "ConntrackQuery", "XMLRPC", "PluginHost", "CtdRuntime", "TestSupport", api,
            ],
            path: "Tests/CtdCoreTests"
        ),
        .testTarget(name: "CtdTests", dependencies: ["ctd", support], path: "Tests/CtdTests"),
        .testTarget(name: "AuditLogTests", dependencies: [support], path: "Tests/AuditLogTests"),
        .testTarget(name: "PasswordFileTests", dependencies: [support], path: "Tests/PasswordFileTests"),
        .testTarget(
            name: "AuthSHATests", dependencies: ["CtdPluginTestKit", api, support], path: "Plugins/AuthSHA/Tests"),
        .testTarget(name: "AuthPAMTests", dependencies: ["CtdPluginTestKit", api], path: "Plugins/AuthPAM/Tests"),
        .testTarget(
            name: "AuditSQLiteTests", dependencies: ["CtdPluginTestKit", support, api],
            path: "Plugins/AuditSQLite/Tests"),
        .testTarget(
            name: "AuditSyslogTests", dependencies: ["SyslogForwarding", "CtdPluginTestKit", "TestSupport", api],
            path: "Plugins/AuditSyslog/Tests"),
        .testTarget(
            name: "UIDResolverTests", dependencies: ["CtdPluginTestKit", api], path: "Plugins/UIDResolver/Tests"),
    ],
    swiftLanguageModes: [.v5]
)

// libFuzzer targets (Fuzz/README.md). They exist only when CTD_FUZZ=1 (`make fuzz`, `make fuzz-replay`), because
// they link only with `-sanitize=fuzzer`, which provides `main`; a plain `swift build` never sees them.
if Context.environment["CTD_FUZZ"] == "1" {
    let parseAsLibrary: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]
    package.targets += [
        .executableTarget(
            name: "XMLRPCDecoderFuzz", dependencies: ["XMLRPC"], path: "Fuzz/XMLRPCDecoderFuzz",
            swiftSettings: parseAsLibrary),
        .executableTarget(
            name: "RequestPathFuzz",
            dependencies: ["CtdCore", "Conntrack", "XMLRPC", "PluginHost", "CtdRuntime", api, logging],
            path: "Fuzz/RequestPathFuzz", swiftSettings: parseAsLibrary),
    ]
}
