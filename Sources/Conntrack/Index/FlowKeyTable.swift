import Foundation

/// FlowKey -> table index, as an open-addressing hash table of 32-bit table indices (linear probing, backward-shift
/// deletion): the key itself is not stored but read back from the flow the slot names, so the table costs 4 bytes
/// per slot, 8 to 16 bytes per entry, where a `[FlowKey: Int]` costs about 150 at a million entries.
///
/// Hashes are a multiply-xorshift of the key's words, seeded at random per process: a client that opens connections
/// with chosen tuples cannot aim them at one chain. (`Hasher`'s SipHash was a tenth of a bulk kill's CPU.)
struct FlowKeyTable {
    private static let seed: UInt64 = UInt64.random(in: 1...UInt64.max)

    private var slots: [Int32] = []
    private var mask = -1
    private(set) var count = 0

    init(capacity: Int = 0) { resize(toHold: capacity) }

    private mutating func resize(toHold n: Int) {
        var size = 16
        while size < 2 * n { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
    }

    @inline(__always) private func home(_ key: FlowKey) -> Int { Int(truncatingIfNeeded: Self.hash(key)) & mask }

    @inline(__always) static func hash(_ k: FlowKey) -> UInt64 {
        var h = seed ^ (UInt64(k.id) << 32 | UInt64(k.sourcePort) << 16 | UInt64(k.destinationPort))
        h = h &* 0x9E37_79B9_7F4A_7C15
        h = (h ^ k.source.low ^ (k.source.isIPv6 ? 1 << 63 : 0)) &* 0xC2B2_AE3D_27D4_EB4F
        h = (h ^ k.source.high) &* 0x1656_67B1_9E37_79F9
        h = (h ^ k.destination.low ^ (k.destination.isIPv6 ? 1 << 62 : 0)) &* 0x85EB_CA77_C2B2_AE63
        h = (h ^ k.destination.high ^ (UInt64(k.l4proto) << 16 | UInt64(k.zone))) &* 0x27D4_EB2F_1656_67C5
        return h ^ (h >> 31)
    }

    /// The table index of `key`, reading keys back through `keyAt`.
    func find(_ key: FlowKey, _ keyAt: (Int) -> FlowKey) -> Int? {
        guard count > 0 else { return nil }
        var s = home(key)
        while true {
            let v = slots[s]
            if v < 0 { return nil }
            if keyAt(Int(v)) == key { return Int(v) }
            s = (s + 1) & mask
        }
    }

    /// Adds `key` (not present) at table index `index`.
    mutating func insert(_ key: FlowKey, index: Int, _ keyAt: (Int) -> FlowKey) {
        if 2 * (count + 1) > slots.count { grow(keyAt) }
        var s = home(key)
        while slots[s] >= 0 { s = (s + 1) & mask }
        slots[s] = Int32(index)
        count += 1
    }

    private mutating func grow(_ keyAt: (Int) -> FlowKey) {
        let old = slots
        resize(toHold: Swift.max(16, count * 2))
        for v in old where v >= 0 {
            var s = home(keyAt(Int(v)))
            while slots[s] >= 0 { s = (s + 1) & mask }
            slots[s] = v
        }
    }

    /// The slot holding table index `index` for `key`.
    private func slot(of key: FlowKey, index: Int) -> Int? {
        guard count > 0 else { return nil }
        var s = home(key)
        while true {
            let v = slots[s]
            if v < 0 { return nil }
            if Int(v) == index { return s }
            s = (s + 1) & mask
        }
    }

    /// Removes `key`, which names table index `index`; the entries after it in its run move back, so that no
    /// tombstone is left.
    mutating func remove(_ key: FlowKey, index: Int, _ keyAt: (Int) -> FlowKey) {
        guard var hole = slot(of: key, index: index) else { return }
        slots[hole] = -1
        count -= 1
        var s = (hole + 1) & mask
        while slots[s] >= 0 {
            let h = home(keyAt(Int(slots[s])))
            // The entry at s may fill the hole if its home is not within (hole, s] cyclically.
            let between = hole <= s ? (h > hole && h <= s) : (h > hole || h <= s)
            if !between {
                slots[hole] = slots[s]
                slots[s] = -1
                hole = s
            }
            s = (s + 1) & mask
        }
    }

    /// The entry for `key` moved from table index `from` to `to` (the swap-remove).
    mutating func move(_ key: FlowKey, from: Int, to: Int) {
        if let s = slot(of: key, index: from) { slots[s] = Int32(to) }
    }
}
