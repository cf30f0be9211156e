/// What ``AuditStore/prune(before:key:user:client:)`` did.
public struct AuditPruneReport: Sendable {
    /// The prune's own action row.
    public var actionSeq: Int64
    /// Rows `firstPruned...prunedThrough` were removed (none when `prunedRows` is 0).
    public var firstPruned: Int64
    /// The last removed row's `seq`: the remainder starts at `prunedThrough + 1`.
    public var prunedThrough: Int64
    /// How many rows were removed.
    public var prunedRows: Int64
    /// The signed checkpoint of kind `prune` that anchors the removed prefix's head (nil when nothing was removed).
    public var pruneCheckpoint: AuditCheckpoint?
    /// The signed checkpoint of the head after the prune's outcome row.
    public var headCheckpoint: AuditCheckpoint

    /// One line for `ctd audit prune`.
    public var description: String {
        guard let c = pruneCheckpoint else {
            return "nothing to prune: no row older than the given time outside the kept chain (prune recorded as seq "
                + "\(actionSeq); checkpoint \(headCheckpoint.number))"
        }
        return "pruned rows \(firstPruned) to \(prunedThrough) (\(prunedRows) rows); the trail now starts at seq "
            + "\(prunedThrough + 1), anchored by signed checkpoint \(c.number) (prune, head seq \(c.headSeq) hash "
            + "\(c.headHash)); the prune is recorded as seq \(actionSeq), signed by checkpoint \(headCheckpoint.number)"
    }
}

extension AuditStore {
    /// Removes the rows recorded before `time` from the start of the trail and keeps the rest verifiable: the
    /// removed prefix's head (seq and hash) is signed as a checkpoint of kind `prune` in the same transaction, so the
    /// first remaining row's `prev_hash` is anchored. Audited itself, two-phase like every action: a `prune` action
    /// row (durable first), then in one transaction the checkpoint, the deletion, the outcome row and a checkpoint of
    /// the new head. A failure after the action row records a failed outcome.
    ///
    /// Rows are removed as a prefix: up to the last row before the first one recorded at or after `time`, and never
    /// an action whose outcome row stays (the prefix stops before it). Deleted pages are zeroed (`secure_delete`).
    /// - Parameters:
    ///   - time: epoch seconds; must be in the past.
    ///   - key: the trail's signing key (the daemon's `signing_key`).
    ///   - user: who runs the prune (the Unix user).
    ///   - client: from where (`local`).
    /// - Throws: ``AuditError`` for a time in the future, a key that is not the trail's, or a database that cannot
    ///   be written.
    public func prune(before time: Double, key: AuditSigningKey, user: String, client: String) throws
        -> AuditPruneReport
    {
        let now = AuditTime.now()
        guard time <= now else {
            throw AuditError.invalidArgument(
                "--before must be in the past (it is \(AuditTime.iso(time)), now is \(AuditTime.iso(now)))")
        }
        // The key must be the one that signed the trail so far: a checkpoint by another key would fail verify.
        if let signer = try checkpoints().last?.publicKey, signer != key.publicKeyHex {
            throw AuditError.invalidArgument(
                "the signing key's public half (\(key.publicKeyHex.prefix(16))…) is not the key that signed this "
                    + "trail's checkpoints (\(signer.prefix(16))…): give the daemon's signing_key with --key")
        }
        let action = AuditEntry(
            action: .prune, procedure: "audit prune", user: user, roles: [], client: client, field: "before",
            newValue: AuditTime.iso(time))
        let actionSeq = try append(action)
        do {
            return try withConnection { db in
                try db.execute("PRAGMA secure_delete = ON", doing: "zero deleted pages")
                try db.execute("BEGIN IMMEDIATE", doing: "take the write lock")
                do {
                    let report = try Self.pruneInTransaction(
                        db, before: time, action: action, actionSeq: actionSeq, key: key)
                    try db.execute("COMMIT", doing: "commit the prune")
                    try? db.execute("PRAGMA wal_checkpoint(TRUNCATE)", doing: "copy the WAL into the database file")
                    return report
                } catch {
                    if db.isInTransaction { try? db.execute("ROLLBACK", doing: "roll back") }
                    throw error
                }
            }
        } catch {
            let failed = AuditEntry.outcome(of: action, seq: actionSeq, outcome: .failed, reason: "\(error)")
            _ = try? append(failed)
            throw error
        }
    }

    private static func pruneInTransaction(
        _ db: SQLiteConnection, before time: Double, action: AuditEntry, actionSeq: Int64, key: AuditSigningKey
    ) throws -> AuditPruneReport {
        let first = try db.scalar("SELECT min(seq) FROM audit", doing: "read the first row").integer ?? actionSeq
        let keep = try db.prepare("SELECT min(seq) FROM audit WHERE time >= ?", doing: "find the first row to keep")
        try keep.bind([.real(time)], doing: "find the first row to keep")
        _ = try keep.step(doing: "find the first row to keep")
        let firstKept = keep.column(0).integer ?? actionSeq
        keep.reset()
        var through = min(firstKept, actionSeq) - 1
        // An outcome that stays keeps its action: stop the prefix before the oldest such action.
        while through >= first {
            let ref = try db.scalar(
                "SELECT min(ref_seq) FROM audit WHERE seq > \(through) AND action = 'outcome' AND ref_seq <= \(through)",
                doing: "find actions whose outcome stays"
            ).integer
            guard let ref else { break }
            through = ref - 1
        }
        var pruneCheckpoint: AuditCheckpoint?
        var removed: Int64 = 0
        var reason = "no row before \(AuditTime.iso(time)) could be removed"
        if through >= first {
            let hash = try db.scalar("SELECT hash FROM audit WHERE seq = \(through)", doing: "read the pruned head")
            guard let headHash = hash.text else {
                throw AuditError(.readFailed, "row \(through) of \(db.path) has no hash")
            }
            pruneCheckpoint = try insertCheckpoint(
                db, kind: "prune", key: key, headSeq: through, headHash: headHash, at: nil)
            try db.execute("DROP TRIGGER audit_no_delete", doing: "lift the append-only guard for the prune")
            try db.execute("DELETE FROM audit WHERE seq <= \(through)", doing: "remove the pruned rows")
            removed = try db.scalar("SELECT changes()", doing: "count the pruned rows").integer ?? 0
            try db.execute(AuditSchema.noDeleteTrigger, doing: "restore the append-only guard")
            reason =
                "removed rows \(first) to \(through) (\(removed) rows); the trail starts at seq \(through + 1), "
                + "anchored by checkpoint \(pruneCheckpoint!.number)"
        }
        var outcome = AuditEntry.outcome(of: action, seq: actionSeq, outcome: .succeeded, reason: nil)
        outcome.reason = reason
        let written = try insertRows(db, [outcome], at: nil)
        let head = try insertCheckpoint(
            db, kind: "after_prune", key: key, headSeq: written[0].seq, headHash: written[0].hash, at: nil)
        return AuditPruneReport(
            actionSeq: actionSeq, firstPruned: first, prunedThrough: through, prunedRows: removed,
            pruneCheckpoint: pruneCheckpoint, headCheckpoint: head)
    }
}
