import Foundation
import TestSupport
import Testing

@testable import Conntrack
@testable import ConntrackQuery

// The `label`, `helper` and `age` filters and the `start`/`age` orders (issue 9, sections 2 and 3), each checked
// against a naive reference: the filter written out as a plain predicate, then a full sort.

private let wallNow = 1_800_000_000.25
private let helperNames = ["", "ftp", "sip", "tftp"]

/// Flows with few distinct labels, helpers and start times (many ties), a quarter without a start time.
private func table(count: Int, seed: UInt64) -> [Flow] {
    var g = SplitMix(state: seed)
    let bits = [0, 1, 5, 63, 64, 100, 127]
    return (0..<count).map { i in
        var low: UInt64 = 0
        var high: UInt64 = 0
        for b in bits where Int.random(in: 0..<4, using: &g) == 0 {
            if b < 64 { low |= 1 << UInt64(b) } else { high |= 1 << UInt64(b - 64) }
        }
        let known = Int.random(in: 0..<4, using: &g) != 0
        let start = known ? wallNow - Double(Int.random(in: 0..<40, using: &g)) - [0, 0.3, 0.9][i % 3] : 0
        return Flow(
            id: i % 7 == 0 ? UInt32(i / 7) : UInt32.random(in: 0..<UInt32(count * 2), using: &g),
            origSourcePort: UInt16(i % 100), start: start, labelsLow: low, labelsHigh: high,
            helper: HelperName(helperNames[Int.random(in: 0..<helperNames.count, using: &g)]))
    }
}

private let labelFile = ConnLabelMap(
    text: """
        # bit name
        0 web
        1   vpn   # trailing comment
        5\tquarantine
        100 audit
        not-a-line
        200 too-big
        7 web
        """,
    path: "/etc/xtables/connlabel.conf")

private func parse(_ filters: [String: FilterInput], order: String? = nil, dir: String? = nil) throws -> FlowQuery {
    try FlowQuery.parse(
        filters: filters, orderBy: order, orderDirection: dir, start: 0, length: 10_000, maxLength: 10_000,
        resolvedFields: [], labelNames: labelFile)
}

private func message(_ filters: [String: FilterInput], order: String? = nil) -> String? {
    do {
        _ = try parse(filters, order: order)
        return nil
    } catch let e as FlowQueryError {
        return e.message
    } catch {
        return "unexpected \(error)"
    }
}

/// Filter with `keep`, then sort by `value` (nil first), then id, then position.
private func reference(
    _ flows: [Flow], _ keep: (Flow) -> Bool, by value: (Flow) -> Double? = { _ in nil }, descending: Bool = false
) -> [Int] {
    flows.indices.filter { keep(flows[$0]) }.sorted { a, b in
        let va = value(flows[a])
        let vb = value(flows[b])
        if va != vb {
            switch (va, vb) {
            case (nil, _): return !descending
            case (_, nil): return descending
            case (let x?, let y?): return descending ? x > y : x < y
            }
        }
        if flows[a].id != flows[b].id { return flows[a].id < flows[b].id }
        return a < b
    }
}

private func naiveHasBit(_ f: Flow, _ bit: Int) -> Bool {
    let word = bit < 64 ? f.labelsLow : f.labelsHigh
    return (word >> UInt64(bit % 64)) & 1 == 1
}

private func naiveAge(_ f: Flow) -> Double? { f.start == 0 ? nil : floor(wallNow - f.start) }

@Suite struct FieldFilterTests {
    let flows = table(count: 4000, seed: 11)

    func check(
        _ filters: [String: FilterInput], order: String? = nil, dir: String? = nil, _ keep: (Flow) -> Bool,
        by value: (Flow) -> Double? = { _ in nil }
    ) throws {
        let result = try parse(filters, order: order, dir: dir).run(on: flows, now: 0, wallNow: wallNow, resolve: nil)
        let expected = reference(flows, keep, by: value, descending: dir == "DESC")
        #expect(result.total == expected.count, "\(filters) \(order ?? "")")
        #expect(result.page == expected, "\(filters) \(order ?? "")")
    }

    @Test func connlabelFile_namesBits_skippingBadLinesAndKeepingTheFirstName() {
        #expect(labelFile.names == [0: "web", 1: "vpn", 5: "quarantine", 100: "audit"])
        #expect(labelFile.bit(named: "vpn") == 1)
        #expect(labelFile.bit(named: "7") == 7)
        #expect(labelFile.bit(named: "too-big") == nil)
        #expect(labelFile.name(of: 63) == "63")
        #expect(ConnLabelMap.load(path: "/nonexistent/connlabel.conf") == .empty)
    }

    @Test func label_byBitOrName_aListMeaningAnyOf() throws {
        for bit in [0, 1, 5, 63, 64, 100, 127, 2] {
            try check(["label": .int(Int64(bit))]) { naiveHasBit($0, bit) }
            try check(["label": .string(String(bit))]) { naiveHasBit($0, bit) }
        }
        try check(["label": "quarantine"]) { naiveHasBit($0, 5) }
        try check(["label": "audit"]) { naiveHasBit($0, 100) }
        try check(["label": ["web", 127, "64"]]) { naiveHasBit($0, 0) || naiveHasBit($0, 127) || naiveHasBit($0, 64) }
        try check(["label": ["vpn"], "port": "10-20"]) { naiveHasBit($0, 1) && (10...20).contains($0.origSourcePort) }
    }

    @Test func label_whenUnknown_isRefusedNamingTheValidNames() throws {
        let m = message(["label": "nosuch"])
        #expect(m?.contains("web, vpn, quarantine, audit") == true, "\(m ?? "nil")")
        #expect(m?.contains("/etc/xtables/connlabel.conf") == true, "\(m ?? "nil")")
        #expect(message(["label": 128])?.contains("0 to 127") == true)
        #expect(message(["label": "-1"])?.contains("0 to 127") == true)
        #expect(message(["label": .structure(["min": 1])]) != nil)
        let none = try? FlowQuery.parse(
            filters: ["label": "web"], orderBy: nil, orderDirection: nil, start: 0, length: 1, maxLength: 1,
            resolvedFields: [])
        #expect(none == nil, "without a connlabel.conf only bit numbers are labels")
    }

    @Test func helper_byName_emptyMeaningNone() throws {
        for name in helperNames { try check(["helper": .string(name)]) { $0.helper.name == name } }
        try check(["helper": ["ftp", "sip"]]) { ["ftp", "sip"].contains($0.helper.name) }
        try check(["helper": ""]) { $0.helper == .none }
        try check(["helper": "never-seen"]) { _ in false }
        #expect(message(["helper": 5]) != nil)
        #expect(message(["helper": "a-helper-name-too-long"])?.contains("15 bytes") == true)
    }

    @Test func age_asRangeOrValue_neverMatchesUnknownStarts() throws {
        try check(["age": "5-10"]) { naiveAge($0).map { (5...10).contains($0) } ?? false }
        try check(["age": .structure(["min": 30])]) { naiveAge($0).map { $0 >= 30 } ?? false }
        try check(["age": .structure(["max": 0])]) { naiveAge($0) == 0 }
        try check(["age": 7]) { naiveAge($0) == 7 }
        try check(["age": .structure(["min": 0])]) { $0.start > 0 }
        #expect(message(["age": "9-3"])?.contains("larger than its max") == true)
    }

    @Test func orderByStartOrAge_unknownFirst_thenTiesById() throws {
        for dir in ["ASC", "DESC"] {
            try check([:], order: "start", dir: dir, { _ in true }, by: { $0.start == 0 ? nil : $0.start })
            // Age orders as the start reversed (exact start, not whole seconds).
            try check([:], order: "age", dir: dir, { _ in true }, by: { $0.start == 0 ? nil : wallNow - $0.start })
            try check(
                ["helper": "ftp", "age": "1-20"], order: "age", dir: dir,
                { $0.helper.name == "ftp" && (naiveAge($0).map { (1...20).contains($0) } ?? false) },
                by: { $0.start == 0 ? nil : wallNow - $0.start })
        }
    }

    @Test func flowAccessors_ageAndLabelBits() {
        let f = Flow(id: 1, start: wallNow - 12.7, labelsLow: 0b101, labelsHigh: 1 << 63)
        #expect(f.age(at: wallNow) == 12)
        #expect(Flow(id: 2).age(at: wallNow) == nil)
        #expect(Flow(id: 3, start: wallNow + 3).age(at: wallNow) == 0)
        #expect(f.labelBits == [0, 2, 127])
        #expect(f.hasLabel(127) && !f.hasLabel(1))
        #expect(HelperName("ftp") == HelperName("ftp") && HelperName("ftp").name == "ftp")
        #expect(HelperName("") == .none && HelperName.none.name == "")
    }
}
