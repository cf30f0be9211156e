// swift-tools-version:6.0
// An out-of-tree ctd plugin: its own package, depending on ctd's plugin API package by path. Build it with
// `swift build -c release` and copy .build/release/libExampleHook.so into ctd's plugin directory
// (see README.md and ../../docs/WritingAPlugin.md).
import PackageDescription

let package = Package(
    name: "ExampleHook",
    products: [
        // The product name is the plugin name: ctd loads `--plugin ExampleHook` from libExampleHook.so.
        .library(name: "ExampleHook", type: .dynamic, targets: ["ExampleHook"])
    ],
    dependencies: [
        // The API must come from this package (not a copy of its sources) so that the plugin links the same
        // libCtdPluginAPI.so as the host. Point the path at your ctd checkout.
        .package(path: "../../Sources/CtdPluginAPI")
    ],
    targets: [
        .target(
            name: "ExampleHook",
            dependencies: [.product(name: "CtdPluginAPI", package: "CtdPluginAPI")]
        )
    ]
)
