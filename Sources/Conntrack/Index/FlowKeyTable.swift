import Foundation

/// FlowKey -> table index, as an open-addressing hash table of 32-bit table indices (linear probing, backward-shift
/// deletion): the key itself is not stored but read back from the flow the slot names, so the table costs 4 bytes
/// per slot, 8 to 16 bytes per entry, where a `[FlowKey: Int]` costs about 150 at a million entries.
///
/// Hashes come from ``WordHash``, seeded at random per process: a client that opens connections with chosen tuples
/// cannot aim them at one chain.
struct FlowKeyTable {

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

    @inline(__always) private func home(_ key: FlowKey) -> Int {
        var h = WordHash()
        h.combine(UInt64(key.id) << 32 | UInt64(key.sourcePort) << 16 | UInt64(key.destinationPort))
        h.combine(key.source)
        h.combine(key.destination)
        h.combine(UInt64(key.l4proto) << 16 | UInt64(key.zone))
        return h.value & mask
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
