import AuditLog
import CtdPluginAPI
import CtdPluginTestKit
import Foundation
import Testing

// Crash recovery through the built libAuditSQLite.so: a pending row left by a "crash" (the plugin is dropped without
// its outcome) is listed by the next instance as unfinished and completed with an interrupted outcome in the chain.

private let victim = ConnectionInfo(
    id: 3_900_000_123, l3proto: "ipv4", l4proto: 17, origSource: "10.9.0.1", origDestination: "10.9.0.2",
    origSourcePort: 5353, origDestinationPort: 53, replySource: "10.9.0.2", replyDestination: "10.9.0.1",
    replySourcePort: 53, replyDestinationPort: 5353, mark: 3, timeout: 120, status: 0, zone: 7)

private func kill(_ c: ConnectionInfo) -> ActionEvent {
    ActionEvent(
        kind: .kill, procedure: "kill", user: "alice", roles: [.operator], clientAddress: "127.0.0.1", connection: c)
}

@Test func unfinishedActions_afterACrashBetweenPendingAndOutcome_areRecordedInterruptedInTheChain() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let section: [String: ConfigValue] = ["database": .string("\(dir)/audit.db")]
    let first = try configured(section)
    let done = try first.before(kill(victim))
    try first.after(kill(victim), token: done.token, outcome: .succeeded)
    let pending = try first.before(batch: [kill(victim), kill(victim)]).map(\.token)
    // The crash: no outcome, no shutdown. The next instance (a restart) finds the two, not the finished one.
    let second = try configured(section)
    defer { second.shutdown() }
    guard let recorder = second as? any UnfinishedActionRecorder else {
        Issue.record("AuditSQLite does not offer UnfinishedActionRecorder")
        return
    }
    let unfinished = try recorder.unfinishedActions()
    #expect(unfinished.map(\.token) == pending)
    #expect(unfinished.first?.event == ActionEvent(
        kind: .kill, procedure: "kill", user: "alice", roles: [.operator], clientAddress: "127.0.0.1",
        connection: ConnectionInfo(
            id: victim.id, l3proto: "ipv4", l4proto: 17, origSource: "10.9.0.1", origDestination: "10.9.0.2",
            origSourcePort: 5353, origDestinationPort: 53, replySource: "10.9.0.2", replyDestination: "10.9.0.1",
            replySourcePort: 53, replyDestinationPort: 5353, mark: 3, timeout: 120, status: 0, zone: 7)))
    let interrupted = unfinished.map {
        InterruptedAction(
            event: $0.event, token: $0.token, recordedBy: "AuditSQLite", connectionPresent: false, current: nil,
            reason: "gone at restart")
    }
    let positions = try recorder.recordInterrupted(interrupted)
    #expect(positions.count == 2 && positions.allSatisfy { $0 != nil })
    #expect(positions.compactMap { $0?.action.seq } == pending)
    #expect(try recorder.unfinishedActions().isEmpty)
    // A token that names no unfinished row is refused, not turned into a false outcome.
    #expect(throws: PluginError.self) { _ = try recorder.recordInterrupted([interrupted[0]]) }

    let store = try AuditStore(readingFrom: "\(dir)/audit.db")
    defer { store.close() }
    #expect(try store.verify().isIntact)
    let records = try store.query(action: .kill)
    #expect(records.map(\.outcome) == [.succeeded, .interrupted, .interrupted])
    #expect(records.last?.reason == "gone at restart")
    #expect(records.last?.outcomeSeq == positions.last??.outcome.seq)
    #expect(try store.checkpoints().last?.kind == "recovery")
    #expect(try store.checkpoints().last?.headSeq == positions.last??.outcome.seq)
}

/// Connection `i` of a bulk kill (distinct ids and ports).
private func victim(_ i: Int) -> ConnectionInfo {
    ConnectionInfo(
        id: 3_800_000_000 + UInt32(i), l3proto: "ipv4", l4proto: 17, origSource: "10.9.0.1",
        origDestination: "10.9.0.2", origSourcePort: UInt16(10_000 + i), origDestinationPort: 53,
        replySource: "10.9.0.2", replyDestination: "10.9.0.1", replySourcePort: 53,
        replyDestinationPort: UInt16(10_000 + i), mark: 3, timeout: 120, status: 0, zone: 0)
}

@Test func afterBatch_completesRunsOfSucceededActionsWithOneOutcomeRowEach_andEveryActionReadsItsOwnOutcome() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let plugin = try configured(["database": .string("\(dir)/audit.db")])
    let events = (0..<10).map { kill(victim($0)) }
    let tokens = try plugin.before(batch: events).map(\.token)
    // 0-3 killed, 4 gone, 5-8 killed, 9 failed: runs 0-3 and 5-8, and a row each for 4 and 9.
    let outcomes: [ActionOutcome] = (0..<10).map {
        $0 == 4 ? .failed(reason: "no such connection") : $0 == 9 ? .failed(reason: "EPERM") : .succeeded
    }
    try plugin.after(batch: zip(events, zip(tokens, outcomes)).map { ($0.0, $0.1.0, $0.1.1) })
    // A single kill after it is not folded into the run (a separate action, its own row).
    let single = try plugin.before(kill(victim(10)))
    try plugin.after(kill(victim(10)), token: single.token, outcome: .succeeded)
    plugin.shutdown()

    let store = try AuditStore(readingFrom: "\(dir)/audit.db")
    defer { store.close() }
    #expect(try store.verify().isIntact)
    let rows = try sqliteRows(
        "\(dir)/audit.db",
        "SELECT ref_seq, coalesce(ref_last, ''), outcome, coalesce(conn_id, '') FROM audit WHERE action = 'outcome' ORDER BY seq"
    )
    let t = tokens.map(String.init)
    #expect(
        rows == [
            [t[0], t[3], "succeeded", ""], [t[4], "", "failed", String(victim(4).id)], [t[5], t[8], "succeeded", ""],
            [t[9], "", "failed", String(victim(9).id)], [String(single.token), "", "succeeded", String(victim(10).id)],
        ])
    // Every action has its outcome, read through the run that completes it.
    let records = try store.query(action: .kill)
    #expect(records.map(\.connID) == (0...10).map { victim($0).id })
    #expect(records.map(\.outcome) == outcomes.map { if case .succeeded = $0 { .succeeded } else { .failed } } + [.succeeded])
    #expect(records[4].reason == "no such connection" && records[9].reason == "EPERM")
    #expect(try store.unfinishedActions().isEmpty)
}

@Test func verify_ofARunThatReachesPastItsOwnRow_isAMalformedRow() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = "\(dir)/audit.db"
    let store = try AuditStore(path: path)
    let action = AuditEntry(action: .kill, procedure: "kill", user: "alice", roles: ["operator"], client: "127.0.0.1")
    let seqs = try store.append(batch: [action, action])
    // A run row claiming to complete rows up to its own seq (3) and beyond is refused by verify, hash or not.
    try store.append(AuditEntry.outcome(ofRun: action, first: seqs[0], last: seqs[1] + 1, outcome: .succeeded, reason: nil))
    store.close()
    let report = try AuditStore(readingFrom: path).verify()
    #expect(!report.isIntact)
    #expect(report.firstBadSeq == 3)
}

private func sqliteRows(_ path: String, _ sql: String) throws -> [[String]] {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
    p.arguments = ["-separator", "|", path, sql]
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self).split(separator: "\n").map {
        $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
    }
}
