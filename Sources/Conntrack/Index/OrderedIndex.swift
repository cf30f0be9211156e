import Foundation

/// A sorted multiset of keys in leaves of at most ``leafCapacity``, each its own copy-on-write array: an
/// order-statistic structure of two levels (a B+-tree with one inner node).
///
/// - Writers (the mirror, under its lock) insert and remove one key in O(log n) comparisons plus a move of at most
///   one leaf's keys; a leaf splits when full and merges with a neighbour when it falls below a quarter.
/// - A snapshot is a copy of the value: the leaf list is shared, and the next write copies the leaf list (a few
///   thousand references at a million keys) and the one leaf it changes, never the whole index.
/// - Readers take a ``Reader`` (prefix counts of the leaves, O(n / leafCapacity)) and then find the key of any
///   rank, or the rank of any key, in O(log n).
public struct OrderedIndex<K: Comparable & Sendable>: Sendable {
    public static var leafCapacity: Int { 512 }

    package private(set) var leaves: [[K]] = []
    /// firsts[i] == leaves[i][0]; every leaf is non-empty.
    private var firsts: [K] = []
    public private(set) var count = 0

    public init() {}

    /// An index of `keys`, which must be sorted ascending; leaves are filled to three quarters, so that inserts
    /// do not split at once.
    public init(sorted keys: [K]) {
        let fill = Self.leafCapacity * 3 / 4
        var start = 0
        leaves.reserveCapacity(keys.count / fill + 1)
        while start < keys.count {
            let end = Swift.min(keys.count, start + fill)
            var leaf: [K] = []
            leaf.reserveCapacity(Self.leafCapacity)
            leaf.append(contentsOf: keys[start..<end])
            leaves.append(leaf)
            firsts.append(leaf[0])
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

    public mutating func insert(_ key: K) {
        count += 1
        guard !leaves.isEmpty else {
            var leaf: [K] = []
            leaf.reserveCapacity(Self.leafCapacity)
            leaf.append(key)
            leaves.append(leaf)
            firsts.append(key)
            return
        }
        let li = leafIndex(for: key)
        let at = Self.lowerBound(leaves[li], key)
        leaves[li].insert(key, at: at)
        if at == 0 { firsts[li] = key }
        if leaves[li].count > Self.leafCapacity {
            let half = leaves[li].count / 2
            var right: [K] = []
            right.reserveCapacity(Self.leafCapacity)
            right.append(contentsOf: leaves[li][half...])
            leaves[li].removeSubrange(half...)
            leaves.insert(right, at: li + 1)
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
        if leaves[li].isEmpty {
            leaves.remove(at: li)
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
                firsts.remove(at: li + 1)
                leaves[li].append(contentsOf: right)
            } else if li > 0, leaves[li - 1].count + leaves[li].count <= limit {
                let mine = leaves.remove(at: li)
                firsts.remove(at: li)
                leaves[li - 1].append(contentsOf: mine)
            }
        }
        return true
    }

    /// Replaces `old` by `new` (one remove and one insert; nothing when they are equal).
    @inline(__always) public mutating func replace(_ old: K, with new: K) {
        if old == new { return }
        remove(old)
        insert(new)
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
        guard leaves.count == firsts.count else { return false }
        var total = 0
        var previous: K?
        for (i, leaf) in leaves.enumerated() {
            guard !leaf.isEmpty, leaf.count <= Self.leafCapacity, leaf[0] == firsts[i] else { return false }
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
