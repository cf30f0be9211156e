import Foundation

extension AuditStore {
    /// Signs the chain's current head and appends the checkpoint (numbered one past the last) in one transaction.
    /// - Returns: the checkpoint, to be logged (an anchor outside the file).
    @discardableResult
    public func writeCheckpoint(kind: String, key: AuditSigningKey, at time: Double? = nil) throws -> AuditCheckpoint {
        try withConnection { db in
            try db.execute("BEGIN IMMEDIATE", doing: "take the write lock")
            do {
                let head = try Self.head(db)
                let c = try Self.insertCheckpoint(
                    db, kind: kind, key: key, headSeq: head?.seq ?? 0, headHash: head?.hash ?? AuditChain.genesis,
                    at: time)
                try db.execute("COMMIT", doing: "commit the checkpoint")
                return c
            } catch {
                if db.isInTransaction { try? db.execute("ROLLBACK", doing: "roll back") }
                throw error
            }
        }
    }

    /// Signs `headSeq`/`headHash` as checkpoint number max+1 inside the caller's write transaction.
    static func insertCheckpoint(
        _ db: SQLiteConnection, kind: String, key: AuditSigningKey, headSeq: Int64, headHash: String, at time: Double?
    ) throws -> AuditCheckpoint {
        let last = try db.scalar("SELECT max(number) FROM checkpoint", doing: "read the last checkpoint")
        var c = AuditCheckpoint(
            number: (last.integer ?? 0) + 1, timeMilliseconds: Int64(((time ?? AuditTime.now()) * 1000).rounded()),
            kind: kind, headSeq: headSeq, headHash: headHash, publicKey: key.publicKeyHex, signature: "")
        c.signature = AuditSigningKey.hex(try key.sign(c.message))
        let insert = try db.prepare(
            "INSERT INTO checkpoint (number, time_ms, kind, head_seq, head_hash, public_key, signature) "
                + "VALUES (?, ?, ?, ?, ?, ?, ?)", doing: "prepare the checkpoint")
        try insert.bind(
            [
                .integer(c.number), .integer(c.timeMilliseconds), .text(c.kind), .integer(c.headSeq),
                .text(c.headHash), .text(c.publicKey), .text(c.signature),
            ], doing: "write a checkpoint")
        _ = try insert.step(doing: "write a checkpoint")
        insert.reset()
        return c
    }

    /// Records that a writer has the file open and copies the WAL into the main file, so that a copy of the main
    /// file alone (without its -wal) shows an open session and `verify` says the copy may lack rows.
    public func markOpened() throws {
        try withConnection { db in
            try db.execute(
                "INSERT INTO writer_session (opened_ms) VALUES (\(Int64(AuditTime.now() * 1000)))",
                doing: "record the writer session")
            self.sessionOpen.withLock { $0 = true }
            try db.execute("PRAGMA wal_checkpoint(TRUNCATE)", doing: "copy the WAL into the database file")
        }
    }

    /// Closes the sessions ``markOpened()`` recorded (call before ``close()``).
    public func markClosed() throws {
        try withConnection { db in
            try db.execute(
                "UPDATE writer_session SET closed_ms = \(Int64(AuditTime.now() * 1000)) WHERE closed_ms IS NULL",
                doing: "record the end of the writer session")
        }
    }

    /// Every checkpoint, by number.
    public func checkpoints() throws -> [AuditCheckpoint] {
        try withConnection { db in try Self.checkpoints(db) }
    }

    static func checkpoints(_ db: SQLiteConnection) throws -> [AuditCheckpoint] {
        let s = try db.prepare(
            "SELECT number, time_ms, kind, head_seq, head_hash, public_key, signature FROM checkpoint ORDER BY number",
            doing: "read the checkpoints")
        defer { s.reset() }
        var out: [AuditCheckpoint] = []
        while try s.step(doing: "read the checkpoints") {
            out.append(
                AuditCheckpoint(
                    number: s.column(0).integer ?? -1, timeMilliseconds: s.column(1).integer ?? 0,
                    kind: s.column(2).text ?? "", headSeq: s.column(3).integer ?? -1, headHash: s.column(4).text ?? "",
                    publicKey: s.column(5).text ?? "", signature: s.column(6).text ?? ""))
        }
        return out
    }

    static func hasTable(_ db: SQLiteConnection, _ name: String) throws -> Bool {
        try db.scalar(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '\(name)'", doing: "read the schema"
        ).integer == 1
    }

    /// Whether the database at `path` is in WAL mode (header bytes 18 and 19 are 2) and has no -wal file beside it.
    /// Call it before opening the file.
    public static func walIsMissing(path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        guard let header = try? h.read(upToCount: 20), header.count == 20 else { return false }
        return header[18] == 2 && header[19] == 2 && !FileManager.default.fileExists(atPath: path + "-wal")
    }

    /// What an anchored verification found (``verify(publicKey:expectCheckpoint:)``).
    public struct AnchorReport: Sendable {
        public var chain: VerifyReport
        /// The last valid checkpoint, or nil.
        public var lastCheckpoint: AuditCheckpoint?
        /// Rows after the last checkpoint's head: intact as far as the chain shows, but not proven.
        public var unanchoredRows: Int64
        /// Why the trail fails the anchored check, or nil.
        public var failure: String?
        /// Notes: the copy lacks its -wal, etc.
        public var notes: [String]

        public var isIntact: Bool { chain.isIntact && failure == nil }

        public var description: String {
            if !chain.isIntact { return chain.description }
            if let failure { return "FAILED: \(failure)" }
            guard let last = lastCheckpoint else { return chain.description }
            var line =
                "ok: \(chain.rows) rows\(chain.prunedNote), chain intact, anchored up to seq \(last.headSeq) by signed checkpoint "
                + "\(last.number) (head seq \(chain.headSeq), hash \(chain.headHash))"
            if unanchoredRows > 0 {
                line += "; \(unanchoredRows) rows after seq \(last.headSeq) are not yet anchored (not proven)"
            }
            return line
        }
    }

    /// ``verify()`` and then the checkpoints against `publicKey`: numbered 1... without gaps, each signed by this
    /// key, each naming a row that exists with that hash. With `expectCheckpoint` (the number of the last
    /// checkpoint the log shows), a trail whose checkpoints stop earlier was truncated. `walMissing`: whether the
    /// file's -wal was absent before this store opened it (SQLite creates an empty one at open, so the caller looks
    /// first: ``walIsMissing(path:)``).
    public func verify(publicKey: [UInt8]?, expectCheckpoint: Int64? = nil, walMissing: Bool = false) throws
        -> AnchorReport
    {
        let chain = try verify()
        var report = AnchorReport(chain: chain, lastCheckpoint: nil, unanchoredRows: 0, failure: nil, notes: [])
        try withConnection { db in
            try db.execute("BEGIN", doing: "start a read")
            defer { try? db.execute("COMMIT", doing: "end a read") }
            if try Self.hasTable(db, "writer_session"), walMissing {
                let open = try db.scalar(
                    "SELECT count(*) FROM writer_session WHERE closed_ms IS NULL", doing: "read the writer sessions")
                if (open.integer ?? 0) > 0 {
                    report.failure =
                        "this file was copied while ctd had it open and its -wal file is missing: rows and "
                        + "checkpoints written since the last WAL checkpoint are not in it (copy with `ctd audit backup`)"
                    return
                }
            }
            guard let publicKey else { return }
            guard try Self.hasTable(db, "checkpoint") else {
                report.failure = "the trail has no checkpoint table (written by a ctd before signed checkpoints)"
                return
            }
            let all = try Self.checkpoints(db)
            let keyHex = AuditSigningKey.hex(publicKey)
            var expected: Int64 = 1
            let rowHash = try db.prepare("SELECT hash FROM audit WHERE seq = ?", doing: "read a row's hash")
            for c in all {
                if c.number != expected {
                    report.failure =
                        "checkpoint \(expected) is missing (the next one is \(c.number)): checkpoints were deleted"
                    return
                }
                guard let signature = AuditSigningKey.unhex(c.signature),
                    AuditSigningKey.verify(publicKey: publicKey, message: c.message, signature: signature)
                else {
                    report.failure =
                        c.publicKey == keyHex
                        ? "checkpoint \(c.number)'s signature is not valid for the given public key: it was forged or edited"
                        : "checkpoint \(c.number) was not signed by the given public key (signed by key \(c.publicKey.prefix(16))…)"
                    return
                }
                if c.headSeq > chain.headSeq {
                    report.failure =
                        "checkpoint \(c.number) signed the head seq \(c.headSeq), but the trail ends at seq \(chain.headSeq): "
                        + "rows \(chain.headSeq + 1) to \(c.headSeq) were deleted from the tail"
                        + (walMissing ? " (or this copy lacks its -wal file)" : "")
                    return
                }
                // A checkpoint of a pruned row: its signature is checked above, its row is gone on purpose (the
                // prune checkpoint's hash is the one the first kept row links to, checked by the chain).
                if c.headSeq > 0 && c.headSeq > chain.prunedThrough {
                    try rowHash.bind([.integer(c.headSeq)], doing: "read a row's hash")
                    let has = try rowHash.step(doing: "read a row's hash")
                    let stored = has ? rowHash.column(0).text : nil
                    rowHash.reset()
                    if stored != c.headHash {
                        report.failure =
                            "checkpoint \(c.number) signed seq \(c.headSeq) with hash \(c.headHash), but the row now has "
                            + "\(stored ?? "no hash"): the chain was rewritten"
                        return
                    }
                }
                report.lastCheckpoint = c
                expected += 1
            }
            if let expectCheckpoint, expectCheckpoint > expected - 1 {
                report.failure =
                    "the trail's last checkpoint is \(expected - 1), but checkpoint \(expectCheckpoint) was issued "
                    + "(the log shows it): the tail was truncated, checkpoints included"
                return
            }
            guard let last = report.lastCheckpoint else {
                if chain.rows > 0 {
                    report.failure = "no signed checkpoint: none of the \(chain.rows) rows is anchored"
                }
                return
            }
            report.unanchoredRows = chain.headSeq - last.headSeq
        }
        return report
    }
}
