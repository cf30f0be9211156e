import Conntrack

/// Groups the flows that match a query's filters and adds them up: pfSense's "States Summary", `conntrack -L | sort
/// | uniq -c` done right. The top `limit` groups come with an `other` bucket and the grand total, so the numbers
/// always add up.
public struct FlowSummary: Equatable, Sendable {
    /// What the flows are grouped by.
    public enum Key: Equatable, Hashable, Sendable {
        case origSrc, origDst
        /// Source and destination of the original direction.
        case pair
        /// The original destination and its port (`kill_preview`'s top destinations).
        case destinationPort
        /// Layer-4 protocol and original destination port ("the service").
        case service
        case l4proto, state, mark, zone
        /// A field a resolver plugin adds (`username`).
        case resolved(String)

        var isResolved: Bool {
            if case .resolved = self { return true }
            return false
        }

        /// The names `group_by` takes, in the order they are listed to clients.
        public static let builtinNames = [
            "orig_src", "orig_dst", "pair", "orig_dst_port", "orig_port_dst", "l4proto", "state", "mark", "zone",
        ]

        /// `group_by`'s name: a built-in key, or one of `resolvedFields`.
        public static func parse(_ name: String, resolvedFields: Set<String>) throws -> Key {
            switch name {
            case "orig_src": return .origSrc
            case "orig_dst": return .origDst
            case "pair": return .pair
            case "orig_dst_port": return .destinationPort
            case "orig_port_dst", "service": return .service
            case "l4proto", "orig_l4proto": return .l4proto
            case "state": return .state
            case "mark": return .mark
            case "zone": return .zone
            default:
                if resolvedFields.contains(name) { return .resolved(name) }
                let valid = (builtinNames + resolvedFields.sorted()).joined(separator: ", ")
                throw FlowQueryError("cannot group by '\(name.prefix(40))'; valid group_by keys are: \(valid).")
            }
        }
    }

    /// What the groups are ranked by (descending); ties by the group's key (addresses in numeric order).
    public enum Order: String, CaseIterable, Sendable {
        case count, bytes, packets
        case byteRate = "byte_rate"

        public static func parse(_ name: String?) throws -> Order {
            guard let name, !name.isEmpty else { return .count }
            guard let order = Order(rawValue: name) else {
                let valid = allCases.map(\.rawValue).joined(separator: ", ")
                throw FlowQueryError("cannot order groups by '\(name.prefix(40))'; valid: \(valid).")
            }
            return order
        }
    }

    /// The sums of one group.
    public struct Totals: Equatable, Sendable {
        public var count = 0
        public var bytes: UInt64 = 0
        public var packets: UInt64 = 0
        public var byteRate = 0.0

        public init() {}

        mutating func add(_ f: Flow) {
            count += 1
            bytes &+= f.totalBytes
            packets &+= f.totalPackets
            byteRate += f.byteRate
        }

        mutating func add(_ t: Totals) {
            count += t.count
            bytes &+= t.bytes
            packets &+= t.packets
            byteRate += t.byteRate
        }

        func value(_ order: Order) -> Double {
            switch order {
            case .count: return Double(count)
            case .bytes: return Double(bytes)
            case .packets: return Double(packets)
            case .byteRate: return byteRate
            }
        }
    }

    public struct Group: Equatable, Sendable {
        /// The group's name as clients see it: an address, `src -> dst`, `tcp/443`, a state name, a number.
        public var name: String
        public var totals: Totals
    }

    public var groups: [Group]
    /// Everything that matched beyond the top groups.
    public var other: Totals
    /// Everything that matched: the groups plus `other`.
    public var total: Totals

    /// Sums the flows of `table` that pass `query`'s filters (its order and page are ignored), grouped by `key`.
    /// - Parameter resolve: as for ``FlowQuery/run(on:now:resolve:)``; also gives a resolved key's value.
    public static func summarize(
        _ table: FlowTable, indexes: FlowIndexes? = nil, query: FlowQuery, key: Key, order: Order, limit: Int,
        now: Double, resolve: ((String, UInt32) -> ResolvedValue?)?
    ) -> FlowSummary {
        var sums = GroupSums(key: key, resolve: resolve)
        query.forEachMatch(on: table, indexes: indexes, now: now, resolve: resolve) { sums.add($0) }
        let ranked = sums.top(limit: max(0, limit), order: order)
        let total = sums.total
        var top = Totals()
        for g in ranked { top.add(g.totals) }
        var other = total
        other.count -= top.count
        other.bytes &-= top.bytes
        other.packets &-= top.packets
        other.byteRate -= top.byteRate
        return FlowSummary(groups: ranked, other: other, total: total)
    }
}

/// Per-group sums, keyed by a cheap numeric key while the table is scanned; names are made once per group at the
/// end (and groups whose names coincide, such as two marks of one user, merged then).
struct GroupSums {
    let key: FlowSummary.Key
    let resolve: ((String, UInt32) -> ResolvedValue?)?
    /// The totals per group; a group's name is made from its key alone (``name(_:_:resolve:)``), so no flow is
    /// kept per group (32 bytes a group, not the 248 of a sample flow beside its totals).
    private var table = GroupTable()
    /// Everything added: the grand total.
    private(set) var total = FlowSummary.Totals()

    init(key: FlowSummary.Key, resolve: ((String, UInt32) -> ResolvedValue?)?) {
        self.key = key
        self.resolve = resolve
    }

    struct NumericGroup: Hashable, Comparable {
        var a: IPAddress
        var b: IPAddress
        var n: UInt64

        static func < (x: NumericGroup, y: NumericGroup) -> Bool {
            x.a != y.a ? x.a < y.a : x.b != y.b ? x.b < y.b : x.n < y.n
        }
    }

    /// The `limit` groups with the largest `order` value, ties by the group's key (addresses in numeric order, then
    /// ports and numbers): only these are named, so a summary of 250,000 distinct pairs formats ten names. Groups
    /// of a resolved field are named first (several marks may be one user).
    func top(limit: Int, order: FlowSummary.Order) -> [FlowSummary.Group] {
        if key.isResolved {
            return groups.map { FlowSummary.Group(name: $0.key, totals: $0.value) }
                .sorted { a, b in
                    let va = a.totals.value(order)
                    let vb = b.totals.value(order)
                    return va != vb ? va > vb : a.name < b.name
                }
                .prefix(limit).map { $0 }
        }
        func better(_ x: (NumericGroup, FlowSummary.Totals), _ y: (NumericGroup, FlowSummary.Totals)) -> Bool {
            let vx = x.1.value(order)
            let vy = y.1.value(order)
            return vx != vy ? vx > vy : x.0 < y.0
        }
        // A sorted window of the best `limit` so far; most groups are rejected by one comparison with its last.
        var best: [(NumericGroup, FlowSummary.Totals)] = []
        best.reserveCapacity(limit + 1)
        table.forEach { k, g in
            let item = (k, g)
            if best.count == limit, let last = best.last, !better(item, last) { return }
            let i = best.firstIndex { better(item, $0) } ?? best.count
            best.insert(item, at: i)
            if best.count > limit { best.removeLast() }
        }
        return best.map { FlowSummary.Group(name: Self.name(key, $0.0, resolve: resolve), totals: $0.1) }
    }

    /// The sums by group name.
    var groups: [String: FlowSummary.Totals] {
        var out: [String: FlowSummary.Totals] = [:]
        table.forEach { k, g in out[Self.name(key, k, resolve: resolve), default: FlowSummary.Totals()].add(g) }
        return out
    }

    mutating func add(_ f: Flow) {
        let zero = IPAddress(high: 0, low: 0, isIPv6: false)
        let numeric: NumericGroup
        switch key {
        case .origSrc: numeric = NumericGroup(a: f.origSource, b: zero, n: 0)
        case .origDst: numeric = NumericGroup(a: f.origDestination, b: zero, n: 0)
        case .pair: numeric = NumericGroup(a: f.origSource, b: f.origDestination, n: 0)
        case .destinationPort:
            numeric = NumericGroup(a: f.origDestination, b: zero, n: UInt64(f.l4proto) << 16 | UInt64(f.origDestinationPort))
        case .service: numeric = NumericGroup(a: zero, b: zero, n: UInt64(f.l4proto) << 16 | UInt64(f.origDestinationPort))
        case .l4proto: numeric = NumericGroup(a: zero, b: zero, n: UInt64(f.l4proto))
        // 256: not TCP ("(none)"), distinct from every TCP state byte.
        case .state: numeric = NumericGroup(a: zero, b: zero, n: f.l4proto == 6 ? UInt64(f.tcpState) : 256)
        case .mark: numeric = NumericGroup(a: zero, b: zero, n: UInt64(f.mark))
        case .zone: numeric = NumericGroup(a: zero, b: zero, n: UInt64(f.zone))
        case .resolved: numeric = NumericGroup(a: zero, b: zero, n: UInt64(f.mark))
        }
        table.add(numeric, f)
        total.add(f)
    }

    /// A group's name from its key (the fields `add` put in it).
    static func name(_ key: FlowSummary.Key, _ g: NumericGroup, resolve: ((String, UInt32) -> ResolvedValue?)?)
        -> String
    {
        let port = UInt16(truncatingIfNeeded: g.n)
        let proto = UInt8(truncatingIfNeeded: g.n >> 16)
        switch key {
        case .origSrc, .origDst: return g.a.description
        case .pair: return "\(g.a) -> \(g.b)"
        case .destinationPort:
            let host = g.a.isIPv6 ? "[\(g.a)]" : g.a.description
            return "\(host):\(port)/\(ConntrackNames.l4(proto))"
        case .service: return "\(ConntrackNames.l4(proto))/\(port)"
        case .l4proto: return ConntrackNames.l4(UInt8(truncatingIfNeeded: g.n))
        case .state: return g.n == 256 ? "(none)" : ConntrackNames.tcpState(UInt8(truncatingIfNeeded: g.n))
        case .mark: return String(g.n)
        case .zone: return String(g.n)
        case .resolved(let field):
            switch resolve?(field, UInt32(truncatingIfNeeded: g.n)) {
            case .integer(let i)?: return String(i)
            case .string(let s)?: return s
            case nil: return "(none)"
            }
        }
    }
}

/// The groups of a summary: open addressing with linear probing over parallel arrays, hashed by ``WordHash``.
/// `Dictionary`'s SipHash of the 40-byte key was two thirds of a summary's time at 250,000 entries (perf,
/// docs/benchmark.md).
struct GroupTable {
    private var keys: [GroupSums.NumericGroup] = []
    private var totals: [FlowSummary.Totals] = []
    /// Parallel to the slots: whether a slot holds a group.
    private var used: [Bool] = []
    private var count = 0
    private var mask = 0

    init() { resize(to: 64) }

    @inline(__always)
    private static func hash(_ k: GroupSums.NumericGroup) -> Int {
        var h = WordHash()
        h.combine(k.a)
        h.combine(k.b)
        h.combine(k.n)
        return h.value
    }

    private mutating func resize(to capacity: Int) {
        let oldKeys = keys
        let oldTotals = totals
        let oldUsed = used
        let zero = IPAddress(high: 0, low: 0, isIPv6: false)
        keys = [GroupSums.NumericGroup](repeating: .init(a: zero, b: zero, n: 0), count: capacity)
        totals = [FlowSummary.Totals](repeating: .init(), count: capacity)
        used = [Bool](repeating: false, count: capacity)
        mask = capacity - 1
        for i in oldUsed.indices where oldUsed[i] {
            var s = Self.hash(oldKeys[i]) & mask
            while used[s] { s = (s + 1) & mask }
            used[s] = true
            keys[s] = oldKeys[i]
            totals[s] = oldTotals[i]
        }
    }

    mutating func add(_ k: GroupSums.NumericGroup, _ f: Flow) {
        var s = Self.hash(k) & mask
        while used[s] {
            if keys[s] == k {
                totals[s].add(f)
                return
            }
            s = (s + 1) & mask
        }
        used[s] = true
        keys[s] = k
        totals[s].add(f)
        count += 1
        if count * 2 > mask + 1 { resize(to: (mask + 1) * 2) }
    }

    func forEach(_ body: (GroupSums.NumericGroup, FlowSummary.Totals) -> Void) {
        for i in used.indices where used[i] { body(keys[i], totals[i]) }
    }
}
