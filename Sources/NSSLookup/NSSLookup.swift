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
}
