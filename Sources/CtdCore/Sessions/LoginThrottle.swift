import Conntrack
import CtdRuntime
import NIOConcurrencyHelpers

/// Slows password guessing, counting failed logins within `window` seconds under three keys:
///
/// - a source and a user name: `perPair` failures lock that user name for that source (a guesser at one account);
/// - a source: `perSource` failures lock the source for every user name (a sprayer across accounts);
/// - a user name: `perUser` failures, from any sources, lock that user name everywhere (a guesser that rotates
///   addresses).
///
/// A source is an IPv4 address or an IPv6 /64 (a host owns a whole /64 and can rotate within it). A success clears
/// the failures of that user name from that source only: another user's success clears nothing. A locked login is
/// refused with the usual login fault before the authenticator is asked, until its failures age out of the window.
/// Memory is bounded: past `capacity` keys per counter, the keys idle longest are forgotten, never everyone's.
///
/// The per-user lock is a trade-off: whoever can fail `perUser` logins a window can keep that account out for the
/// window (as with any account lockout). Behind a reverse proxy every client has the proxy's address, so the
/// per-source limits apply to all clients together: raise `perSource` there (docs/design.md, "Login throttle").
package final class LoginThrottle: @unchecked Sendable {
    package struct Limits: Sendable, Equatable {
        package var perPair: Int
        package var perSource: Int
        package var perUser: Int
        package init(perPair: Int, perSource: Int, perUser: Int) {
            self.perPair = perPair
            self.perSource = perSource
            self.perUser = perUser
        }
    }

    /// Why a login was refused without asking the authenticator.
    package enum Lock: Sendable, Equatable {
        case pair, source, user

        package var reason: String {
            switch self {
            case .pair: return "too many failed logins for this user from this address"
            case .source: return "too many failed logins from this address"
            case .user: return "too many failed logins for this user"
            }
        }
    }

    package let limits: Limits
    package let window: Double
    private let clock: MonotonicClock
    private let lock = NIOLock()
    private var pairs: FailureCounter
    private var sources: FailureCounter
    private var users: FailureCounter

    /// A limit of 0 turns that key off; all three 0 turn the throttle off.
    package init(limits: Limits, window: Double = 60, capacity: Int = 65_536, clock: MonotonicClock = .system) {
        self.limits = limits
        self.window = window
        self.clock = clock
        pairs = FailureCounter(capacity: capacity)
        sources = FailureCounter(capacity: capacity)
        users = FailureCounter(capacity: capacity)
    }

    /// The throttle of releases up to 0.1: one limit per source.
    package convenience init(limit: Int, window: Double = 60, clock: MonotonicClock = .system) {
        self.init(limits: Limits(perPair: limit, perSource: limit, perUser: 0), window: window, clock: clock)
    }

    /// The key of a client address: itself for IPv4, its /64 for IPv6.
    package static func source(_ client: String) -> String {
        guard client.contains(":"), let address = IPAddress(client), address.isIPv6 else { return client }
        return "\(IPAddress(high: address.high, low: 0, isIPv6: true))/64"
    }

    /// Whether a login of `user` from `client` may be tried now; nil when it may, else what locks it.
    package func check(user: String, client: String) -> Lock? {
        let now = clock.now()
        let source = Self.source(client)
        return lock.withLock {
            if limits.perSource > 0, sources.count(source, now: now, window: window) >= limits.perSource {
                return .source
            }
            if limits.perUser > 0, users.count(user, now: now, window: window) >= limits.perUser { return .user }
            if limits.perPair > 0, pairs.count(source + " " + user, now: now, window: window) >= limits.perPair {
                return .pair
            }
            return nil
        }
    }

    package func failed(user: String, client: String) {
        let now = clock.now()
        let source = Self.source(client)
        lock.withLock {
            if limits.perSource > 0 { sources.add(source, now: now, window: window) }
            if limits.perUser > 0 { users.add(user, now: now, window: window) }
            if limits.perPair > 0 { pairs.add(source + " " + user, now: now, window: window) }
        }
    }

    /// Clears the failures of `user` from `client` (not the source's or the user's totals).
    package func succeeded(user: String, client: String) {
        let source = Self.source(client)
        lock.withLock { pairs.remove(source + " " + user) }
    }

    /// Keys remembered now (for tests and the memory bound).
    package var rememberedKeys: Int { lock.withLock { pairs.keys + sources.keys + users.keys } }
}

/// Failure times per key within a window, for at most `capacity` keys.
struct FailureCounter {
    private var times: [String: [Double]] = [:]
    private let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    var keys: Int { times.count }

    mutating func count(_ key: String, now: Double, window: Double) -> Int {
        guard let t = times[key] else { return 0 }
        let recent = t.filter { now - $0 < window }
        times[key] = recent.isEmpty ? nil : recent
        return recent.count
    }

    mutating func add(_ key: String, now: Double, window: Double) {
        var t = (times[key] ?? []).filter { now - $0 < window }
        t.append(now)
        times[key] = t
        if times.count > capacity { forgetOldest(now: now, window: window) }
    }

    mutating func remove(_ key: String) { times[key] = nil }

    /// Drops expired keys, then the tenth of the keys whose last failure is oldest: amortised O(log n) per add.
    private mutating func forgetOldest(now: Double, window: Double) {
        times = times.filter { now - ($0.value.last ?? 0) < window }
        guard times.count > capacity else { return }
        let excess = times.count - capacity + capacity / 10
        let oldest = times.sorted { ($0.value.last ?? 0) < ($1.value.last ?? 0) }.prefix(excess).map(\.key)
        for key in oldest { times[key] = nil }
    }
}
