import CtdPluginAPI
import Foundation
import Logging
import NIOConcurrencyHelpers

/// The plugins of a running daemon: one authenticator, any number of resolvers and hooks, and their health.
public final class PluginRegistry: @unchecked Sendable {
    public let authenticator: any Authenticator
    public let authenticatorInfo: LoadedPlugin
    public let resolvers: [(LoadedPlugin, any FieldResolver)]
    public let hooks: [(LoadedPlugin, any ActionHook)]
    private let lock = NIOLock()
    private var problems: [String: String] = [:]
    private var isShutDown = false
    package let logger: Logger

    public init(
        authenticator: LoadedPlugin, resolvers: [LoadedPlugin], hooks: [LoadedPlugin], logger: Logger
    ) {
        self.authenticatorInfo = authenticator
        self.authenticator = authenticator.instance as! any Authenticator
        self.resolvers = resolvers.map { ($0, $0.instance as! any FieldResolver) }
        self.hooks = hooks.map { ($0, $0.instance as! any ActionHook) }
        self.logger = logger
    }

    /// Loads the authenticator (fatal on failure: fail closed) and the other plugins, configures each with its
    /// section of the config file, and returns the registry.
    public static func load(_ config: PluginSelection, logger: Logger) throws -> PluginRegistry {
        let loader = PluginLoader(directories: config.directories)
        func configure(_ p: LoadedPlugin) throws {
            let section = PluginConfiguration(pluginName: p.name, values: config.sections[p.name] ?? [:])
            do {
                try p.instance.configure(section, context: Self.context(for: p, logger: logger))
            } catch {
                throw PluginLoadError(plugin: p.name, reason: "configuration failed: \(error)")
            }
        }
        let auth = try loader.load(config.authenticator, role: .authenticator)
        try configure(auth)
        var resolvers: [LoadedPlugin] = []
        var hooks: [LoadedPlugin] = []
        // A plugin that fails leaves the ones configured before it to be shut down: they may have started threads
        // (AuditSyslog's sender) that must end before the process exits.
        var configured: [LoadedPlugin] = [auth]
        do {
            for name in config.plugins where name != config.authenticator {
                let probe = try loader.load(name)
                guard probe.metadata.roles.contains(.fieldResolver) || probe.metadata.roles.contains(.actionHook)
                else {
                    throw PluginLoadError(
                        plugin: name, reason: "is an authenticator; select it with --mod-auth, not --plugin")
                }
                try configure(probe)
                configured.append(probe)
                if probe.metadata.roles.contains(.fieldResolver) { resolvers.append(probe) }
                if probe.metadata.roles.contains(.actionHook) { hooks.append(probe) }
            }
        } catch {
            for p in configured.reversed() { p.instance.shutdown() }
            throw error
        }
        for section in config.sections.keys
        where section != config.authenticator && !config.plugins.contains(section) {
            logger.warning("config has a [plugin.\(section)] section but plugin \(section) is not enabled")
        }
        return PluginRegistry(authenticator: auth, resolvers: resolvers, hooks: hooks, logger: logger)
    }

    /// One installed plugin as `ctd plugins list` shows it without a working configuration.
    public struct InventoryEntry {
        public var name: String
        public var plugin: LoadedPlugin?
        /// "ok", "not enabled", "not configured: REASON" or "cannot load: REASON".
        public var health: String
    }

    /// Every `lib<Name>.so` plugin in the selection's directories, loaded (metadata only), and the enabled ones
    /// configured with their sections as `serve` would: what is installed and what each still needs. Plugins that
    /// are not enabled are not configured (configuring may create files, such as an audit database).
    public static func inventory(_ config: PluginSelection, logger: Logger) -> [InventoryEntry] {
        let loader = PluginLoader(directories: config.directories)
        var names: [String] = []
        for dir in config.directories {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            for f in files.sorted() where f.hasPrefix("lib") && f.hasSuffix(".so") {
                let name = String(f.dropFirst(3).dropLast(3))
                // The API and support libraries sit beside the plugins in a build directory.
                if ["CtdPluginAPI", "CtdSupport"].contains(name) || names.contains(name) { continue }
                names.append(name)
            }
        }
        return names.map { name in
            let p: LoadedPlugin
            do {
                p = try loader.load(name)
            } catch let e as PluginLoadError {
                return InventoryEntry(name: name, plugin: nil, health: "cannot load: \(e.reason)")
            } catch {
                return InventoryEntry(name: name, plugin: nil, health: "cannot load: \(error)")
            }
            guard name == config.authenticator || config.plugins.contains(name) else {
                return InventoryEntry(name: name, plugin: p, health: "not enabled")
            }
            let section = PluginConfiguration(pluginName: name, values: config.sections[name] ?? [:])
            do {
                try p.instance.configure(section, context: context(for: p, logger: logger))
                // Configured only to see that it can be: stopped again at once (threads, open files).
                let health = p.instance.healthProblem ?? "ok"
                p.instance.shutdown()
                return InventoryEntry(name: name, plugin: p, health: health)
            } catch {
                return InventoryEntry(name: name, plugin: p, health: "not configured: \(error)")
            }
        }
    }

    /// Where the audit trail of the first enabled ``AuditTrailReader`` is kept (the plugins are loaded and
    /// configured as `serve` would; the authenticator is not), or nil when no plugin keeps one or loading fails.
    public static func auditTrailLocation(_ config: PluginSelection, logger: Logger) -> String? {
        let loader = PluginLoader(directories: config.directories)
        for name in config.plugins where name != config.authenticator {
            guard let p = try? loader.load(name), let reader = p.instance as? any AuditTrailReader else { continue }
            let section = PluginConfiguration(pluginName: p.name, values: config.sections[p.name] ?? [:])
            guard (try? p.instance.configure(section, context: context(for: p, logger: logger))) != nil else {
                return nil
            }
            // Configured only to learn where the trail is: stopped again at once (its writer session is closed).
            let location = reader.trailLocation
            p.instance.shutdown()
            return location
        }
        return nil
    }

    /// The plugin context of `p`: its log lines go to the daemon's log, tagged with the plugin's id.
    static func context(for p: LoadedPlugin, logger: Logger) -> PluginContext {
        var pluginLogger = logger
        pluginLogger[metadataKey: "plugin"] = "\(p.metadata.id)"
        return PluginContext { [pluginLogger] level, message in
            switch level {
            case .debug: pluginLogger.debug("\(message)")
            case .info: pluginLogger.info("\(message)")
            case .warning: pluginLogger.warning("\(message)")
            case .error: pluginLogger.error("\(message)")
            @unknown default: pluginLogger.error("\(message)")
            }
        }
    }

    /// The hook that keeps the audit trail, if one is enabled (the first ``AuditTrailReader``).
    public var auditTrail: (LoadedPlugin, any AuditTrailReader)? {
        for (info, hook) in hooks { if let reader = hook as? any AuditTrailReader { return (info, reader) } }
        return nil
    }

    /// The audit trail hook, if it can also check its trail (``AuditTrailVerifier``; a plugin built before that
    /// protocol cannot, and `audit_verify` says it is not available).
    public var auditVerifier: (LoadedPlugin, any AuditTrailVerifier)? {
        guard let (info, reader) = auditTrail, let verifier = reader as? any AuditTrailVerifier else { return nil }
        return (info, verifier)
    }

    /// Hands every reloadable plugin its new section (a SIGHUP). A plugin that refuses keeps its old settings.
    /// - Returns: what changed, one line per change, and the plugins that refused with their reasons.
    public func reload(sections: [String: [String: ConfigValue]]) -> (changes: [String], failures: [String]) {
        var changes: [String] = []
        var failures: [String] = []
        for p in all {
            guard let reloadable = p.instance as? any ReloadablePlugin else { continue }
            let section = PluginConfiguration(pluginName: p.name, values: sections[p.name] ?? [:])
            do {
                changes += try reloadable.reload(section, context: Self.context(for: p, logger: logger))
                    .map { "\(p.name): \($0)" }
            } catch {
                failures.append("\(p.name): \(error)")
            }
        }
        return (changes, failures)
    }

    public var all: [LoadedPlugin] {
        [authenticatorInfo] + resolvers.map(\.0) + hooks.map(\.0)
    }

    public func reportProblem(_ plugin: String, _ problem: String?) {
        lock.withLock { problems[plugin] = problem }
        if let problem { logger.error("plugin \(plugin): \(problem)") }
    }

    /// Health of each plugin: its own report, or the last failure the host saw.
    public func health(_ p: LoadedPlugin) -> String {
        if let own = p.instance.healthProblem { return own }
        return lock.withLock { problems[p.name] } ?? "ok"
    }

    /// Names of the fields resolvers add.
    public var resolvedFieldNames: [String] { resolvers.flatMap { $0.1.fields.map(\.name) } }

    /// Shuts every plugin down, each once; later calls do nothing.
    public func shutdown() {
        guard
            lock.withLock({ () -> Bool in
                defer { isShutDown = true }
                return !isShutDown
            })
        else { return }
        // A plugin with two roles is listed twice in `all`: shut down once.
        var seen = Set<ObjectIdentifier>()
        for p in all where seen.insert(ObjectIdentifier(p.instance)).inserted { p.instance.shutdown() }
    }
}
