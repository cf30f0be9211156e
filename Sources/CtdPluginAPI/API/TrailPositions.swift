/// A capability of an ``ActionHook`` that keeps a hash chain (AuditSQLite): after its ``ActionHook/before(batch:)``
/// and ``ActionHook/after(batch:)`` the host asks where the rows it wrote are, and hands those positions to the
/// hooks that come after it in the configuration and observe them (``TrailPositionObserver``): a collector then
/// carries the chain's `seq` and hash beside each event.
///
/// Additive (no ABI version change): a plugin built before it is neither asked nor told. Thread-safety: called
/// concurrently, right after the recorder's own call for the same actions returned.
public protocol ChainedTrailRecorder: ActionHook {
    /// The rows the recorder wrote for actions, by the tokens its ``ActionHook/before(batch:)`` returned.
    /// - Parameter tokens: the recorder's tokens.
    /// - Returns: for each token, the action's row, or `nil` when it no longer knows it.
    func actionPositions(for tokens: [Int64]) -> [TrailPosition?]

    /// The outcome rows the recorder wrote in its ``ActionHook/after(batch:)`` for those tokens.
    /// - Parameter tokens: the recorder's tokens of the actions.
    /// - Returns: for each token, the outcome's row, or `nil`.
    func outcomePositions(for tokens: [Int64]) -> [TrailPosition?]
}

/// A capability of an ``ActionHook`` that wants the chain's position of each event (AuditSyslog). When a
/// ``ChainedTrailRecorder`` comes before it in the configuration, the host calls these in place of
/// ``ActionHook/before(batch:)`` and ``ActionHook/after(batch:)``; otherwise the plain ones, as for any hook.
public protocol TrailPositionObserver: ActionHook {
    /// ``ActionHook/before(batch:)`` with the recorder's row of each action.
    /// - Parameters:
    ///   - events: the actions about to happen.
    ///   - positions: the action rows, in order (`nil` where unknown).
    /// - Returns: one decision and token per event.
    /// - Throws: as ``ActionHook/before(batch:)``.
    func before(batch events: [ActionEvent], positions: [TrailPosition?]) throws
        -> [(decision: HookDecision, token: Int64)]

    /// ``ActionHook/after(batch:)`` with the recorder's rows.
    /// - Parameters:
    ///   - results: each event with this hook's token and the outcome.
    ///   - outcomePositions: the outcome rows, in order (`nil` where unknown).
    ///   - actionPositions: the action rows they complete.
    /// - Throws: as ``ActionHook/after(batch:)``.
    func after(
        batch results: [(event: ActionEvent, token: Int64, outcome: ActionOutcome)], outcomePositions: [TrailPosition?],
        actionPositions: [TrailPosition?]) throws
}
