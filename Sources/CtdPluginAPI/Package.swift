// swift-tools-version:6.0
// The plugin API lives in its own package so that the host and every dlopen'ed plugin share one
// libCtdPluginAPI.so: with the API as a plain target, each image gets its own protocol descriptors and
// `plugin as? Authenticator` fails (docs/design.md, "Plugins over dlopen").
import PackageDescription

let package = Package(
    name: "CtdPluginAPI",
    products: [
        .library(name: "CtdPluginAPI", type: .dynamic, targets: ["CtdPluginAPI"])
    ],
    targets: [
        .target(
            name: "CtdPluginAPI",
            path: "API",
            swiftSettings: [.unsafeFlags(["-enable-library-evolution"])],
            // A fixed soname: host and plugins then share the one library the host loaded.
            linkerSettings: [.unsafeFlags(["-Xlinker", "-soname=libCtdPluginAPI.so"])]
        )
    ],
    swiftLanguageModes: [.v5]
)
