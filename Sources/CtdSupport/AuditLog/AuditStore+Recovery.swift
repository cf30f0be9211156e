/// An action row that has no outcome row: the daemon stopped between the two (docs/audit.md, "Crash recovery").
public struct AuditUnfinishedAction: Sendable, Equatable {
    /// The action row's `seq`.
    public var seq: Int64
    /// The action row's chain hash.
    public var hash: String
    /// The row as it was appended.
    public var entry: AuditEntry
}

extension AuditStore {
    /// The action rows still `pending` with no outcome row, oldest first, from the settled mark on (``settle()``):
    /// action rows are never updated, so every one of them stays `pending`, and without the mark this read every
    /// action row ever written (about 1.3 s for 1,000,000, docs/audit.md). The mark makes it the rows written since
    /// the last settle (a clean stop, the periodic checkpoint timer, a recovery), however long the trail.
    /// - Throws: ``AuditError`` when the database cannot be read.
    public func unfinishedActions() throws -> [AuditUnfinishedAction] {
        try withConnection { db in
            try db.execute("BEGIN", doing: "start a read")
            defer { try? db.execute("COMMIT", doing: "end a read") }
            let version = try Self.schemaVersion(db)
            return try Self.unfinishedActions(db, version: version, from: try Self.settledBelow(db, version: version))
        }
    }

    /// Every action row below this `seq` has its outcome row: the greatest mark a writer session recorded
    /// (``settle()``), 0 when none did (a trail from before schema version 5).
    public func settledBelow() throws -> Int64 {
        try withConnection { try Self.settledBelow($0, version: try Self.schemaVersion($0)) }
    }

    /// Moves the settled mark up to the oldest action that has no outcome yet (an action in flight, or one a crash
    /// left that recovery could not settle), or past the head when there is none, and records it in the newest
    /// writer session. Reads only the rows from the current mark on. Not inside an action: the host's threads call
    /// it at a clean stop, on AuditSQLite's checkpoint timer and after a recovery.
    /// - Returns: the new mark.
    /// - Throws: ``AuditError``; the mark stays where it was then.
    @discardableResult
    public func settle() throws -> Int64 {
        try withConnection { db in
            guard !self.isReadOnly else {
                throw AuditError(.writeRefused, "the audit database \(self.path) was opened read-only")
            }
            try db.execute("BEGIN IMMEDIATE", doing: "take the write lock")
            do {
                let version = try Self.schemaVersion(db)
                let from = try Self.settledBelow(db, version: version)
                // A pending prune row (a `ctd audit prune` that stopped before its transaction, or one running
                // now) is not the host's to settle and must not pin the mark: the next prune is unaffected by it.
                let oldest = try Self.unfinishedActions(
                    db, version: version, from: from, limit: 1, except: .prune
                ).first?.seq
                let pastHead = (try Self.head(db)?.seq ?? 0) + 1
                let mark = max(from, oldest ?? pastHead)
                if mark > from {
                    try db.execute(
                        "UPDATE writer_session SET settled_below = \(mark) WHERE id = (SELECT max(id) FROM writer_session)",
                        doing: "record the settled mark")
                }
                try db.execute("COMMIT", doing: "commit the settled mark")
                return mark
            } catch {
                if db.isInTransaction { try? db.execute("ROLLBACK", doing: "roll back") }
                throw error
            }
        }
    }

    /// The database's schema version (`PRAGMA user_version`), read once per query that depends on it.
    static func schemaVersion(_ db: SQLiteConnection) throws -> Int64 {
        try db.scalar("PRAGMA user_version", doing: "read the schema version").integer ?? 0
    }

    static func settledBelow(_ db: SQLiteConnection, version: Int64) throws -> Int64 {
        guard version >= 5 else { return 0 }
        return try db.scalar(
            "SELECT coalesce(max(settled_below), 0) FROM writer_session", doing: "read the settled mark"
        ).integer ?? 0
    }

    private static func unfinishedActions(
        _ db: SQLiteConnection, version: Int64, from mark: Int64, limit: Int? = nil, except: AuditAction? = nil
    ) throws -> [AuditUnfinishedAction] {
        // Version 3 and 4 have the partial index of pending rows; from 5 the rows after the mark are read by seq.
        let source = version >= 3 && version < 5 ? "audit a INDEXED BY audit_pending" : "audit a"
        let sql = """
            SELECT a.seq, a.hash, a.action, a.procedure, a.user, a.roles, a.client, a.conn_id, a.l3proto, a.l4proto,
                   a.orig_src, a.orig_dst, a.orig_sport, a.orig_dport, a.repl_src, a.repl_dst, a.repl_sport,
                   a.repl_dport, a.mark, a.timeout, a.zone, a.field, a.new_value
            FROM \(source)
            WHERE a.seq >= \(mark) AND a.outcome = 'pending' AND a.action <> 'outcome'\(except.map { " AND a.action <> '\($0.rawValue)'" } ?? "")
              AND \(completingOutcome(of: "a.seq", version: version)) IS NULL
            ORDER BY a.seq\(limit.map { " LIMIT \($0)" } ?? "")
            """
        let s = try db.prepare(sql, doing: "read the actions without an outcome")
        defer { s.reset() }
        var out: [AuditUnfinishedAction] = []
        while try s.step(doing: "read the actions without an outcome") {
            func text(_ i: Int32) -> String? { s.column(i).text }
            func int(_ i: Int32) -> Int64? { s.column(i).integer }
            func number<T: FixedWidthInteger>(_ i: Int32) -> T { int(i).flatMap { T(exactly: $0) } ?? 0 }
            var connection: AuditConnection?
            if let id = int(7).flatMap({ UInt32(exactly: $0) }), let l3 = text(8) {
                connection = AuditConnection(
                    id: id, l3proto: l3, l4proto: number(9),
                    origSource: text(10) ?? "", origDestination: text(11) ?? "",
                    origSourcePort: number(12), origDestinationPort: number(13),
                    replySource: text(14) ?? "", replyDestination: text(15) ?? "",
                    replySourcePort: number(16), replyDestinationPort: number(17),
                    mark: number(18), timeout: number(19), zone: number(20))
            }
            let entry = AuditEntry(
                action: AuditAction(rawValue: text(2) ?? ""), procedure: text(3) ?? "", user: text(4) ?? "",
                roles: (text(5) ?? "").split(separator: ",").map(String.init), client: text(6) ?? "",
                connection: connection, field: text(21), newValue: text(22))
            out.append(AuditUnfinishedAction(seq: int(0) ?? 0, hash: text(1) ?? "", entry: entry))
        }
        return out
    }

    /// Appends an `interrupted` outcome row for each action (one transaction, durable when it returns).
    /// - Parameter actions: the action row's `seq` and entry, and the reason (what the kernel table showed).
    /// - Returns: the outcome rows' `seq` and hash, in order.
    /// - Throws: ``AuditError``; nothing is written then.
    public func appendInterrupted(_ actions: [(seq: Int64, entry: AuditEntry, reason: String)]) throws
        -> [(seq: Int64, hash: String)]
    {
        try appendReturningHashes(
            batch: actions.map {
                AuditEntry.outcome(of: $0.entry, seq: $0.seq, outcome: .interrupted, reason: $0.reason)
            }
        )
    }
}
