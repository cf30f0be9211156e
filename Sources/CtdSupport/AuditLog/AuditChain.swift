import CCrypt

/// The hash chain over the rows of `audit`.
///
/// `hash` of a row = lowercase hex SHA-256 of its canonical form, which covers every non-NULL column except `hash`
/// itself (so `seq` and `prev_hash`, the previous row's `hash`, are included). The first row's `prev_hash` is
/// ``genesis``. Canonical form, byte for byte:
///
/// ```
/// "ctd-audit-1\n"
/// then, for each non-NULL column other than `hash`, in ascending byte order of the column name:
///     name "=" tag length ":" value "\n"
/// ```
/// where `tag` is the storage class (`i` integer, `r` real, `t` text, `b` blob), `length` the decimal byte count
/// of `value`, and `value` is: integer in decimal ASCII; real as the 16 lowercase hex digits of its IEEE-754 bits
/// (big-endian); text as its UTF-8 bytes; blob as is. Skipping NULLs lets a later schema version add nullable
/// columns without changing the hash of any existing row; naming the columns binds each value to its column.
enum AuditChain {
    /// `prev_hash` of the first row: 64 zeros.
    static let genesis = String(repeating: "0", count: 64)
    static let domain = Array("ctd-audit-1\n".utf8)

    /// The column names of a row and the order their fields take in the canonical form. Built once per column set
    /// (a batch of appends, a verify run), not once per row.
    struct Layout {
        /// The UTF-8 bytes of each column name, by column index.
        let names: [[UInt8]]
        /// Column indices in ascending byte order of their names; `hash` is left out.
        let order: [Int]

        init(names: [String]) {
            self.names = names.map { Array($0.utf8) }
            self.order = names.indices.filter { names[$0] != "hash" }.sorted {
                names[$0].utf8.lexicographicallyPrecedes(names[$1].utf8)
            }
        }

        /// Writes the canonical form of a row whose values are `values` (by column index) into `out`.
        func canonical(_ values: [SQLValue], into out: inout [UInt8]) {
            out.removeAll(keepingCapacity: true)
            out.append(contentsOf: AuditChain.domain)
            for i in order {
                AuditChain.appendField(names[i], values[i], to: &out)
            }
        }
    }

    /// The canonical form of a row given as (name, value) pairs.
    static func canonical(_ columns: [(name: String, value: SQLValue)]) -> [UInt8] {
        var out: [UInt8] = []
        Layout(names: columns.map(\.name)).canonical(columns.map(\.value), into: &out)
        return out
    }

    /// `name "=" tag length ":" value "\n"`, or nothing for NULL.
    static func appendField(_ name: [UInt8], _ value: SQLValue, to out: inout [UInt8]) {
        let tag: UInt8
        switch value {
        case .null: return
        case .integer: tag = UInt8(ascii: "i")
        case .real: tag = UInt8(ascii: "r")
        case .text: tag = UInt8(ascii: "t")
        case .blob: tag = UInt8(ascii: "b")
        }
        out.append(contentsOf: name)
        out.append(UInt8(ascii: "="))
        out.append(tag)
        switch value {
        case .null:
            return
        case .integer(let n):
            var length: Int64 = n < 0 ? 2 : 1
            var rest = n.magnitude
            while rest >= 10 {
                rest /= 10
                length += 1
            }
            appendDecimal(length, to: &out)
            out.append(UInt8(ascii: ":"))
            appendDecimal(n, to: &out)
        case .real(let d):
            out.append(contentsOf: "16:".utf8)
            appendHex16(d.bitPattern, to: &out)
        case .text(var s):
            // withUTF8 hands over a buffer for small (inline) strings too; iterating `utf8` would go byte by byte.
            s.withUTF8 { bytes in
                appendDecimal(Int64(bytes.count), to: &out)
                out.append(UInt8(ascii: ":"))
                out.append(contentsOf: bytes)
            }
        case .blob(let b):
            appendDecimal(Int64(b.count), to: &out)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: b)
        }
        out.append(UInt8(ascii: "\n"))
    }

    /// Decimal ASCII, as `String(n)` writes it.
    static func appendDecimal(_ n: Int64, to out: inout [UInt8]) {
        if n < 0 { out.append(UInt8(ascii: "-")) }
        var magnitude = n.magnitude
        let start = out.count
        repeat {
            out.append(UInt8(ascii: "0") + UInt8(magnitude % 10))
            magnitude /= 10
        } while magnitude > 0
        out[start...].reverse()
    }

    /// 16 lowercase hex digits, big-endian.
    static func appendHex16(_ value: UInt64, to out: inout [UInt8]) {
        for shift in stride(from: 60, through: 0, by: -4) {
            out.append(hexDigits[Int((value >> UInt64(shift)) & 0xF)])
        }
    }

    static let hexDigits = Array("0123456789abcdef".utf8)

    /// The `hash` a row with these columns must have.
    static func hash(_ columns: [(name: String, value: SQLValue)]) throws -> String {
        try sha256Hex(canonical(columns))
    }

    static func sha256Hex(_ bytes: [UInt8]) throws -> String {
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { digest in
            let rc = bytes.withUnsafeBytes {
                ccrypt_digest(Int32(CCRYPT_SHA256.rawValue), $0.baseAddress, $0.count, digest.baseAddress, 32)
            }
            guard rc == CCRYPT_OK else {
                throw AuditError(.readFailed, "OpenSSL's libcrypto refused to compute SHA-256")
            }
            return String(unsafeUninitializedCapacity: 64) { hex in
                for (k, b) in digest.enumerated() {
                    hex[2 * k] = hexDigits[Int(b >> 4)]
                    hex[2 * k + 1] = hexDigits[Int(b & 0xF)]
                }
                return 64
            }
        }
    }

    static func isHash(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }
}
