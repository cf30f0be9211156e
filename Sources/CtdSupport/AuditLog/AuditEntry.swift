/// The kind of a row: an action (login, kill, change, denied call, audit read) or the outcome of an earlier action.
///
/// A struct over a string rather than an enum, so that a kind added to the plugin API later is recorded as it is.
public struct AuditAction: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The stored text (`kill`, `login`...).
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    /// A `login` call, successful or not.
    public static let login = AuditAction(rawValue: "login")
    /// A `kill` of one connection.
    public static let kill = AuditAction(rawValue: "kill")
    /// A `change` of one connection's mark or timeout.
    public static let change = AuditAction(rawValue: "change")
    /// A call the session's role does not allow.
    public static let denied = AuditAction(rawValue: "denied")
    /// An `audit_list` call: an admin reading this trail over XML-RPC (`field` "filters", `new_value` what was asked).
    public static let auditRead = AuditAction(rawValue: "audit_read")
    /// `ctd audit prune`: rows older than `new_value` removed from the start of the trail (docs/audit.md).
    public static let prune = AuditAction(rawValue: "prune")
    /// The outcome of the action row named by `ref_seq`, or of every action row from `ref_seq` to `ref_last` (a
    /// bulk action whose rows all had this outcome: one row instead of one per connection).
    public static let outcome = AuditAction(rawValue: "outcome")

    /// The kinds a filter may name (`outcome` rows are shown with their action, never alone).
    public static let filterable: [AuditAction] = [.login, .kill, .change, .denied, .auditRead, .prune]

    /// The stored text.
    public var description: String { rawValue }
}

/// Where an action stands: written before it happens as `pending`, completed by an `outcome` row.
public enum AuditOutcome: String, Sendable, Equatable, CaseIterable {
    /// Recorded before the action; no outcome row (yet). After a crash the next start-up completes it with
    /// ``interrupted``.
    case pending
    /// The action happened.
    case succeeded
    /// The action did not happen; `reason` says why.
    case failed
    /// The daemon stopped (crash, `kill -9`) after the action row and before its outcome; recorded at the next
    /// start-up, `reason` saying what the kernel table showed then (the connection still there, or gone).
    case interrupted
}

/// The connection an action touched, as it was before the action.
public struct AuditConnection: Sendable, Equatable {
    /// The kernel's conntrack id (unsigned 32-bit).
    public var id: UInt32
    /// `ipv4` or `ipv6`.
    public var l3proto: String
    /// The layer-4 protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6...).
    public var l4proto: UInt8
    /// Original direction source address.
    public var origSource: String
    /// Original direction destination address.
    public var origDestination: String
    /// Original direction source port (0 when the protocol has none).
    public var origSourcePort: UInt16
    /// Original direction destination port.
    public var origDestinationPort: UInt16
    /// Reply direction source address.
    public var replySource: String
    /// Reply direction destination address.
    public var replyDestination: String
    /// Reply direction source port.
    public var replySourcePort: UInt16
    /// Reply direction destination port.
    public var replyDestinationPort: UInt16
    /// The connection mark.
    public var mark: UInt32
    /// Seconds left before the entry would have expired.
    public var timeout: UInt32
    /// The conntrack zone.
    public var zone: UInt16

    /// Creates a connection description.
    public init(
        id: UInt32, l3proto: String, l4proto: UInt8,
        origSource: String, origDestination: String, origSourcePort: UInt16, origDestinationPort: UInt16,
        replySource: String, replyDestination: String, replySourcePort: UInt16, replyDestinationPort: UInt16,
        mark: UInt32, timeout: UInt32, zone: UInt16
    ) {
        self.id = id
        self.l3proto = l3proto
        self.l4proto = l4proto
        self.origSource = origSource
        self.origDestination = origDestination
        self.origSourcePort = origSourcePort
        self.origDestinationPort = origDestinationPort
        self.replySource = replySource
        self.replyDestination = replyDestination
        self.replySourcePort = replySourcePort
        self.replyDestinationPort = replyDestinationPort
        self.mark = mark
        self.timeout = timeout
        self.zone = zone
    }
}

/// One row to append: an action (before it happens) or the outcome of one.
public struct AuditEntry: Sendable, Equatable {
    /// What happened.
    public var action: AuditAction
    /// For an ``AuditAction/outcome`` row: the `seq` of the action row it completes.
    public var refSeq: Int64?
    /// For an outcome row that completes a run of action rows: the `seq` of the run's last row (`refSeq` is its
    /// first); `nil` for an outcome of one action.
    public var refLast: Int64?
    /// The XML-RPC procedure (`kill`, `change`, `login`, or the denied one).
    public var procedure: String
    /// The user (for a failed login: the name that was tried).
    public var user: String
    /// The user's roles, stored sorted and comma-separated.
    public var roles: [String]
    /// The client's address.
    public var client: String
    /// The connection, for kill and change.
    public var connection: AuditConnection?
    /// The field being changed (`mark`, `timeout`).
    public var field: String?
    /// The requested value, textual.
    public var newValue: String?
    /// `pending` for an action about to happen; `succeeded` or `failed` for an outcome (or a denied call).
    public var outcome: AuditOutcome
    /// Why it failed.
    public var reason: String?

    /// Creates an entry; see the properties.
    public init(
        action: AuditAction, refSeq: Int64? = nil, procedure: String, user: String, roles: [String], client: String,
        connection: AuditConnection? = nil, field: String? = nil, newValue: String? = nil,
        outcome: AuditOutcome = .pending, reason: String? = nil
    ) {
        self.action = action
        self.refSeq = refSeq
        self.procedure = procedure
        self.user = user
        self.roles = roles
        self.client = client
        self.connection = connection
        self.field = field
        self.newValue = newValue
        self.outcome = outcome
        self.reason = reason
    }

    /// The outcome row of `action`, which was appended as row `seq`. It repeats who and which connection id, so
    /// that the row reads on its own in `sqlite3`.
    public static func outcome(of action: AuditEntry, seq: Int64, outcome: AuditOutcome, reason: String?) -> AuditEntry
    {
        Self.outcome(of: action, connectionID: action.connection?.id, seq: seq, outcome: outcome, reason: reason)
    }

    /// The same for an action whose connection (if any) has the id `connectionID`; `action.connection` is not read.
    public static func outcome(
        of action: AuditEntry, connectionID: UInt32?, seq: Int64, outcome: AuditOutcome, reason: String?
    ) -> AuditEntry {
        var row = AuditEntry(
            action: .outcome, refSeq: seq, procedure: action.procedure, user: action.user, roles: action.roles,
            client: action.client, outcome: outcome, reason: reason)
        // Only the id: the tuple is in the action row.
        row.connectionID = connectionID
        return row
    }

    /// One outcome row for the action rows `first` to `last` of a bulk action (one batch: contiguous rows of the
    /// same procedure, user and client), all of which had `outcome`. It names no connection; the action rows do.
    public static func outcome(
        ofRun action: AuditEntry, first: Int64, last: Int64, outcome: AuditOutcome, reason: String?
    ) -> AuditEntry {
        precondition(first < last, "a run of outcomes covers at least two action rows")
        var row = Self.outcome(of: action, connectionID: nil, seq: first, outcome: outcome, reason: reason)
        row.refLast = last
        return row
    }

    /// Outcome rows only: the id of the action's connection, stored in `conn_id` without the tuple.
    var connectionID: UInt32?
}
