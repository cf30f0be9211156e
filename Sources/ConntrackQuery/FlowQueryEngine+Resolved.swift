import Conntrack
import Foundation

/// Resolved fields: each distinct mark's verdict and order value, computed once per run.
extension FlowQueryEngine {
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
}
