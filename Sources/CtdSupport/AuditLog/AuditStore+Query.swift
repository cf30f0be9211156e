/// Which audited actions to return. Every condition is optional; all given ones must hold.
public struct AuditFilter: Sendable, Equatable {
    /// Only actions recorded at or after this time (epoch seconds).
    public var since: Double?
    /// Only actions recorded strictly before this time (epoch seconds).
    public var until: Double?
    /// Only this user's actions (exact match).
    public var user: String?
    /// Only this kind of action.
    public var action: AuditAction?

    /// Creates a filter.
    public init(since: Double? = nil, until: Double? = nil, user: String? = nil, action: AuditAction? = nil) {
        self.since = since
        self.until = until
        self.user = user
        self.action = action
    }

    /// A filter from the texts a person typed (CLI options, RPC strings).
    /// - Parameters:
    ///   - since: epoch seconds or ISO 8601 (see ``AuditTime/parse(_:)``).
    ///   - until: the same.
    ///   - user: a user name.
    ///   - action: `login`, `kill`, `change` or `denied`.
    /// - Throws: ``AuditError`` naming the value that cannot be understood.
    public static func parse(since: String?, until: String?, user: String?, action: String?) throws -> AuditFilter {
        var f = AuditFilter(user: user)
        if let since { f.since = try time("since", since) }
        if let until { f.until = try time("until", until) }
        if let action {
            let a = AuditAction(rawValue: action.lowercased())
            guard AuditAction.filterable.contains(a) else {
                let names = AuditAction.filterable.map(\.rawValue).joined(separator: ", ")
                throw AuditError.invalidArgument("action must be one of \(names), not '\(action.prefix(40))'")
            }
            f.action = a
        }
        return f
    }

    /// Times the trail can hold: from the epoch to the end of year 9999 (anything else is a typo, and a larger
    /// number would not convert to an integer time).
    public static let timeRange = 0.0..<253_402_300_800.0

    private static func time(_ name: String, _ text: String) throws -> Double {
        guard let t = AuditTime.parse(text) else { throw AuditError.invalidArgument(timeHelp(name, text)) }
        guard timeRange.contains(t) else {
            throw AuditError.invalidArgument(
                "\(name) must be between 1970-01-01 and 9999-12-31 (epoch 0 to 253402300799), not '\(text.prefix(40))'")
        }
        return t
    }

    private static func timeHelp(_ name: String, _ value: String) -> String {
        "\(name) must be epoch seconds or an ISO 8601 time such as 2025-01-31T12:00:00Z, not '\(value.prefix(40))'"
    }
}

extension AuditStore {
    /// The audited actions matching `filter`, each with its outcome; the most recent `limit` of them, oldest first.
    /// - Parameters:
    ///   - since: only actions at or after this time (epoch seconds).
    ///   - until: only actions before this time.
    ///   - user: only this user's.
    ///   - action: only this kind.
    ///   - limit: at most this many (the most recent ones); `nil` for all.
    /// - Throws: ``AuditError`` when the database cannot be read.
    public func query(
        since: Double? = nil, until: Double? = nil, user: String? = nil, action: AuditAction? = nil, limit: Int? = nil
    ) throws -> [AuditRecord] {
        try query(AuditFilter(since: since, until: until, user: user, action: action), limit: limit)
    }

    /// The same with a ``AuditFilter``.
    public func query(_ filter: AuditFilter, limit: Int? = nil) throws -> [AuditRecord] {
        var out: [AuditRecord] = []
        try forEach(filter, limit: limit) { out.append($0) }
        return out
    }

    /// Streams the matching records (oldest first) to `body`, reading inside one transaction (a consistent
    /// snapshot). With a limit, the most recent `limit` records are returned.
    func forEach(_ filter: AuditFilter, limit: Int?, _ body: (AuditRecord) throws -> Void) throws {
        if let limit, limit < 0 { throw AuditError.invalidArgument("limit must not be negative") }
        var conditions = ["a.action <> 'outcome'"]
        var values: [SQLValue] = []
        if let since = filter.since {
            conditions.append("a.time >= ?")
            values.append(.real(since))
        }
        if let until = filter.until {
            conditions.append("a.time < ?")
            values.append(.real(until))
        }
        if let user = filter.user {
            conditions.append("a.user = ?")
            values.append(.text(user))
        }
        if let action = filter.action {
            conditions.append("a.action = ?")
            values.append(.text(action.rawValue))
        }
        let columns = Self.recordColumns.map { "a.\($0)" }.joined(separator: ", ")
        try withConnection { db in
            try db.execute("BEGIN", doing: "start a read")
            defer { try? db.execute("COMMIT", doing: "end a read") }
            let inner = """
                SELECT \(columns), o.seq, o.time, o.outcome, o.reason FROM audit a
                LEFT JOIN audit o ON o.seq = \(Self.completingOutcome(of: "a.seq", version: try Self.schemaVersion(db)))
                WHERE \(conditions.joined(separator: " AND "))
                """
            let sql: String
            if let limit {
                sql = "SELECT * FROM (\(inner) ORDER BY a.seq DESC LIMIT \(limit)) ORDER BY 1"
            } else {
                sql = inner + " ORDER BY a.seq"
            }
            let s = try db.prepare(sql, doing: "read the audit trail")
            defer { s.reset() }
            try s.bind(values, doing: "read the audit trail")
            while try s.step(doing: "read the audit trail") {
                try body(Self.record(s))
            }
        }
    }

    /// An SQL expression: the `seq` of the outcome row that completes the action row whose `seq` is `actionSeq`
    /// (an SQL expression too), or NULL while it has none. Since schema version 4 that row is either its own
    /// (`ref_seq` = its seq) or a run's (`ref_seq` <= its seq <= `ref_last`). Runs and single outcomes never
    /// overlap, so the completing row is the outcome with the greatest `ref_seq` not above the action's seq, if it
    /// reaches it: one seek in `audit_ref_seq`.
    static func completingOutcome(of actionSeq: String, version: Int64) -> String {
        guard version >= 4 else {
            return "(SELECT min(seq) FROM audit WHERE ref_seq = \(actionSeq) AND action = 'outcome')"
        }
        return """
            (SELECT c.seq FROM audit c WHERE c.seq = (
                SELECT seq FROM audit INDEXED BY audit_ref_seq
                WHERE ref_seq IS NOT NULL AND ref_seq <= \(actionSeq) AND action = 'outcome'
                ORDER BY ref_seq DESC LIMIT 1)
             AND (c.ref_seq = \(actionSeq) OR c.ref_last >= \(actionSeq)))
            """
    }

    static let recordColumns = [
        "seq", "time", "time_iso", "action", "procedure", "user", "roles", "client", "conn_id", "l3proto", "l4proto",
        "orig_src", "orig_dst", "orig_sport", "orig_dport", "repl_src", "repl_dst", "repl_sport", "repl_dport",
        "mark", "timeout", "zone", "field", "new_value", "outcome", "reason", "hash",
    ]

    private static func record(_ s: SQLiteStatement) throws -> AuditRecord {
        func text(_ i: Int32) -> String? { s.column(i).text }
        func int(_ i: Int32) -> Int64? { s.column(i).integer }
        func u32(_ i: Int32) -> UInt32? { int(i).flatMap { UInt32(exactly: $0) } }
        let n = Int32(recordColumns.count)
        let ownOutcome = AuditOutcome(rawValue: text(24) ?? "") ?? .pending
        let outcomeSeq = int(n)
        return AuditRecord(
            seq: int(0) ?? 0, time: s.column(1).real ?? 0, timeISO: text(2) ?? "",
            action: AuditAction(rawValue: text(3) ?? ""), procedure: text(4) ?? "", user: text(5) ?? "",
            roles: (text(6) ?? "").split(separator: ",").map(String.init), client: text(7) ?? "",
            connID: u32(8), l3proto: text(9), l4proto: int(10),
            origSource: text(11), origDestination: text(12), origSourcePort: int(13), origDestinationPort: int(14),
            replySource: text(15), replyDestination: text(16), replySourcePort: int(17), replyDestinationPort: int(18),
            mark: u32(19), timeout: int(20), zone: int(21), field: text(22), newValue: text(23),
            outcome: outcomeSeq != nil ? AuditOutcome(rawValue: text(n + 2) ?? "") ?? .failed : ownOutcome,
            reason: outcomeSeq != nil ? text(n + 3) : text(25),
            outcomeSeq: outcomeSeq, outcomeTime: outcomeSeq != nil ? s.column(n + 1).real : nil,
            hash: text(26) ?? "")
    }
}
