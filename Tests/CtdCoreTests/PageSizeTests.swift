import Testing

@testable import CtdCore
import Conntrack
import XMLRPC

/// xmlrpc-c rejects responses over 512 KiB by default (docs/design.md): the largest page must stay below it.
@Test func view_whenLargestPageOfWidestEntries_staysBelowXmlrpcCLimit() throws {
    let config = CoreSettings()
    let wide = IPAddress("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")!
    let flow = Flow(
        id: UInt32.max, l3proto: 10, l4proto: 58, tcpState: 3, icmpType: 255, icmpCode: 255, icmpID: 65535,
        zone: 65535, origSource: wide, origDestination: wide, replySource: wide, replyDestination: wide,
        origSourcePort: 65535, origDestinationPort: 65535, replySourcePort: 65535, replyDestinationPort: 65535,
        mark: UInt32.max, timeout: 4_000_000_000, status: 0xffff, origBytes: UInt64(1) << 52,
        origPackets: UInt64(1) << 52, replyBytes: UInt64(1) << 52, replyPackets: UInt64(1) << 52,
        byteRate: 123_456_789.123456)
    // Two resolved fields as UIDResolver adds them, with a long user name.
    let extra: [(String, XMLRPCValue)] = [
        ("uid", .int(4_294_967_294)), ("username", .string(String(repeating: "u", count: 64))),
    ]
    let page = (0..<config.maxPageLength).map { _ in flow.xmlrpcStruct(now: 0, extra: extra) }
    let body = XMLRPCEncoder.response(
        .structure(
            XMLRPCStruct([
                ("total", .int(250_000)), ("start", .int(0)), ("length", .int(Int64(page.count))),
                ("connections", .array(page)), ("generation", .string("18446744073709551615")),
                ("time", .double(1_800_000_000.123)), ("autorefresh", .bool(true)), ("accounting", .bool(false)),
                ("note", .string(String(repeating: "n", count: 200))),
            ])))
    #expect(body.count < 512 * 1024, "a full page is \(body.count) bytes")
}
