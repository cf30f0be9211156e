import Conntrack
import Foundation

/// Integer sort keys, so that ordering never compares strings or addresses field by field.
extension FlowQueryEngine {
    // MARK: Keys

    protocol QueryKey: Comparable {
        /// The flow's position in the table.
        var index: Int { get }
    }

    /// Two words compared in order (``SortKey``, shared with the mirror's indexes).
    typealias Key2 = SortKey
    /// Family, 128 address bits, then id << 32 | index (``AddressSortKey``).
    typealias AddrKey = AddressSortKey

    protocol KeyMaker {
        associatedtype Key: QueryKey
        /// `slot` is the flow's mark slot when the query uses resolved fields, else 0.
        mutating func key(_ f: UnsafePointer<Flow>, index: Int, slot: Int) -> Key
    }

    /// Every built-in field except addresses.
    struct ScalarKeyMaker: KeyMaker {
        enum Kind { case id, narrow, wide }
        let field: FlowQuery.SortField
        let kind: Kind
        let flip: UInt64
        let now: Double

        init(field: FlowQuery.SortField, descending: Bool, now: Double) {
            self.field = field
            self.now = now
            switch field {
            case .origBytes, .origPackets, .replBytes, .replPackets, .bytes, .packets, .byteRate, .start, .age,
                .timeout:
                kind = .wide
                flip = descending ? ~0 : 0
            default:
                kind = field == .id ? .id : .narrow
                flip = descending ? 0xffff_ffff : 0
            }
        }

        @inline(__always) static func orderedBits(_ d: Double) -> UInt64 { SortKey.orderedBits(d) }

        @inline(__always) func key(_ f: UnsafePointer<Flow>, index: Int, slot: Int) -> Key2 {
            let id = UInt64(f.pointee.id)
            let i = UInt64(truncatingIfNeeded: index)
            switch kind {
            case .id:
                return Key2(a: (id ^ flip) << 32 | id, b: i)  // SortKey.narrow
            case .narrow:
                let p: UInt64
                switch field {
                case .l3proto: p = UInt64(f.pointee.l3proto)
                case .l4proto: p = UInt64(f.pointee.l4proto)
                case .origPortSrc: p = UInt64(f.pointee.origSourcePort)
                case .origPortDst: p = UInt64(f.pointee.origDestinationPort)
                case .replPortSrc: p = UInt64(f.pointee.replySourcePort)
                case .replPortDst: p = UInt64(f.pointee.replyDestinationPort)
                case .mark: p = UInt64(f.pointee.mark)
                case .status: p = UInt64(f.pointee.status)
                case .state: p = UInt64(f.pointee.tcpState)
                case .zone: p = UInt64(f.pointee.zone)
                default: p = id
                }
                return Key2(a: (p ^ flip) << 32 | id, b: i)
            case .wide:
                let p: UInt64
                switch field {
                case .origBytes: p = f.pointee.origBytes
                case .origPackets: p = f.pointee.origPackets
                case .replBytes: p = f.pointee.replyBytes
                case .replPackets: p = f.pointee.replyPackets
                case .bytes: p = f.pointee.origBytes &+ f.pointee.replyBytes
                case .packets: p = f.pointee.origPackets &+ f.pointee.replyPackets
                case .start:
                    // 0 (unknown) first; known starts are positive and order as their bits.
                    p = f.pointee.start > 0 ? ScalarKeyMaker.orderedBits(f.pointee.start) : 0
                case .age:
                    // The age's order is the start's, reversed, with unknown starts first.
                    p = f.pointee.start > 0 ? ~ScalarKeyMaker.orderedBits(f.pointee.start) : 0
                case .timeout:
                    // The remaining time's order at any moment is the expiry's (FlowIndexes.timeoutKey).
                    p = ScalarKeyMaker.orderedBits(f.pointee.expiry)
                default: p = ScalarKeyMaker.orderedBits(f.pointee.byteRate)
                }
                return Key2(a: p ^ flip, b: id << 32 | i)
            }
        }
    }

    struct AddressKeyMaker: KeyMaker {
        let field: FlowQuery.AddressField
        let flip: UInt64

        static func handles(_ field: FlowQuery.SortField) -> Bool {
            [.origSrc, .origDst, .replSrc, .replDst].contains(field)
        }

        init(field: FlowQuery.SortField, descending: Bool) {
            switch field {
            case .origSrc: self.field = .origSrc
            case .origDst: self.field = .origDst
            case .replSrc: self.field = .replSrc
            default: self.field = .replDst
            }
            flip = descending ? ~0 : 0
        }

        @inline(__always) func key(_ f: UnsafePointer<Flow>, index: Int, slot: Int) -> AddrKey {
            AddrKey(FlowQueryEngine.address(field, f), id: f.pointee.id, index: index, flip: flip)
        }
    }

    /// Resolved ordering: slot << 32 | id for now; `ResolvedCache.rankKeys` turns slots into ranks after the scan.
    struct SlotKeyMaker: KeyMaker {
        @inline(__always) func key(_ f: UnsafePointer<Flow>, index: Int, slot: Int) -> Key2 {
            Key2(a: UInt64(slot) << 32 | UInt64(f.pointee.id), b: UInt64(truncatingIfNeeded: index))
        }
    }
}

extension SortKey: FlowQueryEngine.QueryKey {
    var index: Int { tableIndex }
}

extension AddressSortKey: FlowQueryEngine.QueryKey {
    var index: Int { tableIndex }
}
