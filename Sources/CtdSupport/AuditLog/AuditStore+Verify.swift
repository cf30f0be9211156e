/// The result of ``AuditStore/verify()``.
public struct VerifyReport: Sendable, Equatable, CustomStringConvertible {
    /// What is wrong at ``firstBadSeq``.
    public enum Problem: Sendable, Equatable {
        /// The row's contents no longer match its `hash`: it was edited after it was written.
        case editedRow
        /// Rows `from...to` are missing: deleted (the numbering has a gap).
        case missingRows(from: Int64, to: Int64)
        /// The row after ``VerifyReport/firstBadSeq`` does not link to it (`prev_hash` differs from its `hash`):
        /// one of the two was rewritten with a recomputed hash.
        case brokenLink
        /// The row is malformed (no `seq`, a `hash` that is not 64 hex digits, an outcome pointing nowhere).
        case malformedRow(String)
        /// SQLite's `quick_check` found the file itself damaged.
        case corruptFile(String)
    }

    /// Rows checked (the whole table when intact).
    public var rows: Int
    /// The last good row's `seq` (0 when the table is empty): the head of the chain.
    public var headSeq: Int64
    /// The last good row's `hash` (64 zeros when the table is empty).
    public var headHash: String
    /// The first row found bad, or `nil` when the chain is intact.
    public var firstBadSeq: Int64?
    /// What is wrong, or `nil` when the chain is intact.
    public var problem: Problem?
    /// Things that do not break the chain but deserve attention (e.g. an append-only trigger was dropped).
    public var warnings: [String]
    /// When the trail was pruned: the last removed row's `seq` (the chain starts after it), else 0.
    public var prunedThrough: Int64 = 0
    /// The checkpoint of kind `prune` whose head the first row links to, when the trail was pruned.
    public var pruneCheckpoint: Int64?

    /// Whether every row is as it was written and none is missing (before the last one: see the README on
    /// truncation).
    public var isIntact: Bool { problem == nil }

    /// ` (seq P+1 to S; rows 1 to P were pruned, checkpoint K)` when the trail was pruned.
    var prunedNote: String {
        guard prunedThrough > 0, let k = pruneCheckpoint else { return "" }
        return " (seq \(prunedThrough + 1) to \(headSeq); rows 1 to \(prunedThrough) were pruned, checkpoint \(k))"
    }

    /// One line: `ok: N rows, chain intact (head …)` or what is wrong where.
    public var description: String {
        guard let problem else {
            return "ok: \(rows) \(rows == 1 ? "row" : "rows")\(prunedNote), chain intact (head seq \(headSeq), hash \(headHash))"
        }
        let seq = firstBadSeq.map(String.init) ?? "?"
        switch problem {
        case .editedRow:
            return
                "FAILED at seq \(seq): the row was changed after it was written (its hash does not match its contents)"
        case .missingRows(let from, let to):
            let which = from == to ? "row \(from) is" : "rows \(from) to \(to) are"
            return "FAILED at seq \(seq): \(which) missing (deleted)"
        case .brokenLink:
            let next = firstBadSeq.map { String($0 + 1) } ?? "?"
            return
                "FAILED at seq \(seq): row \(next) does not link to row \(seq) (prev_hash differs from its hash): "
                + "row \(seq) was rewritten with a recomputed hash, or row \(next)'s link was forged"
        case .malformedRow(let why):
            return "FAILED at seq \(seq): malformed row: \(why)"
        case .corruptFile(let why):
            return "FAILED: the database file is damaged: \(why)"
        }
    }
}

extension AuditStore {
    /// Checks the whole chain: numbering without gaps from 1, every row's hash, every link, and the file's
    /// integrity (`PRAGMA quick_check`). Reads one consistent snapshot; appends by other processes may continue.
    /// - Returns: the report; ``VerifyReport/firstBadSeq`` names the first bad row.
    /// - Throws: ``AuditError`` when the database cannot be read at all.
    public func verify() throws -> VerifyReport {
        try withConnection { db in
            try db.execute("BEGIN", doing: "start a read")
            defer { try? db.execute("COMMIT", doing: "end a read") }
            var report = VerifyReport(
                rows: 0, headSeq: 0, headHash: AuditChain.genesis, firstBadSeq: nil, problem: nil, warnings: [])

            let check = try db.prepare("PRAGMA quick_check", doing: "check the file")
            var damage: [String] = []
            while try check.step(doing: "check the file") {
                if let line = check.column(0).text, line != "ok" { damage.append(line) }
            }
            check.reset()
            if !damage.isEmpty {
                report.problem = .corruptFile(damage.prefix(3).joined(separator: "; "))
                return report
            }
            let triggers = try db.prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'audit'", doing: "read the schema"
            )
            var present = Set<String>()
            while try triggers.step(doing: "read the schema") {
                if let name = triggers.column(0).text { present.insert(name) }
            }
            triggers.reset()
            for name in AuditSchema.guardTriggers where !present.contains(name) {
                report.warnings.append(
                    "the append-only trigger \(name) is missing: someone dropped it (the chain still shows edits)")
            }

            let s = try db.prepare("SELECT * FROM audit ORDER BY seq", doing: "read the audit trail")
            defer { s.reset() }
            let count = s.columnCount
            let names = (0..<count).map { s.columnName($0) }
            guard let seqIndex = names.firstIndex(of: "seq"), let hashIndex = names.firstIndex(of: "hash"),
                let prevIndex = names.firstIndex(of: "prev_hash")
            else {
                throw AuditError.unusable(db.path, "the audit table lacks seq, hash or prev_hash")
            }
            let actionIndex = names.firstIndex(of: "action")
            let refIndex = names.firstIndex(of: "ref_seq")
            let refLastIndex = names.firstIndex(of: "ref_last")
            var expected: Int64 = 1
            var previousHash = AuditChain.genesis
            // A pruned trail starts after the newest prune checkpoint's head and links to its hash (the signature
            // is checked by the anchored verify, with the public key).
            if try Self.hasTable(db, "checkpoint") {
                let p = try db.prepare(
                    "SELECT number, head_seq, head_hash FROM checkpoint WHERE kind = 'prune' ORDER BY head_seq DESC LIMIT 1",
                    doing: "read the prune checkpoint")
                if try p.step(doing: "read the prune checkpoint"), let n = p.column(0).integer,
                    let through = p.column(1).integer, let hash = p.column(2).text, through > 0
                {
                    expected = through + 1
                    previousHash = hash
                    report.prunedThrough = through
                    report.pruneCheckpoint = n
                    report.headSeq = through
                    report.headHash = hash
                }
                p.reset()
            }
            let layout = AuditChain.Layout(names: names)
            var values = [SQLValue](repeating: .null, count: names.count)
            let scratch = CanonicalScratch()
            while try s.step(doing: "read the audit trail") {
                for i in 0..<Int(count) { values[i] = s.column(Int32(i)) }
                guard let seq = values[seqIndex].integer else {
                    report.firstBadSeq = expected
                    report.problem = .malformedRow("a row after seq \(expected - 1) has no integer seq")
                    return report
                }
                if seq < expected {
                    report.firstBadSeq = seq
                    report.problem = .malformedRow(
                        "the trail was pruned through seq \(expected - 1) (checkpoint \(report.pruneCheckpoint ?? 0)), "
                            + "but row \(seq) is still there")
                    return report
                }
                if seq != expected {
                    report.firstBadSeq = expected
                    report.problem = .missingRows(from: expected, to: seq - 1)
                    return report
                }
                guard case .text(let stored) = values[hashIndex], AuditChain.isHash(stored) else {
                    report.firstBadSeq = seq
                    report.problem = .malformedRow("its hash is not 64 lowercase hex digits")
                    return report
                }
                if try layout.hash(values, scratch: scratch) != stored {
                    report.firstBadSeq = seq
                    report.problem = .editedRow
                    return report
                }
                if values[prevIndex] != .text(previousHash) {
                    if seq == report.prunedThrough + 1 && report.prunedThrough > 0 {
                        report.firstBadSeq = seq
                        report.problem = .malformedRow(
                            "the first row after the pruned prefix does not link to the head checkpoint "
                                + "\(report.pruneCheckpoint ?? 0) signed (prev_hash differs from its head_hash)")
                        return report
                    }
                    if seq == 1 {
                        report.firstBadSeq = 1
                        report.problem = .malformedRow("the first row's prev_hash is not the genesis value (64 zeros)")
                        return report
                    }
                    report.firstBadSeq = seq - 1
                    report.problem = .brokenLink
                    return report
                }
                if let actionIndex, values[actionIndex] == .text(AuditAction.outcome.rawValue) {
                    let ref = refIndex.flatMap { values[$0].integer }
                    guard let ref, ref >= 1, ref < seq else {
                        report.firstBadSeq = seq
                        report.problem = .malformedRow("an outcome row must refer to an earlier action row")
                        return report
                    }
                    if let last = refLastIndex.flatMap({ values[$0].integer }), !(last > ref && last < seq) {
                        report.firstBadSeq = seq
                        report.problem = .malformedRow(
                            "an outcome row's run (ref_seq to ref_last) must end after it starts and before the row")
                        return report
                    }
                }
                report.rows += 1
                report.headSeq = seq
                report.headHash = stored
                previousHash = stored
                expected = seq + 1
            }
            return report
        }
    }
}
