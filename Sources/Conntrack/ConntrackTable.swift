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
        let result = destroy(flows, parts: flows.isEmpty ? [] : [flows.indices]) {
            Array(repeating: true, count: $0.count)
        }
        if let error = result.socketFailure { throw error }
        return result.outcomes.map { $0! }
    }

    /// What ``destroy(_:parts:approve:)`` did.
    public struct PartedDestroy {
        /// Per entry: the kernel's outcome, or `nil` when it was not approved or its part was never reached.
        public var outcomes: [WriteOutcome?]
        /// What `approve` threw, which stopped the approvals at that part.
        public var stoppedBy: (any Swift.Error)?
        /// The netlink socket failure, when every part given to the kernel failed so (nothing was sent or answered;
        /// those entries have ``KernelConntrack/Outcome/failed(_:)``).
        public var socketFailure: (any Swift.Error)?
    }

    /// Deletes `flows` part by part, each part once `approve` allows it: `approve` is called on the caller's thread
    /// for each part in turn and answers, for each entry of the part, whether it may go. The kernel deletes an
    /// approved part on another thread while the caller approves the next, so that writing the audit records of a
    /// bulk kill and the kernel's deletes overlap. An `approve` that throws stops the kill at that part: the parts
    /// approved before it are still deleted, nothing from that part on.
    ///
    /// From ``parallelRemovalThreshold`` entries the mirror drops all of them at once on a third thread, when the
    /// call begins, and takes back, as they were, the ones that were not deleted in the end (not approved, not
    /// reached, kept by the kernel): a `view` during the call may miss an entry up to the call's end before the
    /// kernel deletes it or keeps it. Smaller calls drop each part's deleted entries once the kernel answered it.
    /// - Parameter parts: consecutive ranges covering `flows.indices`, in order.
    public func destroy(
        _ flows: [Flow], parts: [Range<Int>], approve: (Range<Int>) throws -> [Bool]
    ) -> PartedDestroy {
        precondition(parts.map(\.count).reduce(0, +) == flows.count, "parts must cover the entries")
        let results = PartResults(count: flows.count)
        let removedAtOnce = flows.count >= Self.parallelRemovalThreshold
        let removal = DispatchGroup()
        if removedAtOnce {
            DispatchQueue.global(qos: .userInitiated).async(group: removal) { self.mirror.remove(flows) }
        }
        // With one part there is nothing to overlap: no thread hop (most kills are one part).
        let kernelQueue = parts.count > 1 ? DispatchQueue(label: "ctd.table.destroy", qos: .userInitiated) : nil
        let deleted = DispatchGroup()
        var stoppedBy: (any Swift.Error)?
        for part in parts {
            let approved: [Bool]
            do {
                approved = try approve(part)
            } catch {
                stoppedBy = error
                break
            }
            precondition(approved.count == part.count, "approve must answer for each entry of its part")
            let indices = part.filter { approved[$0 - part.lowerBound] }
            if indices.isEmpty { continue }
            let delete: @Sendable () -> Void = {
                let batch = indices.map { flows[$0] }
                do {
                    let outcomes = try self.kernel.destroy(batch)
                    results.set(indices, outcomes)
                    if !removedAtOnce {
                        self.mirror.remove(zip(batch, outcomes).compactMap { $1.removesEntry ? $0 : nil })
                    }
                } catch {
                    results.set(indices, socketFailure: error)
                }
            }
            if let kernelQueue { kernelQueue.async(group: deleted, execute: delete) } else { delete() }
        }
        deleted.wait()
        let result = PartedDestroy(
            outcomes: results.outcomes, stoppedBy: stoppedBy,
            socketFailure: results.anyAnswered ? nil : results.socketFailure)
        if removedAtOnce {
            removal.wait()
            mirror.restore(flows.indices.compactMap { result.outcomes[$0]?.removesEntry == true ? nil : flows[$0] })
        }
        return result
    }

    /// The kernel thread's answers in ``destroy(_:parts:approve:)``, read by the caller once the thread is done.
    private final class PartResults: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var outcomes: [WriteOutcome?]
        private(set) var socketFailure: (any Swift.Error)?
        private(set) var anyAnswered = false

        init(count: Int) { outcomes = Array(repeating: nil, count: count) }

        func set(_ indices: [Int], _ answers: [WriteOutcome]) {
            lock.withLock {
                for (k, i) in indices.enumerated() { outcomes[i] = answers[k] }
                anyAnswered = true
            }
        }

        func set(_ indices: [Int], socketFailure error: any Swift.Error) {
            lock.withLock {
                for i in indices { outcomes[i] = .failed("the conntrack netlink socket failed: \(error)") }
                socketFailure = error
            }
        }
    }

    /// From this many entries, ``destroy(_:parts:approve:)`` (and ``destroy(_:)``) has the mirror drop them on
    /// another thread while the kernel deletes them. At 250k the two cost about the same for 10,000 entries (the
    /// kernel 35-65 ms; the mirror 55-105 ms, most of it merging the removals into its seven ordered indexes), and
    /// the DESTROY events the kernel sends meanwhile find nothing left to do instead of doing the same work in small
    /// batches. A view during the call may miss an entry before the kernel deletes it; one the kernel could not
    /// delete, or that was never approved, comes back as it was.
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
