import NSSLookup
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The answer of the user database for one uid.
public enum UserLookupResult: Sendable, Equatable {
    /// The uid has an entry with this name.
    case found(String)
    /// The database answered: no such uid.
    case notFound
    /// The database could not answer (NSS backend down, out of memory...); the text says why.
    case failed(String)
}

/// uid → user name, remembered for a time to live, negative answers included, so that a slow NSS backend (LDAP,
/// SSSD) is asked at most once per uid and TTL.
///
/// Thread-safety: every method may be called concurrently. The dictionary is guarded by a lock; the lookup runs
/// outside it, so one slow lookup never holds up answers that are already cached.
public final class UserNameCache: Sendable {
    struct Entry {
        var name: String?
        var expires: Double
    }

    struct State {
        var ttl: Double
        var entries: [UInt32: Entry] = [:]
        var lastFailure: String?
    }

    /// Failed lookups are retried after this many seconds at most (or after the TTL, when it is shorter).
    public static let failureRetrySeconds = 5.0
    /// The cache never holds more entries than this; past it, expired entries go, then everything.
    public static let maxEntries = 65_536

    private let state: Mutex<State>
    private let lookup: @Sendable (UInt32) -> UserLookupResult
    private let clock: @Sendable () -> Double

    /// Creates an empty cache.
    /// - Parameters:
    ///   - ttl: seconds an answer is kept; 0 asks the database every time.
    ///   - lookup: the user database.
    ///   - clock: monotonic seconds.
    public init(
        ttl: Double, lookup: @escaping @Sendable (UInt32) -> UserLookupResult,
        clock: @escaping @Sendable () -> Double
    ) {
        state = Mutex(State(ttl: ttl))
        self.lookup = lookup
        self.clock = clock
    }

    /// Changes the time to live; entries already cached keep their expiry.
    public func setTTL(_ ttl: Double) {
        state.withLock { $0.ttl = ttl }
    }

    /// The name of `uid`, from the cache or the database.
    /// - Returns: the name (`nil`: the uid has no entry, or the lookup failed and no name was known before), and
    ///   the reason of a failure when this call found the database failing after it had worked (so that the
    ///   caller logs each outage once). A failed lookup is retried after ``failureRetrySeconds`` at most.
    public func name(for uid: UInt32) -> (name: String?, newFailure: String?) {
        let now = clock()
        if let hit = state.withLock({ $0.entries[uid] }), now < hit.expires {
            return (hit.name, nil)
        }
        let answer = lookup(uid)
        return state.withLock { s in
            let name: String?
            var expires = now + s.ttl
            var newFailure: String?
            switch answer {
            case .found(let found):
                name = found
                s.lastFailure = nil
            case .notFound:
                name = nil
                s.lastFailure = nil
            case .failed(let why):
                // During an outage a name seen before is still the best answer.
                name = s.entries[uid]?.name
                expires = now + min(s.ttl, Self.failureRetrySeconds)
                if s.lastFailure == nil { newFailure = why }
                s.lastFailure = why
            }
            if s.ttl > 0 {
                if s.entries.count >= Self.maxEntries && s.entries[uid] == nil {
                    s.entries = s.entries.filter { $0.value.expires > now }
                    if s.entries.count >= Self.maxEntries { s.entries.removeAll(keepingCapacity: true) }
                }
                s.entries[uid] = Entry(name: name, expires: expires)
            }
            return (name, newFailure)
        }
    }

    /// The reason of the last lookup, when it failed; `nil` while the database answers.
    public var lastFailure: String? { state.withLock { $0.lastFailure } }

    /// How many uids are cached (expired entries included until they are replaced).
    public var count: Int { state.withLock { $0.entries.count } }

    /// Forgets every cached answer.
    public func removeAll() {
        state.withLock { $0.entries.removeAll() }
    }

    // MARK: The system

    /// Asks the system user database with `getpwuid_r`, so every NSS source (files, LDAP, SSSD, nss_wrapper in
    /// tests) is honoured; through ``NSSLookup`` (in parallel, except under the tests' nss_wrapper).
    @Sendable public static func systemLookup(_ uid: UInt32) -> UserLookupResult {
        let start = sysconf(Int32(_SC_GETPW_R_SIZE_MAX))
        let answer = NSSLookup.withGrowingBuffer(initialSize: start > 0 ? start : 1024, maxSize: 1 << 20) {
            bytes -> (Int32, String?) in
            var entry = passwd()
            var result: UnsafeMutablePointer<passwd>?
            let rc = NSSLookup.run { getpwuid_r(uid_t(uid), &entry, bytes.baseAddress!, bytes.count, &result) }
            // The name points into the buffer: copy it before the buffer goes away.
            guard rc == 0, result != nil, let cName = entry.pw_name else { return (rc, nil) }
            return (rc, String(cString: cName))
        }
        switch answer {
        case .found(let name): return .found(name)
        case .notFound: return .notFound
        case .failed(let rc): return .failed(String(cString: strerror(rc)))
        }
    }

    /// Monotonic seconds (`CLOCK_MONOTONIC`): a wall-clock change does not expire or freeze the cache.
    @Sendable public static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
