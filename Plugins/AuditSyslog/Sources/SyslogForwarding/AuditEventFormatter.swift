import CtdPluginAPI
import Foundation

/// Turns the hook's events into RFC 5424 messages: one when an action is about to happen (`outcome="pending"`),
/// one with its outcome (MSGID `outcome`, `ref` = the first message's `event`). A denied call is one message.
///
/// Structured data, SD-ID `ctd@<enterprise number>` (parameters left out when they have no value):
/// `event` (this message's queue sequence number, unique and growing across restarts), `ref`, `action`,
/// `procedure`, `user`, `roles`, `client`, `outcome`, `reason`, `conn_id`, `l3proto`, `l4proto`, `orig_src`,
/// `orig_dst`, `orig_sport`, `orig_dport`, `repl_src`, `repl_dst`, `repl_sport`, `repl_dport`, `mark`, `timeout`,
/// `zone`, `field`, `old_value`, `new_value`; and, when AuditSQLite comes before AuditSyslog in the configuration
/// (``TrailPositionObserver``), `audit_seq` and `audit_hash` (the trail row of this action or outcome) and, on an
/// outcome, `audit_ref_seq` (the action's row). The host's events never carry a password; nothing here adds one.
public struct AuditEventFormatter: Sendable {
    public var facility: Int
    public var hostname: String
    public var appName: String
    public var procID: String
    public var sdID: String

    public init(facility: Int, hostname: String, appName: String, procID: String, sdID: String) {
        self.facility = facility
        self.hostname = hostname
        self.appName = appName
        self.procID = procID
        self.sdID = sdID
    }

    /// The message for an action before it happens.
    public func action(_ e: ActionEvent, event seq: UInt64, time: Double, position: TrailPosition? = nil)
        -> SyslogMessage
    {
        let denied = e.kind == .denied
        var p: [(name: String, value: String)] = [("event", String(seq)), ("action", e.kind.rawValue)]
        if let position { p += [("audit_seq", String(position.seq)), ("audit_hash", position.hash)] }
        p += common(e)
        p.append(("outcome", denied ? "failed" : "pending"))
        if denied { p.append(("reason", "permission denied")) }
        p += details(e)
        return message(
            severity: denied ? .warning : .notice, time: time, msgID: e.kind.rawValue, parameters: p,
            text: sentence(e, outcome: denied ? "refused: permission denied" : "about to happen"))
    }

    /// The message for an action's outcome.
    public func outcome(
        _ e: ActionEvent, outcome: ActionOutcome, event seq: UInt64, ref: Int64, time: Double,
        position: TrailPosition? = nil, actionPosition: TrailPosition? = nil
    ) -> SyslogMessage {
        let (verdict, reason): (String, String?)
        switch outcome {
        case .succeeded: (verdict, reason) = ("succeeded", nil)
        case .failed(let why): (verdict, reason) = ("failed", why)
        @unknown default: (verdict, reason) = ("failed", "outcome unknown to AuditSyslog")
        }
        var p: [(name: String, value: String)] = [
            ("event", String(seq)), ("ref", String(ref)), ("action", e.kind.rawValue),
        ]
        if let position { p += [("audit_seq", String(position.seq)), ("audit_hash", position.hash)] }
        if let actionPosition { p.append(("audit_ref_seq", String(actionPosition.seq))) }
        p += common(e)
        p.append(("outcome", verdict))
        if let reason { p.append(("reason", reason)) }
        p += details(e)
        return message(
            severity: verdict == "failed" ? .warning : .notice, time: time, msgID: "outcome", parameters: p,
            text: sentence(e, outcome: reason.map { "failed: \($0)" } ?? "succeeded"))
    }

    /// The message for an action a crash left without an outcome, recorded at the next start-up by the trail
    /// `a.recordedBy` (MSGID `outcome`, `outcome="interrupted"`). No `ref`: this plugin's message for the action was
    /// numbered by the process that died; `audit_ref_seq` (the action's row in the trail) and `audit_seq` /
    /// `audit_hash` (the interrupted outcome's row) tie it to the chain instead, and `kernel` says what the table
    /// showed (`present`, `gone`, or `none` for an action on no connection).
    public func interrupted(_ a: InterruptedAction, event seq: UInt64, time: Double) -> SyslogMessage {
        let e = a.event
        var p: [(name: String, value: String)] = [("event", String(seq)), ("action", e.kind.rawValue)]
        p += common(e)
        p.append(("outcome", "interrupted"))
        p.append(("reason", a.reason))
        p.append(("kernel", a.connectionPresent.map { $0 ? "present" : "gone" } ?? "none"))
        p.append(("recorded_by", a.recordedBy))
        if let r = a.actionRecord { p.append(("audit_ref_seq", String(r.seq))) }
        if let r = a.outcomeRecord {
            p.append(("audit_seq", String(r.seq)))
            p.append(("audit_hash", r.hash))
        }
        p += details(e)
        return message(
            severity: .warning, time: time, msgID: "outcome", parameters: p,
            text: sentence(e, outcome: "interrupted: \(a.reason)"))
    }

    private func common(_ e: ActionEvent) -> [(name: String, value: String)] {
        [
            ("procedure", e.procedure), ("user", e.user),
            ("roles", e.roles.map(\.rawValue).sorted().joined(separator: ",")),
            ("client", e.clientAddress),
        ]
    }

    private func details(_ e: ActionEvent) -> [(name: String, value: String)] {
        var p: [(name: String, value: String)] = []
        if let c = e.connection {
            p += [
                ("conn_id", String(c.id)), ("l3proto", c.l3proto), ("l4proto", String(c.l4proto)),
                ("orig_src", c.origSource), ("orig_dst", c.origDestination),
                ("orig_sport", String(c.origSourcePort)), ("orig_dport", String(c.origDestinationPort)),
                ("repl_src", c.replySource), ("repl_dst", c.replyDestination),
                ("repl_sport", String(c.replySourcePort)), ("repl_dport", String(c.replyDestinationPort)),
                ("mark", String(c.mark)), ("timeout", String(c.timeout)), ("zone", String(c.zone)),
            ]
        }
        if let field = e.field {
            p.append(("field", field))
            if let c = e.connection {
                switch field {
                case "mark": p.append(("old_value", String(c.mark)))
                case "timeout": p.append(("old_value", String(c.timeout)))
                default: break
                }
            }
        }
        if let v = e.newValue { p.append(("new_value", v)) }
        return p
    }

    private func sentence(_ e: ActionEvent, outcome: String) -> String {
        var s = "\(e.kind.rawValue) by \(e.user.isEmpty ? "-" : e.user) from \(e.clientAddress)"
        if let c = e.connection {
            s +=
                " of conntrack id \(c.id) (\(c.l3proto) proto \(c.l4proto) \(c.origSource):\(c.origSourcePort)"
                + " > \(c.origDestination):\(c.origDestinationPort))"
        }
        if let f = e.field, let v = e.newValue { s += ", \(f) = \(v)" }
        return s + ": " + outcome
    }

    private func message(
        severity: SyslogMessage.Severity, time: Double, msgID: String, parameters: [(name: String, value: String)],
        text: String
    ) -> SyslogMessage {
        SyslogMessage(
            facility: facility, severity: severity, time: time, hostname: hostname, appName: appName, procID: procID,
            msgID: msgID, sdID: sdID, parameters: parameters, text: text)
    }
}
