import Conntrack
import CtdCore
import CtdPluginAPI
import Foundation
import PluginHost
import TOMLKit

/// Everything `ctd serve` can be told, from the config file (TOML) and the command line. See ctd.sample.toml.
public struct DaemonConfig: Sendable {
    // [server]
    public var listen = "127.0.0.1"
    public var port = 4040
    public var tlsCertificate: String?
    public var tlsKey: String?
    public var maxBodyBytes = 4 * 1024 * 1024
    public var workerThreads = 0
    /// Seconds a shutdown lets running calls finish before it refuses the writes that have not started.
    public var drainTimeout = 10.0
    /// Open connections at most, in total and from one address; the excess is closed as it is accepted.
    public var maxConnections = 512
    public var maxConnectionsPerAddress = 64
    /// Seconds for a request head (from its first byte), for a body (from its head), and without any request.
    public var headerTimeout = 10.0
    public var bodyTimeout = 30.0
    public var connectionIdleTimeout = 60.0
    public var writeTimeout = 60.0
    /// Origins (`scheme://host[:port]`) of web pages whose requests are served; same-origin ones always are.
    public var allowedOrigins: [String] = []
    /// Names the Host header may carry; `nil`: HTTPServer.defaultServerNames (listen address, localhost, 127.0.0.1,
    /// [::1], the host name).
    public var serverNames: [String]?
    // [sessions]
    public var idleTimeout = 10.0
    public var maxLifetime = 8 * 3600.0
    public var maxSessions = 1024
    /// Distinct table generations sessions may pin (each can keep a copy of the table alive).
    public var maxPinnedSnapshots = 8
    // [conntrack]
    public var receiveBuffer = 64 * 1024 * 1024
    public var counterInterval = 2.0
    public var hide = HidePolicy.defaultBlocks
    public var hideOwnConnections = true
    /// Names of ct label bits ("BIT NAME" lines), as iptables and conntrack read them.
    public var connlabelFile = "/etc/xtables/connlabel.conf"
    // [plugins]
    public var pluginDirectories: [String] = []
    public var authenticator = "AuthSHA"
    public var plugins: [String] = []
    public var pluginSections: [String: [String: ConfigValue]] = [:]
    // [web]
    /// The web console on GET / (see docs/web-console.md); `webRoot` empty: found beside the executable.
    public var webEnabled = true
    public var webRoot = ""
    /// Shown on the console's login page (as Cockpit's Banner); not secret, served before login.
    public var webBanner = ""
    // [log]
    public var logLevel = "info"
    /// auto, text, json or journal (``LogFormat``).
    public var logFormat = "auto"
    // [service]
    /// Started as root, `ctd serve` drops to this user keeping CAP_NET_ADMIN only (``PrivilegeDrop``); empty: no drop.
    public var serviceUser = ""
    // [metrics]
    /// The Prometheus listener (docs/metrics.md); nil: off (the default of the binary; the shipped ctd.toml turns
    /// it on at 127.0.0.1:4041).
    public var metricsListen: MetricsAddress?
    /// Open connections at most on the metrics listener (in total; per address half of it).
    public var metricsMaxConnections = 16

    /// `host:port` of the metrics listener; an IPv6 host in brackets (`[::1]:4041`).
    public struct MetricsAddress: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

        /// `host:port`, or nil for "off" and "" (the listener disabled); throws a sentence on anything else.
        public static func parse(_ text: String, source: String) throws -> MetricsAddress? {
            let t = text.trimmingCharacters(in: .whitespaces)
            if t.isEmpty || t.lowercased() == "off" { return nil }
            let bad = Error(
                message: "\(source) must be host:port ([::1]:4041 for IPv6) or off, not '\(text)'")
            let host: Substring
            let portText: Substring
            if t.hasPrefix("[") {
                guard let close = t.firstIndex(of: "]"), t[t.index(after: close)...].hasPrefix(":") else { throw bad }
                host = t[t.index(after: t.startIndex)..<close]
                portText = t[t.index(close, offsetBy: 2)...]
            } else {
                guard let colon = t.lastIndex(of: ":"), !t[..<colon].contains(":") else { throw bad }
                host = t[..<colon]
                portText = t[t.index(after: colon)...]
            }
            guard !host.isEmpty, !host.contains(" "), !host.contains("/"), let port = Int(portText),
                (0...65535).contains(port)
            else { throw bad }
            return MetricsAddress(host: String(host), port: port)
        }
    }

    /// What the procedures need (page and kill limits, the login throttle, ...), read from [server] and
    /// [sessions].
    public var core = CoreSettings()

    public init() {}

    /// The plugins it enables.
    public var pluginSelection: PluginSelection {
        PluginSelection(
            directories: pluginDirectories, authenticator: authenticator, plugins: plugins, sections: pluginSections)
    }

    /// The config file read when no `--config` is given, if it exists (`make install` puts one there).
    public static let defaultPath = "/etc/ctd/ctd.toml"

    /// `explicit`, else ``defaultPath`` when that file exists, else `nil` (built-in defaults).
    public static func path(explicit: String?) -> String? {
        explicit ?? (FileManager.default.fileExists(atPath: defaultPath) ? defaultPath : nil)
    }

    public struct Error: Swift.Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Reads a config file strictly: an unknown section or key is an error naming it.
    public static func load(path: String) throws -> DaemonConfig {
        return try parse(try readText(path), source: path)
    }

    /// The file's text, or an error that names the file and the system's reason (errno's sentence).
    static func readText(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Error(message: "cannot read config file \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
            throw Error(message: "cannot read config file \(path): it is a directory")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Error(message: "cannot read config file \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > 16 << 20 { throw Error(message: "cannot read config file \(path): larger than 16 MiB") }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw Error(message: "cannot read config file \(path): it is not UTF-8 text")
        }
        return text
    }

    public static func parse(_ text: String, source: String = "config") throws -> DaemonConfig {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            throw Error(message: "\(source): \(e.description) (\(e.source.begin.debugDescription))")
        }
        guard case .table(let root) = convert(table.tomlValue) else { throw Error(message: "\(source): not a table") }
        var c = DaemonConfig()
        try c.apply(root, source: source)
        return c
    }

    static func convert(_ value: TOMLValue) -> ConfigValue {
        switch value.type {
        case .table:
            var out: [String: ConfigValue] = [:]
            if let t = value.table { for key in t.keys { if let v = t[key] { out[key] = convert(v.tomlValue) } } }
            return .table(out)
        case .array:
            return .array((value.array ?? []).map { convert($0.tomlValue) })
        case .string: return .string(value.string ?? "")
        case .int: return .integer(Int64(value.int ?? 0))
        case .double: return .double(value.double ?? 0)
        case .bool: return .bool(value.bool ?? false)
        default: return .string(value.debugDescription)
        }
    }

    private mutating func apply(_ root: [String: ConfigValue], source: String) throws {
        let sections = ["server", "sessions", "conntrack", "plugins", "plugin", "log", "web", "metrics", "service"]
        for key in root.keys.sorted() where !sections.contains(key) {
            throw Error(
                message: "\(source): unknown section or key '\(key)' (known: \(sections.joined(separator: ", ")))")
        }
        if let s = try section(root, "server", source) {
            var r = StrictReader(values: s, section: "server", source: source)
            listen = try r.string("listen") ?? listen
            port = try r.int("port", 0...65535) ?? port
            tlsCertificate = try r.string("tls_certificate").flatMap { $0.isEmpty ? nil : $0 }
            tlsKey = try r.string("tls_key").flatMap { $0.isEmpty ? nil : $0 }
            maxBodyBytes = try r.int("max_body_bytes", 1024...(256 << 20)) ?? maxBodyBytes
            core.maxDepth = try r.int("max_depth", 4...256) ?? core.maxDepth
            core.maxPageLength = try r.int("max_page_length", 1...5000) ?? core.maxPageLength
            core.maxKillIDs = try r.int("max_kill_ids", 1...1_000_000) ?? core.maxKillIDs
            core.maxResponseBytes =
                try r.int("max_response_bytes", (1 << 20)...(1 << 30)) ?? core.maxResponseBytes
            workerThreads = try r.int("worker_threads", 0...256) ?? workerThreads
            drainTimeout = try r.double("drain_timeout", 0...600) ?? drainTimeout
            maxConnections = try r.int("max_connections", 1...1_000_000) ?? maxConnections
            maxConnectionsPerAddress =
                try r.int("max_connections_per_address", 1...1_000_000) ?? maxConnectionsPerAddress
            headerTimeout = try r.double("header_timeout", 0.1...3600) ?? headerTimeout
            bodyTimeout = try r.double("body_timeout", 0.1...3600) ?? bodyTimeout
            connectionIdleTimeout = try r.double("idle_timeout", 0.1...86400) ?? connectionIdleTimeout
            writeTimeout = try r.double("write_timeout", 0.1...3600) ?? writeTimeout
            allowedOrigins = try r.strings("allowed_origins") ?? allowedOrigins
            serverNames = try r.strings("server_names") ?? serverNames
            try r.finish()
        }
        if let s = try section(root, "sessions", source) {
            var r = StrictReader(values: s, section: "sessions", source: source)
            idleTimeout = try r.double("idle_timeout", 1...86400) ?? idleTimeout
            maxLifetime = try r.double("max_lifetime", 1...(30 * 86400)) ?? maxLifetime
            maxSessions = try r.int("max_sessions", 1...1_000_000) ?? maxSessions
            maxPinnedSnapshots = try r.int("max_pinned_snapshots", 1...1024) ?? maxPinnedSnapshots
            core.loginFailureLimit = try r.int("login_failure_limit", 0...1_000_000) ?? core.loginFailureLimit
            core.loginFailureLimitPerSource =
                try r.int("login_failure_limit_per_source", 0...1_000_000) ?? core.loginFailureLimitPerSource
            core.loginFailureLimitPerUser =
                try r.int("login_failure_limit_per_user", 0...1_000_000) ?? core.loginFailureLimitPerUser
            core.loginFailureWindow = try r.double("login_failure_window", 1...86400) ?? core.loginFailureWindow
            core.maxConcurrentLogins = try r.int("max_concurrent_logins", 1...1024) ?? core.maxConcurrentLogins
            core.maxSessionsPerUser = try r.int("max_sessions_per_user", 1...1_000_000) ?? core.maxSessionsPerUser
            try r.finish()
        }
        if let s = try section(root, "conntrack", source) {
            var r = StrictReader(values: s, section: "conntrack", source: source)
            receiveBuffer = try r.int("receive_buffer", 65536...(1 << 30)) ?? receiveBuffer
            counterInterval = try r.double("counter_interval", 0.1...3600) ?? counterInterval
            hide = try r.strings("hide") ?? hide
            hideOwnConnections = try r.bool("hide_own_connections") ?? hideOwnConnections
            connlabelFile = try r.string("connlabel_file") ?? connlabelFile
            try r.finish()
        }
        if let s = try section(root, "plugins", source) {
            var r = StrictReader(values: s, section: "plugins", source: source)
            if let d = try r.string("directory") { pluginDirectories = [d] }
            authenticator = try r.string("auth") ?? authenticator
            plugins = try r.strings("enable") ?? plugins
            try r.finish()
        }
        if let s = try section(root, "plugin", source) {
            for (name, value) in s {
                guard case .table(let t) = value else {
                    throw Error(message: "\(source): [plugin.\(name)] must be a table")
                }
                pluginSections[name] = t
            }
        }
        if let s = try section(root, "web", source) {
            var r = StrictReader(values: s, section: "web", source: source)
            webEnabled = try r.bool("enabled") ?? webEnabled
            webRoot = try r.string("root") ?? webRoot
            webBanner = try r.string("banner") ?? webBanner
            try r.finish()
        }
        if let s = try section(root, "service", source) {
            var r = StrictReader(values: s, section: "service", source: source)
            serviceUser = try r.string("user") ?? serviceUser
            try r.finish()
        }
        if let s = try section(root, "metrics", source) {
            var r = StrictReader(values: s, section: "metrics", source: source)
            if let listen = try r.string("listen") {
                metricsListen = try MetricsAddress.parse(listen, source: "\(source): [metrics] listen")
            }
            metricsMaxConnections = try r.int("max_connections", 1...4096) ?? metricsMaxConnections
            try r.finish()
        }
        if let s = try section(root, "log", source) {
            var r = StrictReader(values: s, section: "log", source: source)
            logLevel = try r.string("level") ?? logLevel
            logFormat = try r.string("format") ?? logFormat
            try r.finish()
        }
        try validate(source: source)
    }

    func validate(source: String = "config") throws {
        for block in hide where CIDRBlock(block) == nil {
            throw Error(message: "\(source): [conntrack] hide: '\(block)' is not an address or CIDR block")
        }
        if (tlsCertificate == nil) != (tlsKey == nil) {
            throw Error(message: "\(source): [server] tls_certificate and tls_key must be given together")
        }
        if maxConnectionsPerAddress > maxConnections {
            throw Error(
                message: "\(source): [server] max_connections_per_address must not exceed max_connections")
        }
        for origin in allowedOrigins {
            let parts = origin.split(separator: "://", maxSplits: 1)
            guard parts.count == 2, ["http", "https"].contains(parts[0].lowercased()), !parts[1].isEmpty,
                !parts[1].dropLast(parts[1].hasSuffix("/") ? 1 : 0).contains("/")
            else {
                throw Error(
                    message:
                        "\(source): [server] allowed_origins: '\(origin)' is not an origin (scheme://host or scheme://host:port)"
                )
            }
        }
        for name in serverNames ?? [] where name.isEmpty || name.contains("/") || name.contains(" ") {
            throw Error(message: "\(source): [server] server_names: '\(name)' is not a host name or address")
        }
        if LogFormat(rawValue: logFormat) == nil {
            throw Error(
                message:
                    "\(source): [log] format must be one of \(LogFormat.allCases.map(\.rawValue).joined(separator: ", ")), not '\(logFormat)'"
            )
        }
        let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
        if !levels.contains(logLevel) {
            throw Error(message: "\(source): [log] level must be one of \(levels.joined(separator: ", "))")
        }
    }

    private func section(_ root: [String: ConfigValue], _ name: String, _ source: String) throws
        -> [String: ConfigValue]?
    {
        guard let v = root[name] else { return nil }
        guard case .table(let t) = v else { throw Error(message: "\(source): '\(name)' must be a [\(name)] section") }
        return t
    }
}

/// Reads keys of one section, remembering which were used so that `finish()` can reject the rest.
struct StrictReader {
    var values: [String: ConfigValue]
    var section: String
    var source: String
    private var used: Set<String> = []

    init(values: [String: ConfigValue], section: String, source: String) {
        self.values = values
        self.section = section
        self.source = source
    }

    private func fail(_ key: String, _ what: String) -> DaemonConfig.Error {
        DaemonConfig.Error(message: "\(source): [\(section)] \(key) must be \(what)")
    }

    mutating func string(_ key: String) throws -> String? {
        used.insert(key)
        guard let v = values[key] else { return nil }
        guard case .string(let s) = v else { throw fail(key, "a string") }
        return s
    }

    mutating func int(_ key: String, _ range: ClosedRange<Int>) throws -> Int? {
        used.insert(key)
        guard let v = values[key] else { return nil }
        guard case .integer(let i) = v, range.contains(Int(i)) else {
            throw fail(key, "an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return Int(i)
    }

    mutating func double(_ key: String, _ range: ClosedRange<Double>) throws -> Double? {
        used.insert(key)
        guard let v = values[key] else { return nil }
        let d: Double
        switch v {
        case .integer(let i): d = Double(i)
        case .double(let x): d = x
        default: throw fail(key, "a number")
        }
        guard range.contains(d) else { throw fail(key, "between \(range.lowerBound) and \(range.upperBound)") }
        return d
    }

    mutating func bool(_ key: String) throws -> Bool? {
        used.insert(key)
        guard let v = values[key] else { return nil }
        guard case .bool(let b) = v else { throw fail(key, "true or false") }
        return b
    }

    mutating func strings(_ key: String) throws -> [String]? {
        used.insert(key)
        guard let v = values[key] else { return nil }
        guard case .array(let items) = v else { throw fail(key, "an array of strings") }
        return try items.map {
            guard case .string(let s) = $0 else { throw fail(key, "an array of strings") }
            return s
        }
    }

    func finish() throws {
        for key in values.keys.sorted() where !used.contains(key) {
            throw DaemonConfig.Error(
                message:
                    "\(source): unknown key '\(key)' in [\(section)] (known: \(used.sorted().joined(separator: ", ")))")
        }
    }
}
