import Conntrack
import Foundation

// The query engine behind `view(session, filters, order_by, order_dir, start, length)`.
//
// `FlowQuery.parse` validates what the client sent (FlowQuery+Parsing.swift); `run(on:now:resolve:)` answers it
// against a snapshot of the table in one pass:
//   1. each flow goes through the filters, cheapest first (integer compares, status bits, CIDR masks, the
//      timeout computation, then the per-mark resolved-field verdict);
//   2. a matching flow becomes a small integer sort key (primary value, then id, then its index in the table;
//      DESC flips the primary bits), so ordering compares integers, never closures over `Flow`;
//   3. only the smallest `start + length` keys are kept: a key below the current threshold goes into a buffer of
//      about twice that size, and a quickselect halves the buffer and raises the threshold whenever it fills;
//      when the page is deep (start + length beyond half the table) nothing is dropped and all matching keys
//      are kept instead;
//   4. a quickselect isolates the page's ranks and only the page's keys are sorted.
// No allocation happens per flow: the key buffer is reserved up front.
// Results are indices into the given array (`FlowQueryResult.page`), so the caller renders only the page.

/// What a client sent for one filter key. The XML-RPC layer converts `<int>`/`<i4>`/`<i8>` to `.int`,
/// `<double>` to `.double`, `<string>` to `.string`, `<array>` to `.list`, which means "any of" (for `status`:
/// "all of"), and `<struct>` to `.structure` (a range: `{"min": a, "max": b}`).
public enum FilterInput: Equatable, Sendable, ExpressibleByIntegerLiteral, ExpressibleByStringLiteral,
    ExpressibleByArrayLiteral
{
    case int(Int64)
    case double(Double)
    case string(String)
    case list([FilterInput])
    case structure([String: FilterInput])

    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: FilterInput...) { self = .list(elements) }
}

/// A resolver plugin's value for one field of one flow, as the query engine sees it.
public enum ResolvedValue: Hashable, Comparable, Sendable {
    /// Sorts numerically.
    case integer(Int64)
    /// Sorts lexicographically.
    case string(String)

    /// Integers sort before strings; like kinds compare by value (same as the plugin API's `FieldValue`).
    public static func < (lhs: ResolvedValue, rhs: ResolvedValue) -> Bool {
        switch (lhs, rhs) {
        case (.integer(let a), .integer(let b)): return a < b
        case (.string(let a), .string(let b)): return a < b
        case (.integer, .string): return true
        case (.string, .integer): return false
        }
    }

    /// Filter equality: like kinds compare by value; an integer filter also matches its decimal string and a
    /// decimal-string filter also matches the integer (clients do not always know which kind a plugin returns).
    package func matchesFilter(_ wanted: ResolvedValue) -> Bool {
        switch (self, wanted) {
        case (.integer(let a), .integer(let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.integer(let a), .string(let b)): return Int64(b) == a
        case (.string(let a), .integer(let b)): return a == String(b)
        }
    }
}

/// The answer to a query.
public struct FlowQueryResult: Equatable, Sendable {
    /// How many flows match the filters (independent of start and length).
    public var total: Int
    /// Indices into the `flows` array given to `run`, in page order.
    public var page: [Int]

    public init(total: Int, page: [Int]) {
        self.total = total
        self.page = page
    }
}

/// A parsed, validated `view` query. Build it with ``parse(filters:orderBy:orderDirection:start:length:maxLength:resolvedFields:)``
/// and answer it with ``run(on:now:resolve:)``.
public struct FlowQuery: Equatable, Sendable {
    public enum Direction: String, Equatable, Sendable {
        case ascending = "ASC"
        case descending = "DESC"
    }

    /// Integer-valued flow fields a filter compares for equality.
    public enum NumericField: Equatable, Sendable {
        case id, mark, timeout, l3proto, l4proto, state, zone, origPortSrc, origPortDst, replPortSrc, replPortDst
        /// Any of the four ports (`port`).
        case anyPort
    }

    /// The four addresses of a flow, or any of them (`host`: NAT'd traffic is found by either side).
    public enum AddressField: Equatable, Sendable {
        case origSrc, origDst, replSrc, replDst, any
    }

    /// Fields a range filter compares (`{"min": a, "max": b}` or `"a-b"`); bounds are inclusive.
    public enum RangeField: Equatable, Sendable {
        case timeout, origBytes, replBytes, bytes, packets, byteRate
        case origPortSrc, origPortDst, replPortSrc, replPortDst
        /// Any of the four ports (`port`).
        case anyPort
        /// Whole seconds since the connection started (wall clock); entries without a start time never match.
        case age
    }

    /// One parsed filter; a flow must pass all of a query's filters.
    public enum Filter: Equatable, Sendable {
        /// The field equals one of the values (`timeout` is the remaining time; `state` never matches non-TCP).
        case number(NumericField, anyOf: [UInt32])
        /// The address lies in one of the blocks (a single address is a full-length block).
        case address(AddressField, anyOf: [CIDRBlock])
        /// For every mask, the status has at least one of its bits (`NAT` is SRC_NAT|DST_NAT).
        case status(allOf: [UInt32])
        /// The resolved field has a value equal to one of these.
        case resolved(String, anyOf: [ResolvedValue])
        /// The field lies within `min...max` (either bound may be absent).
        case range(RangeField, min: Double?, max: Double?)
        /// At least one of these ct label bits (0...127) is set.
        case labels(anyOf: [Int])
        /// The helper's name is one of these ("" is no helper).
        case helper(anyOf: [String])

        /// Evaluation cost class; cheaper filters run first.
        var cost: Int {
            switch self {
            case .number(.timeout, _): return 3
            case .number: return 0
            case .status: return 1
            case .address: return 2
            case .resolved: return 4
            case .range(.age, _, _): return 3
            case .range: return 2
            case .labels, .helper: return 1
            }
        }
    }

    /// Built-in sort fields; the raw value is the `order_by` name.
    public enum SortField: String, CaseIterable, Equatable, Sendable {
        case id, l3proto, l4proto
        case origSrc = "orig_src", origDst = "orig_dst", replSrc = "repl_src", replDst = "repl_dst"
        case origPortSrc = "orig_port_src", origPortDst = "orig_port_dst"
        case replPortSrc = "repl_port_src", replPortDst = "repl_port_dst"
        case mark, timeout, status, state, zone
        case origBytes = "orig_bytes", origPackets = "orig_packets"
        case replBytes = "repl_bytes", replPackets = "repl_packets"
        case bytes, packets
        case byteRate = "byte_rate"
        /// Entries without a start time sort before all others (ASC), for both.
        case start, age
    }

    public enum OrderField: Equatable, Sendable {
        case builtin(SortField)
        /// A field added by a resolver plugin; flows without a value sort before all values (ASC).
        case resolved(String)
    }

    /// All filters; a flow must pass every one. Kept cheapest first.
    public var filters: [Filter]
    /// nil orders by id.
    public var orderField: OrderField?
    /// Applies to the order field only; ties are always broken by ascending id (then table position), so pages
    /// of one query never overlap or skip.
    public var direction: Direction
    public var start: Int
    /// 0 returns only the total.
    public var length: Int

    public init(
        filters: [Filter] = [], orderField: OrderField? = nil, direction: Direction = .ascending,
        start: Int = 0, length: Int
    ) {
        self.filters = filters
        self.orderField = orderField
        self.direction = direction
        self.start = start
        self.length = length
    }

    /// Filter keys every server understands (resolved fields come on top).
    public static let builtinFilterKeys = [
        "age", "byte_rate", "bytes", "helper", "host", "id", "l3proto", "l4proto", "label", "mark", "orig_bytes",
        "orig_dst", "orig_ipv4_dst", "orig_ipv4_src", "orig_l4proto", "orig_port_dst", "orig_port_src", "orig_src",
        "packets", "port", "repl_bytes", "repl_dst", "repl_port_dst", "repl_port_src", "repl_src", "state", "status",
        "timeout", "zone",
    ]

    /// `order_by` names every server understands, aliases included (resolved fields come on top).
    public static let builtinOrderFields: [String] =
        SortField.allCases.map(\.rawValue) + ["orig_l4proto", "orig_ipv4_src", "orig_ipv4_dst"]

    package static let builtinOrderMap: [String: SortField] = {
        var map: [String: SortField] = [:]
        for field in SortField.allCases { map[field.rawValue] = field }
        map["orig_l4proto"] = .l4proto
        map["orig_ipv4_src"] = .origSrc
        map["orig_ipv4_dst"] = .origDst
        return map
    }()

    /// Resolved fields the query filters or orders on; the host needs values only for these.
    public var resolvedFieldsUsed: Set<String> {
        var names = Set<String>()
        for case .resolved(let name, _) in filters { names.insert(name) }
        if case .resolved(let name)? = orderField { names.insert(name) }
        return names
    }

    /// Answers the query.
    ///
    /// - Parameters:
    ///   - flows: the table snapshot.
    ///   - now: monotonic seconds, for remaining timeouts (`Flow.remainingTimeout(at:)`).
    ///   - wallNow: wall-clock seconds since the epoch, for ages (`Flow.age(at:)`); the current time by default.
    ///   - resolve: a resolved field's value for a mark (nil: no value). Called at most once per (field, distinct
    ///     mark) per run, and only for marks of flows that passed every built-in filter. nil: no resolver, so
    ///     resolved filters match nothing and resolved ordering falls back to id.
    /// - Returns: the matching count and the page as indices into `flows`.
    public func run(
        on flows: [Flow], now: Double, wallNow: Double = Date().timeIntervalSince1970,
        resolve: ((String, UInt32) -> ResolvedValue?)?
    ) -> FlowQueryResult {
        run(on: FlowTable(flows), now: now, wallNow: wallNow, resolve: resolve)
    }

    /// Answers the query on the mirror's chunked storage; indices in the result are indices into `table`.
    public func run(
        on table: FlowTable, now: Double, wallNow: Double = Date().timeIntervalSince1970,
        resolve: ((String, UInt32) -> ResolvedValue?)?
    ) -> FlowQueryResult {
        let n = table.count
        let start = max(0, self.start)
        let length = max(0, self.length)
        // How many of the smallest keys we need; 0 counts only (start >= n can never produce rows).
        let want = length == 0 || start >= n ? 0 : min(n, start + length)
        let matcher = FlowQueryEngine.Matcher(filters: filters, now: now, wallNow: wallNow)
        let resolvedFilters: [(String, [ResolvedValue])] = filters.compactMap {
            if case .resolved(let name, let values) = $0 { return (name, values) }
            return nil
        }
        var orderName: String?
        if case .resolved(let name)? = orderField { orderName = name }
        if resolvedFilters.isEmpty && orderName == nil {
            var none = FlowQueryEngine.NoSlots()
            return FlowQueryEngine.execute(self, table, matcher, &none, want: want, start: start, length: length)
        }
        var cache = FlowQueryEngine.ResolvedCache(filters: resolvedFilters, orderField: orderName, resolve: resolve)
        return FlowQueryEngine.execute(self, table, matcher, &cache, want: want, start: start, length: length)
    }

    /// Calls `body` with every flow of `table` that passes the filters (the order and the page are ignored).
    public func forEachMatch(
        on table: FlowTable, now: Double, wallNow: Double = Date().timeIntervalSince1970,
        resolve: ((String, UInt32) -> ResolvedValue?)?, _ body: (Flow) -> Void
    ) {
        let matcher = FlowQueryEngine.Matcher(filters: filters, now: now, wallNow: wallNow)
        let resolvedFilters: [(String, [ResolvedValue])] = filters.compactMap {
            if case .resolved(let name, let values) = $0 { return (name, values) }
            return nil
        }
        withoutActuallyEscaping(body) { body in
            var visitor = FlowQueryEngine.ClosureVisitor(body: body)
            if resolvedFilters.isEmpty {
                var none = FlowQueryEngine.NoSlots()
                _ = FlowQueryEngine.visit(table, matcher, &none, &visitor)
            } else {
                var cache = FlowQueryEngine.ResolvedCache(filters: resolvedFilters, orderField: nil, resolve: resolve)
                _ = FlowQueryEngine.visit(table, matcher, &cache, &visitor)
            }
        }
    }

    package var orderFieldBuiltin: SortField? {
        if case .builtin(let field)? = orderField { return field }
        return nil
    }
}

/// Internals of `FlowQuery.run`: plain-old-data filters, integer sort keys and selection.
enum FlowQueryEngine {
    // MARK: Filters

    /// Lists longer than this are matched through hash sets instead of a scan of the values (a scan is faster for
    /// the short lists people type; a set keeps a list of thousands constant-time per flow).
    static let hashedListThreshold = 16

    struct NumericPredicate {
        var field: FlowQuery.NumericField
        var first: Int
        var count: Int
        /// Index into `Matcher.numericSets` for a long list, else -1.
        var set = -1
    }

    struct AddressPredicate {
        var field: FlowQuery.AddressField
        var first: Int
        var count: Int
        /// Index into `Matcher.addressSets` for a long list, else -1.
        var sets = -1
    }

    /// The blocks of one prefix length (and family), as their masked networks: an address is in one of them when
    /// its masked value is in `networks`.
    struct MaskedNetworks {
        var isIPv6: Bool
        var maskHigh: UInt64
        var maskLow: UInt64
        var networks: Set<AddressBits>

        static func grouping(_ blocks: [Block]) -> [MaskedNetworks] {
            var groups: [String: MaskedNetworks] = [:]
            for b in blocks {
                let key = "\(b.isIPv6) \(b.maskHigh) \(b.maskLow)"
                groups[key, default: MaskedNetworks(isIPv6: b.isIPv6, maskHigh: b.maskHigh, maskLow: b.maskLow, networks: [])]
                    .networks.insert(AddressBits(high: b.high, low: b.low))
            }
            return Array(groups.values)
        }

        @inline(__always) func contains(_ a: IPAddress) -> Bool {
            a.isIPv6 == isIPv6 && networks.contains(AddressBits(high: a.high & maskHigh, low: a.low & maskLow))
        }
    }

    struct RangePredicate {
        var field: FlowQuery.RangeField
        var min: Double
        var max: Double

        @inline(__always) func contains(_ v: Double) -> Bool { v >= min && v <= max }

        @inline(__always) func passes(_ f: UnsafePointer<Flow>, now: Double, wallNow: Double) -> Bool {
            let flow = f.pointee
            switch field {
            case .age:
                guard let age = flow.age(at: wallNow) else { return false }
                return contains(Double(age))
            case .timeout: return contains(Double(flow.remainingTimeout(at: now)))
            case .origBytes: return contains(Double(flow.origBytes))
            case .replBytes: return contains(Double(flow.replyBytes))
            case .bytes: return contains(Double(flow.totalBytes))
            case .packets: return contains(Double(flow.totalPackets))
            case .byteRate: return contains(flow.byteRate)
            case .origPortSrc: return contains(Double(flow.origSourcePort))
            case .origPortDst: return contains(Double(flow.origDestinationPort))
            case .replPortSrc: return contains(Double(flow.replySourcePort))
            case .replPortDst: return contains(Double(flow.replyDestinationPort))
            case .anyPort:
                return contains(Double(flow.origSourcePort)) || contains(Double(flow.origDestinationPort))
                    || contains(Double(flow.replySourcePort)) || contains(Double(flow.replyDestinationPort))
            }
        }
    }

    struct AddressBits: Hashable {
        var high: UInt64
        var low: UInt64
    }

    /// A CIDR block with its mask precomputed.
    struct Block {
        var isIPv6: Bool
        var maskHigh: UInt64
        var maskLow: UInt64
        var high: UInt64
        var low: UInt64

        init(_ block: CIDRBlock) {
            isIPv6 = block.network.isIPv6
            let length = block.prefixLength
            if isIPv6 {
                maskHigh = length >= 64 ? ~0 : (length == 0 ? 0 : ~UInt64(0) << UInt64(64 - length))
                maskLow = length <= 64 ? 0 : (length >= 128 ? ~0 : ~UInt64(0) << UInt64(128 - length))
            } else {
                maskHigh = 0
                maskLow = length == 0 ? 0 : UInt64(~UInt32(0) << UInt32(32 - length))
            }
            high = block.network.high & maskHigh
            low = block.network.low & maskLow
        }

        @inline(__always) func contains(_ a: IPAddress) -> Bool {
            a.isIPv6 == isIPv6 && a.high & maskHigh == high && a.low & maskLow == low
        }
    }

    /// The built-in filters flattened into arrays of plain values (no reference counting in the hot loop).
    struct Matcher {
        var numerics: [NumericPredicate] = []
        var numericValues: [UInt32] = []
        var statusMasks: [UInt32] = []
        var addresses: [AddressPredicate] = []
        var blocks: [Block] = []
        var lateNumerics: [NumericPredicate] = []
        var numericSets: [Set<UInt32>] = []
        var addressSets: [[MaskedNetworks]] = []
        var ranges: [RangePredicate] = []
        /// One mask per `label` filter: the flow passes when it has any of the mask's bits.
        var labelMasks: [(low: UInt64, high: UInt64)] = []
        /// One list of helper indices per `helper` filter; an empty list matches nothing (a name never seen).
        var helpers: [[UInt16]] = []
        var now: Double
        var wallNow: Double

        private mutating func predicate(_ field: FlowQuery.NumericField, _ values: [UInt32]) -> NumericPredicate {
            var p = NumericPredicate(field: field, first: numericValues.count, count: values.count)
            if values.count > FlowQueryEngine.hashedListThreshold {
                p.set = numericSets.count
                numericSets.append(Set(values))
            } else {
                numericValues += values
            }
            return p
        }

        init(filters: [FlowQuery.Filter], now: Double, wallNow: Double) {
            self.now = now
            self.wallNow = wallNow
            for filter in filters {
                switch filter {
                case .number(.timeout, let values):
                    // Computing the remaining time costs more than a load; check it after the addresses.
                    lateNumerics.append(predicate(.timeout, values))
                case .number(let field, let values):
                    numerics.append(predicate(field, values))
                case .status(let masks):
                    statusMasks += masks
                case .address(let field, let list):
                    var p = AddressPredicate(field: field, first: blocks.count, count: list.count)
                    if list.count > FlowQueryEngine.hashedListThreshold {
                        p.sets = addressSets.count
                        addressSets.append(MaskedNetworks.grouping(list.map(Block.init)))
                    } else {
                        blocks += list.map(Block.init)
                    }
                    addresses.append(p)
                case .range(let field, let min, let max):
                    ranges.append(RangePredicate(field: field, min: min ?? -.infinity, max: max ?? .infinity))
                case .labels(let bits):
                    var mask: (low: UInt64, high: UInt64) = (0, 0)
                    for b in bits where (0...127).contains(b) {
                        if b < 64 { mask.low |= 1 << UInt64(b) } else { mask.high |= 1 << UInt64(b - 64) }
                    }
                    labelMasks.append(mask)
                case .helper(let names):
                    helpers.append(names.compactMap { HelperName.existing($0)?.index })
                case .resolved:
                    break  // ResolvedCache
                }
            }
        }

        var isEmpty: Bool {
            numerics.isEmpty && statusMasks.isEmpty && addresses.isEmpty && lateNumerics.isEmpty && ranges.isEmpty
                && labelMasks.isEmpty && helpers.isEmpty
        }
    }

    @inline(__always)
    static func numericValue(_ field: FlowQuery.NumericField, _ f: UnsafePointer<Flow>, now: Double) -> UInt32 {
        switch field {
        case .id: return f.pointee.id
        case .mark: return f.pointee.mark
        case .timeout: return f.pointee.remainingTimeout(at: now)
        case .l3proto: return UInt32(f.pointee.l3proto)
        case .l4proto: return UInt32(f.pointee.l4proto)
        case .state: return UInt32(f.pointee.tcpState)
        case .zone: return UInt32(f.pointee.zone)
        case .origPortSrc: return UInt32(f.pointee.origSourcePort)
        case .origPortDst: return UInt32(f.pointee.origDestinationPort)
        case .replPortSrc: return UInt32(f.pointee.replySourcePort)
        case .replPortDst: return UInt32(f.pointee.replyDestinationPort)
        case .anyPort: return UInt32(f.pointee.origSourcePort)  // `port` is matched port by port (MatcherView.passes)
        }
    }

    @inline(__always)
    static func address(_ field: FlowQuery.AddressField, _ f: UnsafePointer<Flow>) -> IPAddress {
        switch field {
        case .origSrc: return f.pointee.origSource
        case .origDst: return f.pointee.origDestination
        case .replSrc: return f.pointee.replySource
        case .replDst: return f.pointee.replyDestination
        case .any: return f.pointee.origSource  // `host` is matched field by field (MatcherView.passes)
        }
    }

    /// The filter loop over raw buffers of the matcher's arrays.
    struct MatcherView {
        var numerics: UnsafeBufferPointer<NumericPredicate>
        var numericValues: UnsafeBufferPointer<UInt32>
        var statusMasks: UnsafeBufferPointer<UInt32>
        var addresses: UnsafeBufferPointer<AddressPredicate>
        var blocks: UnsafeBufferPointer<Block>
        var lateNumerics: UnsafeBufferPointer<NumericPredicate>
        var numericSets: [Set<UInt32>]
        var addressSets: [[MaskedNetworks]]
        var ranges: [RangePredicate]
        var labelMasks: [(low: UInt64, high: UInt64)]
        var helpers: [[UInt16]]
        var now: Double
        var wallNow: Double

        @inline(__always) func passes(_ p: NumericPredicate, _ f: UnsafePointer<Flow>) -> Bool {
            if p.field == .anyPort {
                for field in [FlowQuery.NumericField.origPortSrc, .origPortDst, .replPortSrc, .replPortDst] {
                    var one = p
                    one.field = field
                    if passes(one, f) { return true }
                }
                return false
            }
            let v = FlowQueryEngine.numericValue(p.field, f, now: now)
            if p.set >= 0 { return numericSets[p.set].contains(v) }
            for j in p.first..<(p.first + p.count) where numericValues[j] == v { return true }
            return false
        }

        @inline(__always) func passes(_ p: AddressPredicate, _ f: UnsafePointer<Flow>) -> Bool {
            if p.field == .any {
                for field in [FlowQuery.AddressField.origSrc, .origDst, .replSrc, .replDst] {
                    var one = p
                    one.field = field
                    if passes(one, f) { return true }
                }
                return false
            }
            let a = FlowQueryEngine.address(p.field, f)
            if p.sets >= 0 {
                for group in addressSets[p.sets] where group.contains(a) { return true }
                return false
            }
            for j in p.first..<(p.first + p.count) where blocks[j].contains(a) { return true }
            return false
        }

        @inline(__always) func matches(_ f: UnsafePointer<Flow>) -> Bool {
            for p in numerics where !passes(p, f) { return false }
            if !statusMasks.isEmpty {
                let status = f.pointee.status
                for m in statusMasks where status & m == 0 { return false }
            }
            for m in labelMasks where f.pointee.labelsLow & m.low == 0 && f.pointee.labelsHigh & m.high == 0 {
                return false
            }
            for list in helpers where !list.contains(f.pointee.helper.index) { return false }
            for p in addresses where !passes(p, f) { return false }
            for r in ranges where !r.passes(f, now: now, wallNow: wallNow) { return false }
            for p in lateNumerics where !passes(p, f) { return false }
            return true
        }
    }

    /// Picks the key type for the order field and runs the scan and the selection.
    static func execute<S: SlotSource>(
        _ query: FlowQuery, _ buffer: FlowTable, _ matcher: Matcher, _ slots: inout S, want: Int,
        start: Int, length: Int
    ) -> FlowQueryResult {
        let n = buffer.count
        let descending = query.direction == .descending
        switch query.orderField {
        case .resolved?:
            var maker = SlotKeyMaker()
            // Ranks are known only after the scan, so collect every match.
            var sink = Selector<Key2>(want: want, tableSize: n, collectAll: true)
            let total = scan(buffer, matcher, &slots, &maker, &sink)
            if want > 0 { slots.rankKeys(&sink.items, descending: descending) }
            return FlowQueryResult(total: total, page: sink.page(start: start, length: length))
        case .builtin(let field)? where AddressKeyMaker.handles(field):
            var maker = AddressKeyMaker(field: field, descending: descending)
            var sink = Selector<AddrKey>(want: want, tableSize: n)
            let total = scan(buffer, matcher, &slots, &maker, &sink)
            return FlowQueryResult(total: total, page: sink.page(start: start, length: length))
        default:
            var maker = ScalarKeyMaker(field: query.orderFieldBuiltin ?? .id, descending: descending, now: matcher.now)
            var sink = Selector<Key2>(want: want, tableSize: n)
            let total = scan(buffer, matcher, &slots, &maker, &sink)
            return FlowQueryResult(total: total, page: sink.page(start: start, length: length))
        }
    }

    // MARK: Resolved fields

    /// Where the scan gets a flow's per-mark slot (resolved-field verdict and order value).
    protocol SlotSource {
        /// Whether the scan must look up a slot for each flow that passes the built-in filters.
        var needsSlot: Bool { get }
        /// Whether there are resolved filters (checked through `passes`).
        var hasFilters: Bool { get }
        mutating func slot(_ mark: UInt32) -> Int
        func passes(_ slot: Int) -> Bool
        func rankKeys(_ keys: inout [Key2], descending: Bool)
    }

    /// No resolved fields in the query.
    struct NoSlots: SlotSource {
        var needsSlot: Bool { false }
        var hasFilters: Bool { false }
        @inline(__always) mutating func slot(_ mark: UInt32) -> Int { 0 }
        @inline(__always) func passes(_ slot: Int) -> Bool { true }
        func rankKeys(_ keys: inout [Key2], descending: Bool) {}
    }

    /// Per-run memo of resolved values, keyed by mark: a small open-addressing table maps each distinct mark to a
    /// slot; each slot holds the verdict of the resolved filters and the order value.
    struct ResolvedCache: SlotSource {
        let filters: [(String, [ResolvedValue])]
        let orderField: String?
        let resolve: ((String, UInt32) -> ResolvedValue?)?

        private var tableMarks: [UInt32]
        private var tableSlots: [Int32]
        private var tableMask: Int
        private var lastMark: UInt32 = 0
        private var lastSlot: Int = -1
        /// Per slot.
        private(set) var passList: [Bool] = []
        private(set) var orderValues: [ResolvedValue?] = []
        private(set) var marks: [UInt32] = []

        init(filters: [(String, [ResolvedValue])], orderField: String?, resolve: ((String, UInt32) -> ResolvedValue?)?)
        {
            self.filters = filters
            self.orderField = orderField
            self.resolve = resolve
            tableMarks = [UInt32](repeating: 0, count: 64)
            tableSlots = [Int32](repeating: -1, count: 64)
            tableMask = 63
        }

        var needsSlot: Bool { true }
        var hasFilters: Bool { !filters.isEmpty }

        @inline(__always) func passes(_ slot: Int) -> Bool { passList[slot] }

        @inline(__always) mutating func slot(_ mark: UInt32) -> Int {
            if mark == lastMark && lastSlot >= 0 { return lastSlot }
            let s = lookupOrInsert(mark)
            lastMark = mark
            lastSlot = s
            return s
        }

        @inline(__always) private static func hash(_ mark: UInt32) -> Int {
            Int(truncatingIfNeeded: (UInt64(mark) &* 0x9E37_79B9_7F4A_7C15) >> 40)
        }

        @inline(__always) private mutating func lookupOrInsert(_ mark: UInt32) -> Int {
            let found: Int = tableSlots.withUnsafeBufferPointer { slots in
                tableMarks.withUnsafeBufferPointer { keys in
                    var i = ResolvedCache.hash(mark) & tableMask
                    while true {
                        let s = slots[i]
                        if s < 0 { return -1 - i }
                        if keys[i] == mark { return Int(s) }
                        i = (i + 1) & tableMask
                    }
                }
            }
            return found >= 0 ? found : insert(mark, at: -1 - found)
        }

        private mutating func insert(_ mark: UInt32, at i: Int) -> Int {
            let s = passList.count
            tableMarks[i] = mark
            tableSlots[i] = Int32(s)
            fill(mark)
            if passList.count * 2 > tableMask { grow() }
            return s
        }

        private mutating func grow() {
            let size = (tableMask + 1) * 2
            tableMarks = [UInt32](repeating: 0, count: size)
            tableSlots = [Int32](repeating: -1, count: size)
            tableMask = size - 1
            for (s, mark) in marks.enumerated() {
                var i = ResolvedCache.hash(mark) & tableMask
                while tableSlots[i] >= 0 { i = (i + 1) & tableMask }
                tableMarks[i] = mark
                tableSlots[i] = Int32(s)
            }
        }

        /// Resolves a new mark: each needed field once.
        private mutating func fill(_ mark: UInt32) {
            var memo: [String: ResolvedValue?] = [:]
            func value(_ field: String) -> ResolvedValue? {
                if let known = memo[field] { return known }
                let v = resolve?(field, mark)
                memo[field] = .some(v)
                return v
            }
            var pass = true
            for (field, wanted) in filters {
                guard let v = value(field), wanted.contains(where: v.matchesFilter) else {
                    pass = false
                    break
                }
            }
            passList.append(pass)
            orderValues.append(orderField.map(value) ?? nil)
            marks.append(mark)
        }

        /// Rewrites keys made by `SlotKeyMaker` (slot in the high word) into rank keys: equal values share a rank,
        /// missing values rank lowest; DESC flips the rank.
        func rankKeys(_ keys: inout [Key2], descending: Bool) {
            let order = orderValues.indices.sorted { a, b in
                switch (orderValues[a], orderValues[b]) {
                case (nil, nil): return a < b
                case (nil, _): return true
                case (_, nil): return false
                case (let x?, let y?): return x < y || (x == y && a < b)
                }
            }
            var rank = [UInt32](repeating: 0, count: orderValues.count)
            var current: UInt32 = 0
            for (position, slot) in order.enumerated() {
                if position > 0 && orderValues[order[position - 1]] != orderValues[slot] { current += 1 }
                rank[slot] = descending ? ~current : current
            }
            for i in keys.indices {
                let slot = Int(keys[i].a >> 32)
                keys[i].a = UInt64(rank[slot]) << 32 | (keys[i].a & 0xffff_ffff)
            }
        }
    }

    // MARK: Keys

    protocol QueryKey: Comparable {
        /// The flow's position in the table.
        var index: Int { get }
    }

    /// Two words compared in order. Narrow fields: a = primary << 32 | id, b = index; wide fields: a = primary,
    /// b = id << 32 | index. Either way the index is the low 32 bits of b.
    struct Key2: QueryKey {
        var a: UInt64
        var b: UInt64

        @inline(__always) static func < (l: Key2, r: Key2) -> Bool { l.a != r.a ? l.a < r.a : l.b < r.b }
        var index: Int { Int(truncatingIfNeeded: b & 0xffff_ffff) }
    }

    /// An address key: family (IPv4 first), 128 address bits, then id << 32 | index.
    struct AddrKey: QueryKey {
        var family: UInt64
        var high: UInt64
        var low: UInt64
        var tie: UInt64

        @inline(__always) static func < (l: AddrKey, r: AddrKey) -> Bool {
            if l.family != r.family { return l.family < r.family }
            if l.high != r.high { return l.high < r.high }
            if l.low != r.low { return l.low < r.low }
            return l.tie < r.tie
        }
        var index: Int { Int(truncatingIfNeeded: tie & 0xffff_ffff) }
    }

    protocol KeyMaker {
        associatedtype Key: QueryKey
        /// `slot` is the flow's mark slot when the query uses resolved fields, else 0.
        mutating func key(_ f: UnsafePointer<Flow>, index: Int, slot: Int) -> Key
    }

    /// Every built-in field except addresses.
    struct ScalarKeyMaker: KeyMaker {
        enum Kind { case id, narrow, wide }
        let field: FlowQuery.SortField
        let kind: Kind
        let flip: UInt64
        let now: Double

        init(field: FlowQuery.SortField, descending: Bool, now: Double) {
            self.field = field
            self.now = now
            switch field {
            case .origBytes, .origPackets, .replBytes, .replPackets, .bytes, .packets, .byteRate, .start, .age:
                kind = .wide
                flip = descending ? ~0 : 0
            default:
                kind = field == .id ? .id : .narrow
                flip = descending ? 0xffff_ffff : 0
            }
        }

        /// A Double as an unsigned integer with the same order (-0 as +0; NaNs beyond the infinities).
        @inline(__always) static func orderedBits(_ d: Double) -> UInt64 {
            let bits = (d + 0.0).bitPattern  // -0 + 0 is +0
            let negative = UInt64(bitPattern: Int64(bitPattern: bits) >> 63)
            return bits ^ (negative | 1 << 63)
        }

        @inline(__always) func key(_ f: UnsafePointer<Flow>, index: Int, slot: Int) -> Key2 {
            let id = UInt64(f.pointee.id)
            let i = UInt64(truncatingIfNeeded: index)
            switch kind {
            case .id:
                return Key2(a: (id ^ flip) << 32 | id, b: i)
            case .narrow:
                let p: UInt64
                switch field {
                case .l3proto: p = UInt64(f.pointee.l3proto)
                case .l4proto: p = UInt64(f.pointee.l4proto)
                case .origPortSrc: p = UInt64(f.pointee.origSourcePort)
                case .origPortDst: p = UInt64(f.pointee.origDestinationPort)
                case .replPortSrc: p = UInt64(f.pointee.replySourcePort)
                case .replPortDst: p = UInt64(f.pointee.replyDestinationPort)
                case .mark: p = UInt64(f.pointee.mark)
                case .timeout: p = UInt64(f.pointee.remainingTimeout(at: now))
                case .status: p = UInt64(f.pointee.status)
                case .state: p = UInt64(f.pointee.tcpState)
                case .zone: p = UInt64(f.pointee.zone)
                default: p = id
                }
                return Key2(a: (p ^ flip) << 32 | id, b: i)
            case .wide:
                let p: UInt64
                switch field {
                case .origBytes: p = f.pointee.origBytes
                case .origPackets: p = f.pointee.origPackets
                case .replBytes: p = f.pointee.replyBytes
                case .replPackets: p = f.pointee.replyPackets
                case .bytes: p = f.pointee.origBytes &+ f.pointee.replyBytes
                case .packets: p = f.pointee.origPackets &+ f.pointee.replyPackets
                case .start:
                    // 0 (unknown) first; known starts are positive and order as their bits.
                    p = f.pointee.start > 0 ? ScalarKeyMaker.orderedBits(f.pointee.start) : 0
                case .age:
                    // The age's order is the start's, reversed, with unknown starts first.
                    p = f.pointee.start > 0 ? ~ScalarKeyMaker.orderedBits(f.pointee.start) : 0
                default: p = ScalarKeyMaker.orderedBits(f.pointee.byteRate)
                }
                return Key2(a: p ^ flip, b: id << 32 | i)
            }
        }
    }

    struct AddressKeyMaker: KeyMaker {
        let field: FlowQuery.AddressField
        let flip: UInt64

        static func handles(_ field: FlowQuery.SortField) -> Bool {
            [.origSrc, .origDst, .replSrc, .replDst].contains(field)
        }

        init(field: FlowQuery.SortField, descending: Bool) {
            switch field {
            case .origSrc: self.field = .origSrc
            case .origDst: self.field = .origDst
            case .replSrc: self.field = .replSrc
            default: self.field = .replDst
            }
            flip = descending ? ~0 : 0
        }

        @inline(__always) func key(_ f: UnsafePointer<Flow>, index: Int, slot: Int) -> AddrKey {
            let a = FlowQueryEngine.address(field, f)
            return AddrKey(
                family: (a.isIPv6 ? 1 : 0) ^ flip, high: a.high ^ flip, low: a.low ^ flip,
                tie: UInt64(f.pointee.id) << 32 | UInt64(truncatingIfNeeded: index))
        }
    }

    /// Resolved ordering: slot << 32 | id for now; `ResolvedCache.rankKeys` turns slots into ranks after the scan.
    struct SlotKeyMaker: KeyMaker {
        @inline(__always) func key(_ f: UnsafePointer<Flow>, index: Int, slot: Int) -> Key2 {
            Key2(a: UInt64(slot) << 32 | UInt64(f.pointee.id), b: UInt64(truncatingIfNeeded: index))
        }
    }

    // MARK: Selection

    /// Keeps (at least) the `want` smallest keys offered, in a buffer of about twice that size: a key is appended
    /// only if it is below the current threshold; when the buffer is full, a quickselect keeps the `want` smallest
    /// and their largest becomes the threshold. After the first fill almost every key is rejected by one integer
    /// comparison, and the work per accepted key is constant (a heap would pay log(want) cache-missing steps).
    /// When `2 * want` reaches the table size, nothing is ever dropped: every match is kept and the page is
    /// isolated by quickselect at the end (the deep-page fallback).
    struct Selector<K: QueryKey> {
        let want: Int
        let capacity: Int
        var items: [K] = []
        var hasThreshold = false
        var threshold: K?

        init(want: Int, tableSize: Int, collectAll: Bool = false) {
            self.want = want
            capacity = collectAll ? Int.max : max(2 * want, want + 4096)
            if want > 0 { items.reserveCapacity(min(capacity, tableSize)) }
        }

        @inline(__always) mutating func offer(_ key: K) {
            if hasThreshold && !(key < threshold.unsafelyUnwrapped) { return }
            items.append(key)
            if items.count == capacity { compact() }
        }

        /// Keeps the `want` smallest keys; the largest of them becomes the threshold.
        private mutating func compact() {
            let want = self.want
            let last = items.withUnsafeMutableBufferPointer { a -> K in
                Selector.nthElement(a, 0, a.count, want - 1)
                return a[want - 1]
            }
            items.removeLast(items.count - want)
            threshold = last
            hasThreshold = true
        }

        /// The table indices of ranks start..<start+length among the offered keys.
        mutating func page(start: Int, length: Int) -> [Int] {
            let count = items.count
            guard start < count, length > 0 else { return [] }
            let end = min(count, start + length)
            return items.withUnsafeMutableBufferPointer { a -> [Int] in
                Selector.selectRange(a, start, end)
                return (start..<end).map { a[$0].index }
            }
        }

        /// Rearranges `a` so that a[start..<end] holds, sorted, the elements of those ranks.
        static func selectRange(_ a: UnsafeMutableBufferPointer<K>, _ start: Int, _ end: Int) {
            let count = a.count
            if end < count && end <= count - start {
                // Shallow: cut at end first, then at start within the (small) prefix.
                nthElement(a, 0, count, end)
                if start > 0 { nthElement(a, 0, end, start) }
            } else {
                if start > 0 { nthElement(a, 0, count, start) }
                if end < count { nthElement(a, start, count, end) }
            }
            var page = UnsafeMutableBufferPointer(rebasing: a[start..<end])
            page.sort()
        }

        /// Rearranges a[lo..<hi] so that a[nth] is the element that belongs there in sorted order, with smaller ones
        /// before it and larger ones after (keys are unique). Sorts the range after too many rounds (bad pivots).
        static func nthElement(_ a: UnsafeMutableBufferPointer<K>, _ lo0: Int, _ hi0: Int, _ nth: Int) {
            var lo = lo0
            var hi = hi0
            var budget = 2 * (Int.bitWidth - (hi - lo).leadingZeroBitCount) + 4
            while hi - lo > 24 && budget > 0 {
                budget -= 1
                // Median of three moved to lo, then the classic Hoare partition around it.
                let mid = lo + (hi - lo) / 2
                if a[mid] < a[lo] { a.swapAt(mid, lo) }
                if a[hi - 1] < a[lo] { a.swapAt(hi - 1, lo) }
                if a[hi - 1] < a[mid] { a.swapAt(hi - 1, mid) }
                a.swapAt(lo, mid)
                let pivot = a[lo]
                var i = lo - 1
                var j = hi
                while true {
                    repeat { i += 1 } while a[i] < pivot
                    repeat { j -= 1 } while pivot < a[j]
                    if i >= j { break }
                    a.swapAt(i, j)
                }
                // a[lo...j] <= pivot <= a[j+1..<hi], lo <= j < hi - 1
                if nth <= j { hi = j + 1 } else { lo = j + 1 }
            }
            var rest = UnsafeMutableBufferPointer(rebasing: a[lo..<hi])
            rest.sort()
        }
    }

    /// One pass over the table: filters, resolved-filter verdict, then the key into the selector.
    /// What the scan does with each match.
    protocol MatchVisitor {
        mutating func visit(_ f: UnsafePointer<Flow>, index: Int, slot: Int)
    }

    /// Hands each match to a closure (summaries, previews).
    struct ClosureVisitor: MatchVisitor {
        let body: (Flow) -> Void
        @inline(__always) mutating func visit(_ f: UnsafePointer<Flow>, index: Int, slot: Int) { body(f.pointee) }
    }

    /// Offers each match's sort key to the selector (the page of `run`).
    struct SelectingVisitor<M: KeyMaker>: MatchVisitor {
        var maker: M
        var sink: Selector<M.Key>
        @inline(__always) mutating func visit(_ f: UnsafePointer<Flow>, index: Int, slot: Int) {
            if sink.want > 0 { sink.offer(maker.key(f, index: index, slot: slot)) }
        }
    }

    static func scan<M: KeyMaker, S: SlotSource>(
        _ table: FlowTable, _ matcher: Matcher, _ slots: inout S,
        _ maker: inout M, _ sink: inout Selector<M.Key>
    ) -> Int {
        var visitor = SelectingVisitor(maker: maker, sink: sink)
        sink = Selector(want: 0, tableSize: 0)  // moved into the visitor for the scan
        let total = visit(table, matcher, &slots, &visitor)
        maker = visitor.maker
        sink = visitor.sink
        return total
    }

    /// Calls `visitor` for every flow that passes the filters; returns how many did.
    static func visit<V: MatchVisitor, S: SlotSource>(
        _ table: FlowTable, _ matcher: Matcher, _ slots: inout S, _ visitor: inout V
    ) -> Int {
        let plain = matcher.isEmpty
        let needsSlot = slots.needsSlot
        let slotFilter = slots.hasFilters
        var total = 0
        matcher.numerics.withUnsafeBufferPointer { numerics in
            matcher.numericValues.withUnsafeBufferPointer { numericValues in
                matcher.statusMasks.withUnsafeBufferPointer { statusMasks in
                    matcher.addresses.withUnsafeBufferPointer { addresses in
                        matcher.blocks.withUnsafeBufferPointer { blocks in
                            matcher.lateNumerics.withUnsafeBufferPointer { lateNumerics in
                                let view = MatcherView(
                                    numerics: numerics, numericValues: numericValues, statusMasks: statusMasks,
                                    addresses: addresses, blocks: blocks, lateNumerics: lateNumerics,
                                    numericSets: matcher.numericSets, addressSets: matcher.addressSets,
                                    ranges: matcher.ranges, labelMasks: matcher.labelMasks, helpers: matcher.helpers,
                                    now: matcher.now, wallNow: matcher.wallNow)
                                _ = table.forEachChunk { flows, first in
                                    guard let base = flows.baseAddress else { return }
                                    for i in 0..<flows.count {
                                        let f = base + i
                                        if !plain && !view.matches(f) { continue }
                                        var slot = 0
                                        if needsSlot {
                                            slot = slots.slot(f.pointee.mark)
                                            if slotFilter && !slots.passes(slot) { continue }
                                        }
                                        total += 1
                                        visitor.visit(f, index: first + i, slot: slot)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return total
    }
}
