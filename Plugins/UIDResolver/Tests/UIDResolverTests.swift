import CtdPluginAPI
import CtdPluginTestKit
import Synchronization
import Testing

// The built libUIDResolver.so, loaded through the host's PluginLoader and asked the way the host asks it
// (`resolve(mark:)`), against this machine's real user database (NSS): daemon is uid 1, bin uid 2 and nobody uid
// 65534 on every Debian system; uids 4242 and 3999999999 have no entry. uid 0 (root) cannot be asked: a mark whose
// uid bits are 0 means "not authenticated".

final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var log: @Sendable (PluginLogLevel, String) -> Void { { _, line in self.lines.withLock { $0.append(line) } } }
}

private let unknownUid: UInt32 = 4242
private let unknownBigUid: UInt32 = 3_999_999_999

private func unconfigured() throws -> any FieldResolver {
    try PluginUnderTest.instance("UIDResolver", as: (any FieldResolver).self, role: .fieldResolver)
}

private func configured(_ values: [String: ConfigValue], log: LogLines = LogLines()) throws -> any FieldResolver {
    try PluginUnderTest.configured(
        "UIDResolver", as: (any FieldResolver).self, role: .fieldResolver, values: values, log: log.log)
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

private func fields(_ uid: UInt32, _ name: String) -> [String: FieldValue] {
    ["uid": .integer(Int64(uid)), "username": .string(name)]
}

@Suite struct UIDResolverResolveTests {
    @Test func plugin_metadataAndFields_areThoseTheHostExpects() throws {
        let plugin = try unconfigured()
        #expect(plugin.metadata.id == "resolver.uid")
        #expect(plugin.metadata.name == "UIDResolver")
        #expect(plugin.metadata.roles == [.fieldResolver])
        #expect(plugin.metadata.abiVersion == ctdPluginABIVersion)
        #expect(plugin.fields.map(\.name) == ["uid", "username"])
        #expect(plugin.healthProblem == nil)
    }

    @Test func resolve_withDefaultMask_takesTheLow16BitsAndNamesTheUser() throws {
        let plugin = try configured([:])
        #expect(try plugin.resolve(mark: 65534) == fields(65534, "nobody"))
        #expect(try plugin.resolve(mark: 0x0001_0001) == fields(1, "daemon"))
        #expect(try plugin.resolve(mark: 0xFFFF_FFFF) == ["uid": .integer(65535), "username": .string("")])
    }

    @Test func resolve_whenMaskedValueIsZero_givesNoFields() throws {
        let plugin = try configured([:])
        #expect(try plugin.resolve(mark: 0) == [:])
        #expect(try plugin.resolve(mark: 0x0005_0000) == [:])
    }

    @Test func resolve_ofKnownUnknownAndZeroMarks_givesUidAndName() throws {
        let plugin = try configured(["mask": .integer(0xFFFF_0000), "shift": .integer(16)])
        #expect(try plugin.resolve(mark: 65534 << 16 | 0x42) == fields(65534, "nobody"))
        #expect(try plugin.resolve(mark: 2 << 16) == fields(2, "bin"))
        #expect(try plugin.resolve(mark: unknownUid << 16) == fields(unknownUid, ""))
        #expect(try plugin.resolve(mark: 0x0000_FFFF) == [:])
        #expect(try plugin.resolve(mark: 0) == [:])
    }

    @Test(arguments: [
        (mask: Int64(0xFFFF_0000), shift: Int64(16), mark: UInt32(0x03E8_0007), uid: Int64?.some(1000)),
        (mask: 0xFFFF_0000, shift: 16, mark: 0x0000_FFFF, uid: nil),
        (mask: 0x00FF_FF00, shift: 8, mark: 0xAB03_E8CD, uid: 1000),
        (mask: 0xFFFF_FFFF, shift: 0, mark: 0xFFFF_FFFF, uid: 4_294_967_295),
        (mask: 0xFFFF_FFFF, shift: 31, mark: 0x8000_0000, uid: 1),
        (mask: 0x0000_FFF0, shift: 4, mark: 0x0000_3E8F, uid: 0x3E8),
    ])
    func resolve_withMaskAndShift_masksThenShifts(mask: Int64, shift: Int64, mark: UInt32, uid: Int64?) throws {
        let plugin = try configured(["mask": .integer(mask), "shift": .integer(shift)])
        let resolved = try plugin.resolve(mark: mark)
        #expect(resolved["uid"] == uid.map(FieldValue.integer))
        #expect((resolved["username"] != nil) == (uid != nil))
    }

    @Test func resolve_ofBiggestUid_isPositive() throws {
        let plugin = try configured(["mask": .integer(0xFFFF_FFFF)])
        #expect(try plugin.resolve(mark: 0xFFFF_FFFF)["uid"] == .integer(4_294_967_295))
    }

    @Test func resolve_ofUidWithoutEntry_isNotFoundRatherThanAnError() throws {
        let plugin = try configured(["mask": .integer(0xFFFF_FFFF)])
        #expect(try plugin.resolve(mark: unknownBigUid) == fields(unknownBigUid, ""))
        #expect(plugin.healthProblem == nil)
    }

    @Test func resolve_withUnmappedUid_showsTheNumberAsName() throws {
        let plugin = try configured(["unmapped": .string("uid")])
        #expect(try plugin.resolve(mark: unknownUid) == fields(unknownUid, "4242"))
        #expect(try plugin.resolve(mark: 65534)["username"] == .string("nobody"))
    }

    @Test func resolve_withTTLZero_asksEveryTimeAndStillAnswers() throws {
        let plugin = try configured(["cache_ttl": .integer(0)])
        for _ in 0..<3 {
            #expect(try plugin.resolve(mark: 1) == fields(1, "daemon"))
            #expect(try plugin.resolve(mark: unknownUid) == fields(unknownUid, ""))
        }
    }

    @Test func resolve_repeatedWithinTTL_keepsGivingTheSameAnswer() throws {
        let plugin = try configured(["cache_ttl": .integer(60)])
        for _ in 0..<5 {
            #expect(try plugin.resolve(mark: 2) == fields(2, "bin"))
            #expect(try plugin.resolve(mark: unknownUid) == fields(unknownUid, ""))
        }
        #expect(plugin.healthProblem == nil)
    }

    @Test func resolve_underConcurrentCalls_givesEachMarkItsOwnUser() async throws {
        let plugin = try configured([:])
        let expected: [UInt32: String] = [1: "daemon", 2: "bin", 65534: "nobody", unknownUid: ""]
        let marks = expected.keys.sorted()
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for i in 0..<500 {
                        let mark = marks[(i + worker) % marks.count]
                        let resolved = try? plugin.resolve(mark: mark)
                        #expect(resolved == fields(mark, expected[mark]!))
                    }
                }
            }
        }
        #expect(plugin.healthProblem == nil)
    }

    @Test func shutdown_thenResolve_stillAnswers() throws {
        let plugin = try configured([:])
        #expect(try plugin.resolve(mark: 65534) == fields(65534, "nobody"))
        plugin.shutdown()
        #expect(try plugin.resolve(mark: 65534) == fields(65534, "nobody"))
    }
}

@Suite struct UIDResolverConfigurationTests {
    @Test func configure_withHexMaskShiftTTLAndPolicy_appliesThem() throws {
        let log = LogLines()
        let plugin = try configured(
            [
                "mask": .integer(0xFFFF_0000), "shift": .integer(16), "cache_ttl": .double(1.5),
                "unmapped": .string("uid"),
            ], log: log)
        #expect(log.all.contains { $0.contains("uid = (mark & 0xFFFF0000) >> 16, names cached 1.5 s") }, "\(log.all)")
        #expect(try plugin.resolve(mark: unknownUid << 16 | 0xFFFF) == fields(unknownUid, "4242"))
    }

    @Test func configure_empty_usesTheDocumentedDefaults() throws {
        let log = LogLines()
        let plugin = try configured([:], log: log)
        #expect(log.all.contains { $0.contains("uid = (mark & 0x0000FFFF) >> 0, names cached 60.0 s") }, "\(log.all)")
        #expect(try plugin.resolve(mark: unknownUid) == fields(unknownUid, ""))
    }

    @Test func resolve_beforeConfigure_usesTheDefaults() throws {
        let plugin = try unconfigured()
        #expect(try plugin.resolve(mark: 0x0001_FFFE) == fields(65534, "nobody"))
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

    @Test func configure_withBadValue_keepsTheSettingsInForce() throws {
        let plugin = try configured(["mask": .integer(0xFFFF_0000), "shift": .integer(16)])
        #expect(throws: PluginError.self) {
            try plugin.configure(
                PluginConfiguration(pluginName: "UIDResolver", values: ["shift": .integer(32)]),
                context: PluginContext { _, _ in })
        }
        #expect(try plugin.resolve(mark: 65534 << 16)["username"] == .string("nobody"))
    }

    @Test func configure_withMaskBitsBelowShift_warns() throws {
        let log = LogLines()
        _ = try configured(["mask": .integer(0xFFFF), "shift": .integer(4)], log: log)
        #expect(log.all.contains { $0.contains("discarded") })
    }
}
