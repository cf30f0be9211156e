import Conntrack
import CtdPluginAPI
import Foundation
import CtdRuntime
import NIOConcurrencyHelpers

/// A logged-in client.
public struct Session: Sendable {
    public let id: String
    public let identity: Identity
    public let clientAddress: String
    public let createdAt: Double
    public var lastUsedAt: Double
    /// With autorefresh on (the default), every `view` reads the live mirror. Off: pages come from `pinned`, the
    /// snapshot of the last `refresh`, so that a frontend pages through a table that does not move under it.
    public var autorefresh: Bool
    public var pinned: MirrorSnapshot?
    /// Set when the store let go of this session's snapshot to bound memory (``SessionStore/pin(_:_:)``); the next
    /// `view` says so.
    public var lostPinnedSnapshot = false
    /// Tags this session's `changes` cursors, so that a cursor from another session is refused.
    public var cursorKey = String(SessionStore.newSessionID().prefix(8))

    public var role: Role { identity.highestRole ?? .viewer }
}

/// Sessions with 128-bit random ids, an idle timeout and an absolute lifetime.
public final class SessionStore: @unchecked Sendable {
    public let idleTimeout: Double
    public let maxLifetime: Double
    public let maxSessions: Int
    public let maxSessionsPerUser: Int
    public let maxPinnedGenerations: Int
    private let clock: MonotonicClock
    private let lock = NIOLock()
    private var sessions: [String: Session] = [:]

    public init(
        idleTimeout: Double, maxLifetime: Double, maxSessions: Int, maxSessionsPerUser: Int = 32,
        maxPinnedGenerations: Int = 8,
        clock: MonotonicClock = .system
    ) {
        self.idleTimeout = idleTimeout
        self.maxLifetime = maxLifetime
        self.maxSessions = maxSessions
        self.maxSessionsPerUser = max(1, maxSessionsPerUser)
        self.maxPinnedGenerations = max(1, maxPinnedGenerations)
        self.clock = clock
    }

    /// 16 bytes from the system CSPRNG (getrandom), hex-encoded.
    package static func newSessionID() -> String {
        var rng = SystemRandomNumberGenerator()
        let a = rng.next() as UInt64
        let b = rng.next() as UInt64
        return String(format: "%016llx%016llx", a, b)
    }

    /// Opens a session. A user at ``maxSessionsPerUser`` loses their own least recently used session; when the
    /// store is full, the new session may only replace one of the same user's, never another user's.
    /// - Returns: nil when the store is full of other users' sessions.
    public func open(identity: Identity, clientAddress: String) -> Session? {
        let now = clock.now()
        let session = Session(
            id: SessionStore.newSessionID(), identity: identity, clientAddress: clientAddress, createdAt: now,
            lastUsedAt: now, autorefresh: true, pinned: nil, lostPinnedSnapshot: false)
        return lock.withLock {
            purgeLocked(now: now)
            let own = sessions.values.filter { $0.identity.user == identity.user }
            if own.count >= maxSessionsPerUser || sessions.count >= maxSessions {
                guard let oldest = own.min(by: { $0.lastUsedAt < $1.lastUsedAt }) else { return nil }
                sessions[oldest.id] = nil
            }
            sessions[session.id] = session
            return session
        }
    }

    /// Keeps session `id` from idling out until `until` (monotonic seconds): a client waiting in a long poll is not
    /// idle.
    public func keepAlive(_ id: String, until: Double) {
        lock.withLock {
            guard sessions[id] != nil else { return }
            sessions[id]!.lastUsedAt = max(sessions[id]!.lastUsedAt, until)
        }
    }

    /// Pins `snapshot` for session `id` (nil unpins). Each distinct pinned generation can keep a copy of the table
    /// alive (a counter refresh touches every chunk), so at most ``maxPinnedGenerations`` are kept: pinning one more
    /// lets go of the oldest, and the sessions that held it get the current table at their next view, with a note.
    public func pin(_ id: String, _ snapshot: MirrorSnapshot?) {
        lock.withLock {
            guard sessions[id] != nil else { return }
            sessions[id]!.pinned = snapshot
            sessions[id]!.lostPinnedSnapshot = false
            var generations = Set(sessions.values.compactMap { $0.pinned?.generation })
            while generations.count > maxPinnedGenerations, let oldest = generations.min() {
                generations.remove(oldest)
                for (key, s) in sessions where s.pinned?.generation == oldest {
                    sessions[key]!.pinned = nil
                    sessions[key]!.lostPinnedSnapshot = true
                }
            }
        }
    }

    /// Distinct table generations pinned by sessions now.
    public var pinnedGenerations: Int { lock.withLock { Set(sessions.values.compactMap { $0.pinned?.generation }).count } }

    /// Ends the sessions `keep` says no to (a reload that removed a user or took a role away).
    /// - Returns: the sessions ended.
    @discardableResult
    public func revoke(unless keep: (Session) -> Bool) -> [Session] {
        lock.withLock {
            let ended = sessions.values.filter { !keep($0) }
            for s in ended { sessions[s.id] = nil }
            return ended
        }
    }

    /// The live session for `id`, touching its idle timer; nil when unknown, expired or logged out.
    public func use(_ id: String) -> Session? {
        let now = clock.now()
        return lock.withLock {
            guard var s = sessions[id] else { return nil }
            if isExpired(s, now: now) {
                sessions[id] = nil
                return nil
            }
            s.lastUsedAt = now
            sessions[id] = s
            return s
        }
    }

    /// The live session for `id` without touching its idle timer; nil when unknown, expired or logged out.
    public func peek(_ id: String) -> Session? {
        let now = clock.now()
        return lock.withLock {
            guard let s = sessions[id], !isExpired(s, now: now) else { return nil }
            return s
        }
    }

    /// Changes a live session.
    public func update(_ id: String, _ change: (inout Session) -> Void) {
        lock.withLock {
            guard var s = sessions[id] else { return }
            change(&s)
            sessions[id] = s
        }
    }

    @discardableResult
    public func close(_ id: String) -> Bool { lock.withLock { sessions.removeValue(forKey: id) != nil } }

    public var count: Int {
        let now = clock.now()
        return lock.withLock {
            purgeLocked(now: now)
            return sessions.count
        }
    }

    private func isExpired(_ s: Session, now: Double) -> Bool {
        now - s.lastUsedAt > idleTimeout || now - s.createdAt > maxLifetime
    }

    private func purgeLocked(now: Double) {
        sessions = sessions.filter { !isExpired($0.value, now: now) }
    }
}
