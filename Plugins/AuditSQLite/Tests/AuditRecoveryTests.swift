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
