// swift-tools-version:6.0
// Support code that several plugins and the host share: the password file library (AuthSHA, `ctd passwd`), the
// NSS lookups (AuthPAM, UIDResolver) and the audit log format (AuditSQLite, `ctd audit`). It is its own package with a dynamic product for the same reason as the plugin
// API (docs/design.md, "Plugins over dlopen"): a target of the root package is linked statically into every image
// that uses it, so each plugin .so would get its own copy of NSSLookup's process-wide lock. Here one
// libCtdSupport.so is loaded and its state exists once per process.
import PackageDescription

let package = Package(
    name: "CtdSupport",
    products: [
        .library(name: "CtdSupport", type: .dynamic, targets: ["CCrypt", "PasswordFile", "NSSLookup", "AuditLog"])
    ],
    targets: [
        .target(
            name: "CCrypt",
            path: "CCrypt",
            linkerSettings: [.linkedLibrary("crypt"), .linkedLibrary("crypto")]
        ),
        .target(name: "PasswordFile", dependencies: ["CCrypt"], path: "PasswordFile"),
        .systemLibrary(name: "CSQLite", path: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "AuditLog", dependencies: ["CSQLite", "CCrypt"], path: "AuditLog"),
        .target(
            name: "NSSLookup",
            path: "NSSLookup",
            // A fixed soname, as for libCtdPluginAPI.so: host and plugins share the one library the host loaded.
            linkerSettings: [.unsafeFlags(["-Xlinker", "-soname=libCtdSupport.so"])]
        ),
    ],
    swiftLanguageModes: [.v5]
)
