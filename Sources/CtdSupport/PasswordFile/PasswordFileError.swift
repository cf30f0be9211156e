/// Everything that can go wrong while reading, parsing, hashing or editing a password file.
///
/// Messages name the file, the line and the user where that helps, but never contain a password or a stored hash.
public struct PasswordFileError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The broad category, for callers that react differently (e.g. the CLI's exit status).
    public enum Kind: Sendable, Equatable {
        /// A line of the file cannot be parsed (see ``PasswordFileError/line``).
        case badLine
        /// A stored hash is not in a supported format.
        case badHash
        /// A user name is empty or contains a forbidden character.
        case invalidUserName
        /// A password cannot be hashed (empty, contains NUL, too long).
        case invalidPassword
        /// Reading or writing the file failed (see ``PasswordFileError/errno``).
        case io
        /// libcrypt or libcrypto failed.
        case crypto
    }

    /// The category.
    public var kind: Kind
    /// One sentence describing the problem.
    public var message: String
    /// The file concerned, when there is one.
    public var path: String?
    /// The 1-based line number, for ``Kind/badLine``.
    public var line: Int?
    /// The `errno` value, for ``Kind/io``.
    public var errno: Int32?

    /// Creates an error.
    public init(kind: Kind, message: String, path: String? = nil, line: Int? = nil, errno: Int32? = nil) {
        self.kind = kind
        self.message = message
        self.path = path
        self.line = line
        self.errno = errno
    }

    /// `path:line: message`, or as much of it as is known.
    public var description: String {
        var prefix = ""
        if let path { prefix = path }
        if let line { prefix += prefix.isEmpty ? "line \(line)" : ":\(line)" }
        return prefix.isEmpty ? message : "\(prefix): \(message)"
    }

    static func io(_ operation: String, path: String, errno code: Int32) -> PasswordFileError {
        PasswordFileError(
            kind: .io, message: "cannot \(operation): \(errnoText(code))", path: path, errno: code)
    }
}
