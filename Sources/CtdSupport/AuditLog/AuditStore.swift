import Dispatch
import Synchronization

/// An audit database: one SQLite file (WAL mode, `synchronous=FULL`) holding the append-only, hash-chained table
/// `audit`. See `Plugins/AuditSQLite/README.md` for the schema and the chain.
///
/// Thread-safety: every method may be called from several threads at once; calls on one store are serialized on its
/// connection. Several stores (in one process or several) may share a file: appends take SQLite's write lock with
/// `BEGIN IMMEDIATE` and read the chain's head inside it, so the chain never forks.
public final class AuditStore: Sendable {
    /// How hard a commit is pushed to disk. Weaker settings (`NORMAL`, `OFF`) are not offered: they let an action
    /// reach the kernel before its record is on disk.
    public enum Synchronous: String, Sendable, CaseIterable {
        /// The WAL is fsync'ed at every commit: a row is durable when ``AuditStore/append(_:at:)`` returns.
        case full
        /// Like `full`, and the directory is synced too after journal changes.
        case extra
    }

    /// Where AuditSQLite keeps its database unless configured otherwise.
    public static let defaultPath = "/var/lib/ctd/audit.db"

    /// The database file.
    public let path: String
    /// Whether the store was opened with ``init(readingFrom:busyTimeout:)``.
    public let isReadOnly: Bool
    private let connection: Mutex<SQLiteConnection?>
    /// Whether ``markOpened()`` recorded a writer session that ``close()`` must end.
    let sessionOpen = Mutex(false)
    /// Copies the WAL into the database file off the appending thread (writers only).
    private let checkpointer: WALCheckpointer?

    /// Opens (creating it with mode 0600 if needed) and migrates a database for appending.
    /// - Parameters:
    ///   - path: the database file; `-wal` and `-shm` files are created next to it.
    ///   - synchronous: see ``Synchronous``.
    ///   - busyTimeout: seconds to wait for another writer's lock before an append fails.
    /// - Throws: ``AuditError`` when the file cannot be created, opened, switched to WAL or migrated, or is
    ///   something else than an audit database.
    public init(path: String, synchronous: Synchronous = .full, busyTimeout: Double = 5) throws {
        let db = try SQLiteConnection(
            path: path, readOnly: false, create: true, busyTimeoutMilliseconds: Self.milliseconds(busyTimeout))
        let mode = try db.scalar("PRAGMA journal_mode = WAL", doing: "switch to WAL mode").text
        guard mode?.lowercased() == "wal" else {
            throw AuditError.unusable(
                path, "SQLite could not switch it to WAL mode (journal mode is \(mode ?? "unknown"))")
        }
        try db.execute("PRAGMA synchronous = \(synchronous.rawValue.uppercased())", doing: "set synchronous")
        try db.execute("PRAGMA trusted_schema = OFF", doing: "set trusted_schema")
        try AuditSchema.migrate(db)
        let checkpointer = try WALCheckpointer(
            path: path, synchronous: synchronous, busyTimeoutMilliseconds: Self.milliseconds(busyTimeout))
        db.trackWALPages()
        self.path = path
        self.isReadOnly = false
        self.connection = Mutex(db)
        self.checkpointer = checkpointer
    }

    /// Opens an existing database for reading only (verify, list, export): never creates, migrates or writes.
    /// - Throws: ``AuditError`` when the file is missing, unreadable, empty, or not an audit database this code
    ///   understands.
    public init(readingFrom path: String, busyTimeout: Double = 5) throws {
        var db = try SQLiteConnection(
            path: path, readOnly: true, create: false, busyTimeoutMilliseconds: Self.milliseconds(busyTimeout))
        let version: Int
        do {
            version = try AuditSchema.checkedVersion(db)
        } catch let error as AuditError where (error.sqliteCode ?? 0) & 0xFF == 14 /* SQLITE_CANTOPEN */ {
            // A WAL database in a directory nobody may write to (an archive): SQLite cannot create the -shm file.
            // Nobody can be writing it either, so read it as immutable.
            db = try SQLiteConnection(
                path: path, readOnly: true, create: false, immutable: true,
                busyTimeoutMilliseconds: Self.milliseconds(busyTimeout))
            version = try AuditSchema.checkedVersion(db)
        }
        guard version > 0 else { throw AuditError.unusable(path, "it holds no audit table (an empty database)") }
        try db.execute("PRAGMA query_only = ON", doing: "open read-only")
        self.path = path
        self.isReadOnly = true
        self.connection = Mutex(db)
        self.checkpointer = nil
    }

    deinit { close() }

    /// Closes the connection (checkpointing the WAL into the main file). Later calls throw.
    public func close() {
        checkpointer?.close()
        connection.withLock {
            // A writer session (``markOpened()``) ends with the connection, whoever closes it.
            if let db = $0, !isReadOnly, sessionOpen.withLock({ $0 }) {
                try? db.execute(
                    "UPDATE writer_session SET closed_ms = \(Int64(AuditTime.now() * 1000)) WHERE closed_ms IS NULL",
                    doing: "record the end of the writer session")
                sessionOpen.withLock { $0 = false }
            }
            $0?.close()
            $0 = nil
        }
    }

    /// Appends one row and returns its `seq` once it is durable.
    /// - Parameters:
    ///   - entry: the row.
    ///   - time: the row's time (epoch seconds); default now. For tests and imports.
    /// - Throws: ``AuditError``: busy beyond the timeout, the file system refused the write (read-only, immutable,
    ///   full, I/O error), or the store is closed. Nothing is written then.
    @discardableResult
    public func append(_ entry: AuditEntry, at time: Double? = nil) throws -> Int64 {
        try append(batch: [entry], at: time)[0]
    }

    /// Appends rows in one transaction (one fsync) and returns their `seq`s once all are durable: a bulk kill of
    /// 10,000 connections costs one commit, not 10,000. All or nothing.
    /// - Throws: ``AuditError`` as ``append(_:at:)``; nothing is written then.
    @discardableResult
    public func append(batch entries: [AuditEntry], at time: Double? = nil) throws -> [Int64] {
        try appendRows(entries, at: time).map(\.seq)
    }

    /// The same, and the rows' hashes.
    public func appendReturningHashes(batch entries: [AuditEntry], at time: Double? = nil) throws
        -> [(seq: Int64, hash: String)]
    {
        try appendRows(entries, at: time)
    }

    private func appendRows(_ entries: [AuditEntry], at time: Double?) throws -> [(seq: Int64, hash: String)] {
        if entries.isEmpty { return [] }
        return try withConnection { db in
            guard !self.isReadOnly else {
                throw AuditError(.writeRefused, "the audit database \(self.path) was opened read-only")
            }
            try db.execute("BEGIN IMMEDIATE", doing: "take the write lock")
            do {
                let seqs = try Self.insertRows(db, entries, at: time)
                try db.execute("COMMIT", doing: "commit rows")
                if db.walPages >= WALCheckpointer.thresholdPages { self.checkpointer?.request() }
                return seqs
            } catch {
                if db.isInTransaction { try? db.execute("ROLLBACK", doing: "roll back") }
                throw error
            }
        }
    }

    /// Appends rows after the head inside the caller's write transaction.
    static func insertRows(_ db: SQLiteConnection, _ entries: [AuditEntry], at time: Double?) throws
        -> [(seq: Int64, hash: String)]
    {
        let head = try Self.head(db)
        var seq = head?.seq ?? 0
        var previous = head?.hash ?? AuditChain.genesis
        let when = time ?? AuditTime.now()
        let iso = AuditTime.iso(when)
        var seqs: [(seq: Int64, hash: String)] = []
        seqs.reserveCapacity(entries.count)
        let names = AuditEntry.columnNames
        let insert = try db.prepare(Self.insertSQL(names), doing: "prepare the insert")
        var values = [SQLValue](repeating: .null, count: names.count)
        let scratch = CanonicalScratch()
        var roles: (list: [String], text: String) = ([], "")
        for entry in entries {
            seq += 1
            if entry.roles != roles.list { roles = (entry.roles, entry.rolesText) }
            entry.values(seq: seq, time: when, iso: iso, roles: roles.text, previousHash: previous, into: &values)
            let hash = try Self.layout.hash(values, scratch: scratch)
            values[names.count - 1] = .text(hash)
            try insert.bind(values, doing: "write a row")
            _ = try insert.step(doing: "write a row")
            insert.reset()
            previous = hash
            seqs.append((seq, hash))
        }
        return seqs
    }

    /// The last row's `seq` and `hash` (an anchor worth writing somewhere else), or `nil` when the table is empty.
    public func head() throws -> (seq: Int64, hash: String)? {
        try withConnection { try Self.head($0) }
    }

    // MARK: Internals

    func withConnection<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        try connection.withLock { db in
            guard let db else { throw AuditError.closed(path) }
            return try body(db)
        }
    }

    static func head(_ db: SQLiteConnection) throws -> (seq: Int64, hash: String)? {
        let s = try db.prepare("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", doing: "read the last row")
        defer { s.reset() }
        guard try s.step(doing: "read the last row") else { return nil }
        guard let seq = s.column(0).integer, let hash = s.column(1).text else {
            throw AuditError(.readFailed, "the last row of the audit database \(db.path) has no seq or hash")
        }
        return (seq, hash)
    }

    /// The canonical-form layout of ``AuditEntry/columnNames``.
    static let layout = AuditChain.Layout(names: AuditEntry.columnNames)

    static func insertSQL(_ names: [String]) -> String {
        let placeholders = names.map { _ in "?" }.joined(separator: ", ")
        return "INSERT INTO audit (\(names.joined(separator: ", "))) VALUES (\(placeholders))"
    }

    static func milliseconds(_ seconds: Double) -> Int32 {
        Int32(max(0, min(seconds, 3600)) * 1000)
    }
}

/// Runs SQLite's WAL checkpoints on a connection and thread of its own. SQLite's automatic checkpoint runs inside
/// the COMMIT that takes the WAL past 1,000 pages, so a bulk kill's audit rows would wait for it (about 15 ms of a
/// 10,000-row batch, measured); here the appender only asks, and a PASSIVE checkpoint, which never blocks writers or
/// readers, runs in the background. Requests made while one is pending are merged.
final class WALCheckpointer: Sendable {
    /// The WAL size (pages) after a commit that asks for a checkpoint: SQLite's own default.
    static let thresholdPages: Int32 = 1000

    private let queue = DispatchQueue(label: "ctd.audit.checkpoint", qos: .utility)
    private let pending = Mutex(false)
    /// Used on `queue` only, and by ``close()`` after the queue is drained.
    private let connection: Mutex<SQLiteConnection?>

    init(path: String, synchronous: AuditStore.Synchronous, busyTimeoutMilliseconds: Int32) throws {
        let db = try SQLiteConnection(
            path: path, readOnly: false, create: false, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
        // A checkpoint syncs the WAL before copying it and the database file after: as hard as the appender's commits.
        try db.execute("PRAGMA synchronous = \(synchronous.rawValue.uppercased())", doing: "set synchronous")
        connection = Mutex(db)
    }

    /// Asks for a checkpoint; returns at once.
    func request() {
        let start = pending.withLock { busy in
            if busy { return false }
            busy = true
            return true
        }
        guard start else { return }
        queue.async {
            self.pending.withLock { $0 = false }
            // A failure (busy, read-only file system) leaves the WAL as it is; the next request tries again.
            self.connection.withLock { try? $0?.execute("PRAGMA wal_checkpoint(PASSIVE)", doing: "checkpoint") }
        }
    }

    /// Waits for a running checkpoint and closes the connection.
    func close() {
        queue.sync {}
        connection.withLock {
            $0?.close()
            $0 = nil
        }
    }
}

extension AuditEntry {
    /// The columns of `audit` as rows are inserted (the table's order, but for `ref_last`, added by schema version
    /// 4); `hash` is last.
    static let columnNames = [
        "seq", "time", "time_iso", "action", "ref_seq", "procedure", "user", "roles", "client", "conn_id", "l3proto",
        "l4proto", "orig_src", "orig_dst", "orig_sport", "orig_dport", "repl_src", "repl_dst", "repl_sport",
        "repl_dport", "mark", "timeout", "zone", "field", "new_value", "outcome", "reason", "ref_last", "prev_hash",
        "hash",
    ]

    /// `roles` as stored: sorted, comma-separated.
    var rolesText: String { roles.sorted().joined(separator: ",") }

    /// Writes the row's values into `values`, by ``columnNames`` index; the `hash` slot is set to NULL.
    func values(
        seq: Int64, time: Double, iso: String, roles: String, previousHash: String, into values: inout [SQLValue]
    ) {
        let c = connection
        func int<T: BinaryInteger>(_ v: T?) -> SQLValue { v.map { .integer(Int64($0)) } ?? .null }
        values[0] = .integer(seq)
        values[1] = .real(time)
        values[2] = .text(iso)
        values[3] = .text(action.rawValue)
        values[4] = SQLValue(refSeq)
        values[5] = .text(procedure)
        values[6] = .text(user)
        values[7] = .text(roles)
        values[8] = .text(client)
        values[9] = int(c?.id ?? connectionID)
        values[10] = SQLValue(c?.l3proto)
        values[11] = int(c?.l4proto)
        values[12] = SQLValue(c?.origSource)
        values[13] = SQLValue(c?.origDestination)
        values[14] = int(c?.origSourcePort)
        values[15] = int(c?.origDestinationPort)
        values[16] = SQLValue(c?.replySource)
        values[17] = SQLValue(c?.replyDestination)
        values[18] = int(c?.replySourcePort)
        values[19] = int(c?.replyDestinationPort)
        values[20] = int(c?.mark)
        values[21] = int(c?.timeout)
        values[22] = int(c?.zone)
        values[23] = SQLValue(field)
        values[24] = SQLValue(newValue)
        values[25] = .text(outcome.rawValue)
        values[26] = SQLValue(reason)
        values[27] = SQLValue(refLast)
        values[28] = .text(previousHash)
        values[29] = .null
    }
}
