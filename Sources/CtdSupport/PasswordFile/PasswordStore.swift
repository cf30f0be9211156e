import Synchronization

/// A password file kept in memory, reloaded when it changes, for concurrent logins.
///
/// - The file is checked (one `stat`) on ``verify(user:password:)``, at most once per `minimumCheckInterval`
///   (one second by default). A change of inode, size, mtime or ctime triggers a reload.
/// - Fail closed: if a reload fails (file gone, unreadable, bad line), every ``verify(user:password:)`` throws that
///   error until a later check loads a good file. Old entries are never used after a failed reload, so a
///   removed user cannot keep logging in because of an unrelated typo.
/// - Unknown users cost the same work as known ones: their password is verified against a dummy hash. A dummy
///   yescrypt hash is generated once when the store is created; it is used as long as the file has no entries.
///   Otherwise, at each load, the dummy is derived from the file's most common cost class (scheme + parameters:
///   e.g. yescrypt `j9T`, SHA-512-crypt default rounds, bcrypt cost 5, or an unsalted digest), because a fixed
///   yescrypt dummy (about 28 ms here) would make unknown users 20 times slower than SHA-512-crypt users (about
///   1.3 ms) and thousands of times slower than legacy digest users: a user-name oracle.
/// - Hashing happens outside the lock, so logins run in parallel.
///
/// Thread-safety: all methods may be called from any thread.
public final class PasswordStore: Sendable {
    /// The outcome of ``verify(user:password:)``.
    public enum Verdict: Sendable, Equatable {
        /// The password matches the user's entry, stored in `scheme`.
        case accepted(scheme: PasswordScheme)
        /// The user exists but the password does not match.
        case wrongPassword
        /// The user is not in the file (the dummy hash was checked for the same cost).
        case unknownUser
    }

    /// Reported to `onReload` after each successful load (including the first).
    public struct LoadSummary: Sendable {
        /// The file.
        public var path: String
        /// The entries now in force.
        public var entries: [PasswordFileEntry]
        /// The users whose hash is an unsalted legacy digest.
        public var legacyUsers: [String] { entries.filter { $0.scheme.isLegacy }.map(\.user) }
        /// The file's stat signature (includes the permission bits).
        public var signature: FileSignature
        /// `true` for the load done by the initialiser.
        public var isInitial: Bool
    }

    private struct State {
        var entries: [String: PasswordFileEntry] = [:]
        var ordered: [PasswordFileEntry] = []
        var dummy: PasswordHash
        var signature: FileSignature?
        var lastCheck: ContinuousClock.Instant?
        var failure: PasswordFileError?
    }

    /// The file's path, as given.
    public let path: String
    /// The shortest time between two checks of the file.
    public let minimumCheckInterval: Duration
    private let state: Mutex<State>
    /// The yescrypt dummy generated at creation, for files without entries.
    private let defaultDummy: PasswordHash
    private let onReload: (@Sendable (LoadSummary) -> Void)?

    /// Loads the file.
    /// - Parameters:
    ///   - path: the password file.
    ///   - minimumCheckInterval: how often at most ``verify(user:password:)`` looks at the file (tests pass `.zero`).
    ///   - onReload: called, outside any lock, after each successful load, including this first one.
    /// - Throws: ``PasswordFileError`` when the file is missing, unreadable or has a bad line.
    public init(
        path: String, minimumCheckInterval: Duration = .seconds(1),
        onReload: (@Sendable (LoadSummary) -> Void)? = nil
    ) throws {
        self.path = path
        self.minimumCheckInterval = minimumCheckInterval
        self.onReload = onReload
        var random = SystemRandomNumberGenerator()
        let dummyPassword = (0..<4).map { _ in String(random.next(), radix: 36) }.joined(separator: "-")
        let defaultDummy = try PasswordHash(PasswordHash.hashNew(password: dummyPassword, scheme: .yescrypt))
        self.defaultDummy = defaultDummy
        let (document, signature) = try PasswordStore.load(path: path)
        var initial = State(dummy: try PasswordStore.dummy(for: document.entries, default: defaultDummy))
        initial.ordered = document.entries
        initial.entries = Dictionary(uniqueKeysWithValues: initial.ordered.map { ($0.user, $0) })
        initial.signature = signature
        initial.lastCheck = .now
        state = Mutex(initial)
        onReload?(LoadSummary(path: path, entries: initial.ordered, signature: signature, isInitial: true))
    }

    /// Checks a user's password, reloading the file first if it changed (see the type's documentation).
    ///
    /// Does the same hashing work for an unknown user as for a known one.
    /// - Returns: the verdict; never contains the password.
    /// - Throws: ``PasswordFileError`` when the file cannot be (re)loaded: a technical failure, not a rejection.
    public func verify(user: String, password: String) throws -> Verdict {
        let (entries, _, dummy) = try refresh(force: false)
        guard let entry = entries[user] else {
            _ = dummy.verify(password: password)
            return .unknownUser
        }
        return entry.hash.verify(password: password) ? .accepted(scheme: entry.scheme) : .wrongPassword
    }

    /// Looks at the file now (ignoring the interval) and reloads it if it changed.
    /// - Returns: `true` when a new version was loaded.
    /// - Throws: ``PasswordFileError`` when the reload fails (the store then fails closed).
    @discardableResult
    public func reloadIfChanged() throws -> Bool {
        try refresh(force: true).reloaded
    }

    /// The entries in force, in file order.
    public var entries: [PasswordFileEntry] { state.withLock { $0.ordered } }

    /// The error of the last failed reload, `nil` when the store is serving a good file.
    public var lastError: PasswordFileError? { state.withLock { $0.failure } }

    /// The dummy hash used for unknown users.
    var dummy: PasswordHash { state.withLock { $0.dummy } }

    /// Picks the dummy for unknown users: derived from the most common cost class of `entries` (the first one in
    /// file order on a tie), or `fallback` when there are no entries.
    static func dummy(for entries: [PasswordFileEntry], default fallback: PasswordHash) throws -> PasswordHash {
        var counts: [String: Int] = [:]
        var representative: [String: PasswordHash] = [:]
        var order: [String] = []
        for entry in entries {
            let key = entry.hash.costClass
            if counts[key] == nil {
                order.append(key)
                representative[key] = entry.hash
            }
            counts[key, default: 0] += 1
        }
        var best: String?
        for key in order where best == nil || counts[key]! > counts[best!]! { best = key }
        guard let best, let hash = representative[best] else { return fallback }
        return try hash.makeDummy()
    }

    private typealias Snapshot = (entries: [String: PasswordFileEntry], reloaded: Bool, dummy: PasswordHash)

    private func refresh(force: Bool) throws -> Snapshot {
        let (result, summary): (Result<Snapshot, PasswordFileError>, LoadSummary?) =
            state.withLock { s in
                let now = ContinuousClock.now
                if !force, let last = s.lastCheck, now - last < minimumCheckInterval {
                    if let failure = s.failure { return (.failure(failure), nil) }
                    return (.success((s.entries, false, s.dummy)), nil)
                }
                s.lastCheck = now
                do {
                    let current = try FileSignature.of(path: path)
                    if s.failure == nil, let known = s.signature, known.sameContent(as: current) {
                        return (.success((s.entries, false, s.dummy)), nil)
                    }
                    let (document, signature) = try PasswordStore.load(path: path)
                    s.dummy = try PasswordStore.dummy(for: document.entries, default: defaultDummy)
                    s.ordered = document.entries
                    s.entries = Dictionary(uniqueKeysWithValues: s.ordered.map { ($0.user, $0) })
                    s.signature = signature
                    s.failure = nil
                    let summary = LoadSummary(path: path, entries: s.ordered, signature: signature, isInitial: false)
                    return (.success((s.entries, true, s.dummy)), summary)
                } catch let error as PasswordFileError {
                    s.failure = error
                    s.entries = [:]
                    s.ordered = []
                    s.signature = nil
                    return (.failure(error), nil)
                } catch {
                    let wrapped = PasswordFileError(kind: .io, message: "\(error)", path: path)
                    s.failure = wrapped
                    return (.failure(wrapped), nil)
                }
            }
        if let summary { onReload?(summary) }
        return try result.get()
    }

    private static func load(path: String) throws -> (PasswordFileDocument, FileSignature) {
        let (bytes, signature) = try FileIO.readFile(path: path)
        return (try PasswordFileDocument(parsing: bytes, path: path), signature)
    }
}
