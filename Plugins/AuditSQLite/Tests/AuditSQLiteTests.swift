import AuditLog
import CtdPluginAPI
import CtdPluginTestKit
import Foundation
import Synchronization
import Testing

// The built libAuditSQLite.so, loaded through the host's PluginLoader and called the way the host calls it:
// configure, then before/after per action, and readTrail for audit_list. The trail is read back with AuditLog, the
// file format's own library (as `ctd audit` reads it).

func temporaryDirectory() throws -> String {
    var template = Array("/tmp/auditsqlite-test.XXXXXX".utf8CString)
    guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw PluginError("mkdtemp failed")
    }
    return String(cString: p)
}

final class LogSink: Sendable {
    let lines = Mutex<[String]>([])
    var context: PluginContext {
        PluginContext { [self] level, message in lines.withLock { $0.append("\(level.rawValue): \(message)") } }
    }
}

/// A fresh, unconfigured instance of the built plugin.
func unconfiguredAuditPlugin() throws -> any AuditTrailReader {
    try PluginUnderTest.instance("AuditSQLite", as: (any AuditTrailReader).self, role: .actionHook)
}

/// The built plugin configured with `values` as its `[plugin.AuditSQLite]` section.
func configured(_ values: [String: ConfigValue], log: LogSink = LogSink()) throws -> any AuditTrailReader {
    try PluginUnderTest.configured(
        "AuditSQLite", as: (any AuditTrailReader).self, role: .actionHook, values: values, log: log.context.log)
}

private let connection = ConnectionInfo(
    id: 4_000_000_001, l3proto: "ipv6", l4proto: 6, origSource: "fd00::1", origDestination: "fd00::2",
    origSourcePort: 40000, origDestinationPort: 443, replySource: "fd00::2", replyDestination: "fd00::1",
    replySourcePort: 443, replyDestinationPort: 40000, mark: 12, timeout: 431999, status: 14, zone: 0)

@Test func metadata_isAnActionHookThatStopsActionsOnFailure() throws {
    let plugin = try unconfiguredAuditPlugin()
    #expect(plugin.metadata.id == "hook.audit_sqlite")
    #expect(plugin.metadata.name == "AuditSQLite")
    #expect(plugin.metadata.roles == [.actionHook])
    #expect(plugin.metadata.abiVersion == ctdPluginABIVersion)
    #expect(plugin.failureStopsAction)
    #expect(plugin.healthProblem == "not configured")
}

@Test(arguments: [
    (["database": .string("/tmp/x.db"), "sync": .string("off")], "'sync'"),
    (["database": ConfigValue.string("audit.db")], "absolute path"),
    (["database": .string("/tmp/x.db"), "sync": .string("normal")], "'sync'"),
    (["database": .string("/tmp/x.db"), "busy_timeout": .integer(3600)], "'busy_timeout'"),
    (["database": .string("/tmp/x.db"), "path": .string("/tmp/y.db")], "unknown key 'path'"),
    (["database": .integer(1)], "must be a string"),
])
func configure_withBadSettings_throwsNamingTheKey(values: [String: ConfigValue], complaint: String) {
    let error = #expect(throws: PluginError.self) { try configured(values) }
    #expect(error?.message.contains(complaint) == true, "\(String(describing: error))")
}

@Test func configure_ofAnUncreatableFile_throws() {
    let error = #expect(throws: PluginError.self) {
        try configured(["database": .string("/etc/hostname/audit.db")])
    }
    #expect(error?.message.contains("/etc/hostname/audit.db") == true)
}

@Test func beforeAndAfter_writeAPendingRowThenItsOutcome() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/audit.db"
    let log = LogSink()
    let plugin = try configured(
        ["database": .string(path), "sync": .string("EXTRA"), "busy_timeout": .double(0.5)], log: log)
    #expect(plugin.healthProblem == nil)
    let event = ActionEvent(
        kind: .change, procedure: "change", user: "alice", roles: [.operator, .admin], clientAddress: "::1",
        connection: connection, field: "mark", newValue: "99")
    let (decision, token) = try plugin.before(event)
    #expect(decision == .allow)
    #expect(token == 1)

    let reader = try AuditStore(readingFrom: path)
    let pending = try #require(try reader.query().first)
    #expect(pending.outcome == .pending)
    #expect(pending.connID == 4_000_000_001 && pending.mark == 12 && pending.origSource == "fd00::1")
    #expect(pending.roles == ["admin", "operator"] && pending.field == "mark" && pending.newValue == "99")

    try plugin.after(event, token: token, outcome: .failed(reason: "no such connection"))
    let done = try #require(try reader.query().first)
    #expect(done.outcome == .failed && done.reason == "no such connection" && done.outcomeSeq == 2)
    #expect(try reader.verify().isIntact)

    plugin.shutdown()
    let lines = log.lines.withLock { $0 }
    #expect(lines.contains { $0.hasPrefix("info: AuditSQLite: \(path) opened, empty") })
    #expect(lines.contains { $0.contains("closing \(path), head seq 2 hash ") })
}

@Test func before_ofADeniedCall_writesACompleteRecord() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let plugin = try configured(["database": .string(dir + "/audit.db")])
    _ = try plugin.before(
        ActionEvent(kind: .denied, procedure: "kill", user: "v", roles: [.viewer], clientAddress: "127.0.0.1"))
    let r = try #require(try AuditStore(readingFrom: dir + "/audit.db").query().first)
    #expect(r.action == .denied && r.outcome == .failed && r.reason == "permission denied")
}

@Test func before_whenTheDatabaseIsImmutable_throwsAndReportsHealthUntilAWriteSucceeds() throws {
    let dir = try temporaryDirectory()
    let path = dir + "/audit.db"
    defer {
        _ = try? Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-i", path, path + "-wal"])
            .waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
    }
    let plugin = try configured(["database": .string(path)])
    let login = ActionEvent(kind: .login, procedure: "login", user: "a", roles: [.admin], clientAddress: "127.0.0.1")
    _ = try plugin.before(login)
    let chattr = try Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["+i", path, path + "-wal"])
    chattr.waitUntilExit()
    try #require(chattr.terminationStatus == 0, "chattr +i needs root and ext4/xfs/btrfs")
    let error = #expect(throws: PluginError.self) { try plugin.before(login) }
    #expect(error?.message.contains("cannot record the login by a") == true, "\(String(describing: error))")
    #expect(plugin.healthProblem?.contains("last write failed") == true)
    let undo = try Process.run(URL(fileURLWithPath: "/usr/bin/chattr"), arguments: ["-i", path, path + "-wal"])
    undo.waitUntilExit()
    _ = try plugin.before(login)
    #expect(plugin.healthProblem == nil)
}
