import Conntrack
import Foundation

/// Selection of the page: the smallest keys kept, then only the page sorted.
extension FlowQueryEngine {
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
        _ maker: inout M, _ sink: inout Selector<M.Key>, _ candidates: [Int]? = nil
    ) -> Int {
        var visitor = SelectingVisitor(maker: maker, sink: sink)
        sink = Selector(want: 0, tableSize: 0)  // moved into the visitor for the scan
        let total = visit(table, matcher, &slots, &visitor, candidates)
        maker = visitor.maker
        sink = visitor.sink
        return total
    }

    /// Calls `visitor` for every flow that passes the filters; returns how many did. With `candidates`, only the
    /// flows at those table indices are considered.
    static func visit<V: MatchVisitor, S: SlotSource>(
        _ table: FlowTable, _ matcher: Matcher, _ slots: inout S, _ visitor: inout V, _ candidates: [Int]? = nil
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
                                @inline(__always) func consider(_ f: UnsafePointer<Flow>, _ index: Int) {
                                    if !plain && !view.matches(f) { return }
                                    var slot = 0
                                    if needsSlot {
                                        slot = slots.slot(f.pointee.mark)
                                        if slotFilter && !slots.passes(slot) { return }
                                    }
                                    total += 1
                                    visitor.visit(f, index: index, slot: slot)
                                }
                                if let candidates {
                                    let bases = table.chunkBases()
                                    withExtendedLifetime(table) {
                                        for i in candidates {
                                            consider(bases[i >> FlowTable.chunkShift] + (i & (FlowTable.chunkSize - 1)), i)
                                        }
                                    }
                                    return
                                }
                                _ = table.forEachChunk { flows, first in
                                    guard let base = flows.baseAddress else { return }
                                    for i in 0..<flows.count { consider(base + i, first + i) }
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
