import Conntrack
import Foundation
import TestSupport
import Testing
import XMLRPC

@testable import CtdCore

/// `view`'s rows written straight to bytes (Flow.xmlrpcEncodedStruct) against the reference, the tree of
/// Flow.xmlrpcStruct encoded: the same bytes for random flows of every family and protocol, with and without start
/// times, labels (named and not), helpers, counters past 2^53, marks past 2^31, names and values that need escaping,
/// and a resolver's extra fields (plain, repeating a built-in name, repeating each other).
@Test func encodedRow_isTheBytesOfTheEncodedTree_forRandomFlows() throws {
    var rng = SplitMix(state: 0xC0FFEE)
    let labels = ConnLabelMap(text: "0 blocked\n5 vip\n64 <quarantine&co>\n127 last\n")
    let helpers = [HelperName.none, HelperName("ftp"), HelperName("sip"), HelperName("a<b>&\"c")]
    let addresses = [
        "10.0.0.1", "255.255.255.255", "0.0.0.0", "::1", "2001:db8::ff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
    ]
    .map { IPAddress($0)! }
    let extras: [[(String, XMLRPCValue)]] = [
        [], [("uid", .int(4_294_967_294)), ("username", .string("alice & <bob>"))], [("mark", .string("resolver's"))],
        [("x", .int(1)), ("x", .int(2))], [("rate", .double(1e-7)), ("nothing", .nil), ("flag", .bool(true))],
    ]
    for round in 0..<3000 {
        let six = rng.next() % 2 == 0
        func address() -> IPAddress {
            let a = addresses[Int(rng.next() % UInt64(addresses.count))]
            return a.isIPv6 == six ? a : (six ? addresses[3] : addresses[0])
        }
        let l4: UInt8 = [6, 17, 1, 58, 132, 0][Int(rng.next() % 6)]
        let flow = Flow(
            id: UInt32(truncatingIfNeeded: rng.next()), l3proto: six ? 10 : 2, l4proto: l4,
            tcpState: UInt8(truncatingIfNeeded: rng.next() % 12), icmpType: UInt8(truncatingIfNeeded: rng.next()),
            icmpCode: UInt8(truncatingIfNeeded: rng.next()), icmpID: UInt16(truncatingIfNeeded: rng.next()),
            zone: UInt16(truncatingIfNeeded: rng.next()), origSource: address(), origDestination: address(),
            replySource: address(), replyDestination: address(),
            origSourcePort: UInt16(truncatingIfNeeded: rng.next()),
            origDestinationPort: UInt16(truncatingIfNeeded: rng.next()),
            replySourcePort: UInt16(truncatingIfNeeded: rng.next()),
            replyDestinationPort: UInt16(truncatingIfNeeded: rng.next()),
            mark: UInt32(truncatingIfNeeded: rng.next()), timeout: UInt32(truncatingIfNeeded: rng.next() % 1_000_000),
            timeoutObservedAt: Double(rng.next() % 1000), status: UInt32(truncatingIfNeeded: rng.next()),
            origBytes: rng.next() >> (rng.next() % 64), origPackets: rng.next() >> 20, replyBytes: rng.next() % 1000,
            replyPackets: 0, byteRate: [0, 0.5, 123_456.789, 1e21, 3e-9][Int(rng.next() % 5)],
            start: rng.next() % 3 == 0 ? 0 : 1_700_000_000 + Double(rng.next() % 100_000_000) / 1000,
            labelsLow: rng.next() % 4 == 0 ? rng.next() : 0, labelsHigh: rng.next() % 4 == 0 ? rng.next() : 0,
            helper: helpers[Int(rng.next() % UInt64(helpers.count))])
        let now = Double(rng.next() % 2000)
        let wallNow = 1_800_000_000.0 + Double(rng.next() % 1000)
        let extra = extras[round % extras.count]
        let names = round % 2 == 0 ? labels : .empty
        var tree: [UInt8] = []
        XMLRPCEncoder.append(flow.xmlrpcStruct(now: now, wallNow: wallNow, labelNames: names, extra: extra), to: &tree)
        var direct: [UInt8] = []
        XMLRPCEncoder.append(
            flow.xmlrpcEncodedStruct(now: now, wallNow: wallNow, labelNames: names, extra: extra), to: &direct)
        // As text, so that a failure shows a readable diff.
        let (a, b) = (String(decoding: direct, as: UTF8.self), String(decoding: tree, as: UTF8.self))
        #expect(a == b, "round \(round)")
        if a != b { return }
    }
}

/// The encoded row decodes as the struct it stands for, inside a whole answer.
@Test func encodedRow_inAnAnswer_decodesAsTheTree() throws {
    let flow = Flow(
        id: 7, l4proto: 6, tcpState: 3, origSource: IPAddress("10.0.0.1")!, origDestination: IPAddress("10.0.0.2")!,
        origSourcePort: 1234, origDestinationPort: 80, mark: 0xFFFF_FFFF, timeout: 60, status: 14, byteRate: 2.5)
    let answer = XMLRPCValue.structure(["connections": .array([flow.xmlrpcEncodedStruct(now: 0, wallNow: 0)])])
    guard case .value(let decoded) = try XMLRPCDecoder.decodeResponse(XMLRPCEncoder.response(answer)) else {
        Issue.record("not a value")
        return
    }
    #expect(decoded == .structure(["connections": .array([flow.xmlrpcStruct(now: 0, wallNow: 0)])]))
}

/// The names a resolver's field must not repeat are derived from the one member list; they are the documented row
/// fields (README.md, `view`), every optional one included.
@Test func memberNames_areTheDocumentedRowFields() {
    let documented: Set<String> = [
        "id", "l3proto", "l3proto_num", "l4proto", "l4proto_num", "orig_src", "orig_dst", "orig_port_src",
        "orig_port_dst", "repl_src", "repl_dst", "repl_port_src", "repl_port_dst", "mark", "timeout", "status",
        "status_flags", "state", "zone", "orig_bytes", "orig_packets", "repl_bytes", "repl_packets", "byte_rate",
        "start", "age", "labels", "helper", "orig_l4proto", "orig_ipv4_src", "orig_ipv4_dst", "icmp_type",
        "icmp_code", "icmp_id",
    ]
    #expect(Flow.memberNames == documented)
}
