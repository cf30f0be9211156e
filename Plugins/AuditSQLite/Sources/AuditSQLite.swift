import AuditLog
import CtdPluginAPI
import Foundation
import Synchronization

/// Records every login, kill, change and denied call in a hash-chained SQLite audit trail (see README.md next to
/// this directory).
///
/// Configuration (`[plugin.AuditSQLite]`, strict: any other key is an error):
/// - `database` (string, default `/var/lib/ctd/audit.db`): absolute path of the SQLite file (created with mode
///   0600; a missing parent directory is created with mode 0700).
/// - `sync` (string, default `"full"`): `"full"` or `"extra"`, SQLite's `synchronous` setting.
/// - `busy_timeout` (number of seconds, default 5): how long an append waits for another writer.
/// - `signing_key` (string, default `audit-signing.key` beside the database): the Ed25519 private key that signs
///   checkpoints; generated (mode 0600) when missing. `ctd audit pubkey` prints its public half.
/// - `checkpoint_rows` (integer, default 1000, 1 to 1,000,000): a signed checkpoint after this many rows.
/// - `checkpoint_seconds` (number, default 60, 1 to 86400): and at least this often while rows are written.
///
/// Policy: ``failureStopsAction`` is `true`. The action row is durable before ``before(_:)`` returns; if it cannot
/// be written the host refuses the action (fault 7), so nothing reaches the kernel unaudited.
public final class AuditSQLitePlugin: ActionHook {
    public let metadata = PluginMetadata(
        id: "hook.audit_sqlite",
        name: "AuditSQLite",
        version: "1.0.0",
        roles: [.actionHook],
        summary: "Writes every login, kill, change and denied call to a hash-chained SQLite audit trail first."
    )

    public let failureStopsAction = true

    static let configurationKeys: Set<String> = [
        "database", "sync", "busy_timeout", "signing_key", "checkpoint_rows", "checkpoint_seconds",
    ]
    static let defaultDatabase = AuditStore.defaultPath

    struct State: Sendable {
        let store: AuditStore
        let log: @Sendable (PluginLogLevel, String) -> Void
        let key: AuditSigningKey
        let checkpointRows: Int64
        let checkpointSeconds: Double
    }

    /// The head seq the last checkpoint signed and when it was written.
    private let anchored = Mutex<(seq: Int64, time: Double)>((0, 0))
    private let timer = Mutex<DispatchSourceTimer?>(nil)

    let state = Mutex<State?>(nil)
    /// The rows of recent actions, for ``ChainedTrailRecorder``.
    let positions = TrailPositionCache()
    /// The last write failure, until a write succeeds again.
    private let lastFailure = Mutex<String?>(nil)

    public init() {}

    public func configure(_ configuration: PluginConfiguration, context: PluginContext) throws {
        let name = metadata.name
        try configuration.expectOnly(Self.configurationKeys)
        guard let path = try configuration.string("database", default: Self.defaultDatabase) else {
            throw PluginError("plugin \(name) needs 'database' (the path of the SQLite audit file)")
        }
        guard path.hasPrefix("/") else {
            throw PluginError("'database' of plugin \(name) must be an absolute path, not '\(path)'")
        }
        let syncName = try configuration.string("sync", default: "full") ?? "full"
        guard let sync = AuditStore.Synchronous(rawValue: syncName.lowercased()) else {
            throw PluginError(
                "'sync' of plugin \(name) must be \"full\" or \"extra\", not '\(syncName)' (weaker settings would let "
                    + "an action reach the kernel before its record is on disk)")
        }
        let directory = (path as NSString).deletingLastPathComponent
        if !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw PluginError("plugin \(name): cannot create the directory of the audit database \(path): \(error)")
            }
        }
        let busyTimeout = try configuration.double("busy_timeout", default: 5) ?? 5
        guard busyTimeout >= 0 && busyTimeout <= 60 else {
            throw PluginError("'busy_timeout' of plugin \(name) must be 0 to 60 seconds")
        }
        let keyPath =
            try configuration.string("signing_key", default: nil)
            ?? ((directory as NSString).appendingPathComponent("audit-signing.key"))
        guard keyPath.hasPrefix("/") else {
            throw PluginError("'signing_key' of plugin \(name) must be an absolute path, not '\(keyPath)'")
        }
        let rows = try configuration.integer("checkpoint_rows", default: 1000) ?? 1000
        guard rows >= 1 && rows <= 1_000_000 else {
            throw PluginError("'checkpoint_rows' of plugin \(name) must be 1 to 1000000")
        }
        let seconds = try configuration.double("checkpoint_seconds", default: 60) ?? 60
        guard seconds >= 1 && seconds <= 86400 else {
            throw PluginError("'checkpoint_seconds' of plugin \(name) must be 1 to 86400 seconds")
        }
        let store: AuditStore
        let key: AuditSigningKey
        do {
            store = try AuditStore(path: path, synchronous: sync, busyTimeout: busyTimeout)
            do {
                key = try AuditSigningKey.loadOrCreate(path: keyPath)
                try store.markOpened()
            } catch {
                store.close()
                throw error
            }
        } catch {
            throw PluginError("plugin \(name): \(error)")
        }
        // The head, logged at start and stop, is an anchor outside the file: truncating the trail after it shows.
        if let head = try? store.head() {
            context.log(.info, "AuditSQLite: \(path) opened, head seq \(head.seq) hash \(head.hash)")
        } else {
            context.log(.info, "AuditSQLite: \(path) opened, empty")
        }
        let s = State(
            store: store, log: context.log, key: key, checkpointRows: Int64(rows), checkpointSeconds: seconds)
        state.withLock { $0 = s }
        try? checkpoint(s, kind: "open")
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "ctd.audit.checkpoint-timer"))
        t.schedule(deadline: .now() + seconds, repeating: seconds)
        t.setEventHandler { [weak self] in
            guard let self, let s = self.state.withLock({ $0 }) else { return }
            if let head = try? s.store.head(), head.seq > self.anchored.withLock({ $0.seq }) {
                try? self.checkpoint(s, kind: "periodic")
            }
            self.settle(s)
        }
        t.resume()
        timer.withLock { $0 = t }
    }

    /// Signs the head, logs the checkpoint (an anchor outside the file) and remembers what it covers.
    private func checkpoint(_ s: State, kind: String) throws {
        do {
            let c = try s.store.writeCheckpoint(kind: kind, key: s.key)
            anchored.withLock { $0 = (c.headSeq, AuditTime.now()) }
            s.log(.info, "AuditSQLite: \(c)")
        } catch {
            s.log(.error, "AuditSQLite: cannot write a signed checkpoint: \(error)")
            throw error
        }
    }

    /// After the interrupted outcomes of a crash: a checkpoint of kind `recovery`, and the settled mark moved past
    /// them.
    func recordedRecovery(_ s: State) {
        try? checkpoint(s, kind: "recovery")
        settle(s)
    }

    /// Moves the settled mark (``AuditStore/settle()``, which writes only when it moves), so that the next start-up
    /// reads only what came later. A failure is logged; the mark stays, which only makes the next start read more.
    private func settle(_ s: State) {
        do {
            try s.store.settle()
        } catch {
            s.log(.warning, "AuditSQLite: cannot record the settled mark: \(error)")
        }
    }

    /// A checkpoint when `checkpoint_rows` rows were written since the last one. A failed checkpoint does not
    /// refuse the action (its rows are durable); it is logged and the next write tries again.
    private func checkpointIfDue(_ s: State, head: Int64) {
        if head - anchored.withLock({ $0.seq }) >= s.checkpointRows { try? checkpoint(s, kind: "periodic") }
    }

    public func before(_ event: ActionEvent) throws -> (decision: HookDecision, token: Int64) {
        let entry = Self.entry(for: event)
        let row = try writeBatch([entry], doing: "record the \(event.kind.rawValue) by \(event.user)")[0]
        positions.recordActions([row])
        return (.allow, row.seq)
    }

    public func after(_ event: ActionEvent, token: Int64, outcome: ActionOutcome) throws {
        let (verdict, reason) = verdict(outcome)
        let row = Self.outcomeEntry(for: event, seq: token, outcome: verdict, reason: reason)
        let written = try writeBatch([row], doing: "record the outcome of seq \(token)")[0]
        positions.recordOutcomes([(token, written.seq, written.hash)])
    }

    /// A bulk kill: every pending row in one transaction, durable before any connection is touched.
    public func before(batch events: [ActionEvent]) throws -> [(decision: HookDecision, token: Int64)] {
        let rows = try writeBatch(events.map(Self.entry(for:)), doing: "record \(events.count) actions")
        positions.recordActions(rows)
        return rows.map { (HookDecision.allow, $0.seq) }
    }

    /// A bulk kill's outcomes. A run of actions that all succeeded, with consecutive rows (one batch: the same
    /// procedure, user and client), is completed by one outcome row naming the run (`ref_seq` to `ref_last`); each
    /// other action gets its own row. 10,000 connections killed: one outcome row, not 10,000 (docs/audit.md,
    /// "Outcome runs").
    public func after(batch results: [(event: ActionEvent, token: Int64, outcome: ActionOutcome)]) throws {
        var rows: [AuditEntry] = []
        /// For each result, the index in `rows` of the outcome row that completes it.
        var rowOf: [Int] = []
        rowOf.reserveCapacity(results.count)
        var i = 0
        while i < results.count {
            let r = results[i]
            let (verdict, reason) = verdict(r.outcome)
            var j = i
            if verdict == .succeeded {
                while j + 1 < results.count, results[j + 1].token == results[j].token + 1,
                    case .succeeded = results[j + 1].outcome, Self.sameActor(results[j + 1].event, r.event)
                {
                    j += 1
                }
            }
            if j > i {
                rows.append(
                    AuditEntry.outcome(
                        ofRun: Self.actor(of: r.event), first: r.token, last: results[j].token, outcome: verdict,
                        reason: reason))
            } else {
                rows.append(Self.outcomeEntry(for: r.event, seq: r.token, outcome: verdict, reason: reason))
            }
            rowOf.append(contentsOf: repeatElement(rows.count - 1, count: j - i + 1))
            i = j + 1
        }
        let written = try writeBatch(rows, doing: "record the outcomes of \(results.count) actions")
        positions.recordOutcomes(
            results.indices.map { (results[$0].token, written[rowOf[$0]].seq, written[rowOf[$0]].hash) })
    }

    private func verdict(_ outcome: ActionOutcome) -> (AuditOutcome, String?) {
        switch outcome {
        case .succeeded: return (.succeeded, nil)
        case .failed(let why): return (.failed, why)
        @unknown default: return (.failed, "outcome unknown to AuditSQLite \(metadata.version)")
        }
    }

    /// Whether two actions share the columns an outcome row repeats from its action (a run's row names them once).
    static func sameActor(_ a: ActionEvent, _ b: ActionEvent) -> Bool {
        a.kind == b.kind && a.procedure == b.procedure && a.user == b.user && a.roles == b.roles
            && a.clientAddress == b.clientAddress
    }

    public var healthProblem: String? {
        if state.withLock({ $0 == nil }) { return "not configured" }
        return lastFailure.withLock { $0 }
    }

    public func shutdown() {
        guard let s = state.withLock({ $0 }) else { return }
        timer.withLock {
            $0?.cancel()
            $0 = nil
        }
        try? checkpoint(s, kind: "shutdown")
        if let head = try? s.store.head() {
            s.log(.info, "AuditSQLite: closing \(s.store.path), head seq \(head.seq) hash \(head.hash)")
        }
        settle(s)
        try? s.store.markClosed()
        s.store.close()
    }

    // MARK: Helpers

    private func writeBatch(_ entries: [AuditEntry], doing what: String) throws -> [(seq: Int64, hash: String)] {
        guard let s = state.withLock({ $0 }) else { throw PluginError("plugin AuditSQLite is not configured") }
        do {
            let seqs = try s.store.appendReturningHashes(batch: entries)
            lastFailure.withLock { $0 = nil }
            if let last = seqs.last { checkpointIfDue(s, head: last.seq) }
            return seqs
        } catch {
            // The host logs the error and shows it in `plugins list`; healthProblem keeps it until a write succeeds.
            lastFailure.withLock { $0 = "last write failed: \(error)" }
            throw PluginError("cannot \(what): \(error)")
        }
    }

    static func entry(for event: ActionEvent) -> AuditEntry {
        var entry = AuditEntry(
            action: AuditAction(rawValue: event.kind.rawValue), procedure: event.procedure, user: event.user,
            roles: event.roles.map(\.rawValue), client: event.clientAddress,
            connection: event.connection.map(connection), field: event.field, newValue: event.newValue)
        if event.kind == .denied {
            // The host refuses the call itself and sends no outcome: the row is complete as written.
            entry.outcome = .failed
            entry.reason = "permission denied"
        }
        return entry
    }

    /// The outcome row of the action `event`, written as row `seq`: ``AuditEntry/outcome(of:seq:outcome:reason:)``
    /// without first building the action's whole entry (its tuple's strings are not part of an outcome row).
    static func outcomeEntry(for event: ActionEvent, seq: Int64, outcome: AuditOutcome, reason: String?) -> AuditEntry {
        AuditEntry.outcome(
            of: actor(of: event), connectionID: event.connection?.id, seq: seq, outcome: outcome, reason: reason)
    }

    /// Who did `event`, from where: the part of its entry an outcome row repeats.
    static func actor(of event: ActionEvent) -> AuditEntry {
        AuditEntry(
            action: AuditAction(rawValue: event.kind.rawValue), procedure: event.procedure, user: event.user,
            roles: event.roles.map(\.rawValue), client: event.clientAddress)
    }

    static func connection(_ c: ConnectionInfo) -> AuditConnection {
        AuditConnection(
            id: c.id, l3proto: c.l3proto, l4proto: c.l4proto,
            origSource: c.origSource, origDestination: c.origDestination,
            origSourcePort: c.origSourcePort, origDestinationPort: c.origDestinationPort,
            replySource: c.replySource, replyDestination: c.replyDestination,
            replySourcePort: c.replySourcePort, replyDestinationPort: c.replyDestinationPort,
            mark: c.mark, timeout: c.timeout, zone: c.zone)
    }
}

/// The entry symbol the host looks up with `dlsym` (``ctdPluginEntrySymbol``).
@_cdecl("ctd_plugin_create")
public func ctdPluginCreate() -> UnsafeMutableRawPointer? {
    CtdPluginExport.export(AuditSQLitePlugin())
}
