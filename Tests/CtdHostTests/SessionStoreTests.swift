import CtdPluginAPI
import Foundation
import Testing

@testable import CtdHost

/// A clock the test moves by hand.
final class FakeClock: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 1000.0
    var now: Double { lock.withLock { value } }
    func advance(_ seconds: Double) { lock.withLock { value += seconds } }
}

struct SessionStoreTests {
    let alice = Identity(user: "alice", roles: [.operator])

    @Test func open_whenCalled_returns128BitHexIDs() {
        let store = SessionStore(idleTimeout: 10, maxLifetime: 100, maxSessions: 10)
        let ids = (0..<200).map { _ in store.open(identity: alice, clientAddress: "127.0.0.1").id }
        #expect(Set(ids).count == 200)
        #expect(ids.allSatisfy { $0.count == 32 && $0.allSatisfy(\.isHexDigit) })
    }

    @Test func use_whenIdleLongerThanTimeout_expires() {
        let clock = FakeClock()
        let store = SessionStore(idleTimeout: 10, maxLifetime: 100, maxSessions: 10, clock: { clock.now })
        let s = store.open(identity: alice, clientAddress: "127.0.0.1")
        clock.advance(9)
        #expect(store.use(s.id)?.identity.user == "alice")
        clock.advance(9)
        #expect(store.use(s.id) != nil, "each use restarts the idle timer")
        clock.advance(10.5)
        #expect(store.use(s.id) == nil)
        #expect(store.use(s.id) == nil)
    }

    @Test func use_whenPastMaxLifetime_expiresEvenIfBusy() {
        let clock = FakeClock()
        let store = SessionStore(idleTimeout: 10, maxLifetime: 30, maxSessions: 10, clock: { clock.now })
        let s = store.open(identity: alice, clientAddress: "127.0.0.1")
        for _ in 0..<5 {
            clock.advance(5)
            #expect(store.use(s.id) != nil)
        }
        clock.advance(6)
        #expect(store.use(s.id) == nil)
    }

    @Test func close_whenLoggedOut_sessionIsGone() {
        let store = SessionStore(idleTimeout: 10, maxLifetime: 100, maxSessions: 10)
        let s = store.open(identity: alice, clientAddress: "127.0.0.1")
        #expect(store.close(s.id))
        #expect(store.use(s.id) == nil)
        #expect(!store.close(s.id))
        #expect(store.use("not-a-session") == nil)
    }

    @Test func open_whenFull_dropsLeastRecentlyUsed() {
        let clock = FakeClock()
        let store = SessionStore(idleTimeout: 100, maxLifetime: 1000, maxSessions: 2, clock: { clock.now })
        let a = store.open(identity: alice, clientAddress: "a")
        clock.advance(1)
        let b = store.open(identity: alice, clientAddress: "b")
        clock.advance(1)
        _ = store.use(a.id)
        clock.advance(1)
        let c = store.open(identity: alice, clientAddress: "c")
        #expect(store.use(a.id) != nil)
        #expect(store.use(b.id) == nil)
        #expect(store.use(c.id) != nil)
    }

    @Test func role_whenSeveralGranted_isTheHighest() {
        let store = SessionStore(idleTimeout: 10, maxLifetime: 100, maxSessions: 10)
        let s = store.open(identity: Identity(user: "root", roles: [.viewer, .admin]), clientAddress: "x")
        #expect(s.role == .admin)
        #expect(Role.viewer < Role.operator && Role.operator < Role.admin)
    }
}

struct ArgumentTests {
    @Test(arguments: [
        (XMLRPCValue.string("3000000000"), UInt32(3_000_000_000)),
        (.int(3_000_000_000), 3_000_000_000),
        (.int(-1294967296), 3_000_000_000),
        (.int(-1), 4_294_967_295),
        (.string("-1"), 4_294_967_295),
        (.string("0x10"), 16),
        (.int(0), 0),
    ])
    func uint32_whenClientSendsAnyForm_roundTrips(value: XMLRPCValue, expected: UInt32) {
        #expect(UInt32Argument.parse(value) == expected)
    }

    @Test(arguments: [
        XMLRPCValue.string("4294967296"), .int(4_294_967_296), .int(-2_147_483_649), .string("abc"), .bool(true),
        .nil, .string(""),
    ])
    func uint32_whenOutOfRange_isRejected(value: XMLRPCValue) {
        #expect(UInt32Argument.parse(value) == nil)
    }
}

struct DaemonConfigTests {
    @Test func parse_whenSampleConfig_loadsDefaults() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../ctd.sample.toml")
        let c = try DaemonConfig.load(path: url.standardized.path)
        #expect(c.port == 4040)
        #expect(c.idleTimeout == 10)
        #expect(c.maxPageLength == 150)
        #expect(c.hide == ["127.0.0.0/8", "::1/128"])
        #expect(c.pluginSections["AuthSHA"]?["password_file"] == .string("/etc/ctd/passwd"))
    }

    @Test func parse_whenUnknownKey_namesIt() {
        #expect {
            try DaemonConfig.parse("[server]\nprot = 1\n")
        } throws: { ($0 as? DaemonConfig.Error)?.message.contains("'prot'") == true }
        #expect {
            try DaemonConfig.parse("[serveur]\n")
        } throws: { ($0 as? DaemonConfig.Error)?.message.contains("'serveur'") == true }
    }

    @Test func parse_whenValueOutOfRangeOrWrongType_fails() {
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[server]\nport = 70000\n") }
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[server]\nport = \"80\"\n") }
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[conntrack]\nhide = [\"10.0.0.0/33\"]\n") }
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[server]\ntls_certificate = \"/x\"\n") }
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[server\n") }
    }

    @Test func parse_whenPluginSections_keepsThemForPlugins() throws {
        let c = try DaemonConfig.parse(
            "[plugins]\nauth = \"AuthPAM\"\nenable = [\"UIDResolver\"]\n[plugin.UIDResolver]\nmask = 0xFFFF\n")
        #expect(c.authenticator == "AuthPAM")
        #expect(c.plugins == ["UIDResolver"])
        #expect(c.pluginSections["UIDResolver"]?["mask"] == .integer(0xFFFF))
    }
}

struct HidePolicyTests {
    @Test func hides_whenLoopbackOrOwnPort_hidesOnlyThose() {
        let policy = HidePolicy(blocks: HidePolicy.defaultBlocks.compactMap(CIDRBlock.init), ownTCPPorts: [4040])
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
        #expect(policy.hides(lo) && policy.hides(v6lo) && policy.hides(own))
        #expect(!policy.hides(other) && !policy.hides(udpSamePort))
    }
}

struct LoginThrottleTests {
    @Test func allows_whenTooManyFailuresInWindow_refusesThatAddressOnly() {
        let clock = FakeClock()
        let throttle = LoginThrottle(limit: 3, window: 60, clock: { clock.now })
        for _ in 0..<3 {
            #expect(throttle.allows("192.0.2.1"))
            throttle.failed("192.0.2.1")
        }
        #expect(!throttle.allows("192.0.2.1"))
        #expect(throttle.allows("192.0.2.2"))
        clock.advance(61)
        #expect(throttle.allows("192.0.2.1"))
    }

    @Test func succeeded_whenLoginWorks_clearsFailures() {
        let clock = FakeClock()
        let throttle = LoginThrottle(limit: 2, window: 60, clock: { clock.now })
        throttle.failed("a")
        throttle.succeeded("a")
        throttle.failed("a")
        #expect(throttle.allows("a"))
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

struct LoginThrottleConfigTests {
    @Test func allows_whenLimitIsZero_neverRefuses() {
        let throttle = LoginThrottle(limit: 0, window: 60)
        for _ in 0..<50 { throttle.failed("a") }
        #expect(throttle.allows("a"))
    }

    @Test func parse_whenThrottleSettingsGiven_readsThem() throws {
        let c = try DaemonConfig.parse("[sessions]\nlogin_failure_limit = 0\nlogin_failure_window = 5\n")
        #expect(c.loginFailureLimit == 0 && c.loginFailureWindow == 5)
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[sessions]\nlogin_failure_limit = -1\n") }
    }
}
