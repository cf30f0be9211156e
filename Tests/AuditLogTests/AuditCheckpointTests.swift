import Foundation
import Testing

@testable import AuditLog

// Signed checkpoints (docs/audit.md): real SQLite files; every tampering is done with the sqlite3 CLI on a copy.

private final class Scratch {
    let path: String
    init() throws {
        var template = Array("/tmp/auditcp-test.XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw AuditError.invalidArgument("mkdtemp failed")
        }
        path = String(cString: p)
    }
    func file(_ name: String) -> String { "\(path)/\(name)" }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

private func sh(_ arguments: String...) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

private func tamper(_ db: String, _ sql: String) throws {
    let r = try sh("sqlite3", db, sql)
    #expect(r.status == 0, "sqlite3 \(sql): \(r.err)")
}

private func action(_ i: Int) -> AuditEntry {
    AuditEntry(
        action: .kill, procedure: "kill", user: "alice", roles: ["operator"], client: "127.0.0.1",
        connection: AuditConnection(
            id: UInt32(1000 + i), l3proto: "ipv4", l4proto: 17, origSource: "10.0.0.1", origDestination: "10.0.0.2",
            origSourcePort: 5353, origDestinationPort: 53, replySource: "10.0.0.2", replyDestination: "10.0.0.1",
            replySourcePort: 53, replyDestinationPort: 5353, mark: 0, timeout: 100, zone: 0))
}

/// A closed trail of `rows` rows with a checkpoint after row `anchoredAt` and returns the key and last checkpoint.
private func trail(_ dir: Scratch, rows: Int, anchoredAt: Int) throws -> (key: AuditSigningKey, last: AuditCheckpoint) {
    let key = try AuditSigningKey.loadOrCreate(path: dir.file("audit-signing.key"))
    let store = try AuditStore(path: dir.file("audit.db"))
    try store.markOpened()
    var last = try store.writeCheckpoint(kind: "open", key: key)
    for i in 0..<rows {
        try store.append(action(i))
        if i + 1 == anchoredAt { last = try store.writeCheckpoint(kind: "periodic", key: key) }
    }
    try store.markClosed()
    store.close()
    return (key, last)
}

private func verify(_ path: String, _ key: [UInt8]?, expect: Int64? = nil) throws -> AuditStore.AnchorReport {
    let walMissing = AuditStore.walIsMissing(path: path)
    let store = try AuditStore(readingFrom: path)
    defer { store.close() }
    return try store.verify(publicKey: key, expectCheckpoint: expect, walMissing: walMissing)
}

@Test func key_isCreated0600_andReloads() throws {
    let dir = try Scratch()
    let k = try AuditSigningKey.loadOrCreate(path: dir.file("k"))
    let mode = try FileManager.default.attributesOfItem(atPath: dir.file("k"))[.posixPermissions] as? Int
    #expect(mode == 0o600)
    #expect(try AuditSigningKey.loadOrCreate(path: dir.file("k")).publicKey == k.publicKey)
    try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: dir.file("k"))
    #expect(throws: AuditError.self) { try AuditSigningKey.load(path: dir.file("k")) }
    try k.publicKeyLine.write(toFile: dir.file("k.pub"), atomically: true, encoding: .utf8)
    #expect(try AuditSigningKey.loadPublicKey(path: dir.file("k.pub")) == k.publicKey)
}

@Test func intactTrail_reportsRowsAfterTheLastCheckpointAsNotYetAnchored() throws {
    let dir = try Scratch()
    let (key, last) = try trail(dir, rows: 10, anchoredAt: 7)
    let r = try verify(dir.file("audit.db"), key.publicKey)
    #expect(r.isIntact, "\(r.description)")
    #expect(r.lastCheckpoint == last)
    #expect(r.unanchoredRows == 3)
    #expect(r.description.contains("3 rows after seq 7 are not yet anchored"))
}

@Test func truncatedTail_pastACheckpoint_fails() throws {
    let dir = try Scratch()
    let (key, _) = try trail(dir, rows: 10, anchoredAt: 7)
    try tamper(dir.file("audit.db"), "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq >= 6")
    // The plain chain cannot tell: the remaining rows link.
    #expect(try verify(dir.file("audit.db"), nil).isIntact)
    let r = try verify(dir.file("audit.db"), key.publicKey)
    #expect(!r.isIntact)
    #expect(r.description.contains("rows 6 to 7 were deleted from the tail"), "\(r.description)")
}

@Test func truncatedTail_withItsCheckpoints_failsAgainstTheLoggedCheckpointNumber() throws {
    let dir = try Scratch()
    let (key, last) = try trail(dir, rows: 10, anchoredAt: 7)
    try tamper(
        dir.file("audit.db"),
        "DROP TRIGGER audit_no_delete; DROP TRIGGER checkpoint_no_delete; DELETE FROM audit WHERE seq >= 6; "
            + "DELETE FROM checkpoint WHERE number = \(last.number)")
    #expect(try verify(dir.file("audit.db"), key.publicKey).isIntact)  // unknowable from the file alone
    let r = try verify(dir.file("audit.db"), key.publicKey, expect: last.number)
    #expect(!r.isIntact)
    #expect(r.description.contains("checkpoint \(last.number) was issued"), "\(r.description)")
}

@Test func chainRewrittenFromTheStart_fails() throws {
    let dir = try Scratch()
    let (key, _) = try trail(dir, rows: 10, anchoredAt: 7)
    // A new chain with other contents, hashes recomputed by ctd's own code, put in place of the original rows.
    let forged = try AuditStore(path: dir.file("forged.db"))
    for i in 0..<10 { try forged.append(action(i + 500)) }
    forged.close()
    try tamper(
        dir.file("audit.db"),
        "DROP TRIGGER audit_no_delete; DELETE FROM audit; ATTACH '\(dir.file("forged.db"))' AS f; "
            + "INSERT INTO audit SELECT * FROM f.audit")
    #expect(try verify(dir.file("audit.db"), nil).isIntact)
    let r = try verify(dir.file("audit.db"), key.publicKey)
    #expect(!r.isIntact)
    #expect(r.description.contains("the chain was rewritten"), "\(r.description)")
}

@Test func checkpointFromAnotherKey_orEdited_fails() throws {
    let dir = try Scratch()
    let (key, _) = try trail(dir, rows: 4, anchoredAt: 4)
    let other = try AuditSigningKey.loadOrCreate(path: dir.file("other.key"))
    // An intruder signs a checkpoint of the head with a key of their own.
    let store = try AuditStore(path: dir.file("audit.db"))
    try store.writeCheckpoint(kind: "periodic", key: other)
    store.close()
    let r = try verify(dir.file("audit.db"), key.publicKey)
    #expect(!r.isIntact)
    #expect(r.description.contains("was not signed by the given public key"), "\(r.description)")
    // The real key on a checkpoint whose head was edited.
    let dir2 = try Scratch()
    let (key2, _) = try trail(dir2, rows: 4, anchoredAt: 4)
    try tamper(
        dir2.file("audit.db"), "DROP TRIGGER checkpoint_no_update; UPDATE checkpoint SET head_seq = 3 WHERE number = 2")
    let r2 = try verify(dir2.file("audit.db"), key2.publicKey)
    #expect(!r2.isIntact)
    #expect(r2.description.contains("not valid for the given public key"), "\(r2.description)")
}

@Test func noCheckpointAtAll_isNotProven() throws {
    let dir = try Scratch()
    let store = try AuditStore(path: dir.file("audit.db"))
    try store.append(action(1))
    store.close()
    let key = try AuditSigningKey.loadOrCreate(path: dir.file("k"))
    let r = try verify(dir.file("audit.db"), key.publicKey)
    #expect(!r.isIntact)
    #expect(r.description.contains("none of the 1 rows is anchored"))
}

@Test func copyWithoutItsWAL_whileOpen_saysSo() throws {
    let dir = try Scratch()
    let key = try AuditSigningKey.loadOrCreate(path: dir.file("k"))
    let store = try AuditStore(path: dir.file("audit.db"))
    try store.markOpened()
    for i in 0..<5 { try store.append(action(i)) }
    try store.writeCheckpoint(kind: "periodic", key: key)
    // Copy the main file only, as `cp audit.db` does while ctd runs.
    try FileManager.default.copyItem(atPath: dir.file("audit.db"), toPath: dir.file("copy.db"))
    store.close()
    let r = try verify(dir.file("copy.db"), nil)
    #expect(!r.isIntact)
    #expect(r.description.contains("-wal file is missing"), "\(r.description)")
}
