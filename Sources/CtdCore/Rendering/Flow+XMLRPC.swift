import Conntrack
import CtdPluginAPI
import XMLRPC

extension Flow {
    /// The connection struct of `view`, `change` and the audit trail.
    ///
    /// Interoperability (docs/design.md, "What the client stacks do with integers"): addresses go out as strings, ids and marks (unsigned 32-bit) as decimal strings,
    /// counters as doubles (exact up to 2^53), so that PHP, Perl, Python and xmlrpc-c all decode every value.
    package func xmlrpcStruct(now: Double, extra: [(String, XMLRPCValue)] = []) -> XMLRPCValue {
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
            ("mark", .string(String(mark))),
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
        if icmp {
            members.append(("icmp_type", .int(Int64(icmpType))))
            members.append(("icmp_code", .int(Int64(icmpCode))))
            members.append(("icmp_id", .int(Int64(icmpID))))
        }
        members.append(contentsOf: extra)
        return .structure(XMLRPCStruct(members))
    }

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
