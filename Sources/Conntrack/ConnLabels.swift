import Foundation
import NIOConcurrencyHelpers

/// A conntrack helper's name as a small interned value: flows carry a 16-bit index into a process-wide table of
/// the (few) names the kernel has reported, not a String each.
public struct HelperName: Hashable, Sendable, CustomStringConvertible {
    public let index: UInt16

    /// No helper.
    public static let none = HelperName(index: 0)

    private init(index: UInt16) { self.index = index }

    /// The value for `name`; "" is ``none``. Names are added to the table on first sight (a bounded set: the
    /// kernel's helper types; past 4096 distinct names, new ones are not kept and read as "?").
    public init(_ name: String) {
        if name.isEmpty {
            self = .none
            return
        }
        self = HelperName.table.withLockedValue { t in
            if let i = t.indexByName[name] { return HelperName(index: i) }
            guard t.names.count < HelperName.capacity else { return HelperName(index: HelperName.overflowIndex) }
            let i = UInt16(t.names.count)
            t.names.append(name)
            t.indexByName[name] = i
            return HelperName(index: i)
        }
    }

    /// The value of a name already seen, or nil (a filter on a helper nobody has: it can match nothing).
    public static func existing(_ name: String) -> HelperName? {
        if name.isEmpty { return HelperName.none }
        return table.withLockedValue { $0.indexByName[name].map { HelperName(index: $0) } }
    }

    public var name: String {
        if index == 0 { return "" }
        if index == HelperName.overflowIndex { return "?" }
        return HelperName.table.withLockedValue { Int(index) < $0.names.count ? $0.names[Int(index)] : "?" }
    }

    public var description: String { name }

    private static let capacity = 4096
    private static let overflowIndex = UInt16.max

    private struct Table {
        var names = [""]
        var indexByName: [String: UInt16] = [:]
    }

    private static let table = NIOLockedValueBox(Table())
}

/// Names for ct label bits, as iptables' connlabel match and `conntrack -l` read them from
/// `/etc/xtables/connlabel.conf`: lines "BIT NAME", `#` starts a comment. Without the file, labels are known by their
/// bit numbers only.
public struct ConnLabelMap: Sendable, Equatable {
    /// bit -> name, for the bits the file names.
    public private(set) var names: [Int: String] = [:]
    public private(set) var bitsByName: [String: Int] = [:]
    /// Where it was read from, or nil.
    public private(set) var path: String?

    public static let empty = ConnLabelMap()

    public init() {}

    /// Parses the file's text; lines that are not "BIT NAME" with BIT in 0..127 are skipped (the first name of a
    /// bit wins, as in libnetfilter_conntrack).
    public init(text: String, path: String? = nil) {
        self.path = path
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2, let bit = Int(words[0]), (0...127).contains(bit) else { continue }
            let name = String(words[1])
            if names[bit] == nil && bitsByName[name] == nil {
                names[bit] = name
                bitsByName[name] = bit
            }
        }
    }

    /// Reads `path`; a missing or unreadable file gives the empty map.
    public static func load(path: String) -> ConnLabelMap {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return .empty }
        return ConnLabelMap(text: text, path: path)
    }

    /// The name of `bit`, or its number as a string when the file does not name it.
    public func name(of bit: Int) -> String { names[bit] ?? String(bit) }

    /// A bit given by number ("5", 5) or by name.
    public func bit(named text: String) -> Int? {
        if let b = bitsByName[text] { return b }
        if let n = Int(text), (0...127).contains(n) { return n }
        return nil
    }

    /// The names the file defines, by bit.
    public var sortedNames: [String] { names.keys.sorted().map { names[$0]! } }
}
