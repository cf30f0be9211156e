import Foundation

/// A sorted multiset of keys in leaves of at most ``leafCapacity``, each its own copy-on-write array: an
/// order-statistic structure of two levels (a B+-tree with one inner node).
///
/// - Writers (the mirror, under its lock) insert and remove one key in O(log n) comparisons plus a move of at most
///   one leaf's keys; a leaf splits when full and merges with a neighbour when it falls below a quarter.
/// - A snapshot is a copy of the value: the leaf list is shared, and the next write copies the leaf list (a few
///   thousand references at a million keys) and the one leaf it changes, never the whole index.
/// - Each key carries a one-byte tag (the flow's IP protocol in ``FlowIndexes``), kept in parallel leaves, so a
///   reader can count and skip keys by tag without touching the flows.
/// - Readers take a ``Reader`` (prefix counts of the leaves, O(n / leafCapacity)) and then find the key of any
///   rank, or the rank of any key, in O(log n).
public struct OrderedIndex<K: Comparable & Sendable>: Sendable {
    public static var leafCapacity: Int { 512 }

    package private(set) var leaves: [[K]] = []
    /// tags[i][j] is the tag of leaves[i][j].
    package private(set) var tags: [[UInt8]] = []
    /// firsts[i] == leaves[i][0]; every leaf is non-empty.
    private var firsts: [K] = []
    public private(set) var count = 0

    public init() {}

    /// An index of `keys`, which must be sorted ascending, with their `tags`; leaves are filled to fifteen
    /// sixteenths (exact-size arrays), so that a few inserts do not split at once.
    public init(sorted keys: [K], tags keyTags: [UInt8]? = nil) {
        let fill = Self.leafCapacity * 15 / 16
        var start = 0
        leaves.reserveCapacity(keys.count / fill + 1)
        while start < keys.count {
            let end = Swift.min(keys.count, start + fill)
            let leaf = Array(keys[start..<end])
            leaves.append(leaf)
            firsts.append(leaf[0])
            tags.append(keyTags.map { Array($0[start..<end]) } ?? [UInt8](repeating: 0, count: end - start))
            start = end
        }
        count = keys.count
    }

    /// The leaf that holds `key` or where it belongs: the last leaf whose first key is not above it.
    @inline(__always) private func leafIndex(for key: K) -> Int {
        var lo = 0
        var hi = firsts.count
        // First leaf whose first key is above `key`; the one before it.
        while lo < hi {
            let mid = (lo + hi) >> 1
            if key < firsts[mid] { hi = mid } else { lo = mid + 1 }
        }
        return Swift.max(0, lo - 1)
    }

    @inline(__always) static func lowerBound(_ leaf: [K], _ key: K) -> Int {
        var lo = 0
        var hi = leaf.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if leaf[mid] < key { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public mutating func insert(_ key: K, tag: UInt8 = 0) {
        count += 1
        guard !leaves.isEmpty else {
            leaves.append([key])
            tags.append([tag])
            firsts.append(key)
            return
        }
        let li = leafIndex(for: key)
        let at = Self.lowerBound(leaves[li], key)
        leaves[li].insert(key, at: at)
        tags[li].insert(tag, at: at)
        if at == 0 { firsts[li] = key }
        if leaves[li].count > Self.leafCapacity {
            let half = leaves[li].count / 2
            let right = Array(leaves[li][half...])
            let rightTags = Array(tags[li][half...])
            // New arrays of exact size for both halves: the grown leaf's capacity (twice the keys) is let go.
            leaves[li] = Array(leaves[li][..<half])
            tags[li] = Array(tags[li][..<half])
            leaves.insert(right, at: li + 1)
            tags.insert(rightTags, at: li + 1)
            firsts.insert(right[0], at: li + 1)
        }
    }

    /// Removes one key equal to `key`; false when there is none.
    @discardableResult
    public mutating func remove(_ key: K) -> Bool {
        guard !leaves.isEmpty else { return false }
        let li = leafIndex(for: key)
        let at = Self.lowerBound(leaves[li], key)
        guard at < leaves[li].count, leaves[li][at] == key else { return false }
        count -= 1
        leaves[li].remove(at: at)
        tags[li].remove(at: at)
        if leaves[li].isEmpty {
            leaves.remove(at: li)
            tags.remove(at: li)
            firsts.remove(at: li)
            return true
        }
        if at == 0 { firsts[li] = leaves[li][0] }
        // Keep leaves from thinning out: merge a small leaf into a neighbour when both fit in three quarters.
        let small = Self.leafCapacity / 4
        if leaves[li].count < small {
            let limit = Self.leafCapacity * 3 / 4
            if li + 1 < leaves.count, leaves[li].count + leaves[li + 1].count <= limit {
                let right = leaves.remove(at: li + 1)
                let rightTags = tags.remove(at: li + 1)
                firsts.remove(at: li + 1)
                leaves[li].append(contentsOf: right)
                tags[li].append(contentsOf: rightTags)
            } else if li > 0, leaves[li - 1].count + leaves[li].count <= limit {
                let mine = leaves.remove(at: li)
                let myTags = tags.remove(at: li)
                firsts.remove(at: li)
                leaves[li - 1].append(contentsOf: mine)
                tags[li - 1].append(contentsOf: myTags)
            }
        }
        return true
    }

    /// Replaces `old` by `new` (one remove and one insert; nothing when they are equal).
    @inline(__always) public mutating func replace(_ old: K, with new: K, tag: UInt8 = 0) {
        if old == new { return }
        remove(old)
        insert(new, tag: tag)
    }

    /// The first `limit` keys not below `key`, in order (a writer's lookup: no prefix counts needed).
    public func keys(notBelow key: K, limit: Int) -> [K] {
        var out: [K] = []
        guard !leaves.isEmpty else { return out }
        var li = leafIndex(for: key)
        var at = Self.lowerBound(leaves[li], key)
        while out.count < limit && li < leaves.count {
            if at < leaves[li].count {
                out.append(leaves[li][at])
                at += 1
            } else {
                li += 1
                at = 0
            }
        }
        return out
    }

    /// Applies a batch at once: removes the keys of `removing` (all present), then inserts those of `inserting`
    /// with their tags (absent once `removing` is gone; a key in both is replaced, with its new tag). A small batch goes key by key; a large one (more than 1/64 of the index) is one
    /// merge of the sorted batch with the index into new leaves, O(n + b log b), where key-by-key changes would move
    /// and, under a snapshot, copy a leaf per key.
    public mutating func apply(removing: Set<K>, inserting: [K: UInt8]) where K: Hashable {
        apply((removing.sorted(), inserting.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }))
    }

    /// The same with both lists sorted by key and without repeats (a key in both is removed, then inserted).
    public mutating func apply(_ changes: (removing: [K], inserting: [(K, UInt8)])) {
        let (gone, added) = changes
        if (gone.count + added.count) * 64 < count {
            for k in gone { remove(k) }
            for (k, t) in added { insert(k, tag: t) }
            return
        }
        // Merged straight into new leaves: a flat array of every key (and one of every tag) beside the old index
        // and the new leaves would add 17 to 33 MB per index in flight at a million keys (docs/benchmark.md).
        var out = Builder(expected: count - gone.count + added.count)
        var g = 0
        var a = 0
        for (leaf, leafTags) in zip(leaves, tags) {
            for j in 0..<leaf.count {
                let k = leaf[j]
                while a < added.count && added[a].0 < k {
                    out.append(added[a].0, added[a].1)
                    a += 1
                }
                if g < gone.count && gone[g] == k {
                    g += 1
                    continue
                }
                out.append(k, leafTags[j])
            }
        }
        while a < added.count {
            out.append(added[a].0, added[a].1)
            a += 1
        }
        self = out.finish()
    }

    /// Builds an index from keys given in ascending order, leaf by leaf, each filled as ``init(sorted:tags:)``
    /// fills them.
    struct Builder {
        private var index = OrderedIndex()
        private var leaf: [K] = []
        private var leafTags: [UInt8] = []
        private let fill = OrderedIndex.leafCapacity * 15 / 16

        init(expected: Int) {
            index.leaves.reserveCapacity(expected / fill + 1)
            index.tags.reserveCapacity(expected / fill + 1)
            index.firsts.reserveCapacity(expected / fill + 1)
            leaf.reserveCapacity(fill)
            leafTags.reserveCapacity(fill)
        }

        @inline(__always) mutating func append(_ key: K, _ tag: UInt8) {
            leaf.append(key)
            leafTags.append(tag)
            if leaf.count == fill { flush() }
        }

        private mutating func flush() {
            guard let first = leaf.first else { return }
            index.leaves.append(leaf)
            index.tags.append(leafTags)
            index.firsts.append(first)
            index.count += leaf.count
            leaf = []
            leafTags = []
            leaf.reserveCapacity(fill)
            leafTags.reserveCapacity(fill)
        }

        mutating func finish() -> OrderedIndex {
            flush()
            return index
        }
    }

    /// Every key in order (tests, rebuilds).
    public var sortedKeys: [K] {
        var out: [K] = []
        out.reserveCapacity(count)
        for leaf in leaves { out.append(contentsOf: leaf) }
        return out
    }

    /// Checks the structure's invariants (tests).
    package func checkInvariants() -> Bool {
        guard leaves.count == firsts.count, tags.count == leaves.count else { return false }
        var total = 0
        var previous: K?
        for (i, leaf) in leaves.enumerated() {
            guard !leaf.isEmpty, leaf.count <= Self.leafCapacity, leaf[0] == firsts[i], tags[i].count == leaf.count
            else { return false }
            for k in leaf {
                if let p = previous, k < p { return false }
                previous = k
            }
            total += leaf.count
        }
        return total == count
    }

    /// A reader's view: positions (ranks) of keys, keys at positions.
    public struct Reader {
        public let index: OrderedIndex
        /// starts[i] is the rank of leaves[i][0]; starts.last is the count.
        private let starts: [Int]

        public init(_ index: OrderedIndex) {
            self.index = index
            var starts: [Int] = []
            starts.reserveCapacity(index.leaves.count + 1)
            var s = 0
            for leaf in index.leaves {
                starts.append(s)
                s += leaf.count
            }
            starts.append(s)
            self.starts = starts
        }

        public var count: Int { index.count }

        /// The number of keys below `key`.
        public func lowerBound(_ key: K) -> Int {
            guard !index.leaves.isEmpty else { return 0 }
            let li = index.leafIndex(for: key)
            return starts[li] + OrderedIndex.lowerBound(index.leaves[li], key)
        }

        /// The leaf holding rank `position` (0 ..< count), and the offset in it.
        @inline(__always) func locate(_ position: Int) -> (leaf: Int, offset: Int) {
            var lo = 0
            var hi = index.leaves.count
            // Last leaf whose start is not above `position`.
            while hi - lo > 1 {
                let mid = (lo + hi) >> 1
                if starts[mid] <= position { lo = mid } else { hi = mid }
            }
            return (lo, position - starts[lo])
        }

        public subscript(position: Int) -> K {
            let (l, o) = locate(position)
            return index.leaves[l][o]
        }

        /// Calls `body` with the keys of ranks `positions`, in order; `body` returns false to stop.
        public func forEach(in positions: Range<Int>, _ body: (K) -> Bool) {
            guard !positions.isEmpty, positions.lowerBound < count else { return }
            var (l, o) = locate(positions.lowerBound)
            var left = Swift.min(positions.upperBound, count) - positions.lowerBound
            while left > 0 {
                let leaf = index.leaves[l]
                let take = Swift.min(left, leaf.count - o)
                for k in leaf[o..<(o + take)] where !body(k) { return }
                left -= take
                l += 1
                o = 0
            }
        }

        /// The keys of ranks start ..< start + length in descending order of their groups, each group ascending:
        /// the order "primary value DESC, then ties ASC". `groupLow(k)` and `groupHigh(k)` are the smallest and the
        /// largest possible key with k's primary value.
        public func descendingByGroups(
            start: Int, length: Int, groupLow: (K) -> K, groupHigh: (K) -> K
        ) -> [K] {
            let n = count
            guard start < n, length > 0 else { return [] }
            var out: [K] = []
            out.reserveCapacity(Swift.min(length, n - start))
            // The group holding ascending rank n - 1 - start holds descending rank start.
            let q = n - 1 - start
            let kq = self[q]
            var gs = lowerBound(groupLow(kq))
            var ge = upperBound(groupHigh(kq))
            var from = gs + (start - (n - ge))
            while out.count < length {
                forEach(in: from..<ge) { k in
                    out.append(k)
                    return out.count < length
                }
                if out.count >= length || gs == 0 { break }
                ge = gs
                gs = lowerBound(groupLow(self[gs - 1]))
                from = gs
            }
            return out
        }

        // MARK: Reading by tag

        /// How many keys of each leaf carry a tag in `wanted` (a 256-entry table), for ``TagCursor``.
        public func tagCounts(_ wanted: [Bool]) -> [Int] {
            var table = [Int](repeating: 0, count: 256)
            for (t, w) in wanted.enumerated() where w && t < 256 { table[t] = 1 }
            return table.withUnsafeBufferPointer { ones in
                index.tags.map { leafTags in
                    leafTags.withUnsafeBufferPointer { tags in
                        var c = 0
                        for t in tags { c &+= ones[Int(t)] }
                        return c
                    }
                }
            }
        }

        /// Keys with a wanted tag among positions `range`.
        public func countTagged(_ range: Range<Int>, _ wanted: [Bool], _ leafCounts: [Int]) -> Int {
            guard !range.isEmpty else { return 0 }
            var (l, o) = locate(range.lowerBound)
            var left = range.count
            var c = 0
            while left > 0 {
                let n = index.tags[l].count
                let take = Swift.min(left, n - o)
                if o == 0 && take == n {
                    c += leafCounts[l]
                } else {
                    for t in index.tags[l][o..<(o + take)] where wanted[Int(t)] { c += 1 }
                }
                left -= take
                l += 1
                o = 0
            }
            return c
        }

        /// The position of the `k`-th (from 0) key with a wanted tag at or after `from`, or nil.
        public func positionOfTagged(_ k: Int, from: Int, _ wanted: [Bool], _ leafCounts: [Int]) -> Int? {
            guard from < count else { return nil }
            var (l, o) = locate(from)
            var k = k
            while l < index.leaves.count {
                let leafTags = index.tags[l]
                if o == 0 && leafCounts[l] <= k {
                    k -= leafCounts[l]
                } else {
                    for j in o..<leafTags.count where wanted[Int(leafTags[j])] {
                        if k == 0 { return starts[l] + j }
                        k -= 1
                    }
                }
                l += 1
                o = 0
            }
            return nil
        }

        /// Keys with a wanted tag from position `from` on, ascending, at most `limit`, up to position `end`.
        public func tagged(from: Int, end: Int, limit: Int, _ wanted: [Bool]) -> [K] {
            var out: [K] = []
            guard from < end, limit > 0 else { return out }
            var (l, o) = locate(from)
            var p = from
            while p < end && out.count < limit {
                let leaf = index.leaves[l]
                let leafTags = index.tags[l]
                while o < leaf.count && p < end && out.count < limit {
                    if wanted[Int(leafTags[o])] { out.append(leaf[o]) }
                    o += 1
                    p += 1
                }
                l += 1
                o = 0
            }
            return out
        }

        /// The tagged keys of ranks start ..< start + length among the keys with a wanted tag, ascending or in the
        /// order "primary DESC, ties ASC" (see ``descendingByGroups(start:length:groupLow:groupHigh:)``).
        public func taggedPage(
            start: Int, length: Int, descending: Bool, wanted: [Bool], leafCounts: [Int],
            groupLow: (K) -> K, groupHigh: (K) -> K
        ) -> [K] {
            let n = count
            guard length > 0 else { return [] }
            if !descending {
                guard let p = positionOfTagged(start, from: 0, wanted, leafCounts) else { return [] }
                return tagged(from: p, end: n, limit: length, wanted)
            }
            let total = countTagged(0..<n, wanted, leafCounts)
            guard start < total else { return [] }
            // The tagged key of ascending tagged rank total - 1 - start lies in the group holding descending rank
            // start; its group's tagged keys after it (ascending) come first in the page, then earlier groups.
            guard let q = positionOfTagged(total - 1 - start, from: 0, wanted, leafCounts) else { return [] }
            let kq = self[q]
            var gs = lowerBound(groupLow(kq))
            var ge = upperBound(groupHigh(kq))
            let after = countTagged(ge..<n, wanted, leafCounts)
            // Descending rank of the group's first tagged key is `after`.
            let skip = start - after
            var out: [K] = []
            var from = positionOfTagged(skip, from: gs, wanted, leafCounts) ?? ge
            while out.count < length {
                out += tagged(from: from, end: ge, limit: length - out.count, wanted)
                if out.count >= length || gs == 0 { break }
                ge = gs
                gs = lowerBound(groupLow(self[gs - 1]))
                from = gs
            }
            return out
        }

        /// The number of keys not above `key`.
        public func upperBound(_ key: K) -> Int {
            guard !index.leaves.isEmpty else { return 0 }
            let li = index.leafIndex(for: key)
            let leaf = index.leaves[li]
            var lo = 0
            var hi = leaf.count
            while lo < hi {
                let mid = (lo + hi) >> 1
                if key < leaf[mid] { hi = mid } else { lo = mid + 1 }
            }
            return starts[li] + lo
        }
    }
}
