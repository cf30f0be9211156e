#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The program's one clock: monotonic seconds (CLOCK_MONOTONIC), for timeouts, idle times and entry ages.
///
/// Every part that measures time takes a clock when it is made, so tests can pass one they control; the kernel
/// adapter, the mirror, sessions and the login throttle all read the same clock.
public struct MonotonicClock: Sendable {
    private let read: @Sendable () -> Double

    /// A clock that reads `read`; tests pass a function over a value they move.
    public init(_ read: @escaping @Sendable () -> Double) { self.read = read }

    /// Monotonic seconds since an arbitrary point (the system's boot, for ``system``).
    public func now() -> Double { read() }

    /// CLOCK_MONOTONIC.
    public static let system = MonotonicClock {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
