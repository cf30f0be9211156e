import Foundation

/// Positional parameters of one call, with typed accessors that fail with a -32602 fault naming the argument.
struct Params {
    let method: String
    let values: [XMLRPCValue]
    let names: [String]

    init(method: String, values: [XMLRPCValue], names: [String], required: Int) throws {
        self.method = method
        self.values = values
        self.names = names
        guard values.count >= required, values.count <= names.count else {
            let expected = required == names.count ? "\(required)" : "\(required) to \(names.count)"
            throw Fault.invalidParams(
                "\(method) takes \(expected) argument\(names.count == 1 ? "" : "s") (\(names.joined(separator: ", "))), \(values.count) given"
            )
        }
    }

    subscript(_ i: Int) -> XMLRPCValue? { i < values.count ? values[i] : nil }

    private func wrongType(_ i: Int, _ expected: String) -> Fault {
        Fault.invalidParams(
            "argument \(i + 1) of \(method) (\(names[i])) must be \(expected), not \(values[i].typeName)")
    }

    func string(_ i: Int) throws -> String {
        guard let v = self[i] else { throw Fault.invalidParams("\(method) needs its argument \(names[i])") }
        guard case .string(let s) = v else { throw wrongType(i, "a string") }
        return s
    }

    func optionalString(_ i: Int) throws -> String? {
        guard let v = self[i] else { return nil }
        switch v {
        case .string(let s): return s
        case .nil: return nil
        default: throw wrongType(i, "a string")
        }
    }

    /// An integer; numeric strings are accepted (Perl's RPC::XML sends numbers as strings and vice versa).
    func int(_ i: Int, default defaultValue: Int64) throws -> Int64 {
        guard let v = self[i] else { return defaultValue }
        switch v {
        case .int(let n): return n
        case .nil: return defaultValue
        case .string(let s):
            guard let n = Int64(s.trimmingCharacters(in: .whitespaces)) else { throw wrongType(i, "an integer") }
            return n
        default: throw wrongType(i, "an integer")
        }
    }

    /// A boolean; 0/1 integers and "true"/"false"/"0"/"1" strings are accepted.
    func bool(_ i: Int) throws -> Bool {
        guard let v = self[i] else { throw Fault.invalidParams("\(method) needs its argument \(names[i])") }
        switch v {
        case .bool(let b): return b
        case .int(0): return false
        case .int(1): return true
        case .string(let s):
            switch s.lowercased() {
            case "1", "true", "on", "yes": return true
            case "0", "false", "off", "no": return false
            default: throw wrongType(i, "a boolean")
            }
        default: throw wrongType(i, "a boolean")
        }
    }
}

/// Conversions of client-sent ids and 32-bit unsigned values: clients differ (FACTS.md), so a value may come as a
/// decimal or 0x-hex string, an int, an i8, or a negative int holding the two's complement of a value at or above
/// 2^31. The query engine's `mark` and `id` filters follow the same rules (`FlowQuery.uint32`).
enum UInt32Argument {
    /// An integer from -2^31 to 2^32-1; negatives are two's complement.
    static func from(integer n: Int64) -> UInt32? {
        guard n >= Int64(Int32.min), n <= Int64(UInt32.max) else { return nil }
        return UInt32(truncatingIfNeeded: n)
    }

    /// A decimal string with the range of `from(integer:)`, or a 0x-hexadecimal one up to 0xffffffff.
    static func from(text raw: String) -> UInt32? {
        let s = raw.trimmingCharacters(in: .whitespaces)
        if s.hasPrefix("0x") || s.hasPrefix("0X") { return UInt32(s.dropFirst(2), radix: 16) }
        return Int64(s).flatMap { from(integer: $0) }
    }

    static func parse(_ v: XMLRPCValue) -> UInt32? {
        switch v {
        case .int(let n): return from(integer: n)
        case .string(let s): return from(text: s)
        case .double(let d):
            guard d == d.rounded(), d >= 0, d <= Double(UInt32.max) else { return nil }
            return UInt32(d)
        default:
            return nil
        }
    }
}
