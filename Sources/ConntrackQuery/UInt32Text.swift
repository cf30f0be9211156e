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
        // The shape ids come in (as `view` gives them out): up to ten plain digits, read from the bytes. A kill of
        // 10,000 ids spent about 1 µs per id in the general path below (Foundation's trimming).
        var value: UInt64 = 0
        var digits = 0
        for b in raw.utf8 {
            guard b >= 48 && b <= 57, digits < 10 else {
                digits = -1
                break
            }
            value = value * 10 + UInt64(b - 48)
            digits += 1
        }
        if digits > 0 { return value <= UInt64(UInt32.max) ? UInt32(value) : nil }
        let s = raw.trimmingCharacters(in: .whitespaces)
        if s.hasPrefix("0x") || s.hasPrefix("0X") { return UInt32(s.dropFirst(2), radix: 16) }
        return Int64(s).flatMap { from(integer: $0) }
    }
}
