#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// File-level helpers behind `ctd passwd add|remove|list USER --file F`.
///
/// Every change rewrites the file atomically (temporary file in the same directory, fsync, rename, fsync of the
/// directory): a concurrent reader such as a running daemon sees the old or the new file, never half of one.
/// Comments, blank lines and other users' lines are kept byte for byte. A file with a bad line is not edited:
/// the error names the line so that it can be fixed first. Two editors running at the same moment are not
/// serialised: the last rename wins.
public enum PasswordFileEditor {
    /// What ``addOrReplace(user:password:scheme:path:)`` did.
    public enum Change: String, Sendable, Equatable {
        /// The user was new and has been appended.
        case added
        /// The user existed; the hash has been replaced on the same line.
        case replaced
    }

    /// Reads and parses the file at `path`.
    /// - Throws: ``PasswordFileError`` (I/O or a bad line, with its number).
    public static func read(path: String) throws -> PasswordFileDocument {
        let (bytes, _) = try FileIO.readFile(path: path)
        return try PasswordFileDocument(parsing: bytes, path: path)
    }

    /// Hashes `password` and stores it for `user`, creating the file (mode 0600) if it does not exist.
    /// - Parameters:
    ///   - user: the user name (see ``PasswordUserName/validate(_:)``).
    ///   - password: the new password; never logged nor stored in clear.
    ///   - scheme: yescrypt (default) or SHA-512-crypt.
    ///   - path: the password file.
    /// - Returns: whether the user was added or replaced.
    @discardableResult
    public static func addOrReplace(
        user: String, password: String, scheme: NewPasswordScheme = .yescrypt, path: String
    ) throws -> Change {
        try PasswordUserName.validate(user)
        let hash = try PasswordHash(PasswordHash.hashNew(password: password, scheme: scheme))
        return try addOrReplace(user: user, hash: hash, path: path)
    }

    /// Stores a ready-made hash for `user` (e.g. the output of `openssl passwd -6`), creating the file (mode
    /// 0600) if it does not exist.
    /// - Returns: whether the user was added or replaced.
    @discardableResult
    public static func addOrReplace(user: String, hash: PasswordHash, path: String) throws -> Change {
        try PasswordUserName.validate(user)
        var document = try readOrEmpty(path: path)
        let replaced = try document.setHash(hash, for: user)
        try write(document, to: path)
        return replaced ? .replaced : .added
    }

    /// Removes `user` from the file.
    /// - Returns: `true` when the user was there (the file is rewritten only then).
    @discardableResult
    public static func remove(user: String, path: String) throws -> Bool {
        var document = try read(path: path)
        guard document.removeUser(user) else { return false }
        try write(document, to: path)
        return true
    }

    /// The users of the file with their hash schemes, in file order.
    public static func list(path: String) throws -> [PasswordFileEntry] {
        try read(path: path).entries
    }

    /// Writes `document` to `path` atomically. New files get mode 0600; an existing file keeps its owner, group
    /// and permissions except any access for "others".
    public static func write(_ document: PasswordFileDocument, to path: String) throws {
        try FileIO.writeAtomically(Array(document.text.utf8), to: path)
    }

    private static func readOrEmpty(path: String) throws -> PasswordFileDocument {
        do {
            return try read(path: path)
        } catch let error as PasswordFileError where error.kind == .io && error.errno == ENOENT {
            return PasswordFileDocument()
        }
    }
}
