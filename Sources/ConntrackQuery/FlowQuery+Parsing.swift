import Conntrack
import Foundation

// Parsing and validation of `view(session, filters, order_by, order_dir, start, length)` parameters.
// Every rejection is a `FlowQueryError` with one sentence naming the offending key and value (the server answers
// it as invalid parameters, -32602).

extension FlowQuery {
    /// Builds a query from what the client sent.
    ///
    /// - Parameters:
    ///   - filters: filter key to value; a `.list` means "any of" (for `status`: "all of").
    ///   - orderBy: a name from ``FlowQuery/builtinOrderFields`` or a resolved field; nil or empty orders by id.
    ///   - orderDirection: `ASC` or `DESC`, case-insensitive; nil or empty means `ASC`.
    ///   - start: rows to skip (0 or more).
    ///   - length: rows to return, `0...maxLength`; 0 returns only the total.
    ///   - maxLength: the server's page size limit.
    ///   - resolvedFields: names of fields that resolver plugins add; usable as filters and `order_by`.
    ///     A built-in name always wins over a resolved field of the same name.
    ///   - labelNames: the names of ct label bits (connlabel.conf) the `label` filter accepts besides bit numbers.
    /// - Throws: ``FlowQueryError`` describing the first problem (keys are checked in sorted order).
    public static func parse(
        filters: [String: FilterInput], orderBy: String?, orderDirection: String?,
        start: Int64, length: Int64, maxLength: Int, resolvedFields: Set<String>, labelNames: ConnLabelMap = .empty
    ) throws -> FlowQuery {
        var parsed: [Filter] = []
        for key in filters.keys.sorted() {
            parsed.append(
                try parseFilter(key: key, input: filters[key]!, resolvedFields: resolvedFields, labelNames: labelNames))
        }
        // Cheap predicates first; the order within one cost class is deterministic (sorted keys).
        parsed = parsed.enumerated()
            .sorted { ($0.element.cost, $0.offset) < ($1.element.cost, $1.offset) }
            .map(\.element)

        let order = try parseOrderField(orderBy, resolvedFields: resolvedFields)
        let direction = try parseDirection(orderDirection)

        guard start >= 0 else {
            throw FlowQueryError("start must be 0 or more, not \(start).")
        }
        guard length >= 0 else {
            throw FlowQueryError("length must be 0 or more, not \(length).")
        }
        // pyctd accepted any length: one above the maximum is served as the maximum (the answer's length says how
        // many rows came).
        return FlowQuery(
            filters: parsed, orderField: order, direction: direction,
            start: Int(start), length: Int(min(length, Int64(maxLength))))
    }

    // MARK: - Order

    package static func parseOrderField(_ name: String?, resolvedFields: Set<String>) throws -> OrderField? {
        guard let name, !name.isEmpty else { return nil }
        if let field = builtinOrderMap[name] { return .builtin(field) }
        if resolvedFields.contains(name) { return .resolved(name) }
        let valid = (builtinOrderFields + resolvedFields.sorted()).joined(separator: ", ")
        throw FlowQueryError("cannot order by '\(name)'; valid order_by fields are: \(valid).")
    }

    package static func parseDirection(_ text: String?) throws -> Direction {
        guard let text, !text.isEmpty else { return .ascending }
        switch text.uppercased() {
        case "ASC": return .ascending
        case "DESC": return .descending
        default: throw FlowQueryError("order_dir must be ASC or DESC, not '\(text)'.")
        }
    }

    // MARK: - Filters

    /// The range filters: key, field, largest value.
    static let rangeKeys: [String: (field: RangeField, max: Double)] = [
        "timeout": (.timeout, Double(UInt32.max)), "orig_bytes": (.origBytes, 0x1p64), "repl_bytes": (.replBytes, 0x1p64),
        "bytes": (.bytes, 0x1p64), "packets": (.packets, 0x1p64), "byte_rate": (.byteRate, .greatestFiniteMagnitude),
        "orig_port_src": (.origPortSrc, 65535), "orig_port_dst": (.origPortDst, 65535),
        "repl_port_src": (.replPortSrc, 65535), "repl_port_dst": (.replPortDst, 65535), "port": (.anyPort, 65535),
        "age": (.age, Double(UInt32.max)),
    ]

    package static func parseFilter(
        key: String, input raw: FilterInput, resolvedFields: Set<String>, labelNames: ConnLabelMap = .empty
    ) throws -> Filter {
        let input = wholeNumbers(raw)
        if let (field, max) = rangeKeys[key], let bounds = try range(key, input, max: max) {
            return .range(field, min: bounds.min, max: bounds.max)
        }
        switch key {
        case "host":
            return .address(.any, anyOf: try anyOf(key, input) { try block(key, $0) })
        case "port":
            return .number(.anyPort, anyOf: try anyOf(key, input) { try unsigned(key, $0, max: 65535) })
        case "label":
            return .labels(anyOf: try anyOf(key, input) { try label(key, $0, names: labelNames) })
        case "helper":
            return .helper(anyOf: try anyOf(key, input) { try helper(key, $0) })
        case "orig_bytes", "repl_bytes", "bytes", "packets", "byte_rate", "age":
            // Counters compare as ranges only; one number is the range a-a.
            let v = try number(key, input, max: rangeKeys[key]!.max)
            return .range(rangeKeys[key]!.field, min: v, max: v)
        case "mark":
            return .number(.mark, anyOf: try anyOf(key, input) { try uint32(key, $0) })
        case "id":
            return .number(.id, anyOf: try anyOf(key, input) { try uint32(key, $0) })
        case "timeout":
            return .number(.timeout, anyOf: try anyOf(key, input) { try unsigned(key, $0, max: UInt32.max) })
        case "orig_l4proto", "l4proto":
            return .number(.l4proto, anyOf: try anyOf(key, input) { try l4proto(key, $0) })
        case "l3proto":
            return .number(.l3proto, anyOf: try anyOf(key, input) { try l3proto(key, $0) })
        case "orig_port_src":
            return .number(.origPortSrc, anyOf: try anyOf(key, input) { try unsigned(key, $0, max: 65535) })
        case "orig_port_dst":
            return .number(.origPortDst, anyOf: try anyOf(key, input) { try unsigned(key, $0, max: 65535) })
        case "repl_port_src":
            return .number(.replPortSrc, anyOf: try anyOf(key, input) { try unsigned(key, $0, max: 65535) })
        case "repl_port_dst":
            return .number(.replPortDst, anyOf: try anyOf(key, input) { try unsigned(key, $0, max: 65535) })
        case "zone":
            return .number(.zone, anyOf: try anyOf(key, input) { try unsigned(key, $0, max: 65535) })
        case "state":
            return .number(.state, anyOf: try anyOf(key, input) { try tcpState(key, $0) })
        case "orig_ipv4_src":
            return .address(.origSrc, anyOf: try anyOf(key, input) { try ipv4Block(key, $0) })
        case "orig_ipv4_dst":
            return .address(.origDst, anyOf: try anyOf(key, input) { try ipv4Block(key, $0) })
        case "orig_src":
            return .address(.origSrc, anyOf: try anyOf(key, input) { try block(key, $0) })
        case "orig_dst":
            return .address(.origDst, anyOf: try anyOf(key, input) { try block(key, $0) })
        case "repl_src":
            return .address(.replSrc, anyOf: try anyOf(key, input) { try block(key, $0) })
        case "repl_dst":
            return .address(.replDst, anyOf: try anyOf(key, input) { try block(key, $0) })
        case "status":
            // A list means "all of": every named flag must be present.
            var masks: [UInt32] = []
            for item in try items(key, input) { masks += try statusMasks(key, item) }
            return .status(allOf: masks)
        default:
            if resolvedFields.contains(key) {
                return .resolved(
                    key,
                    anyOf: try anyOf(key, input) { item in
                        switch item {
                        case .int(let v): return .integer(v)
                        case .string(let s): return .string(s)
                        case .list: throw nestedList(key)
                        case .double, .structure: throw notAValue(key, input)
                        }
                    })
            }
            let valid = (builtinFilterKeys + resolvedFields.sorted()).joined(separator: ", ")
            throw FlowQueryError("unknown filter '\(key)'; valid filters are: \(valid).")
        }
    }

    /// `input` with integral doubles as ints (clients send 5.0 for 5).
    static func wholeNumbers(_ input: FilterInput) -> FilterInput {
        switch input {
        case .double(let d) where d == d.rounded() && abs(d) < 1e18: return .int(Int64(d))
        case .list(let items): return .list(items.map(wholeNumbers))
        default: return input
        }
    }

    /// A range (`{"min": a, "max": b}`, either bound optional, or `"a-b"`), or nil when `input` is not written as
    /// a range (a plain value or list, compared for equality by the caller).
    static func range(_ key: String, _ input: FilterInput, max: Double) throws -> (min: Double?, max: Double?)? {
        var low: Double?
        var high: Double?
        switch input {
        case .structure(let members):
            for name in members.keys where name != "min" && name != "max" {
                throw FlowQueryError("\(key): a range has the members min and max, not '\(name.prefix(40))'.")
            }
            guard !members.isEmpty else { throw FlowQueryError("\(key): a range needs min, max or both.") }
            low = try members["min"].map { try number(key, $0, max: max) }
            high = try members["max"].map { try number(key, $0, max: max) }
        case .string(let text):
            let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, let a = Double(trimmed(String(parts[0]))), let b = Double(trimmed(String(parts[1])))
            else { return nil }
            low = try number(key, .double(a), max: max)
            high = try number(key, .double(b), max: max)
        default:
            return nil
        }
        if let low, let high, low > high {
            throw FlowQueryError("\(key): the range's min (\(Self.show(low))) is larger than its max (\(Self.show(high))).")
        }
        return (low, high)
    }

    /// A number from 0 to `max`, as an integer, a double or a decimal string.
    static func number(_ key: String, _ input: FilterInput, max: Double) throws -> Double {
        let value: Double?
        switch input {
        case .int(let v): value = Double(v)
        case .double(let d): value = d
        case .string(let s): value = Double(trimmed(s))
        case .list: throw nestedList(key)
        case .structure: throw FlowQueryError("\(key): a range cannot be one bound of another range.")
        }
        guard let v = value, v.isFinite else { throw FlowQueryError("\(key): \(show(input)) is not a number.") }
        guard v >= 0, v <= max else {
            throw FlowQueryError("\(key): \(show(input)) is out of range 0 to \(Self.show(max)).")
        }
        return v
    }

    private static func show(_ d: Double) -> String {
        d == d.rounded() && abs(d) < 1e18 ? String(Int64(d)) : String(d)
    }

    /// The scalar items of a filter value: one for a scalar, each element for a list (not nested, not empty).
    private static func items(_ key: String, _ input: FilterInput) throws -> [FilterInput] {
        guard case .list(let list) = input else { return [input] }
        guard !list.isEmpty else { throw FlowQueryError("\(key): the list of values is empty.") }
        for item in list { if case .list = item { throw nestedList(key) } }
        return list
    }

    /// The most values one filter may list ("any of"); each is matched in constant time, but parsing and
    /// memory grow with the list.
    public static let maximumValuesPerFilter = 10_000

    private static func anyOf<T: Hashable>(
        _ key: String, _ input: FilterInput, _ parse: (FilterInput) throws -> T
    ) throws -> [T] {
        let list = try items(key, input)
        guard list.count <= maximumValuesPerFilter else {
            throw FlowQueryError(
                "\(key): at most \(maximumValuesPerFilter) values may be listed in one filter, not \(list.count).")
        }
        var out: [T] = []
        var seen = Set<T>()
        for item in list {
            let value = try parse(item)
            if seen.insert(value).inserted { out.append(value) }
        }
        return out
    }

    private static func notAValue(_ key: String, _ input: FilterInput) -> FlowQueryError {
        if case .structure = input {
            return FlowQueryError("\(key): a range ({min, max}) is not allowed here; ranges work for \(rangeKeys.keys.sorted().joined(separator: ", ")).")
        }
        return FlowQueryError("\(key): \(show(input)) is not a whole number.")
    }

    private static func nestedList(_ key: String) -> FlowQueryError {
        FlowQueryError("\(key): a list of values cannot contain another list.")
    }

    private static func show(_ input: FilterInput) -> String {
        switch input {
        case .int(let v): return String(v)
        case .string(let s): return "'\(s)'"
        case .list(let l): return "[" + l.map(show).joined(separator: ", ") + "]"
        case .double(let d): return String(d)
        case .structure: return "a struct"
        }
    }

    private static func trimmed(_ s: String) -> String { s.trimmingCharacters(in: .whitespaces) }

    /// An unsigned 32-bit value (mark, id): an integer from -2^31 to 2^32-1 (negatives are two's complement, as
    /// XML-RPC i4 clients send large marks), or a decimal or 0x-hex string with the same range.
    package static func uint32(_ key: String, _ input: FilterInput) throws -> UInt32 {
        let value: UInt32?
        switch input {
        case .int(let v): value = UInt32Text.from(integer: v)
        case .string(let s): value = UInt32Text.from(text: s)
        case .list: throw nestedList(key)
        case .double, .structure: throw notAValue(key, input)
        }
        guard let value else {
            if case .string(let s) = input, Int64(trimmed(s)) == nil {
                throw FlowQueryError("\(key): \(show(input)) is not a number (decimal or 0x-hexadecimal).")
            }
            throw FlowQueryError("\(key): \(show(input)) is out of range for an unsigned 32-bit value.")
        }
        return value
    }

    /// A non-negative integer up to `max`, as an integer or a decimal string.
    package static func unsigned(_ key: String, _ input: FilterInput, max: UInt32) throws -> UInt32 {
        let value: Int64?
        switch input {
        case .int(let v): value = v
        case .string(let s): value = Int64(trimmed(s))
        case .list: throw nestedList(key)
        case .double, .structure: throw notAValue(key, input)
        }
        guard let v = value else { throw FlowQueryError("\(key): \(show(input)) is not a number.") }
        guard v >= 0, v <= Int64(max) else {
            throw FlowQueryError("\(key): \(show(input)) is out of range 0 to \(max).")
        }
        return UInt32(v)
    }

    package static func l4proto(_ key: String, _ input: FilterInput) throws -> UInt32 {
        switch input {
        case .int: return try unsigned(key, input, max: 255)
        case .string(let raw):
            let s = trimmed(raw).lowercased()
            let aliases: [String: UInt8] = ["icmp6": 58, "ipv6-icmp": 58, "udp-lite": 136]
            if let n = aliases[s] ?? ConntrackNames.l4Number(s) { return UInt32(n) }
            throw FlowQueryError(
                "\(key): \(show(input)) is not a protocol number (0 to 255) or name "
                    + "(tcp, udp, icmp, icmpv6, sctp, dccp, gre, igmp, udplite).")
        case .list: throw nestedList(key)
        case .double, .structure: throw notAValue(key, input)
        }
    }

    package static func l3proto(_ key: String, _ input: FilterInput) throws -> UInt32 {
        let number: UInt8?
        switch input {
        case .int(let v): number = (v == 2 || v == 10) ? UInt8(v) : nil
        case .string(let s): number = ConntrackNames.l3Number(trimmed(s))
        case .list: throw nestedList(key)
        case .double, .structure: throw notAValue(key, input)
        }
        guard let number else {
            throw FlowQueryError("\(key): \(show(input)) is not ipv4 (2) or ipv6 (10).")
        }
        return UInt32(number)
    }

    package static func tcpState(_ key: String, _ input: FilterInput) throws -> UInt32 {
        switch input {
        case .int(let v):
            if v >= 0, v < Int64(ConntrackNames.tcpStates.count) { return UInt32(v) }
        case .string(let s):
            if let n = ConntrackNames.tcpStateNumber(trimmed(s)) { return UInt32(n) }
            if let v = Int64(trimmed(s)) { return try tcpState(key, .int(v)) }
        case .list: throw nestedList(key)
        case .double, .structure: throw notAValue(key, input)
        }
        throw FlowQueryError(
            "\(key): \(show(input)) is not a TCP state; valid states are: "
                + ConntrackNames.tcpStates.joined(separator: ", ") + ".")
    }

    /// Any address or CIDR block, IPv4 or IPv6; an integer is an IPv4 address in host order.
    package static func block(_ key: String, _ input: FilterInput) throws -> CIDRBlock {
        switch input {
        case .int: return try ipv4Block(key, input)
        case .string(let s):
            if let block = CIDRBlock(trimmed(s)) { return block }
            throw FlowQueryError("\(key): \(show(input)) is not an IP address or CIDR block.")
        case .list: throw nestedList(key)
        case .double, .structure: throw notAValue(key, input)
        }
    }

    /// An IPv4 address or block: a dotted string (optionally /prefix), or the address as a host-order integer
    /// (negative values are two's complement: -1062731775 is 192.168.0.1).
    package static func ipv4Block(_ key: String, _ input: FilterInput) throws -> CIDRBlock {
        switch input {
        case .int(let v):
            guard v >= Int64(Int32.min), v <= Int64(UInt32.max) else {
                throw FlowQueryError("\(key): \(v) is out of range for an IPv4 address.")
            }
            return CIDRBlock(network: IPAddress(ipv4: UInt32(truncatingIfNeeded: v)), prefixLength: 32)
        case .string(let s):
            if let block = CIDRBlock(trimmed(s)), !block.network.isIPv6 { return block }
            throw FlowQueryError("\(key): \(show(input)) is not an IPv4 address.")
        case .list: throw nestedList(key)
        case .double, .structure: throw notAValue(key, input)
        }
    }

    /// A ct label: a bit number (0 to 127, as an integer or a string) or a name from connlabel.conf.
    package static func label(_ key: String, _ input: FilterInput, names: ConnLabelMap) throws -> Int {
        switch input {
        case .int(let v):
            if (0...127).contains(v) { return Int(v) }
            throw FlowQueryError("\(key): \(v) is out of range 0 to 127 for a label bit.")
        case .string(let raw):
            let s = trimmed(raw)
            if let bit = names.bit(named: s) { return bit }
            if Int(s) != nil {
                throw FlowQueryError("\(key): \(show(input)) is out of range 0 to 127 for a label bit.")
            }
            let known = names.sortedNames
            let where_ = names.path.map { " in \($0)" } ?? ""
            let valid =
                known.isEmpty
                ? "no label names are defined (no connlabel.conf\(where_)); use bit numbers 0 to 127"
                : "valid names\(where_) are: \(known.joined(separator: ", ")) (or bit numbers 0 to 127)"
            throw FlowQueryError("\(key): \(show(input)) is not a label; \(valid).")
        case .list: throw nestedList(key)
        case .double, .structure: throw notAValue(key, input)
        }
    }

    /// A helper name ("" means no helper).
    package static func helper(_ key: String, _ input: FilterInput) throws -> String {
        guard case .string(let s) = input else {
            if case .list = input { throw nestedList(key) }
            throw FlowQueryError("\(key): \(show(input)) is not a helper name (a string; \"\" means none).")
        }
        let name = trimmed(s)
        guard name.utf8.count < 16 else {
            throw FlowQueryError("\(key): '\(name.prefix(40))' is longer than a helper name can be (15 bytes).")
        }
        return name
    }

    /// A status flag name (or `NAT`) gives one mask; an integer gives one mask per set bit (all required).
    package static func statusMasks(_ key: String, _ input: FilterInput) throws -> [UInt32] {
        switch input {
        case .string(let s):
            if let mask = ConntrackNames.statusMask(trimmed(s)) { return [mask] }
            throw FlowQueryError(
                "\(key): \(show(input)) is not a status flag; valid flags are: NAT, "
                    + ConntrackNames.statusBits.joined(separator: ", ") + ".")
        case .int(let v):
            guard v > 0, v <= Int64(UInt32.max) else {
                throw FlowQueryError("\(key): \(v) is not a status bit mask (1 to \(UInt32.max)).")
            }
            return (0..<32).compactMap { bit in UInt64(v) & (1 << UInt64(bit)) != 0 ? UInt32(1) << UInt32(bit) : nil }
        case .list: throw nestedList(key)
        case .double, .structure: throw notAValue(key, input)
        }
    }
}
