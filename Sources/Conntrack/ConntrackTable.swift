import Foundation
import Logging

/// The one owner of the table: reads come from the mirror, and every write (kill, change) is one operation here,
/// kernel request and mirror update together, with typed outcomes.
///
/// Ids are resolved against the mirror; an id the mirror does not know yet is looked up again once the event thread
/// has caught up with the kernel (about a millisecond), so that "missing" means gone, not "its event is not applied
/// yet". Deletes and updates carry the id the client saw (CTA_ID; docs/design.md, "Acting on the exact entry").
public final class ConntrackTable: @unchecked Sendable {
    public let mirror: ConntrackMirror
    private let kernel: KernelConntrack
    /// Returns once every change the kernel made before the call is in the mirror, or `false` after the given
    /// seconds; `nil` when no event service follows the kernel (a table in a unit test).
    private let catchUpWithKernel: (@Sendable (Double) -> Bool)?
    /// Runs a reconciliation dump (shared by concurrent callers); nil without an event service.
    private let reconcile: (@Sendable () -> Void)?
    private let logger: Logger

    /// How long a lookup or refresh waits at most for the event thread to catch up.
    public static let catchUpWait = 0.25

    public init(mirror: ConntrackMirror, kernel: KernelConntrack, service: ConntrackService?, logger: Logger) {
        self.mirror = mirror
        self.kernel = kernel
        self.catchUpWithKernel = service.map { s in { s.catchUp(timeout: $0) } }
        self.reconcile = service.map { s in { s.reconcileNow() } }
        self.logger = logger
    }

    // MARK: Reading

    /// The latest generation of the table, shared with other readers.
    public func snapshot() -> MirrorSnapshot { mirror.snapshot() }

    /// A snapshot that holds every change the kernel made before the call, the end of entries older than ctd
    /// included: events are caught up with, and while the mirror holds entries whose end the kernel may not
    /// announce (``ConntrackMirror/Statistics/silentEntries``), a dump (shared by concurrent callers) notices it.
    public func freshSnapshot() -> MirrorSnapshot {
        catchUp()
        if mirror.statistics.silentEntries > 0 { reconcile?() }
        return mirror.snapshot()
    }

    /// Returns once every change the kernel made before the call is in the mirror; `false` when it timed out or
    /// nothing follows the kernel.
    @discardableResult
    public func catchUp() -> Bool { catchUpWithKernel?(Self.catchUpWait) ?? false }

    /// The entries with these ids; ids not found are looked up once more after catching up with the kernel.
    public func lookup(ids: [UInt32]) -> [ConntrackMirror.Lookup] {
        var results = mirror.lookup(ids: ids)
        let missing = results.indices.filter { if case .missing = results[$0] { return true } else { return false } }
        guard !missing.isEmpty, catchUp() else { return results }
        let again = mirror.lookup(ids: missing.map { ids[$0] })
        for (k, i) in missing.enumerated() { results[i] = again[k] }
        return results
    }

    public func lookup(id: UInt32) -> ConntrackMirror.Lookup { lookup(ids: [id])[0] }

    /// The entries with these identities (id and tuple) as the mirror holds them now; `nil`: gone.
    public func lookup(keys: [FlowKey]) -> [Flow?] { mirror.lookup(keys: keys) }

    /// The kernel's per-CPU counters (`conntrack -S`).
    public func cpuStatistics() throws -> [CPUStatistics] { try kernel.cpuStatistics() }

    // MARK: Writing

    /// What happened to one entry ctd was asked to delete or change.
    public typealias WriteOutcome = KernelConntrack.Outcome

    /// Deletes exactly these entries (tuple and id), in batches, and drops the deleted and the vanished ones from
    /// the mirror at once, so that the caller's next view shows the result.
    /// - Throws: ``KernelConntrack/Error`` when the netlink socket itself failed (nothing was sent).
    public func destroy(_ flows: [Flow]) throws -> [WriteOutcome] {
        guard flows.count >= Self.parallelRemovalThreshold else {
            let outcomes = try kernel.destroy(flows)
            mirror.remove(zip(flows, outcomes).compactMap { flow, outcome in outcome.removesEntry ? flow : nil })
            return outcomes
        }
        let removed = DispatchGroup()
        DispatchQueue.global(qos: .userInitiated).async(group: removed) { self.mirror.remove(flows) }
        let outcomes: [WriteOutcome]
        do {
            outcomes = try kernel.destroy(flows)
        } catch {
            removed.wait()
            mirror.restore(flows)
            throw error
        }
        removed.wait()
        mirror.restore(zip(flows, outcomes).compactMap { flow, outcome in outcome.removesEntry ? nil : flow })
        return outcomes
    }

    /// From this many entries, ``destroy(_:)`` has the mirror drop them on another thread while the kernel deletes
    /// them. At 250k the two cost about the same for 10,000 entries (the kernel 40-60 ms; the mirror 60-100 ms, most
    /// of it merging the removals into its seven ordered indexes), and the DESTROY events the kernel sends meanwhile
    /// find nothing left to do instead of doing the same work in small batches. A view during the call may miss an
    /// entry a few milliseconds before the kernel deletes it; one the kernel could not delete comes back as it was.
    static let parallelRemovalThreshold = 256

    /// Changes mark and/or timeout of exactly the entry `flow` (the same id), and stores the entry as the kernel
    /// has it afterwards.
    /// - Returns: the outcome and, when done, the entry after the change.
    public func update(_ flow: Flow, mark: UInt32?, timeout: UInt32?) throws -> (WriteOutcome, Flow?) {
        let (outcome, after) = try kernel.update(flow, mark: mark, timeout: timeout)
        switch outcome {
        case .done: if let after { mirror.replace(after) }
        case .gone: mirror.remove([flow])
        case .failed: break
        }
        return (outcome, after)
    }
}

extension KernelConntrack.Outcome {
    /// Whether the entry is no longer in the kernel's table after this outcome.
    var removesEntry: Bool {
        switch self {
        case .done, .gone: return true
        case .failed: return false
        }
    }
}
