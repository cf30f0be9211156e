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

    public var role: Role { identity.highestRole ?? .viewer }
}

/// Sessions with 128-bit random ids, an idle timeout and an absolute lifetime.
public final class SessionStore: @unchecked Sendable {
    public let idleTimeout: Double
    public let maxLifetime: Double
    public let maxSessions: Int
    private let clock: MonotonicClock
    private let lock = NIOLock()
    private var sessions: [String: Session] = [:]

    public init(
        idleTimeout: Double, maxLifetime: Double, maxSessions: Int,
        clock: MonotonicClock = .system
    ) {
        self.idleTimeout = idleTimeout
        self.maxLifetime = maxLifetime
        self.maxSessions = maxSessions
        self.clock = clock
    }

    /// 16 bytes from the system CSPRNG (getrandom), hex-encoded.
    package static func newSessionID() -> String {
        var rng = SystemRandomNumberGenerator()
        let a = rng.next() as UInt64
        let b = rng.next() as UInt64
        return String(format: "%016llx%016llx", a, b)
    }

    /// Opens a session; the oldest idle one is dropped when the store is full.
    public func open(identity: Identity, clientAddress: String) -> Session {
        let now = clock.now()
        let session = Session(
            id: SessionStore.newSessionID(), identity: identity, clientAddress: clientAddress, createdAt: now,
            lastUsedAt: now, autorefresh: true, pinned: nil)
        lock.withLock {
            purgeLocked(now: now)
            if sessions.count >= maxSessions,
                let oldest = sessions.values.min(by: { $0.lastUsedAt < $1.lastUsedAt })
            {
                sessions[oldest.id] = nil
            }
            sessions[session.id] = session
        }
        return session
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
