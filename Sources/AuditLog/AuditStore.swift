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

    /// The database file.
    public let path: String
    /// Whether the store was opened with ``init(readingFrom:busyTimeout:)``.
    public let isReadOnly: Bool
    private let connection: Mutex<SQLiteConnection?>

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
        self.path = path
        self.isReadOnly = false
        self.connection = Mutex(db)
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
    }

    deinit { close() }

    /// Closes the connection (checkpointing the WAL into the main file). Later calls throw.
    public func close() {
        connection.withLock {
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
        try withConnection { db in
            guard !self.isReadOnly else {
                throw AuditError(.writeRefused, "the audit database \(self.path) was opened read-only")
            }
            try db.execute("BEGIN IMMEDIATE", doing: "take the write lock")
            do {
                let head = try Self.head(db)
                let seq = (head?.seq ?? 0) + 1
                let when = time ?? AuditTime.now()
                var columns = entry.columns(seq: seq, time: when, previousHash: head?.hash ?? AuditChain.genesis)
                columns.append(("hash", .text(try AuditChain.hash(columns))))
                let insert = try db.prepare(Self.insertSQL(columns.map(\.name)), doing: "prepare the insert")
                try insert.bind(columns.map(\.value), doing: "write a row")
                _ = try insert.step(doing: "write a row")
                insert.reset()
                try db.execute("COMMIT", doing: "commit a row")
                return seq
            } catch {
                if db.isInTransaction { try? db.execute("ROLLBACK", doing: "roll back") }
                throw error
            }
        }
    }

    /// Appends rows in one transaction (one fsync) and returns their `seq`s once all are durable: a bulk kill of
    /// 10,000 connections costs one commit, not 10,000. All or nothing.
    /// - Throws: ``AuditError`` as ``append(_:at:)``; nothing is written then.
    @discardableResult
    public func append(batch entries: [AuditEntry], at time: Double? = nil) throws -> [Int64] {
        if entries.isEmpty { return [] }
        return try withConnection { db in
            guard !self.isReadOnly else {
                throw AuditError(.writeRefused, "the audit database \(self.path) was opened read-only")
            }
            try db.execute("BEGIN IMMEDIATE", doing: "take the write lock")
            do {
                let head = try Self.head(db)
                var seq = head?.seq ?? 0
                var previous = head?.hash ?? AuditChain.genesis
                let when = time ?? AuditTime.now()
                let iso = AuditTime.iso(when)
                var seqs: [Int64] = []
                seqs.reserveCapacity(entries.count)
                var statements: [[String]: SQLiteStatement] = [:]
                var lastNames: [String] = []
                var lastInsert: SQLiteStatement?
                var order = AuditChain.OrderCache()
                for entry in entries {
                    seq += 1
                    // NULL columns are left to the column default (NULL): fewer binds, same row, same hash.
                    var columns = entry.columns(seq: seq, time: when, previousHash: previous, iso: iso)
                        .filter { $0.value != .null }
                    let hash = try AuditChain.sha256Hex(AuditChain.canonical(columns, order: &order))
                    columns.append(("hash", .text(hash)))
                    let names = columns.map(\.name)
                    let insert: SQLiteStatement
                    if let last = lastInsert, names == lastNames {
                        insert = last
                    } else if let cached = statements[names] {
                        insert = cached
                    } else {
                        insert = try db.prepare(Self.insertSQL(names), doing: "prepare the insert")
                        statements[names] = insert
                    }
                    lastNames = names
                    lastInsert = insert
                    try insert.bind(columns.map(\.value), doing: "write a row")
                    _ = try insert.step(doing: "write a row")
                    insert.reset()
                    previous = hash
                    seqs.append(seq)
                }
                try db.execute("COMMIT", doing: "commit rows")
                return seqs
            } catch {
                if db.isInTransaction { try? db.execute("ROLLBACK", doing: "roll back") }
                throw error
            }
        }
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

    static func insertSQL(_ names: [String]) -> String {
        let placeholders = names.map { _ in "?" }.joined(separator: ", ")
        return "INSERT INTO audit (\(names.joined(separator: ", "))) VALUES (\(placeholders))"
    }

    static func milliseconds(_ seconds: Double) -> Int32 {
        Int32(max(0, min(seconds, 3600)) * 1000)
    }
}

extension AuditEntry {
    /// The row's columns except `hash`, in table order.
    func columns(seq: Int64, time: Double, previousHash: String, iso: String? = nil) -> [(name: String, value: SQLValue)] {
        let c = connection
        func int<T: BinaryInteger>(_ v: T?) -> SQLValue { v.map { .integer(Int64($0)) } ?? .null }
        return [
            ("seq", .integer(seq)),
            ("time", .real(time)),
            ("time_iso", .text(iso ?? AuditTime.iso(time))),
            ("action", .text(action.rawValue)),
            ("ref_seq", SQLValue(refSeq)),
            ("procedure", .text(procedure)),
            ("user", .text(user)),
            ("roles", .text(roles.sorted().joined(separator: ","))),
            ("client", .text(client)),
            ("conn_id", int(c?.id ?? connectionID)),
            ("l3proto", SQLValue(c?.l3proto)),
            ("l4proto", int(c?.l4proto)),
            ("orig_src", SQLValue(c?.origSource)),
            ("orig_dst", SQLValue(c?.origDestination)),
            ("orig_sport", int(c?.origSourcePort)),
            ("orig_dport", int(c?.origDestinationPort)),
            ("repl_src", SQLValue(c?.replySource)),
            ("repl_dst", SQLValue(c?.replyDestination)),
            ("repl_sport", int(c?.replySourcePort)),
            ("repl_dport", int(c?.replyDestinationPort)),
            ("mark", int(c?.mark)),
            ("timeout", int(c?.timeout)),
            ("zone", int(c?.zone)),
            ("field", SQLValue(field)),
            ("new_value", SQLValue(newValue)),
            ("outcome", .text(outcome.rawValue)),
            ("reason", SQLValue(reason)),
            ("prev_hash", .text(previousHash)),
        ]
    }
}
