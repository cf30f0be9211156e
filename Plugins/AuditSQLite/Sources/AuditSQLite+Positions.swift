import AuditLog
import CtdPluginAPI
import Synchronization

extension AuditSQLitePlugin: ChainedTrailRecorder {
    public func actionPositions(for tokens: [Int64]) -> [TrailPosition?] {
        positions.actions(tokens)
    }

    public func outcomePositions(for tokens: [Int64]) -> [TrailPosition?] {
        positions.outcomes(tokens)
    }
}

/// The rows written for recent actions, by token (the action row's seq): what the host hands to observers right after
/// the call that wrote them. Two generations of at most `limit` entries each: O(1) per row, bounded memory, and an
/// action's rows are still known long after its call (a change waiting on the kernel).
final class TrailPositionCache: Sendable {
    private struct Generation {
        var actions: [Int64: String] = [:]
        var outcomes: [Int64: TrailPosition] = [:]
    }
    private let limit: Int
    private let state = Mutex<(current: Generation, previous: Generation)>((Generation(), Generation()))

    init(limit: Int = 100_000) { self.limit = limit }

    func recordActions(_ rows: [(seq: Int64, hash: String)]) {
        state.withLock { s in
            for r in rows { s.current.actions[r.seq] = r.hash }
            rotate(&s)
        }
    }

    func recordOutcomes(_ rows: [(token: Int64, seq: Int64, hash: String)]) {
        state.withLock { s in
            for r in rows { s.current.outcomes[r.token] = TrailPosition(seq: r.seq, hash: r.hash) }
            rotate(&s)
        }
    }

    func actions(_ tokens: [Int64]) -> [TrailPosition?] {
        state.withLock { s in
            tokens.map { t in
                (s.current.actions[t] ?? s.previous.actions[t]).map { TrailPosition(seq: t, hash: $0) }
            }
        }
    }

    func outcomes(_ tokens: [Int64]) -> [TrailPosition?] {
        state.withLock { s in tokens.map { s.current.outcomes[$0] ?? s.previous.outcomes[$0] } }
    }

    private func rotate(_ s: inout (current: Generation, previous: Generation)) {
        if s.current.actions.count + s.current.outcomes.count > limit {
            s.previous = s.current
            s.current = Generation()
        }
    }
}
