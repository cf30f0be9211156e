import Testing

@testable import Conntrack

struct FlowLayoutTests {
    /// The mirror's memory budget (docs/benchmark.md, "Memory per entry") rests on this stride.
    @Test func flow_stride_is176Bytes() {
        #expect(MemoryLayout<Flow>.stride == 176)
    }

    @Test func addresses_takeTheirFamilyFromL3proto_andRoundTrip() {
        let v6 = IPAddress("2001:db8::7")!
        let v4 = IPAddress("192.0.2.9")!
        var f = Flow(id: 1, origSource: v6, origDestination: v6, replySource: v6, replyDestination: v6)
        #expect(f.l3proto == 10)  // derived from the addresses when not given
        #expect(f.origSource == v6 && f.replyDestination == v6 && f.origSource.isIPv6)
        f.l3proto = 2
        f.origSource = v4
        f.replySource = v4
        #expect(f.origSource == v4 && f.replySource == v4 && !f.origSource.isIPv6)
        #expect(Flow(id: 2, origSource: v4).l3proto == 2)
        #expect(Flow(id: 3, l3proto: 10).origSource == IPAddress(high: 0, low: 0, isIPv6: true))
    }
}
