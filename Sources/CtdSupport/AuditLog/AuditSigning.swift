import CCrypt
import Foundation

/// An Ed25519 key pair that signs the audit trail's checkpoints (docs/audit.md, "Signed checkpoints").
///
/// Files: the private key is one line `ctd-audit-ed25519-private <64 hex digits>` in a file of mode 0600 (created
/// with `O_EXCL`, refused when group or others may read it); the public key one line
/// `ctd-audit-ed25519-public <64 hex digits>`, as `ctd audit pubkey` prints it.
public struct AuditSigningKey: Sendable {
    static let privateTag = "ctd-audit-ed25519-private"
    static let publicTag = "ctd-audit-ed25519-public"

    private let secret: [UInt8]
    /// The raw 32-byte public key.
    public let publicKey: [UInt8]

    /// The public key as its file line.
    public var publicKeyLine: String { "\(Self.publicTag) \(AuditSigningKey.hex(publicKey))" }
    public var publicKeyHex: String { Self.hex(publicKey) }

    init(secret: [UInt8]) throws {
        var pub = [UInt8](repeating: 0, count: 32)
        guard secret.count == 32, ccrypt_ed25519_public(secret, &pub) == CCRYPT_OK else {
            throw AuditError.invalidArgument("the audit signing key is not a valid Ed25519 private key")
        }
        self.secret = secret
        self.publicKey = pub
    }

    /// Loads the private key at `path`, or generates one there (mode 0600, parent directory 0700) when the file does
    /// not exist.
    public static func loadOrCreate(path: String) throws -> AuditSigningKey {
        if FileManager.default.fileExists(atPath: path) { return try load(path: path) }
        var secret = [UInt8](repeating: 0, count: 32)
        var pub = [UInt8](repeating: 0, count: 32)
        guard ccrypt_ed25519_generate(&secret, &pub) == CCRYPT_OK else {
            throw AuditError.invalidArgument("OpenSSL could not generate an Ed25519 key")
        }
        let directory = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw AuditError.invalidArgument(
                "cannot create the audit signing key \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var line = Array("\(privateTag) \(hex(secret))\n".utf8)
        defer { ccrypt_wipe(&line, line.count) }
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == line.count, fsync(fd) == 0 else {
            throw AuditError.invalidArgument("cannot write the audit signing key \(path)")
        }
        return try AuditSigningKey(secret: secret)
    }

    /// Loads an existing private key; refuses a file group or others may read or write.
    public static func load(path: String) throws -> AuditSigningKey {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw AuditError.invalidArgument(
                "cannot read the audit signing key \(path): \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & 0o077 == 0 else {
            throw AuditError.invalidArgument(
                "the audit signing key \(path) may be read by group or others (mode \(String(st.st_mode & 0o777, radix: 8))); chmod 600 it"
            )
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw AuditError.invalidArgument("cannot read the audit signing key \(path)")
        }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard parts.count == 2, parts[0] == privateTag, let secret = unhex(String(parts[1])), secret.count == 32 else {
            throw AuditError.invalidArgument("\(path) is not a ctd audit signing key (\(privateTag) <64 hex digits>)")
        }
        return try AuditSigningKey(secret: secret)
    }

    /// Reads a public key file (`ctd audit pubkey`'s line) or a bare 64-hex-digit key.
    public static func loadPublicKey(path: String) throws -> [UInt8] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw AuditError.invalidArgument("cannot read the public key file \(path)")
        }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        let hexPart: Substring?
        if parts.count == 2 && parts[0] == publicTag {
            hexPart = parts[1]
        } else if parts.count == 1 {
            hexPart = parts[0]
        } else {
            hexPart = nil
        }
        guard let hexPart, let key = unhex(String(hexPart)), key.count == 32 else {
            throw AuditError.invalidArgument("\(path) is not a ctd audit public key (\(publicTag) <64 hex digits>)")
        }
        return key
    }

    func sign(_ message: [UInt8]) throws -> [UInt8] {
        var signature = [UInt8](repeating: 0, count: 64)
        guard ccrypt_ed25519_sign(secret, message, message.count, &signature) == CCRYPT_OK else {
            throw AuditError.invalidArgument("OpenSSL refused to sign an audit checkpoint")
        }
        return signature
    }

    static func verify(publicKey: [UInt8], message: [UInt8], signature: [UInt8]) -> Bool {
        guard publicKey.count == 32, signature.count == 64 else { return false }
        return ccrypt_ed25519_verify(publicKey, message, message.count, signature) == 1
    }

    static func hex(_ bytes: [UInt8]) -> String {
        String(
            bytes.flatMap { [AuditChain.hexDigits[Int($0 >> 4)], AuditChain.hexDigits[Int($0 & 0xF)]] }.map {
                Character(Unicode.Scalar($0))
            })
    }

    static func unhex(_ s: String) -> [UInt8]? {
        let u = Array(s.utf8)
        guard u.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let hi = nibble(u[i]), let lo = nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}

/// One signed checkpoint: the chain's head at a moment, numbered 1, 2, 3... without gaps.
public struct AuditCheckpoint: Sendable, Equatable, CustomStringConvertible {
    public var number: Int64
    public var timeMilliseconds: Int64
    /// `periodic`, `shutdown`, `open` or `prune`.
    public var kind: String
    public var headSeq: Int64
    public var headHash: String
    public var publicKey: String
    public var signature: String

    /// The bytes signed: every field but the signature, in a fixed text form.
    var message: [UInt8] {
        Array(
            ("ctd-audit-checkpoint-1\nnumber=\(number)\ntime_ms=\(timeMilliseconds)\nkind=\(kind)\n"
                + "head_seq=\(headSeq)\nhead_hash=\(headHash)\npublic_key=\(publicKey)\n").utf8)
    }

    /// The line sent to the log, which an admin keeps as the anchor `verify --expect-checkpoint` takes.
    public var description: String {
        "audit checkpoint \(number) (\(kind)): head seq \(headSeq) hash \(headHash) signature \(signature)"
    }
}
