import Foundation
import TestSupport
import Testing

@testable import ConntrackQuery
@testable import Conntrack

// MARK: - Helpers

private func v4(_ text: String) -> IPAddress { IPAddress(text)! }

private func query(
    _ filters: [String: FilterInput] = [:], order: String? = nil, dir: String? = nil, start: Int64 = 0,
    length: Int64 = 1000, maxLength: Int = 1000, resolved: Set<String> = []
) throws -> FlowQuery {
    try FlowQuery.parse(
        filters: filters, orderBy: order, orderDirection: dir, start: start, length: length, maxLength: maxLength,
        resolvedFields: resolved)
}

/// The ids of the page, in order.
private func ids(
    _ flows: [Flow], _ filters: [String: FilterInput] = [:], order: String? = nil, dir: String? = nil,
    start: Int64 = 0, length: Int64 = 1000, now: Double = 0, resolved: Set<String> = [],
    resolve: ((String, UInt32) -> ResolvedValue?)? = nil
) throws -> [UInt32] {
    let q = try query(filters, order: order, dir: dir, start: start, length: length, resolved: resolved)
    return q.run(on: flows, now: now, resolve: resolve).page.map { flows[$0].id }
}

/// Expects `parse` to fail with a query error (the server's -32602) and returns the message.
private func fault(
    _ filters: [String: FilterInput] = [:], order: String? = nil, dir: String? = nil, start: Int64 = 0,
    length: Int64 = 10, maxLength: Int = 1000, resolved: Set<String> = []
) -> String? {
    do {
        _ = try query(
            filters, order: order, dir: dir, start: start, length: length, maxLength: maxLength, resolved: resolved)
        return nil
    } catch let error as FlowQueryError {
        return error.message
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

/// A small fixed table exercising every filter.
private let sample: [Flow] = [
    Flow(
        id: 1, l3proto: 2, l4proto: 6, tcpState: 3, zone: 0,
        origSource: v4("10.0.0.1"), origDestination: v4("192.168.1.10"),
        replySource: v4("192.168.1.10"), replyDestination: v4("10.0.0.1"),
        origSourcePort: 40000, origDestinationPort: 443, replySourcePort: 443, replyDestinationPort: 40000,
        mark: 0xFFFF_FFFF, timeout: 100, status: 0b0110),  // SEEN_REPLY | ASSURED
    Flow(
        id: 2, l3proto: 2, l4proto: 17, zone: 1,
        origSource: v4("10.0.1.2"), origDestination: v4("8.8.8.8"),
        replySource: v4("8.8.8.8"), replyDestination: v4("203.0.113.5"),
        origSourcePort: 5353, origDestinationPort: 53, replySourcePort: 53, replyDestinationPort: 5353,
        mark: 7, timeout: 30, status: 0b0010 | 0x10),  // SEEN_REPLY | SRC_NAT
    Flow(
        id: 0x8000_0001, l3proto: 10, l4proto: 6, tcpState: 7, zone: 0,
        origSource: IPAddress("2001:db8::1")!, origDestination: IPAddress("2001:db8:1::2")!,
        replySource: IPAddress("2001:db8:1::2")!, replyDestination: IPAddress("2001:db8::1")!,
        origSourcePort: 50000, origDestinationPort: 22, replySourcePort: 22, replyDestinationPort: 50000,
        mark: 7, timeout: 120, status: 0b0100 | 0x20),  // ASSURED | DST_NAT
    Flow(
        id: 4, l3proto: 10, l4proto: 58, zone: 2,
        origSource: IPAddress("fe80::1")!, origDestination: IPAddress("ff02::1")!,
        replySource: IPAddress("ff02::1")!, replyDestination: IPAddress("fe80::1")!,
        mark: 0, timeout: 10, status: 0x400),  // FIXED_TIMEOUT
    Flow(
        id: 5, l3proto: 2, l4proto: 132, zone: 0,
        origSource: v4("192.168.0.1"), origDestination: v4("10.0.0.1"),
        replySource: v4("10.0.0.1"), replyDestination: v4("192.168.0.1"),
        origSourcePort: 40000, origDestinationPort: 9899, replySourcePort: 9899, replyDestinationPort: 40000,
        mark: 0x8000_0000, timeout: 60, status: 0b0110),
]

/// ~5000 flows with heavy key duplication (few ports, marks, addresses; some duplicate ids).
func randomTable(count: Int, seed: UInt64) -> [Flow] {
    var g = SplitMix(state: seed)
    var flows: [Flow] = []
    for i in 0..<count {
        let v6 = Int.random(in: 0..<4, using: &g) == 0
        func address() -> IPAddress {
            v6
                ? IPAddress(
                    high: 0x2001_0db8_0000_0000 | UInt64.random(in: 0..<3, using: &g),
                    low: UInt64.random(in: 0..<5, using: &g), isIPv6: true)
                : IPAddress(
                    ipv4: 0x0a00_0000 | UInt32.random(in: 0..<8, using: &g) << 8 | UInt32.random(in: 0..<4, using: &g))
        }
        let proto: UInt8 = [6, 17, 1, 58][Int.random(in: 0..<4, using: &g)]
        flows.append(
            Flow(
                id: i % 10 == 0 ? UInt32(i / 10) : UInt32.random(in: 0..<UInt32(count * 2), using: &g),
                l3proto: v6 ? 10 : 2, l4proto: proto,
                tcpState: proto == 6 ? UInt8.random(in: 0...9, using: &g) : Flow.noState,
                zone: UInt16.random(in: 0..<3, using: &g),
                origSource: address(), origDestination: address(), replySource: address(), replyDestination: address(),
                origSourcePort: UInt16.random(in: 1000..<1010, using: &g),
                origDestinationPort: [53, 80, 443][Int.random(in: 0..<3, using: &g)],
                replySourcePort: UInt16.random(in: 0..<5, using: &g),
                replyDestinationPort: UInt16.random(in: 0..<50, using: &g),
                mark: [0, 1, 7, 0xFFFF_FFFF][Int.random(in: 0..<4, using: &g)],
                timeout: UInt32.random(in: 0..<20, using: &g),
                timeoutObservedAt: Double(Int.random(in: 0..<5, using: &g)),
                status: UInt32.random(in: 0..<64, using: &g),
                origBytes: UInt64.random(in: 0..<4, using: &g) << 40, origPackets: UInt64.random(in: 0..<10, using: &g),
                replyBytes: UInt64.random(in: 0..<4, using: &g), replyPackets: UInt64.random(in: 0..<10, using: &g),
                byteRate: [0, -0.0, 1.5, 1e9, 3][Int.random(in: 0..<5, using: &g)]))
    }
    return flows
}

/// Independent reference: a Comparable primary value per order field.
enum RefValue: Comparable {
    case number(Double)
    case address(IPAddress)
    case resolved(ResolvedValue?)

    static func < (l: RefValue, r: RefValue) -> Bool {
        switch (l, r) {
        case (.number(let a), .number(let b)): return a < b
        case (.address(let a), .address(let b)): return a < b
        case (.resolved(nil), .resolved(let b)): return b != nil
        case (.resolved(_?), .resolved(nil)): return false
        case (.resolved(let a?), .resolved(let b?)): return a < b
        default: return false
        }
    }
}

func refValue(_ f: Flow, _ field: String, now: Double, resolve: (String, UInt32) -> ResolvedValue?) -> RefValue
{
    switch field {
    case "id": return .number(Double(f.id))
    case "l3proto": return .number(Double(f.l3proto))
    case "l4proto", "orig_l4proto": return .number(Double(f.l4proto))
    case "orig_src", "orig_ipv4_src": return .address(f.origSource)
    case "orig_dst", "orig_ipv4_dst": return .address(f.origDestination)
    case "repl_src": return .address(f.replySource)
    case "repl_dst": return .address(f.replyDestination)
    case "orig_port_src": return .number(Double(f.origSourcePort))
    case "orig_port_dst": return .number(Double(f.origDestinationPort))
    case "repl_port_src": return .number(Double(f.replySourcePort))
    case "repl_port_dst": return .number(Double(f.replyDestinationPort))
    case "mark": return .number(Double(f.mark))
    // Remaining time, exactly: the expiry (the displayed whole seconds are rounded up from it).
    case "timeout": return .number(f.expiry)
    case "status": return .number(Double(f.status))
    case "state": return .number(Double(f.tcpState))
    case "zone": return .number(Double(f.zone))
    case "orig_bytes": return .number(Double(f.origBytes))
    case "orig_packets": return .number(Double(f.origPackets))
    case "repl_bytes": return .number(Double(f.replyBytes))
    case "repl_packets": return .number(Double(f.replyPackets))
    case "bytes": return .number(Double(f.origBytes) + Double(f.replyBytes))
    case "packets": return .number(Double(f.origPackets + f.replyPackets))
    case "byte_rate": return .number(f.byteRate)
    default: return .resolved(resolve(field, f.mark))
    }
}

/// Naive filter-then-full-sort reference: order field (direction applied), then id ascending, then position.
func reference(
    _ flows: [Flow], where keep: (Flow) -> Bool, order: String?, descending: Bool, now: Double,
    resolve: @escaping (String, UInt32) -> ResolvedValue? = { _, _ in nil }
) -> [Int] {
    let field = order ?? "id"
    let matching = flows.indices.filter { keep(flows[$0]) }
    return matching.sorted { a, b in
        let va = refValue(flows[a], field, now: now, resolve: resolve)
        let vb = refValue(flows[b], field, now: now, resolve: resolve)
        if va != vb { return descending ? vb < va : va < vb }
        if flows[a].id != flows[b].id { return flows[a].id < flows[b].id }
        return a < b
    }
}

private let users: [UInt32: ResolvedValue] = [0: .string("root"), 1: .string("alice"), 7: .string("bob")]
private let quota: [UInt32: ResolvedValue] = [0: .integer(10), 1: .integer(5), 0xFFFF_FFFF: .integer(5)]
private func resolveFixture(_ field: String, _ mark: UInt32) -> ResolvedValue? {
    switch field {
    case "user": return users[mark]
    case "quota": return quota[mark]
    default: return nil
    }
}

// MARK: - Filters

@Suite struct FlowQueryFilterTests {
    @Test func view_whenNoFiltersAndNoOrder_returnsAllByIdAscending() throws {
        #expect(try ids(sample) == [1, 2, 4, 5, 0x8000_0001])
        let q = try query()
        #expect(q.run(on: sample, now: 0, resolve: nil).total == 5)
    }

    @Test func view_whenFilteringByCIDR_returnsOnlyMatches() throws {
        #expect(try ids(sample, ["orig_src": "10.0.0.0/16"]) == [1, 2])
        #expect(try ids(sample, ["orig_src": "10.0.0.0/24"]) == [1])
        #expect(try ids(sample, ["orig_dst": "10.0.0.1"]) == [5])
        #expect(try ids(sample, ["repl_src": "8.0.0.0/8"]) == [2])
        #expect(try ids(sample, ["repl_dst": "203.0.113.0/24"]) == [2])
        #expect(try ids(sample, ["orig_src": "0.0.0.0/0"]) == [1, 2, 5])
    }

    @Test func view_whenFilteringByIPv6CIDR_returnsOnlyIPv6Matches() throws {
        #expect(try ids(sample, ["orig_src": "2001:db8::/32"]) == [0x8000_0001])
        #expect(try ids(sample, ["orig_dst": "2001:db8:1::/48"]) == [0x8000_0001])
        #expect(try ids(sample, ["repl_src": "ff00::/8"]) == [4])
        #expect(try ids(sample, ["orig_src": "::/0"]) == [4, 0x8000_0001])
        #expect(try ids(sample, ["orig_src": "fe80::1"]) == [4])
    }

    @Test func view_whenFilteringByIPv4AsIntegerOrDottedString_matchesHostOrderAddress() throws {
        // 192.168.0.1 = 0xC0A80001 = 3232235521, or -1062731775 as a signed 32-bit value.
        #expect(try ids(sample, ["orig_ipv4_src": 3_232_235_521]) == [5])
        #expect(try ids(sample, ["orig_ipv4_src": -1_062_731_775]) == [5])
        #expect(try ids(sample, ["orig_ipv4_src": "192.168.0.1"]) == [5])
        #expect(try ids(sample, ["orig_ipv4_dst": .int(0x0a00_0001)]) == [5])
        #expect(try ids(sample, ["orig_src": .int(0x0a00_0001)]) == [1])
    }

    @Test func view_whenFilteringByMark_acceptsNegativeTwosComplementDecimalAndHex() throws {
        #expect(try ids(sample, ["mark": -1]) == [1])
        #expect(try ids(sample, ["mark": "0xffffffff"]) == [1])
        #expect(try ids(sample, ["mark": "4294967295"]) == [1])
        #expect(try ids(sample, ["mark": .int(Int64(Int32.min))]) == [5])
        #expect(try ids(sample, ["mark": "-2147483648"]) == [5])
        #expect(try ids(sample, ["mark": 7]) == [2, 0x8000_0001])
        #expect(try ids(sample, ["mark": "0X7"]) == [2, 0x8000_0001])
    }

    @Test func view_whenFilteringById_acceptsNegativeTwosComplementAndString() throws {
        #expect(try ids(sample, ["id": -2_147_483_647]) == [0x8000_0001])
        #expect(try ids(sample, ["id": "2147483649"]) == [0x8000_0001])
        #expect(try ids(sample, ["id": .int(0x8000_0001)]) == [0x8000_0001])
        #expect(try ids(sample, ["id": "4"]) == [4])
        #expect(try ids(sample, ["id": 99]) == [])
    }

    @Test func view_whenFilteringByProtocolNameOrNumber_matchesTheSameFlows() throws {
        for value: FilterInput in ["tcp", "TCP", 6, "6"] {
            #expect(try ids(sample, ["orig_l4proto": value]) == [1, 0x8000_0001])
            #expect(try ids(sample, ["l4proto": value]) == [1, 0x8000_0001])
        }
        #expect(try ids(sample, ["l4proto": "udp"]) == [2])
        #expect(try ids(sample, ["l4proto": "icmpv6"]) == [4])
        #expect(try ids(sample, ["l4proto": "sctp"]) == [5])
        #expect(try ids(sample, ["l4proto": 1]) == [])
    }

    @Test func view_whenFilteringByL3proto_acceptsNameOrFamilyNumber() throws {
        #expect(try ids(sample, ["l3proto": "ipv4"]) == [1, 2, 5])
        #expect(try ids(sample, ["l3proto": 2]) == [1, 2, 5])
        #expect(try ids(sample, ["l3proto": "IPv6"]) == [4, 0x8000_0001])
        #expect(try ids(sample, ["l3proto": 10]) == [4, 0x8000_0001])
    }

    @Test func view_whenFilteringByPorts_matchesEachDirection() throws {
        #expect(try ids(sample, ["orig_port_src": 40000]) == [1, 5])
        #expect(try ids(sample, ["orig_port_dst": 443]) == [1])
        #expect(try ids(sample, ["repl_port_src": "53"]) == [2])
        #expect(try ids(sample, ["repl_port_dst": 50000]) == [0x8000_0001])
        #expect(try ids(sample, ["orig_port_src": 40000, "orig_port_dst": 9899]) == [5])
    }

    @Test func view_whenFilteringByStatusList_requiresAllFlags() throws {
        #expect(try ids(sample, ["status": "ASSURED"]) == [1, 5, 0x8000_0001])
        #expect(try ids(sample, ["status": ["ASSURED", "SEEN_REPLY"]]) == [1, 5])
        #expect(try ids(sample, ["status": ["seen_reply", "nat"]]) == [2])
        #expect(try ids(sample, ["status": "NAT"]) == [2, 0x8000_0001])
        #expect(try ids(sample, ["status": "FIXED_TIMEOUT"]) == [4])
        #expect(try ids(sample, ["status": 0b0110]) == [1, 5])  // a bit mask: all bits
    }

    @Test func view_whenFilteringByState_isCaseInsensitiveAndSkipsNonTCP() throws {
        #expect(try ids(sample, ["state": "ESTABLISHED"]) == [1])
        #expect(try ids(sample, ["state": "time_wait"]) == [0x8000_0001])
        #expect(try ids(sample, ["state": 3]) == [1])
        #expect(try ids(sample, ["state": "3"]) == [1])
        #expect(try ids(sample, ["state": "NONE"]) == [])  // non-TCP flows have no state
        #expect(try ids(sample, ["state": ["ESTABLISHED", "TIME_WAIT"]]) == [1, 0x8000_0001])
    }

    @Test func view_whenFilteringByZone_matchesZone() throws {
        #expect(try ids(sample, ["zone": 0]) == [1, 5, 0x8000_0001])
        #expect(try ids(sample, ["zone": "2"]) == [4])
    }

    @Test func view_whenFilteringByTimeout_usesRemainingSeconds() throws {
        // At now = 20.5 the flow with timeout 100 (observed at 0) has ceil(79.5) = 80 s left.
        #expect(try ids(sample, ["timeout": 80], now: 20.5) == [1])
        #expect(try ids(sample, ["timeout": 100], now: 20.5) == [0x8000_0001])  // 120 - 20.5 → 100
        #expect(try ids(sample, ["timeout": 0], now: 35) == [2, 4])  // expired flows have 0 left
    }

    @Test func view_whenFilterValueIsList_matchesAnyOf() throws {
        #expect(try ids(sample, ["orig_src": ["10.0.0.0/24", "2001:db8::/32"]]) == [1, 0x8000_0001])
        #expect(try ids(sample, ["l4proto": ["udp", 132]]) == [2, 5])
        #expect(try ids(sample, ["mark": [-1, 0]]) == [1, 4])
    }

    @Test func view_whenCombiningFilters_requiresAll() throws {
        #expect(try ids(sample, ["orig_src": "10.0.0.0/8", "l4proto": "tcp", "status": "ASSURED"]) == [1])
        #expect(try ids(sample, ["orig_src": "10.0.0.0/8", "l4proto": "sctp"]) == [])
    }
}

// MARK: - Parameter faults

@Suite struct FlowQueryFaultTests {
    @Test func view_whenFilterKeyUnknown_throwsInvalidParamsListingValidKeys() {
        let message = fault(["colour": "red"], resolved: ["user"])
        #expect(message?.contains("'colour'") == true)
        #expect(message?.contains("orig_src") == true)
        #expect(message?.contains("user") == true)
    }

    @Test func view_whenAddressUnparseable_throwsHumanSentence() {
        #expect(fault(["orig_src": "abc"]) == "orig_src: 'abc' is not an IP address or CIDR block.")
        #expect(fault(["orig_src": "10.0.0.0/33"]) != nil)
        #expect(fault(["orig_ipv4_src": "::1"])?.contains("not an IPv4 address") == true)
    }

    @Test(arguments: [
        ("orig_port_src", FilterInput.int(70000)),
        ("orig_port_dst", FilterInput.int(-1)),
        ("repl_port_src", FilterInput.string("http")),
        ("mark", FilterInput.int(1 << 32)),
        ("mark", FilterInput.string("0xZZ")),
        ("id", FilterInput.int(-(1 << 31) - 1)),
        ("l4proto", FilterInput.string("xyz")),
        ("l4proto", FilterInput.int(256)),
        ("l3proto", FilterInput.int(3)),
        ("state", FilterInput.string("BOGUS")),
        ("status", FilterInput.string("FOO")),
        ("status", FilterInput.int(0)),
        ("zone", FilterInput.int(65536)),
        ("timeout", FilterInput.int(-5)),
        ("orig_ipv4_dst", FilterInput.int(1 << 33)),
        ("orig_src", FilterInput.list([])),
        ("orig_src", FilterInput.list([.list(["10.0.0.1"])])),
    ])
    func view_whenValueUnparseable_throwsInvalidParamsNamingTheKey(key: String, value: FilterInput) {
        let message = fault([key: value])
        #expect(message?.hasPrefix("\(key):") == true)
    }

    @Test func view_whenOrderByUnknown_throwsInvalidParams() {
        let message = fault(order: "colour")
        #expect(message?.contains("'colour'") == true)
        #expect(message?.contains("orig_port_src") == true)
    }

    @Test func view_whenOrderDirInvalid_throwsInvalidParams() throws {
        #expect(fault(order: "id", dir: "up")?.contains("ASC or DESC") == true)
        #expect(try query(order: "id", dir: "desc").direction == .descending)
        #expect(try query(order: "id", dir: "Asc").direction == .ascending)
        #expect(try query(order: "id", dir: "").direction == .ascending)
        #expect(try query(order: "", dir: nil).orderField == nil)
    }

    @Test func view_whenStartNegative_throwsInvalidParams() {
        #expect(fault(start: -1)?.contains("start") == true)
    }

    @Test func view_whenLengthOutOfRange_throwsInvalidParams() throws {
        #expect(fault(length: -1)?.contains("length") == true)
        #expect(try query(length: 1001, maxLength: 1000).length == 1000, "served as the maximum, as pyctd did")
        #expect(try query(length: 1000, maxLength: 1000).length == 1000)
    }

    @Test func view_whenLengthZero_returnsOnlyTheTotal() throws {
        let result = try query(["l3proto": "ipv4"], length: 0).run(on: sample, now: 0, resolve: nil)
        #expect(result == FlowQueryResult(total: 3, page: []))
    }

    @Test func view_whenStartBeyondTotal_returnsEmptyPageWithTotal() throws {
        let result = try query(start: 10, length: 5).run(on: sample, now: 0, resolve: nil)
        #expect(result == FlowQueryResult(total: 5, page: []))
        let huge = try query(start: Int64.max, length: 5).run(on: sample, now: 0, resolve: nil)
        #expect(huge == FlowQueryResult(total: 5, page: []))
    }

    @Test func view_whenBuiltinAndResolvedNamesCollide_builtinWins() throws {
        let q = try query(["mark": 7], order: "mark", resolved: ["mark"])
        #expect(q.filters == [.number(.mark, anyOf: [7])])
        #expect(q.orderField == .builtin(.mark))
    }
}

// MARK: - Ordering and paging

@Suite struct FlowQueryOrderTests {
    @Test func view_whenOrderingAscOrDesc_breaksTiesByIdAscending() throws {
        #expect(try ids(sample, order: "orig_port_src") == [4, 2, 1, 5, 0x8000_0001])
        #expect(try ids(sample, order: "orig_port_src", dir: "DESC") == [0x8000_0001, 1, 5, 2, 4])
        #expect(try ids(sample, order: "mark", dir: "DESC") == [1, 5, 2, 0x8000_0001, 4])
        #expect(try ids(sample, order: "id", dir: "DESC") == [0x8000_0001, 5, 4, 2, 1])
        #expect(try ids(sample, order: nil, dir: "DESC") == [0x8000_0001, 5, 4, 2, 1])
    }

    @Test func view_whenOrderingByAddress_putsIPv4BeforeIPv6() throws {
        #expect(try ids(sample, order: "orig_src") == [1, 2, 5, 0x8000_0001, 4])
        #expect(try ids(sample, order: "orig_ipv4_src", dir: "DESC") == [4, 0x8000_0001, 5, 2, 1])
    }

    @Test func view_whenOrderingByAlias_matchesCanonicalField() throws {
        #expect(try ids(sample, order: "orig_l4proto") == ids(sample, order: "l4proto"))
        #expect(try ids(sample, order: "orig_ipv4_dst") == ids(sample, order: "orig_dst"))
    }

    @Test func view_whenOrderingByByteRate_sortsDoublesNumerically() throws {
        var flows = sample
        for (i, rate) in [2.5, 1e12, 0, 0.001, 2.5].enumerated() { flows[i].byteRate = rate }
        #expect(try ids(flows, order: "byte_rate") == [0x8000_0001, 4, 1, 5, 2])
        #expect(try ids(flows, order: "byte_rate", dir: "DESC") == [2, 1, 5, 4, 0x8000_0001])
    }

    @Test func view_whenPagingAnyOrder_concatenatedPagesEqualNaiveFullSort() throws {
        let flows = randomTable(count: 5000, seed: 7)
        let now = 3.0
        for field in FlowQuery.builtinOrderFields {
            for descending in [false, true] {
                let expected = reference(flows, where: { _ in true }, order: field, descending: descending, now: now)
                let q = try query(order: field, dir: descending ? "DESC" : "ASC", length: 5000, maxLength: 5000)
                let full = q.run(on: flows, now: now, resolve: nil)
                #expect(full.total == 5000)
                #expect(full.page == expected, "order_by \(field) \(descending ? "DESC" : "ASC")")
                // Pages of an odd size, shallow and deep.
                var pages: [Int] = []
                var start: Int64 = 0
                while start < 5000 {
                    let page = try query(order: field, dir: descending ? "DESC" : "ASC", start: start, length: 397)
                        .run(on: flows, now: now, resolve: nil)
                    #expect(page.total == 5000)
                    pages += page.page
                    start += 397
                }
                #expect(pages == expected, "paged order_by \(field) \(descending ? "DESC" : "ASC")")
            }
        }
    }

    @Test(arguments: [0, 1, 99, 1000, 2500, 4900, 4999])
    func view_whenPageIsAtAnyDepth_matchesReferenceSlice(start: Int) throws {
        let flows = randomTable(count: 5000, seed: UInt64(start) + 11)
        let expected = reference(flows, where: { _ in true }, order: "orig_port_src", descending: true, now: 0)
        let result = try query(order: "orig_port_src", dir: "DESC", start: Int64(start), length: 100)
            .run(on: flows, now: 0, resolve: nil)
        #expect(result.page == Array(expected[start..<min(5000, start + 100)]))
    }

    @Test func view_whenFilteredAndOrdered_matchesNaiveReference() throws {
        let flows = randomTable(count: 5000, seed: 99)
        let block = CIDRBlock("10.0.2.0/23")!
        let six = CIDRBlock("2001:db8::/64")!
        let cases: [([String: FilterInput], (Flow) -> Bool)] = [
            (["orig_src": "10.0.2.0/23"], { block.contains($0.origSource) }),
            (
                ["repl_dst": ["10.0.2.0/23", "2001:db8::/64"]],
                { block.contains($0.replyDestination) || six.contains($0.replyDestination) }
            ),
            (["l4proto": "tcp", "orig_port_dst": 443], { $0.l4proto == 6 && $0.origDestinationPort == 443 }),
            (["status": ["SEEN_REPLY", "NAT"]], { $0.status & 2 != 0 && $0.status & 0x30 != 0 }),
            (["mark": -1, "zone": [0, 2]], { $0.mark == 0xFFFF_FFFF && $0.zone != 1 }),
            (["state": ["established", "SYN_SENT"]], { $0.tcpState == 3 || $0.tcpState == 1 }),
            (["timeout": [0, 5]], { [0, 5].contains($0.remainingTimeout(at: 3)) }),
            (["l3proto": "ipv6", "repl_port_src": 2], { $0.l3proto == 10 && $0.replySourcePort == 2 }),
        ]
        for (filters, keep) in cases {
            for order in ["orig_port_src", "orig_src", "bytes", "timeout"] {
                let expected = reference(flows, where: keep, order: order, descending: true, now: 3)
                let q = try query(filters, order: order, dir: "DESC", start: 3, length: 50)
                let result = q.run(on: flows, now: 3, resolve: nil)
                #expect(result.total == expected.count, "\(filters)")
                #expect(result.page == Array(expected.dropFirst(3).prefix(50)), "\(filters) by \(order)")
            }
        }
    }

    @Test func selector_whenManyKeysOffered_keepsTheSmallestInOrder() {
        var g = SplitMix(state: 3)
        let keys = (0..<50_000).map { i in
            FlowQueryEngine.Key2(a: UInt64.random(in: 0..<1000, using: &g) << 32, b: UInt64(i))
        }
        let sorted = keys.sorted()
        for (want, start) in [(10, 0), (5000, 4900), (30_000, 12_345), (50_000, 45_000)] {
            var selector = FlowQueryEngine.Selector<FlowQueryEngine.Key2>(want: want, tableSize: keys.count)
            for key in keys { selector.offer(key) }
            let page = selector.page(start: start, length: want - start)
            #expect(page == sorted[start..<want].map(\.index), "want \(want)")
        }
    }
}

// MARK: - Resolved fields

@Suite struct FlowQueryResolvedTests {
    @Test func view_whenFilteringByResolvedField_matchesResolvedValue() throws {
        let resolved: Set<String> = ["user", "quota"]
        #expect(try ids(sample, ["user": "bob"], resolved: resolved, resolve: resolveFixture) == [2, 0x8000_0001])
        #expect(
            try ids(sample, ["user": ["root", "bob"]], resolved: resolved, resolve: resolveFixture) == [
                2, 4, 0x8000_0001,
            ])
        #expect(try ids(sample, ["quota": 5], resolved: resolved, resolve: resolveFixture) == [1])
        #expect(try ids(sample, ["quota": "10"], resolved: resolved, resolve: resolveFixture) == [4])
        #expect(try ids(sample, ["quota": 5, "l3proto": "ipv6"], resolved: resolved, resolve: resolveFixture) == [])
        // Without a resolver nothing has a value.
        #expect(try ids(sample, ["user": "bob"], resolved: resolved, resolve: nil) == [])
    }

    @Test func view_whenOrderingByResolvedField_sortsMissingFirstAndBreaksTiesById() throws {
        let resolved: Set<String> = ["user", "quota"]
        // user: 1 → none (mark 0xFFFFFFFF), 2 → bob, 0x80000001 → bob, 4 → root, 5 → none (mark 0x80000000)
        #expect(
            try ids(sample, order: "user", resolved: resolved, resolve: resolveFixture) == [1, 5, 2, 0x8000_0001, 4])
        #expect(
            try ids(sample, order: "user", dir: "DESC", resolved: resolved, resolve: resolveFixture)
                == [4, 2, 0x8000_0001, 1, 5])
        // quota: none for marks 7 and 0x80000000, 5 for id 1, 10 for id 4.
        #expect(
            try ids(sample, order: "quota", resolved: resolved, resolve: resolveFixture) == [2, 5, 0x8000_0001, 1, 4])
        #expect(
            try ids(sample, order: "quota", start: 2, length: 2, resolved: resolved, resolve: resolveFixture)
                == [0x8000_0001, 1])
        #expect(
            try ids(sample, ["l3proto": "ipv4"], order: "user", resolved: resolved, resolve: resolveFixture) == [
                1, 5, 2,
            ])
    }

    @Test func view_whenResolving_callsResolverOncePerFieldAndDistinctMark() throws {
        let flows = randomTable(count: 5000, seed: 5)
        var calls: [String: Int] = [:]
        let counting: (String, UInt32) -> ResolvedValue? = { field, mark in
            calls["\(field)/\(mark)", default: 0] += 1
            return resolveFixture(field, mark)
        }
        let q = try query(
            ["user": ["alice", "bob", "root"]], order: "user", dir: "DESC", start: 10, length: 20, resolved: ["user"])
        _ = q.run(on: flows, now: 0, resolve: counting)
        #expect(calls.values.allSatisfy { $0 == 1 })
        #expect(calls.count == 4)  // marks 0, 1, 7, 0xFFFFFFFF
    }

    @Test func view_whenPagingByResolvedField_matchesNaiveReference() throws {
        let flows = randomTable(count: 5000, seed: 17)
        for descending in [false, true] {
            let expected = reference(
                flows, where: { resolveFixture("quota", $0.mark) != nil }, order: "quota", descending: descending,
                now: 0, resolve: resolveFixture)
            var pages: [Int] = []
            var start: Int64 = 0
            while start < Int64(expected.count) {
                let result = try query(
                    ["quota": [5, 10]], order: "quota", dir: descending ? "DESC" : "ASC", start: start, length: 333,
                    resolved: ["quota"]
                ).run(on: flows, now: 0, resolve: resolveFixture)
                #expect(result.total == expected.count)
                pages += result.page
                start += 333
            }
            #expect(pages == expected)
        }
    }

    @Test func resolvedFieldsUsed_listsFilterAndOrderFields() throws {
        let q = try query(["user": "bob"], order: "quota", resolved: ["user", "quota", "group"])
        #expect(q.resolvedFieldsUsed == ["user", "quota"])
    }
}

/// Long "any of" lists take the hash-set path; they must answer exactly what a scan of the values answers.
@Suite struct FlowQueryLongListTests {
    @Test(arguments: [3, 17, 400, 10_000])
    func view_whenFilterListsManyValues_matchesTheNaiveReference(count: Int) throws {
        let flows = randomTable(count: 5000, seed: UInt64(count))
        var g = SplitMix(state: 42)
        // Addresses and blocks of mixed families and prefix lengths, ports, ids: many of them repeated.
        let blocks: [String] = (0..<count).map { i in
            switch i % 4 {
            case 0: return "10.0.\(UInt32.random(in: 0..<8, using: &g)).\(UInt32.random(in: 0..<4, using: &g))"
            case 1: return "10.0.\(UInt32.random(in: 0..<8, using: &g)).0/\([24, 30, 31][i % 3])"
            case 2: return "2001:db8::\(UInt32.random(in: 0..<5, using: &g))"
            default: return "2001:db8:0:\(UInt32.random(in: 0..<3, using: &g))::/64"
            }
        }
        let ports = (0..<count).map { _ in FilterInput.int(Int64.random(in: 0..<2000, using: &g)) }
        let cidrs = blocks.compactMap(CIDRBlock.init)
        #expect(cidrs.count == count)
        let portSet = Set(ports.map { if case .int(let n) = $0 { return UInt16(n) } else { return 0 } })
        let q = try query(
            ["orig_src": .list(blocks.map { .string($0) }), "orig_port_src": .list(ports)], length: 5000,
            maxLength: 5000)
        let expected = reference(
            flows,
            where: { f in cidrs.contains { $0.contains(f.origSource) } && portSet.contains(f.origSourcePort) },
            order: nil, descending: false, now: 0)
        let result = q.run(on: flows, now: 0, resolve: nil)
        #expect(result.total == expected.count)
        #expect(result.page == expected)
    }

    @Test func view_whenAFilterListsMoreThanTheMaximum_isRefusedWithASentence() {
        let many = FilterInput.list((0...FlowQuery.maximumValuesPerFilter).map { .int(Int64($0 % 65536)) })
        let message = fault(["orig_port_dst": many])
        #expect(message?.contains("at most 10000 values") == true, "\(message ?? "nil")")
    }
}

/// `host`, `port` and ranges, checked against predicates written out plainly.
@Suite struct FlowQueryIncidentFilterTests {
    let flows = randomTable(count: 5000, seed: 3)

    func check(_ filters: [String: FilterInput], _ keep: (Flow) -> Bool, now: Double = 0) throws {
        let result = try query(filters, length: 5000, maxLength: 5000).run(on: flows, now: now, resolve: nil)
        let expected = reference(flows, where: keep, order: nil, descending: false, now: now)
        #expect(result.total == expected.count, "\(filters)")
        #expect(result.page == expected, "\(filters)")
    }

    @Test func host_matchesAnyOfTheFourAddresses() throws {
        let block = CIDRBlock("10.0.3.0/24")!
        try check(["host": "10.0.3.0/24"]) { f in
            [f.origSource, f.origDestination, f.replySource, f.replyDestination].contains { block.contains($0) }
        }
        let one = IPAddress("10.0.1.2")!
        try check(["host": ["10.0.1.2", "10.0.1.2"]]) { f in
            [f.origSource, f.origDestination, f.replySource, f.replyDestination].contains(one)
        }
    }

    @Test func port_matchesAnyOfTheFourPorts_asAValueListOrARange() throws {
        func ports(_ f: Flow) -> [UInt16] {
            [f.origSourcePort, f.origDestinationPort, f.replySourcePort, f.replyDestinationPort]
        }
        try check(["port": [53, 80]]) { f in ports(f).contains { $0 == 53 || $0 == 80 } }
        try check(["port": "1000-1200"]) { f in ports(f).contains { (1000...1200).contains($0) } }
        try check(["port": .structure(["min": 60000])]) { f in ports(f).contains { $0 >= 60000 } }
    }

    @Test func ranges_onCountersTimeoutAndPorts_includeTheirBounds() throws {
        try check(["orig_port_src": .structure(["min": 100, "max": 30000])]) { (100...30000).contains($0.origSourcePort) }
        try check(["bytes": .structure(["max": 5000])]) { $0.totalBytes <= 5000 }
        try check(["packets": "2-9"]) { (2...9).contains($0.totalPackets) }
        try check(["byte_rate": .structure(["min": .double(0.5)])]) { $0.byteRate >= 0.5 }
        try check(["timeout": "10-100"], now: 3) { (10...100).contains($0.remainingTimeout(at: 3)) }
        try check(["orig_bytes": 0]) { $0.origBytes == 0 }
    }

    @Test func ranges_whenWrong_areRefusedWithASentence() {
        #expect(fault(["port": "90-10"])?.contains("larger than its max") == true)
        #expect(fault(["bytes": .structure(["low": 1])])?.contains("min and max") == true)
        #expect(fault(["bytes": .structure([:])])?.contains("needs min, max") == true)
        #expect(fault(["orig_port_dst": .structure(["max": 70000])])?.contains("out of range") == true)
        #expect(fault(["mark": .structure(["min": 1])])?.contains("not allowed here") == true)
        #expect(fault(["orig_src": "10.0.0.0/8"]) == nil, "an address with a dash is not a range")
    }
}

/// A group's name straight from a flow, written here independently of the engine's.
private func plainName(_ key: FlowSummary.Key, _ f: Flow) -> String {
    switch key {
    case .origSrc: return f.origSource.description
    case .origDst: return f.origDestination.description
    case .pair: return "\(f.origSource) -> \(f.origDestination)"
    case .destinationPort:
        let host = f.origDestination.isIPv6 ? "[\(f.origDestination)]" : f.origDestination.description
        return "\(host):\(f.origDestinationPort)/\(ConntrackNames.l4(f.l4proto))"
    case .service: return "\(ConntrackNames.l4(f.l4proto))/\(f.origDestinationPort)"
    case .l4proto: return ConntrackNames.l4(f.l4proto)
    case .state: return f.l4proto == 6 ? ConntrackNames.tcpState(f.tcpState) : "(none)"
    case .mark: return String(f.mark)
    case .zone: return String(f.zone)
    case .resolved: return "(none)"
    }
}

/// `summary` against a plain grouping of the same flows.
@Suite struct FlowSummaryTests {
    @Test(arguments: [FlowSummary.Key.origSrc, .origDst, .pair, .service, .destinationPort, .l4proto, .mark, .state, .zone])
    func summarize_groupsAddUpAndMatchAPlainGrouping(key: FlowSummary.Key) throws {
        let flows = randomTable(count: 3000, seed: 21)
        let q = try query(["l4proto": ["udp", "tcp"]])
        let s = FlowSummary.summarize(
            FlowTable(flows), query: q, key: key, order: .count, limit: 5, now: 0, resolve: nil)
        let matching = flows.filter { $0.l4proto == 6 || $0.l4proto == 17 }
        var plain: [String: Int] = [:]
        for f in matching { plain[plainName(key, f), default: 0] += 1 }
        #expect(s.total.count == matching.count)
        #expect(s.groups.reduce(0) { $0 + $1.totals.count } + s.other.count == s.total.count)
        #expect(s.groups.count == min(5, plain.count))
        for g in s.groups { #expect(plain[g.name] == g.totals.count, "\(g.name)") }
        // Ranked by count, then by name.
        let counts = s.groups.map(\.totals.count)
        #expect(counts == counts.sorted(by: >))
        let cutoff = counts.last ?? 0
        #expect(plain.values.filter { $0 > cutoff }.count <= s.groups.count)
    }
}

@Test func uint32Text_parsesPlainDigitsFastAndEverythingElseAsBefore() {
    #expect(UInt32Text.from(text: "0") == 0)
    #expect(UInt32Text.from(text: "4294967295") == UInt32.max)
    #expect(UInt32Text.from(text: "4294967296") == nil)
    #expect(UInt32Text.from(text: "9999999999") == nil)
    #expect(UInt32Text.from(text: "00000000012") == 12)  // past ten digits: the general path
    #expect(UInt32Text.from(text: " 42 ") == 42)
    #expect(UInt32Text.from(text: "-1") == UInt32.max)
    #expect(UInt32Text.from(text: "0x1F") == 31)
    #expect(UInt32Text.from(text: "") == nil)
    #expect(UInt32Text.from(text: "12a") == nil)
    #expect(UInt32Text.from(text: "١٢") == nil)  // Arabic-Indic digits are not ASCII digits
}
