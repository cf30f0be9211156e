import CtdPluginAPI
import Foundation
import Testing

// audit_list as the host serves it: through the AuditTrailReader capability of the loaded plugin.

/// A configured plugin on a database of its own, removed at the end of the test.
private final class TrailUnderTest {
    let dir: String
    let plugin: any AuditTrailReader
    var path: String { dir + "/audit.db" }

    init() throws {
        dir = try temporaryDirectory()
        plugin = try configured(["database": .string(dir + "/audit.db")])
    }

    deinit {
        plugin.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func record(_ kind: ActionKind, by user: String) throws {
        let event = ActionEvent(
            kind: kind, procedure: kind.rawValue, user: user, roles: [.operator], clientAddress: "127.0.0.1")
        let (_, token) = try plugin.before(event)
        try plugin.after(event, token: token, outcome: .succeeded)
    }
}

private func text(_ record: [(name: String, value: AuditTrailValue)], _ name: String) -> String? {
    guard case .text(let value) = record.first(where: { $0.name == name })?.value else { return nil }
    return value
}

@Test func readTrail_describesTheQuery_quotingTheUserSoThatItCannotForgeOtherFilters() throws {
    let trail = try TrailUnderTest()
    let answer = try trail.plugin.readTrail(
        AuditTrailQuery(since: "0", user: #"x" limit=1 \"#, action: "kill", limit: 50))
    #expect(answer.description == #"since=1970-01-01T00:00:00.000000Z user="x\" limit=1 \\" action=kill limit=50"#)
    #expect(answer.records.isEmpty)
    #expect(try trail.plugin.readTrail(AuditTrailQuery(limit: 10)).description == "limit=10")
}

@Test func readTrail_returnsTheMatchingRecordsOldestFirst() throws {
    let trail = try TrailUnderTest()
    try trail.record(.login, by: "alice")
    try trail.record(.kill, by: "alice")
    try trail.record(.kill, by: "bob")
    try trail.record(.change, by: "alice")

    let alice = try trail.plugin.readTrail(AuditTrailQuery(user: "alice", limit: 50))
    #expect(alice.records.map { text($0, "action") } == ["login", "kill", "change"])
    #expect(alice.records.allSatisfy { text($0, "user") == "alice" })
    #expect(alice.description == #"user="alice" limit=50"#)

    let kills = try trail.plugin.readTrail(AuditTrailQuery(action: "kill", limit: 50))
    #expect(kills.records.map { text($0, "user") } == ["alice", "bob"])

    let newest = try trail.plugin.readTrail(AuditTrailQuery(limit: 2))
    #expect(newest.records.map { text($0, "action") } == ["kill", "change"])
    #expect(trail.plugin.trailLocation == trail.path)
}

@Test func readTrail_withAQueryTheClientGotWrong_throwsAQueryError() throws {
    let trail = try TrailUnderTest()
    let action = #expect(throws: AuditTrailQueryError.self) {
        try trail.plugin.readTrail(AuditTrailQuery(action: "reboot", limit: 50))
    }
    #expect(action?.message.contains("reboot") == true)
    let since = #expect(throws: AuditTrailQueryError.self) {
        try trail.plugin.readTrail(AuditTrailQuery(since: "yesterday", limit: 50))
    }
    #expect(since?.message.contains("since") == true)
}

@Test func verifyTrail_throughTheLoadedPlugin_isIntactAndCountsEveryRecord() throws {
    let trail = try TrailUnderTest()
    let verifier = try #require(trail.plugin as? any AuditTrailVerifier, "AuditSQLite is an AuditTrailVerifier")
    try trail.record(.login, by: "alice")
    try trail.record(.kill, by: "alice")
    let report = try verifier.verifyTrail()
    // Each action is two records: the action and its outcome.
    #expect(report.intact && report.records == 4 && report.headSeq == 4 && report.firstBadSeq == nil)
    #expect(report.summary.hasPrefix("ok: 4 rows, chain intact"), "\(report.summary)")
}
