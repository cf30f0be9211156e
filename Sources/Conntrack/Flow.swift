import Foundation

/// One conntrack entry in the mirror. A value type of 176 bytes (stride); the mirror holds one per kernel entry.
///
/// The four addresses are stored as their two 64-bit words only; their family is the entry's `l3proto` (conntrack
/// never mixes families in one entry). That and the order of the stored properties (widest last, the small ones
/// packed first) keep the stride at 176 bytes instead of 216: 40 MB at a million entries, and 19 % less memory
/// for a scan to read (docs/benchmark.md, "Memory per entry").
public struct Flow: Sendable, Equatable {
    public var id: UInt32
    /// AF_INET (2) or AF_INET6 (10); the family of the four addresses.
    public var l3proto: UInt8
    /// IPPROTO_* number.
    public var l4proto: UInt8
    /// TCP state number (TCP_CONNTRACK_*), or `Flow.noState` for other protocols.
    public var tcpState: UInt8
    public var icmpType: UInt8
    public var icmpCode: UInt8
    public var icmpID: UInt16
    public var zone: UInt16
    /// The conntrack helper attached to the connection (`ftp`, `sip`, ...), or ``HelperName/none``.
    public var helper: HelperName
    /// Ports in host order; 0 for protocols without ports.
    public var origSourcePort: UInt16
    public var origDestinationPort: UInt16
    public var replySourcePort: UInt16
    public var replyDestinationPort: UInt16
    public var mark: UInt32
    /// Seconds left when the kernel last told us (`timeoutObservedAt`, monotonic seconds).
    public var timeout: UInt32
    /// IPS_* bits.
    public var status: UInt32
    @usableFromInline var origSourceWords: AddressWords
    @usableFromInline var origDestinationWords: AddressWords
    @usableFromInline var replySourceWords: AddressWords
    @usableFromInline var replyDestinationWords: AddressWords
    public var timeoutObservedAt: Double
    public var origBytes: UInt64
    public var origPackets: UInt64
    public var replyBytes: UInt64
    public var replyPackets: UInt64
    /// Bytes per second, both directions, over the last counter refresh interval.
    public var byteRate: Double
    /// When the connection started, wall-clock seconds since the epoch; 0 when unknown
    /// (`net.netfilter.nf_conntrack_timestamp` was 0 when it was created).
    public var start: Double
    /// The ct label bits 0..63 and 64..127.
    public var labelsLow: UInt64
    public var labelsHigh: UInt64

    /// An address without its family: 16 bytes, no padding.
    @usableFromInline struct AddressWords: Sendable, Equatable {
        @usableFromInline var high: UInt64
        @usableFromInline var low: UInt64
        @inlinable init(_ a: IPAddress) {
            high = a.high
            low = a.low
        }
    }

    /// The address stored as `words`, in this entry's family.
    @inlinable func address(_ words: AddressWords) -> IPAddress {
        IPAddress(high: words.high, low: words.low, isIPv6: l3proto == 10)
    }

    public var origSource: IPAddress {
        @inlinable get { address(origSourceWords) }
        @inlinable set { origSourceWords = AddressWords(newValue) }
    }
    public var origDestination: IPAddress {
        @inlinable get { address(origDestinationWords) }
        @inlinable set { origDestinationWords = AddressWords(newValue) }
    }
    public var replySource: IPAddress {
        @inlinable get { address(replySourceWords) }
        @inlinable set { replySourceWords = AddressWords(newValue) }
    }
    public var replyDestination: IPAddress {
        @inlinable get { address(replyDestinationWords) }
        @inlinable set { replyDestinationWords = AddressWords(newValue) }
    }

    public static let noState: UInt8 = 255

    public init(
        id: UInt32, l3proto: UInt8? = nil, l4proto: UInt8 = 17, tcpState: UInt8 = Flow.noState,
        icmpType: UInt8 = 0, icmpCode: UInt8 = 0, icmpID: UInt16 = 0, zone: UInt16 = 0,
        origSource: IPAddress = .zeroV4, origDestination: IPAddress = .zeroV4,
        replySource: IPAddress = .zeroV4, replyDestination: IPAddress = .zeroV4,
        origSourcePort: UInt16 = 0, origDestinationPort: UInt16 = 0,
        replySourcePort: UInt16 = 0, replyDestinationPort: UInt16 = 0,
        mark: UInt32 = 0, timeout: UInt32 = 0, timeoutObservedAt: Double = 0, status: UInt32 = 0,
        origBytes: UInt64 = 0, origPackets: UInt64 = 0, replyBytes: UInt64 = 0, replyPackets: UInt64 = 0,
        byteRate: Double = 0, start: Double = 0, labelsLow: UInt64 = 0, labelsHigh: UInt64 = 0,
        helper: HelperName = .none
    ) {
        self.id = id
        // The family follows the addresses unless given.
        self.l3proto = l3proto ?? (origSource.isIPv6 ? 10 : 2)
        self.l4proto = l4proto
        self.tcpState = tcpState
        self.icmpType = icmpType
        self.icmpCode = icmpCode
        self.icmpID = icmpID
        self.zone = zone
        self.helper = helper
        self.origSourcePort = origSourcePort
        self.origDestinationPort = origDestinationPort
        self.replySourcePort = replySourcePort
        self.replyDestinationPort = replyDestinationPort
        self.mark = mark
        self.timeout = timeout
        self.status = status
        self.origSourceWords = AddressWords(origSource)
        self.origDestinationWords = AddressWords(origDestination)
        self.replySourceWords = AddressWords(replySource)
        self.replyDestinationWords = AddressWords(replyDestination)
        self.timeoutObservedAt = timeoutObservedAt
        self.origBytes = origBytes
        self.origPackets = origPackets
        self.replyBytes = replyBytes
        self.replyPackets = replyPackets
        self.byteRate = byteRate
        self.start = start
        self.labelsLow = labelsLow
        self.labelsHigh = labelsHigh
    }

    /// Whole seconds since the connection started at wall-clock time `wallNow`, or nil when the start is unknown.
    @inline(__always) public func age(at wallNow: Double) -> Int64? {
        guard start > 0 else { return nil }
        let a = wallNow - start
        return a <= 0 ? 0 : Int64(a.rounded(.down))
    }

    /// Whether ct label `bit` (0..127) is set.
    @inline(__always) public func hasLabel(_ bit: Int) -> Bool {
        bit < 64 ? labelsLow & (1 << UInt64(bit)) != 0 : labelsHigh & (1 << UInt64(bit - 64)) != 0
    }

    /// The set label bits, ascending.
    public var labelBits: [Int] {
        var out: [Int] = []
        var w = labelsLow
        while w != 0 {
            out.append(w.trailingZeroBitCount)
            w &= w - 1
        }
        w = labelsHigh
        while w != 0 {
            out.append(64 + w.trailingZeroBitCount)
            w &= w - 1
        }
        return out
    }

    /// Seconds left at monotonic time `now`.
    public func remainingTimeout(at now: Double) -> UInt32 {
        let left = Double(timeout) - (now - timeoutObservedAt)
        return left <= 0 ? 0 : UInt32(left.rounded(.up))
    }

    public var totalBytes: UInt64 { origBytes &+ replyBytes }
    public var totalPackets: UInt64 { origPackets &+ replyPackets }
}

/// Names for protocol numbers, TCP states and status bits, as `conntrack -L` prints them.
public enum ConntrackNames {
    public static func l3(_ family: UInt8) -> String {
        switch family {
        case 2: return "ipv4"
        case 10: return "ipv6"
        default: return "unknown"
        }
    }

    public static func l3Number(_ name: String) -> UInt8? {
        switch name.lowercased() {
        case "ipv4", "inet", "2": return 2
        case "ipv6", "inet6", "10": return 10
        default: return nil
        }
    }

    private static let l4Table: [(UInt8, String)] = [
        (1, "icmp"), (2, "igmp"), (6, "tcp"), (17, "udp"), (33, "dccp"), (47, "gre"), (58, "icmpv6"),
        (132, "sctp"), (136, "udplite"),
    ]

    public static func l4(_ number: UInt8) -> String {
        l4Table.first { $0.0 == number }?.1 ?? "unknown"
    }

    public static func l4Number(_ name: String) -> UInt8? {
        if let n = UInt8(name) { return n }
        return l4Table.first { $0.1 == name.lowercased() }?.0
    }

    /// TCP_CONNTRACK_* in kernel order.
    public static let tcpStates = [
        "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE",
        "SYN_SENT2",
    ]

    public static func tcpState(_ state: UInt8) -> String {
        state == Flow.noState ? "" : (Int(state) < tcpStates.count ? tcpStates[Int(state)] : "UNKNOWN")
    }

    public static func tcpStateNumber(_ name: String) -> UInt8? {
        tcpStates.firstIndex(of: name.uppercased()).map { UInt8($0) }
    }

    /// IPS_* bit names, bit i = statusBits[i].
    public static let statusBits = [
        "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT", "DST_NAT", "SEQ_ADJUST", "SRC_NAT_DONE",
        "DST_NAT_DONE", "DYING", "FIXED_TIMEOUT", "TEMPLATE", "UNTRACKED", "HELPER", "OFFLOAD", "HW_OFFLOAD",
    ]

    public static func statusNames(_ status: UInt32) -> [String] {
        var names: [String] = []
        for (bit, name) in statusBits.enumerated() where status & (1 << UInt32(bit)) != 0 { names.append(name) }
        return names
    }

    /// A status filter name to its bits; `NAT` means either SRC_NAT or DST_NAT.
    public static func statusMask(_ name: String) -> UInt32? {
        let upper = name.uppercased()
        if upper == "NAT" { return 0x10 | 0x20 }
        return statusBits.firstIndex(of: upper).map { UInt32(1) << UInt32($0) }
    }
}

extension Flow {
    /// Takes the fields an event or dump carried (`present`) from `newer`; the tuple and id are the same.
    package mutating func merge(_ newer: Flow, present: ConntrackEvent.Fields) {
        if present.contains(.mark) { mark = newer.mark }
        if present.contains(.status) { status = newer.status }
        if present.contains(.timeout) {
            timeout = newer.timeout
            timeoutObservedAt = newer.timeoutObservedAt
        }
        if present.contains(.state), newer.tcpState != Flow.noState { tcpState = newer.tcpState }
        if present.contains(.counters) {
            origBytes = newer.origBytes
            origPackets = newer.origPackets
            replyBytes = newer.replyBytes
            replyPackets = newer.replyPackets
        }
        // A dump without a start (timestamps off, or an entry older than the sysctl) keeps an estimate made from
        // the NEW event; a dump that has one always wins.
        if present.contains(.start), newer.start > 0 { start = newer.start }
        if present.contains(.labels) {
            labelsLow = newer.labelsLow
            labelsHigh = newer.labelsHigh
        }
        if present.contains(.helper) { helper = newer.helper }
    }
}
