import Conntrack
import Foundation

/// Integer sort keys, so that ordering never compares strings or addresses field by field.
extension FlowQueryEngine {
    // MARK: Keys

    protocol QueryKey: Comparable {
        /// The flow's position in the table.
        var index: Int { get }
    }

    /// Two words compared in order. Narrow fields: a = primary << 32 | id, b = index; wide fields: a = primary,
    /// b = id << 32 | index. Either way the index is the low 32 bits of b.
    struct Key2: QueryKey {
        var a: UInt64
        var b: UInt64

        @inline(__always) static func < (l: Key2, r: Key2) -> Bool { l.a != r.a ? l.a < r.a : l.b < r.b }
        var index: Int { Int(truncatingIfNeeded: b & 0xffff_ffff) }
    }

    /// An address key: family (IPv4 first), 128 address bits, then id << 32 | index.
    struct AddrKey: QueryKey {
        var family: UInt64
        var high: UInt64
        var low: UInt64
        var tie: UInt64

        @inline(__always) static func < (l: AddrKey, r: AddrKey) -> Bool {
            if l.family != r.family { return l.family < r.family }
            if l.high != r.high { return l.high < r.high }
            if l.low != r.low { return l.low < r.low }
            return l.tie < r.tie
        }
        var index: Int { Int(truncatingIfNeeded: tie & 0xffff_ffff) }
    }

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
            case .origBytes, .origPackets, .replBytes, .replPackets, .bytes, .packets, .byteRate, .start, .age:
                kind = .wide
                flip = descending ? ~0 : 0
            default:
                kind = field == .id ? .id : .narrow
                flip = descending ? 0xffff_ffff : 0
            }
        }

        /// A Double as an unsigned integer with the same order (-0 as +0; NaNs beyond the infinities).
        @inline(__always) static func orderedBits(_ d: Double) -> UInt64 {
            let bits = (d + 0.0).bitPattern  // -0 + 0 is +0
            let negative = UInt64(bitPattern: Int64(bitPattern: bits) >> 63)
            return bits ^ (negative | 1 << 63)
        }

        @inline(__always) func key(_ f: UnsafePointer<Flow>, index: Int, slot: Int) -> Key2 {
            let id = UInt64(f.pointee.id)
            let i = UInt64(truncatingIfNeeded: index)
            switch kind {
            case .id:
                return Key2(a: (id ^ flip) << 32 | id, b: i)
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
                case .timeout: p = UInt64(f.pointee.remainingTimeout(at: now))
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
            let a = FlowQueryEngine.address(field, f)
            return AddrKey(
                family: (a.isIPv6 ? 1 : 0) ^ flip, high: a.high ^ flip, low: a.low ^ flip,
                tie: UInt64(f.pointee.id) << 32 | UInt64(truncatingIfNeeded: index))
        }
    }

    /// Resolved ordering: slot << 32 | id for now; `ResolvedCache.rankKeys` turns slots into ranks after the scan.
    struct SlotKeyMaker: KeyMaker {
        @inline(__always) func key(_ f: UnsafePointer<Flow>, index: Int, slot: Int) -> Key2 {
            Key2(a: UInt64(slot) << 32 | UInt64(f.pointee.id), b: UInt64(truncatingIfNeeded: index))
        }
    }
}
