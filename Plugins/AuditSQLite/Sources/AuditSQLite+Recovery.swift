import AuditLog
import CtdPluginAPI

extension AuditSQLitePlugin: UnfinishedActionRecorder {
    /// The pending rows without an outcome row (a crash between the two), as the host's events.
    public func unfinishedActions() throws -> [UnfinishedAction] {
        guard let s = state.withLock({ $0 }) else { throw PluginError("plugin AuditSQLite is not configured") }
        let rows: [AuditUnfinishedAction]
        do {
            rows = try s.store.unfinishedActions()
        } catch {
            throw PluginError("cannot read the actions a crash left without an outcome: \(error)")
        }
        return rows.compactMap { row in
            // A kind this build does not know (a newer ctd wrote it) is left pending rather than guessed at.
            guard let kind = ActionKind(rawValue: row.entry.action.rawValue) else { return nil }
            let e = row.entry
            return UnfinishedAction(
                event: ActionEvent(
                    kind: kind, procedure: e.procedure, user: e.user, roles: e.roles.compactMap(Role.init(rawValue:)),
                    clientAddress: e.client, connection: e.connection.map(Self.connectionInfo), field: e.field,
                    newValue: e.newValue),
                token: row.seq)
        }
    }

    /// One `interrupted` outcome row per action, in one transaction, then a signed checkpoint (kind `recovery`) so
    /// that they are anchored at once.
    public func recordInterrupted(_ actions: [InterruptedAction]) throws
        -> [(outcome: TrailPosition, action: TrailPosition)?]
    {
        guard let s = state.withLock({ $0 }) else { throw PluginError("plugin AuditSQLite is not configured") }
        if actions.isEmpty { return [] }
        let pending: [AuditUnfinishedAction]
        do {
            pending = try s.store.unfinishedActions()
        } catch {
            throw PluginError("cannot read the actions a crash left without an outcome: \(error)")
        }
        let bySeq = Dictionary(pending.map { ($0.seq, $0) }, uniquingKeysWith: { a, _ in a })
        var rows: [(seq: Int64, entry: AuditEntry, reason: String)] = []
        var actionRows: [TrailPosition] = []
        for a in actions {
            // Only rows that are still unfinished: a token that names no pending row is the host's mistake, and an
            // outcome for an arbitrary row would be false.
            guard let row = bySeq[a.token] else {
                throw PluginError("seq \(a.token) is not an action without an outcome in \(s.store.path)")
            }
            rows.append((row.seq, row.entry, a.reason))
            actionRows.append(TrailPosition(seq: row.seq, hash: row.hash))
        }
        let written: [(seq: Int64, hash: String)]
        do {
            written = try s.store.appendInterrupted(rows)
        } catch {
            throw PluginError("cannot record the interrupted outcome of \(rows.count) actions: \(error)")
        }
        s.log(
            .warning,
            "AuditSQLite: recorded \(rows.count) actions as interrupted (the daemon stopped before their outcome): "
                + "seq \(written.first?.seq ?? 0) to \(written.last?.seq ?? 0)")
        recordedRecovery(s)
        return zip(written, actionRows).map { (outcome: TrailPosition(seq: $0.0.seq, hash: $0.0.hash), action: $0.1) }
    }

    static func connectionInfo(_ c: AuditConnection) -> ConnectionInfo {
        ConnectionInfo(
            id: c.id, l3proto: c.l3proto, l4proto: c.l4proto, origSource: c.origSource,
            origDestination: c.origDestination, origSourcePort: c.origSourcePort,
            origDestinationPort: c.origDestinationPort, replySource: c.replySource,
            replyDestination: c.replyDestination, replySourcePort: c.replySourcePort,
            replyDestinationPort: c.replyDestinationPort, mark: c.mark, timeout: c.timeout, status: 0, zone: c.zone)
    }
}
