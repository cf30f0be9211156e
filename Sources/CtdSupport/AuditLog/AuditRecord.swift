/// One audited action as people read it: the action row, completed by its outcome row when there is one.
public struct AuditRecord: Sendable, Equatable {
    /// The action row's `seq`.
    public var seq: Int64
    /// When the action was recorded (before it happened), epoch seconds.
    public var time: Double
    /// The same in UTC ISO 8601.
    public var timeISO: String
    /// login, kill, change, denied or audit_read.
    public var action: AuditAction
    /// The XML-RPC procedure.
    public var procedure: String
    /// Who.
    public var user: String
    /// The user's roles.
    public var roles: [String]
    /// From where.
    public var client: String
    /// The connection's id, for kill and change.
    public var connID: UInt32?
    /// `ipv4` or `ipv6`.
    public var l3proto: String?
    /// The layer-4 protocol number.
    public var l4proto: Int64?
    /// Original direction source address.
    public var origSource: String?
    /// Original direction destination address.
    public var origDestination: String?
    /// Original direction source port.
    public var origSourcePort: Int64?
    /// Original direction destination port.
    public var origDestinationPort: Int64?
    /// Reply direction source address.
    public var replySource: String?
    /// Reply direction destination address.
    public var replyDestination: String?
    /// Reply direction source port.
    public var replySourcePort: Int64?
    /// Reply direction destination port.
    public var replyDestinationPort: Int64?
    /// The connection's mark before the action.
    public var mark: UInt32?
    /// Seconds the connection had left before the action.
    public var timeout: Int64?
    /// The conntrack zone.
    public var zone: Int64?
    /// For change: the field and the requested value.
    public var field: String?
    /// For change: the requested value, textual.
    public var newValue: String?
    /// The outcome row's verdict, or the action row's own (`pending` when no outcome was recorded).
    public var outcome: AuditOutcome
    /// Why the action failed.
    public var reason: String?
    /// The outcome row's `seq` and time, when there is one.
    public var outcomeSeq: Int64?
    /// The outcome row's time, epoch seconds.
    public var outcomeTime: Double?
    /// The action row's chain hash.
    public var hash: String

    /// Column names of exports and of the RPC structs, in order.
    public static let fieldNames = [
        "seq", "time", "time_iso", "action", "procedure", "user", "roles", "client", "conn_id", "l3proto", "l4proto",
        "orig_src", "orig_dst", "orig_sport", "orig_dport", "repl_src", "repl_dst", "repl_sport", "repl_dport",
        "mark", "timeout", "zone", "field", "new_value", "outcome", "reason", "outcome_seq", "outcome_time", "hash",
    ]

    /// The record as named values in ``fieldNames`` order; `nil` where the record has no value.
    public var fields: [(name: String, value: AuditValue?)] {
        func i<T: BinaryInteger>(_ v: T?) -> AuditValue? { v.map { .integer(Int64($0)) } }
        func t(_ v: String?) -> AuditValue? { v.map { .text($0) } }
        let values: [AuditValue?] = [
            .integer(seq), .real(time), .text(timeISO), .text(action.rawValue), .text(procedure), .text(user),
            .text(roles.joined(separator: ",")), .text(client), i(connID), t(l3proto), i(l4proto),
            t(origSource), t(origDestination), i(origSourcePort), i(origDestinationPort),
            t(replySource), t(replyDestination), i(replySourcePort), i(replyDestinationPort),
            i(mark), i(timeout), i(zone), t(field), t(newValue), .text(outcome.rawValue), t(reason),
            i(outcomeSeq), outcomeTime.map { .real($0) }, .text(hash),
        ]
        return Array(zip(Self.fieldNames, values)).map { (name: $0.0, value: $0.1) }
    }
}

/// A value of an exported or RPC field.
public enum AuditValue: Sendable, Equatable, CustomStringConvertible {
    /// A whole number.
    case integer(Int64)
    /// A floating-point number (times).
    case real(Double)
    /// A string.
    case text(String)

    /// The value as text: integers in decimal, reals as Swift prints them (shortest exact form), text as is.
    public var description: String {
        switch self {
        case .integer(let n): return String(n)
        case .real(let d): return String(d)
        case .text(let s): return s
        }
    }
}
