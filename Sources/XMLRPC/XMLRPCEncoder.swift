/// Writes XML-RPC bodies as UTF-8 bytes.
///
/// Output is compact (no indentation) and always well-formed: `&`, `<` and `>` are escaped, a carriage return is
/// written as `&#13;` so that it survives the reader's line-end normalisation, and characters that XML 1.0 does not
/// allow at all (control characters other than tab, LF and CR; U+FFFE; U+FFFF) are replaced by U+FFFD.
///
/// Integers are written as `<int>` when they fit in 32 bits and as `<i8>` otherwise (many clients, PHP's among them,
/// cannot read `<i8>`, so methods keep their numbers small where they can). Doubles are written in plain decimal
/// notation, never with an exponent; NaN and infinities, which XML-RPC cannot carry, are written as 0.
///
/// Everything is written into one byte buffer sized from an estimate of the output (grown by doubling in the rare
/// case the estimate is short); no per-value Strings, no formatters, no String concatenation.
public enum XMLRPCEncoder {
    /// A `<methodResponse>` carrying `value`.
    public static func response(_ value: XMLRPCValue) -> [UInt8] {
        var w = ByteWriter(capacity: estimatedSize(value) + 128)
        w.put(header)
        w.put("<methodResponse><params><param><value>")
        write(value, to: &w)
        w.put("</value></param></params></methodResponse>")
        return w.finish()
    }

    /// A `<methodResponse>` carrying `fault` as the usual struct of faultCode and faultString.
    public static func fault(_ fault: Fault) -> [UInt8] {
        var w = ByteWriter(capacity: fault.message.utf8.count + 320)
        w.put(header)
        w.put("<methodResponse><fault><value><struct><member><name>faultCode</name><value>")
        writeInt(Int64(clamping: fault.code), to: &w)
        w.put("</value></member><member><name>faultString</name><value><string>")
        writeEscaped(fault.message, to: &w)
        w.put("</string></value></member></struct></value></fault></methodResponse>")
        return w.finish()
    }

    /// A `<methodCall>`; for tests and tools.
    public static func request(method: String, params: [XMLRPCValue]) -> [UInt8] {
        var w = ByteWriter(capacity: params.reduce(method.utf8.count + 160) { $0 + estimatedSize($1) + 16 })
        w.put(header)
        w.put("<methodCall><methodName>")
        writeEscaped(method, to: &w)
        w.put("</methodName><params>")
        for param in params {
            w.put("<param><value>")
            write(param, to: &w)
            w.put("</value></param>")
        }
        w.put("</params></methodCall>")
        return w.finish()
    }

    /// Appends `<value>…</value>` for `value` to `out`.
    public static func append(_ value: XMLRPCValue, to out: inout [UInt8]) {
        var w = ByteWriter(capacity: estimatedSize(value) + 16)
        w.put("<value>")
        write(value, to: &w)
        w.put("</value>")
        out.append(contentsOf: w.finish())
    }

    // MARK: - Values

    private static let header: StaticString = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"

    /// The typed content of a `<value>`: `<int>5</int>`, `<struct>…</struct>`, and so on.
    package static func write(_ value: XMLRPCValue, to w: inout ByteWriter) {
        switch value {
        case .int(let v):
            writeInt(v, to: &w)
        case .bool(let v):
            w.put(v ? "<boolean>1</boolean>" : "<boolean>0</boolean>")
        case .string(let s):
            w.put("<string>")
            writeEscaped(s, to: &w)
            w.put("</string>")
        case .double(let v):
            w.put("<double>")
            writeDouble(v, to: &w)
            w.put("</double>")
        case .dateTime(let s):
            w.put("<dateTime.iso8601>")
            writeEscaped(s, to: &w)
            w.put("</dateTime.iso8601>")
        case .base64(let bytes):
            w.put("<base64>")
            writeBase64(bytes, to: &w)
            w.put("</base64>")
        case .structure(let s):
            w.put("<struct>")
            for (name, member) in s.members {
                w.put("<member><name>")
                writeEscaped(name, to: &w)
                w.put("</name><value>")
                write(member, to: &w)
                w.put("</value></member>")
            }
            w.put("</struct>")
        case .array(let elements):
            w.put("<array><data>")
            for element in elements {
                w.put("<value>")
                write(element, to: &w)
                w.put("</value>")
            }
            w.put("</data></array>")
        case .nil:
            w.put("<nil/>")
        case .encoded(let e):
            e.bytes.withUnsafeBufferPointer { w.put($0) }
        }
    }

    /// A struct written member by member straight to bytes: the same bytes as encoding the ``XMLRPCStruct`` of the
    /// same members in the same order (names must not repeat: the writer does not check).
    package static func encodedStruct(capacity: Int, _ build: (inout XMLRPCStructWriter) -> Void) -> XMLRPCValue {
        var s = XMLRPCStructWriter(capacity: capacity)
        build(&s)
        return .encoded(XMLRPCEncodedValue(bytes: s.finish(), typeName: "struct"))
    }

    /// A rough upper bound of the encoded size, so that the buffer is allocated once in the usual case. It can fall
    /// short (heavily escaped text, long arrays of unlike elements); the buffer then grows.
    package static func estimatedSize(_ value: XMLRPCValue) -> Int {
        switch value {
        case .int, .bool, .nil: return 40
        case .encoded(let e): return e.bytes.count
        case .double: return 64
        case .string(let s), .dateTime(let s): return 48 + s.utf8.count
        case .base64(let b): return 40 + (b.count + 2) / 3 * 4
        case .structure(let s):
            var total = 40
            for (name, member) in s.members { total += 48 + name.utf8.count + estimatedSize(member) }
            return total
        case .array(let a):
            // Pages are long arrays of look-alike structs: measure the first few and extrapolate with a margin.
            let sampled = min(a.count, 16)
            var sample = 0
            for element in a[..<sampled] { sample += 16 + estimatedSize(element) }
            if sampled == a.count { return 48 + sample }
            return 48 + sample / sampled * a.count * 5 / 4
        }
    }

    /// `<int>` inside the 32-bit range, `<i8>` outside.
    package static func writeInt(_ v: Int64, to w: inout ByteWriter) {
        if v >= Int64(Int32.min) && v <= Int64(Int32.max) {
            w.put("<int>")
            w.putDecimal(v)
            w.put("</int>")
        } else {
            w.put("<i8>")
            w.putDecimal(v)
            w.put("</i8>")
        }
    }

    /// Plain decimal: "1234.5", "0.0", "-0.000001", "100000000000000000000.0". The digits are Swift's shortest
    /// representation that reads back as the same double; only the exponent, if any, is spelled out.
    package static func writeDouble(_ v: Double, to w: inout ByteWriter) {
        guard v.isFinite else {
            w.put("0.0")
            return
        }
        var text = v.description  // "1234.5", "-1.5e-07", "1e+20": at most 24 bytes, kept inline without allocation
        text.withUTF8 { u in
            guard let e = u.firstIndex(of: UInt8(ascii: "e")) else {
                w.put(u)
                return
            }
            var i = 0
            if u[0] == UInt8(ascii: "-") {
                w.put(UInt8(ascii: "-"))
                i = 1
            }
            // Mantissa digits without the point (at most 17), and how many of them come before it.
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
            var digitCount = 0
            var integerDigits = 0
            withUnsafeMutableBytes(of: &digits) { d in
                var sawPoint = false
                while i < e {
                    if u[i] == UInt8(ascii: ".") {
                        sawPoint = true
                    } else if digitCount < d.count {
                        d[digitCount] = u[i]
                        digitCount += 1
                        if !sawPoint { integerDigits += 1 }
                    }
                    i += 1
                }
            }
            var exponent = 0
            var j = e + 1
            let negative = j < u.count && u[j] == UInt8(ascii: "-")
            if j < u.count, u[j] == UInt8(ascii: "-") || u[j] == UInt8(ascii: "+") { j += 1 }
            while j < u.count {
                exponent = exponent * 10 + Int(u[j] &- UInt8(ascii: "0"))
                j += 1
            }
            if negative { exponent = -exponent }

            withUnsafeBytes(of: &digits) { d in
                let mantissa = UnsafeBufferPointer(rebasing: d.bindMemory(to: UInt8.self)[..<digitCount])
                let point = integerDigits + exponent  // digits before the decimal point
                if point <= 0 {
                    w.put("0.")
                    w.putRepeated(UInt8(ascii: "0"), count: -point)
                    w.put(mantissa)
                } else if point >= digitCount {
                    w.put(mantissa)
                    w.putRepeated(UInt8(ascii: "0"), count: point - digitCount)
                    w.put(".0")
                } else {
                    w.put(UnsafeBufferPointer(rebasing: mantissa[..<point]))
                    w.put(UInt8(ascii: "."))
                    w.put(UnsafeBufferPointer(rebasing: mantissa[point...]))
                }
            }
        }
    }

    /// Writes `string` as XML character data: escapes markup and replaces what XML 1.0 forbids.
    package static func writeEscaped(_ string: String, to w: inout ByteWriter) {
        let wrote = string.utf8.withContiguousStorageIfAvailable { writeEscaped($0, to: &w) } != nil
        if wrote { return }
        var copy = string  // not contiguous UTF-8 (a bridged string): withUTF8 makes it so
        copy.withUTF8 { writeEscaped($0, to: &w) }
    }

    private static func writeEscaped(_ u: UnsafeBufferPointer<UInt8>, to w: inout ByteWriter) {
        var flushed = 0
        var i = 0
        let n = u.count
        while i < n {
            // Skip eight plain bytes at a time: none below '?' (markup, controls) and none 0xEF (lead byte of U+FFFE
            // and U+FFFF). Classic bit tricks: a byte below 0x3F, or a byte equal to 0xEF, sets its high bit.
            while i &+ 8 <= n {
                let x = UnsafeRawPointer(u.baseAddress! + i).loadUnaligned(as: UInt64.self)
                let ones: UInt64 = 0x0101_0101_0101_0101
                let highs: UInt64 = 0x8080_8080_8080_8080
                let below = (x &- ones &* 0x3F) & ~x & highs
                let y = x ^ (ones &* 0xEF)
                let equal = (y &- ones) & ~y & highs
                if below | equal != 0 { break }
                i &+= 8
            }
            guard i < n else { break }
            let b = u[i]
            // Everything above '>' is plain text, except the lead byte of U+FFFE and U+FFFF.
            if b > UInt8(ascii: ">") && b != 0xEF {
                i += 1
                continue
            }
            let replacement: StaticString
            var width = 1
            switch b {
            case UInt8(ascii: "&"): replacement = "&amp;"
            case UInt8(ascii: "<"): replacement = "&lt;"
            case UInt8(ascii: ">"): replacement = "&gt;"
            case 0x0D: replacement = "&#13;"
            case 0x00..<0x20 where b != 0x09 && b != 0x0A: replacement = "\u{FFFD}"
            case 0xEF where i + 2 < n && u[i + 1] == 0xBF && (u[i + 2] == 0xBE || u[i + 2] == 0xBF):
                replacement = "\u{FFFD}"
                width = 3
            default:
                i += 1
                continue
            }
            if flushed < i { w.put(UnsafeBufferPointer(rebasing: u[flushed..<i])) }
            w.put(replacement)
            i += width
            flushed = i
        }
        if flushed < n { w.put(UnsafeBufferPointer(rebasing: u[flushed..<n])) }
    }

    package static func writeBase64(_ bytes: [UInt8], to w: inout ByteWriter) {
        let n = bytes.count
        w.reserve((n + 2) / 3 * 4)
        Base64.alphabet.withUnsafeBufferPointer { a in
            bytes.withUnsafeBufferPointer { b in
                var i = 0
                while i + 3 <= n {
                    let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2])
                    w.put(a[Int(v >> 18 & 63)])
                    w.put(a[Int(v >> 12 & 63)])
                    w.put(a[Int(v >> 6 & 63)])
                    w.put(a[Int(v & 63)])
                    i += 3
                }
                if n - i == 1 {
                    let v = UInt32(b[i]) << 16
                    w.put(a[Int(v >> 18 & 63)])
                    w.put(a[Int(v >> 12 & 63)])
                    w.put("==")
                } else if n - i == 2 {
                    let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8
                    w.put(a[Int(v >> 18 & 63)])
                    w.put(a[Int(v >> 12 & 63)])
                    w.put(a[Int(v >> 6 & 63)])
                    w.put(UInt8(ascii: "="))
                }
            }
        }
    }
}

/// Writes the members of one `<struct>`; see ``XMLRPCEncoder/encodedStruct(capacity:_:)``.
package struct XMLRPCStructWriter: ~Copyable {
    private var w: ByteWriter

    init(capacity: Int) {
        w = ByteWriter(capacity: capacity)
        w.put("<struct>")
    }

    consuming func finish() -> [UInt8] {
        w.put("</struct>")
        return w.finish()
    }

    /// `name` is plain text (a literal of the caller's: not escaped).
    @inline(__always) private mutating func open(_ name: StaticString) {
        w.put("<member><name>")
        w.put(name)
        w.put("</name><value>")
    }

    package mutating func int(_ name: StaticString, _ v: Int64) {
        open(name)
        XMLRPCEncoder.writeInt(v, to: &w)
        w.put("</value></member>")
    }

    package mutating func string(_ name: StaticString, _ s: String) {
        open(name)
        w.put("<string>")
        XMLRPCEncoder.writeEscaped(s, to: &w)
        w.put("</string></value></member>")
    }

    package mutating func double(_ name: StaticString, _ v: Double) {
        open(name)
        w.put("<double>")
        XMLRPCEncoder.writeDouble(v, to: &w)
        w.put("</double></value></member>")
    }

    /// An array of strings.
    package mutating func strings<S: Sequence<String>>(_ name: StaticString, _ items: S) {
        open(name)
        w.put("<array><data>")
        for s in items {
            w.put("<value><string>")
            XMLRPCEncoder.writeEscaped(s, to: &w)
            w.put("</string></value>")
        }
        w.put("</data></array></value></member>")
    }

    /// Any value, under a name that is escaped.
    package mutating func value(_ name: String, _ v: XMLRPCValue) {
        w.put("<member><name>")
        XMLRPCEncoder.writeEscaped(name, to: &w)
        w.put("</name><value>")
        XMLRPCEncoder.write(v, to: &w)
        w.put("</value></member>")
    }
}

/// A growable byte buffer written through a pointer: one capacity check per write, no per-append uniqueness
/// checks. `finish()` hands the bytes over as an array.
package struct ByteWriter: ~Copyable {
    private var start: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    private(set) var count = 0

    package init(capacity: Int) {
        self.capacity = max(capacity, 64)
        start = .allocate(capacity: self.capacity)
    }

    deinit {
        start.deallocate()
    }

    consuming func finish() -> [UInt8] {
        [UInt8](UnsafeBufferPointer(start: start, count: count))
    }

    @inline(__always)
    package mutating func reserve(_ extra: Int) {
        if capacity &- count < extra { grow(extra) }
    }

    @inline(never)
    private mutating func grow(_ extra: Int) {
        let newCapacity = max(capacity * 2, count + extra)
        let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        bigger.initialize(from: start, count: count)
        start.deallocate()
        start = bigger
        capacity = newCapacity
    }

    @inline(__always)
    package mutating func put(_ byte: UInt8) {
        reserve(1)
        start[count] = byte
        count &+= 1
    }

    @inline(__always)
    package mutating func put(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let base = bytes.baseAddress else { return }
        reserve(bytes.count)
        (start + count).initialize(from: base, count: bytes.count)
        count &+= bytes.count
    }

    @inline(__always)
    package mutating func put(_ literal: StaticString) {
        literal.withUTF8Buffer { put($0) }
    }

    package mutating func putRepeated(_ byte: UInt8, count n: Int) {
        guard n > 0 else { return }
        reserve(n)
        (start + count).initialize(repeating: byte, count: n)
        count &+= n
    }

    /// Decimal digits of `v`, with a leading "-" when negative.
    package mutating func putDecimal(_ v: Int64) {
        reserve(20)
        if v < 0 { put(UInt8(ascii: "-")) }
        var magnitude = v.magnitude
        var digits = 1
        var rest = magnitude
        while rest >= 10 {
            rest /= 10
            digits += 1
        }
        var p = start + count + digits
        repeat {
            p -= 1
            p.pointee = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
            magnitude /= 10
        } while magnitude != 0
        count &+= digits
    }
}
