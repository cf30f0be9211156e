import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Runs the plugins' NSS lookups (`getpwnam_r`, `getpwuid_r`, `getgrouplist`, `getgrgid_r`).
///
/// glibc's NSS code and its modules (files, systemd, sss, ldap through nslcd) are thread-safe (getgrouplist(3):
/// MT-Safe), so lookups from several threads run in parallel: a slow LDAP answer delays one login, not all of them.
/// nss_wrapper, the LD_PRELOAD interposer the tests use instead of the system's files, is not: version 1.1.12
/// (Debian 12) gave thousands of wrong answers in 24,000 concurrent lookups on 8 threads and crashed in others
/// (measured). It is active only when `NSS_WRAPPER_PASSWD` or `NSS_WRAPPER_GROUP` is set; lookups then run one at a
/// time.
public enum NSSLookup {
    /// Whether lookups run one at a time (nss_wrapper is active).
    public static let isSerialized = getenv("NSS_WRAPPER_PASSWD") != nil || getenv("NSS_WRAPPER_GROUP") != nil

    private static let lock = Mutex<Void>(())

    /// Runs `body`, holding a process-wide lock when ``isSerialized``.
    public static func run<T>(_ body: () throws -> T) rethrows -> T {
        guard isSerialized else { return try body() }
        return try lock.withLock { _ in try body() }
    }

    /// What a reentrant `get*_r` call answered.
    public enum Answer<T> {
        case found(T)
        /// No such entry.
        case notFound
        /// The call failed with this errno.
        case failed(errno: Int32)
    }

    /// Runs a `get*_r` call with a buffer of `initialSize` bytes, doubled after each ERANGE while below `maxSize`; an
    /// EINTR is retried up to 3 times. `body` returns the call's error code and the answer (`nil`: no entry). Per
    /// getpwnam_r(3), ENOENT, ESRCH, EBADF and EPERM also mean "no entry" for some NSS modules. Takes no lock: call
    /// it inside ``run(_:)``.
    public static func withGrowingBuffer<T>(
        initialSize: Int, maxSize: Int, _ body: (UnsafeMutableBufferPointer<CChar>) -> (Int32, T?)
    ) -> Answer<T> {
        var size = max(1, initialSize)
        var interrupted = 0
        while true {
            var buffer = [CChar](repeating: 0, count: size)
            let (rc, answer) = buffer.withUnsafeMutableBufferPointer { body($0) }
            switch rc {
            case 0, ENOENT, ESRCH, EBADF, EPERM:
                return answer.map(Answer.found) ?? .notFound
            case ERANGE where size < maxSize:
                size *= 2
            case EINTR where interrupted < 3:
                interrupted += 1
            default:
                return .failed(errno: rc)
            }
        }
    }
}
