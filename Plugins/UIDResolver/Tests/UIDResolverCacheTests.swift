import CtdPluginAPI
import CtdPluginTestKit
import Foundation
import Synchronization
import Testing

// The name cache of the built plugin, seen through `resolve(mark:)` against a user database the tests change:
// nss_wrapper (Debian package libnss-wrapper) serves getpwuid_r from a passwd file of the test's own. nss_wrapper is
// an LD_PRELOAD library, which must be in place when a process starts, so the parent test below runs this test binary
// again as a child process, under nss_wrapper, with a filter that selects only the `UIDResolverNSSWrapperChild` suite
// (disabled in any process that is not such a child). nss_wrapper rereads the file when it is replaced, so a name
// that does not follow a change comes from the plugin's cache.

private let environment = ProcessInfo.processInfo.environment
private let childPasswd = environment["CTD_TEST_NSS_WRAPPER_CHILD"] != nil ? environment["NSS_WRAPPER_PASSWD"] : nil

/// The child process's user database: the file `NSS_WRAPPER_PASSWD` names, rewritten (replaced) on every change.
private enum WrappedUsers {
    static let users = Mutex<[UInt32: String]>([:])

    static func set(_ uid: UInt32, _ name: String?) throws {
        try users.withLock { users in
            users[uid] = name
            var lines = ["root:x:0:0:root:/root:/bin/sh"]
            lines += users.keys.sorted().map { "\(users[$0]!):x:\($0):\($0):test user:/nonexistent:/bin/false" }
            let path = childPasswd!
            try (lines.joined(separator: "\n") + "\n").write(toFile: path + ".new", atomically: false, encoding: .utf8)
            guard rename(path + ".new", path) == 0 else { throw PluginError("rename onto \(path) failed") }
        }
    }
}

private func resolver(ttl: Double) throws -> any FieldResolver {
    try PluginUnderTest.configured(
        "UIDResolver", as: (any FieldResolver).self, role: .fieldResolver, values: ["cache_ttl": .double(ttl)])
}

private func name(_ plugin: any FieldResolver, _ uid: UInt32) throws -> FieldValue? {
    try plugin.resolve(mark: uid)["username"]
}

@Suite(.serialized, .enabled(if: childPasswd != nil, "runs only in the nss_wrapper child of the test below"))
struct UIDResolverNSSWrapperChild {
    @Test func resolve_withinTTL_keepsTheCachedName() throws {
        try WrappedUsers.set(5000, "alice")
        let plugin = try resolver(ttl: 60)
        #expect(try name(plugin, 5000) == .string("alice"))
        try WrappedUsers.set(5000, "alicia")
        try WrappedUsers.set(5001, "bob")
        #expect(try name(plugin, 5001) == .string("bob"), "the database sees the change")
        #expect(try name(plugin, 5000) == .string("alice"), "the cache answers within the TTL")
    }

    @Test func resolve_afterTTL_looksTheNameUpAgain() throws {
        try WrappedUsers.set(5002, "carol")
        let plugin = try resolver(ttl: 0.3)
        #expect(try name(plugin, 5002) == .string("carol"))
        try WrappedUsers.set(5002, "carla")
        #expect(try name(plugin, 5002) == .string("carol"))
        Thread.sleep(forTimeInterval: 0.5)
        #expect(try name(plugin, 5002) == .string("carla"))
    }

    @Test func resolve_ofUnknownUid_isCachedToo() throws {
        let plugin = try resolver(ttl: 60)
        #expect(try name(plugin, 5003) == .string(""))
        try WrappedUsers.set(5003, "dave")
        #expect(try name(plugin, 5003) == .string(""), "the absence is cached")
        #expect(try name(resolver(ttl: 60), 5003) == .string("dave"), "a fresh cache sees the new user")
        #expect(plugin.healthProblem == nil)
    }

    @Test func resolve_withTTLZero_seesEveryChange() throws {
        try WrappedUsers.set(5004, "erin")
        let plugin = try resolver(ttl: 0)
        #expect(try name(plugin, 5004) == .string("erin"))
        try WrappedUsers.set(5004, "erik")
        #expect(try name(plugin, 5004) == .string("erik"))
        try WrappedUsers.set(5004, nil)
        #expect(try name(plugin, 5004) == .string(""))
    }

    @Test func shutdown_forgetsTheCachedNames() throws {
        try WrappedUsers.set(5005, "frank")
        let plugin = try resolver(ttl: 60)
        #expect(try name(plugin, 5005) == .string("frank"))
        try WrappedUsers.set(5005, "frances")
        plugin.shutdown()
        #expect(try name(plugin, 5005) == .string("frances"))
    }
}

/// Where libnss_wrapper.so is; `NSS_WRAPPER_LIBRARY` overrides it.
private func nssWrapperLibrary() -> String? {
    if let override = environment["NSS_WRAPPER_LIBRARY"] { return override }
    return [
        "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so", "/usr/lib/aarch64-linux-gnu/libnss_wrapper.so",
        "/usr/lib/libnss_wrapper.so",
    ]
    .first { FileManager.default.fileExists(atPath: $0) }
}

@Test(.enabled(if: childPasswd == nil, "the child does not start another child"))
func nameCache_underNSSWrapper_behavesAsDocumented() throws {
    let library = try #require(nssWrapperLibrary(), "libnss_wrapper.so not found: apt-get install libnss-wrapper")
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("uidresolver-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try "root:x:0:0:root:/root:/bin/sh\n".write(toFile: dir + "/passwd", atomically: true, encoding: .utf8)
    try "root:x:0:\n".write(toFile: dir + "/group", atomically: true, encoding: .utf8)

    let child = Process()
    child.executableURL = URL(
        fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
    child.arguments = ["--testing-library", "swift-testing", "--filter", "UIDResolverNSSWrapperChild"]
    var env = environment
    env["LD_PRELOAD"] = library
    env["NSS_WRAPPER_PASSWD"] = dir + "/passwd"
    env["NSS_WRAPPER_GROUP"] = dir + "/group"
    env["CTD_TEST_NSS_WRAPPER_CHILD"] = "1"
    child.environment = env
    let output = Pipe()
    child.standardOutput = output
    child.standardError = output
    try child.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    child.waitUntilExit()
    #expect(child.terminationStatus == 0, "the nss_wrapper child failed:\n\(text)")
    // Not vacuous: the child ran the five tests of its suite.
    #expect(text.contains("Test run with 5 tests"), "the nss_wrapper child did not run its suite:\n\(text)")
}
