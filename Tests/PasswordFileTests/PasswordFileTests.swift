// Tests of the PasswordFile module (used by the AuthSHA plugin and `ctd passwd`).
//
// Fixtures are produced at test time by the real tools, so that the formats are the ones administrators get:
// `openssl passwd -6` (openssl), `mkpasswd -m yescrypt|sha-256` (Debian package whois), `htpasswd -s|-B`
// (apache2-utils). A missing tool fails the test with the package to install.
import Foundation
import Testing

@testable import PasswordFile

// MARK: - Helpers

private enum Tool {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs a tool found on PATH and returns its standard output.
    static func run(_ name: String, _ arguments: [String], stdin: String? = nil, package: String) throws -> String {
        let searchPath = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let directories = searchPath.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/sbin"]
        guard
            let executable = directories.map({ "\($0)/\(name)" })
                .first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else {
            throw Failure(description: "'\(name)' not found: apt-get install -y \(package)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        let input = Pipe()
        process.standardOutput = output
        process.standardInput = input
        process.standardError = FileHandle.nullDevice
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "\(name) \(arguments.first ?? "") exited with \(process.terminationStatus)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The first line of a tool's output, without the newline.
    static func line(_ name: String, _ arguments: [String], stdin: String? = nil, package: String) throws -> String {
        let out = try run(name, arguments, stdin: stdin, package: package)
        return String(out.split(separator: "\n", omittingEmptySubsequences: true).first ?? "")
    }

    static func opensslSha512Crypt(_ password: String) throws -> String {
        try line("openssl", ["passwd", "-6", "-stdin"], stdin: password + "\n", package: "openssl")
    }

    static func mkpasswd(_ method: String, _ password: String) throws -> String {
        try line("mkpasswd", ["-m", method, "--stdin"], stdin: password + "\n", package: "whois")
    }

    /// `user:{SHA}…` exactly as htpasswd writes it.
    static func htpasswdSHA(_ user: String, _ password: String) throws -> String {
        try line("htpasswd", ["-nbs", user, password], package: "apache2-utils")
    }

    /// `user:$2y$…` exactly as htpasswd writes it.
    static func htpasswdBcrypt(_ user: String, _ password: String) throws -> String {
        try line("htpasswd", ["-nbB", user, password], package: "apache2-utils")
    }

    /// Hex digest of the password as pyctd stored it (`openssl dgst -sha1|-sha256|-sha512`).
    static func hexDigest(_ algorithm: String, _ password: String) throws -> String {
        let out = try line("openssl", ["dgst", "-\(algorithm)", "-r"], stdin: password, package: "openssl")
        return String(out.split(separator: " ").first ?? "")
    }
}

/// A scratch directory, removed at the end of the test.
private final class TempDir {
    let path: String

    init() throws {
        let base = FileManager.default.temporaryDirectory.path
        path = "\(base)/pwfile-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String = "ctd.passwd") -> String { "\(path)/\(name)" }

    @discardableResult
    func write(_ text: String, to name: String = "ctd.passwd") throws -> String {
        let target = file(name)
        try Data(text.utf8).write(to: URL(fileURLWithPath: target))
        return target
    }

    func read(_ name: String = "ctd.passwd") throws -> String {
        String(decoding: try Data(contentsOf: URL(fileURLWithPath: file(name))), as: UTF8.self)
    }

    func listing() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: path).sorted() }
}

private func fileStat(_ path: String) -> stat {
    var st = stat()
    _ = stat(path, &st)
    return st
}

/// A password with a space and non-ASCII characters, so that every tool and the verifier must agree on UTF-8.
private let goodPassword = "correct horse ⚡ bätterie"
private let wrongPassword = "correct horse ⚡ batterie"

/// Loads `line` into a store and checks: the good password is accepted with `scheme`, a wrong one is rejected,
/// an unknown user is rejected as unknown.
private func checkStore(line: String, user: String, scheme: PasswordScheme) throws {
    let dir = try TempDir()
    let path = try dir.write("# fixture\n\(line)\n")
    let store = try PasswordStore(path: path)
    #expect(try store.verify(user: user, password: goodPassword) == .accepted(scheme: scheme))
    #expect(try store.verify(user: user, password: wrongPassword) == .wrongPassword)
    #expect(try store.verify(user: user, password: "") == .wrongPassword)
    #expect(try store.verify(user: "nobody", password: goodPassword) == .unknownUser)
    #expect(store.entries.map(\.scheme) == [scheme])
}

// MARK: - Formats made by real tools

@Test func verify_whenOpensslSha512CryptLine_accepts() throws {
    let hash = try Tool.opensslSha512Crypt(goodPassword)
    #expect(hash.hasPrefix("$6$"))
    try checkStore(line: "alice:\(hash)", user: "alice", scheme: .sha512Crypt)
}

@Test func verify_whenMkpasswdYescryptLine_accepts() throws {
    let hash = try Tool.mkpasswd("yescrypt", goodPassword)
    #expect(hash.hasPrefix("$y$"))
    try checkStore(line: "alice:\(hash)", user: "alice", scheme: .yescrypt)
}

@Test func verify_whenMkpasswdSha256CryptLine_accepts() throws {
    let hash = try Tool.mkpasswd("sha-256", goodPassword)
    #expect(hash.hasPrefix("$5$"))
    try checkStore(line: "alice:\(hash)", user: "alice", scheme: .sha256Crypt)
}

@Test func verify_whenHtpasswdShaLine_accepts() throws {
    let line = try Tool.htpasswdSHA("carol", goodPassword)
    #expect(line.hasPrefix("carol:{SHA}"))
    try checkStore(line: line, user: "carol", scheme: .htpasswdSHA1)
    #expect(PasswordScheme.htpasswdSHA1.isLegacy)
}

@Test func verify_whenHtpasswdBcryptLine_accepts() throws {
    let line = try Tool.htpasswdBcrypt("dave", goodPassword)
    #expect(line.hasPrefix("dave:$2y$"))
    try checkStore(line: line, user: "dave", scheme: .bcrypt)
}

@Test func verify_whenMkpasswdBcrypt2bLine_accepts() throws {
    let hash = try Tool.mkpasswd("bcrypt", goodPassword)
    #expect(hash.hasPrefix("$2b$"))
    try checkStore(line: "erin:\(hash)", user: "erin", scheme: .bcrypt)
}

@Test func verify_whenLegacyHexSha1Line_accepts() throws {
    let hex = try Tool.hexDigest("sha1", goodPassword)
    #expect(hex.count == 40)
    try checkStore(line: "legacy:\(hex)", user: "legacy", scheme: .hexSHA1)
    // pyctd files may have upper-case digits.
    try checkStore(line: "legacy:\(hex.uppercased())", user: "legacy", scheme: .hexSHA1)
}

@Test func verify_whenLegacyHexSha256Line_accepts() throws {
    let hex = try Tool.hexDigest("sha256", goodPassword)
    #expect(hex.count == 64)
    try checkStore(line: "legacy:\(hex)", user: "legacy", scheme: .hexSHA256)
}

@Test func verify_whenLegacyHexSha512Line_accepts() throws {
    let hex = try Tool.hexDigest("sha512", goodPassword)
    #expect(hex.count == 128)
    try checkStore(line: "legacy:\(hex)", user: "legacy", scheme: .hexSHA512)
    #expect(PasswordScheme.hexSHA512.isLegacy)
}

@Test func verify_whenPasswordContainsNUL_rejects() throws {
    let crypt = try PasswordHash(try Tool.opensslSha512Crypt("secret"))
    #expect(crypt.verify(password: "secret"))
    #expect(!crypt.verify(password: "secret\u{0}tail"))
    let hex = try PasswordHash(try Tool.hexDigest("sha1", "secret"))
    #expect(hex.verify(password: "secret"))
    #expect(!hex.verify(password: "secret\u{0}"))
}

@Test func verify_whenStringIsMalformed_rejectsWithoutThrowing() {
    #expect(!PasswordHash.verify(password: "x", against: "not a hash"))
    #expect(!PasswordHash.verify(password: "x", against: ""))
}

@Test func description_neverShowsTheHash() throws {
    let encoded = try Tool.opensslSha512Crypt("secret")
    let hash = try PasswordHash(encoded)
    #expect(!"\(hash)".contains(encoded))
    #expect("\(hash)" == "<sha512-crypt hash>")
}

// MARK: - New hashes

@Test func hashNew_yescryptByDefault_roundTripsWithFreshSalt() throws {
    let first = try PasswordHash.hashNew(password: goodPassword)
    let second = try PasswordHash.hashNew(password: goodPassword)
    #expect(first.hasPrefix("$y$"))
    #expect(first != second)  // a new salt each time
    #expect(PasswordHash.verify(password: goodPassword, against: first))
    #expect(!PasswordHash.verify(password: wrongPassword, against: first))
    #expect(try PasswordHash(first).scheme == .yescrypt)
}

@Test func hashNew_sha512Crypt_agreesWithOpenssl() throws {
    let ours = try PasswordHash.hashNew(password: goodPassword, scheme: .sha512Crypt)
    #expect(ours.hasPrefix("$6$"))
    // Recompute with openssl from our salt: the strings must be identical.
    let fields = ours.split(separator: "$", omittingEmptySubsequences: false)
    var salt = String(fields[2])
    var options: [String] = []
    if salt.hasPrefix("rounds=") {
        options = ["-rounds", String(salt.dropFirst(7))]  // not emitted by default, but be safe
        salt = String(fields[3])
    }
    let theirs = try Tool.line(
        "openssl", ["passwd", "-6", "-salt", salt] + options + ["-stdin"], stdin: goodPassword + "\n",
        package: "openssl")
    #expect(theirs == ours)
}

@Test func hashNew_whenPasswordIsEmptyOrHasNUL_throws() {
    #expect(throws: PasswordFileError.self) { try PasswordHash.hashNew(password: "") }
    #expect(throws: PasswordFileError.self) { try PasswordHash.hashNew(password: "a\u{0}b") }
    do {
        _ = try PasswordHash.hashNew(password: "s3cr3t\u{0}x")
    } catch let error as PasswordFileError {
        #expect(error.kind == .invalidPassword)
        #expect(!error.description.contains("s3cr3t"))
    } catch {
        Issue.record("unexpected error \(error)")
    }
}

// MARK: - Store

/// The fastest of a few verifications, in a store.
private func fastestVerify(_ store: PasswordStore, user: String, runs: Int = 5) throws -> Duration {
    var best = Duration.seconds(1000)
    for _ in 0..<runs {
        let start = ContinuousClock.now
        _ = try store.verify(user: user, password: "wrong")
        best = min(best, ContinuousClock.now - start)
    }
    return best
}

@Test func store_whenUserUnknown_rejectsAfterComparableWork() throws {
    let dir = try TempDir()
    let hash = try Tool.mkpasswd("yescrypt", "secret")
    let store = try PasswordStore(path: try dir.write("alice:\(hash)\n"))
    #expect(store.dummy.scheme == .yescrypt)
    #expect(store.dummy.costClass == (try PasswordHash(hash)).costClass)
    let known = try fastestVerify(store, user: "alice", runs: 3)
    let unknown = try fastestVerify(store, user: "mallory", runs: 3)
    // A dictionary miss alone takes microseconds; yescrypt takes milliseconds. Lenient bounds against noise.
    #expect(unknown * 4 > known, "unknown user: \(unknown), known user: \(known)")
    #expect(unknown < known * 4, "unknown user: \(unknown), known user: \(known)")
    #expect(try store.verify(user: "mallory", password: "secret") == .unknownUser)
}

@Test func store_whenFileUsesSha512Crypt_unknownUserCostsTheSameNotMore() throws {
    // A fixed yescrypt dummy (~28 ms) would make unknown users ~20x slower than SHA-512-crypt users (~1.3 ms).
    let dir = try TempDir()
    let path = try dir.write(
        "alice:\(try Tool.opensslSha512Crypt("a"))\nbob:\(try Tool.opensslSha512Crypt("b"))\n"
            + "carol:\(try Tool.mkpasswd("yescrypt", "c"))\n")
    let store = try PasswordStore(path: path)
    #expect(store.dummy.scheme == .sha512Crypt)  // the most common cost class of the file
    let known = try fastestVerify(store, user: "alice")
    let unknown = try fastestVerify(store, user: "mallory")
    #expect(unknown < known * 4, "unknown user: \(unknown), known user: \(known)")
    #expect(unknown * 4 > known, "unknown user: \(unknown), known user: \(known)")
    #expect(try store.verify(user: "mallory", password: "a") == .unknownUser)
}

@Test func store_dummyFollowsTheFile() throws {
    let dir = try TempDir()
    let empty = try PasswordStore(path: try dir.write("# nobody yet\n", to: "empty"))
    #expect(empty.dummy.scheme == .yescrypt)  // generated once at creation
    #expect(try empty.verify(user: "x", password: "y") == .unknownUser)

    let legacy = try PasswordStore(
        path: try dir.write(try Tool.htpasswdSHA("a", "p") + "\nb:\(try Tool.hexDigest("sha1", "p"))\n", to: "legacy"))
    #expect(legacy.dummy.scheme == .hexSHA1)
    #expect(legacy.dummy.verify(password: "p") == false)

    let bcrypt = try PasswordStore(path: try dir.write(try Tool.htpasswdBcrypt("a", "p") + "\n", to: "bcrypt"))
    #expect(bcrypt.dummy.scheme == .bcrypt)
    #expect(bcrypt.dummy.costClass == "bcrypt:05")
    #expect(bcrypt.dummy.verify(password: "p") == false)
}

@Test func store_whenFileChanges_reloadsNewUser() throws {
    let dir = try TempDir()
    let path = try dir.write("alice:\(try Tool.opensslSha512Crypt("a-pass"))\n")
    let reloads = ReloadCounter()
    let store = try PasswordStore(path: path, minimumCheckInterval: .zero) { summary in
        reloads.add(summary.entries.count)
    }
    #expect(try store.verify(user: "bob", password: "b-pass") == .unknownUser)

    // Atomic replacement (new inode), as `ctd passwd add` does it.
    try PasswordFileEditor.addOrReplace(user: "bob", password: "b-pass", scheme: .sha512Crypt, path: path)
    #expect(try store.verify(user: "bob", password: "b-pass") == .accepted(scheme: .sha512Crypt))
    #expect(try store.verify(user: "alice", password: "a-pass") == .accepted(scheme: .sha512Crypt))

    // In-place append by an editor (same inode, new size).
    let handle = try #require(FileHandle(forWritingAtPath: path))
    try handle.seekToEnd()
    try handle.write(contentsOf: Data("carol:\(try Tool.hexDigest("sha256", "c-pass"))\n".utf8))
    try handle.close()
    #expect(try store.verify(user: "carol", password: "c-pass") == .accepted(scheme: .hexSHA256))

    // Removal takes effect too.
    #expect(try PasswordFileEditor.remove(user: "alice", path: path))
    #expect(try store.verify(user: "alice", password: "a-pass") == .unknownUser)
    #expect(reloads.values == [1, 2, 3, 2])
}

@Test func store_checksTheFileAtMostOncePerSecond() throws {
    let dir = try TempDir()
    let path = try dir.write("alice:\(try Tool.opensslSha512Crypt("a-pass"))\n")
    let store = try PasswordStore(path: path)  // default interval: 1 s
    #expect(store.minimumCheckInterval == .seconds(1))
    try PasswordFileEditor.addOrReplace(user: "bob", password: "b-pass", scheme: .sha512Crypt, path: path)
    // Within the second after loading: the file is not looked at.
    #expect(try store.verify(user: "bob", password: "b-pass") == .unknownUser)
    Thread.sleep(forTimeInterval: 1.1)
    #expect(try store.verify(user: "bob", password: "b-pass") == .accepted(scheme: .sha512Crypt))
    // reloadIfChanged ignores the interval.
    try PasswordFileEditor.remove(user: "bob", path: path)
    #expect(try store.reloadIfChanged())
    #expect(try store.verify(user: "bob", password: "b-pass") == .unknownUser)
    #expect(try store.reloadIfChanged() == false)
}

@Test func store_whenReloadFindsBadLine_failsClosedThenRecovers() throws {
    let dir = try TempDir()
    let good = "alice:\(try Tool.opensslSha512Crypt("a-pass"))\n"
    let path = try dir.write(good)
    let store = try PasswordStore(path: path, minimumCheckInterval: .zero)
    #expect(try store.verify(user: "alice", password: "a-pass") == .accepted(scheme: .sha512Crypt))

    try dir.write(good + "this line has no separator\n")
    let error = try #require(throws: PasswordFileError.self) {
        try store.verify(user: "alice", password: "a-pass")
    }
    #expect(error.kind == .badLine)
    #expect(error.line == 2)
    #expect(store.lastError?.line == 2)

    try dir.write(good)
    #expect(try store.verify(user: "alice", password: "a-pass") == .accepted(scheme: .sha512Crypt))
    #expect(store.lastError == nil)

    try FileManager.default.removeItem(atPath: path)
    #expect(throws: PasswordFileError.self) { try store.verify(user: "alice", password: "a-pass") }
}

@Test func store_whenFileMissingOrBad_initThrows() throws {
    let dir = try TempDir()
    let missing = try #require(throws: PasswordFileError.self) { try PasswordStore(path: dir.file("absent")) }
    #expect(missing.kind == .io)
    #expect(missing.errno == ENOENT)
    let path = try dir.write("# ok\nalice:$1$abcdefgh$0123456789abcdefghijkl\n")
    let bad = try #require(throws: PasswordFileError.self) { try PasswordStore(path: path) }
    #expect(bad.line == 2)
    #expect(bad.description.hasPrefix("\(path):2: "))
}

@Test func store_verifiesConcurrently() throws {
    let dir = try TempDir()
    let path = try dir.write(
        "alice:\(try Tool.opensslSha512Crypt("a-pass"))\nbob:\(try Tool.hexDigest("sha1", "b-pass"))\n")
    let store = try PasswordStore(path: path, minimumCheckInterval: .zero)
    let failures = ReloadCounter()
    DispatchQueue.concurrentPerform(iterations: 32) { i in
        let user = ["alice", "bob", "nobody"][i % 3]
        let password = ["a-pass", "b-pass", "x"][i % 3]
        let expected: PasswordStore.Verdict =
            [.accepted(scheme: .sha512Crypt), .accepted(scheme: .hexSHA1), .unknownUser][i % 3]
        if (try? store.verify(user: user, password: password)) != expected { failures.add(i) }
    }
    #expect(failures.values.isEmpty)
}

/// Collects integers from @Sendable closures.
private final class ReloadCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [Int] = []
    func add(_ value: Int) { lock.withLock { storage.append(value) } }
    var values: [Int] { lock.withLock { storage } }
}

// MARK: - Parsing

@Test func parse_ignoresCommentsBlankLinesAndAcceptsCRLFAndHtpasswdTrailers() throws {
    let sha = try Tool.opensslSha512Crypt("a-pass")
    let text =
        "# ctd users\n\n   \n  # indented comment\r\nalice:\(sha)\r\nbob: \(try Tool.hexDigest("sha1", "b"))\t:extra:fields\n"
    let document = try PasswordFileDocument(parsing: text)
    #expect(document.entries.map(\.user) == ["alice", "bob"])
    #expect(document.entries.map(\.line) == [5, 6])
    #expect(document.entries.map(\.scheme) == [.sha512Crypt, .hexSHA1])
    #expect(document.entry(for: "alice")?.hash.verify(password: "a-pass") == true)
    #expect(document.entry(for: "bob")?.hash.verify(password: "b") == true)
    #expect(document.text == text)  // nothing edited: byte for byte
}

@Test func parse_splitsOnBytesNotCharacters() throws {
    // U+0600 is a "prepend" character: as Swift Characters, "\u{600}:" is one grapheme and contains no ':'.
    let document = try PasswordFileDocument(parsing: "x\u{600}:\(sha1OfX)\n# a comment\r\nbob:\(sha1OfX)\r\n")
    #expect(document.entries.map(\.user) == ["x\u{600}", "bob"])
    #expect(document.entry(for: "bob")?.hash.verify(password: "x") == true)
}

struct BadFileCase: CustomTestStringConvertible, Sendable {
    var text: String
    var line: Int
    var mentions: String
    var testDescription: String { "line \(line): \(mentions)" }
}

private let sha1OfX = "11f6ad8ec52a2984abaafd7c3b516503785c2072"

@Test(arguments: [
    BadFileCase(text: "# c\nalice\n", line: 2, mentions: "user:hash"),
    BadFileCase(text: "alice:\(sha1OfX)\n\n:\(sha1OfX)\n", line: 3, mentions: "empty"),
    BadFileCase(
        text: "alice:\(sha1OfX)\nalice:\(sha1OfX)\n", line: 2, mentions: "duplicate user 'alice' (first on line 1)"),
    BadFileCase(text: "alice:\n", line: 1, mentions: "empty"),
    BadFileCase(text: "alice:abc123\n", line: 1, mentions: "40 (SHA-1)"),
    BadFileCase(text: "#\nbob:\(sha1OfX)0\n", line: 2, mentions: "unrecognised"),
    BadFileCase(text: "a:\(sha1OfX)\nb:$y$j9T$salt$tooShort\n", line: 2, mentions: "truncated yescrypt"),
    BadFileCase(text: "b:$6$salt$short\n", line: 1, mentions: "SHA-512-crypt"),
    BadFileCase(text: "b:$apr1$abcdefgh$0123456789abcdefghijkl\n", line: 1, mentions: "MD5"),
    BadFileCase(text: "b:$7$xyz\n", line: 1, mentions: "unsupported crypt scheme"),
    BadFileCase(text: "b:{SSHA}abcdefgh\n", line: 1, mentions: "{SHA}"),
    BadFileCase(text: "b:{SHA}not-base64!\n", line: 1, mentions: "base64"),
    BadFileCase(text: "b:abcdefghijklm\n", line: 1, mentions: "DES"),
    BadFileCase(text: " alice:\(sha1OfX)\n", line: 1, mentions: "space"),
    BadFileCase(text: "ali\tce:\(sha1OfX)\n", line: 1, mentions: "control character"),
])
func parse_whenLineIsBad_reportsLineNumber(_ bad: BadFileCase) throws {
    let error = try #require(throws: PasswordFileError.self) {
        try PasswordFileDocument(parsing: bad.text, path: "/etc/ctd/passwd")
    }
    #expect(error.kind == .badLine)
    #expect(error.line == bad.line)
    #expect(error.description.hasPrefix("/etc/ctd/passwd:\(bad.line): "))
    #expect(error.description.contains(bad.mentions), "\(error)")
}

@Test func parse_whenFileIsNotUTF8_reportsLineNumber() throws {
    let bytes = Array("# ok\n".utf8) + [0x61, 0xFF, 0x3A] + Array("\(sha1OfX)\n".utf8)
    let error = try #require(throws: PasswordFileError.self) { try PasswordFileDocument(parsing: bytes) }
    #expect(error.line == 2)
}

@Test func parse_errorNeverEchoesTheHash() throws {
    let truncated = "$6$saltsalt$" + String(repeating: "A", count: 80)
    let error = try #require(throws: PasswordFileError.self) {
        try PasswordFileDocument(parsing: "alice:\(truncated)\n")
    }
    #expect(!error.description.contains(truncated))
    #expect(error.description.contains("alice"))
}

// MARK: - User names

@Test(arguments: ["al:ice", "al\nice", "", "ali\rce", "#alice", "alice "])
func userName_whenForbidden_isRefused(_ name: String) throws {
    #expect(throws: PasswordFileError.self) { try PasswordUserName.validate(name) }
    #expect(!PasswordUserName.isValid(name))
    let dir = try TempDir()
    let path = try dir.write("# keep\n")
    let error = try #require(throws: PasswordFileError.self) {
        try PasswordFileEditor.addOrReplace(user: name, password: "pw", path: path)
    }
    #expect(error.kind == .invalidUserName)
    #expect(try dir.read() == "# keep\n")  // untouched
}

@Test func userName_withColon_isRefusedWithReason() {
    let error = #expect(throws: PasswordFileError.self) { try PasswordUserName.validate("a:b") }
    #expect(error?.message.contains("':'") == true)
    #expect(PasswordUserName.isValid("alice"))
    #expect(PasswordUserName.isValid("jürgen.o'neil@example.org"))
}

// MARK: - Editing (ctd passwd add|remove|list)

@Test func editor_addOrReplace_preservesCommentsAndOtherLines() throws {
    let dir = try TempDir()
    let bobLine = try Tool.htpasswdSHA("bob", "b-pass")
    let original = """
        # ctd password file
        # managed with `ctd passwd`

        alice:\(try Tool.opensslSha512Crypt("a-pass"))
          # a note about bob
        \(bobLine):kept-trailer
        # end

        """
    let path = try dir.write(original)

    #expect(try PasswordFileEditor.addOrReplace(user: "carol", password: "c-pass", path: path) == .added)
    var lines = try dir.read().split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let originalLines = original.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    #expect(Array(lines.prefix(7)) == Array(originalLines.prefix(7)))
    #expect(lines[7].hasPrefix("carol:$y$"))
    #expect(lines.last == "")  // ends with a newline

    // Replacing bob rewrites his line in place and keeps the htpasswd trailer.
    #expect(
        try PasswordFileEditor.addOrReplace(user: "bob", password: "new-b", scheme: .sha512Crypt, path: path)
            == .replaced)
    lines = try dir.read().split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    #expect(lines[5].hasPrefix("bob:$6$"))
    #expect(lines[5].hasSuffix(":kept-trailer"))
    #expect(lines.filter { $0.hasPrefix("bob:") }.count == 1)
    #expect(Array(lines.prefix(5)) == Array(originalLines.prefix(5)))
    #expect(lines[6] == "# end")

    let document = try PasswordFileEditor.read(path: path)
    #expect(document.entry(for: "bob")?.hash.verify(password: "new-b") == true)
    #expect(document.entry(for: "bob")?.hash.verify(password: "b-pass") == false)
    #expect(document.entry(for: "carol")?.hash.verify(password: "c-pass") == true)
    #expect(document.entry(for: "alice")?.hash.verify(password: "a-pass") == true)
}

@Test func editor_addOrReplace_withReadyMadeHash_storesItVerbatim() throws {
    let dir = try TempDir()
    let path = dir.file()
    let hash = try Tool.opensslSha512Crypt("pw")
    #expect(try PasswordFileEditor.addOrReplace(user: "alice", hash: PasswordHash(hash), path: path) == .added)
    #expect(try dir.read() == "alice:\(hash)\n")
}

@Test func editor_add_createsFileWithMode0600AtomicallyWithoutLeftovers() throws {
    let dir = try TempDir()
    let path = dir.file()
    #expect(try PasswordFileEditor.addOrReplace(user: "alice", password: "pw", path: path) == .added)
    #expect(fileStat(path).st_mode & 0o7777 == 0o600)
    let inode = fileStat(path).st_ino
    try PasswordFileEditor.addOrReplace(user: "bob", password: "pw2", path: path)
    #expect(fileStat(path).st_ino != inode)  // replaced by rename, never rewritten in place
    #expect(try dir.listing() == ["ctd.passwd"])  // no temporary file left behind
    #expect(fileStat(path).st_mode & 0o7777 == 0o600)
}

@Test func editor_whenFileIsWorldReadable_dropsOtherPermissions() throws {
    let dir = try TempDir()
    let path = try dir.write("# shared with group ctd\n")
    chmod(path, 0o644)
    try PasswordFileEditor.addOrReplace(user: "alice", password: "pw", path: path)
    #expect(fileStat(path).st_mode & 0o7777 == 0o640)
}

@Test func editor_whenPathIsSymlink_replacesTargetAndKeepsLink() throws {
    let dir = try TempDir()
    let target = try dir.write("# real file\n", to: "real.passwd")
    let link = dir.file("link.passwd")
    try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
    try PasswordFileEditor.addOrReplace(user: "alice", password: "pw", path: link)
    #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == target)
    #expect(try dir.read("real.passwd").hasPrefix("# real file\nalice:$y$"))
}

@Test func editor_remove_deletesOnlyThatUser() throws {
    let dir = try TempDir()
    let a = try Tool.hexDigest("sha1", "a")
    let b = try Tool.hexDigest("sha256", "b")
    let path = try dir.write("# head\nalice:\(a)\n# about bob\nbob:\(b)\n# tail\n")
    #expect(try PasswordFileEditor.remove(user: "alice", path: path))
    #expect(try dir.read() == "# head\n# about bob\nbob:\(b)\n# tail\n")
    #expect(try PasswordFileEditor.remove(user: "alice", path: path) == false)
    #expect(try dir.read() == "# head\n# about bob\nbob:\(b)\n# tail\n")
    #expect(throws: PasswordFileError.self) { try PasswordFileEditor.remove(user: "x", path: dir.file("absent")) }
}

@Test func editor_list_reportsUsersWithSchemes() throws {
    let dir = try TempDir()
    let text =
        [
            "# users",
            "y:\(try Tool.mkpasswd("yescrypt", "p"))",
            "s6:\(try Tool.opensslSha512Crypt("p"))",
            "s5:\(try Tool.mkpasswd("sha-256", "p"))",
            try Tool.htpasswdBcrypt("bc", "p"),
            try Tool.htpasswdSHA("ht", "p"),
            "h1:\(try Tool.hexDigest("sha1", "p"))",
            "h256:\(try Tool.hexDigest("sha256", "p"))",
            "h512:\(try Tool.hexDigest("sha512", "p"))",
        ].joined(separator: "\n") + "\n"
    let listing = try PasswordFileEditor.list(path: try dir.write(text))
    #expect(listing.map(\.user) == ["y", "s6", "s5", "bc", "ht", "h1", "h256", "h512"])
    #expect(
        listing.map(\.scheme.name) == [
            "yescrypt", "sha512-crypt", "sha256-crypt", "bcrypt", "htpasswd-sha1", "sha1-hex", "sha256-hex",
            "sha512-hex",
        ])
    #expect(listing.map(\.line) == Array(2...9))
    #expect(listing.allSatisfy { $0.hash.verify(password: "p") })
}

@Test func editor_whenFileHasBadLine_refusesToEdit() throws {
    let dir = try TempDir()
    let original = "# ok\nalice:\(sha1OfX)\nbroken line\n"
    let path = try dir.write(original)
    let error = try #require(throws: PasswordFileError.self) {
        try PasswordFileEditor.addOrReplace(user: "bob", password: "pw", path: path)
    }
    #expect(error.line == 3)
    #expect(try dir.read() == original)
}
