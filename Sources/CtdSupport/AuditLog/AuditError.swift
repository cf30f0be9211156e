/// Everything that can go wrong with an audit database: opening, migrating, writing, reading.
///
/// Messages name the database file and carry SQLite's own explanation (and the `errno` behind an I/O error), so
/// that an administrator can act on them; they never contain audited data.
public struct AuditError: Error, Sendable, Equatable, CustomStringConvertible {
    enum Code: Sendable, Equatable {
        /// The file does not exist and the caller did not ask to create it.
        case missingDatabase
        /// The file cannot be opened or is not an audit database of a version this code understands.
        case unusableDatabase
        /// Another connection held the write lock for longer than the busy timeout.
        case busy
        /// The file system refused the write: read-only file or directory, immutable file, disk full, I/O error.
        case writeRefused
        /// Reading failed (corruption, I/O error).
        case readFailed
        /// The store was closed.
        case closed
        /// A caller passed something meaningless (a bad filter, an unknown format).
        case invalidArgument
    }

    let code: Code
    /// One sentence (or two) saying what went wrong.
    public let message: String
    /// SQLite's extended result code, when SQLite reported the problem.
    public let sqliteCode: Int32?

    init(_ code: Code, _ message: String, sqliteCode: Int32? = nil) {
        self.code = code
        self.message = message
        self.sqliteCode = sqliteCode
    }

    /// The message.
    public var description: String { message }

    /// Whether the error says the database file does not exist (the CLI words this differently).
    public var isMissingDatabase: Bool { code == .missingDatabase }

    /// Whether the write lock could not be taken within the busy timeout.
    public var isBusy: Bool { code == .busy }

    /// Whether the file system refused a write (read-only, immutable, full, I/O error).
    public var isWriteRefused: Bool { code == .writeRefused }

    static func missingDatabase(_ path: String) -> AuditError {
        AuditError(.missingDatabase, "the audit database \(path) does not exist")
    }

    static func unusable(_ path: String, _ why: String, sqliteCode: Int32? = nil) -> AuditError {
        AuditError(.unusableDatabase, "cannot use the audit database \(path): \(why)", sqliteCode: sqliteCode)
    }

    static func closed(_ path: String) -> AuditError {
        AuditError(.closed, "the audit database \(path) is closed")
    }

    static func invalidArgument(_ why: String) -> AuditError {
        AuditError(.invalidArgument, why)
    }
}
