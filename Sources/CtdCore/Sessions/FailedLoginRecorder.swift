import CtdRuntime
import NIOConcurrencyHelpers

/// Bounds the audit records of failed logins, so that a flood cannot fill the disk (every record is fsync'd).
///
/// Per source (``LoginThrottle/source(_:)``) and window: the first failure is recorded at once, with its user name
/// and reason; the following ones are only counted, and one summary record per source is written when the window
/// has passed ("41 more failed logins from 192.0.2.7 in 60 s; users: admin, root"). At most `capacity` sources are
/// tracked; past that, the oldest windows are summarised early.
package final class FailedLoginRecorder: @unchecked Sendable {
    /// Failures of one source in one window, beyond the first.
    package struct Summary: Sendable, Equatable {
        package var source: String
        package var since: Double
        package var count: Int
        /// The user names tried (at most ``userNamesKept``), in first-seen order.
        package var users: [String]
        /// Whether more user names were tried than ``users`` holds.
        package var moreUsers = false

        package var description: String {
            let names = users.joined(separator: ", ") + (moreUsers ? ", ..." : "")
            return "\(count) more failed logins from \(source) in this window; users: \(names)"
        }
    }

    package static let userNamesKept = 8

    private let window: Double
    private let capacity: Int
    private let clock: MonotonicClock
    private let lock = NIOLock()
    /// The window of each source: when it began, and what was counted after its first (recorded) failure.
    private var windows: [String: Summary] = [:]

    package init(window: Double, capacity: Int = 16_384, clock: MonotonicClock = .system) {
        self.window = window
        self.capacity = capacity
        self.clock = clock
    }

    /// Counts a failure. Returns true when it must be recorded now (the first of its source's window); the others
    /// end up in a ``Summary`` from ``due(all:)``.
    package func failure(user: String, client: String) -> Bool {
        let source = LoginThrottle.source(client)
        let now = clock.now()
        return lock.withLock {
            guard var w = windows[source], now - w.since < window else {
                windows[source] = Summary(source: source, since: now, count: 0, users: [])
                return true
            }
            w.count += 1
            if !w.users.contains(user) {
                if w.users.count < Self.userNamesKept { w.users.append(user) } else { w.moreUsers = true }
            }
            windows[source] = w
            return false
        }
    }

    /// The summaries to record now: windows that have passed with failures counted (all of them with `all`, at
    /// shutdown), and the oldest ones when more than `capacity` sources are tracked.
    package func due(all: Bool = false) -> [Summary] {
        let now = clock.now()
        return lock.withLock {
            var out: [Summary] = []
            for (source, w) in windows where all || now - w.since >= window {
                if w.count > 0 { out.append(w) }
                windows[source] = nil
            }
            if windows.count > capacity {
                let oldest = windows.values.sorted { $0.since < $1.since }.prefix(windows.count - capacity)
                for w in oldest {
                    if w.count > 0 { out.append(w) }
                    windows[w.source] = nil
                }
            }
            return out.sorted { $0.since < $1.since }
        }
    }
}
