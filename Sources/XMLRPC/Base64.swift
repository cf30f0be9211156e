import Foundation

// MARK: - Base64

package enum Base64 {
    package static let alphabet: [UInt8] = Array(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// 255 = not a base64 digit.
    private static let reverse: [UInt8] = {
        var table = [UInt8](repeating: 255, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    /// Decodes standard base64, skipping XML whitespace; "=" padding may be omitted. Nil when the text is not base64.
    package static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count / 4 * 3 + 3)
        var acc: UInt32 = 0
        var bits = 0
        var sextets = 0
        var padding = 0
        for c in text.utf8 {
            if XMLRPCDecoder.isXMLSpace(c) { continue }
            if c == UInt8(ascii: "=") {
                padding += 1
                continue
            }
            // No digits after padding.
            guard padding == 0 else { return nil }
            let v = reverse[Int(c)]
            guard v != 255 else { return nil }
            acc = (acc << 6) | UInt32(v)
            bits += 6
            sextets += 1
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        // A lone sextet cannot carry a byte; at most two "=" and only where they complete a group of four.
        let remainder = sextets % 4
        if remainder == 1 { return nil }
        if padding > 0 && (remainder == 0 || remainder + padding != 4) { return nil }
        return out
    }
}
