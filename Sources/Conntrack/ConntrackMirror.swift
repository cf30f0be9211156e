import CtdRuntime
import Foundation
import Logging
import NIOConcurrencyHelpers

/// An immutable view of the table at one moment; queries run on it without locks.
public struct MirrorSnapshot: Sendable {
    public let flows: FlowTable
    /// The ordered indexes of exactly `flows` (the same generation).
    public let indexes: FlowIndexes
    public let generation: UInt64
    /// Wall-clock time (epoch seconds) and monotonic time the snapshot was taken.
    public let takenAt: Double
    public let monotonic: Double
}

/// The live copy of the kernel table: one dump at start, then events; a dump again after event loss.
///
/// Writers (the event thread, the counter refresher, kill/change) take the lock briefly; readers take an O(1)
/// copy-on-write snapshot of the latest generation.
public final class ConntrackMirror: @unchecked Sendable {
    public struct Statistics: Sendable {
        public var entries: Int
        public var generation: UInt64
        public var resyncs: Int
        public var eventsApplied: UInt64
        public var counterRefreshes: Int
        public var lastCounterRefresh: Double
        public var receiveBuffer: Int
        public var accountingEnabled: Bool
        /// `net.netfilter.nf_conntrack_timestamp`: the kernel records start times of new connections.
        public var timestampsEnabled = false
        public var eventsHealthy: Bool
        /// Entries from a dump not heard of by an event since: their end may only show in a dump.
        public var silentEntries = 0
        /// A resync dump is running (after lost events, or on request): until it lands, the mirror lags the kernel.
        public var resyncing = false
    }

    private let lock = NIOLock()
    private var flows = FlowTable()
    /// Ordered indexes of `flows`, changed with it (every write below goes through both).
    private var indexes = FlowIndexes()
    /// Parallel to `flows`: the reconciliation epoch in which the kernel last listed the entry.
    private var lastSeen: [UInt32] = []
    /// Parallel to `flows`: the entry came from a dump and no event has been heard of it since. Such an entry may
    /// have no event state in the kernel (created while nobody listened, `nf_conntrack_events = 2`), so its end
    /// may never be announced: only a dump notices it (docs/design.md, "Events and their loss").
    private var silent: [Bool] = []
    private var silentCount = 0
    private var reconcileEpoch: UInt32 = 0
    /// Full loads so far, and the count when the running reconciliation began: a resync that lands in the middle
    /// of a reconciliation rewrites `lastSeen` and the observation times, so that reconciliation must not drop.
    private var loads: UInt64 = 0
    private var loadsAtReconcileStart: UInt64 = 0
    /// Keys removed (by an event, a kill or a hide) while a reconciliation dump runs: a chunk of that dump read
    /// before the removal must not bring them back. `nil` while no reconciliation runs.
    private var removedDuringReconcile: Set<FlowKey>?
    /// FlowKey -> index (ids are found through `indexes.id`).
    private var indexByKey = FlowKeyTable()
    /// Writes of at least this many entries change the indexes as one batch (FlowIndexes.beginBatch).
    static let batchThreshold = 64
    private var generation: UInt64 = 0
    private var published: MirrorSnapshot?
    private var stats = Statistics(
        entries: 0, generation: 0, resyncs: 0, eventsApplied: 0, counterRefreshes: 0,
        lastCounterRefresh: 0, receiveBuffer: 0, accountingEnabled: false, eventsHealthy: false)
    private var lastViewAt: Double = -1e9
    public let clock: MonotonicClock
    /// What changed, in order, for `changes` (entries that appeared, changed mark, state or status, or ended).
    public let changes: ChangeFeed

    public private(set) var hide: HidePolicy
    package let logger: Logger

    public init(hide: HidePolicy, clock: MonotonicClock = .system, changeCapacity: Int = 16_384, logger: Logger) {
        self.hide = hide
        self.clock = clock
        self.changes = ChangeFeed(capacity: changeCapacity, clock: clock)
        self.logger = logger
    }

    /// Hides client connections to ctd's own port once it is bound (the port may be chosen by the system).
    public func hideOwnEndpoints(_ endpoints: Set<HidePolicy.Endpoint>) {
        lock.withLock { hide.ownEndpoints.formUnion(endpoints) }
    }

    // MARK: Reading

    /// The current table, shared with other readers; cheap.
    /// - Parameter countingAsView: false for a reader that is no client looking at the table (the metrics scrape):
    ///   the counter refresher then keeps its idle back-off (docs/metrics.md, "Measured").
    public func snapshot(countingAsView: Bool = true) -> MirrorSnapshot {
        let now = clock.now()
        return lock.withLock {
            if countingAsView { lastViewAt = now }
            if let p = published, p.generation == generation { return p }
            let s = MirrorSnapshot(
                flows: flows, indexes: indexes, generation: generation, takenAt: Date().timeIntervalSince1970, monotonic: now)
            published = s
            return s
        }
    }

    public enum Lookup {
        case found(Flow)
        case missing
        /// Several live entries share this id: refusing is the only way not to touch the wrong one.
        case ambiguous
    }

    /// The entries with these ids, under one lock (a bulk kill). `.missing` may mean "its event is not applied
    /// yet": ``ConntrackTable/lookup(ids:)`` looks such ids up again after catching up with the kernel.
    public func lookup(ids: [UInt32]) -> [Lookup] {
        lock.withLock { ids.map(lookupLocked) }
    }

    /// The entries with these identities (id and original tuple), under one lock: never ambiguous, since two live
    /// entries never share both (a kill of entries a preview saw).
    public func lookup(keys: [FlowKey]) -> [Flow?] {
        lock.withLock { keys.map { k in indexByKey.find(k, keyAt).map { flows[$0] } } }
    }

    private func lookupLocked(_ id: UInt32) -> Lookup {
        switch indexes.lookup(id: id) {
        case .none: return .missing
        case .one(let i): return .found(flows[i])
        case .several: return .ambiguous
        }
    }

    public var statistics: Statistics {
        lock.withLock {
            var s = stats
            s.entries = flows.count
            s.silentEntries = silentCount
            s.generation = generation
            return s
        }
    }

    /// Seconds since a client last asked for a snapshot.
    package var secondsSinceLastView: Double { lock.withLock { clock.now() - lastViewAt } }

    // MARK: Writing

    /// Every writer lets go of the shared snapshot before it changes the table: the chunks are then changed in place
    /// unless a reader still holds them, instead of being copied for a snapshot nobody may ask for again; the next
    /// `snapshot()` takes a fresh one (a copy of the chunk list).
    private func dropPublishedLocked() { published = nil }

    /// Adds or updates an entry from an event or dump. Caller holds the lock.
    private func upsertLocked(
        _ flow: Flow, present: ConntrackEvent.Fields, fromEvent: Bool = false, isNew: Bool = false
    ) {
        let key = FlowKey(flow)
        if let i = indexByKey.find(key, keyAt) {
            let old = flows[i]
            flows[i].merge(flow, present: present)
            let new = flows[i]
            indexes.update(old, new, at: i)
            if new.mark != old.mark || new.status != old.status || new.tcpState != old.tcpState {
                changes.record(.updated, new)
            }
            if fromEvent && silent[i] {
                silent[i] = false
                silentCount -= 1
            }
            return
        }
        if hide.hides(flow) { return }
        var flow = flow
        if isNew && flow.start == 0 && stats.timestampsEnabled {
            // The kernel stamps the start when it confirms the entry, which is when it sends NEW, but puts the
            // stamp in no NEW or UPDATE event: take the time the event arrived until a dump brings the exact one.
            flow.start = Date().timeIntervalSince1970
        }
        let i = flows.count
        flows.append(flow)
        indexes.add(flow, at: i)
        lastSeen.append(0)
        silent.append(false)
        changes.record(.new, flow)
        indexByKey.insert(key, index: i, keyAt)
    }

    /// The key of the flow at table index `i` (the hash table reads its keys back from the flows).
    @inline(__always) private func keyAt(_ i: Int) -> FlowKey { FlowKey(flows[i]) }

    private func removeLocked(_ key: FlowKey) {
        removedDuringReconcile?.insert(key)
        guard let i = indexByKey.find(key, keyAt) else { return }
        indexByKey.remove(key, index: i, keyAt)
        let last = flows.count - 1
        changes.record(.destroyed, flows[i])
        if silent[i] { silentCount -= 1 }
        indexes.remove(flows[i], at: i)
        if i != last {
            let moved = flows[last]
            indexes.move(moved, from: last, to: i)
            indexByKey.move(FlowKey(moved), from: last, to: i)
            flows[i] = moved
            lastSeen[i] = lastSeen[last]
            silent[i] = silent[last]
        }
        flows.removeLast()
        lastSeen.removeLast()
        silent.removeLast()
    }

    /// Replaces the hidden blocks (a reload); ctd's own ports stay hidden. Entries now hidden leave at once; entries
    /// no longer hidden come back with the next dump (``ConntrackService/resync(timeout:)``).
    public func setHiddenBlocks(_ blocks: [CIDRBlock]) {
        lock.withLock {
            hide.blocks = blocks
            let hidden = flows.filter(hide.hides).map(FlowKey.init)
            guard !hidden.isEmpty else { return }
            dropPublishedLocked()
            indexes.beginBatch()
            for key in hidden { removeLocked(key) }
            indexes.endBatch()
            generation &+= 1
        }
        changes.publish()
    }

    /// Applies a batch of events (type CTD_MSG_*) in order.
    public func apply(events: [ConntrackEvent]) {
        guard !events.isEmpty else { return }
        lock.withLock {
            dropPublishedLocked()
            let batched = events.count >= Self.batchThreshold
            if batched { indexes.beginBatch() }
            defer { if batched { indexes.endBatch() } }
            for e in events {
                switch e.kind {
                case .destroy: removeLocked(FlowKey(e.flow))
                case .new: upsertLocked(e.flow, present: e.fields, fromEvent: true, isNew: true)
                case .update: upsertLocked(e.flow, present: e.fields, fromEvent: true)
                case .listed: upsertLocked(e.flow, present: e.fields)
                }
            }
            generation &+= 1
            stats.eventsApplied &+= UInt64(events.count)
        }
        changes.publish()
    }

    /// Removes entries ctd itself deleted, without waiting for their events.
    func remove(_ removed: [Flow]) {
        guard !removed.isEmpty else { return }
        lock.withLock {
            // Also: the client that killed must see the result in its next view.
            dropPublishedLocked()
            let batched = removed.count >= Self.batchThreshold
            if batched { indexes.beginBatch() }
            for f in removed { removeLocked(FlowKey(f)) }
            if batched { indexes.endBatch() }
            generation &+= 1
        }
        changes.publish()
    }

    /// Puts back entries ``remove(_:)`` dropped before the kernel deleted them, for those it could not delete
    /// (``ConntrackTable/destroy(_:)``): as they were, unless an event brought them back already.
    func restore(_ flows: [Flow]) {
        guard !flows.isEmpty else { return }
        lock.withLock {
            dropPublishedLocked()
            let batched = flows.count >= Self.batchThreshold
            if batched { indexes.beginBatch() }
            for f in flows {
                removedDuringReconcile?.remove(FlowKey(f))
                upsertLocked(f, present: .all)
            }
            if batched { indexes.endBatch() }
            generation &+= 1
        }
        changes.publish()
    }

    /// Stores an entry as re-read from the kernel after ctd changed it.
    func replace(_ flow: Flow) {
        lock.withLock {
            dropPublishedLocked()
            upsertLocked(flow, present: .all)
            generation &+= 1
        }
        changes.publish()
    }

    /// Replaces the whole content with a fresh dump (start-up and resync after event loss).
    func load(_ dumped: [Flow], isResync: Bool) {
        load(isResync: isResync) { add in dumped.forEach(add) }
    }

    /// Replaces the whole content with what `fill` lists (a dump as it streams in, straight into chunks: no array
    /// of the whole dump is ever held beside the table).
    /// - Returns: the seconds spent building the indexes (the rest of the time is the dump's).
    @discardableResult
    func load(isResync: Bool, from fill: ((Flow) -> Void) throws -> Void) rethrows -> Double {
        let hide = lock.withLock { self.hide }
        // A later listing of the same entry replaces the earlier.
        var table = FlowTable()
        var byKey = FlowKeyTable(capacity: lock.withLock { flows.count })
        try fill { f in
            guard !hide.hides(f) else { return }
            let key = FlowKey(f)
            if let i = byKey.find(key, { FlowKey(table[$0]) }) {
                table[i] = f
            } else {
                table.append(f)
                byKey.insert(key, index: table.count - 1) { FlowKey(table[$0]) }
            }
        }
        let indexingStarted = clock.now()
        let built = FlowIndexes(table)
        let indexing = clock.now() - indexingStarted
        lock.withLock {
            dropPublishedLocked()
            flows = table
            indexes = built
            lastSeen = [UInt32](repeating: 0, count: table.count)
            silent = [Bool](repeating: true, count: table.count)
            silentCount = table.count
            indexByKey = byKey
            generation &+= 1
            loads &+= 1
            if isResync { stats.resyncs += 1 }
        }
        changes.reset()
        return indexing
    }

    /// Starts a reconciliation: merge every entry of a dump with `reconcile(chunk:)`, then `finishReconcile`.
    ///
    /// The dump refreshes counters, timeouts and marks (and byte rates over `interval`), and shows which entries the
    /// kernel no longer has. Entries that existed before ctd subscribed to events have no event cache in the kernel
    /// (`nf_conntrack_events = 2`, the default, adds it only while a listener exists), so their end produces no
    /// DESTROY event: only a dump notices it. The dump is applied in chunks as it streams in, so neither a copy of
    /// the table nor a set of its keys is ever built.
    func beginReconcile() -> UInt32 {
        lock.withLock {
            reconcileEpoch &+= 1
            if reconcileEpoch == 0 { reconcileEpoch = 1 }
            loadsAtReconcileStart = loads
            removedDuringReconcile = []
            return reconcileEpoch
        }
    }

    func reconcile(chunk: ArraySlice<Flow>, epoch: UInt32, interval: Double) {
        lock.withLock {
            // A resync replaced the table after this dump began: the load is newer than every chunk of it.
            guard loads == loadsAtReconcileStart, epoch == reconcileEpoch else { return }
            dropPublishedLocked()
            var changed = false
            for f in chunk {
                let key = FlowKey(f)
                guard let i = indexByKey.find(key, keyAt) else {
                    // Removed since the dump listed it (its DESTROY event, or a kill, came after the dump read
                    // it): the chunk is older than the removal.
                    if removedDuringReconcile?.contains(key) == true { continue }
                    // Listed by the kernel but unknown here: its NEW event was lost. (A hidden entry stays out.)
                    let before = flows.count
                    upsertLocked(f, present: .all)
                    if flows.count > before {
                        lastSeen[before] = epoch
                        changed = true
                    }
                    continue
                }
                lastSeen[i] = epoch
                let old = flows[i]
                // The dump's chunk may be older than an event (or a change ctd made) applied since it was read.
                if old.timeoutObservedAt > f.timeoutObservedAt { continue }
                var u = old
                u.merge(f, present: .all)
                let delta = f.totalBytes >= old.totalBytes ? f.totalBytes - old.totalBytes : 0
                u.byteRate = interval > 0 ? Double(delta) / interval : 0
                // The remaining timeout alone moves every second; it is computed at read time, not stored.
                let drift = Int64(old.remainingTimeout(at: f.timeoutObservedAt)) - Int64(f.timeout)
                if u.mark != old.mark || u.status != old.status || u.tcpState != old.tcpState
                    || u.totalPackets != old.totalPackets || u.byteRate != old.byteRate || abs(drift) > 1
                    || u.start != old.start || u.labelsLow != old.labelsLow || u.labelsHigh != old.labelsHigh
                    || u.helper != old.helper
                {
                    flows[i] = u
                    indexes.update(old, u, at: i)
                    changed = true
                    if u.mark != old.mark || u.status != old.status || u.tcpState != old.tcpState {
                        changes.record(.updated, u)
                    }
                }
            }
            if changed { generation &+= 1 }
        }
        changes.publish()
    }

    /// Drops entries the dump of `epoch` did not list, unless something was heard of them since the dump began
    /// (`dumpStartedAt`), so that events racing with the dump are not undone.
    /// - Returns: the number of entries dropped.
    @discardableResult
    func finishReconcile(epoch: UInt32, dumpStartedAt: Double) -> Int {
        let dropped: Int = lock.withLock {
            stats.counterRefreshes += 1
            stats.lastCounterRefresh = Date().timeIntervalSince1970
            defer { if epoch == reconcileEpoch { removedDuringReconcile = nil } }
            guard loads == loadsAtReconcileStart, epoch == reconcileEpoch else { return 0 }
            var vanished: [FlowKey] = []
            for i in flows.indices where lastSeen[i] != epoch && flows[i].timeoutObservedAt < dumpStartedAt {
                vanished.append(FlowKey(flows[i]))
            }
            if !vanished.isEmpty { dropPublishedLocked() }
            let batched = vanished.count >= Self.batchThreshold
            if batched { indexes.beginBatch() }
            for key in vanished { removeLocked(key) }
            if batched { indexes.endBatch() }
            if !vanished.isEmpty { generation &+= 1 }
            return vanished.count
        }
        changes.publish()
        return dropped
    }

    /// Ends a reconciliation whose dump failed: nothing is dropped.
    func abandonReconcile(epoch: UInt32) {
        lock.withLock { if epoch == reconcileEpoch { removedDuringReconcile = nil } }
    }

    /// Lets go of the published snapshot when nobody has looked for a while, so that the next change to the table
    /// does not copy it (the copy-on-write would otherwise keep two tables in memory).
    /// - Returns: whether a snapshot was let go.
    @discardableResult
    func releaseIdleSnapshot(after seconds: Double) -> Bool {
        lock.withLock {
            guard published != nil, clock.now() - lastViewAt > seconds else { return false }
            published = nil
            return true
        }
    }

    func setResyncing(_ on: Bool) { lock.withLock { stats.resyncing = on } }

    func setEventStatus(receiveBuffer: Int, healthy: Bool) {
        lock.withLock {
            stats.receiveBuffer = receiveBuffer
            stats.eventsHealthy = healthy
        }
    }

    func setAccounting(_ on: Bool) { lock.withLock { stats.accountingEnabled = on } }
    func setTimestamps(_ on: Bool) { lock.withLock { stats.timestampsEnabled = on } }
}
