/// An action a hook recorded before it happened and whose outcome it never recorded: the daemon stopped in
/// between (`kill -9`, a crash, a power cut). Returned by ``UnfinishedActionRecorder/unfinishedActions()``.
public struct UnfinishedAction: Sendable, Equatable {
    /// The action as the hook recorded it (for kill and change: the connection as it was before the action).
    public var event: ActionEvent
    /// The token the recording hook's ``ActionHook/before(_:)`` returned for it (AuditSQLite: the row's `seq`).
    public var token: Int64

    /// Creates an unfinished action.
    /// - Parameters:
    ///   - event: the recorded action.
    ///   - token: the recorder's token for it.
    public init(event: ActionEvent, token: Int64) {
        self.event = event
        self.token = token
    }
}

/// A position in a hash-chained trail: a row's number and hash.
public struct TrailPosition: Sendable, Equatable {
    /// The row's sequence number.
    public var seq: Int64
    /// The row's chain hash (lowercase hex).
    public var hash: String

    /// Creates a position.
    /// - Parameters:
    ///   - seq: the row's number.
    ///   - hash: its chain hash.
    public init(seq: Int64, hash: String) {
        self.seq = seq
        self.hash = hash
    }
}

/// An unfinished action with what the host found in the kernel table at start-up: its "interrupted" outcome.
public struct InterruptedAction: Sendable, Equatable {
    /// The action as it was recorded.
    public var event: ActionEvent
    /// The recording hook's token for the action.
    public var token: Int64
    /// The name of the plugin that recorded the action (``PluginMetadata/name``).
    public var recordedBy: String
    /// For kill and change: whether the connection (same id, same original tuple, same zone) is still in the kernel
    /// table; `nil` for actions that touch no connection (a login, an audit read).
    public var connectionPresent: Bool?
    /// The connection as the kernel has it now, when it is present.
    public var current: ConnectionInfo?
    /// One sentence: what the kernel's state says about the action (e.g. "the connection is still in the kernel
    /// table: the kill did not reach it").
    public var reason: String
    /// The recorder's row for the interrupted outcome and the action's row, set by the host after
    /// ``UnfinishedActionRecorder/recordInterrupted(_:)`` returned them (`nil` before, or if the recorder keeps no chain).
    public var outcomeRecord: TrailPosition?
    /// The action's own row in the recorder's trail, when the recorder keeps a chain.
    public var actionRecord: TrailPosition?

    /// Creates an interrupted action.
    public init(
        event: ActionEvent, token: Int64, recordedBy: String, connectionPresent: Bool?, current: ConnectionInfo?,
        reason: String, outcomeRecord: TrailPosition? = nil, actionRecord: TrailPosition? = nil
    ) {
        self.event = event
        self.token = token
        self.recordedBy = recordedBy
        self.connectionPresent = connectionPresent
        self.current = current
        self.reason = reason
        self.outcomeRecord = outcomeRecord
        self.actionRecord = actionRecord
    }
}

/// A capability of an ``ActionHook`` that records actions before they happen (two-phase, like AuditSQLite): after a
/// crash it can name the actions that have no outcome, and record the "interrupted" outcome the host derives from
/// the kernel table.
///
/// Call order: once at start-up, after every plugin's ``CtdPlugin/configure(_:context:)`` and the first read of the
/// kernel table, before the daemon accepts any call: ``unfinishedActions()``, then (when there are any)
/// ``recordInterrupted(_:)``. Then ``InterruptedActionObserver/observeInterrupted(_:)`` on every other hook that
/// observes. The host looks for the capability with `as?`; it is additive (no ABI version change): a plugin built
/// before it simply is not asked.
public protocol UnfinishedActionRecorder: ActionHook {
    /// The actions recorded as about to happen with no outcome, oldest first.
    /// - Throws: ``PluginError`` when the record cannot be read; the host logs it and reports the plugin unhealthy.
    func unfinishedActions() throws -> [UnfinishedAction]

    /// Records the interrupted outcome of each action (all or nothing, durable when it returns).
    /// - Parameter actions: the actions ``unfinishedActions()`` returned, each with the kernel's finding.
    /// - Returns: for each action in order, the position of the outcome row and of the action row, when the record
    ///   is a chain (`nil` entries otherwise).
    /// - Throws: ``PluginError`` when it cannot be written; the actions stay unfinished and the next start retries.
    func recordInterrupted(_ actions: [InterruptedAction]) throws -> [(outcome: TrailPosition, action: TrailPosition)?]
}

/// A capability of an ``ActionHook`` that forwards events (like AuditSyslog): it hears of the interrupted
/// outcomes another hook recorded at start-up, so that the collector sees them too. Its own messages about those
/// actions were sent before the crash with its own tokens, which the host cannot give back; the recorder's trail
/// positions (``InterruptedAction/actionRecord``) tie the outcome to the action instead.
///
/// Called once at start-up, after ``UnfinishedActionRecorder/recordInterrupted(_:)`` succeeded, before the daemon
/// accepts any call. Additive, like ``UnfinishedActionRecorder``.
public protocol InterruptedActionObserver: ActionHook {
    /// Hears the interrupted outcomes.
    /// - Parameter actions: what the recorder recorded, with its trail positions.
    /// - Throws: ``PluginError``; logged and reported as health (the recorder's trail has them already).
    func observeInterrupted(_ actions: [InterruptedAction]) throws
}
