import CSQLite

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// One SQLite value with its storage class: the hash chain covers the class as well as the value.
enum SQLValue: Equatable, Sendable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    init(_ string: String?) { self = string.map { .text($0) } ?? .null }
    init(_ number: Int64?) { self = number.map { .integer($0) } ?? .null }

    var text: String? {
        if case .text(let s) = self { return s }
        return nil
    }

    var integer: Int64? {
        if case .integer(let i) = self { return i }
        return nil
    }

    var real: Double? {
        switch self {
        case .real(let d): return d
        case .integer(let i): return Double(i)
        default: return nil
        }
    }
}

/// A thin, single-threaded wrapper over a `sqlite3*`. Not thread-safe: ``AuditStore`` serializes access.
final class SQLiteConnection {
    let handle: OpaquePointer
    let path: String
    private var statements: [String: SQLiteStatement] = [:]
    private var isClosed = false
    /// The WAL's size in pages after the last commit, once ``trackWALPages()`` was called.
    private let walPagesStorage: UnsafeMutablePointer<Int32>

    /// Opens `path`. `create` makes a missing file (mode 0600); `readOnly` opens without write access;
    /// `immutable` (read-only only) tells SQLite that nobody writes the file, so that it needs no `-shm` file:
    /// for archived databases in a directory nobody may write to.
    init(path: String, readOnly: Bool, create: Bool, immutable: Bool = false, busyTimeoutMilliseconds: Int32) throws {
        self.path = path
        var st = stat()
        if stat(path, &st) != 0 {
            guard errno == ENOENT, create, !readOnly else {
                if errno == ENOENT { throw AuditError.missingDatabase(path) }
                throw AuditError.unusable(path, "cannot stat it: \(errnoText(errno))")
            }
            // SQLite would create the file with 0644 & ~umask: audit data (who killed what) is for root's eyes.
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd < 0 && errno != EEXIST {
                throw AuditError(.writeRefused, "cannot create the audit database \(path): \(errnoText(errno))")
            }
            if fd >= 0 { Glibc.close(fd) }
        } else if (st.st_mode & S_IFMT) != S_IFREG {
            throw AuditError.unusable(path, "not a regular file")
        }
        var db: OpaquePointer?
        var flags =
            (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        var name = path
        if immutable && readOnly {
            flags |= SQLITE_OPEN_URI
            name = "file:" + Self.uriEscaped(path) + "?immutable=1"
        }
        let rc = sqlite3_open_v2(name, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let why = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            if let db { sqlite3_close_v2(db) }
            throw AuditError.unusable(path, why, sqliteCode: rc)
        }
        handle = db
        walPagesStorage = .allocate(capacity: 1)
        walPagesStorage.initialize(to: 0)
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, busyTimeoutMilliseconds)
    }

    deinit {
        close()
        walPagesStorage.deallocate()
    }

    /// Records the WAL's size after each commit in ``walPages`` and turns SQLite's automatic checkpoint off on this
    /// connection: whoever calls this checkpoints (``AuditStore`` does, on another connection and thread).
    func trackWALPages() {
        csqlite_track_wal_pages(handle, walPagesStorage)
    }

    /// The WAL's size in pages after this connection's last commit (0 before ``trackWALPages()``).
    var walPages: Int32 { walPagesStorage.pointee }

    static func uriEscaped(_ path: String) -> String {
        var out = ""
        for byte in path.utf8 {
            switch byte {
            case UInt8(ascii: "?"), UInt8(ascii: "#"), UInt8(ascii: "%"), UInt8(ascii: " "), 0..<0x20, 0x7F...:
                out += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            default:
                out.unicodeScalars.append(Unicode.Scalar(byte))
            }
        }
        return out
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        statements.removeAll()  // finalizes them
        sqlite3_close_v2(handle)
    }

    /// Runs one or more statements that return no rows of interest.
    func execute(_ sql: String, doing what: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) }
            sqlite3_free(message)
            throw error(rc, doing: what, detail: text)
        }
    }

    /// A prepared statement, cached for the life of the connection.
    func prepare(_ sql: String, doing what: String) throws -> SQLiteStatement {
        if let cached = statements[sql] {
            cached.reset()
            return cached
        }
        var raw: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &raw, nil)
        guard rc == SQLITE_OK, let raw else { throw error(rc, doing: what) }
        let statement = SQLiteStatement(raw, connection: self)
        statements[sql] = statement
        return statement
    }

    /// The first column of the first row of `sql`.
    func scalar(_ sql: String, doing what: String) throws -> SQLValue {
        let s = try prepare(sql, doing: what)
        defer { s.reset() }
        guard try s.step(doing: what) else { return .null }
        return s.column(0)
    }

    var isInTransaction: Bool { sqlite3_get_autocommit(handle) == 0 }

    /// Maps a result code to an ``AuditError`` with SQLite's message and, for I/O errors, the errno.
    func error(_ rc: Int32, doing what: String, detail: String? = nil) -> AuditError {
        let extended = sqlite3_extended_errcode(handle)
        let code = extended != 0 ? extended : rc
        var why = detail ?? String(cString: sqlite3_errmsg(handle))
        let primary = code & 0xFF
        if let name = Self.codeNames[code] { why += " (\(name))" }
        // Not sqlite3_system_errno(): SQLite samples errno after later system calls have overwritten it (measured:
        // an EPERM from pwrite came back as 0 or ENOENT), so it would mislead.
        if primary == SQLITE_IOERR || primary == SQLITE_READONLY || primary == SQLITE_FULL {
            why +=
                ": the file system refused the write"
                + " (read-only or immutable file or directory, full disk, or I/O error)"
        } else if primary == SQLITE_CANTOPEN {
            why +=
                ": the file or its -wal/-shm companions cannot be opened or created (directory read-only or immutable?)"
        }
        let message = "cannot \(what) in the audit database \(path): \(why)"
        switch primary {
        case SQLITE_BUSY, SQLITE_LOCKED:
            return AuditError(
                .busy, message + "; another writer held the lock longer than the busy timeout",
                sqliteCode: code)
        case SQLITE_READONLY, SQLITE_FULL, SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_PERM:
            return AuditError(.writeRefused, message, sqliteCode: code)
        case SQLITE_CORRUPT, SQLITE_NOTADB:
            return AuditError(.readFailed, message, sqliteCode: code)
        default:
            return AuditError(.readFailed, message, sqliteCode: code)
        }
    }
}

extension SQLiteConnection {
    /// Names of the extended result codes an administrator is likely to meet (sqlite3_errstr only has the generic
    /// text).
    static let codeNames: [Int32: String] = {
        // Extended codes are `primary | (n << 8)` macros, which Swift does not import.
        let table: [(Int32, Int32, String)] = [
            (SQLITE_IOERR, 1, "SQLITE_IOERR_READ"), (SQLITE_IOERR, 2, "SQLITE_IOERR_SHORT_READ"),
            (SQLITE_IOERR, 3, "SQLITE_IOERR_WRITE"), (SQLITE_IOERR, 4, "SQLITE_IOERR_FSYNC"),
            (SQLITE_IOERR, 5, "SQLITE_IOERR_DIR_FSYNC"), (SQLITE_IOERR, 6, "SQLITE_IOERR_TRUNCATE"),
            (SQLITE_IOERR, 7, "SQLITE_IOERR_FSTAT"), (SQLITE_IOERR, 10, "SQLITE_IOERR_DELETE"),
            (SQLITE_IOERR, 12, "SQLITE_IOERR_NOMEM"), (SQLITE_IOERR, 13, "SQLITE_IOERR_ACCESS"),
            (SQLITE_IOERR, 15, "SQLITE_IOERR_LOCK"), (SQLITE_IOERR, 18, "SQLITE_IOERR_SHMOPEN"),
            (SQLITE_IOERR, 19, "SQLITE_IOERR_SHMSIZE"), (SQLITE_IOERR, 21, "SQLITE_IOERR_SHMMAP"),
            (SQLITE_READONLY, 1, "SQLITE_READONLY_RECOVERY"), (SQLITE_READONLY, 2, "SQLITE_READONLY_CANTLOCK"),
            (SQLITE_READONLY, 3, "SQLITE_READONLY_ROLLBACK"), (SQLITE_READONLY, 4, "SQLITE_READONLY_DBMOVED"),
            (SQLITE_READONLY, 5, "SQLITE_READONLY_CANTINIT"), (SQLITE_READONLY, 6, "SQLITE_READONLY_DIRECTORY"),
            (SQLITE_BUSY, 1, "SQLITE_BUSY_RECOVERY"), (SQLITE_BUSY, 2, "SQLITE_BUSY_SNAPSHOT"),
            (SQLITE_BUSY, 3, "SQLITE_BUSY_TIMEOUT"),
            (SQLITE_IOERR, 0, "SQLITE_IOERR"), (SQLITE_READONLY, 0, "SQLITE_READONLY"), (SQLITE_FULL, 0, "SQLITE_FULL"),
            (SQLITE_CANTOPEN, 0, "SQLITE_CANTOPEN"), (SQLITE_BUSY, 0, "SQLITE_BUSY"), (SQLITE_PERM, 0, "SQLITE_PERM"),
            (SQLITE_CORRUPT, 0, "SQLITE_CORRUPT"), (SQLITE_NOTADB, 0, "SQLITE_NOTADB"),
        ]
        return Dictionary(uniqueKeysWithValues: table.map { ($0.0 | ($0.1 << 8), $0.2) })
    }()
}

/// A prepared statement. Bound values are copied (SQLITE_TRANSIENT).
final class SQLiteStatement {
    let handle: OpaquePointer
    unowned let connection: SQLiteConnection

    init(_ handle: OpaquePointer, connection: SQLiteConnection) {
        self.handle = handle
        self.connection = connection
    }

    deinit { sqlite3_finalize(handle) }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    func bind(_ values: [SQLValue], doing what: String) throws {
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(handle, index)
            case .integer(let n): rc = sqlite3_bind_int64(handle, index, n)
            case .real(let d): rc = sqlite3_bind_double(handle, index, d)
            case .text(let s):
                // Length-based: a NUL inside the text is kept, not a terminator.
                rc = s.withCString { csqlite_bind_text(handle, index, $0, Int32(s.utf8.count)) }
            case .blob(let b):
                rc = b.withUnsafeBytes {
                    csqlite_bind_blob(handle, index, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32($0.count))
                }
            }
            guard rc == SQLITE_OK else { throw connection.error(rc, doing: what) }
        }
    }

    /// Advances: `true` when a row is available, `false` when done.
    func step(doing what: String) throws -> Bool {
        let rc = sqlite3_step(handle)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let error = connection.error(rc, doing: what)
            sqlite3_reset(handle)
            throw error
        }
    }

    var columnCount: Int32 { sqlite3_column_count(handle) }

    func columnName(_ i: Int32) -> String { String(cString: sqlite3_column_name(handle, i)) }

    func column(_ i: Int32) -> SQLValue {
        switch sqlite3_column_type(handle, i) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(handle, i))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(handle, i))
        case SQLITE_TEXT:
            guard let p = sqlite3_column_text(handle, i) else { return .text("") }
            let bytes = UnsafeBufferPointer(start: p, count: Int(sqlite3_column_bytes(handle, i)))
            // Only tampering can put invalid UTF-8 here: keep the raw bytes so that the hash check sees them.
            return String(validating: bytes, as: UTF8.self).map { .text($0) } ?? .blob(Array(bytes))
        case SQLITE_BLOB:
            let n = Int(sqlite3_column_bytes(handle, i))
            guard n > 0, let p = sqlite3_column_blob(handle, i) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default: return .null
        }
    }
}

/// `strerror` text for an errno value.
func errnoText(_ code: Int32) -> String {
    if let text = strerror(code) { return String(cString: text) + " (errno \(code))" }
    return "errno \(code)"
}
