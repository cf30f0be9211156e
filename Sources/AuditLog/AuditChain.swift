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

    /// Remembers the sorted order of the last set of present columns: rows of a batch share it.
    struct OrderCache {
        var present: [Int] = []
        var sorted: [Int] = []
    }

    static func canonical(_ columns: [(name: String, value: SQLValue)]) -> [UInt8] {
        var order = OrderCache()
        return canonical(columns, order: &order)
    }

    static func canonical(_ columns: [(name: String, value: SQLValue)], order: inout OrderCache) -> [UInt8] {
        var presentIndices: [Int] = []
        presentIndices.reserveCapacity(columns.count)
        for (i, c) in columns.enumerated() where c.name != "hash" && c.value != .null { presentIndices.append(i) }
        if presentIndices != order.present {
            order.present = presentIndices
            order.sorted = presentIndices.sorted {
                columns[$0].name.utf8.lexicographicallyPrecedes(columns[$1].name.utf8)
            }
        }
        let present = order.sorted.map { columns[$0] }
        var out = domain
        out.reserveCapacity(512)
        for (name, value) in present {
            let tag: UInt8
            let bytes: [UInt8]
            switch value {
            case .null: continue
            case .integer(let n):
                tag = UInt8(ascii: "i")
                bytes = Array(String(n).utf8)
            case .real(let d):
                tag = UInt8(ascii: "r")
                bytes = Array(hex16(d.bitPattern).utf8)
            case .text(let s):
                tag = UInt8(ascii: "t")
                bytes = Array(s.utf8)
            case .blob(let b):
                tag = UInt8(ascii: "b")
                bytes = b
            }
            out.append(contentsOf: name.utf8)
            out.append(UInt8(ascii: "="))
            out.append(tag)
            out.append(contentsOf: String(bytes.count).utf8)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: bytes)
            out.append(UInt8(ascii: "\n"))
        }
        return out
    }

    /// The `hash` a row with these columns must have.
    static func hash(_ columns: [(name: String, value: SQLValue)]) throws -> String {
        try sha256Hex(canonical(columns))
    }

    static func sha256Hex(_ bytes: [UInt8]) throws -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        let rc = bytes.withUnsafeBytes {
            ccrypt_digest(Int32(CCRYPT_SHA256.rawValue), $0.baseAddress, $0.count, &digest, digest.count)
        }
        guard rc == CCRYPT_OK else { throw AuditError(.readFailed, "OpenSSL's libcrypto refused to compute SHA-256") }
        return hexString(digest)
    }

    static func hexString(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func hex16(_ value: UInt64) -> String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    static func isHash(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }
}
