import CtdPluginAPI
import Synchronization
import Testing
import UIDResolver

/// A user database and a clock the tests control.
final class FakeSystem: Sendable {
    private let state = Mutex<(now: Double, calls: [UInt32], users: [UInt32: String], failing: String?)>(
        (1000, [], [1000: "alice", 1001: "bob"], nil))

    var now: Double {
        get { state.withLock { $0.now } }
        set { state.withLock { $0.now = newValue } }
    }
    var calls: [UInt32] { state.withLock { $0.calls } }
    func fail(_ why: String?) { state.withLock { $0.failing = why } }

    func lookup(_ uid: UInt32) -> UserLookupResult {
        state.withLock { s in
            s.calls.append(uid)
            if let why = s.failing { return .failed(why) }
            return s.users[uid].map(UserLookupResult.found) ?? .notFound
        }
    }

    func plugin() -> UIDResolverPlugin {
        UIDResolverPlugin(lookup: { self.lookup($0) }, clock: { self.now })
    }
}

final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var context: PluginContext { PluginContext { _, line in self.lines.withLock { $0.append(line) } } }
}

private func configured(_ values: [String: ConfigValue], system: FakeSystem = FakeSystem()) throws
    -> UIDResolverPlugin
{
    let plugin = system.plugin()
    try plugin.configure(PluginConfiguration(pluginName: "UIDResolver", values: values), context: LogLines().context)
    return plugin
}

private func configurationError(_ values: [String: ConfigValue]) -> String? {
    do {
        _ = try configured(values)
        return nil
    } catch let error as PluginError {
        return error.message
    } catch {
        return "\(error)"
    }
}

@Suite struct UIDMathTests {
    @Test func uid_withDefaultMask_takesTheLow16Bits() {
        let s = UIDResolverPlugin.Settings()
        #expect(s.mask == 0xFFFF && s.shift == 0)
        #expect(s.uid(forMark: 1000) == 1000)
        #expect(s.uid(forMark: 0x0001_03E8) == 1000)
        #expect(s.uid(forMark: 0xFFFF_FFFF) == 65535)
    }

    @Test func uid_whenMaskedValueIsZero_isAbsent() {
        let s = UIDResolverPlugin.Settings()
        #expect(s.uid(forMark: 0) == nil)
        #expect(s.uid(forMark: 0x0005_0000) == nil)
    }

    @Test(arguments: [
        (mask: UInt32(0xFFFF_0000), shift: UInt32(16), mark: UInt32(0x03E8_0007), uid: UInt32?.some(1000)),
        (mask: 0xFFFF_0000, shift: 16, mark: 0x0000_FFFF, uid: nil),
        (mask: 0x00FF_FF00, shift: 8, mark: 0xAB03_E8CD, uid: 1000),
        (mask: 0xFFFF_FFFF, shift: 0, mark: 0xFFFF_FFFF, uid: 4_294_967_295),
        (mask: 0xFFFF_FFFF, shift: 31, mark: 0x8000_0000, uid: 1),
        (mask: 0x0000_FFF0, shift: 4, mark: 0x0000_3E8F, uid: 0x3E8),
    ])
    func uid_withMaskAndShift_isMaskedThenShifted(mask: UInt32, shift: UInt32, mark: UInt32, uid: UInt32?) {
        var s = UIDResolverPlugin.Settings()
        s.mask = mask
        s.shift = shift
        #expect(s.uid(forMark: mark) == uid)
    }

    @Test func resolve_ofKnownUnknownAndZeroMarks_givesUidAndName() throws {
        let plugin = try configured(["mask": .integer(0xFFFF_0000), "shift": .integer(16)])
        #expect(try plugin.resolve(mark: 1000 << 16 | 0x42) == ["uid": .integer(1000), "username": .string("alice")])
        #expect(try plugin.resolve(mark: 1001 << 16) == ["uid": .integer(1001), "username": .string("bob")])
        #expect(try plugin.resolve(mark: 4242 << 16) == ["uid": .integer(4242), "username": .string("")])
        #expect(try plugin.resolve(mark: 0x0000_FFFF) == [:])
        #expect(try plugin.resolve(mark: 0) == [:])
    }

    @Test func resolve_ofBiggestUid_isPositive() throws {
        let plugin = try configured(["mask": .integer(0xFFFF_FFFF)])
        #expect(try plugin.resolve(mark: 0xFFFF_FFFF)["uid"] == .integer(4_294_967_295))
    }

    @Test func resolve_withUnmappedUid_showsTheNumberAsName() throws {
        let plugin = try configured(["unmapped": .string("uid")])
        #expect(try plugin.resolve(mark: 4242) == ["uid": .integer(4242), "username": .string("4242")])
        #expect(try plugin.resolve(mark: 1000)["username"] == .string("alice"))
    }

    @Test func plugin_metadataAndFields_areThoseTheHostExpects() {
        let plugin = FakeSystem().plugin()
        #expect(plugin.metadata.id == "resolver.uid")
        #expect(plugin.metadata.name == "UIDResolver")
        #expect(plugin.metadata.roles == [.fieldResolver])
        #expect(plugin.metadata.abiVersion == ctdPluginABIVersion)
        #expect(plugin.fields.map(\.name) == ["uid", "username"])
        #expect(plugin.healthProblem == nil)
    }
}

@Suite struct UIDResolverCacheTests {
    @Test func name_withinTTL_isLookedUpOnce() throws {
        let system = FakeSystem()
        let plugin = try configured(["cache_ttl": .integer(60)], system: system)
        for _ in 0..<5 { _ = try plugin.resolve(mark: 1000) }
        #expect(system.calls == [1000])
        system.now += 59.9
        _ = try plugin.resolve(mark: 1000)
        #expect(system.calls == [1000])
    }

    @Test func name_afterTTL_isLookedUpAgain() throws {
        let system = FakeSystem()
        let plugin = try configured(["cache_ttl": .double(2.5)], system: system)
        _ = try plugin.resolve(mark: 1000)
        system.now += 2.5
        _ = try plugin.resolve(mark: 1000)
        #expect(system.calls == [1000, 1000])
    }

    @Test func unknownUid_isCachedToo() throws {
        let system = FakeSystem()
        let plugin = try configured([:], system: system)
        for _ in 0..<3 { #expect(try plugin.resolve(mark: 4242)["username"] == .string("")) }
        #expect(system.calls == [4242])
        #expect(plugin.names.count == 1)
    }

    @Test func ttlZero_asksEveryTimeAndCachesNothing() throws {
        let system = FakeSystem()
        let plugin = try configured(["cache_ttl": .integer(0)], system: system)
        for _ in 0..<3 { _ = try plugin.resolve(mark: 1001) }
        #expect(system.calls == [1001, 1001, 1001])
        #expect(plugin.names.count == 0)
    }

    @Test func failingDatabase_reportsHealthKeepsUidAndRetriesSoon() throws {
        let system = FakeSystem()
        let plugin = try configured(["cache_ttl": .integer(600)], system: system)
        system.fail("Connection refused")
        #expect(try plugin.resolve(mark: 1000) == ["uid": .integer(1000), "username": .string("")])
        #expect(plugin.healthProblem?.contains("Connection refused") == true)
        _ = try plugin.resolve(mark: 1000)
        #expect(system.calls == [1000], "a failure is cached for a short while too")
        system.fail(nil)
        system.now += UserNameCache.failureRetrySeconds
        #expect(try plugin.resolve(mark: 1000)["username"] == .string("alice"))
        #expect(plugin.healthProblem == nil)
    }

    @Test func failingDatabase_keepsANameSeenBefore() throws {
        let system = FakeSystem()
        let plugin = try configured(["cache_ttl": .integer(10)], system: system)
        _ = try plugin.resolve(mark: 1001)
        system.fail("Timed out")
        system.now += 11
        #expect(try plugin.resolve(mark: 1001)["username"] == .string("bob"))
        #expect(plugin.healthProblem != nil)
    }

    @Test func failingDatabase_isLoggedOncePerOutage() throws {
        let system = FakeSystem()
        let plugin = system.plugin()
        let log = LogLines()
        try plugin.configure(
            PluginConfiguration(pluginName: "UIDResolver", values: ["cache_ttl": .integer(0)]), context: log.context)
        system.fail("Timed out")
        for mark: UInt32 in [1000, 1001, 1002, 1000] { _ = try plugin.resolve(mark: mark) }
        #expect(log.all.filter { $0.contains("Timed out") }.count == 1)
    }

    @Test func cache_underConcurrentCalls_staysConsistent() async throws {
        let system = FakeSystem()
        let plugin = try configured([:], system: system)
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for i in 0..<500 {
                        let mark = UInt32(1000 + (i + worker) % 4)
                        let fields = try? plugin.resolve(mark: mark)
                        #expect(fields?["uid"] == .integer(Int64(mark)))
                    }
                }
            }
        }
        #expect(plugin.names.count == 4)
        #expect(system.calls.count < 4 * 8 + 1)
    }
}

@Suite struct SystemLookupTests {
    @Test func systemLookup_ofRoot_findsRootThroughNSS() {
        #expect(UserNameCache.systemLookup(0) == .found("root"))
    }

    @Test func systemLookup_ofUnusedUid_isNotFoundRatherThanAnError() {
        #expect(UserNameCache.systemLookup(3_999_999_999) == .notFound)
    }

    @Test func monotonicSeconds_neverGoesBack() {
        let a = UserNameCache.monotonicSeconds()
        let b = UserNameCache.monotonicSeconds()
        #expect(a > 0 && b >= a)
    }
}

@Suite struct UIDResolverConfigurationTests {
    @Test func configure_withHexMaskAndShift_acceptsThem() throws {
        let s = try UIDResolverPlugin.settings(
            from: PluginConfiguration(
                pluginName: "UIDResolver",
                values: [
                    "mask": .integer(0xFFFF_0000), "shift": .integer(16), "cache_ttl": .double(1.5),
                    "unmapped": .string("uid"),
                ]))
        #expect(s.mask == 0xFFFF_0000 && s.shift == 16 && s.cacheTTL == 1.5 && s.unmapped == .uid)
    }

    @Test func configure_empty_usesTheDocumentedDefaults() throws {
        let s = try UIDResolverPlugin.settings(from: PluginConfiguration(pluginName: "UIDResolver"))
        #expect(s == UIDResolverPlugin.Settings())
        #expect(s.mask == 0xFFFF && s.shift == 0 && s.cacheTTL == 60 && s.unmapped == .empty)
    }

    @Test(arguments: [
        (["uid_mask": ConfigValue.integer(0xFFFF)], "'uid_mask'"),
        (["mask": .string("0xFFFF")], "'mask'"),
        (["mask": .integer(0)], "'mask'"),
        (["mask": .integer(-1)], "'mask'"),
        (["mask": .integer(0x1_0000_0000)], "'mask'"),
        (["shift": .integer(32)], "'shift'"),
        (["shift": .integer(-1)], "'shift'"),
        (["shift": .double(1)], "'shift'"),
        (["mask": .integer(0xFFFF), "shift": .integer(16)], "'shift'"),
        (["cache_ttl": .integer(-1)], "'cache_ttl'"),
        (["cache_ttl": .string("60s")], "'cache_ttl'"),
        (["cache_ttl": .double(.infinity)], "'cache_ttl'"),
        (["unmapped": .string("nobody")], "'unmapped'"),
        (["unmapped": .bool(true)], "'unmapped'"),
    ])
    func configure_withBadValue_failsNamingTheKeyAndPlugin(values: [String: ConfigValue], key: String) {
        let message = configurationError(values)
        #expect(message?.contains(key) == true, "\(message ?? "no error")")
        #expect(message?.contains("UIDResolver") == true, "\(message ?? "no error")")
    }

    @Test func configure_withMaskBitsBelowShift_warns() throws {
        let log = LogLines()
        try FakeSystem().plugin().configure(
            PluginConfiguration(pluginName: "UIDResolver", values: ["mask": .integer(0xFFFF), "shift": .integer(4)]),
            context: log.context)
        #expect(log.all.contains { $0.contains("discarded") })
    }
}
