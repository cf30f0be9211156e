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
        let icmp = l4proto == 1 || l4proto == 58
        var members: [(String, XMLRPCValue)] = [
            ("id", .string(String(id))),
            ("l3proto", .string(ConntrackNames.l3(l3proto))),
            ("l3proto_num", .int(Int64(l3proto))),
            ("l4proto", .string(ConntrackNames.l4(l4proto))),
            ("l4proto_num", .int(Int64(l4proto))),
            ("orig_src", .string(origSource.description)),
            ("orig_dst", .string(origDestination.description)),
            ("orig_port_src", .int(Int64(origSourcePort))),
            ("orig_port_dst", .int(Int64(origDestinationPort))),
            ("repl_src", .string(replySource.description)),
            ("repl_dst", .string(replyDestination.description)),
            ("repl_port_src", .int(Int64(replySourcePort))),
            ("repl_port_dst", .int(Int64(replyDestinationPort))),
            ("mark", .int(Self.twosComplement(mark))),
            ("timeout", .int(Int64(remainingTimeout(at: now)))),
            ("status", .int(Int64(status))),
            ("status_flags", .array(ConntrackNames.statusNames(status).map { .string($0) })),
            ("state", .string(ConntrackNames.tcpState(tcpState))),
            ("zone", .int(Int64(zone))),
            ("orig_bytes", .double(Double(origBytes))),
            ("orig_packets", .double(Double(origPackets))),
            ("repl_bytes", .double(Double(replyBytes))),
            ("repl_packets", .double(Double(replyPackets))),
            ("byte_rate", .double(byteRate)),
        ]
        if let age = age(at: wallNow) {
            members.append(("start", .double(start)))
            members.append(("age", .int(age)))
        }
        members.append(("labels", .array(labelBits.map { .string(labelNames.name(of: $0)) })))
        members.append(("helper", .string(helper.name)))
        // pyctd's row fields, by the names of its filters.
        members.append(("orig_l4proto", .int(Int64(l4proto))))
        if l3proto == 2 {
            members.append(("orig_ipv4_src", .int(Self.twosComplement(UInt32(truncatingIfNeeded: origSource.low)))))
            members.append(
                ("orig_ipv4_dst", .int(Self.twosComplement(UInt32(truncatingIfNeeded: origDestination.low)))))
        }
        if icmp {
            members.append(("icmp_type", .int(Int64(icmpType))))
            members.append(("icmp_code", .int(Int64(icmpCode))))
            members.append(("icmp_id", .int(Int64(icmpID))))
        }
        // The names above are distinct; a resolver's extra fields are checked.
        guard extra.isEmpty else { return .structure(XMLRPCStruct(members + extra)) }
        return .structure(XMLRPCStruct(distinctNames: members))
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
        let icmp = l4proto == 1 || l4proto == 58
        return XMLRPCEncoder.encodedStruct(capacity: 2048) { m in
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
            m.int("orig_l4proto", Int64(l4proto))
            if l3proto == 2 {
                m.int("orig_ipv4_src", Self.twosComplement(UInt32(truncatingIfNeeded: origSource.low)))
                m.int("orig_ipv4_dst", Self.twosComplement(UInt32(truncatingIfNeeded: origDestination.low)))
            }
            if icmp {
                m.int("icmp_type", Int64(icmpType))
                m.int("icmp_code", Int64(icmpCode))
                m.int("icmp_id", Int64(icmpID))
            }
            for (name, value) in extra { m.value(name, value) }
        }
    }

    /// Every name ``xmlrpcStruct(now:wallNow:labelNames:extra:)`` may write.
    static let memberNames: Set<String> = [
        "id", "l3proto", "l3proto_num", "l4proto", "l4proto_num", "orig_src", "orig_dst", "orig_port_src",
        "orig_port_dst", "repl_src", "repl_dst", "repl_port_src", "repl_port_dst", "mark", "timeout", "status",
        "status_flags", "state", "zone", "orig_bytes", "orig_packets", "repl_bytes", "repl_packets", "byte_rate",
        "start", "age", "labels", "helper", "orig_l4proto", "orig_ipv4_src", "orig_ipv4_dst", "icmp_type",
        "icmp_code", "icmp_id",
    ]

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
