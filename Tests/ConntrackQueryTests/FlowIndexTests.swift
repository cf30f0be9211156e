import Foundation
import Logging
import TestSupport
import Testing

@testable import Conntrack
@testable import ConntrackQuery
import CtdRuntime

// The indexed plans (FlowQueryEngine+Indexed) against the scan and the naive reference (FlowQueryTests), on random
// tables and random queries, including while events change the table, and once at a million entries.

private func parse(_ filters: [String: FilterInput], order: String?, dir: String, start: Int, length: Int) -> FlowQuery {
    try! FlowQuery.parse(
        filters: filters, orderBy: order, orderDirection: dir, start: Int64(start), length: Int64(length),
        maxLength: 100_000, resolvedFields: [])
}

/// Random queries of the shapes frontends send: no filter, indexed and non-indexed filters (selective and not),
/// orders over indexed and scanned fields, either direction, shallow and deep pages.
private struct QueryMaker {
    var g: SplitMix
    let size: Int

    mutating func pick<T>(_ xs: [T]) -> T { xs[Int.random(in: 0..<xs.count, using: &g)] }

    mutating func filters() -> [String: FilterInput] {
        switch Int.random(in: 0..<12, using: &g) {
        case 0, 1, 2: return [:]
        case 3: return ["orig_port_dst": pick([53, 80, 443, 9])]
        case 4: return ["orig_port_src": [FilterInput.int(Int64(pick([1000, 1003, 1009]))), .int(1001)]]
        case 5: return ["mark": pick([0, 1, 7, -1])]
        case 6: return ["orig_dst": pick(["10.0.2.0/30", "10.0.0.0/8", "10.0.3.1", "2001:db8::/64", "2001:db8::/127"])]
        case 7: return ["orig_src": [FilterInput.string("10.0.1.0/24"), .string("10.0.1.0/25"), .string("10.0.5.2")]]
        case 8: return ["l4proto": pick(["tcp", "udp"])]
        case 9: return ["orig_port_dst": "50-90", "l4proto": "udp"]
        case 10: return ["id": [FilterInput.int(Int64(Int.random(in: 0..<size, using: &g))), .int(3)]]
        default: return ["mark": [FilterInput.int(1), .int(7)], "orig_dst": "10.0.0.0/22"]
        }
    }

    mutating func next() -> FlowQuery {
        let order: String? = pick([
            nil, "id", "mark", "timeout", "orig_port_src", "orig_port_dst", "orig_src", "orig_dst", "bytes", "l4proto",
        ])
        let dir = pick(["ASC", "DESC"])
        let deep = Int.random(in: 0..<3, using: &g) == 0
        let start = deep ? Int.random(in: 0..<size, using: &g) : Int.random(in: 0..<20, using: &g)
        return parse(filters(), order: order, dir: dir, start: start, length: pick([0, 1, 50, 100, 397]))
    }
}

private func checkAgainstScan(_ table: FlowTable, _ indexes: FlowIndexes, _ q: FlowQuery, now: Double) -> Bool {
    let indexed = q.runReportingPlan(on: table, indexes: indexes, now: now, resolve: nil)
    let scanned = q.run(on: table, now: now, resolve: nil)
    if indexed.result != scanned {
        Issue.record("plan \(indexed.plan) differs from the scan for \(q)")
        return false
    }
    // The flows summaries and previews visit: the same set, through the index or not.
    var through: [SortKey] = []
    var all: [SortKey] = []
    q.forEachMatch(on: table, indexes: indexes, now: now, resolve: nil) { through.append(FlowIndexes.idKey($0, 0)) }
    q.forEachMatch(on: table, now: now, resolve: nil) { all.append(FlowIndexes.idKey($0, 0)) }
    if through.sorted() != all.sorted() {
        Issue.record("forEachMatch through the indexes differs from the scan for \(q)")
        return false
    }
    return true
}

struct OrderedIndexTests {
    @Test func randomInsertsAndRemoves_keepTheSortedSetAndItsRanks() {
        var g = SplitMix(state: 42)
        var index = OrderedIndex<SortKey>()
        var reference = Set<SortKey>()
        var tagOf: [SortKey: UInt8] = [:]
        for round in 0..<40_000 {
            let key = SortKey(a: UInt64.random(in: 0..<300, using: &g) << 32, b: UInt64.random(in: 0..<200, using: &g))
            if Bool.random(using: &g) || reference.count < 100 {
                let tag = UInt8.random(in: 0..<3, using: &g)
                if reference.insert(key).inserted {
                    index.insert(key, tag: tag)
                    tagOf[key] = tag
                }
            } else if let victim = reference.randomElement(using: &g) {
                reference.remove(victim)
                tagOf[victim] = nil
                let removed = index.remove(victim)
                #expect(removed)
            }
            if round % 4000 == 0 {
                // Shrink hard once, so that leaves merge.
                for victim in reference.shuffled(using: &g).prefix(reference.count * 9 / 10) {
                    reference.remove(victim)
                    tagOf[victim] = nil
                    index.remove(victim)
                }
            }
        }
        let removedAbsent = index.remove(SortKey(a: .max, b: .max))
        #expect(!removedAbsent)
        #expect(index.checkInvariants())
        let sorted = reference.sorted()
        #expect(index.sortedKeys == sorted)
        let reader = OrderedIndex.Reader(index)
        for _ in 0..<2000 {
            let probe = SortKey(a: UInt64.random(in: 0..<301, using: &g) << 32, b: UInt64.random(in: 0..<201, using: &g))
            let below = sorted.filter { $0 < probe }.count
            let notAbove = sorted.filter { !(probe < $0) }.count
            #expect(reader.lowerBound(probe) == below)
            #expect(reader.upperBound(probe) == notAbove)
            if !sorted.isEmpty {
                let r = Int.random(in: 0..<sorted.count, using: &g)
                #expect(reader[r] == sorted[r])
            }
        }
        // Primary DESC, ties ASC, from any rank.
        let byGroups = sorted.sorted { l, r in l.a >> 32 != r.a >> 32 ? l.a >> 32 > r.a >> 32 : l < r }
        for start in [0, 1, 77, byGroups.count / 2, byGroups.count - 3, byGroups.count - 1] where start >= 0 {
            let got = reader.descendingByGroups(
                start: start, length: 150, groupLow: { SortKey(a: $0.a & 0xffff_ffff_0000_0000, b: 0) },
                groupHigh: { SortKey(a: $0.a | 0xffff_ffff, b: .max) })
            #expect(got == Array(byGroups[start..<min(byGroups.count, start + 150)]))
        }
        // The same through the tags: only keys tagged 1 or 2, ascending and by groups.
        var wanted = [Bool](repeating: false, count: 256)
        wanted[1] = true
        wanted[2] = true
        let counts = reader.tagCounts(wanted)
        let taggedAscending = sorted.filter { tagOf[$0]! != 0 }
        let taggedByGroups = byGroups.filter { tagOf[$0]! != 0 }
        #expect(counts.reduce(0, +) == taggedAscending.count)
        for start in [0, 1, 50, taggedAscending.count / 3, taggedAscending.count - 2, taggedAscending.count + 5] {
            for descending in [false, true] {
                let got = reader.taggedPage(
                    start: start, length: 120, descending: descending, wanted: wanted, leafCounts: counts,
                    groupLow: { SortKey(a: $0.a & 0xffff_ffff_0000_0000, b: 0) },
                    groupHigh: { SortKey(a: $0.a | 0xffff_ffff, b: .max) })
                let expected = descending ? taggedByGroups : taggedAscending
                #expect(got == Array(expected.dropFirst(start).prefix(120)), "start \(start) desc \(descending)")
            }
        }
    }

    @Test func aSnapshotCopy_isUnchangedByLaterWrites() {
        var index = OrderedIndex<SortKey>(sorted: (0..<5000).map { SortKey(a: UInt64($0), b: 0) })
        let snapshot = index
        for i in 0..<5000 where i % 3 == 0 { index.remove(SortKey(a: UInt64(i), b: 0)) }
        index.insert(SortKey(a: 99_999, b: 0))
        #expect(snapshot.count == 5000)
        #expect(snapshot.sortedKeys == (0..<5000).map { SortKey(a: UInt64($0), b: 0) })
        #expect(index.count == 5000 - 1667 + 1)
        #expect(index.checkInvariants() && snapshot.checkInvariants())
    }
}

struct FlowIndexTests {
    @Test func indexedPlans_onRandomTablesAndQueries_equalTheScanAndTheNaiveReference() {
        for seed in [1, 2, 3] as [UInt64] {
            let flows = randomTable(count: 5000, seed: seed)
            let table = FlowTable(flows)
            let indexes = FlowIndexes(table)
            #expect(indexes.matches(table))
            var maker = QueryMaker(g: SplitMix(state: seed * 77), size: flows.count)
            var plans: [FlowQuery.Plan: Int] = [:]
            for round in 0..<400 {
                let q = maker.next()
                let (result, plan) = q.runReportingPlan(on: table, indexes: indexes, now: 3, resolve: nil)
                plans[plan, default: 0] += 1
                guard checkAgainstScan(table, indexes, q, now: 3) else { return }
                guard round % 4 == 0 else { continue }
                // And the naive reference (filter with the scan's own matcher, then a plain sort).
                let keep = Set(q.run(on: table, now: 3, resolve: nil).total == 0 ? [] : allMatches(q, flows))
                let order: String? = q.orderFieldBuiltin?.rawValue
                let expected = reference(
                    flows, where: { _ in true }, order: order, descending: q.direction == .descending, now: 3
                ).filter { keep.contains($0) }
                #expect(result.total == expected.count)
                #expect(result.page == Array(expected.dropFirst(q.start).prefix(q.length)), "\(q)")
            }
            // Every plan was exercised.
            #expect(plans[.rank, default: 0] > 20 && plans[.seek, default: 0] > 20 && plans[.scan, default: 0] > 20)
        }
    }

    private func allMatches(_ q: FlowQuery, _ flows: [Flow]) -> [Int] {
        var all = q
        all.start = 0
        all.length = flows.count
        all.orderField = nil
        all.direction = .ascending
        return all.run(on: flows, now: 3, resolve: nil).page
    }

    @Test func theMirrorsIndexes_followRandomEvents_andAnswerLikeTheScan() {
        var g = SplitMix(state: 9)
        let mirror = ConntrackMirror(hide: HidePolicy(blocks: []), clock: MonotonicClock { 100 }, logger: Logger(label: "t"))
        var live = randomTable(count: 3000, seed: 5)
        // Distinct tuples per flow (the mirror keys by id and tuple).
        for i in live.indices { live[i].origSourcePort = UInt16(truncatingIfNeeded: 10_000 + i) }
        mirror.load(live, isResync: false)
        var nextPort = 20_000
        var maker = QueryMaker(g: SplitMix(state: 10), size: 3000)
        for round in 0..<60 {
            var events: [ConntrackEvent] = []
            for _ in 0..<Int.random(in: 1..<200, using: &g) {
                switch Int.random(in: 0..<4, using: &g) {
                case 0 where !live.isEmpty:
                    let i = Int.random(in: 0..<live.count, using: &g)
                    events.append(ConntrackEvent(kind: .destroy, fields: [], flow: live.remove(at: i)))
                case 1 where !live.isEmpty:
                    let i = Int.random(in: 0..<live.count, using: &g)
                    live[i].mark = [0, 1, 7, 0xFFFF_FFFF][Int.random(in: 0..<4, using: &g)]
                    live[i].timeout = UInt32.random(in: 0..<30, using: &g)
                    live[i].timeoutObservedAt = Double.random(in: 0..<100, using: &g)
                    events.append(ConntrackEvent(kind: .update, fields: [.mark, .timeout], flow: live[i]))
                default:
                    var f = randomTable(count: 1, seed: g.next())[0]
                    f.origSourcePort = UInt16(truncatingIfNeeded: nextPort)
                    nextPort += 1
                    live.append(f)
                    events.append(ConntrackEvent(kind: .new, fields: .all, flow: f))
                }
            }
            mirror.apply(events: events)
            let snap = mirror.snapshot()
            #expect(snap.indexes.matches(snap.flows), "round \(round)")
            for _ in 0..<20 { guard checkAgainstScan(snap.flows, snap.indexes, maker.next(), now: 50) else { return } }
        }
    }

    /// Batches large enough that the seven index merges run on two threads (FlowIndexes.endBatch): destroys, mark
    /// and timeout changes and creations mixed in one batch, and a bulk removal like a kill's.
    @Test func largeBatches_mergedOnTwoThreads_keepTheIndexesExact() {
        var g = SplitMix(state: 21)
        let mirror = ConntrackMirror(hide: HidePolicy(blocks: []), clock: MonotonicClock { 100 }, logger: Logger(label: "t"))
        var live = randomTable(count: 20_000, seed: 22)
        // Distinct identities (the mirror keys by id and tuple; ICMP by its id in place of the port).
        func unique(_ f: inout Flow, _ n: Int) {
            f.id = UInt32(n)
            f.origSourcePort = UInt16(truncatingIfNeeded: n)
            f.icmpID = UInt16(truncatingIfNeeded: n)
        }
        for i in live.indices { unique(&live[i], i) }
        mirror.load(live, isResync: false)
        var maker = QueryMaker(g: SplitMix(state: 23), size: 20_000)
        var nextPort = 30_000
        for round in 0..<3 {
            var events: [ConntrackEvent] = []
            for _ in 0..<3000 where !live.isEmpty {
                let i = Int.random(in: 0..<live.count, using: &g)
                events.append(ConntrackEvent(kind: .destroy, fields: [], flow: live.remove(at: i)))
            }
            for _ in 0..<1500 {
                let i = Int.random(in: 0..<live.count, using: &g)
                live[i].mark = UInt32.random(in: 0..<5, using: &g)
                live[i].timeout = UInt32.random(in: 0..<30, using: &g)
                events.append(ConntrackEvent(kind: .update, fields: [.mark, .timeout], flow: live[i]))
            }
            for _ in 0..<1500 {
                var f = randomTable(count: 1, seed: g.next())[0]
                unique(&f, nextPort)
                nextPort += 1
                live.append(f)
                events.append(ConntrackEvent(kind: .new, fields: .all, flow: f))
            }
            mirror.apply(events: events)
            var snap = mirror.snapshot()
            #expect(snap.flows.count == live.count, "round \(round)")
            #expect(snap.indexes.matches(snap.flows), "round \(round)")
            // A kill's shape: many removals at once, each moving the last flow into its place.
            let victims = Array(live.prefix(5000))
            live.removeFirst(5000)
            mirror.apply(events: victims.map { ConntrackEvent(kind: .destroy, fields: [], flow: $0) })
            snap = mirror.snapshot()
            #expect(snap.flows.count == live.count, "round \(round), after the bulk removal")
            #expect(snap.indexes.matches(snap.flows), "round \(round), after the bulk removal")
            for _ in 0..<20 { guard checkAgainstScan(snap.flows, snap.indexes, maker.next(), now: 50) else { return } }
            for _ in 0..<5000 {
                var f = randomTable(count: 1, seed: g.next())[0]
                unique(&f, nextPort)
                nextPort += 1
                live.append(f)
            }
            mirror.apply(events: live.suffix(5000).map { ConntrackEvent(kind: .new, fields: .all, flow: $0) })
        }
    }

    /// One million entries: the indexes built at load, then 20,000 events, then queries against the scan.
    @Test func atAMillionEntries_indexedPlansEqualTheScan() {
        let n = 1_000_000
        var g = SplitMix(state: 1_000_000)
        var flows: [Flow] = []
        flows.reserveCapacity(n)
        for i in 0..<n {
            flows.append(
                Flow(
                    id: UInt32.random(in: 0...UInt32.max, using: &g), l4proto: i % 4 == 0 ? 17 : 6,
                    tcpState: i % 4 == 0 ? Flow.noState : 3,
                    origSource: IPAddress(ipv4: 0x0a00_0000 | UInt32(i >> 8)),
                    origDestination: IPAddress(ipv4: 0xc633_6400 | UInt32.random(in: 0..<4096, using: &g)),
                    origSourcePort: UInt16(truncatingIfNeeded: i), origDestinationPort: UInt16.random(in: 1..<2000, using: &g),
                    mark: UInt32.random(in: 0..<64, using: &g), timeout: UInt32.random(in: 1..<432_000, using: &g)))
        }
        let mirror = ConntrackMirror(hide: HidePolicy(blocks: []), clock: MonotonicClock { 100 }, logger: Logger(label: "t"))
        mirror.load(flows, isResync: false)
        var events: [ConntrackEvent] = []
        for k in 0..<20_000 {
            let i = Int.random(in: 0..<n, using: &g)
            if k % 2 == 0 {
                events.append(ConntrackEvent(kind: .destroy, fields: [], flow: flows[i]))
            } else {
                var f = flows[i]
                f.mark = 99
                f.timeout = 7
                events.append(ConntrackEvent(kind: .update, fields: [.mark, .timeout], flow: f))
            }
        }
        mirror.apply(events: events)
        let snap = mirror.snapshot()
        var maker = QueryMaker(g: SplitMix(state: 12), size: snap.flows.count)
        var plans: [FlowQuery.Plan: Int] = [:]
        for _ in 0..<40 {
            let q = maker.next()
            plans[q.runReportingPlan(on: snap.flows, indexes: snap.indexes, now: 100, resolve: nil).plan, default: 0] += 1
            guard checkAgainstScan(snap.flows, snap.indexes, q, now: 100) else { return }
        }
        for q in [
            parse(["orig_dst": "198.51.100.0/30"], order: "orig_port_src", dir: "DESC", start: 1, length: 100),
            parse(["mark": 99], order: "timeout", dir: "ASC", start: 5000, length: 100),
            parse([:], order: "orig_src", dir: "DESC", start: 654_321, length: 100),
        ] {
            #expect(checkAgainstScan(snap.flows, snap.indexes, q, now: 100))
        }
        #expect(plans[.rank, default: 0] > 0 && plans[.seek, default: 0] > 0)
    }
}
