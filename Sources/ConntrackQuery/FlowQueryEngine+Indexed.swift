import Conntrack
import Foundation

// Query plans that use the mirror's ordered indexes (FlowIndexes). Each plan answers exactly what the scan would
// answer (same keys, same ties): the property tests in FlowIndexTests check it on random tables and queries.
//
//   - rank: no filter, order by an indexed field (or by id): the page is read by rank, O(log n + length). With a
//     protocol filter alone, the keys' protocol tags are counted leaf by leaf: O(n / 512 + 512 + length) reads
//     of one byte, never a flow.
//   - seek: a filter on an indexed field selects few enough entries: the index gives their key ranges (one per
//     value, block or range), the other filters and the selection run on those candidates only, O(m).
//   - scan: everything else (the selection of FlowQueryEngine+Selection, O(n)).
// docs/benchmark.md ("Query plans") has the cost model and the figures.

extension FlowQuery {
    /// Which plan ``run(on:indexes:now:wallNow:resolve:)`` takes (tests, the benchmark's notes).
    public enum Plan: Equatable, Sendable {
        case rank, seek, scan
    }

    /// Answers the query with the snapshot's indexes where a plan can use them; otherwise by a scan.
    public func run(
        on table: FlowTable, indexes: FlowIndexes?, now: Double, wallNow: Double = Date().timeIntervalSince1970,
        resolve: ((String, UInt32) -> ResolvedValue?)?
    ) -> FlowQueryResult {
        runReportingPlan(on: table, indexes: indexes, now: now, wallNow: wallNow, resolve: resolve).result
    }

    public func runReportingPlan(
        on table: FlowTable, indexes: FlowIndexes?, now: Double, wallNow: Double = Date().timeIntervalSince1970,
        resolve: ((String, UInt32) -> ResolvedValue?)?
    ) -> (result: FlowQueryResult, plan: Plan) {
        guard let indexes, indexes.count == table.count else {
            return (run(on: table, now: now, wallNow: wallNow, resolve: resolve), .scan)
        }
        if filters.isEmpty, let page = FlowQueryEngine.rankPage(self, indexes) {
            return (FlowQueryResult(total: table.count, page: page), .rank)
        }
        if filters.count == 1, case .number(.l4proto, let protocols) = filters[0],
            let (total, page) = FlowQueryEngine.rankPage(self, indexes, protocols: protocols)
        {
            return (FlowQueryResult(total: total, page: page), .rank)
        }
        if let candidates = FlowQueryEngine.seekCandidates(filters, indexes) {
            // A lone seekable filter is answered exactly by its key ranges: the flows are read for their order
            // keys only (one cache line each), not filtered again.
            let exact = filters.count == 1
            return (
                run(on: table, candidates: candidates, exact: exact, now: now, wallNow: wallNow, resolve: resolve),
                .seek
            )
        }
        return (run(on: table, now: now, wallNow: wallNow, resolve: resolve), .scan)
    }
}

extension FlowQueryEngine {
    // MARK: Rank plan

    /// The page of an unfiltered query ordered by an indexed field, read by rank; nil when the field has no index.
    static func rankPage(_ query: FlowQuery, _ indexes: FlowIndexes) -> [Int]? {
        rankPage(query, indexes, protocols: nil)?.page
    }

    /// As above, among the flows of these IP protocols only (the keys' tags) when `protocols` is given.
    static func rankPage(_ query: FlowQuery, _ indexes: FlowIndexes, protocols: [UInt32]?) -> (total: Int, page: [Int])? {
        let field: FlowQuery.SortField
        switch query.orderField {
        case nil: field = .id
        case .builtin(let f)?: field = f
        case .resolved?: return nil
        }
        let start = max(0, query.start)
        let length = max(0, query.length)
        let descending = query.direction == .descending
        var wanted: [Bool]?
        if let protocols {
            var w = [Bool](repeating: false, count: 256)
            for p in protocols where p < 256 { w[Int(p)] = true }
            wanted = w
        }
        let n = indexes.count
        func read<K: FlowIndexKey>(_ index: OrderedIndex<K>, _ groups: (low: (K) -> K, high: (K) -> K))
            -> (total: Int, page: [Int])
        {
            if let wanted { return taggedPage(index, start, length, descending, wanted, groups) }
            return (n, page(index, start, length, descending, groups))
        }
        switch field {
        case .id: return read(indexes.id, narrowGroups)
        case .mark: return read(indexes.mark, narrowGroups)
        case .origPortSrc: return read(indexes.origPortSrc, narrowGroups)
        case .origPortDst: return read(indexes.origPortDst, narrowGroups)
        case .timeout: return read(indexes.timeout, wideGroups)
        case .origSrc: return read(indexes.origSrc, addressGroups)
        case .origDst: return read(indexes.origDst, addressGroups)
        default: return nil
        }
    }

    /// The smallest and the largest key with the same primary value, per key layout.
    static let narrowGroups: (low: (SortKey) -> SortKey, high: (SortKey) -> SortKey) = (
        { SortKey(a: $0.a & 0xffff_ffff_0000_0000, b: 0) }, { SortKey(a: $0.a | 0xffff_ffff, b: .max) }
    )
    static let wideGroups: (low: (SortKey) -> SortKey, high: (SortKey) -> SortKey) = (
        { SortKey(a: $0.a, b: 0) }, { SortKey(a: $0.a, b: .max) }
    )
    static let addressGroups: (low: (AddressSortKey) -> AddressSortKey, high: (AddressSortKey) -> AddressSortKey) = (
        { AddressSortKey(family: $0.family, high: $0.high, low: $0.low, tie: 0) },
        { AddressSortKey(family: $0.family, high: $0.high, low: $0.low, tie: .max) }
    )

    static func taggedPage<K: FlowIndexKey>(
        _ index: OrderedIndex<K>, _ start: Int, _ length: Int, _ descending: Bool, _ wanted: [Bool],
        _ groups: (low: (K) -> K, high: (K) -> K)
    ) -> (total: Int, page: [Int]) {
        let reader = OrderedIndex.Reader(index)
        let counts = reader.tagCounts(wanted)
        let total = counts.reduce(0, +)
        guard start < total, length > 0 else { return (total, []) }
        let keys = reader.taggedPage(
            start: start, length: length, descending: descending, wanted: wanted, leafCounts: counts,
            groupLow: groups.low, groupHigh: groups.high)
        return (total, keys.map(\.tableIndex))
    }

    private static func ascending<K>(_ reader: OrderedIndex<K>.Reader, _ start: Int, _ length: Int, _ index: (K) -> Int)
        -> [Int]
    {
        var page: [Int] = []
        guard start < reader.count, length > 0 else { return page }
        page.reserveCapacity(min(length, reader.count - start))
        reader.forEach(in: start..<(start + min(length, reader.count - start))) {
            page.append(index($0))
            return true
        }
        return page
    }

    /// ASC: ranks start ..< start + length. DESC: primary DESC with ties ASC, by groups of equal primary value.
    static func page<K: FlowIndexKey>(
        _ index: OrderedIndex<K>, _ start: Int, _ length: Int, _ descending: Bool,
        _ groups: (low: (K) -> K, high: (K) -> K)
    ) -> [Int] {
        let reader = OrderedIndex.Reader(index)
        guard descending else { return ascending(reader, start, length, \.tableIndex) }
        return reader.descendingByGroups(start: start, length: length, groupLow: groups.low, groupHigh: groups.high)
            .map(\.tableIndex)
    }

    // MARK: Seek plan

    /// A seek pays a random access per candidate where a scan reads the table in order: worth it below about an
    /// eighth of the table (docs/benchmark.md).
    static let seekFraction = 8

    /// The table indices of the entries that can pass the most selective indexed filter, or nil when no filter
    /// has an index or none selects less than 1/``seekFraction`` of the table.
    static func seekCandidates(_ filters: [FlowQuery.Filter], _ indexes: FlowIndexes) -> [Int]? {
        var best: (count: Int, ranges: [Range<Int>], address: Bool, index: Int)?
        let id = OrderedIndex.Reader(indexes.id)
        var readers: [Int: OrderedIndex<SortKey>.Reader] = [:]
        var addressReaders: [Int: OrderedIndex<AddressSortKey>.Reader] = [:]
        func narrowReader(_ which: Int) -> OrderedIndex<SortKey>.Reader {
            if let r = readers[which] { return r }
            let r: OrderedIndex<SortKey>.Reader
            switch which {
            case 0: r = id
            case 1: r = OrderedIndex.Reader(indexes.mark)
            case 2: r = OrderedIndex.Reader(indexes.origPortSrc)
            default: r = OrderedIndex.Reader(indexes.origPortDst)
            }
            readers[which] = r
            return r
        }
        func addressReader(_ which: Int) -> OrderedIndex<AddressSortKey>.Reader {
            if let r = addressReaders[which] { return r }
            let r = OrderedIndex.Reader(which == 0 ? indexes.origSrc : indexes.origDst)
            addressReaders[which] = r
            return r
        }
        func consider(_ ranges: [Range<Int>], address: Bool, index: Int) {
            let merged = mergedRanges(ranges)
            let count = merged.reduce(0) { $0 + $1.count }
            if best == nil || count < best!.count { best = (count, merged, address, index) }
        }
        for filter in filters {
            switch filter {
            case .number(let field, let values):
                let which: Int
                switch field {
                case .id: which = 0
                case .mark: which = 1
                case .origPortSrc: which = 2
                case .origPortDst: which = 3
                default: continue
                }
                let r = narrowReader(which)
                consider(values.map { r.positions(narrow: UInt64($0), through: UInt64($0)) }, address: false, index: which)
            case .range(let field, let min, let max):
                let which: Int
                switch field {
                case .origPortSrc: which = 2
                case .origPortDst: which = 3
                default: continue
                }
                let low = (min ?? 0).rounded(.up)
                let high = (max ?? 65535).rounded(.down)
                guard low <= high, high >= 0, low <= 65535 else {
                    consider([], address: false, index: which)
                    continue
                }
                let r = narrowReader(which)
                consider(
                    [r.positions(narrow: UInt64(Swift.max(0, low)), through: UInt64(Swift.min(65535, high)))],
                    address: false, index: which)
            case .address(let field, let blocks):
                let which: Int
                switch field {
                case .origSrc: which = 0
                case .origDst: which = 1
                default: continue
                }
                let r = addressReader(which)
                consider(blocks.map { r.positions(in: Block($0)) }, address: true, index: which)
            default:
                continue
            }
        }
        guard let best, best.count * seekFraction <= indexes.count else { return nil }
        // The candidates in table order (a bitmap of the table, then its set bits), so that the flows are read front
        // to back rather than at random: O(n / 64 + m), cheaper than sorting m indices.
        var bits = [UInt64](repeating: 0, count: (indexes.count + 63) / 64)
        bits.withUnsafeMutableBufferPointer { words in
            func mark(_ i: Int) -> Bool {
                words[i >> 6] |= 1 << UInt64(i & 63)
                return true
            }
            if best.address {
                let r = addressReader(best.index)
                for range in best.ranges { r.forEach(in: range) { mark($0.tableIndex) } }
            } else {
                let r = narrowReader(best.index)
                for range in best.ranges { r.forEach(in: range) { mark($0.tableIndex) } }
            }
        }
        var candidates: [Int] = []
        candidates.reserveCapacity(best.count)
        for (w, word) in bits.enumerated() where word != 0 {
            var rest = word
            while rest != 0 {
                candidates.append(w << 6 | rest.trailingZeroBitCount)
                rest &= rest - 1
            }
        }
        return candidates
    }

    /// Sorted, non-overlapping ranges covering the same positions (CIDR blocks may overlap).
    static func mergedRanges(_ ranges: [Range<Int>]) -> [Range<Int>] {
        let sorted = ranges.filter { !$0.isEmpty }.sorted { $0.lowerBound < $1.lowerBound }
        var out: [Range<Int>] = []
        for r in sorted {
            if let last = out.last, r.lowerBound <= last.upperBound {
                out[out.count - 1] = last.lowerBound..<Swift.max(last.upperBound, r.upperBound)
            } else {
                out.append(r)
            }
        }
        return out
    }
}

extension OrderedIndex<SortKey>.Reader {
    /// The positions of keys whose narrow primary value lies in low...high.
    func positions(narrow low: UInt64, through high: UInt64) -> Range<Int> {
        let from = lowerBound(SortKey(a: low << 32, b: 0))
        let to = upperBound(SortKey(a: high << 32 | 0xffff_ffff, b: .max))
        return from..<Swift.max(from, to)
    }
}

extension OrderedIndex<AddressSortKey>.Reader {
    /// The positions of keys whose address lies in the block.
    func positions(in block: FlowQueryEngine.Block) -> Range<Int> {
        let family: UInt64 = block.isIPv6 ? 1 : 0
        let lastHigh = block.high | ~block.maskHigh
        let lastLow = block.isIPv6 ? block.low | ~block.maskLow : block.low | (~block.maskLow & 0xffff_ffff)
        let from = lowerBound(AddressSortKey(family: family, high: block.high, low: block.low, tie: 0))
        let to = upperBound(
            AddressSortKey(family: family, high: block.isIPv6 ? lastHigh : 0, low: lastLow, tie: .max))
        return from..<Swift.max(from, to)
    }
}
