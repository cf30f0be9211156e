import CtdPluginAPI
import Foundation
import SyslogForwarding
import Testing

// The RFC 5424 formatter: header, structured data and its escaping, framing (RFC 5425 octet counting).

private func text(_ m: SyslogMessage) -> String { String(decoding: m.encoded(), as: UTF8.self) }

private func sample(_ parameters: [(name: String, value: String)], text: String = "hello") -> SyslogMessage {
    SyslogMessage(
        facility: 10, severity: .notice, time: 1_764_637_500.25, hostname: "gw1", appName: "ctd", procID: "4242",
        msgID: "kill", sdID: "ctd@32473", parameters: parameters, text: text)
}

@Test func encoded_hasTheRFC5424HeaderFieldsInOrder() {
    let m = sample([("user", "alice")])
    // authpriv (10) * 8 + notice (5) = 85.
    #expect(text(m) == "<85>1 2025-12-02T01:05:00.250000Z gw1 ctd 4242 kill [ctd@32473 user=\"alice\"] hello")
}

@Test func paramValue_escapesQuoteBackslashAndClosingBracket() {
    let m = sample([("user", #"a"b\c]d"#)])
    #expect(text(m).contains(#"user="a\"b\\c\]d""#))
    #expect(SyslogMessage.escapeParamValue("[x]") == #"[x\]"#)
}

@Test func paramValue_replacesControlCharactersAndKeepsUTF8() {
    let m = sample([("user", "evil\nuser\u{7F}\u{0}é")], text: "line1\nline2")
    let s = text(m)
    #expect(!s.contains("\n") && !s.utf8.contains(0))
    #expect(s.contains("user=\"evil\u{FFFD}user\u{FFFD}\u{FFFD}é\""))
    #expect(s.hasSuffix("line1\u{FFFD}line2"))
}

@Test func headerFields_areCutToPrintableASCIIOrNil() {
    var m = sample([])
    m.hostname = "host name"
    m.appName = String(repeating: "a", count: 60)
    m.procID = ""
    m.msgID = "é"
    let fields = text(m).split(separator: " ", omittingEmptySubsequences: false)
    #expect(fields[2] == "host?name")
    #expect(fields[3].count == 48)
    #expect(fields[4] == "-")
    #expect(fields[5] == "??")
}

@Test func framed_prefixesTheByteCount() {
    let m = sample([("user", "é")])
    let body = m.encoded()
    let framed = m.framed()
    #expect(framed == Array("\(body.count) ".utf8) + body)
}

@Test func timestamp_roundsMicrosecondsWithoutPassingASecond() {
    #expect(SyslogMessage.timestamp(0) == "1970-01-01T00:00:00.000000Z")
    #expect(SyslogMessage.timestamp(59.9999996) == "1970-01-01T00:01:00.000000Z")
}

@Test func sdID_mustBeNameAtEnterpriseNumber() {
    #expect(SyslogMessage.isValidEnterpriseSDID("ctd@32473"))
    #expect(SyslogMessage.isValidEnterpriseSDID("ctd@32473.1.2"))
    #expect(!SyslogMessage.isValidEnterpriseSDID("ctd"))
    #expect(!SyslogMessage.isValidEnterpriseSDID("ctd@x"))
    #expect(!SyslogMessage.isValidEnterpriseSDID("c d@1"))
    #expect(!SyslogMessage.isValidEnterpriseSDID("c]d@1"))
    #expect(!SyslogMessage.isValidEnterpriseSDID(String(repeating: "a", count: 30) + "@123"))
}

private let connection = ConnectionInfo(
    id: 4_000_000_001, l3proto: "ipv4", l4proto: 17, origSource: "10.0.0.1", origDestination: "10.0.0.2",
    origSourcePort: 4001, origDestinationPort: 53, replySource: "10.0.0.2", replyDestination: "10.0.0.1",
    replySourcePort: 53, replyDestinationPort: 4001, mark: 7, timeout: 99, status: 8, zone: 3)

private let formatter = AuditEventFormatter(
    facility: 10, hostname: "gw1", appName: "ctd", procID: "1", sdID: "ctd@32473")

@Test func actionMessage_ofAChange_carriesTuplesOldAndNewValue() {
    let e = ActionEvent(
        kind: .change, procedure: "change", user: "alice", roles: [.operator, .admin], clientAddress: "127.0.0.1",
        connection: connection, field: "mark", newValue: "9")
    let s = text(formatter.action(e, event: 17, time: 0))
    #expect(s.hasPrefix("<85>1 1970-01-01T00:00:00.000000Z gw1 ctd 1 change [ctd@32473 event=\"17\" action=\"change\""))
    for pair in [
        "user=\"alice\"", "roles=\"admin,operator\"", "client=\"127.0.0.1\"", "outcome=\"pending\"",
        "conn_id=\"4000000001\"", "l3proto=\"ipv4\"", "l4proto=\"17\"", "orig_src=\"10.0.0.1\"",
        "orig_dst=\"10.0.0.2\"", "orig_sport=\"4001\"", "orig_dport=\"53\"", "repl_src=\"10.0.0.2\"",
        "repl_dport=\"4001\"", "mark=\"7\"", "timeout=\"99\"", "zone=\"3\"", "field=\"mark\"", "old_value=\"7\"",
        "new_value=\"9\"",
    ] {
        #expect(s.contains(" " + pair), "\(pair) missing in \(s)")
    }
}

@Test func outcomeMessage_refersToItsAction_andAFailureIsAWarning() {
    let e = ActionEvent(kind: .login, procedure: "login", user: "mallory", roles: [], clientAddress: "::1")
    let s = text(formatter.outcome(e, outcome: .failed(reason: "wrong \"password\""), event: 9, ref: 8, time: 0))
    // authpriv * 8 + warning (4) = 84.
    #expect(s.hasPrefix("<84>1 "))
    #expect(
        s.contains(
            " outcome [ctd@32473 event=\"9\" ref=\"8\" action=\"login\" procedure=\"login\" user=\"mallory\" roles=\"\" client=\"::1\" outcome=\"failed\" reason=\"wrong \\\"password\\\"\"]"
        ))
    #expect(!s.contains("conn_id"))
}

@Test func deniedMessage_isCompleteInOne() {
    let e = ActionEvent(kind: .denied, procedure: "kill", user: "bob", roles: [.viewer], clientAddress: "127.0.0.1")
    let s = text(formatter.action(e, event: 1, time: 0))
    #expect(s.contains("outcome=\"failed\" reason=\"permission denied\""))
    #expect(s.hasPrefix("<84>1 "))
}

@Test func messages_withTrailPositions_carryTheChainsSeqAndHash() {
    let e = ActionEvent(kind: .login, procedure: "login", user: "alice", roles: [.admin], clientAddress: "::1")
    let pending = text(formatter.action(e, event: 3, time: 0, position: TrailPosition(seq: 41, hash: "ab")))
    #expect(pending.contains("[ctd@32473 event=\"3\" action=\"login\" audit_seq=\"41\" audit_hash=\"ab\" procedure="))
    let done = text(
        formatter.outcome(
            e, outcome: .succeeded, event: 4, ref: 3, time: 0, position: TrailPosition(seq: 42, hash: "cd"),
            actionPosition: TrailPosition(seq: 41, hash: "ab")))
    #expect(done.contains("ref=\"3\" action=\"login\" audit_seq=\"42\" audit_hash=\"cd\" audit_ref_seq=\"41\" "))
    #expect(!text(formatter.action(e, event: 5, time: 0)).contains("audit_seq"))
}

@Test func interruptedMessage_saysWhatTheKernelShowedAndNamesTheTrailRows() {
    let c = ConnectionInfo(
        id: 9, l3proto: "ipv4", l4proto: 17, origSource: "10.0.0.1", origDestination: "10.0.0.2", origSourcePort: 1,
        origDestinationPort: 53, replySource: "10.0.0.2", replyDestination: "10.0.0.1", replySourcePort: 53,
        replyDestinationPort: 1, mark: 0, timeout: 10, status: 0, zone: 0)
    let e = ActionEvent(kind: .kill, procedure: "kill", user: "alice", roles: [.operator], clientAddress: "::1", connection: c)
    let a = InterruptedAction(
        event: e, token: 7, recordedBy: "AuditSQLite", connectionPresent: false, current: nil, reason: "gone",
        outcomeRecord: TrailPosition(seq: 8, hash: "ef"), actionRecord: TrailPosition(seq: 7, hash: "01"))
    let s = text(formatter.interrupted(a, event: 12, time: 0))
    #expect(s.hasPrefix("<84>1 "))
    #expect(s.contains(" outcome [ctd@32473 event=\"12\" action=\"kill\" procedure=\"kill\" user=\"alice\" "))
    #expect(s.contains("outcome=\"interrupted\" reason=\"gone\" kernel=\"gone\" recorded_by=\"AuditSQLite\" "
        + "audit_ref_seq=\"7\" audit_seq=\"8\" audit_hash=\"ef\" conn_id=\"9\""))
    #expect(!s.contains(" ref="))
}
