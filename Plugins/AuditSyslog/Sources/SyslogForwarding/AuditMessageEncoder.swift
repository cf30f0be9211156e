import CtdPluginAPI
import Foundation

/// The messages of one batch of events, written straight to bytes: the hook's hot path.
///
/// The bytes are exactly those of ``AuditEventFormatter``'s ``SyslogMessage``s, which stay the reference (a unit test
/// compares both on random events, escapes and control characters included). Building each message as a
/// ``SyslogMessage`` (some 25 pairs of Strings, every number a String, the sentence interpolated) cost about 13 µs, so a
/// 10,000-id kill spent some 260 ms of CPU inside the call formatting its 20,000 messages (docs/audit.md). Here:
/// - one time per batch, so the header up to PROCID is built once per severity;
/// - numbers are written as digits; values and text go through ``SyslogMessage``'s own escaping, which copies a
///   value as it is when a scan finds nothing to escape;
/// - the roles text is built again only when an event's roles differ from the previous event's.
public struct AuditMessageEncoder {
    private let formatter: AuditEventFormatter
    private let time: Double
    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID ` by severity.
    private var headers: [Int: [UInt8]] = [:]
    private var roles: [Role]?
    private var rolesText: [UInt8] = []

    public init(formatter: AuditEventFormatter, time: Double) {
        self.formatter = formatter
        self.time = time
    }

    /// The bytes of ``AuditEventFormatter/action(_:event:time:position:)`` at this batch's time.
    public mutating func action(_ e: ActionEvent, event seq: UInt64, position: TrailPosition? = nil) -> [UInt8] {
        let denied = e.kind == .denied
        var out = start(severity: denied ? .warning : .notice, msgID: e.kind.rawValue)
        Self.param("event", unsigned: seq, to: &out)
        Self.param("action", e.kind.rawValue, to: &out)
        if let position {
            Self.param("audit_seq", signed: position.seq, to: &out)
            Self.param("audit_hash", position.hash, to: &out)
        }
        common(e, to: &out)
        Self.param("outcome", denied ? "failed" : "pending", to: &out)
        if denied { Self.param("reason", "permission denied", to: &out) }
        Self.details(e, to: &out)
        out.append(contentsOf: "] ".utf8)
        Self.sentence(e, to: &out)
        out.append(contentsOf: (denied ? "refused: permission denied" : "about to happen").utf8)
        return out
    }

    /// The bytes of ``AuditEventFormatter/outcome(_:outcome:event:ref:time:position:actionPosition:)`` at this
    /// batch's time.
    public mutating func outcome(
        _ e: ActionEvent, outcome: ActionOutcome, event seq: UInt64, ref: Int64, position: TrailPosition? = nil,
        actionPosition: TrailPosition? = nil
    ) -> [UInt8] {
        let reason: String?
        switch outcome {
        case .succeeded: reason = nil
        case .failed(let why): reason = why
        @unknown default: reason = "outcome unknown to AuditSyslog"
        }
        var out = start(severity: reason == nil ? .notice : .warning, msgID: "outcome")
        Self.param("event", unsigned: seq, to: &out)
        Self.param("ref", signed: ref, to: &out)
        Self.param("action", e.kind.rawValue, to: &out)
        if let position {
            Self.param("audit_seq", signed: position.seq, to: &out)
            Self.param("audit_hash", position.hash, to: &out)
        }
        if let actionPosition { Self.param("audit_ref_seq", signed: actionPosition.seq, to: &out) }
        common(e, to: &out)
        Self.param("outcome", reason == nil ? "succeeded" : "failed", to: &out)
        if let reason { Self.param("reason", reason, to: &out) }
        Self.details(e, to: &out)
        out.append(contentsOf: "] ".utf8)
        Self.sentence(e, to: &out)
        if let reason {
            out.append(contentsOf: "failed: ".utf8)
            SyslogMessage.appendText(reason, to: &out)
        } else {
            out.append(contentsOf: "succeeded".utf8)
        }
        return out
    }

    // MARK: Parts

    /// The header, the MSGID and the opening of the structured-data element.
    private mutating func start(severity: SyslogMessage.Severity, msgID: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(768)
        if let header = headers[severity.rawValue] {
            out.append(contentsOf: header)
        } else {
            let from = out.count
            out.append(UInt8(ascii: "<"))
            SyslogMessage.appendDecimal(formatter.facility * 8 + severity.rawValue, to: &out)
            out.append(contentsOf: ">1 ".utf8)
            SyslogMessage.appendTimestamp(time, to: &out)
            out.append(UInt8(ascii: " "))
            SyslogMessage.appendHeaderField(formatter.hostname, max: 255, to: &out)
            out.append(UInt8(ascii: " "))
            SyslogMessage.appendHeaderField(formatter.appName, max: 48, to: &out)
            out.append(UInt8(ascii: " "))
            SyslogMessage.appendHeaderField(formatter.procID, max: 128, to: &out)
            out.append(UInt8(ascii: " "))
            headers[severity.rawValue] = Array(out[from...])
        }
        SyslogMessage.appendHeaderField(msgID, max: 32, to: &out)
        out.append(contentsOf: " [".utf8)
        out.append(contentsOf: formatter.sdID.utf8)
        return out
    }

    private mutating func common(_ e: ActionEvent, to out: inout [UInt8]) {
        Self.param("procedure", e.procedure, to: &out)
        Self.param("user", e.user, to: &out)
        if roles != e.roles {
            roles = e.roles
            rolesText = []
            SyslogMessage.appendEscaped(e.roles.map(\.rawValue).sorted().joined(separator: ","), to: &rolesText)
        }
        out.append(contentsOf: " roles=\"".utf8)
        out.append(contentsOf: rolesText)
        out.append(UInt8(ascii: "\""))
        Self.param("client", e.clientAddress, to: &out)
    }

    private static func details(_ e: ActionEvent, to out: inout [UInt8]) {
        if let c = e.connection {
            param("conn_id", unsigned: UInt64(c.id), to: &out)
            param("l3proto", c.l3proto, to: &out)
            param("l4proto", unsigned: UInt64(c.l4proto), to: &out)
            param("orig_src", c.origSource, to: &out)
            param("orig_dst", c.origDestination, to: &out)
            param("orig_sport", unsigned: UInt64(c.origSourcePort), to: &out)
            param("orig_dport", unsigned: UInt64(c.origDestinationPort), to: &out)
            param("repl_src", c.replySource, to: &out)
            param("repl_dst", c.replyDestination, to: &out)
            param("repl_sport", unsigned: UInt64(c.replySourcePort), to: &out)
            param("repl_dport", unsigned: UInt64(c.replyDestinationPort), to: &out)
            param("mark", unsigned: UInt64(c.mark), to: &out)
            param("timeout", unsigned: UInt64(c.timeout), to: &out)
            param("zone", unsigned: UInt64(c.zone), to: &out)
        }
        if let field = e.field {
            param("field", field, to: &out)
            if let c = e.connection {
                switch field {
                case "mark": param("old_value", unsigned: UInt64(c.mark), to: &out)
                case "timeout": param("old_value", unsigned: UInt64(c.timeout), to: &out)
                default: break
                }
            }
        }
        if let v = e.newValue { param("new_value", v, to: &out) }
    }

    /// The free text up to its outcome: `kill by admin from 127.0.0.1 of conntrack id 7 (ipv4 proto 6 a:1 > b:2): `.
    private static func sentence(_ e: ActionEvent, to out: inout [UInt8]) {
        out.append(contentsOf: e.kind.rawValue.utf8)
        out.append(contentsOf: " by ".utf8)
        if e.user.isEmpty { out.append(UInt8(ascii: "-")) } else { SyslogMessage.appendText(e.user, to: &out) }
        out.append(contentsOf: " from ".utf8)
        SyslogMessage.appendText(e.clientAddress, to: &out)
        if let c = e.connection {
            out.append(contentsOf: " of conntrack id ".utf8)
            decimal(UInt64(c.id), to: &out)
            out.append(contentsOf: " (".utf8)
            SyslogMessage.appendText(c.l3proto, to: &out)
            out.append(contentsOf: " proto ".utf8)
            decimal(UInt64(c.l4proto), to: &out)
            out.append(UInt8(ascii: " "))
            SyslogMessage.appendText(c.origSource, to: &out)
            out.append(UInt8(ascii: ":"))
            decimal(UInt64(c.origSourcePort), to: &out)
            out.append(contentsOf: " > ".utf8)
            SyslogMessage.appendText(c.origDestination, to: &out)
            out.append(UInt8(ascii: ":"))
            decimal(UInt64(c.origDestinationPort), to: &out)
            out.append(UInt8(ascii: ")"))
        }
        if let f = e.field, let v = e.newValue {
            out.append(contentsOf: ", ".utf8)
            SyslogMessage.appendText(f, to: &out)
            out.append(contentsOf: " = ".utf8)
            SyslogMessage.appendText(v, to: &out)
        }
        out.append(contentsOf: ": ".utf8)
    }

    // MARK: Bytes

    @inline(__always)
    private static func param(_ name: StaticString, _ value: String, to out: inout [UInt8]) {
        open(name, to: &out)
        SyslogMessage.appendEscaped(value, to: &out)
        out.append(UInt8(ascii: "\""))
    }

    @inline(__always)
    private static func param(_ name: StaticString, unsigned value: UInt64, to out: inout [UInt8]) {
        open(name, to: &out)
        decimal(value, to: &out)
        out.append(UInt8(ascii: "\""))
    }

    @inline(__always)
    private static func param(_ name: StaticString, signed value: Int64, to out: inout [UInt8]) {
        open(name, to: &out)
        if value < 0 { out.append(UInt8(ascii: "-")) }
        decimal(value.magnitude, to: &out)
        out.append(UInt8(ascii: "\""))
    }

    @inline(__always)
    private static func open(_ name: StaticString, to out: inout [UInt8]) {
        out.append(UInt8(ascii: " "))
        name.withUTF8Buffer { out.append(contentsOf: $0) }
        out.append(UInt8(ascii: "="))
        out.append(UInt8(ascii: "\""))
    }

    private static func decimal(_ value: UInt64, to out: inout [UInt8]) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for the 20 digits of UInt64.max
        let n = withUnsafeMutableBytes(of: &digits) { d -> Int in
            var v = value
            var i = d.count
            repeat {
                i -= 1
                d[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10)
                v /= 10
            } while v != 0
            return i
        }
        withUnsafeBytes(of: &digits) { out.append(contentsOf: $0[n...]) }
    }
}
