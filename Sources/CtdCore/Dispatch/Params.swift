import ConntrackQuery
import Foundation
import XMLRPC

/// Positional parameters of one call, with typed accessors that fail with a -32602 fault naming the argument.
package struct Params {
    package let method: String
    package let values: [XMLRPCValue]
    package let names: [String]

    package init(method: String, values: [XMLRPCValue], names: [String], required: Int) throws {
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

    package subscript(_ i: Int) -> XMLRPCValue? { i < values.count ? values[i] : nil }

    private func wrongType(_ i: Int, _ expected: String) -> Fault {
        Fault.invalidParams(
            "argument \(i + 1) of \(method) (\(names[i])) must be \(expected), not \(values[i].typeName)")
    }

    package func string(_ i: Int) throws -> String {
        guard let v = self[i] else { throw Fault.invalidParams("\(method) needs its argument \(names[i])") }
        guard case .string(let s) = v else { throw wrongType(i, "a string") }
        return s
    }

    package func optionalString(_ i: Int) throws -> String? {
        guard let v = self[i] else { return nil }
        switch v {
        case .string(let s): return s
        case .nil: return nil
        default: throw wrongType(i, "a string")
        }
    }

    /// An integer; numeric strings are accepted (Perl's RPC::XML sends numbers as strings and vice versa).
    package func int(_ i: Int, default defaultValue: Int64) throws -> Int64 {
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
    package func bool(_ i: Int) throws -> Bool {
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

/// Client-sent ids and 32-bit unsigned values as XML-RPC values, by ``UInt32Text``'s rules (the query engine's
/// `mark` and `id` filters follow the same rules).
package enum UInt32Argument {
    package static func parse(_ v: XMLRPCValue) -> UInt32? {
        switch v {
        case .int(let n): return UInt32Text.from(integer: n)
        case .string(let s): return UInt32Text.from(text: s)
        case .double(let d):
            guard d == d.rounded(), d >= 0, d <= Double(UInt32.max) else { return nil }
            return UInt32(d)
        default:
            return nil
        }
    }
}
