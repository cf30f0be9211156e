import Conntrack
import CtdPluginAPI
import CtdRuntime
import Foundation
import Logging
import Testing
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
        let ids = (0..<200).map { _ in store.open(identity: alice, clientAddress: "127.0.0.1")!.id }
        #expect(Set(ids).count == 200)
        #expect(ids.allSatisfy { $0.count == 32 && $0.allSatisfy(\.isHexDigit) })
    }

    @Test func use_whenIdleLongerThanTimeout_expires() throws {
        let clock = FakeClock()
        let store = SessionStore(
            idleTimeout: 10, maxLifetime: 100, maxSessions: 10, clock: MonotonicClock { clock.now })
        let s = try #require(store.open(identity: alice, clientAddress: "127.0.0.1"))
        clock.advance(9)
        #expect(store.use(s.id)?.identity.user == "alice")
        clock.advance(9)
        #expect(store.use(s.id) != nil, "each use restarts the idle timer")
        clock.advance(10.5)
        #expect(store.use(s.id) == nil)
        #expect(store.use(s.id) == nil)
    }

    @Test func use_whenPastMaxLifetime_expiresEvenIfBusy() throws {
        let clock = FakeClock()
        let store = SessionStore(idleTimeout: 10, maxLifetime: 30, maxSessions: 10, clock: MonotonicClock { clock.now })
        let s = try #require(store.open(identity: alice, clientAddress: "127.0.0.1"))
        for _ in 0..<5 {
            clock.advance(5)
            #expect(store.use(s.id) != nil)
        }
        clock.advance(6)
        #expect(store.use(s.id) == nil)
    }

    @Test func close_whenLoggedOut_sessionIsGone() throws {
        let store = SessionStore(idleTimeout: 10, maxLifetime: 100, maxSessions: 10)
        let s = try #require(store.open(identity: alice, clientAddress: "127.0.0.1"))
        #expect(store.close(s.id))
        #expect(store.use(s.id) == nil)
        #expect(!store.close(s.id))
        #expect(store.use("not-a-session") == nil)
    }

    @Test func open_whenFull_dropsTheSameUsersLeastRecentlyUsed() throws {
        let clock = FakeClock()
        let store = SessionStore(
            idleTimeout: 100, maxLifetime: 1000, maxSessions: 2, clock: MonotonicClock { clock.now })
        let a = try #require(store.open(identity: alice, clientAddress: "a"))
        clock.advance(1)
        let b = try #require(store.open(identity: alice, clientAddress: "b"))
        clock.advance(1)
        _ = store.use(a.id)
        clock.advance(1)
        let c = try #require(store.open(identity: alice, clientAddress: "c"))
        #expect(store.use(a.id) != nil)
        #expect(store.use(b.id) == nil)
        #expect(store.use(c.id) != nil)
    }

    @Test func open_whenFullOfOtherUsers_refusesInsteadOfEvictingThem() throws {
        let store = SessionStore(idleTimeout: 100, maxLifetime: 1000, maxSessions: 2)
        let admin = try #require(store.open(identity: Identity(user: "admin", roles: [.admin]), clientAddress: "a"))
        let viewer = Identity(user: "eve", roles: [.viewer])
        let first = try #require(store.open(identity: viewer, clientAddress: "e"))
        // Full: eve may replace her own session, never the admin's.
        let second = try #require(store.open(identity: viewer, clientAddress: "e"))
        #expect(store.use(first.id) == nil && store.use(second.id) != nil)
        #expect(store.use(admin.id) != nil)
        #expect(store.open(identity: Identity(user: "mallory", roles: [.viewer]), clientAddress: "m") == nil)
        #expect(store.use(admin.id) != nil)
    }

    @Test func open_whenAUserHasTheirMaximum_endsTheirOldestOnly() throws {
        let clock = FakeClock()
        let store = SessionStore(
            idleTimeout: 100, maxLifetime: 1000, maxSessions: 100, maxSessionsPerUser: 2,
            clock: MonotonicClock { clock.now })
        let bob = try #require(store.open(identity: Identity(user: "bob", roles: [.viewer]), clientAddress: "b"))
        let a1 = try #require(store.open(identity: alice, clientAddress: "a"))
        clock.advance(1)
        let a2 = try #require(store.open(identity: alice, clientAddress: "a"))
        clock.advance(1)
        let a3 = try #require(store.open(identity: alice, clientAddress: "a"))
        #expect(store.use(a1.id) == nil && store.use(a2.id) != nil && store.use(a3.id) != nil)
        #expect(store.use(bob.id) != nil)
    }

    @Test func revoke_endsOnlyTheSessionsItIsToldTo() throws {
        let store = SessionStore(idleTimeout: 100, maxLifetime: 1000, maxSessions: 10)
        let a = try #require(store.open(identity: alice, clientAddress: "a"))
        let b = try #require(store.open(identity: Identity(user: "bob", roles: [.viewer]), clientAddress: "b"))
        let ended = store.revoke { $0.identity.user != "alice" }
        #expect(ended.map(\.id) == [a.id])
        #expect(store.use(a.id) == nil && store.use(b.id) != nil)
    }

    @Test func role_whenSeveralGranted_isTheHighest() throws {
        let store = SessionStore(idleTimeout: 10, maxLifetime: 100, maxSessions: 10)
        let s = try #require(
            store.open(identity: Identity(user: "root", roles: [.viewer, .admin]), clientAddress: "x"))
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
    func throttle(_ pair: Int, _ source: Int, _ user: Int, _ clock: FakeClock, capacity: Int = 1000) -> LoginThrottle {
        LoginThrottle(
            limits: .init(perPair: pair, perSource: source, perUser: user), window: 60, capacity: capacity,
            clock: MonotonicClock { clock.now })
    }

    @Test func check_whenOneUserFailsTooOftenFromOneSource_locksThatPairOnly() {
        let clock = FakeClock()
        let t = throttle(3, 100, 100, clock)
        for _ in 0..<3 {
            #expect(t.check(user: "admin", client: "192.0.2.1") == nil)
            t.failed(user: "admin", client: "192.0.2.1")
        }
        #expect(t.check(user: "admin", client: "192.0.2.1") == .pair)
        #expect(t.check(user: "bob", client: "192.0.2.1") == nil)
        #expect(t.check(user: "admin", client: "192.0.2.2") == nil)
        clock.advance(61)
        #expect(t.check(user: "admin", client: "192.0.2.1") == nil)
    }

    @Test func succeeded_ofAnotherUser_clearsNothing() {
        // The attack measured: 9 wrong passwords for admin, then one good login of a viewer, 30 times over.
        let clock = FakeClock()
        let t = throttle(10, 1000, 1000, clock)
        var refused = 0
        for _ in 0..<30 {
            for _ in 0..<9 {
                if t.check(user: "admin", client: "192.0.2.1") != nil {
                    refused += 1
                } else {
                    t.failed(user: "admin", client: "192.0.2.1")
                }
            }
            t.succeeded(user: "viewer", client: "192.0.2.1")
        }
        #expect(refused == 30 * 9 - 10, "only 10 guesses at admin may reach the authenticator")
    }

    @Test func check_whenIPv6AddressesRotateWithinA64_countsThemAsOneSource() {
        let clock = FakeClock()
        let t = throttle(1000, 5, 1000, clock)
        for i in 1...5 { t.failed(user: "u\(i)", client: "2001:db8:1:2::\(i)") }
        #expect(t.check(user: "new", client: "2001:db8:1:2:ffff::1") == .source)
        #expect(t.check(user: "new", client: "2001:db8:1:3::1") == nil)
        #expect(LoginThrottle.source("192.0.2.1") == "192.0.2.1")
    }

    @Test func check_whenOneUserFailsFromManySources_locksTheUser() {
        let clock = FakeClock()
        let t = throttle(1000, 1000, 4, clock)
        for i in 1...4 { t.failed(user: "admin", client: "198.51.100.\(i)") }
        #expect(t.check(user: "admin", client: "203.0.113.9") == .user)
        #expect(t.check(user: "alice", client: "203.0.113.9") == nil)
    }

    @Test func failed_pastCapacity_forgetsTheOldestNotEveryone() {
        let clock = FakeClock()
        let t = throttle(1, 0, 0, clock, capacity: 100)
        for i in 0..<150 {
            clock.advance(0.001)  // distinct times: "oldest" is well defined
            t.failed(user: "x", client: "10.0.\(i / 250).\(i % 250)")
        }
        #expect(t.rememberedKeys <= 100)
        // The oldest failures were forgotten, the newest are still counted (one failure locks a pair here).
        #expect(t.check(user: "x", client: "10.0.0.0") == nil)
        #expect(t.check(user: "x", client: "10.0.0.149") == .pair)
    }

    @Test func check_whenLimitsAreZero_neverRefuses() {
        let t = throttle(0, 0, 0, FakeClock())
        for _ in 0..<50 { t.failed(user: "a", client: "a") }
        #expect(t.check(user: "a", client: "a") == nil)
    }
}

struct FailedLoginRecorderTests {
    @Test func failure_recordsTheFirstOfAWindowAndSummarisesTheRest() {
        let clock = FakeClock()
        let r = FailedLoginRecorder(window: 60, clock: MonotonicClock { clock.now })
        #expect(r.failure(user: "admin", client: "192.0.2.1"))
        for i in 0..<999 { #expect(!r.failure(user: i % 2 == 0 ? "admin" : "root", client: "192.0.2.1")) }
        #expect(r.failure(user: "bob", client: "192.0.2.2"), "another source has its own window")
        #expect(r.due().isEmpty, "the window is still open")
        clock.advance(61)
        let due = r.due()
        #expect(due.count == 1)
        #expect(due.first?.count == 999 && due.first?.users == ["admin", "root"])
        #expect(r.failure(user: "admin", client: "192.0.2.1"), "a new window records its first failure")
    }

    @Test func due_all_atShutdown_summarisesOpenWindows() {
        let r = FailedLoginRecorder(window: 60, clock: MonotonicClock { 5 })
        _ = r.failure(user: "a", client: "192.0.2.1")
        _ = r.failure(user: "b", client: "192.0.2.1")
        #expect(r.due(all: true).map(\.count) == [1])
    }
}

struct LoginGateTests {
    @Test func pass_whenFull_refusesAtOnce() throws {
        let gate = LoginGate(limit: 1)
        let inner: Bool?? = try gate.pass { try gate.pass { true } }
        #expect(inner == .some(nil))
        #expect(try gate.pass { true } == true)
    }
}

struct PinnedSnapshotTests {
    @Test func pin_beyondTheMaximumOfGenerations_letsGoOfTheOldest() throws {
        let mirror = ConntrackMirror(hide: HidePolicy(), logger: Logger(label: "t"))
        let store = SessionStore(idleTimeout: 100, maxLifetime: 1000, maxSessions: 100, maxPinnedGenerations: 2)
        let ids = try (0..<3).map { i in
            try #require(store.open(identity: Identity(user: "u\(i)", roles: [.viewer]), clientAddress: "x")).id
        }
        var snaps: [MirrorSnapshot] = []
        for (i, id) in ids.enumerated() {
            mirror.apply(events: [
                ConntrackEvent(
                    kind: .new, fields: .all,
                    flow: Flow(
                        id: UInt32(i + 1), origSource: IPAddress("10.0.0.\(i + 1)")!,
                        origDestination: IPAddress("10.1.0.1")!))
            ])
            let snap = mirror.snapshot()
            snaps.append(snap)
            store.pin(id, snap)
        }
        #expect(store.pinnedGenerations == 2)
        let first = try #require(store.use(ids[0]))
        #expect(first.pinned == nil && first.lostPinnedSnapshot)
        #expect(store.use(ids[2])?.pinned?.generation == snaps[2].generation)
        // Sessions sharing one generation cost one table: many may pin it.
        for id in ids { store.pin(id, snaps[2]) }
        #expect(store.pinnedGenerations == 1)
        #expect(store.use(ids[0])?.lostPinnedSnapshot == false)
    }
}

struct LoginLaneTests {
    /// The authenticator runs on a login thread at nice 10; the caller's own priority is untouched.
    @Test func pass_runsTheBodyOnALoginThreadAtALowerPriority() throws {
        let gate = LoginGate(limit: 2)
        let mine = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        let seen = try gate.pass { () -> (Int32, Bool) in
            (getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0), Thread.isMainThread)
        }
        #expect((seen?.0 ?? 0) >= LoginGate.defaultNice && seen?.1 == false)
        #expect(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) == mine)
    }

    /// A throw inside the authenticator reaches the caller; many callers at once each get their own answer.
    @Test func pass_handsBackErrorsAndEachCallersOwnAnswer() throws {
        struct Boom: Error {}
        let gate = LoginGate(limit: 4)
        #expect(throws: Boom.self) { _ = try gate.pass { () throws -> Int in throw Boom() } }
        let lock = NSLock()
        nonisolated(unsafe) var answers: [Int] = []
        DispatchQueue.concurrentPerform(iterations: 200) { i in
            while true {
                // nil: the gate was full (4 inside); try again.
                if let v = try? gate.pass({ i * 3 }) {
                    lock.withLock { answers.append(v) }
                    return
                }
            }
        }
        #expect(lock.withLock { answers.sorted() } == (0..<200).map { $0 * 3 })
    }
}
