import Conntrack
import CtdRuntime
import NIOConcurrencyHelpers

/// The previews of `kill_matching`: what a `kill_preview` matched, by token, for one session and a short time.
///
/// A token names exactly the entries of the preview's snapshot (their ids and tuples), so a connection that starts
/// after the preview is never killed by it, even if it matches the filter. Tokens are single-use, at most
/// `perSession` live per session and `total` overall, and at most `totalEntries` entries in all (the oldest go
/// first), each holding at most the entries of one `kill_matching`.
package final class KillPreviews: @unchecked Sendable {
    package struct Preview: Sendable {
        package var token: String
        package var session: String
        package var filter: String
        package var entries: [Flow]
        package var expires: Double
    }

    package let lifetime: Double
    private let perSession: Int
    private let total: Int
    private let totalEntries: Int
    private let clock: MonotonicClock
    private let lock = NIOLock()
    private var previews: [String: Preview] = [:]

    package init(
        lifetime: Double, perSession: Int = 4, total: Int = 64, totalEntries: Int = 200_000, clock: MonotonicClock
    ) {
        self.lifetime = lifetime
        self.perSession = perSession
        self.total = total
        self.totalEntries = totalEntries
        self.clock = clock
    }

    /// Stores a preview and returns its token and the monotonic time it expires at.
    package func add(session: String, filter: String, entries: [Flow]) -> (token: String, expires: Double) {
        let now = clock.now()
        let token = SessionStore.newSessionID()
        lock.withLock {
            previews = previews.filter { $0.value.expires > now }
            let mine = previews.values.filter { $0.session == session }.sorted { $0.expires < $1.expires }
            for p in mine.prefix(max(0, mine.count - perSession + 1)) { previews[p.token] = nil }
            if previews.count >= total, let oldest = previews.values.min(by: { $0.expires < $1.expires }) {
                previews[oldest.token] = nil
            }
            var held = previews.values.reduce(0) { $0 + $1.entries.count }
            while held + entries.count > totalEntries,
                let oldest = previews.values.min(by: { $0.expires < $1.expires })
            {
                held -= oldest.entries.count
                previews[oldest.token] = nil
            }
            previews[token] = Preview(
                token: token, session: session, filter: filter, entries: entries, expires: now + lifetime)
        }
        return (token, now + lifetime)
    }

    package enum Take: Equatable {
        case found(Preview)
        /// Unknown, used, expired, or another session's: all look the same to a client.
        case unknown
        /// The preview matched this many entries, not the number the client expected.
        case otherTotal(Int)
    }

    /// Takes the preview of `token` for `session` (single use) when `expectedTotal` is its total; a wrong total
    /// leaves the token in place (``Take/otherTotal(_:)``).
    package func take(_ token: String, session: String, expectedTotal: Int) -> Take {
        let now = clock.now()
        return lock.withLock {
            guard let p = previews[token], p.session == session, p.expires > now else { return .unknown }
            guard p.entries.count == expectedTotal else { return .otherTotal(p.entries.count) }
            previews[token] = nil
            return .found(p)
        }
    }
}

extension KillPreviews.Preview: Equatable {
    package static func == (a: Self, b: Self) -> Bool { a.token == b.token }
}
