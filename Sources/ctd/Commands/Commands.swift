import ArgumentParser
import CtdCore
import CtdPluginAPI
import Foundation
import Logging
import PluginHost

/// `ctd`: the command line.
@available(macOS 10.15, macCatalyst 13, iOS 13, tvOS 13, watchOS 6, *)
public struct CtdCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ctd",
        abstract: "ConnTrack Daemon: the kernel's connection-tracking table over XML-RPC.",
        version: ctdVersion,
        subcommands: [ServeCommand.self, PasswdCommand.self, PluginsCommand.self, AuditCommand.self],
        defaultSubcommand: ServeCommand.self)

    public init() {}
}

/// The options `serve` and `plugins list` share: where the config is and which plugins it loads from where.
struct PluginOptions: ParsableArguments {
    @Option(name: .long, help: "Config file (TOML; default /etc/ctd/ctd.toml if it exists); see ctd.sample.toml.")
    var config: String?
    @Option(name: .customLong("mod-auth"), help: "Authenticator plugin (default AuthSHA).") var modAuth: String?
    @Option(name: .customLong("plugin"), help: "Enable a resolver or hook plugin (repeatable).") var plugins: [String] =
        []
    @Option(name: .customLong("plugin-dir"), help: "Directory of plugin .so files.") var pluginDir: String?
    @Option(
        name: .customLong("plugin-option"),
        help: ArgumentHelp(
            "Set a plugin setting, as in its [plugin.NAME] section (repeatable).", valueName: "NAME.key=value"))
    var pluginSettings: [String] = []
    @Option(
        name: .customLong("password-file"),
        help: "Shorthand for --plugin-option AUTH.password_file=FILE, AUTH being the authenticator (AuthSHA's file).")
    var passwordFile: String?

    /// The config file (or the defaults) with these options applied.
    func loadConfig() throws -> DaemonConfig {
        var c = try DaemonConfig.path(explicit: config).map(DaemonConfig.load(path:)) ?? DaemonConfig()
        if let modAuth { c.authenticator = modAuth }
        for p in plugins where !c.plugins.contains(p) { c.plugins.append(p) }
        if let pluginDir { c.pluginDirectories = [pluginDir] }
        if c.pluginDirectories.isEmpty { c.pluginDirectories = Daemon.defaultPluginDirectories() }
        if let passwordFile { c.pluginSections[c.authenticator, default: [:]]["password_file"] = .string(passwordFile) }
        for setting in pluginSettings {
            let (plugin, key, value) = try Self.parse(pluginSetting: setting)
            c.pluginSections[plugin, default: [:]][key] = value
        }
        return c
    }

    /// `NAME.key=value`; the value is read as TOML would read it (a number, true/false, else text).
    static func parse(pluginSetting text: String) throws -> (String, String, ConfigValue) {
        guard let eq = text.firstIndex(of: "="), let dot = text[..<eq].firstIndex(of: ".") else {
            throw ValidationError("--plugin-option takes NAME.key=value, not '\(text)'")
        }
        let plugin = String(text[..<dot])
        let key = String(text[text.index(after: dot)..<eq])
        let raw = String(text[text.index(after: eq)...])
        guard !plugin.isEmpty, !key.isEmpty else {
            throw ValidationError("--plugin-option takes NAME.key=value, not '\(text)'")
        }
        let value: ConfigValue
        if let n = Int64(raw) {
            value = .integer(n)
        } else if let d = Double(raw), raw.contains(".") {
            value = .double(d)
        } else if raw == "true" || raw == "false" {
            value = .bool(raw == "true")
        } else {
            value = .string(raw)
        }
        return (plugin, key, value)
    }
}

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve the conntrack table (the default command).")

    @OptionGroup var pluginOptions: PluginOptions
    @Option(name: .long, help: "Address to listen on (default 127.0.0.1).") var listen: String?
    @Option(name: .long, help: "TCP port (default 4040; 0 picks a free one).") var port: Int?
    @Option(name: .customLong("tls-cert"), help: "PEM certificate chain; enables TLS with --tls-key.") var tlsCert:
        String?
    @Option(name: .customLong("tls-key"), help: "PEM private key.") var tlsKey: String?
    @Option(name: .customLong("hide"), help: "Hide connections from/to this CIDR (repeatable; replaces the default).")
    var hide: [String] = []
    @Flag(name: .customLong("show-all"), help: "Hide nothing (not even loopback and ctd's own clients).") var showAll =
        false
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.") var logLevel: String?
    @Option(
        name: .customLong("log-format"),
        help: ArgumentHelp(
            "Log lines as text, json (one object per line) or journal (<N> priority prefixes); auto: journal when standard error is the journal, else text.",
            valueName: "auto|text|json|journal"))
    var logFormat: String?
    @Option(
        name: .customLong("user"),
        help: "Started as root, run as this user keeping only CAP_NET_ADMIN (overrides [service] user).")
    var user: String?
    @Flag(
        name: .customLong("keep-privileges"),
        help: "Started as root, stay root with every capability (no drop to [service] user).")
    var keepPrivileges = false
    @Option(
        name: .customLong("metrics-listen"),
        help: ArgumentHelp(
            "Serve Prometheus metrics on GET /metrics at this address (host:port, [::1]:port), or off.",
            valueName: "host:port|off"))
    var metricsListen: String?

    func effectiveConfig() throws -> DaemonConfig {
        var c = try pluginOptions.loadConfig()
        if let listen { c.listen = listen }
        if let port {
            guard (0...65535).contains(port) else { throw ValidationError("--port must be 0 to 65535") }
            c.port = port
        }
        if let tlsCert { c.tlsCertificate = tlsCert }
        if let tlsKey { c.tlsKey = tlsKey }
        if !hide.isEmpty { c.hide = hide }
        if showAll {
            c.hide = []
            c.hideOwnConnections = false
        }
        if let logLevel { c.logLevel = logLevel }
        if let logFormat { c.logFormat = logFormat }
        if let user { c.serviceUser = user }
        if let metricsListen {
            c.metricsListen = try DaemonConfig.MetricsAddress.parse(metricsListen, source: "--metrics-listen")
        }
        try c.validate(source: "command line")
        return c
    }

    /// Bad options and config files are reported before `run`, with this command's usage.
    func validate() throws {
        _ = try checkedConfig()
    }

    private func checkedConfig() throws -> DaemonConfig {
        do {
            return try effectiveConfig()
        } catch let e as DaemonConfig.Error {
            throw ValidationError(e.message)
        }
    }

    func run() async throws { try await serve() }

    func serve() async throws {
        let c = try checkedConfig()
        do {
            // First of all: nothing is open yet, and the re-executed image reads the same configuration.
            try PrivilegeDrop.dropIfRoot(to: c.serviceUser, keep: keepPrivileges)
        } catch let e as DaemonConfig.Error {
            FileHandle.standardError.write(Data("ctd cannot start: \(e.message)\n".utf8))
            throw ExitCode(1)
        }
        let levelSwitch = LogLevelSwitch(Logger.Level(rawValue: c.logLevel) ?? .info)
        let format = (LogFormat(rawValue: c.logFormat) ?? .auto).resolved()
        LoggingSystem.bootstrap { label in FormattedLogHandler(label: label, format: format, levelSwitch: levelSwitch) }
        let logger = Logger(label: "ctd")
        logger.info("config: \(DaemonConfig.path(explicit: pluginOptions.config) ?? "none (built-in defaults)")")
        PrivilegeDrop.report(logger: logger, keep: keepPrivileges, user: c.serviceUser)
        let reload = { try self.effectiveConfig() }
        do {
            try await Daemon(config: c, logger: logger, logLevel: levelSwitch, reloadConfig: reload).run()
        } catch {
            logger.critical("ctd cannot start: \(error)")
            throw ExitCode(1)
        }
    }
}

struct PluginsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugins", abstract: "Inspect plugins.", subcommands: [List.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load and configure the plugins a config enables, and print each with its health.")
        @OptionGroup var pluginOptions: PluginOptions

        func run() throws {
            let c = try pluginOptions.loadConfig()
            var logger = Logger(label: "ctd")
            logger.logLevel = .warning
            print("plugin directories: \(c.pluginDirectories.joined(separator: ", "))")
            let registry: PluginRegistry
            do {
                registry = try PluginRegistry.load(c.pluginSelection, logger: logger)
            } catch {
                // Without a config file or plugin options, list what is installed and what each plugin still
                // needs (a fresh install has no password file yet); with them, the error is an error.
                let o = pluginOptions
                let bare =
                    DaemonConfig.path(explicit: o.config) == nil && o.modAuth == nil && o.plugins.isEmpty
                    && o.pluginSettings.isEmpty && o.passwordFile == nil
                guard bare else {
                    print("error: \(error)")
                    throw ExitCode(1)
                }
                print("no config file: the plugins installed, each with what it needs (ctd.toml(5))")
                for entry in PluginRegistry.inventory(c.pluginSelection, logger: logger) {
                    guard let p = entry.plugin else {
                        print("\(entry.name)\t-\t-\t-\t-\t\(entry.health)")
                        continue
                    }
                    let m = p.metadata
                    print(
                        "\(p.name)\t\(m.id)\t\(m.version)\tabi \(m.abiVersion)\t\(m.roles.map(\.rawValue).joined(separator: ","))\t\(entry.health)\t\(p.path)"
                    )
                }
                return
            }
            // The plugins were configured to be checked; stop them before exiting (AuditSyslog's sender thread).
            defer { registry.shutdown() }
            for p in registry.all {
                let m = p.metadata
                print(
                    "\(p.name)\t\(m.id)\t\(m.version)\tabi \(m.abiVersion)\t\(m.roles.map(\.rawValue).joined(separator: ","))\t\(registry.health(p))\t\(p.path)"
                )
            }
        }
    }
}
