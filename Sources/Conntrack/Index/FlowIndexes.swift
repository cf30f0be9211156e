import Dispatch
import Foundation

/// The mirror's ordered indexes: one ``OrderedIndex`` per indexed sort field, holding every flow's sort key (the
/// same keys the query engine's scan makes, ascending), kept up to date by the mirror under its lock and published
/// with each snapshot. A query ordered by an indexed field finds any page by rank; a query filtered by an indexed
/// field finds its candidates as key ranges (docs/benchmark.md, "Query plans").
///
/// Every key is tagged with the flow's IP protocol (`l4proto`), so a protocol filter counts and pages through an
/// index without reading the flows.
///
/// Keys carry the flow's table index, so the mirror's swap-remove (the last flow moves into the hole) re-keys the
/// moved flow in every index.
public struct FlowIndexes: Sendable {
    /// The sort fields that have an index. Counters and byte rates change at every refresh for most entries and
    /// are not indexed (their orders are scanned); the remaining timeout is indexed as the expiry time, which does
    /// not move with the clock.
    public enum Field: CaseIterable, Sendable {
        case id, mark, timeout, origPortSrc, origPortDst, origSrc, origDst
    }

    public private(set) var id = OrderedIndex<SortKey>()
    public private(set) var mark = OrderedIndex<SortKey>()
    public private(set) var timeout = OrderedIndex<SortKey>()
    public private(set) var origPortSrc = OrderedIndex<SortKey>()
    public private(set) var origPortDst = OrderedIndex<SortKey>()
    public private(set) var origSrc = OrderedIndex<AddressSortKey>()
    public private(set) var origDst = OrderedIndex<AddressSortKey>()

    public init() {}

    public var count: Int { id.count }

    // MARK: Keys

    @inline(__always) public static func idKey(_ f: Flow, _ i: Int) -> SortKey { .narrow(UInt64(f.id), id: f.id, index: i) }
    @inline(__always) public static func markKey(_ f: Flow, _ i: Int) -> SortKey {
        .narrow(UInt64(f.mark), id: f.id, index: i)
    }
    @inline(__always) public static func timeoutKey(_ f: Flow, _ i: Int) -> SortKey {
        .wide(SortKey.orderedBits(f.expiry), id: f.id, index: i)
    }
    @inline(__always) public static func origPortSrcKey(_ f: Flow, _ i: Int) -> SortKey {
        .narrow(UInt64(f.origSourcePort), id: f.id, index: i)
    }
    @inline(__always) public static func origPortDstKey(_ f: Flow, _ i: Int) -> SortKey {
        .narrow(UInt64(f.origDestinationPort), id: f.id, index: i)
    }
    @inline(__always) public static func origSrcKey(_ f: Flow, _ i: Int) -> AddressSortKey {
        AddressSortKey(f.origSource, id: f.id, index: i)
    }
    @inline(__always) public static func origDstKey(_ f: Flow, _ i: Int) -> AddressSortKey {
        AddressSortKey(f.origDestination, id: f.id, index: i)
    }

    /// Where the entries with this id are: none, one (its table index), or several (ids are random 32-bit values
    /// and may collide: about 116 pairs in a million entries).
    public enum IDLookup: Equatable { case none, one(Int), several }

    public func lookup(id: UInt32) -> IDLookup {
        let primary = UInt64(id) << 32 | UInt64(id)
        let keys = self.id.keys(notBelow: SortKey(a: primary, b: 0), limit: 2).filter { $0.a == primary }
        switch keys.count {
        case 0: return .none
        case 1: return .one(keys[0].tableIndex)
        default: return .several
        }
    }

    // MARK: Writing (the mirror, under its lock)

    /// Changes collected between ``beginBatch()`` and ``endBatch()``, per index, in the order they were made:
    /// appended, not hashed (a 10,000-entry kill makes 30,000 changes per index; `Set`'s SipHash of each was a
    /// quarter of the kill's CPU). ``PendingChanges/net()`` sorts them and keeps each key's net change.
    struct Pending {
        var changes = [PendingChanges<SortKey>](repeating: .init(), count: 5)
        var addressChanges = [PendingChanges<AddressSortKey>](repeating: .init(), count: 2)

        @inline(__always) mutating func remove(_ k: SortKey, _ i: Int) { changes[i].append(k, tag: 0, insert: false) }
        /// A key removed earlier in the batch and inserted again ends as a remove and an insert: its tag may have
        /// changed (another flow took that table index with the same primary value and id).
        @inline(__always) mutating func insert(_ k: SortKey, _ tag: UInt8, _ i: Int) {
            changes[i].append(k, tag: tag, insert: true)
        }
        @inline(__always) mutating func remove(_ k: AddressSortKey, _ i: Int) {
            addressChanges[i].append(k, tag: 0, insert: false)
        }
        @inline(__always) mutating func insert(_ k: AddressSortKey, _ tag: UInt8, _ i: Int) {
            addressChanges[i].append(k, tag: tag, insert: true)
        }
    }
    private var pending: Pending?

    /// From here to ``endBatch()``, changes are collected and then applied together (a bulk kill, a large event
    /// batch): the indexes are not read in between.
    public mutating func beginBatch() { if pending == nil { pending = Pending() } }

    public mutating func endBatch() {
        guard let p = pending else { return }
        pending = nil
        // A large batch (a bulk kill) rewrites every leaf of every index: the seven run two at a time, on both
        // cores (the caller holds the mirror's lock throughout either way).
        withEachIndex(parallel: p.changes[0].count >= 4096) { job, index in
            index.apply(p.changes[job].net())
        } address: { job, index in
            index.apply(p.addressChanges[job].net())
        }
    }

    /// Hands each of the seven indexes to `narrow` (the five of `SortKey`, jobs 0 to 4: id, mark, timeout,
    /// orig_port_src, orig_port_dst) or `address` (jobs 0 and 1: orig_src, orig_dst), two at a time on both cores
    /// when `parallel`, and stores them back. This struct lets go of them meanwhile, so that each is uniquely held
    /// and changes in place (a shared leaf would be copied on its first write).
    private mutating func withEachIndex(
        parallel: Bool, narrow: (Int, inout OrderedIndex<SortKey>) -> Void,
        address: (Int, inout OrderedIndex<AddressSortKey>) -> Void
    ) {
        var narrowIndexes = [id, mark, timeout, origPortSrc, origPortDst]
        var addressIndexes = [origSrc, origDst]
        (id, mark, timeout, origPortSrc, origPortDst) = (.init(), .init(), .init(), .init(), .init())
        (origSrc, origDst) = (.init(), .init())
        narrowIndexes.withUnsafeMutableBufferPointer { narrowOut in
            addressIndexes.withUnsafeMutableBufferPointer { addressOut in
                let nOut = narrowOut
                let aOut = addressOut
                DispatchQueue.concurrentPerform(iterations: parallel ? 2 : 1) { worker in
                    for job in stride(from: worker, to: 7, by: parallel ? 2 : 1) {
                        if job < 5 { narrow(job, &nOut[job]) } else { address(job - 5, &aOut[job - 5]) }
                    }
                }
            }
        }
        (id, mark, timeout, origPortSrc, origPortDst) = (
            narrowIndexes[0], narrowIndexes[1], narrowIndexes[2], narrowIndexes[3], narrowIndexes[4]
        )
        (origSrc, origDst) = (addressIndexes[0], addressIndexes[1])
    }

    /// A flow appended at table index `i`.
    public mutating func add(_ f: Flow, at i: Int) {
        if pending != nil {
            let t = f.l4proto
            pending!.insert(Self.idKey(f, i), t, 0)
            pending!.insert(Self.markKey(f, i), t, 1)
            pending!.insert(Self.timeoutKey(f, i), t, 2)
            pending!.insert(Self.origPortSrcKey(f, i), t, 3)
            pending!.insert(Self.origPortDstKey(f, i), t, 4)
            pending!.insert(Self.origSrcKey(f, i), t, 0)
            pending!.insert(Self.origDstKey(f, i), t, 1)
            return
        }
        id.insert(Self.idKey(f, i), tag: f.l4proto)
        mark.insert(Self.markKey(f, i), tag: f.l4proto)
        timeout.insert(Self.timeoutKey(f, i), tag: f.l4proto)
        origPortSrc.insert(Self.origPortSrcKey(f, i), tag: f.l4proto)
        origPortDst.insert(Self.origPortDstKey(f, i), tag: f.l4proto)
        origSrc.insert(Self.origSrcKey(f, i), tag: f.l4proto)
        origDst.insert(Self.origDstKey(f, i), tag: f.l4proto)
    }

    /// The flow at table index `i` leaves the table.
    public mutating func remove(_ f: Flow, at i: Int) {
        if pending != nil {
            pending!.remove(Self.idKey(f, i), 0)
            pending!.remove(Self.markKey(f, i), 1)
            pending!.remove(Self.timeoutKey(f, i), 2)
            pending!.remove(Self.origPortSrcKey(f, i), 3)
            pending!.remove(Self.origPortDstKey(f, i), 4)
            pending!.remove(Self.origSrcKey(f, i), 0)
            pending!.remove(Self.origDstKey(f, i), 1)
            return
        }
        id.remove(Self.idKey(f, i))
        mark.remove(Self.markKey(f, i))
        timeout.remove(Self.timeoutKey(f, i))
        origPortSrc.remove(Self.origPortSrcKey(f, i))
        origPortDst.remove(Self.origPortDstKey(f, i))
        origSrc.remove(Self.origSrcKey(f, i))
        origDst.remove(Self.origDstKey(f, i))
    }

    /// The flow at table index `i` changed from `old` to `new` (same id and tuple): only the keys that moved.
    @inline(__always) public mutating func update(_ old: Flow, _ new: Flow, at i: Int) {
        if old.mark != new.mark {
            if pending != nil {
                pending!.remove(Self.markKey(old, i), 1)
                pending!.insert(Self.markKey(new, i), new.l4proto, 1)
            } else {
                mark.replace(Self.markKey(old, i), with: Self.markKey(new, i), tag: new.l4proto)
            }
        }
        if old.timeout != new.timeout || old.timeoutObservedAt != new.timeoutObservedAt {
            if pending != nil {
                pending!.remove(Self.timeoutKey(old, i), 2)
                pending!.insert(Self.timeoutKey(new, i), new.l4proto, 2)
            } else {
                timeout.replace(Self.timeoutKey(old, i), with: Self.timeoutKey(new, i), tag: new.l4proto)
            }
        }
    }

    /// The flow `f` moved from table index `from` to `to` (the swap-remove).
    public mutating func move(_ f: Flow, from: Int, to: Int) {
        remove(f, at: from)
        add(f, at: to)
    }

    /// Indexes of the whole table, built from sorted key arrays (start-up and resync); the seven sorts run on
    /// all cores.
    public init(_ table: FlowTable) {
        let n = table.count
        // The protocols in table order, for the tags of the sorted keys.
        var protocols = [UInt8](repeating: 0, count: n)
        _ = table.forEachChunk { flows, first in
            for k in 0..<flows.count { protocols[first + k] = flows[k].l4proto }
        }
        func tags(_ keys: [some FlowIndexKey]) -> [UInt8] { keys.map { protocols[$0.tableIndex] } }
        let makers: [(Flow, Int) -> SortKey] = [
            Self.idKey, Self.markKey, Self.timeoutKey, Self.origPortSrcKey, Self.origPortDstKey,
        ]
        let addressMakers: [(Flow, Int) -> AddressSortKey] = [Self.origSrcKey, Self.origDstKey]
        // Two at a time (the machine's cores), so that at most two key arrays exist besides the indexes.
        withEachIndex(parallel: true) { job, index in
            var keys: [SortKey] = []
            keys.reserveCapacity(n)
            let make = makers[job]
            _ = table.forEachChunk { flows, first in
                for k in 0..<flows.count { keys.append(make(flows[k], first + k)) }
            }
            // Narrow keys: a = primary << 32 | id, b = table index (already ascending). Wide keys (the timeout):
            // a = primary, b = id << 32 | index.
            if job == 2 {
                radixSort(&keys, digits: 12) { k, d in d < 4 ? k.b >> (32 + 8 * d) : k.a >> (8 * (d - 4)) }
            } else {
                radixSort(&keys, digits: 8) { k, d in k.a >> (8 * d) }
            }
            index = OrderedIndex(sorted: keys, tags: tags(keys))
        } address: { job, index in
            var keys: [AddressSortKey] = []
            keys.reserveCapacity(n)
            let make = addressMakers[job]
            _ = table.forEachChunk { flows, first in
                for k in 0..<flows.count { keys.append(make(flows[k], first + k)) }
            }
            // id (the high half of tie), then low, high, family; the index is already ascending.
            radixSort(&keys, digits: 21) { k, d in
                switch d {
                case 0...3: return k.tie >> (32 + 8 * d)
                case 4...11: return k.low >> (8 * (d - 4))
                case 12...19: return k.high >> (8 * (d - 12))
                default: return k.family
                }
            }
            index = OrderedIndex(sorted: keys, tags: tags(keys))
        }
    }

    /// Checks every index against the table (tests): each holds exactly the table's keys.
    package func matches(_ table: FlowTable) -> Bool {
        var flows: [Flow] = []
        for i in 0..<table.count { flows.append(table[i]) }
        func same<K: FlowIndexKey>(_ index: OrderedIndex<K>, _ make: (Flow, Int) -> K) -> Bool {
            index.checkInvariants() && index.sortedKeys == flows.enumerated().map { make($1, $0) }.sorted()
                && zip(index.leaves, index.tags).allSatisfy { leaf, tags in
                    zip(leaf, tags).allSatisfy { flows[$0.tableIndex].l4proto == $1 }
                }
        }
        return same(id, Self.idKey) && same(mark, Self.markKey) && same(timeout, Self.timeoutKey)
            && same(origPortSrc, Self.origPortSrcKey) && same(origPortDst, Self.origPortDstKey)
            && same(origSrc, Self.origSrcKey) && same(origDst, Self.origDstKey)
    }
}

/// A key that names its flow's table index.
public protocol FlowIndexKey: Comparable, Sendable {
    var tableIndex: Int { get }
}

extension SortKey: FlowIndexKey {}
extension AddressSortKey: FlowIndexKey {}

/// A stable LSD radix sort by 8-bit digits, least significant first (`digit(k, d)`'s low 8 bits; d in
/// 0 ..< digits). Keys made in table order are already ascending by their last tie (the table index), so sorting
/// by the digits before it is the full order, in linear passes instead of n log n comparisons. A digit that is the
/// same in every key (the high bytes of a port, the upper half of an IPv4 key, the family) costs one counting pass
/// and no move. Sorts in place with one scratch array of the same size, freed on return: at a million 32-byte
/// address keys, the load's peak holds 32 MB less per index in flight than a sort that returns a new array
/// (input, copy and scratch).
@inline(__always)
func radixSort<K>(_ keys: inout [K], digits: Int, _ digit: (K, Int) -> UInt64) {
    let n = keys.count
    guard n > 1 else { return }
    var other = [K](repeating: keys[0], count: n)
    var counts = [Int](repeating: 0, count: 256)
    for d in 0..<digits {
        let skip: Bool = keys.withUnsafeBufferPointer { src in
            counts.withUnsafeMutableBufferPointer { c in
                for i in 0..<256 { c[i] = 0 }
                for k in src { c[Int(truncatingIfNeeded: digit(k, d) & 0xff)] += 1 }
                var sum = 0
                var single = false
                for i in 0..<256 {
                    let v = c[i]
                    if v == n { single = true }
                    c[i] = sum
                    sum += v
                }
                return single
            }
        }
        if skip { continue }
        keys.withUnsafeBufferPointer { src in
            other.withUnsafeMutableBufferPointer { dst in
                counts.withUnsafeMutableBufferPointer { c in
                    for k in src {
                        let b = Int(truncatingIfNeeded: digit(k, d) & 0xff)
                        dst[c[b]] = k
                        c[b] += 1
                    }
                }
            }
        }
        swap(&keys, &other)
    }
}

/// One index's changes in a batch, in order.
struct PendingChanges<K: Comparable> {
    private struct Change {
        var key: K
        var sequence: UInt32
        /// The tag, with bit 8 set for an insert.
        var kind: UInt16
    }
    private var changes: [Change] = []
    var count: Int { changes.count }

    @inline(__always) mutating func append(_ k: K, tag: UInt8, insert: Bool) {
        changes.append(
            Change(key: k, sequence: UInt32(truncatingIfNeeded: changes.count), kind: UInt16(tag) | (insert ? 0x100 : 0)))
    }

    /// The net change per key, both lists sorted: a key first removed stood in the index before the batch, one
    /// first inserted did not; the last change says whether it stands after it.
    func net() -> (removing: [K], inserting: [(K, UInt8)]) {
        guard !changes.isEmpty else { return ([], []) }
        // The changes of one key stay in the order they were made.
        let sorted = changes.sorted { $0.key != $1.key ? $0.key < $1.key : $0.sequence < $1.sequence }
        var removing: [K] = []
        var inserting: [(K, UInt8)] = []
        var i = 0
        while i < sorted.count {
            let key = sorted[i].key
            var j = i
            while j + 1 < sorted.count && sorted[j + 1].key == key { j += 1 }
            if sorted[i].kind & 0x100 == 0 { removing.append(key) }
            if sorted[j].kind & 0x100 != 0 { inserting.append((key, UInt8(truncatingIfNeeded: sorted[j].kind))) }
            i = j + 1
        }
        return (removing, inserting)
    }
}
