import CtdPluginAPI
import CtdPluginTestKit
import Foundation
import Synchronization
import SyslogForwarding
import Testing

// The built libAuditSyslog.so, loaded through the host's PluginLoader and called as the host calls it. The
// datagram round trip uses a real Unix socket bound by the test (rsyslog itself is in Tests/e2e).

private func plugin(_ values: [String: ConfigValue]) throws -> any ActionHook {
    try PluginUnderTest.configured("AuditSyslog", as: (any ActionHook).self, role: .actionHook, values: values)
}

@Test func metadata_isAnActionHookThatStopsActionsOnFailure() throws {
    let p = try PluginUnderTest.instance("AuditSyslog", as: (any ActionHook).self, role: .actionHook)
    #expect(p.metadata.id == "hook.audit_syslog" && p.metadata.name == "AuditSyslog")
    #expect(p.metadata.roles == [.actionHook] && p.metadata.abiVersion == ctdPluginABIVersion)
    #expect(p.failureStopsAction)
    #expect(p.healthProblem == "not configured")
}

@Test(arguments: [
    (["colour": ConfigValue.string("red")], "unknown key 'colour'"),
    (["address": .string("udp://127.0.0.1:514")], "'address'"),
    (["address": .string("tls://127.0.0.1:6514")], "tls_ca_file"),
    (["address": .string("unix:/dev/log"), "tls_ca_file": .string("/etc/ssl/certs/ca-certificates.crt")], "tls://"),
    (["queue_full": .string("block")], "'queue_full'"),
    (["queue_path": .string("relative/q")], "absolute path"),
    (["queue_max_events": .integer(0)], "'queue_max_events'"),
    (["facility": .string("nonsense")], "'facility'"),
    (["sd_id": .string("ctd")], "'sd_id'"),
    (["tls_cert_file": .string("/x.pem")], "go together"),
    (["address": .string("tls://127.0.0.1:6514"), "tls_ca_file": .string("/nonexistent/ca.pem")], "CA file"),
])
func configure_withABadSection_failsNamingIt(values: [String: ConfigValue], complaint: String) throws {
    var v = values
    if v["queue_path"] == nil { v["queue_path"] = .string(try syslogTestDirectory() + "/q") }
    do {
        _ = try plugin(v)
        Issue.record("configured with \(values)")
    } catch let error as PluginError {
        #expect(error.message.contains(complaint), "\(error.message)")
    }
}

@Test func configure_withAClientKeyOthersMayRead_isRefused() throws {
    let dir = try syslogTestDirectory()
    let key = dir + "/client.key"
    #expect(
        FileManager.default.createFile(atPath: key, contents: Data("x".utf8), attributes: [.posixPermissions: 0o644]))
    do {
        _ = try plugin([
            "address": .string("tls://127.0.0.1:6514"), "tls_ca_file": .string(dir + "/ca.pem"),
            "tls_cert_file": .string(dir + "/client.pem"), "tls_key_file": .string(key),
            "queue_path": .string(dir + "/q"),
        ])
        Issue.record("configured with a world-readable key")
    } catch let error as PluginError {
        #expect(error.message.contains("may be read by group or others (mode 644)"), "\(error.message)")
    }
}

@Test func events_reachALocalDatagramSocket_inOrderWithTheirOutcome() throws {
    let dir = try syslogTestDirectory()
    let path = dir + "/log"
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
    #expect(fd >= 0)
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (i, b) in path.utf8.enumerated() { raw[i] = b }
    }
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    #expect(bound == 0)
    var tv = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let hook = try plugin([
        "address": .string("unix:" + path), "queue_path": .string(dir + "/queue"), "hostname": .string("t1"),
    ])
    let event = ActionEvent(kind: .login, procedure: "login", user: "alice", roles: [.admin], clientAddress: "::1")
    let token = try hook.before(event).token
    try hook.after(event, token: token, outcome: .succeeded)
    var received: [String] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    for _ in 0..<2 {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        #expect(n > 0)
        if n > 0 { received.append(String(decoding: buffer[0..<n], as: UTF8.self)) }
    }
    #expect(received.count == 2)
    #expect(
        received.first?.contains(" t1 ctd \(getpid()) login [ctd@32473 event=\"\(token)\" action=\"login\"") == true)
    #expect(received.last?.contains(" outcome [ctd@32473 event=\"\(token + 1)\" ref=\"\(token)\"") == true)
    hook.shutdown()
    #expect(hook.healthProblem == nil)
}
