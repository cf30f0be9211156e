import Foundation
import Logging
import NIOConcurrencyHelpers

/// Connections ctd never shows nor touches (pyctd 0.4.2's "filtering of unwanted connections").
public struct HidePolicy: Sendable {
    /// An entry is hidden when its original source or destination is in one of these blocks.
    public var blocks: [CIDRBlock]
    /// TCP ports of ctd's own listeners: client connections to ctd are hidden.
    public var ownTCPPorts: Set<UInt16>

    public init(blocks: [CIDRBlock] = [], ownTCPPorts: Set<UInt16> = []) {
        self.blocks = blocks
        self.ownTCPPorts = ownTCPPorts
    }

    public static let defaultBlocks = ["127.0.0.0/8", "::1/128"]

    @inline(__always)
    public func hides(_ flow: Flow) -> Bool {
        if flow.l4proto == 6, !ownTCPPorts.isEmpty, ownTCPPorts.contains(flow.origDestinationPort) { return true }
        for block in blocks where block.contains(flow.origSource) || block.contains(flow.origDestination) {
            return true
        }
        return false
    }
}

extension Flow {
    /// Takes the fields an event or dump carried (`present`) from `newer`; the tuple and id are the same.
    mutating func merge(_ newer: Flow, present: ConntrackMirror.Presence) {
        if present.contains(.mark) { mark = newer.mark }
        if present.contains(.status) { status = newer.status }
        if present.contains(.timeout) {
            timeout = newer.timeout
            timeoutObservedAt = newer.timeoutObservedAt
        }
        if present.contains(.state), newer.tcpState != Flow.noState { tcpState = newer.tcpState }
        if present.contains(.counters) {
            origBytes = newer.origBytes
            origPackets = newer.origPackets
            replyBytes = newer.replyBytes
            replyPackets = newer.replyPackets
        }
    }
}

/// An immutable view of the table at one moment; queries run on it without locks.
public struct MirrorSnapshot: Sendable {
    public let flows: FlowTable
    public let generation: UInt64
    /// Wall-clock time (epoch seconds) and monotonic time the snapshot was taken.
    public let takenAt: Double
    public let monotonic: Double
}

/// Identity of a kernel entry: the id alone can collide (a random 32-bit value; about 7 pairs in 250,000 entries),
/// so the mirror keys entries by id and original tuple.
struct FlowKey: Hashable {
    var id: UInt32
    var source: IPAddress
    var destination: IPAddress
    var sourcePort: UInt16
    var destinationPort: UInt16
    var l4proto: UInt8
    var zone: UInt16

    init(_ f: Flow) {
        id = f.id
        source = f.origSource
        destination = f.origDestination
        sourcePort = f.l4proto == 1 || f.l4proto == 58 ? f.icmpID : f.origSourcePort
        destinationPort = f.origDestinationPort
        l4proto = f.l4proto
        zone = f.zone
    }
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
        public var eventsHealthy: Bool
    }

    private let lock = NIOLock()
    private var flows = FlowTable()
    /// Parallel to `flows`: the reconciliation epoch in which the kernel last listed the entry.
    private var lastSeen: [UInt32] = []
    private var reconcileEpoch: UInt32 = 0
    /// Full loads so far, and the count when the running reconciliation began: a resync that lands in the middle
    /// of a reconciliation rewrites `lastSeen` and the observation times, so that reconciliation must not drop.
    private var loads: UInt64 = 0
    private var loadsAtReconcileStart: UInt64 = 0
    private var indexByKey: [FlowKey: Int] = [:]
    /// id -> index; ids shared by several entries are in `ambiguousIDs` with their count instead.
    private var indexByID: [UInt32: Int] = [:]
    private var ambiguousIDs: [UInt32: Int] = [:]
    private var generation: UInt64 = 0
    private var published: MirrorSnapshot?
    private var stats = Statistics(
        entries: 0, generation: 0, resyncs: 0, eventsApplied: 0, counterRefreshes: 0,
        lastCounterRefresh: 0, receiveBuffer: 0, accountingEnabled: false, eventsHealthy: false)
    private var lastViewAt: Double = -1e9
    private var catchUpHandler: (@Sendable (Double) -> Bool)?

    public private(set) var hide: HidePolicy
    let logger: Logger

    public init(hide: HidePolicy, logger: Logger) {
        self.hide = hide
        self.logger = logger
    }

    /// Hides client connections to ctd's own port once it is bound (the port may be chosen by the system).
    public func hideOwnPort(_ port: UInt16) {
        lock.withLock { _ = hide.ownTCPPorts.insert(port) }
    }

    // MARK: Reading

    /// The current table, shared with other readers; cheap.
    public func snapshot() -> MirrorSnapshot {
        let now = KernelConntrack.monotonicNow()
        return lock.withLock {
            lastViewAt = now
            if let p = published, p.generation == generation { return p }
            let s = MirrorSnapshot(
                flows: flows, generation: generation, takenAt: Date().timeIntervalSince1970, monotonic: now)
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

    public func lookup(id: UInt32) -> Lookup { lookup(ids: [id])[0] }

    /// Looks up many ids under one lock (a bulk kill). Ids not found are looked up once more after the mirror has
    /// caught up with the kernel's event queue (see ``setCatchUp(_:)``), so that a connection the kernel created a
    /// moment ago is found and `.missing` means gone, not "event not applied yet".
    public func lookup(ids: [UInt32]) -> [Lookup] {
        var results = lock.withLock { ids.map(lookupLocked) }
        let missing = results.indices.filter { if case .missing = results[$0] { return true } else { return false } }
        guard !missing.isEmpty, catchUp() else { return results }
        lock.withLock { for i in missing { results[i] = lookupLocked(ids[i]) } }
        return results
    }

    /// Returns once every change the kernel made before the call is in the mirror (at most ``catchUpWait``);
    /// `false` when it timed out or no event thread is attached.
    @discardableResult
    public func catchUp() -> Bool {
        guard let handler = lock.withLock({ catchUpHandler }) else { return false }
        return handler(Self.catchUpWait)
    }

    /// How long a lookup waits at most for the event thread to catch up (it takes about a millisecond).
    static let catchUpWait = 0.25

    /// Installs the function that returns once every change the kernel made before the call is in the mirror, or
    /// `false` after the given number of seconds (``ConntrackService/catchUp(timeout:)``).
    public func setCatchUp(_ handler: @escaping @Sendable (Double) -> Bool) {
        lock.withLock { catchUpHandler = handler }
    }

    private func lookupLocked(_ id: UInt32) -> Lookup {
        if ambiguousIDs[id] != nil { return .ambiguous }
        guard let i = indexByID[id] else { return .missing }
        return .found(flows[i])
    }

    public var statistics: Statistics {
        lock.withLock {
            var s = stats
            s.entries = flows.count
            s.generation = generation
            return s
        }
    }

    /// Seconds since a client last asked for a snapshot.
    var secondsSinceLastView: Double { lock.withLock { KernelConntrack.monotonicNow() - lastViewAt } }

    // MARK: Writing

    /// Every writer lets go of the shared snapshot before it changes the table: the chunks are then changed in place
    /// unless a reader still holds them, instead of being copied for a snapshot nobody may ask for again; the next
    /// `snapshot()` takes a fresh one (a copy of the chunk list).
    private func dropPublishedLocked() { published = nil }

    /// Which fields an event carried (CTD_HAS_* bits); a dump carries all.
    struct Presence: OptionSet {
        let rawValue: UInt8
        static let counters = Presence(rawValue: 0x01)
        static let mark = Presence(rawValue: 0x02)
        static let timeout = Presence(rawValue: 0x04)
        static let status = Presence(rawValue: 0x08)
        static let state = Presence(rawValue: 0x10)
        static let all = Presence(rawValue: 0xff)
    }

    /// Adds or updates an entry from an event or dump. Caller holds the lock.
    private func upsertLocked(_ flow: Flow, present: Presence) {
        let key = FlowKey(flow)
        if let i = indexByKey[key] {
            flows[i].merge(flow, present: present)
            return
        }
        if hide.hides(flow) { return }
        let i = flows.count
        flows.append(flow)
        lastSeen.append(0)
        indexByKey[key] = i
        addIDLocked(flow.id, index: i)
    }

    private func addIDLocked(_ id: UInt32, index: Int) {
        if let n = ambiguousIDs[id] {
            ambiguousIDs[id] = n + 1
        } else if indexByID[id] != nil {
            indexByID[id] = nil
            ambiguousIDs[id] = 2
        } else {
            indexByID[id] = index
        }
    }

    private func removeLocked(_ key: FlowKey) {
        guard let i = indexByKey.removeValue(forKey: key) else { return }
        let id = flows[i].id
        var survivorToFind = false
        if let n = ambiguousIDs[id] {
            if n > 2 {
                ambiguousIDs[id] = n - 1
            } else {
                ambiguousIDs[id] = nil
                survivorToFind = true
            }
        } else {
            indexByID[id] = nil
        }
        let last = flows.count - 1
        if i != last {
            let moved = flows[last]
            flows[i] = moved
            lastSeen[i] = lastSeen[last]
            indexByKey[FlowKey(moved)] = i
            if indexByID[moved.id] == last { indexByID[moved.id] = i }
        }
        flows.removeLast()
        lastSeen.removeLast()
        if survivorToFind {
            // The id just stopped being shared: find the survivor (rare, a linear scan is fine).
            if let j = flows.firstIndex(where: { $0.id == id }) { indexByID[id] = j }
        }
    }

    /// Applies a batch of events (type CTD_MSG_*) in order.
    func apply(events: [(type: Int32, present: UInt8, flow: Flow)]) {
        guard !events.isEmpty else { return }
        lock.withLock {
            dropPublishedLocked()
            for e in events {
                if e.type == 4 {
                    removeLocked(FlowKey(e.flow))
                } else {
                    upsertLocked(e.flow, present: Presence(rawValue: e.present))
                }
            }
            generation &+= 1
            stats.eventsApplied &+= UInt64(events.count)
        }
    }

    /// Removes entries ctd itself deleted, without waiting for their events.
    func remove(_ removed: [Flow]) {
        guard !removed.isEmpty else { return }
        lock.withLock {
            // Also: the client that killed must see the result in its next view.
            dropPublishedLocked()
            for f in removed { removeLocked(FlowKey(f)) }
            generation &+= 1
        }
    }

    /// Stores an entry as re-read from the kernel after ctd changed it.
    func replace(_ flow: Flow) {
        lock.withLock {
            dropPublishedLocked()
            upsertLocked(flow, present: .all)
            generation &+= 1
        }
    }

    /// Replaces the whole content with a fresh dump (start-up and resync after event loss).
    func load(_ dumped: [Flow], isResync: Bool) {
        var newFlows: [Flow] = []
        newFlows.reserveCapacity(dumped.count)
        var byKey: [FlowKey: Int] = [:]
        byKey.reserveCapacity(dumped.count)
        let hide = lock.withLock { self.hide }
        for f in dumped where !hide.hides(f) {
            let key = FlowKey(f)
            if let i = byKey[key] {
                newFlows[i] = f
            } else {
                byKey[key] = newFlows.count
                newFlows.append(f)
            }
        }
        lock.withLock {
            dropPublishedLocked()
            flows = FlowTable(newFlows)
            lastSeen = [UInt32](repeating: 0, count: newFlows.count)
            indexByKey = byKey
            indexByID = [:]
            indexByID.reserveCapacity(newFlows.count)
            ambiguousIDs = [:]
            for (i, f) in newFlows.enumerated() { addIDLocked(f.id, index: i) }
            generation &+= 1
            loads &+= 1
            if isResync { stats.resyncs += 1 }
        }
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
            return reconcileEpoch
        }
    }

    func reconcile(chunk: ArraySlice<Flow>, epoch: UInt32, interval: Double) {
        lock.withLock {
            dropPublishedLocked()
            var changed = false
            for f in chunk {
                guard let i = indexByKey[FlowKey(f)] else {
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
                var u = old
                u.merge(f, present: .all)
                let delta = f.totalBytes >= old.totalBytes ? f.totalBytes - old.totalBytes : 0
                u.byteRate = interval > 0 ? Double(delta) / interval : 0
                // The remaining timeout alone moves every second; it is computed at read time, not stored.
                let drift = Int64(old.remainingTimeout(at: f.timeoutObservedAt)) - Int64(f.timeout)
                if u.mark != old.mark || u.status != old.status || u.tcpState != old.tcpState
                    || u.totalPackets != old.totalPackets || u.byteRate != old.byteRate || abs(drift) > 1
                {
                    flows[i] = u
                    changed = true
                }
            }
            if changed { generation &+= 1 }
        }
    }

    /// Drops entries the dump of `epoch` did not list, unless something was heard of them since the dump began
    /// (`dumpStartedAt`), so that events racing with the dump are not undone.
    /// - Returns: the number of entries dropped.
    @discardableResult
    func finishReconcile(epoch: UInt32, dumpStartedAt: Double) -> Int {
        lock.withLock {
            stats.counterRefreshes += 1
            stats.lastCounterRefresh = Date().timeIntervalSince1970
            guard loads == loadsAtReconcileStart, epoch == reconcileEpoch else { return 0 }
            var vanished: [FlowKey] = []
            for i in flows.indices where lastSeen[i] != epoch && flows[i].timeoutObservedAt < dumpStartedAt {
                vanished.append(FlowKey(flows[i]))
            }
            if !vanished.isEmpty { dropPublishedLocked() }
            for key in vanished { removeLocked(key) }
            if !vanished.isEmpty { generation &+= 1 }
            return vanished.count
        }
    }

    /// Lets go of the published snapshot when nobody has looked for a while, so that the next change to the table
    /// does not copy it (the copy-on-write would otherwise keep two tables in memory).
    /// - Returns: whether a snapshot was let go.
    @discardableResult
    func releaseIdleSnapshot(after seconds: Double) -> Bool {
        lock.withLock {
            guard published != nil, KernelConntrack.monotonicNow() - lastViewAt > seconds else { return false }
            published = nil
            return true
        }
    }

    func setEventStatus(receiveBuffer: Int, healthy: Bool) {
        lock.withLock {
            stats.receiveBuffer = receiveBuffer
            stats.eventsHealthy = healthy
        }
    }

    func setAccounting(_ on: Bool) { lock.withLock { stats.accountingEnabled = on } }
}
