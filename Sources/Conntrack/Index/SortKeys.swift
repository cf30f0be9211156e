import Foundation

// The integer sort keys shared by the query engine's scan (ConntrackQuery) and the mirror's ordered indexes
// (FlowIndexes): one definition, so an index and a scan order the same flows the same way.

/// Two words compared in order. Narrow fields: a = primary << 32 | id, b = index; wide fields: a = primary,
/// b = id << 32 | index. Either way the table index is the low 32 bits of b.
public struct SortKey: Comparable, Hashable, Sendable {
    public var a: UInt64
    public var b: UInt64

    @inline(__always) public init(a: UInt64, b: UInt64) {
        self.a = a
        self.b = b
    }

    @inline(__always) public static func < (l: SortKey, r: SortKey) -> Bool { l.a != r.a ? l.a < r.a : l.b < r.b }

    /// The flow's position in the table.
    @inline(__always) public var tableIndex: Int { Int(truncatingIfNeeded: b & 0xffff_ffff) }

    /// A 32-bit primary value: the primary (flipped for DESC) and the id share the first word.
    @inline(__always) public static func narrow(_ primary: UInt64, id: UInt32, index: Int, flip: UInt64 = 0) -> SortKey {
        SortKey(a: (primary ^ flip) << 32 | UInt64(id), b: UInt64(truncatingIfNeeded: index))
    }

    /// A 64-bit primary value; the id and the index share the second word.
    @inline(__always) public static func wide(_ primary: UInt64, id: UInt32, index: Int, flip: UInt64 = 0) -> SortKey {
        SortKey(a: primary ^ flip, b: UInt64(id) << 32 | UInt64(truncatingIfNeeded: index))
    }

    /// A Double as an unsigned integer with the same order (-0 as +0; NaNs beyond the infinities).
    @inline(__always) public static func orderedBits(_ d: Double) -> UInt64 {
        let bits = (d + 0.0).bitPattern  // -0 + 0 is +0
        let negative = UInt64(bitPattern: Int64(bitPattern: bits) >> 63)
        return bits ^ (negative | 1 << 63)
    }
}

/// An address key: family (IPv4 first), 128 address bits, then id << 32 | index.
public struct AddressSortKey: Comparable, Hashable, Sendable {
    public var family: UInt64
    public var high: UInt64
    public var low: UInt64
    public var tie: UInt64

    @inline(__always) public init(family: UInt64, high: UInt64, low: UInt64, tie: UInt64) {
        self.family = family
        self.high = high
        self.low = low
        self.tie = tie
    }

    @inline(__always) public init(_ address: IPAddress, id: UInt32, index: Int, flip: UInt64 = 0) {
        family = (address.isIPv6 ? 1 : 0) ^ flip
        high = address.high ^ flip
        low = address.low ^ flip
        tie = UInt64(id) << 32 | UInt64(truncatingIfNeeded: index)
    }

    @inline(__always) public static func < (l: AddressSortKey, r: AddressSortKey) -> Bool {
        if l.family != r.family { return l.family < r.family }
        if l.high != r.high { return l.high < r.high }
        if l.low != r.low { return l.low < r.low }
        return l.tie < r.tie
    }

    @inline(__always) public var tableIndex: Int { Int(truncatingIfNeeded: tie & 0xffff_ffff) }
}

extension Flow {
    /// When the entry times out, in monotonic seconds: the order of remaining timeouts at any moment.
    @inline(__always) public var expiry: Double { timeoutObservedAt + Double(timeout) }
}
