import CtdPluginAPI
import CtdPluginTestKit
import Foundation
import PasswordFile
import Synchronization
import Testing

// The built libAuthSHA.so, loaded through the host's PluginLoader and called the way the host calls it: configure,
// authenticate, and reload on SIGHUP. Password files are written with the PasswordFile library, as `ctd passwd add`
// writes them (SHA-512-crypt: the cheapest modern scheme, so that the tests stay quick).

typealias ReloadableAuthenticator = any Authenticator & ReloadablePlugin

final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var log: @Sendable (PluginLogLevel, String) -> Void {
        { level, line in self.lines.withLock { $0.append("\(level.rawValue): \(line)") } }
    }
}

/// A password file in a directory of its own, removed at the end of the test.
final class PasswordFileUnderTest {
    let dir: String
    var path: String { dir + "/passwd" }

    init(_ users: [(String, String)]) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("authsha-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (user, password) in users { try add(user, password) }
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func add(_ user: String, _ password: String) throws {
        try PasswordFileEditor.addOrReplace(user: user, password: password, scheme: .sha512Crypt, path: path)
    }

    /// The `[plugin.AuthSHA]` section for this file, with `extra` keys.
    func section(_ extra: [String: ConfigValue] = [:]) -> [String: ConfigValue] {
        var values: [String: ConfigValue] = ["password_file": .string(path)]
        values.merge(extra) { _, new in new }
        return values
    }
}

private func unconfigured() throws -> ReloadableAuthenticator {
    try PluginUnderTest.instance("AuthSHA", as: ReloadableAuthenticator.self, role: .authenticator)
}

private func configured(_ values: [String: ConfigValue], log: LogLines = LogLines()) throws -> ReloadableAuthenticator {
    try PluginUnderTest.configured(
        "AuthSHA", as: ReloadableAuthenticator.self, role: .authenticator, values: values, log: log.log)
}

private func configuration(_ values: [String: ConfigValue]) -> PluginConfiguration {
    PluginConfiguration(pluginName: "AuthSHA", values: values)
}

private func login(_ user: String, _ password: String) -> LoginRequest {
    LoginRequest(arguments: [user, password], clientAddress: "127.0.0.1")
}

private func reason(_ result: AuthResult) -> String? {
    if case .rejected(let reason) = result { return reason }
    return nil
}

private func roles(_ table: [String: [String]]) -> ConfigValue {
    .table(table.mapValues { .array($0.map(ConfigValue.string)) })
}

private func configureError(_ values: [String: ConfigValue]) throws -> String {
    let plugin = try unconfigured()
    let error = try #require(throws: PluginError.self) {
        try plugin.configure(configuration(values), context: PluginContext { _, _ in })
    }
    return error.message
}

@Suite struct AuthSHALoginTests {
    let file: PasswordFileUnderTest

    init() throws {
        file = try PasswordFileUnderTest([("alice", "alice-secret"), ("bob", "bob-secret"), ("mallory", "m-secret")])
    }

    @Test func metadata_isAuthSHAAuthenticator() throws {
        let plugin = try unconfigured()
        #expect(plugin.metadata.id == "auth.sha")
        #expect(plugin.metadata.name == "AuthSHA")
        #expect(plugin.metadata.roles == [.authenticator])
        #expect(plugin.metadata.abiVersion == ctdPluginABIVersion)
        #expect(plugin.loginParameters == ["username", "password"])
    }

    @Test func authenticate_withGoodPassword_acceptsWithDefaultRoles() throws {
        let plugin = try configured(file.section(["default_roles": .array([.string("viewer"), .string("operator")])]))
        #expect(
            try plugin.authenticate(login("alice", "alice-secret"))
                == .accepted(Identity(user: "alice", roles: [.viewer, .operator])))
        #expect(plugin.healthProblem == nil)
    }

    @Test func authenticate_withoutDefaultRoles_grantsViewerOnly() throws {
        let plugin = try configured(file.section())
        #expect(
            try plugin.authenticate(login("bob", "bob-secret")) == .accepted(Identity(user: "bob", roles: [.viewer])))
    }

    @Test func authenticate_ofUserInRolesTable_grantsThoseRolesNotTheDefault() throws {
        let plugin = try configured(
            file.section([
                "default_roles": .array([.string("viewer")]),
                "roles": .table(["alice": .array([.string("admin"), .string("operator")]), "mallory": .array([])]),
            ]))
        #expect(
            try plugin.authenticate(login("alice", "alice-secret"))
                == .accepted(Identity(user: "alice", roles: [.admin, .operator])))
        #expect(
            try plugin.authenticate(login("bob", "bob-secret")) == .accepted(Identity(user: "bob", roles: [.viewer])))
        #expect(try reason(plugin.authenticate(login("mallory", "m-secret"))) == "no role granted to this user")
    }

    @Test func authenticate_withSingleRoleName_grantsIt() throws {
        let plugin = try configured(file.section(["roles": .table(["bob": .string("viewer")])]))
        #expect(
            try plugin.authenticate(login("bob", "bob-secret")) == .accepted(Identity(user: "bob", roles: [.viewer])))
    }

    @Test func authenticate_whenWrongPassword_rejects() throws {
        let plugin = try configured(file.section())
        let why = try #require(reason(plugin.authenticate(login("alice", "bob-secret"))))
        #expect(why == "wrong password")
        #expect(!why.contains("secret"))
    }

    @Test func authenticate_ofUnknownUser_rejects() throws {
        let plugin = try configured(file.section())
        #expect(try reason(plugin.authenticate(login("carol", "alice-secret"))) == "unknown user")
    }

    @Test func authenticate_withEmptyDefaultRolesAndNoRolesEntry_rejectsWithNoRoleGranted() throws {
        let log = LogLines()
        let plugin = try configured(file.section(["default_roles": .array([])]), log: log)
        #expect(try reason(plugin.authenticate(login("alice", "alice-secret"))) == "no role granted to this user")
        #expect(log.all.contains { $0.contains("nobody can log in") })
    }

    @Test func authenticate_withWrongArgumentCount_rejects() throws {
        let plugin = try configured(file.section())
        let result = try plugin.authenticate(LoginRequest(arguments: ["alice"], clientAddress: "::1"))
        #expect(reason(result)?.contains("expected 2 login arguments") == true)
    }

    @Test func authenticate_beforeConfigure_throws() throws {
        let plugin = try unconfigured()
        #expect(throws: PluginError.self) { try plugin.authenticate(login("alice", "alice-secret")) }
        #expect(plugin.healthProblem == "not configured")
    }

    @Test func authenticate_neverLogsPasswords() throws {
        let log = LogLines()
        let plugin = try configured(file.section(["roles": roles(["nobody-here": ["viewer"]])]), log: log)
        _ = try plugin.authenticate(login("alice", "alice-secret"))
        _ = try plugin.authenticate(login("alice", "typo-secret"))
        _ = try plugin.authenticate(login("carol", "carol-secret"))
        #expect(!log.all.isEmpty)
        for line in log.all { #expect(!line.contains("secret"), "log line \(line)") }
    }
}

@Suite struct AuthSHAConfigurationTests {
    let file: PasswordFileUnderTest

    init() throws { file = try PasswordFileUnderTest([("alice", "alice-secret")]) }

    @Test func configure_withRelativePasswordFile_fails() throws {
        let message = try configureError(["password_file": .string("etc/ctd/passwd")])
        #expect(message.contains("absolute path"), "\(message)")
        #expect(message.contains("etc/ctd/passwd"))
    }

    @Test func configure_withUnknownKey_fails() throws {
        let message = try configureError(file.section(["default_role": .string("viewer")]))
        #expect(message.contains("unknown key 'default_role'"), "\(message)")
    }

    @Test func configure_withoutPasswordFile_fails() throws {
        #expect(try configureError([:]).contains("needs 'password_file'"))
    }

    @Test func configure_withMissingFile_failsNamingIt() throws {
        let message = try configureError(["password_file": .string(file.dir + "/nope")])
        #expect(message.contains("cannot load the password file"), "\(message)")
        #expect(message.contains(file.dir + "/nope"), "\(message)")
    }

    @Test func configure_withUnknownRole_fails() throws {
        #expect(
            try configureError(file.section(["default_roles": .array([.string("root")])])).contains(
                "unknown role 'root'"))
        #expect(try configureError(file.section(["roles": roles(["alice": ["root"]])])).contains("roles.alice"))
        #expect(try configureError(file.section(["roles": .string("alice=admin")])).contains("'roles'"))
    }

    @Test func configure_withRolesForUsersNotInTheFile_warns() throws {
        let log = LogLines()
        _ = try configured(file.section(["roles": roles(["zed": ["admin"]])]), log: log)
        #expect(log.all.contains { $0.hasPrefix("warning:") && $0.contains("zed") }, "\(log.all)")
    }
}

@Suite struct AuthSHAReloadTests {
    @Test func reload_picksUpAUserAddedToTheFileAndARoleChange() throws {
        let file = try PasswordFileUnderTest([("alice", "alice-secret")])
        let plugin = try configured(file.section(["roles": roles(["alice": ["viewer"]])]))
        #expect(
            try plugin.authenticate(login("alice", "alice-secret"))
                == .accepted(Identity(user: "alice", roles: [.viewer])))

        try file.add("bob", "bob-secret")
        let changes = try plugin.reload(
            configuration(file.section(["roles": roles(["alice": ["admin"], "bob": ["viewer"]])])),
            context: PluginContext { _, _ in })

        #expect(changes.contains { $0.contains("1 -> 2") }, "\(changes)")
        #expect(changes.contains { $0.hasPrefix("roles ") && $0.contains("alice=admin") }, "\(changes)")
        #expect(
            try plugin.authenticate(login("alice", "alice-secret"))
                == .accepted(Identity(user: "alice", roles: [.admin])))
        #expect(
            try plugin.authenticate(login("bob", "bob-secret")) == .accepted(Identity(user: "bob", roles: [.viewer])))
    }

    @Test func reload_ofADefaultRolesChange_appliesAndReportsIt() throws {
        let file = try PasswordFileUnderTest([("alice", "alice-secret")])
        let plugin = try configured(file.section(["default_roles": .array([.string("operator")])]))
        let changes = try plugin.reload(
            configuration(file.section(["default_roles": .array([.string("viewer")])])),
            context: PluginContext { _, _ in })
        #expect(changes.contains("default_roles operator -> viewer"), "\(changes)")
        #expect(
            try plugin.authenticate(login("alice", "alice-secret"))
                == .accepted(Identity(user: "alice", roles: [.viewer])))
    }

    @Test func reload_withMissingFile_throwsAndKeepsTheOldUsers() throws {
        let file = try PasswordFileUnderTest([("alice", "alice-secret")])
        let plugin = try configured(file.section(["roles": roles(["alice": ["admin"]])]))
        let error = try #require(throws: PluginError.self) {
            try plugin.reload(
                configuration([
                    "password_file": .string(file.dir + "/moved-away"), "roles": roles(["alice": ["viewer"]]),
                ]),
                context: PluginContext { _, _ in })
        }
        #expect(error.message.contains(file.dir + "/moved-away"), "\(error)")
        #expect(
            try plugin.authenticate(login("alice", "alice-secret"))
                == .accepted(Identity(user: "alice", roles: [.admin])))
        #expect(plugin.healthProblem == nil)
    }

    @Test func reload_withBadSection_throwsAndKeepsTheOldSettings() throws {
        let file = try PasswordFileUnderTest([("alice", "alice-secret")])
        let plugin = try configured(file.section(["default_roles": .array([.string("viewer")])]))
        #expect(throws: PluginError.self) {
            try plugin.reload(
                configuration(file.section(["default_roles": .string("admin")])), context: PluginContext { _, _ in })
        }
        #expect(throws: PluginError.self) {
            try plugin.reload(
                configuration(file.section(["colour": .string("red")])), context: PluginContext { _, _ in })
        }
        #expect(
            try plugin.authenticate(login("alice", "alice-secret"))
                == .accepted(Identity(user: "alice", roles: [.viewer])))
    }
}
