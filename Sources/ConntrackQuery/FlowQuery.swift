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
        run(on: table, candidates: nil, now: now, wallNow: wallNow, resolve: resolve)
    }

    /// The scan, over the whole table or only over `candidates` (table indices from an index).
    /// `exact`: every candidate passes the filters (a lone seekable filter), so they are not checked again.
    func run(
        on table: FlowTable, candidates: [Int]?, exact: Bool = false, now: Double, wallNow: Double,
        resolve: ((String, UInt32) -> ResolvedValue?)?
    ) -> FlowQueryResult {
        let n = candidates?.count ?? table.count
        let start = max(0, self.start)
        let length = max(0, self.length)
        // How many of the smallest keys we need; 0 counts only (start >= n can never produce rows).
        let want = length == 0 || start >= n ? 0 : min(n, start + length)
        let matcher = FlowQueryEngine.Matcher(filters: exact ? [] : filters, now: now, wallNow: wallNow)
        let resolvedFilters: [(String, [ResolvedValue])] = filters.compactMap {
            if case .resolved(let name, let values) = $0 { return (name, values) }
            return nil
        }
        var orderName: String?
        if case .resolved(let name)? = orderField { orderName = name }
        if resolvedFilters.isEmpty && orderName == nil {
            var none = FlowQueryEngine.NoSlots()
            return FlowQueryEngine.execute(
                self, table, matcher, &none, want: want, start: start, length: length, candidates: candidates)
        }
        var cache = FlowQueryEngine.ResolvedCache(filters: resolvedFilters, orderField: orderName, resolve: resolve)
        return FlowQueryEngine.execute(
            self, table, matcher, &cache, want: want, start: start, length: length, candidates: candidates)
    }

    /// Calls `body` with every flow of `table` that passes the filters (the order and the page are ignored).
    /// With `indexes` (of the same table), a selective indexed filter narrows the flows considered (the seek plan
    /// of ``runReportingPlan(on:indexes:now:wallNow:resolve:)``); the flows are then visited in that index's order.
    public func forEachMatch(
        on table: FlowTable, indexes: FlowIndexes? = nil, now: Double, wallNow: Double = Date().timeIntervalSince1970,
        resolve: ((String, UInt32) -> ResolvedValue?)?, _ body: (Flow) -> Void
    ) {
        var candidates: [Int]?
        if let indexes, indexes.count == table.count { candidates = FlowQueryEngine.seekCandidates(filters, indexes) }
        // A lone seekable filter is exact (see runReportingPlan).
        let exact = candidates != nil && filters.count == 1
        let matcher = FlowQueryEngine.Matcher(filters: exact ? [] : filters, now: now, wallNow: wallNow)
        let resolvedFilters: [(String, [ResolvedValue])] = filters.compactMap {
            if case .resolved(let name, let values) = $0 { return (name, values) }
            return nil
        }
        withoutActuallyEscaping(body) { body in
            var visitor = FlowQueryEngine.ClosureVisitor(body: body)
            if resolvedFilters.isEmpty {
                var none = FlowQueryEngine.NoSlots()
                _ = FlowQueryEngine.visit(table, matcher, &none, &visitor, candidates)
            } else {
                var cache = FlowQueryEngine.ResolvedCache(filters: resolvedFilters, orderField: nil, resolve: resolve)
                _ = FlowQueryEngine.visit(table, matcher, &cache, &visitor, candidates)
            }
        }
    }

    package var orderFieldBuiltin: SortField? {
        if case .builtin(let field)? = orderField { return field }
        return nil
    }
}

/// Internals of `FlowQuery.run`: plain-old-data filters, integer sort keys and selection.
enum FlowQueryEngine {}

