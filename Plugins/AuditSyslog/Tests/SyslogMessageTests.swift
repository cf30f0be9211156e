import CtdPluginAPI
import Foundation
import SyslogForwarding
import TestSupport
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
    let e = ActionEvent(
        kind: .kill, procedure: "kill", user: "alice", roles: [.operator], clientAddress: "::1", connection: c)
    let a = InterruptedAction(
        event: e, token: 7, recordedBy: "AuditSQLite", connectionPresent: false, current: nil, reason: "gone",
        outcomeRecord: TrailPosition(seq: 8, hash: "ef"), actionRecord: TrailPosition(seq: 7, hash: "01"))
    let s = text(formatter.interrupted(a, event: 12, time: 0))
    #expect(s.hasPrefix("<84>1 "))
    #expect(s.contains(" outcome [ctd@32473 event=\"12\" action=\"kill\" procedure=\"kill\" user=\"alice\" "))
    #expect(
        s.contains(
            "outcome=\"interrupted\" reason=\"gone\" kernel=\"gone\" recorded_by=\"AuditSQLite\" "
                + "audit_ref_seq=\"7\" audit_seq=\"8\" audit_hash=\"ef\" conn_id=\"9\""))
    #expect(!s.contains(" ref="))
}

/// The hot path's encoder against the reference (SyslogMessage, built field by field): the same bytes for random
/// events of every kind, with and without connections and trail positions, with values that need escaping
/// (`"`, `\`, `]`), control characters, non-ASCII text, empty users, extreme numbers, and roles that change from one
/// event to the next (the encoder keeps the last roles' text).
@Test func messageEncoder_writesTheReferenceFormattersBytes_forRandomEvents() {
    var rng = SplitMix(state: 0x5eed)
    let pieces = [
        "", "a", "alice", "10.0.0.1", "::1", "x\"y", "back\\slash", "br]acket", "tab\there", "line\nfeed",
        "del\u{7F}", "é", "日本", "\u{1F600}", "mark", "timeout", "label", "-",
    ]
    func string() -> String { (0..<rng.next(below: 3)).map { _ in pieces[rng.next(below: pieces.count)] }.joined() }
    func number<T: FixedWidthInteger & UnsignedInteger>(_: T.Type) -> T {
        [T.min, T.max, 1, 9, 10, T(truncatingIfNeeded: rng.next())][rng.next(below: 6)]
    }
    let formatters = [
        formatter,
        AuditEventFormatter(facility: 23, hostname: "host with spaces é", appName: "", procID: "42", sdID: "x@1"),
    ]
    let kinds: [ActionKind] = [.login, .kill, .change, .denied, .auditRead]
    let roleSets: [[Role]] = [[], [.admin], [.operator, .admin], [.viewer]]
    for round in 0..<2000 {
        let f = formatters[round % formatters.count]
        let time = [0, 1_780_000_000.999_999_7, Double(rng.next(below: 2_000_000_000)) + 0.5][rng.next(below: 3)]
        var encoder = AuditMessageEncoder(formatter: f, time: time)
        for _ in 0..<4 {
            let connection =
                rng.next(below: 3) == 0
                ? nil
                : ConnectionInfo(
                    id: number(UInt32.self), l3proto: string(), l4proto: number(UInt8.self), origSource: string(),
                    origDestination: string(), origSourcePort: number(UInt16.self),
                    origDestinationPort: number(UInt16.self), replySource: string(), replyDestination: string(),
                    replySourcePort: number(UInt16.self), replyDestinationPort: number(UInt16.self),
                    mark: number(UInt32.self), timeout: number(UInt32.self), status: number(UInt32.self),
                    zone: number(UInt16.self))
            let e = ActionEvent(
                kind: kinds[rng.next(below: kinds.count)], procedure: string(), user: string(),
                roles: roleSets[rng.next(below: roleSets.count)], clientAddress: string(), connection: connection,
                field: rng.next(below: 2) == 0 ? nil : ["mark", "timeout", string()][rng.next(below: 3)],
                newValue: rng.next(below: 2) == 0 ? nil : string())
            let position =
                rng.next(below: 2) == 0 ? nil : TrailPosition(seq: Int64(rng.next(below: 1 << 40)), hash: string())
            let other =
                rng.next(below: 2) == 0 ? nil : TrailPosition(seq: Int64(rng.next(below: 1 << 40)), hash: string())
            let seq = number(UInt64.self)
            let ref = [Int64.min, -1, 0, Int64.max, Int64(rng.next(below: 1 << 30))][rng.next(below: 5)]
            let outcome: ActionOutcome = rng.next(below: 2) == 0 ? .succeeded : .failed(reason: string())
            #expect(
                encoder.action(e, event: seq, position: position)
                    == f.action(e, event: seq, time: time, position: position).encoded())
            #expect(
                encoder.outcome(e, outcome: outcome, event: seq, ref: ref, position: position, actionPosition: other)
                    == f.outcome(
                        e, outcome: outcome, event: seq, ref: ref, time: time, position: position,
                        actionPosition: other
                    ).encoded())
        }
    }
}
