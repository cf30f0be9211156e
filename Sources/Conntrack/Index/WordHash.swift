/// A seeded multiply-xorshift hash of a few 64-bit words, for ctd's own hash tables (the mirror's FlowKey table, a
/// summary's groups). For keys of a few words it costs a fraction of `Hasher`'s SipHash, which was a tenth of a bulk
/// kill's CPU and two thirds of a summary's (docs/benchmark.md). The seed is random per process, so that
/// connections a client can open cannot be chosen to collide.
public struct WordHash {
    private static let seed = UInt64.random(in: 1...UInt64.max)
    private var h = seed

    /// A hash of no words yet, from this process's seed.
    @inline(__always) public init() {}

    /// Mixes in one word.
    @inline(__always) public mutating func combine(_ word: UInt64) {
        h = (h ^ word) &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 32
    }

    /// An address: its two halves, the family folded into the first.
    @inline(__always) public mutating func combine(_ a: IPAddress) {
        combine(a.low ^ (a.isIPv6 ? 1 << 63 : 0))
        combine(a.high)
    }

    /// The hash of the words combined so far.
    @inline(__always) public var value: Int { Int(truncatingIfNeeded: h ^ (h >> 29)) }
}
