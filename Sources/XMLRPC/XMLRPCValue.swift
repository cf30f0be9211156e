/// One XML-RPC value, as decoded from a request or to be encoded in a response.
///
/// Integers are always 64 bits wide here whatever tag carried them (`<int>`, `<i4>`, `<i8>`, `<ex:i8>`); the encoder
/// picks `<int>` or `<i8>` from the magnitude. `dateTime` keeps the ISO 8601 text exactly as sent (for example
/// `19980717T14:08:55`), because XML-RPC dates carry no time zone and every client formats them a little differently.
public enum XMLRPCValue: Equatable, Sendable {
    case int(Int64)
    case bool(Bool)
    case string(String)
    case double(Double)
    case dateTime(String)
    case base64([UInt8])
    /// Members keep their order for encoding; comparison ignores the order (see `XMLRPCStruct`).
    case structure(XMLRPCStruct)
    case array([XMLRPCValue])
    /// `<nil/>` (or `<ex:nil/>`), the common extension.
    case `nil`
    /// A value already encoded (the typed content of a `<value>`, well-formed): what the encoder writes as it is.
    /// Only in answers, never decoded from a request: `view` writes each connection of a page straight to bytes
    /// (``XMLRPCEncoder/encodedStruct(capacity:_:)``) instead of building a tree of 40 members and encoding it.
    case encoded(XMLRPCEncodedValue)
}

/// The bytes of a value's typed content (`<struct>…</struct>`) and its type's name.
public struct XMLRPCEncodedValue: Equatable, Sendable {
    public let bytes: [UInt8]
    public let typeName: String

    package init(bytes: [UInt8], typeName: String) {
        self.bytes = bytes
        self.typeName = typeName
    }
}

extension XMLRPCValue {
    /// The XML-RPC name of this value's type, for messages such as "expected int, got string".
    public var typeName: String {
        switch self {
        case .int: return "int"
        case .bool: return "boolean"
        case .string: return "string"
        case .double: return "double"
        case .dateTime: return "dateTime.iso8601"
        case .base64: return "base64"
        case .structure: return "struct"
        case .array: return "array"
        case .nil: return "nil"
        case .encoded(let e): return e.typeName
        }
    }

    public var intValue: Int64? {
        if case .int(let v) = self { return v }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    public var stringValue: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    public var doubleValue: Double? {
        if case .double(let v) = self { return v }
        return nil
    }

    public var dateTimeValue: String? {
        if case .dateTime(let v) = self { return v }
        return nil
    }

    public var base64Value: [UInt8]? {
        if case .base64(let v) = self { return v }
        return nil
    }

    public var structValue: XMLRPCStruct? {
        if case .structure(let v) = self { return v }
        return nil
    }

    public var arrayValue: [XMLRPCValue]? {
        if case .array(let v) = self { return v }
        return nil
    }

    public var isNil: Bool {
        if case .nil = self { return true }
        return false
    }

    /// The member called `name` when this is a struct; nil when it is not a struct or has no such member.
    public subscript(member name: String) -> XMLRPCValue? {
        if case .structure(let s) = self { return s[name] }
        return nil
    }
}

extension XMLRPCValue: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
}

/// `"10.0.0.\(n)"` is a string value too.
extension XMLRPCValue: ExpressibleByStringInterpolation {}

extension XMLRPCValue: ExpressibleByIntegerLiteral {
    public init(integerLiteral value: Int64) { self = .int(value) }
}

extension XMLRPCValue: ExpressibleByFloatLiteral {
    public init(floatLiteral value: Double) { self = .double(value) }
}

extension XMLRPCValue: ExpressibleByBooleanLiteral {
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

extension XMLRPCValue: ExpressibleByArrayLiteral {
    public init(arrayLiteral elements: XMLRPCValue...) { self = .array(elements) }
}

extension XMLRPCValue: ExpressibleByDictionaryLiteral {
    /// `["a": 1, "b": "x"]` is a struct with members in the order written; a repeated name keeps the last value.
    public init(dictionaryLiteral elements: (String, XMLRPCValue)...) {
        self = .structure(XMLRPCStruct(elements))
    }
}

/// The members of an XML-RPC `<struct>`: names are unique, order is kept.
///
/// Setting a name that is already present replaces its value in place, and building a struct from a list whose
/// names repeat does the same: the last value wins and keeps the first one's position (the decoder relies on it).
/// Lookups scan the members of a small struct and use a hash index once a struct grows past `indexThreshold`
/// members, so decoding a hostile request with thousands of members stays linear, while the structs of a result
/// page (about 25 members each) cost no extra allocation.
///
/// Two structs are equal when they have the same names with equal values, in any order.
public struct XMLRPCStruct: Equatable, Sendable, Sequence, ExpressibleByDictionaryLiteral {
    /// A name and its value. Unlabelled, so that the `[(String, XMLRPCValue)]` a caller builds becomes the storage
    /// without a copy.
    public typealias Member = (String, XMLRPCValue)

    /// Members in encoding order.
    public private(set) var members: [Member]
    /// Name → position in `members`; nil while the struct is small.
    private var index: [String: Int]?

    package static let indexThreshold = 32

    public init() {
        members = []
        index = nil
    }

    /// An empty struct with room for `minimumCapacity` members.
    public init(minimumCapacity: Int) {
        members = []
        members.reserveCapacity(minimumCapacity)
        index = nil
    }

    /// Members in the given order; a repeated name keeps the last value at the first position.
    public init<S: Sequence>(_ members: S) where S.Element == (String, XMLRPCValue) {
        self.init(Array(members))
    }

    /// Members in the given order; a repeated name keeps the last value at the first position.
    public init(_ list: [(String, XMLRPCValue)]) {
        // The daemon builds a struct like this for every connection of a page, with names that never repeat:
        // take the members as they are and only check, cheaply, that no name repeats.
        if list.count > Self.indexThreshold {
            var built = [String: Int](minimumCapacity: list.count)
            for (i, member) in list.enumerated() where built.updateValue(i, forKey: member.0) != nil {
                self.init(replacingDuplicatesIn: list)
                return
            }
            self.init(unchecked: list, index: built)
        } else if Self.hasRepeatedName(list) {
            self.init(replacingDuplicatesIn: list)
        } else {
            self.init(unchecked: list, index: nil)
        }
    }

    /// Members whose names the caller knows to be distinct (a fixed set of field names, as a connection's row):
    /// checked only in debug builds, and no hash index up to twice `indexThreshold` (lookups scan; a row of a page
    /// is encoded, not looked up). A row of 33 members used to build a dictionary; the check alone was about 3 % of
    /// a `view`'s CPU.
    public init(distinctNames list: [(String, XMLRPCValue)]) {
        guard list.count <= 2 * Self.indexThreshold else {
            self.init(list)
            return
        }
        assert(!Self.hasRepeatedName(list), "XMLRPCStruct(distinctNames:) given a repeated name")
        self.init(unchecked: list, index: nil)
    }

    private init(unchecked members: [Member], index: [String: Int]?) {
        self.members = members
        self.index = index
    }

    /// The slow path: a repeated name keeps its first position and its last value.
    private init(replacingDuplicatesIn list: [Member]) {
        self.init(minimumCapacity: list.count)
        for (name, value) in list { self[name] = value }
    }

    /// Pairwise, but comparing strings only when their hashes (FNV-1a of the UTF-8 bytes) match.
    private static func hasRepeatedName(_ list: [Member]) -> Bool {
        let n = list.count
        guard n > 1 else { return false }
        return withUnsafeTemporaryAllocation(of: UInt32.self, capacity: n) { hashes in
            for i in 0..<n {
                let name = list[i].0
                let hash =
                    name.utf8.withContiguousStorageIfAvailable { bytes in
                        bytes.reduce(2_166_136_261 as UInt32) { ($0 ^ UInt32($1)) &* 16_777_619 }
                    } ?? UInt32(truncatingIfNeeded: name.utf8.count)
                hashes[i] = hash
                for j in 0..<i where hashes[j] == hash && list[j].0 == name { return true }
            }
            return false
        }
    }

    public init(dictionaryLiteral elements: (String, XMLRPCValue)...) {
        self.init(elements)
    }

    public var count: Int { members.count }
    public var isEmpty: Bool { members.isEmpty }
    public var names: [String] { members.map(\.0) }

    public mutating func reserveCapacity(_ minimumCapacity: Int) {
        members.reserveCapacity(minimumCapacity)
    }

    /// The value of member `name`. Setting a new name appends it; setting an existing one replaces its value in
    /// place; setting nil removes the member.
    public subscript(name: String) -> XMLRPCValue? {
        get {
            guard let i = position(of: name) else { return nil }
            return members[i].1
        }
        set {
            if let i = position(of: name) {
                if let newValue {
                    members[i].1 = newValue
                } else {
                    members.remove(at: i)
                    index = nil
                    buildIndexIfLarge()
                }
            } else if let newValue {
                members.append((name, newValue))
                if index != nil {
                    index![name] = members.count - 1
                } else {
                    buildIndexIfLarge()
                }
            }
        }
    }

    public func makeIterator() -> IndexingIterator<[Member]> {
        members.makeIterator()
    }

    public static func == (lhs: XMLRPCStruct, rhs: XMLRPCStruct) -> Bool {
        guard lhs.members.count == rhs.members.count else { return false }
        for (name, value) in lhs.members {
            guard let other = rhs[name], other == value else { return false }
        }
        return true
    }

    private func position(of name: String) -> Int? {
        if let index { return index[name] }
        return members.firstIndex { $0.0 == name }
    }

    private mutating func buildIndexIfLarge() {
        guard members.count > Self.indexThreshold else { return }
        var built = [String: Int](minimumCapacity: members.count * 2)
        for (i, member) in members.enumerated() { built[member.0] = i }
        index = built
    }
}

extension XMLRPCStruct: CustomStringConvertible {
    /// `["a": int(1), "b": string("x")]`, in member order.
    public var description: String {
        guard !members.isEmpty else { return "[:]" }
        return "[" + members.map { "\($0.0.debugDescription): \($0.1)" }.joined(separator: ", ") + "]"
    }
}
