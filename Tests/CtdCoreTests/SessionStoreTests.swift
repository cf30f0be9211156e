import CtdPluginAPI
import Foundation
import Testing
import CtdRuntime
import XMLRPC

@testable import CtdCore

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
        let store = SessionStore(idleTimeout: 10, maxLifetime: 100, maxSessions: 10, clock: MonotonicClock { clock.now })
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
        let store = SessionStore(idleTimeout: 10, maxLifetime: 30, maxSessions: 10, clock: MonotonicClock { clock.now })
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
        let store = SessionStore(idleTimeout: 100, maxLifetime: 1000, maxSessions: 2, clock: MonotonicClock { clock.now })
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

struct LoginThrottleTests {
    @Test func allows_whenTooManyFailuresInWindow_refusesThatAddressOnly() {
        let clock = FakeClock()
        let throttle = LoginThrottle(limit: 3, window: 60, clock: MonotonicClock { clock.now })
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
        let throttle = LoginThrottle(limit: 2, window: 60, clock: MonotonicClock { clock.now })
        throttle.failed("a")
        throttle.succeeded("a")
        throttle.failed("a")
        #expect(throttle.allows("a"))
    }
}

struct LoginThrottleConfigTests {
    @Test func allows_whenLimitIsZero_neverRefuses() {
        let throttle = LoginThrottle(limit: 0, window: 60)
        for _ in 0..<50 { throttle.failed("a") }
        #expect(throttle.allows("a"))
    }
}
