import Testing

@testable import Conntrack

struct HidePolicyTests {
    @Test func hides_whenLoopbackOrOwnPort_hidesOnlyThose() {
        let policy = HidePolicy(
            blocks: HidePolicy.defaultBlocks.compactMap(CIDRBlock.init),
            ownEndpoints: [HidePolicy.Endpoint(address: IPAddress("192.0.2.2")!, port: 4040)])
        let lo = Flow(id: 1, origSource: IPAddress("127.0.0.1")!, origDestination: IPAddress("127.0.0.2")!)
        let v6lo = Flow(id: 2, l3proto: 10, origSource: IPAddress("::1")!, origDestination: IPAddress("::1")!)
        let own = Flow(
            id: 3, l4proto: 6, origSource: IPAddress("192.0.2.1")!, origDestination: IPAddress("192.0.2.2")!,
            origDestinationPort: 4040)
        let other = Flow(
            id: 4, l4proto: 6, origSource: IPAddress("192.0.2.1")!, origDestination: IPAddress("192.0.2.2")!,
            origDestinationPort: 80)
        let udpSamePort = Flow(
            id: 5, l4proto: 17, origSource: IPAddress("192.0.2.1")!, origDestination: IPAddress("192.0.2.2")!,
            origDestinationPort: 4040)
        // The same port on another host is not ctd's: a gateway must see and kill traffic to it.
        let samePortElsewhere = Flow(
            id: 6, l4proto: 6, origSource: IPAddress("192.0.2.1")!, origDestination: IPAddress("198.51.100.9")!,
            origDestinationPort: 4040)
        #expect(policy.hides(lo) && policy.hides(v6lo) && policy.hides(own))
        #expect(!policy.hides(other) && !policy.hides(udpSamePort) && !policy.hides(samePortElsewhere))
    }
}

struct IPAddressTests {
    @Test(arguments: [
        "0.0.0.0", "10.0.0.1", "127.0.0.1", "192.168.100.255", "255.255.255.255", "8.8.4.4", "100.64.10.9",
    ])
    func description_whenIPv4_roundTrips(text: String) {
        #expect(IPAddress(text)?.description == text)
    }

    @Test(arguments: ["::1", "fd00::1", "2001:db8::ff00:42:8329", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"])
    func description_whenIPv6_roundTrips(text: String) {
        #expect(IPAddress(text)?.description == text)
    }

    @Test func cidr_whenPrefixGiven_containsOnlyItsBlock() {
        let block = CIDRBlock("10.1.0.0/16")!
        #expect(block.contains(IPAddress("10.1.255.3")!))
        #expect(!block.contains(IPAddress("10.2.0.1")!))
        #expect(!block.contains(IPAddress("::ffff:10.1.0.1")!))
        let v6 = CIDRBlock("2001:db8::/32")!
        #expect(v6.contains(IPAddress("2001:db8:1::5")!))
        #expect(!v6.contains(IPAddress("2001:db9::1")!))
        #expect(CIDRBlock("10.0.0.0/33") == nil && CIDRBlock("nonsense") == nil)
    }
}
