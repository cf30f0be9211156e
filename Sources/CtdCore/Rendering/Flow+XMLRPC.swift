import Conntrack
import CtdPluginAPI
import Foundation
import XMLRPC

extension Flow {
    /// The connection struct of `view`, `change` and the audit trail.
    ///
    /// Interoperability (docs/design.md, "What the client stacks do with integers"): addresses go out as strings,
    /// ids as decimal strings (as pyctd had them), counters as doubles (exact up to 2^53), and the unsigned 32-bit
    /// values pyctd frontends compare as integers (`mark`, and on IPv4 rows `orig_ipv4_src`/`orig_ipv4_dst` in
    /// host byte order) as `<int>` holding their 32-bit two's complement: every client stack reads that (`<i8>` is
    /// NULL in PHP; an unsigned value above 2^31-1 in `<int>` is a fault in xmlrpc-c). Clients send either form back.
    ///
    /// `start` (epoch seconds) and `age` (whole seconds at `wallNow`) are there only when the kernel recorded the
    /// start (`nf_conntrack_timestamp`); `labels` are the names `labelNames` gives the set bits (the bit number as
    /// a string for a bit it does not name); `helper` is "" without one.
    package func xmlrpcStruct(
        now: Double, wallNow: Double = Date().timeIntervalSince1970, labelNames: ConnLabelMap = .empty,
        extra: [(String, XMLRPCValue)] = []
    ) -> XMLRPCValue {
        var tree = RowTree()
        writeMembers(to: &tree, now: now, wallNow: wallNow, labelNames: labelNames)
        // The names ``writeMembers`` writes are distinct; a resolver's extra fields are checked.
        guard extra.isEmpty else { return .structure(XMLRPCStruct(tree.members + extra)) }
        return .structure(XMLRPCStruct(distinctNames: tree.members))
    }

    /// ``xmlrpcStruct(now:wallNow:labelNames:extra:)`` written straight to bytes: the same bytes its tree encodes to
    /// (a unit test compares them on random flows), without building the tree. A page of 100 rows built some 4,000
    /// values and freed them again for each `view`; this is the page's hot path.
    package func xmlrpcEncodedStruct(
        now: Double, wallNow: Double = Date().timeIntervalSince1970, labelNames: ConnLabelMap = .empty,
        extra: [(String, XMLRPCValue)] = []
    ) -> XMLRPCValue {
        // A resolver's field that repeats a name (a built-in one, or another resolver's) takes the first position:
        // the tree's rule, so the tree handles it. No allocation: a row has a few resolved fields at most.
        let repeats = extra.indices.contains { i in
            Self.memberNames.contains(extra[i].0) || extra[..<i].contains { $0.0 == extra[i].0 }
        }
        if repeats { return xmlrpcStruct(now: now, wallNow: wallNow, labelNames: labelNames, extra: extra) }
        return XMLRPCEncoder.encodedStruct(capacity: 2048) { m in
            writeMembers(to: &m, now: now, wallNow: wallNow, labelNames: labelNames)
            for (name, value) in extra { m.value(name, value) }
        }
    }

    /// The row's members, in order: the one list both forms (the tree and the bytes) are written from.
    @inline(__always)
    func writeMembers<Sink: RowMemberSink & ~Copyable>(
        to m: inout Sink, now: Double, wallNow: Double, labelNames: ConnLabelMap
    ) {
        m.string("id", String(id))
        m.string("l3proto", ConntrackNames.l3(l3proto))
        m.int("l3proto_num", Int64(l3proto))
        m.string("l4proto", ConntrackNames.l4(l4proto))
        m.int("l4proto_num", Int64(l4proto))
        m.string("orig_src", origSource.description)
        m.string("orig_dst", origDestination.description)
        m.int("orig_port_src", Int64(origSourcePort))
        m.int("orig_port_dst", Int64(origDestinationPort))
        m.string("repl_src", replySource.description)
        m.string("repl_dst", replyDestination.description)
        m.int("repl_port_src", Int64(replySourcePort))
        m.int("repl_port_dst", Int64(replyDestinationPort))
        m.int("mark", Self.twosComplement(mark))
        m.int("timeout", Int64(remainingTimeout(at: now)))
        m.int("status", Int64(status))
        m.strings("status_flags", ConntrackNames.statusNames(status))
        m.string("state", ConntrackNames.tcpState(tcpState))
        m.int("zone", Int64(zone))
        m.double("orig_bytes", Double(origBytes))
        m.double("orig_packets", Double(origPackets))
        m.double("repl_bytes", Double(replyBytes))
        m.double("repl_packets", Double(replyPackets))
        m.double("byte_rate", byteRate)
        if let age = age(at: wallNow) {
            m.double("start", start)
            m.int("age", age)
        }
        m.strings("labels", labelBits.lazy.map { labelNames.name(of: $0) })
        m.string("helper", helper.name)
        // pyctd's row fields, by the names of its filters.
        m.int("orig_l4proto", Int64(l4proto))
        if l3proto == 2 {
            m.int("orig_ipv4_src", Self.twosComplement(UInt32(truncatingIfNeeded: origSource.low)))
            m.int("orig_ipv4_dst", Self.twosComplement(UInt32(truncatingIfNeeded: origDestination.low)))
        }
        if l4proto == 1 || l4proto == 58 {
            m.int("icmp_type", Int64(icmpType))
            m.int("icmp_code", Int64(icmpCode))
            m.int("icmp_id", Int64(icmpID))
        }
    }

    /// Every name ``writeMembers(to:now:wallNow:labelNames:)`` may write: those of an IPv4 ICMP row with a start
    /// time, which takes every branch.
    static let memberNames: Set<String> = {
        var names = RowNames()
        Flow(id: 1, l3proto: 2, l4proto: 1, start: 1).writeMembers(to: &names, now: 0, wallNow: 2, labelNames: .empty)
        return names.names
    }()

    /// An unsigned 32-bit value as the `<int>` every client stack reads: values above 2^31-1 become negative.
    static func twosComplement(_ v: UInt32) -> Int64 { Int64(Int32(bitPattern: v)) }

    /// The plugin API's copy of this entry.
    package func connectionInfo(now: Double) -> ConnectionInfo {
        ConnectionInfo(
            id: id, l3proto: ConntrackNames.l3(l3proto), l4proto: l4proto,
            origSource: origSource.description, origDestination: origDestination.description,
            origSourcePort: origSourcePort, origDestinationPort: origDestinationPort,
            replySource: replySource.description, replyDestination: replyDestination.description,
            replySourcePort: replySourcePort, replyDestinationPort: replyDestinationPort,
            mark: mark, timeout: remainingTimeout(at: now), status: status, zone: zone)
    }
}

/// Where ``Flow/writeMembers(to:now:wallNow:labelNames:)`` writes a row: the byte writer of `view`'s pages
/// (``XMLRPCStructWriter``), the value tree of the other methods (``RowTree``), or the names alone (``RowNames``).
package protocol RowMemberSink: ~Copyable {
    mutating func int(_ name: StaticString, _ v: Int64)
    mutating func string(_ name: StaticString, _ s: String)
    mutating func double(_ name: StaticString, _ v: Double)
    mutating func strings<S: Sequence<String>>(_ name: StaticString, _ items: S)
}

extension XMLRPCStructWriter: RowMemberSink {}

/// A row as members of an ``XMLRPCValue`` struct.
struct RowTree: RowMemberSink {
    var members: [(String, XMLRPCValue)] = []

    init() { members.reserveCapacity(40) }

    mutating func int(_ name: StaticString, _ v: Int64) { members.append((name.description, .int(v))) }
    mutating func string(_ name: StaticString, _ s: String) { members.append((name.description, .string(s))) }
    mutating func double(_ name: StaticString, _ v: Double) { members.append((name.description, .double(v))) }
    mutating func strings<S: Sequence<String>>(_ name: StaticString, _ items: S) {
        members.append((name.description, .array(items.map { .string($0) })))
    }
}

/// The names a row writes.
struct RowNames: RowMemberSink {
    var names: Set<String> = []

    mutating func int(_ name: StaticString, _ v: Int64) { names.insert(name.description) }
    mutating func string(_ name: StaticString, _ s: String) { names.insert(name.description) }
    mutating func double(_ name: StaticString, _ v: Double) { names.insert(name.description) }
    mutating func strings<S: Sequence<String>>(_ name: StaticString, _ items: S) { names.insert(name.description) }
}
