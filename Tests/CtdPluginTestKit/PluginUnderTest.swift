import CtdPluginAPI
import Foundation
import PluginHost

/// A built plugin, loaded the way the host loads it (dlopen, the entry symbol, the ABI and role checks), for the
/// plugin's own tests.
///
/// The `.so` is looked for in `CTD_PLUGIN_DIR` when it is set, else next to the test bundle (the build directory,
/// where `swift build` put it). Plugins are never unloaded (Swift code cannot be), so each load of the same file
/// returns a new instance from the same library.
public enum PluginUnderTest {
    /// The directories searched for `lib<Name>.so`.
    public static var directories: [String] {
        if let dir = ProcessInfo.processInfo.environment["CTD_PLUGIN_DIR"] { return [dir] }
        let bundle = Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
        var dirs: [String] = []
        var url = bundle.deletingLastPathComponent()
        // `swift test` runs .build/<config>/ctdPackageTests.xctest: the plugins are in .build/<config>.
        for _ in 0..<4 {
            dirs.append(url.path)
            url = url.deletingLastPathComponent()
        }
        return dirs
    }

    /// Loads `lib<name>.so` and checks that it plays `role`.
    public static func load(_ name: String, role: PluginRole) throws -> LoadedPlugin {
        try PluginLoader(directories: directories).load(name, role: role)
    }

    /// Loads a fresh, unconfigured instance of a plugin of type `T` (an ``Authenticator``, ``FieldResolver``,
    /// ``ActionHook`` or a capability such as ``AuditTrailReader`` or ``ReloadablePlugin``).
    public static func instance<T>(_ name: String, as type: T.Type, role: PluginRole) throws -> T {
        let loaded = try load(name, role: role)
        guard let typed = loaded.instance as? T else {
            throw PluginError("\(name) loaded but is not a \(T.self)")
        }
        return typed
    }

    /// Loads and configures a plugin of type `T` (an ``Authenticator``, ``FieldResolver`` or ``ActionHook``).
    /// - Parameters:
    ///   - values: its `[plugin.NAME]` section.
    ///   - log: receives its log lines.
    public static func configured<T>(
        _ name: String, as type: T.Type, role: PluginRole, values: [String: ConfigValue],
        log: @escaping @Sendable (PluginLogLevel, String) -> Void = { _, _ in }
    ) throws -> T {
        let loaded = try load(name, role: role)
        try loaded.instance.configure(
            PluginConfiguration(pluginName: name, values: values), context: PluginContext(log: log))
        guard let typed = loaded.instance as? T else {
            throw PluginError("\(name) loaded but is not a \(T.self)")
        }
        return typed
    }
}
