import CtdPluginAPI
import Foundation
import SyslogForwarding

#if canImport(Glibc)
    import Glibc
#endif

/// `[plugin.AuditSyslog]`, read strictly (an unknown key is an error). Defaults are in auditsyslog.sample.toml.
struct AuditSyslogSettings: Sendable {
    static let keys: Set<String> = [
        "address", "tls_ca_file", "tls_server_name", "tls_cert_file", "tls_key_file", "queue_path",
        "queue_max_bytes", "queue_max_events", "queue_full", "facility", "hostname", "app_name", "sd_id",
        "batch_events", "timeout", "retry_max_seconds", "drain_seconds",
    ]
    static let defaultQueuePath = "/var/lib/ctd/audit-syslog.queue"

    var address: SyslogAddress
    var tlsCAFile: String?
    var tlsServerName: String?
    var tlsCertFile: String?
    var tlsKeyFile: String?
    var queuePath: String
    var queueMaxBytes: Int
    var queueMaxEvents: Int
    var queueFull: DurableQueue.FullPolicy
    var facility: Int
    var hostname: String
    var appName: String
    var sdID: String
    var batchEvents: Int
    var timeout: Double
    var retryMaxSeconds: Double
    var drainSeconds: Double

    init(_ c: PluginConfiguration) throws {
        let name = c.pluginName
        try c.expectOnly(Self.keys)
        let addressText = try c.string("address", default: "unix:/dev/log") ?? "unix:/dev/log"
        guard let address = SyslogAddress.parse(addressText) else {
            throw PluginError(
                "'address' of plugin \(name) must be \"unix:/PATH\" (a local datagram socket such as /dev/log) or "
                    + "\"tls://HOST:PORT\" (a collector speaking RFC 5425), not '\(addressText)'")
        }
        self.address = address
        func path(_ key: String) throws -> String? {
            guard let p = try c.string(key), !p.isEmpty else { return nil }
            guard p.hasPrefix("/") else {
                throw PluginError("'\(key)' of plugin \(name) must be an absolute path, not '\(p)'")
            }
            return p
        }
        tlsCAFile = try path("tls_ca_file")
        tlsCertFile = try path("tls_cert_file")
        tlsKeyFile = try path("tls_key_file")
        tlsServerName = try c.string("tls_server_name").flatMap { $0.isEmpty ? nil : $0 }
        if (tlsCertFile == nil) != (tlsKeyFile == nil) {
            throw PluginError(
                "plugin \(name): 'tls_cert_file' and 'tls_key_file' go together (a client certificate and its key)")
        }
        if let key = tlsKeyFile {
            var st = stat()
            if stat(key, &st) == 0 && (st.st_mode & 0o077) != 0 {
                throw PluginError(
                    "plugin \(name): the client key \(key) may be read by group or others (mode "
                        + "\(String(st.st_mode & 0o777, radix: 8))); make it 0600 or 0400")
            }
        }
        if case .unix = address, tlsCAFile != nil || tlsCertFile != nil || tlsServerName != nil {
            throw PluginError("plugin \(name): the tls_* keys apply to a tls:// address only, not to \(address)")
        }
        if case .tls = address, tlsCAFile == nil {
            throw PluginError(
                "plugin \(name) needs 'tls_ca_file' (the CA that signed the collector's certificate) for \(address)")
        }
        queuePath = try path("queue_path") ?? Self.defaultQueuePath
        queueMaxBytes = Int(try Self.bounded(c, "queue_max_bytes", 64 << 20, 65536, 1 << 40))
        queueMaxEvents = Int(try Self.bounded(c, "queue_max_events", 1_000_000, 1, 100_000_000))
        let policyText = try c.string("queue_full", default: "refuse") ?? "refuse"
        guard let policy = DurableQueue.FullPolicy(rawValue: policyText) else {
            throw PluginError(
                "'queue_full' of plugin \(name) must be \"refuse\" or \"drop_oldest\", not '\(policyText)'")
        }
        queueFull = policy
        let facilityText = try c.string("facility", default: "authpriv") ?? "authpriv"
        guard let facility = SyslogMessage.facilities[facilityText] else {
            throw PluginError(
                "'facility' of plugin \(name) must be one of \(SyslogMessage.facilities.keys.sorted().joined(separator: ", ")), not '\(facilityText)'"
            )
        }
        self.facility = facility
        hostname = try c.string("hostname").flatMap { $0.isEmpty ? nil : $0 } ?? Self.systemHostname()
        appName = try c.string("app_name", default: "ctd") ?? "ctd"
        for (key, value, max) in [("hostname", hostname, 255), ("app_name", appName, 48)] {
            guard !value.isEmpty, value.utf8.count <= max, value.utf8.allSatisfy({ $0 >= 33 && $0 <= 126 }) else {
                throw PluginError(
                    "'\(key)' of plugin \(name) must be 1 to \(max) printable ASCII characters without spaces")
            }
        }
        sdID = try c.string("sd_id", default: "ctd@32473") ?? "ctd@32473"
        guard SyslogMessage.isValidEnterpriseSDID(sdID) else {
            throw PluginError(
                "'sd_id' of plugin \(name) must be NAME@ENTERPRISE-NUMBER (RFC 5424 7.2.2, e.g. ctd@32473), not '\(sdID)'"
            )
        }
        batchEvents = Int(try Self.bounded(c, "batch_events", 1000, 1, 100_000))
        timeout = try Self.seconds(c, "timeout", 10, 0.1, 600)
        retryMaxSeconds = try Self.seconds(c, "retry_max_seconds", 30, 0.1, 3600)
        drainSeconds = try Self.seconds(c, "drain_seconds", 5, 0, 600)
    }

    static func bounded(_ c: PluginConfiguration, _ key: String, _ def: Int64, _ lo: Int64, _ hi: Int64) throws -> Int64
    {
        let v = try c.integer(key, default: def) ?? def
        guard v >= lo && v <= hi else { throw PluginError("'\(key)' of plugin \(c.pluginName) must be \(lo) to \(hi)") }
        return v
    }

    static func seconds(_ c: PluginConfiguration, _ key: String, _ def: Double, _ lo: Double, _ hi: Double) throws
        -> Double
    {
        let v = try c.double(key, default: def) ?? def
        guard v >= lo && v <= hi else {
            throw PluginError("'\(key)' of plugin \(c.pluginName) must be \(lo) to \(hi) seconds")
        }
        return v
    }

    static func systemHostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "-" }
        let name = String(cString: buffer)
        return name.isEmpty ? "-" : name
    }
}
