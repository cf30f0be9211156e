import Foundation

/// An IPv4 or IPv6 address held in 128 bits (IPv4 in the low 32 bits of `low`), cheap to compare and hash.
public struct IPAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64
    public var isIPv6: Bool

    public init(high: UInt64, low: UInt64, isIPv6: Bool) {
        self.high = high
        self.low = low
        self.isIPv6 = isIPv6
    }

    /// An IPv4 address from its host-order 32-bit value (127.0.0.1 is 0x7f000001).
    public init(ipv4 value: UInt32) {
        self.init(high: 0, low: UInt64(value), isIPv6: false)
    }

    public static let zeroV4 = IPAddress(high: 0, low: 0, isIPv6: false)

    /// The IPv4 value in host order, or nil for IPv6.
    public var ipv4Value: UInt32? { isIPv6 ? nil : UInt32(truncatingIfNeeded: low) }

    /// Parses dotted IPv4 or textual IPv6 (inet_pton).
    public init?(_ text: String) {
        var v4 = in_addr()
        if text.withCString({ inet_pton(AF_INET, $0, &v4) }) == 1 {
            self.init(ipv4: UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        guard text.withCString({ inet_pton(AF_INET6, $0, &v6) }) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        self.init(ipv6Bytes: bytes)
    }

    /// An IPv6 address from its 16 network-order bytes.
    public init(ipv6Bytes bytes: [UInt8]) {
        precondition(bytes.count == 16)
        var h: UInt64 = 0
        var l: UInt64 = 0
        for i in 0..<8 { h = h << 8 | UInt64(bytes[i]) }
        for i in 8..<16 { l = l << 8 | UInt64(bytes[i]) }
        self.init(high: h, low: l, isIPv6: true)
    }

    public var description: String {
        if !isIPv6 {
            // Formatted by hand: this runs four times per connection of every page and every audited action.
            let v = UInt32(truncatingIfNeeded: low)
            return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 15) { buffer in
                var n = 0
                for shift in stride(from: 24, through: 0, by: -8) {
                    let octet = Int((v >> UInt32(shift)) & 0xff)
                    if octet >= 100 {
                        buffer[n] = UInt8(48 + octet / 100)
                        n += 1
                    }
                    if octet >= 10 {
                        buffer[n] = UInt8(48 + (octet / 10) % 10)
                        n += 1
                    }
                    buffer[n] = UInt8(48 + octet % 10)
                    n += 1
                    if shift > 0 {
                        buffer[n] = UInt8(ascii: ".")
                        n += 1
                    }
                }
                return String(decoding: UnsafeBufferPointer(rebasing: buffer[0..<n]), as: UTF8.self)
            }
        }
        var addr = in6_addr()
        withUnsafeMutableBytes(of: &addr) { raw in
            for i in 0..<8 { raw[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i))) }
            for i in 0..<8 { raw[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i))) }
        }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        inet_ntop(AF_INET6, &addr, &buffer, socklen_t(buffer.count))
        return String(cString: buffer)
    }

    /// IPv4 sorts before IPv6; within a family, numeric order.
    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        if a.isIPv6 != b.isIPv6 { return !a.isIPv6 }
        if a.high != b.high { return a.high < b.high }
        return a.low < b.low
    }
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or a single address (full-length prefix).
public struct CIDRBlock: Hashable, Sendable, CustomStringConvertible {
    public var network: IPAddress
    public var prefixLength: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let address = IPAddress(String(parts[0])) else { return nil }
        let maxLength = address.isIPv6 ? 128 : 32
        var length = maxLength
        if parts.count == 2 {
            guard let n = Int(parts[1]), n >= 0, n <= maxLength, parts[1].allSatisfy(\.isNumber) else { return nil }
            length = n
        }
        self.init(network: address, prefixLength: length)
    }

    public init(network: IPAddress, prefixLength: Int) {
        self.prefixLength = prefixLength
        let (mh, ml) = CIDRBlock.mask(prefixLength, isIPv6: network.isIPv6)
        self.network = IPAddress(high: network.high & mh, low: network.low & ml, isIPv6: network.isIPv6)
    }

    private static func mask(_ length: Int, isIPv6: Bool) -> (UInt64, UInt64) {
        if !isIPv6 {
            let m32: UInt32 = length == 0 ? 0 : ~UInt32(0) << UInt32(32 - length)
            return (0, UInt64(m32))
        }
        let high: UInt64 = length >= 64 ? ~0 : (length == 0 ? 0 : ~UInt64(0) << UInt64(64 - length))
        let low: UInt64 = length <= 64 ? 0 : (length >= 128 ? ~0 : ~UInt64(0) << UInt64(128 - length))
        return (high, low)
    }

    public func contains(_ address: IPAddress) -> Bool {
        guard address.isIPv6 == network.isIPv6 else { return false }
        let (mh, ml) = CIDRBlock.mask(prefixLength, isIPv6: network.isIPv6)
        return address.high & mh == network.high && address.low & ml == network.low
    }

    public var description: String { "\(network)/\(prefixLength)" }
}
