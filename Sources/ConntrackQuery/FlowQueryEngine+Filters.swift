import Conntrack
import Foundation

/// The built-in filters, flattened into plain values for the scan.
extension FlowQueryEngine {
    // MARK: Filters

    /// Lists longer than this are matched through hash sets instead of a scan of the values (a scan is faster for
    /// the short lists people type; a set keeps a list of thousands constant-time per flow).
    static let hashedListThreshold = 16

    struct NumericPredicate {
        var field: FlowQuery.NumericField
        var first: Int
        var count: Int
        /// Index into `Matcher.numericSets` for a long list, else -1.
        var set = -1
    }

    struct AddressPredicate {
        var field: FlowQuery.AddressField
        var first: Int
        var count: Int
        /// Index into `Matcher.addressSets` for a long list, else -1.
        var sets = -1
    }

    /// The blocks of one prefix length (and family), as their masked networks: an address is in one of them when
    /// its masked value is in `networks`.
    struct MaskedNetworks {
        var isIPv6: Bool
        var maskHigh: UInt64
        var maskLow: UInt64
        var networks: Set<AddressBits>

        static func grouping(_ blocks: [Block]) -> [MaskedNetworks] {
            var groups: [String: MaskedNetworks] = [:]
            for b in blocks {
                let key = "\(b.isIPv6) \(b.maskHigh) \(b.maskLow)"
                groups[key, default: MaskedNetworks(isIPv6: b.isIPv6, maskHigh: b.maskHigh, maskLow: b.maskLow, networks: [])]
                    .networks.insert(AddressBits(high: b.high, low: b.low))
            }
            return Array(groups.values)
        }

        @inline(__always) func contains(_ a: IPAddress) -> Bool {
            a.isIPv6 == isIPv6 && networks.contains(AddressBits(high: a.high & maskHigh, low: a.low & maskLow))
        }
    }

    struct RangePredicate {
        var field: FlowQuery.RangeField
        var min: Double
        var max: Double

        @inline(__always) func contains(_ v: Double) -> Bool { v >= min && v <= max }

        @inline(__always) func passes(_ f: UnsafePointer<Flow>, now: Double, wallNow: Double) -> Bool {
            let flow = f.pointee
            switch field {
            case .age:
                guard let age = flow.age(at: wallNow) else { return false }
                return contains(Double(age))
            case .timeout: return contains(Double(flow.remainingTimeout(at: now)))
            case .origBytes: return contains(Double(flow.origBytes))
            case .replBytes: return contains(Double(flow.replyBytes))
            case .bytes: return contains(Double(flow.totalBytes))
            case .packets: return contains(Double(flow.totalPackets))
            case .byteRate: return contains(flow.byteRate)
            case .origPortSrc: return contains(Double(flow.origSourcePort))
            case .origPortDst: return contains(Double(flow.origDestinationPort))
            case .replPortSrc: return contains(Double(flow.replySourcePort))
            case .replPortDst: return contains(Double(flow.replyDestinationPort))
            case .anyPort:
                return contains(Double(flow.origSourcePort)) || contains(Double(flow.origDestinationPort))
                    || contains(Double(flow.replySourcePort)) || contains(Double(flow.replyDestinationPort))
            }
        }
    }

    struct AddressBits: Hashable {
        var high: UInt64
        var low: UInt64
    }

    /// A CIDR block with its mask precomputed.
    struct Block {
        var isIPv6: Bool
        var maskHigh: UInt64
        var maskLow: UInt64
        var high: UInt64
        var low: UInt64

        init(_ block: CIDRBlock) {
            isIPv6 = block.network.isIPv6
            let length = block.prefixLength
            if isIPv6 {
                maskHigh = length >= 64 ? ~0 : (length == 0 ? 0 : ~UInt64(0) << UInt64(64 - length))
                maskLow = length <= 64 ? 0 : (length >= 128 ? ~0 : ~UInt64(0) << UInt64(128 - length))
            } else {
                maskHigh = 0
                maskLow = length == 0 ? 0 : UInt64(~UInt32(0) << UInt32(32 - length))
            }
            high = block.network.high & maskHigh
            low = block.network.low & maskLow
        }

        @inline(__always) func contains(_ a: IPAddress) -> Bool {
            a.isIPv6 == isIPv6 && a.high & maskHigh == high && a.low & maskLow == low
        }
    }

    /// The built-in filters flattened into arrays of plain values (no reference counting in the hot loop).
    struct Matcher {
        var numerics: [NumericPredicate] = []
        var numericValues: [UInt32] = []
        var statusMasks: [UInt32] = []
        var addresses: [AddressPredicate] = []
        var blocks: [Block] = []
        var lateNumerics: [NumericPredicate] = []
        var numericSets: [Set<UInt32>] = []
        var addressSets: [[MaskedNetworks]] = []
        var ranges: [RangePredicate] = []
        /// One mask per `label` filter: the flow passes when it has any of the mask's bits.
        var labelMasks: [(low: UInt64, high: UInt64)] = []
        /// One list of helper indices per `helper` filter; an empty list matches nothing (a name never seen).
        var helpers: [[UInt16]] = []
        var now: Double
        var wallNow: Double

        private mutating func predicate(_ field: FlowQuery.NumericField, _ values: [UInt32]) -> NumericPredicate {
            var p = NumericPredicate(field: field, first: numericValues.count, count: values.count)
            if values.count > FlowQueryEngine.hashedListThreshold {
                p.set = numericSets.count
                numericSets.append(Set(values))
            } else {
                numericValues += values
            }
            return p
        }

        init(filters: [FlowQuery.Filter], now: Double, wallNow: Double) {
            self.now = now
            self.wallNow = wallNow
            for filter in filters {
                switch filter {
                case .number(.timeout, let values):
                    // Computing the remaining time costs more than a load; check it after the addresses.
                    lateNumerics.append(predicate(.timeout, values))
                case .number(let field, let values):
                    numerics.append(predicate(field, values))
                case .status(let masks):
                    statusMasks += masks
                case .address(let field, let list):
                    var p = AddressPredicate(field: field, first: blocks.count, count: list.count)
                    if list.count > FlowQueryEngine.hashedListThreshold {
                        p.sets = addressSets.count
                        addressSets.append(MaskedNetworks.grouping(list.map(Block.init)))
                    } else {
                        blocks += list.map(Block.init)
                    }
                    addresses.append(p)
                case .range(let field, let min, let max):
                    ranges.append(RangePredicate(field: field, min: min ?? -.infinity, max: max ?? .infinity))
                case .labels(let bits):
                    var mask: (low: UInt64, high: UInt64) = (0, 0)
                    for b in bits where (0...127).contains(b) {
                        if b < 64 { mask.low |= 1 << UInt64(b) } else { mask.high |= 1 << UInt64(b - 64) }
                    }
                    labelMasks.append(mask)
                case .helper(let names):
                    helpers.append(names.compactMap { HelperName.existing($0)?.index })
                case .resolved:
                    break  // ResolvedCache
                }
            }
        }

        var isEmpty: Bool {
            numerics.isEmpty && statusMasks.isEmpty && addresses.isEmpty && lateNumerics.isEmpty && ranges.isEmpty
                && labelMasks.isEmpty && helpers.isEmpty
        }
    }

    @inline(__always)
    static func numericValue(_ field: FlowQuery.NumericField, _ f: UnsafePointer<Flow>, now: Double) -> UInt32 {
        switch field {
        case .id: return f.pointee.id
        case .mark: return f.pointee.mark
        case .timeout: return f.pointee.remainingTimeout(at: now)
        case .l3proto: return UInt32(f.pointee.l3proto)
        case .l4proto: return UInt32(f.pointee.l4proto)
        case .state: return UInt32(f.pointee.tcpState)
        case .zone: return UInt32(f.pointee.zone)
        case .origPortSrc: return UInt32(f.pointee.origSourcePort)
        case .origPortDst: return UInt32(f.pointee.origDestinationPort)
        case .replPortSrc: return UInt32(f.pointee.replySourcePort)
        case .replPortDst: return UInt32(f.pointee.replyDestinationPort)
        case .anyPort: return UInt32(f.pointee.origSourcePort)  // `port` is matched port by port (MatcherView.passes)
        }
    }

    @inline(__always)
    static func address(_ field: FlowQuery.AddressField, _ f: UnsafePointer<Flow>) -> IPAddress {
        switch field {
        case .origSrc: return f.pointee.origSource
        case .origDst: return f.pointee.origDestination
        case .replSrc: return f.pointee.replySource
        case .replDst: return f.pointee.replyDestination
        case .any: return f.pointee.origSource  // `host` is matched field by field (MatcherView.passes)
        }
    }

    /// The filter loop over raw buffers of the matcher's arrays.
    struct MatcherView {
        var numerics: UnsafeBufferPointer<NumericPredicate>
        var numericValues: UnsafeBufferPointer<UInt32>
        var statusMasks: UnsafeBufferPointer<UInt32>
        var addresses: UnsafeBufferPointer<AddressPredicate>
        var blocks: UnsafeBufferPointer<Block>
        var lateNumerics: UnsafeBufferPointer<NumericPredicate>
        var numericSets: [Set<UInt32>]
        var addressSets: [[MaskedNetworks]]
        var ranges: [RangePredicate]
        var labelMasks: [(low: UInt64, high: UInt64)]
        var helpers: [[UInt16]]
        var now: Double
        var wallNow: Double

        @inline(__always) func passes(_ p: NumericPredicate, _ f: UnsafePointer<Flow>) -> Bool {
            if p.field == .anyPort {
                for field in [FlowQuery.NumericField.origPortSrc, .origPortDst, .replPortSrc, .replPortDst] {
                    var one = p
                    one.field = field
                    if passes(one, f) { return true }
                }
                return false
            }
            let v = FlowQueryEngine.numericValue(p.field, f, now: now)
            if p.set >= 0 { return numericSets[p.set].contains(v) }
            for j in p.first..<(p.first + p.count) where numericValues[j] == v { return true }
            return false
        }

        @inline(__always) func passes(_ p: AddressPredicate, _ f: UnsafePointer<Flow>) -> Bool {
            if p.field == .any {
                for field in [FlowQuery.AddressField.origSrc, .origDst, .replSrc, .replDst] {
                    var one = p
                    one.field = field
                    if passes(one, f) { return true }
                }
                return false
            }
            let a = FlowQueryEngine.address(p.field, f)
            if p.sets >= 0 {
                for group in addressSets[p.sets] where group.contains(a) { return true }
                return false
            }
            for j in p.first..<(p.first + p.count) where blocks[j].contains(a) { return true }
            return false
        }

        @inline(__always) func matches(_ f: UnsafePointer<Flow>) -> Bool {
            for p in numerics where !passes(p, f) { return false }
            if !statusMasks.isEmpty {
                let status = f.pointee.status
                for m in statusMasks where status & m == 0 { return false }
            }
            for m in labelMasks where f.pointee.labelsLow & m.low == 0 && f.pointee.labelsHigh & m.high == 0 {
                return false
            }
            for list in helpers where !list.contains(f.pointee.helper.index) { return false }
            for p in addresses where !passes(p, f) { return false }
            for r in ranges where !r.passes(f, now: now, wallNow: wallNow) { return false }
            for p in lateNumerics where !passes(p, f) { return false }
            return true
        }
    }

    /// Picks the key type for the order field and runs the scan and the selection.
    /// `candidates`: the only table indices that can match (from an index), or nil to scan the whole table.
    static func execute<S: SlotSource>(
        _ query: FlowQuery, _ buffer: FlowTable, _ matcher: Matcher, _ slots: inout S, want: Int,
        start: Int, length: Int, candidates: [Int]? = nil
    ) -> FlowQueryResult {
        let n = candidates?.count ?? buffer.count
        let descending = query.direction == .descending
        switch query.orderField {
        case .resolved?:
            var maker = SlotKeyMaker()
            // Ranks are known only after the scan, so collect every match.
            var sink = Selector<Key2>(want: want, tableSize: n, collectAll: true)
            let total = scan(buffer, matcher, &slots, &maker, &sink, candidates)
            if want > 0 { slots.rankKeys(&sink.items, descending: descending) }
            return FlowQueryResult(total: total, page: sink.page(start: start, length: length))
        case .builtin(let field)? where AddressKeyMaker.handles(field):
            var maker = AddressKeyMaker(field: field, descending: descending)
            var sink = Selector<AddrKey>(want: want, tableSize: n)
            let total = scan(buffer, matcher, &slots, &maker, &sink, candidates)
            return FlowQueryResult(total: total, page: sink.page(start: start, length: length))
        default:
            var maker = ScalarKeyMaker(field: query.orderFieldBuiltin ?? .id, descending: descending, now: matcher.now)
            var sink = Selector<Key2>(want: want, tableSize: n)
            let total = scan(buffer, matcher, &slots, &maker, &sink, candidates)
            return FlowQueryResult(total: total, page: sink.page(start: start, length: length))
        }
    }
}
