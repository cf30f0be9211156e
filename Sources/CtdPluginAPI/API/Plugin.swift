/// The ABI version of this API. The host refuses a plugin whose ``PluginMetadata/abiVersion`` differs.
///
/// Bump it whenever a public declaration changes in a way an already-built plugin cannot survive.
public let ctdPluginABIVersion: UInt32 = 1

/// The C symbol every plugin library exports; the host finds it with `dlsym`.
///
/// Its type is `@convention(c) () -> UnsafeMutableRawPointer?`: it returns a retained, opaque pointer to an
/// object conforming to ``CtdPlugin`` (use ``CtdPluginExport/export(_:)``).
public let ctdPluginEntrySymbol = "ctd_plugin_create"

/// What a plugin does for the host. A plugin declares one or more roles in its metadata and must conform to the
/// matching protocol for each.
public enum PluginRole: String, Sendable, CaseIterable, Codable {
    /// Checks credentials at `login`; conforms to ``Authenticator``.
    case authenticator
    /// Adds named fields to every connection; conforms to ``FieldResolver``.
    case fieldResolver = "field_resolver"
    /// Sees (and may veto) every login, kill and change; conforms to ``ActionHook``.
    case actionHook = "action_hook"
}

/// Who a plugin is. Returned by ``CtdPlugin/metadata``; checked by the host before any other call.
public struct PluginMetadata: Sendable, Equatable {
    /// Namespaced identifier, `<role>.<name>` in lowercase snake_case, e.g. `auth.sha`.
    public var id: String
    /// The name used on the command line and in the config file, e.g. `AuthSHA`.
    public var name: String
    /// The plugin's own version, free form (semantic versioning recommended).
    public var version: String
    /// The ``ctdPluginABIVersion`` the plugin was built against.
    public var abiVersion: UInt32
    /// The roles the plugin plays.
    public var roles: [PluginRole]
    /// One sentence for `ctd plugins list`.
    public var summary: String

    /// Creates metadata.
    /// - Parameters:
    ///   - id: namespaced id, `<role>.<name>`.
    ///   - name: the name users type (`--mod-auth NAME`, `--plugin NAME`).
    ///   - version: the plugin's version.
    ///   - abiVersion: leave the default: the API version the plugin is compiled against.
    ///   - roles: the roles the plugin plays.
    ///   - summary: one sentence describing the plugin.
    public init(
        id: String, name: String, version: String, abiVersion: UInt32 = ctdPluginABIVersion,
        roles: [PluginRole], summary: String
    ) {
        self.id = id
        self.name = name
        self.version = version
        self.abiVersion = abiVersion
        self.roles = roles
        self.summary = summary
    }
}

/// The base contract of every plugin.
///
/// Lifecycle, in this order, each step at most once:
/// 1. the host calls the exported entry symbol, which creates the object;
/// 2. the host reads ``metadata`` and checks the ABI version and the roles;
/// 3. ``configure(_:context:)`` with the plugin's own section of the config file: validate strictly and throw
///    ``PluginError`` naming any unknown key;
/// 4. role calls (``Authenticator/authenticate(_:)`` and so on), from any thread, concurrently;
/// 5. ``shutdown()`` when the daemon stops. The library is never unloaded.
///
/// Thread-safety: after `configure` returns, every method may be called from several threads at once.
public protocol CtdPlugin: AnyObject, Sendable {
    /// Identity, version and roles of the plugin. Must be constant.
    var metadata: PluginMetadata { get }

    /// Receives the plugin's configuration section; called once, before any role call.
    /// - Parameters:
    ///   - configuration: the `[plugin.NAME]` table of the config file (empty when absent).
    ///   - context: services the host offers (logging).
    /// - Throws: ``PluginError`` when the configuration is invalid or a resource cannot be opened.
    func configure(_ configuration: PluginConfiguration, context: PluginContext) throws

    /// A short health line for `ctd plugins list` and the `status` call; `nil` means healthy.
    var healthProblem: String? { get }

    /// Releases resources. Called once at shutdown; no role call follows.
    func shutdown()
}

extension CtdPlugin {
    /// Default: healthy.
    public var healthProblem: String? { nil }
    /// Default: nothing to release.
    public func shutdown() {}
}

/// Services the host lends a plugin.
public struct PluginContext: Sendable {
    /// Writes a line to the daemon log. Never pass secrets.
    public var log: @Sendable (PluginLogLevel, String) -> Void

    /// Creates a context.
    /// - Parameter log: the sink for log lines.
    public init(log: @escaping @Sendable (PluginLogLevel, String) -> Void) {
        self.log = log
    }
}

/// Severity of a plugin log line.
public enum PluginLogLevel: String, Sendable {
    /// Diagnostic detail.
    case debug
    /// Normal operation.
    case info
    /// Something degraded but the plugin keeps working.
    case warning
    /// The plugin cannot do its job.
    case error
}

/// A technical failure inside a plugin (not a wrong password: that is ``AuthResult/rejected(reason:)``).
public struct PluginError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A sentence a person understands; shown in logs and `ctd plugins list`, never sent to clients.
    public var message: String

    /// Creates an error.
    /// - Parameter message: what went wrong, in one sentence.
    public init(_ message: String) { self.message = message }

    /// The message.
    public var description: String { message }

    /// The error for an unknown configuration key.
    /// - Parameters:
    ///   - key: the offending key.
    ///   - plugin: the plugin's name.
    public static func unknownKey(_ key: String, plugin: String) -> PluginError {
        PluginError("unknown key '\(key)' in the configuration of plugin \(plugin)")
    }
}

/// Helper for a plugin's entry symbol.
///
/// ```swift
/// @_cdecl("ctd_plugin_create")
/// public func ctdPluginCreate() -> UnsafeMutableRawPointer? {
///     CtdPluginExport.export(MyPlugin())
/// }
/// ```
public enum CtdPluginExport {
    /// Hands an instance to the host as a retained opaque pointer.
    /// - Parameter plugin: the new plugin object.
    /// - Returns: a +1 pointer the host takes ownership of.
    public static func export(_ plugin: any CtdPlugin) -> UnsafeMutableRawPointer {
        Unmanaged.passRetained(PluginBox(plugin)).toOpaque()
    }

    /// Used by the host: takes ownership of the pointer returned by an entry symbol.
    /// - Parameter pointer: the entry symbol's result.
    /// - Returns: the plugin, or `nil` if the object is not a plugin.
    public static func take(_ pointer: UnsafeMutableRawPointer) -> (any CtdPlugin)? {
        let object = Unmanaged<AnyObject>.fromOpaque(pointer).takeRetainedValue()
        return (object as? PluginBox)?.plugin
    }
}

/// Carries an existential across the C boundary. Internal to the API library, shared by host and plugin.
final class PluginBox: @unchecked Sendable {
    let plugin: any CtdPlugin
    init(_ plugin: any CtdPlugin) { self.plugin = plugin }
}

/// A plugin whose settings can change while the daemon runs: on SIGHUP the host hands it its new section.
///
/// Called on the reload thread while other calls may be running: apply the new settings atomically (build them,
/// then swap), and throw without changing anything when they are wrong, so the old settings stay.
public protocol ReloadablePlugin: CtdPlugin {
    /// Applies a new configuration section.
    /// - Parameters:
    ///   - configuration: the plugin's new `[plugin.NAME]` section (read strictly, as in ``CtdPlugin/configure(_:context:)``).
    ///   - context: where the plugin logs.
    /// - Returns: what changed, one short line per change (empty when nothing did); the host logs them.
    /// - Throws: when the new settings cannot be used; the old ones stay in force and the host logs the reason.
    func reload(_ configuration: PluginConfiguration, context: PluginContext) throws -> [String]
}
