import Foundation

/// Client-sent unsigned 32-bit values (ids, marks) in every form the XML-RPC client stacks send them.
///
/// Clients differ (docs/design.md, "What the client stacks do with integers"): a value may come as a decimal or
/// 0x-hex string, an int, an i8, or a negative int holding the two's complement of a value at or above 2^31.
public enum UInt32Text {
    /// An integer from -2^31 to 2^32-1; negatives are two's complement.
    public static func from(integer n: Int64) -> UInt32? {
        guard n >= Int64(Int32.min), n <= Int64(UInt32.max) else { return nil }
        return UInt32(truncatingIfNeeded: n)
    }

    /// A decimal string with the range of `from(integer:)`, or a 0x-hexadecimal one up to 0xffffffff.
    public static func from(text raw: String) -> UInt32? {
        let s = raw.trimmingCharacters(in: .whitespaces)
        if s.hasPrefix("0x") || s.hasPrefix("0X") { return UInt32(s.dropFirst(2), radix: 16) }
        return Int64(s).flatMap { from(integer: $0) }
    }
}
