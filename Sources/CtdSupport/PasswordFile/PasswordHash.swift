import CCrypt

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The hash formats a password file may contain.
public enum PasswordScheme: String, Sendable, CaseIterable, Hashable {
    /// `$y$…`: yescrypt (libxcrypt's default, `mkpasswd -m yescrypt`).
    case yescrypt
    /// `$6$…`: SHA-512-crypt (`openssl passwd -6`, `mkpasswd -m sha-512`).
    case sha512Crypt = "sha512-crypt"
    /// `$5$…`: SHA-256-crypt (`openssl passwd -5`, `mkpasswd -m sha-256`).
    case sha256Crypt = "sha256-crypt"
    /// `$2b$…` or `$2y$…`: bcrypt (`htpasswd -B`, `mkpasswd -m bcrypt`).
    case bcrypt
    /// `{SHA}` + base64 of the SHA-1 digest (`htpasswd -s`). Unsalted: legacy.
    case htpasswdSHA1 = "htpasswd-sha1"
    /// 40 hex digits: SHA-1 of the password, as pyctd's auth_sha.py stored it. Unsalted: legacy.
    case hexSHA1 = "sha1-hex"
    /// 64 hex digits: SHA-256 of the password (pyctd). Unsalted: legacy.
    case hexSHA256 = "sha256-hex"
    /// 128 hex digits: SHA-512 of the password (pyctd). Unsalted: legacy.
    case hexSHA512 = "sha512-hex"

    /// The name shown by `ctd passwd list` and in logs.
    public var name: String { rawValue }

    /// `true` for unsalted, fast digests: accepted for compatibility, but they should be replaced.
    public var isLegacy: Bool {
        switch self {
        case .yescrypt, .sha512Crypt, .sha256Crypt, .bcrypt: return false
        case .htpasswdSHA1, .hexSHA1, .hexSHA256, .hexSHA512: return true
        }
    }

    /// `true` for the formats verified with `crypt_r`.
    var isCrypt: Bool { !isLegacy }

    var digestAlgorithm: Int32? {
        switch self {
        case .htpasswdSHA1, .hexSHA1: return Int32(CCRYPT_SHA1.rawValue)
        case .hexSHA256: return Int32(CCRYPT_SHA256.rawValue)
        case .hexSHA512: return Int32(CCRYPT_SHA512.rawValue)
        default: return nil
        }
    }
}

/// The schemes ``PasswordHash/hashNew(password:scheme:)`` can produce.
public enum NewPasswordScheme: String, Sendable, CaseIterable, Hashable {
    /// yescrypt with libxcrypt's default cost (the default).
    case yescrypt
    /// SHA-512-crypt with libxcrypt's default rounds, for systems that must also read the file with older tools.
    case sha512Crypt = "sha512-crypt"

    /// The crypt prefix passed to `crypt_gensalt_rn`.
    var prefix: String {
        switch self {
        case .yescrypt: return "$y$"
        case .sha512Crypt: return "$6$"
        }
    }

    /// The matching stored scheme.
    public var scheme: PasswordScheme {
        switch self {
        case .yescrypt: return .yescrypt
        case .sha512Crypt: return .sha512Crypt
        }
    }
}

/// A stored password hash, parsed and checked for shape, ready to verify passwords against.
///
/// `description` never shows the hash itself, so that logging a value by mistake leaks nothing.
public struct PasswordHash: Sendable, Equatable, CustomStringConvertible {
    /// The format.
    public let scheme: PasswordScheme
    /// The hash exactly as stored in the file.
    public let encoded: String
    /// For the digest formats: the raw digest bytes; empty for crypt formats.
    let digest: [UInt8]

    /// Parses a stored hash.
    /// - Parameter encoded: the hash field of a password-file line.
    /// - Throws: ``PasswordFileError`` of kind ``PasswordFileError/Kind/badHash`` naming what is wrong (never
    ///   echoing the hash).
    public init(_ encoded: String) throws {
        let (scheme, digest) = try PasswordHash.classify(encoded)
        self.scheme = scheme
        self.encoded = encoded
        self.digest = digest
    }

    private init(scheme: PasswordScheme, encoded: String, digest: [UInt8]) {
        self.scheme = scheme
        self.encoded = encoded
        self.digest = digest
    }

    // MARK: Cost and dummies

    /// Hashes in the same cost class take the same work to verify: same scheme and same cost parameters
    /// (yescrypt parameters, SHA-crypt rounds, bcrypt cost; digests have no parameters).
    var costClass: String {
        guard scheme.isCrypt else { return scheme == .hexSHA256 || scheme == .hexSHA512 ? scheme.name : "sha1" }
        let fields = encoded.split(separator: "$", omittingEmptySubsequences: false)
        switch scheme {
        case .yescrypt, .bcrypt:
            return "\(scheme.name):\(fields[2])"
        default:
            return fields[2].hasPrefix("rounds=") ? "\(scheme.name):\(fields[2])" : "\(scheme.name):default"
        }
    }

    /// A hash that costs exactly as much to verify as `self` but that no password is known for: for crypt
    /// formats, a random password hashed with `self`'s setting (same parameters, same salt); for digests, random
    /// digest bytes. Used for unknown users.
    func makeDummy() throws -> PasswordHash {
        var random = SystemRandomNumberGenerator()
        if !scheme.isCrypt {
            let size = digest.count
            return PasswordHash(
                scheme: scheme == .htpasswdSHA1 ? .hexSHA1 : scheme, encoded: "",
                digest: (0..<size).map { _ in random.next() })
        }
        var input = Array(
            (0..<4).map { _ in String(random.next() as UInt64, radix: 36) }.joined(separator: "-").utf8CString)
        defer { wipe(&input) }
        var output = [CChar](repeating: 0, count: Int(CCRYPT_OUTPUT_SIZE))
        let rc = encoded.withCString { ccrypt_hash(input, $0, &output, output.count) }
        guard rc == CCRYPT_OK else {
            throw PasswordFileError(kind: .crypto, message: "crypt_r failed making a dummy \(scheme.name) hash")
        }
        let dummy = try PasswordHash(String(cString: output))
        guard dummy.costClass == costClass else {
            throw PasswordFileError(kind: .crypto, message: "crypt_r changed the parameters of a \(scheme.name) hash")
        }
        return dummy
    }

    /// `<scheme hash>`; never the hash.
    public var description: String { "<\(scheme.name) hash>" }

    // MARK: Verification

    /// Checks `password` against this hash. The computed and stored values are compared in constant time.
    /// - Returns: `true` when the password matches. A password containing a NUL character never matches.
    public func verify(password: String) -> Bool {
        PasswordHash.verify(password: password, against: self)
    }

    /// Checks `password` against `hash`. The computed and stored values are compared in constant time.
    /// - Returns: `true` when the password matches. A password containing a NUL character never matches (the
    ///   work is still done).
    public static func verify(password: String, against hash: PasswordHash) -> Bool {
        var phrase = Array(password.utf8)
        defer { wipe(&phrase) }
        let hasNUL = phrase.contains(0)
        let matches: Bool
        if let algorithm = hash.scheme.digestAlgorithm {
            matches = verifyDigest(phrase, algorithm: algorithm, expected: hash.digest)
        } else {
            matches = verifyCrypt(phrase, setting: hash.encoded)
        }
        return matches && !hasNUL
    }

    /// Parses `encoded` and checks `password` against it; a malformed hash never matches.
    public static func verify(password: String, against encoded: String) -> Bool {
        guard let hash = try? PasswordHash(encoded) else { return false }
        return verify(password: password, against: hash)
    }

    private static func verifyDigest(_ phrase: [UInt8], algorithm: Int32, expected: [UInt8]) -> Bool {
        var computed = [UInt8](repeating: 0, count: Int(CCRYPT_MAX_DIGEST_SIZE))
        defer { wipe(&computed) }
        let size = ccrypt_digest_size(algorithm)
        let rc = phrase.withUnsafeBytes { p in
            ccrypt_digest(algorithm, p.baseAddress, p.count, &computed, computed.count)
        }
        guard rc == CCRYPT_OK, size == expected.count else { return false }
        return ccrypt_equal(computed, expected, size) == 1
    }

    private static func verifyCrypt(_ phrase: [UInt8], setting: String) -> Bool {
        var input = phrase.map { CChar(bitPattern: $0) }
        input.append(0)
        defer { wipe(&input) }
        var output = [CChar](repeating: 0, count: Int(CCRYPT_OUTPUT_SIZE))
        defer { wipe(&output) }
        let stored = Array(setting.utf8)
        let rc = setting.withCString { ccrypt_hash(input, $0, &output, output.count) }
        guard rc == CCRYPT_OK else { return false }
        let length = strlen(output)
        guard length == stored.count else {
            // Different lengths cannot match; compare anyway so both paths cost about the same.
            _ = ccrypt_equal(stored, stored, stored.count)
            return false
        }
        return output.withUnsafeBytes { ccrypt_equal($0.baseAddress, stored, stored.count) } == 1
    }

    // MARK: New hashes

    /// Hashes a new password with a fresh random salt (entropy from the kernel, via libxcrypt).
    /// - Parameters:
    ///   - password: the new password; must not be empty, contain NUL, or exceed 511 bytes.
    ///   - scheme: yescrypt (default) or SHA-512-crypt, each at libxcrypt's default cost.
    /// - Returns: the crypt string to store, e.g. `$y$j9T$…`.
    /// - Throws: ``PasswordFileError`` (``PasswordFileError/Kind/invalidPassword`` or ``PasswordFileError/Kind/crypto``).
    public static func hashNew(password: String, scheme: NewPasswordScheme = .yescrypt) throws -> String {
        var phrase = Array(password.utf8)
        defer { wipe(&phrase) }
        guard !phrase.isEmpty else {
            throw PasswordFileError(kind: .invalidPassword, message: "the password is empty")
        }
        guard !phrase.contains(0) else {
            throw PasswordFileError(kind: .invalidPassword, message: "the password contains a NUL character")
        }
        guard phrase.count < 512 else {
            throw PasswordFileError(kind: .invalidPassword, message: "the password is longer than 511 bytes")
        }
        var setting = [CChar](repeating: 0, count: Int(CCRYPT_SETTING_SIZE))
        let grc = ccrypt_gensalt(scheme.prefix, 0, &setting, setting.count)
        guard grc == CCRYPT_OK else {
            throw PasswordFileError(kind: .crypto, message: "crypt_gensalt_rn failed for \(scheme.rawValue)")
        }
        var input = phrase.map { CChar(bitPattern: $0) }
        input.append(0)
        defer { wipe(&input) }
        var output = [CChar](repeating: 0, count: Int(CCRYPT_OUTPUT_SIZE))
        defer { wipe(&output) }
        let hrc = ccrypt_hash(input, setting, &output, output.count)
        guard hrc == CCRYPT_OK else {
            throw PasswordFileError(kind: .crypto, message: "crypt_r failed for \(scheme.rawValue)")
        }
        let result = String(cString: output)
        // Defensive: the result must be something we can read back.
        guard let parsed = try? PasswordHash(result), parsed.scheme == scheme.scheme else {
            throw PasswordFileError(kind: .crypto, message: "crypt_r returned an unexpected \(scheme.rawValue) hash")
        }
        return result
    }

    // MARK: Parsing

    private static let cryptAlphabet = Set("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    private static func bad(_ message: String) -> PasswordFileError {
        PasswordFileError(kind: .badHash, message: message)
    }

    static func classify(_ text: String) throws -> (PasswordScheme, [UInt8]) {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { throw bad("the hash is empty") }
        if text.hasPrefix("$") { return (try classifyCrypt(text), []) }
        if text.hasPrefix("{SHA}") {
            guard let digest = Base64.decode(bytes.dropFirst(5)), digest.count == 20 else {
                throw bad("{SHA} hash is not the base64 of a 20-byte SHA-1 digest")
            }
            return (.htpasswdSHA1, digest)
        }
        if text.hasPrefix("{") {
            throw bad("unsupported {…} hash scheme (only htpasswd {SHA} is supported)")
        }
        if let digest = Hex.decode(bytes) {
            switch digest.count {
            case 20: return (.hexSHA1, digest)
            case 32: return (.hexSHA256, digest)
            case 64: return (.hexSHA512, digest)
            default:
                throw bad("a hex digest must have 40 (SHA-1), 64 (SHA-256) or 128 (SHA-512) digits, not \(bytes.count)")
            }
        }
        if bytes.count == 13 || bytes.count == 20 {
            throw bad("DES crypt hashes are not supported (too weak); re-hash the password")
        }
        throw bad("unrecognised hash format (expected $y$, $6$, $5$, $2b$/$2y$, {SHA} or a hex SHA digest)")
    }

    private static func classifyCrypt(_ text: String) throws -> PasswordScheme {
        // Fields: "", id, [params...], salt, hash
        let fields = text.split(separator: "$", omittingEmptySubsequences: false).map(String.init)
        guard fields.count >= 2 else { throw bad("malformed crypt hash") }
        let scheme: PasswordScheme
        switch fields[1] {
        case "y":
            // $y$params$salt$hash
            guard fields.count == 5, !fields[2].isEmpty, !fields[3].isEmpty, fields[4].utf8.count == 43 else {
                throw bad("malformed or truncated yescrypt hash")
            }
            try checkAlphabet(fields[2...4], "yescrypt")
            scheme = .yescrypt
        case "6", "5":
            // $6$[rounds=N$]salt$hash
            let hashLength = fields[1] == "6" ? 86 : 43
            let name = fields[1] == "6" ? "SHA-512-crypt" : "SHA-256-crypt"
            var rest = Array(fields.dropFirst(2))
            if let first = rest.first, first.hasPrefix("rounds=") {
                guard rest.count == 3, let rounds = Int(first.dropFirst(7)), rounds > 0 else {
                    throw bad("malformed rounds= in \(name) hash")
                }
                rest.removeFirst()
            }
            guard rest.count == 2, rest[0].utf8.count <= 16, rest[1].utf8.count == hashLength else {
                throw bad("malformed or truncated \(name) hash")
            }
            try checkAlphabet(rest[...], name)
            scheme = fields[1] == "6" ? .sha512Crypt : .sha256Crypt
        case "2b", "2y":
            // $2y$NN$<53 chars>
            guard fields.count == 4, fields[2].utf8.count == 2, let cost = Int(fields[2]), (4...31).contains(cost),
                fields[3].utf8.count == 53
            else { throw bad("malformed or truncated bcrypt hash") }
            try checkAlphabet(fields[3...3], "bcrypt")
            scheme = .bcrypt
        case "1", "apr1", "md5":
            throw bad("MD5-based hashes ($\(fields[1])$) are not supported (too weak); re-hash the password")
        default:
            throw bad("unsupported crypt scheme $\(fields[1].prefix(8))$ (expected $y$, $6$, $5$, $2b$ or $2y$)")
        }
        // 0 = OK, 3 = "legacy" (libxcrypt's label for methods outside its strong default set, e.g. $5$);
        // 1 = invalid, 2 = disabled in this build.
        let check = text.withCString { ccrypt_checksalt($0) }
        guard check == 0 || check == 3 else {
            throw bad("libcrypt rejects this \(scheme.name) hash (crypt_checksalt \(check))")
        }
        return scheme
    }

    private static func checkAlphabet(_ fields: ArraySlice<String>, _ name: String) throws {
        for field in fields where !field.utf8.allSatisfy(cryptAlphabet.contains) {
            throw bad("invalid character in \(name) hash")
        }
    }
}

/// Overwrites an array's bytes before it is released.
@inline(never)
func wipe<T>(_ array: inout [T]) {
    array.withUnsafeMutableBytes { ccrypt_wipe($0.baseAddress, $0.count) }
}

enum Hex {
    /// Decodes an even-length string of hex digits (either case); `nil` if anything else.
    static func decode(_ bytes: [UInt8]) -> [UInt8]? {
        guard !bytes.isEmpty, bytes.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(bytes.count / 2)
        var i = 0
        while i < bytes.count {
            guard let hi = value(bytes[i]), let lo = value(bytes[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

enum Base64 {
    /// Strict standard base64 (RFC 4648 alphabet, `=` padding required); `nil` on any deviation.
    static func decode<C: Collection>(_ input: C) -> [UInt8]? where C.Element == UInt8 {
        let bytes = Array(input)
        guard !bytes.isEmpty, bytes.count % 4 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(bytes.count / 4 * 3)
        var index = 0
        while index < bytes.count {
            let isLast = index + 4 == bytes.count
            var quad: [UInt32] = []
            var padding = 0
            for offset in 0..<4 {
                let c = bytes[index + offset]
                if c == UInt8(ascii: "=") {
                    guard isLast, offset >= 2 else { return nil }
                    padding += 1
                    quad.append(0)
                } else {
                    guard padding == 0, let v = value(c) else { return nil }
                    quad.append(UInt32(v))
                }
            }
            let n = quad[0] << 18 | quad[1] << 12 | quad[2] << 6 | quad[3]
            out.append(UInt8(truncatingIfNeeded: n >> 16))
            if padding < 2 { out.append(UInt8(truncatingIfNeeded: n >> 8)) }
            if padding < 1 { out.append(UInt8(truncatingIfNeeded: n)) }
            index += 4
        }
        return out
    }

    private static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return nil
        }
    }
}
