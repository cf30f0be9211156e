import CtdPluginAPI
import Foundation
import Logging

/// A plugin that could not be loaded; the message names the plugin and what is wrong.
public struct PluginLoadError: Error, CustomStringConvertible, Equatable {
    public var plugin: String
    public var reason: String
    public var description: String { "plugin \(plugin): \(reason)" }
}

/// One loaded plugin and where it came from.
public struct LoadedPlugin: @unchecked Sendable {
    public let name: String
    public let path: String
    public let instance: any CtdPlugin
    public var metadata: PluginMetadata { instance.metadata }

    /// A plugin and where it came from (the loader makes these; tests make them for plugins they define).
    public init(name: String, path: String, instance: any CtdPlugin) {
        self.name = name
        self.path = path
        self.instance = instance
    }
}

/// Loads plugin shared objects with dlopen. Libraries are never dlclosed: Swift code cannot be unloaded safely
/// (swiftlang/swift#75889).
public struct PluginLoader {
    public var directories: [String]

    public init(directories: [String]) { self.directories = directories }

    package static func article(_ word: String) -> String {
        ("aeiou".contains(word.first ?? "x") ? "an " : "a ") + word
    }

    /// `lib<Name>.so` in the first directory that has it.
    public func path(for name: String) -> String? {
        for dir in directories {
            let candidate = (dir as NSString).appendingPathComponent("lib\(name).so")
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Loads `name` and checks that it plays `role`.
    public func load(_ name: String, role: PluginRole) throws -> LoadedPlugin {
        let plugin = try load(name)
        guard plugin.metadata.roles.contains(role) else {
            throw PluginLoadError(
                plugin: name,
                reason:
                    "is \(PluginLoader.article(plugin.metadata.roles.map(\.rawValue).joined(separator: "/"))) plugin, not \(PluginLoader.article(role.rawValue))"
            )
        }
        return plugin
    }

    /// Loads `name`, checks its ABI version and that it implements every role it declares.
    public func load(_ name: String) throws -> LoadedPlugin {
        guard name.range(of: #"^[A-Za-z][A-Za-z0-9_]*$"#, options: .regularExpression) != nil else {
            throw PluginLoadError(plugin: name, reason: "not a valid plugin name (letters, digits and _ only)")
        }
        guard let path = path(for: name) else {
            throw PluginLoadError(
                plugin: name,
                reason: "lib\(name).so not found in \(directories.joined(separator: ", ")) (set --plugin-dir)")
        }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let why = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            throw PluginLoadError(plugin: name, reason: "cannot be loaded from \(path): \(why)")
        }
        guard let symbol = dlsym(handle, ctdPluginEntrySymbol) else {
            throw PluginLoadError(
                plugin: name, reason: "\(path) has no entry symbol \(ctdPluginEntrySymbol); is it a ctd plugin?")
        }
        typealias Entry = @convention(c) () -> UnsafeMutableRawPointer?
        let entry = unsafeBitCast(symbol, to: Entry.self)
        guard let raw = entry(), let plugin = CtdPluginExport.take(raw) else {
            throw PluginLoadError(plugin: name, reason: "its entry symbol did not return a ctd plugin object")
        }
        let meta = plugin.metadata
        guard meta.abiVersion == ctdPluginABIVersion else {
            throw PluginLoadError(
                plugin: name,
                reason:
                    "built for plugin ABI version \(meta.abiVersion), but this ctd expects version \(ctdPluginABIVersion); rebuild the plugin against this ctd's CtdPluginAPI"
            )
        }
        guard !meta.roles.isEmpty else { throw PluginLoadError(plugin: name, reason: "declares no role") }
        for role in meta.roles {
            let conforms: Bool
            switch role {
            case .authenticator: conforms = plugin is any Authenticator
            case .fieldResolver: conforms = plugin is any FieldResolver
            case .actionHook: conforms = plugin is any ActionHook
            @unknown default: conforms = false
            }
            guard conforms else {
                throw PluginLoadError(plugin: name, reason: "declares role \(role.rawValue) but does not implement it")
            }
        }
        return LoadedPlugin(name: name, path: path, instance: plugin)
    }
}
