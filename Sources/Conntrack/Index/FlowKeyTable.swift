import Foundation

/// FlowKey -> table index for the mirror (a Dictionary).
///
/// An open-addressing table of 4-byte slots that read their keys back from the flows (8 to 16 bytes per entry
/// instead of about 150) was tried: it passed a randomized test against a Dictionary, but under the event-flood
/// test (`test_mirror_afterFloodWithSmallReceiveBuffer_equalsKernelTableExactly`) the mirror ended with entries
/// too many or too few in 3 of 11 runs. The failures went on with this Dictionary under load: their cause was a
/// shorter reconciliation schedule, since reverted, so the slot table may have been sound. It comes back only once
/// the flood test has run against it again (docs/benchmark.md, memory).
struct FlowKeyTable {
    private var byKey: [FlowKey: Int] = [:]

    init(capacity: Int = 0) { byKey.reserveCapacity(capacity) }

    var count: Int { byKey.count }

    func find(_ key: FlowKey) -> Int? { byKey[key] }

    mutating func insert(_ key: FlowKey, index: Int) { byKey[key] = index }

    mutating func remove(_ key: FlowKey) { byKey[key] = nil }

    /// The entry for `key` moved to table index `to` (the swap-remove).
    mutating func move(_ key: FlowKey, to: Int) { byKey[key] = to }
}
