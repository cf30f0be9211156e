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
            let scratch = CanonicalScratch()
            let n = write(values, to: scratch)
            out.removeAll(keepingCapacity: true)
            out.append(contentsOf: UnsafeBufferPointer(start: scratch.base, count: n))
        }

        /// The `hash` of a row whose values are `values`, its canonical form built in `scratch`.
        func hash(_ values: [SQLValue], scratch: CanonicalScratch) throws -> String {
            let n = write(values, to: scratch)
            return try AuditChain.sha256Hex(UnsafeRawBufferPointer(start: scratch.base, count: n))
        }

        /// Writes the canonical form into `scratch` (grown to an upper bound of its size first) and returns its
        /// length. Written through a pointer: this runs for every row appended and every row verified, and
        /// `Array.append`'s uniqueness and capacity checks per field cost more than the SHA-256 (3 µs of a row's
        /// 4, measured on a 10,000-row batch).
        func write(_ values: [SQLValue], to scratch: CanonicalScratch) -> Int {
            var bound = AuditChain.domain.count
            for i in order {
                let valueBytes: Int
                switch values[i] {
                case .null: continue
                case .integer: valueBytes = 20
                case .real: valueBytes = 16
                case .text(let t): valueBytes = t.utf8.count
                case .blob(let b): valueBytes = b.count
                }
                // name "=" tag length ":" value "\n"; a length has at most 20 digits.
                bound += names[i].count + 2 + 20 + 1 + valueBytes + 1
            }
            scratch.reserve(bound)
            var w = CanonicalWriter(scratch.base)
            AuditChain.domain.withUnsafeBufferPointer { w.append($0) }
            for i in order {
                let value = values[i]
                let tag: UInt8
                switch value {
                case .null: continue
                case .integer: tag = UInt8(ascii: "i")
                case .real: tag = UInt8(ascii: "r")
                case .text: tag = UInt8(ascii: "t")
                case .blob: tag = UInt8(ascii: "b")
                }
                names[i].withUnsafeBufferPointer { w.append($0) }
                w.append(UInt8(ascii: "="))
                w.append(tag)
                switch value {
                case .null:
                    continue
                case .integer(let n):
                    let digits = AuditChain.decimalDigits(n.magnitude) + (n < 0 ? 1 : 0)
                    w.appendDecimal(UInt64(digits), digits: AuditChain.decimalDigits(UInt64(digits)))
                    w.append(UInt8(ascii: ":"))
                    if n < 0 { w.append(UInt8(ascii: "-")) }
                    w.appendDecimal(n.magnitude, digits: digits - (n < 0 ? 1 : 0))
                case .real(let d):
                    w.append(UInt8(ascii: "1"))
                    w.append(UInt8(ascii: "6"))
                    w.append(UInt8(ascii: ":"))
                    w.appendHex16(d.bitPattern)
                case .text(var t):
                    // withUTF8 hands over a buffer for small (inline) strings too.
                    t.withUTF8 { bytes in
                        w.appendDecimal(UInt64(bytes.count), digits: AuditChain.decimalDigits(UInt64(bytes.count)))
                        w.append(UInt8(ascii: ":"))
                        w.append(bytes)
                    }
                case .blob(let b):
                    w.appendDecimal(UInt64(b.count), digits: AuditChain.decimalDigits(UInt64(b.count)))
                    w.append(UInt8(ascii: ":"))
                    b.withUnsafeBufferPointer { w.append($0) }
                }
                w.append(UInt8(ascii: "\n"))
            }
            return w.count
        }
    }

    /// The number of decimal digits of `n` (1 for 0).
    @inline(__always) static func decimalDigits(_ n: UInt64) -> Int {
        var digits = 1
        var rest = n
        while rest >= 10 {
            rest /= 10
            digits += 1
        }
        return digits
    }

    /// The canonical form of a row given as (name, value) pairs.
    static func canonical(_ columns: [(name: String, value: SQLValue)]) -> [UInt8] {
        var out: [UInt8] = []
        Layout(names: columns.map(\.name)).canonical(columns.map(\.value), into: &out)
        return out
    }

    static let hexDigits = Array("0123456789abcdef".utf8)

    /// The `hash` a row with these columns must have.
    static func hash(_ columns: [(name: String, value: SQLValue)]) throws -> String {
        try sha256Hex(canonical(columns))
    }

    static func sha256Hex(_ bytes: [UInt8]) throws -> String {
        try bytes.withUnsafeBytes { try sha256Hex($0) }
    }

    static func sha256Hex(_ bytes: UnsafeRawBufferPointer) throws -> String {
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { digest in
            let rc = ccrypt_digest(Int32(CCRYPT_SHA256.rawValue), bytes.baseAddress, bytes.count, digest.baseAddress, 32)
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

/// Memory a canonical form is built in: grown when a row needs more, reused for the next row.
final class CanonicalScratch {
    private(set) var base: UnsafeMutablePointer<UInt8>
    private(set) var capacity: Int

    init(capacity: Int = 4096) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
    }

    deinit { base.deallocate() }

    /// Makes room for `bytes` (the previous content is not kept).
    func reserve(_ bytes: Int) {
        guard bytes > capacity else { return }
        base.deallocate()
        capacity = max(bytes, 2 * capacity)
        base = .allocate(capacity: capacity)
    }
}

/// Writes bytes at a pointer the caller made room behind (``CanonicalScratch/reserve(_:)`` with an upper bound).
struct CanonicalWriter {
    let base: UnsafeMutablePointer<UInt8>
    private(set) var count = 0

    init(_ base: UnsafeMutablePointer<UInt8>) { self.base = base }

    @inline(__always) mutating func append(_ byte: UInt8) {
        base[count] = byte
        count += 1
    }

    @inline(__always) mutating func append(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let from = bytes.baseAddress, !bytes.isEmpty else { return }
        (base + count).update(from: from, count: bytes.count)
        count += bytes.count
    }

    /// `n` in decimal ASCII, `digits` long (``AuditChain/decimalDigits(_:)`` of `n`).
    @inline(__always) mutating func appendDecimal(_ n: UInt64, digits: Int) {
        var rest = n
        var at = count + digits - 1
        repeat {
            base[at] = UInt8(ascii: "0") + UInt8(truncatingIfNeeded: rest % 10)
            rest /= 10
            at -= 1
        } while rest > 0
        count += digits
    }

    /// 16 lowercase hex digits, big-endian.
    @inline(__always) mutating func appendHex16(_ value: UInt64) {
        for k in 0..<16 {
            base[count + k] = AuditChain.hexDigits[Int((value >> UInt64(60 - 4 * k)) & 0xF)]
        }
        count += 16
    }
}
