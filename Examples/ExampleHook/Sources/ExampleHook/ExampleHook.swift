import CtdPluginAPI
import Synchronization

/// An action hook that refuses `kill` and `change` of connections whose original destination port is protected,
/// so that nobody cuts the SSH session they manage the firewall through.
///
/// Configuration (`[plugin.ExampleHook]`, strict: any other key is an error):
/// - `protected_ports` (array of integers 1 to 65535, default `[22]`): original destination ports to protect.
///   An empty array protects nothing.
///
/// Thread-safety: the host calls ``before(_:)`` and ``after(_:token:outcome:)`` from several threads at once; the
/// settings are written once by `configure` and read under a lock.
public final class ProtectPortsHook: ActionHook {
    public let metadata = PluginMetadata(
        id: "hook.protect_ports",
        name: "ExampleHook",
        version: "1.0.0",
        roles: [.actionHook],
        summary: "Refuses kill and change of connections to protected destination ports (example plugin)."
    )

    /// A hook that only guards may fail open: if it breaks, the action proceeds and the hook shows up unhealthy.
    /// (An audit hook must say `true`: nothing may happen unrecorded.)
    public let failureStopsAction = false

    /// The configuration keys this plugin understands.
    public static let configurationKeys: Set<String> = ["protected_ports"]

    struct Settings: Sendable {
        var ports: Set<UInt16> = [22]
        var log: (@Sendable (PluginLogLevel, String) -> Void)?
    }

    private let settings = Mutex(Settings())

    public init() {}

    public func configure(_ configuration: PluginConfiguration, context: PluginContext) throws {
        try configuration.expectOnly(Self.configurationKeys)
        let ports = try Self.ports(configuration.values["protected_ports"], plugin: configuration.pluginName)
        settings.withLock { $0 = Settings(ports: ports ?? [22], log: context.log) }
        let list = (ports ?? [22]).sorted().map(String.init).joined(separator: ", ")
        context.log(.info, "ExampleHook: kill and change refused for destination ports [\(list)]")
    }

    public func before(_ event: ActionEvent) throws -> (decision: HookDecision, token: Int64) {
        switch event.kind {
        case .kill, .change:
            let current = settings.withLock { $0 }
            guard let connection = event.connection,
                current.ports.contains(connection.origDestinationPort)
            else { return (.allow, 0) }
            let what = event.kind == .kill ? "killed" : "changed"
            current.log?(
                .warning,
                "ExampleHook: refused \(event.kind.rawValue) of connection \(connection.id) "
                    + "(port \(connection.origDestinationPort)) by \(event.user)")
            return (.veto(reason: "connections to port \(connection.origDestinationPort) may not be \(what)"), 0)
        case .login, .denied:
            return (.allow, 0)
        @unknown default:
            // A new kind of action this build does not know: not ours to refuse.
            return (.allow, 0)
        }
    }

    public func after(_ event: ActionEvent, token: Int64, outcome: ActionOutcome) throws {}

    /// Reads `protected_ports`: `nil` when absent.
    static func ports(_ value: ConfigValue?, plugin: String) throws -> Set<UInt16>? {
        guard let value else { return nil }
        let problem = PluginError(
            "key 'protected_ports' in the configuration of plugin \(plugin) must be an array of port numbers "
                + "from 1 to 65535, e.g. [22, 443]")
        guard case .array(let items) = value else { throw problem }
        var ports = Set<UInt16>()
        for item in items {
            guard case .integer(let port) = item, (1...65535).contains(port) else { throw problem }
            ports.insert(UInt16(port))
        }
        return ports
    }
}

/// The entry symbol ctd looks up with `dlsym` (``ctdPluginEntrySymbol``): it hands over a new, retained instance.
@_cdecl("ctd_plugin_create")
public func ctdPluginCreate() -> UnsafeMutableRawPointer? {
    CtdPluginExport.export(ProtectPortsHook())
}
