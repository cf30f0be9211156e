import CtdRuntime
import NIOConcurrencyHelpers

/// Slows password guessing: after `limit` failed logins from one client address within `window` seconds, further
/// logins from that address are refused (with the usual login fault, before the authenticator is asked) until the
/// window has passed. A success clears the address's failures. A limit of 0 turns the throttle off.
package final class LoginThrottle: @unchecked Sendable {
    package let limit: Int
    package let window: Double
    private let clock: MonotonicClock
    private let lock = NIOLock()
    private var failures: [String: [Double]] = [:]

    package init(
        limit: Int = 10, window: Double = 60,
        clock: MonotonicClock = .system
    ) {
        self.limit = limit
        self.window = window
        self.clock = clock
    }

    /// Whether a login from `client` may be tried now.
    package func allows(_ client: String) -> Bool {
        guard limit > 0 else { return true }
        let now = clock.now()
        return lock.withLock {
            let recent = (failures[client] ?? []).filter { now - $0 < window }
            failures[client] = recent.isEmpty ? nil : recent
            return recent.count < limit
        }
    }

    package func failed(_ client: String) {
        guard limit > 0 else { return }
        let now = clock.now()
        lock.withLock {
            if failures.count > 100_000 { failures.removeAll() }
            failures[client, default: []].append(now)
        }
    }

    package func succeeded(_ client: String) { lock.withLock { failures[client] = nil } }
}
