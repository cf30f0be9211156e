/// One `user:hash` line of a password file.
public struct PasswordFileEntry: Sendable, Equatable {
    /// The user name.
    public var user: String
    /// The stored hash.
    public var hash: PasswordHash
    /// The 1-based line number in the file it was read from (0 for an entry not yet written).
    public var line: Int

    /// The hash format, e.g. for `ctd passwd list`.
    public var scheme: PasswordScheme { hash.scheme }

    /// Creates an entry.
    public init(user: String, hash: PasswordHash, line: Int) {
        self.user = user
        self.hash = hash
        self.line = line
    }
}

/// Rules for user names in a password file.
public enum PasswordUserName {
    /// Longest accepted name, in UTF-8 bytes.
    public static let maximumLength = 256

    /// Checks a user name.
    ///
    /// Refused: the empty name, `:` (the field separator), newlines and every other control character, a leading
    /// `#` (the line would read as a comment), leading or trailing spaces, and names over 256 bytes.
    /// - Throws: ``PasswordFileError`` of kind ``PasswordFileError/Kind/invalidUserName``.
    public static func validate(_ name: String) throws {
        func refuse(_ why: String) -> PasswordFileError {
            PasswordFileError(kind: .invalidUserName, message: "invalid user name: \(why)")
        }
        guard !name.isEmpty else { throw refuse("it is empty") }
        guard !name.unicodeScalars.contains(":") else { throw refuse("it contains ':'") }
        guard !name.unicodeScalars.contains(where: { $0 == "\n" || $0 == "\r" }) else {
            throw refuse("it contains a newline")
        }
        guard !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw refuse("it contains a control character")
        }
        guard !name.hasPrefix("#") else { throw refuse("it starts with '#'") }
        guard name.unicodeScalars.first != " ", name.unicodeScalars.last != " " else {
            throw refuse("it starts or ends with a space")
        }
        guard name.utf8.count <= maximumLength else { throw refuse("it is longer than \(maximumLength) bytes") }
    }

    /// `true` when ``validate(_:)`` accepts the name.
    public static func isValid(_ name: String) -> Bool { (try? validate(name)) != nil }
}

/// A whole password file: its entries plus every other line (comments, blank lines) kept verbatim, so that
/// editing one user rewrites that line only.
///
/// Format, one record per line:
/// ```
/// # comment            (first non-blank character '#')
/// alice:$y$j9T$…       user ':' hash
/// bob:{SHA}5en6G6…:x   htpasswd style: anything after a second ':' is ignored (and kept)
/// ```
/// Blank lines are ignored; CRLF line ends are accepted; spaces and tabs around the hash are ignored.
/// A user may appear once only. See ``PasswordScheme`` for the hash formats.
public struct PasswordFileDocument: Sendable, Equatable {
    enum Line: Sendable, Equatable {
        /// A comment or blank line, exactly as read (without the "\n").
        case verbatim(String)
        /// An entry; `raw` is the original text (nil once edited), `trailer` anything after a second ':'.
        case entry(user: String, hash: PasswordHash, trailer: String, raw: String?)
    }

    var lines: [Line]

    /// An empty file.
    public init() { lines = [] }

    /// Parses the text of a password file.
    /// - Parameters:
    ///   - text: the file's content.
    ///   - path: the file name used in error messages.
    /// - Throws: ``PasswordFileError`` of kind ``PasswordFileError/Kind/badLine`` with ``PasswordFileError/line``
    ///   set, for the first bad line.
    public init(parsing text: String, path: String? = nil) throws {
        try self.init(parsing: Array(text.utf8), path: path)
    }

    /// Parses a file's bytes. Lines are split on LF bytes (a CR before it is ignored); each line must be valid
    /// UTF-8. Work is done on bytes, not on `Character`s: Swift treats "\r\n" as one character, and some
    /// characters (e.g. U+0600) would merge with a following ':'.
    /// - Throws: ``PasswordFileError`` of kind ``PasswordFileError/Kind/badLine`` with the line number.
    public init(parsing bytes: [UInt8], path: String? = nil) throws {
        lines = []
        var seen: [String: Int] = [:]
        var rawLines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        if bytes.last == UInt8(ascii: "\n") { rawLines.removeLast() }
        let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t"), colon = UInt8(ascii: ":")
        for (index, rawBytes) in rawLines.enumerated() {
            let number = index + 1
            func bad(_ message: String) -> PasswordFileError {
                PasswordFileError(kind: .badLine, message: message, path: path, line: number)
            }
            guard let raw = String(validating: rawBytes, as: UTF8.self) else { throw bad("not valid UTF-8") }
            let content = rawBytes.last == UInt8(ascii: "\r") ? rawBytes.dropLast() : rawBytes
            let leading = content.drop(while: { $0 == space || $0 == tab })
            if leading.isEmpty || leading.first == UInt8(ascii: "#") {
                lines.append(.verbatim(raw))
                continue
            }
            guard let firstColon = content.firstIndex(of: colon) else {
                throw bad("expected 'user:hash'")
            }
            let user = String(decoding: content[..<firstColon], as: UTF8.self)
            let rest = content[(firstColon + 1)...]
            let hashField: ArraySlice<UInt8>
            let trailer: String
            if let second = rest.firstIndex(of: colon) {
                hashField = rest[..<second]
                trailer = String(decoding: rest[second...], as: UTF8.self)
            } else {
                hashField = rest
                trailer = ""
            }
            do {
                try PasswordUserName.validate(user)
            } catch let error as PasswordFileError {
                throw bad(error.message)
            }
            if let first = seen[user] {
                throw bad("duplicate user '\(user)' (first on line \(first))")
            }
            var trimmed = hashField.drop(while: { $0 == space || $0 == tab })
            while let last = trimmed.last, last == space || last == tab { trimmed = trimmed.dropLast() }
            let hash: PasswordHash
            do {
                hash = try PasswordHash(String(decoding: trimmed, as: UTF8.self))
            } catch let error as PasswordFileError {
                throw bad("user '\(user)': \(error.message)")
            }
            seen[user] = number
            lines.append(.entry(user: user, hash: hash, trailer: trailer, raw: raw))
        }
    }

    /// The entries, in file order, with their line numbers.
    public var entries: [PasswordFileEntry] {
        var result: [PasswordFileEntry] = []
        for (index, line) in lines.enumerated() {
            if case .entry(let user, let hash, _, _) = line {
                result.append(PasswordFileEntry(user: user, hash: hash, line: index + 1))
            }
        }
        return result
    }

    /// The entry for `user`, if any.
    public func entry(for user: String) -> PasswordFileEntry? {
        entries.first { $0.user == user }
    }

    /// Adds `user` at the end, or replaces the hash of an existing `user` in place (keeping anything after a
    /// second ':' on that line).
    /// - Returns: `true` when an existing entry was replaced.
    /// - Throws: ``PasswordFileError`` when the user name is invalid.
    @discardableResult
    public mutating func setHash(_ hash: PasswordHash, for user: String) throws -> Bool {
        try PasswordUserName.validate(user)
        for (index, line) in lines.enumerated() {
            if case .entry(user, _, let trailer, _) = line {
                lines[index] = .entry(user: user, hash: hash, trailer: trailer, raw: nil)
                return true
            }
        }
        lines.append(.entry(user: user, hash: hash, trailer: "", raw: nil))
        return false
    }

    /// Removes `user`'s line.
    /// - Returns: `true` when the user was present.
    @discardableResult
    public mutating func removeUser(_ user: String) -> Bool {
        guard
            let index = lines.firstIndex(where: {
                if case .entry(user, _, _, _) = $0 { return true }
                return false
            })
        else { return false }
        lines.remove(at: index)
        return true
    }

    /// The file's text: untouched lines byte for byte, edited lines as `user:hash`, always ending in a newline
    /// (unless empty).
    public var text: String {
        var out = ""
        for line in lines {
            switch line {
            case .verbatim(let raw): out += raw
            case .entry(_, _, _, let raw?): out += raw
            case .entry(let user, let hash, let trailer, nil): out += "\(user):\(hash.encoded)\(trailer)"
            }
            out += "\n"
        }
        return out
    }
}
