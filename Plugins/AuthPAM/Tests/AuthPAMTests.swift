import CtdPluginAPI
import Foundation
import Testing

// The AuthPAM plugin through the real libpam: pam_start_confdir with service files written by each test, using
// libpam-wrapper's pam_matrix module. Group lookups use this machine's real NSS (root is in group root, nobody's
// primary group is nogroup); the end-to-end test (Tests/e2e/test_authpam.py) fakes groups with nss_wrapper.

private func login(_ user: String, _ password: String) -> LoginRequest {
    LoginRequest(arguments: [user, password], clientAddress: "127.0.0.1")
}

private func section(
    _ dir: PAMTestDirectory, service: String = "ctd", _ extra: [String: ConfigValue] = [:]
) -> [String: ConfigValue] {
    var values: [String: ConfigValue] = ["service": .string(service), "confdir": .string(dir.path)]
    values.merge(extra) { _, new in new }
    return values
}

private func groups(_ names: String...) -> ConfigValue { .array(names.map { .string($0) }) }

private func reason(_ result: AuthResult) -> String? {
    if case .rejected(let reason) = result { return reason }
    return nil
}

@Suite struct AuthPAMLoginTests {
    let dir: PAMTestDirectory

    init() throws {
        dir = try PAMTestDirectory(users: [
            ("alice", "alice-secret", "ctd"),
            ("bob", "bob-secret", "some-other-service"),
            ("root", "root-secret", "ctd"),
            ("nobody", "nobody-secret", "ctd"),
        ])
        try dir.addService("ctd")
    }

    @Test func metadata_isAuthPAMAuthenticator() throws {
        let plugin = try AuthPAMUnderTest.make()
        #expect(plugin.metadata.id == "auth.pam")
        #expect(plugin.metadata.name == "AuthPAM")
        #expect(plugin.metadata.roles == [.authenticator])
        #expect(plugin.metadata.abiVersion == ctdPluginABIVersion)
        #expect(plugin.loginParameters == ["username", "password"])
    }

    @Test func authenticate_withGoodPassword_acceptsWithDefaultRole() throws {
        let plugin = try AuthPAMUnderTest.configured(section(dir, ["default_role": .string("operator")]))
        let result = try plugin.authenticate(login("alice", "alice-secret"))
        #expect(result == .accepted(Identity(user: "alice", roles: [.operator])))
        #expect(plugin.healthProblem == nil)
    }

    @Test func authenticate_withWrongPassword_rejects() throws {
        let plugin = try AuthPAMUnderTest.configured(section(dir, ["default_role": .string("operator")]))
        let why = try #require(reason(plugin.authenticate(login("alice", "not-her-password"))))
        #expect(why.hasPrefix("wrong password or unknown user"))
        #expect(!why.contains("not-her-password"))
    }

    @Test func authenticate_ofUnknownUser_rejectsLikeAWrongPassword() throws {
        let plugin = try AuthPAMUnderTest.configured(section(dir, ["default_role": .string("operator")]))
        let unknown = try #require(reason(plugin.authenticate(login("mallory", "alice-secret"))))
        let wrong = try #require(reason(plugin.authenticate(login("alice", "wrong"))))
        #expect(unknown == wrong)
    }

    @Test func authenticate_whenAccountManagementRefuses_rejectsAsAccountRefused() throws {
        // bob's password is right, but pam_matrix's account step allows him only on "some-other-service".
        let plugin = try AuthPAMUnderTest.configured(section(dir, ["default_role": .string("operator")]))
        let why = try #require(reason(plugin.authenticate(login("bob", "bob-secret"))))
        #expect(why == "account refused (pam_acct_mgmt: Permission denied)")
        let wrong = try #require(reason(plugin.authenticate(login("bob", "wrong"))))
        #expect(wrong.hasPrefix("wrong password or unknown user"))
    }

    @Test func authenticate_whenInNoGroupAndNoDefaultRole_rejectsWithNoRoleGranted() throws {
        let plugin = try AuthPAMUnderTest.configured(section(dir))
        let why = try #require(reason(plugin.authenticate(login("alice", "alice-secret"))))
        #expect(why.hasPrefix("no role granted"))
    }

    @Test func authenticate_grantsRolesOfTheUsersUnixGroups() throws {
        let plugin = try AuthPAMUnderTest.configured(
            section(
                dir,
                [
                    "viewer_groups": groups("nogroup", "root"), "operator_groups": groups(),
                    "admin_groups": groups("root"),
                ]))
        #expect(
            try plugin.authenticate(login("root", "root-secret"))
                == .accepted(Identity(user: "root", roles: [.viewer, .admin])))
        #expect(
            try plugin.authenticate(login("nobody", "nobody-secret"))
                == .accepted(Identity(user: "nobody", roles: [.viewer])))
    }

    @Test func authenticate_whenGroupsMatch_ignoresDefaultRole() throws {
        let plugin = try AuthPAMUnderTest.configured(
            section(dir, ["operator_groups": groups("root"), "default_role": .string("viewer")]))
        #expect(
            try plugin.authenticate(login("root", "root-secret"))
                == .accepted(Identity(user: "root", roles: [.operator])))
        #expect(
            try plugin.authenticate(login("alice", "alice-secret"))
                == .accepted(Identity(user: "alice", roles: [.viewer])))
    }

    /// A user name shown escaped in test reports (some contain NUL or escape sequences).
    struct UserName: CustomTestStringConvertible, Sendable {
        var value: String
        var testDescription: String { value.count > 20 ? "\(value.utf8.count) bytes" : value.debugDescription }
    }

    @Test(
        arguments: ["", String(repeating: "a", count: 257), "ali\u{0}ce", "alice\n", "\u{1b}[31m"].map(UserName.init))
    func authenticate_withInvalidUserName_rejectsBeforePAM(user: UserName) throws {
        let plugin = try AuthPAMUnderTest.configured(section(dir, ["default_role": .string("operator")]))
        let why = try #require(reason(plugin.authenticate(login(user.value, "alice-secret"))))
        #expect(why.hasPrefix("invalid user name"))
    }

    @Test func authenticate_withLongestUserName_reachesPAM() throws {
        let plugin = try AuthPAMUnderTest.configured(section(dir, ["default_role": .string("operator")]))
        let why = try #require(reason(plugin.authenticate(login(String(repeating: "a", count: 256), "x"))))
        #expect(why.hasPrefix("wrong password or unknown user"))
    }

    @Test func authenticate_withNULInPassword_rejects() throws {
        let plugin = try AuthPAMUnderTest.configured(section(dir, ["default_role": .string("operator")]))
        let why = try #require(reason(plugin.authenticate(login("alice", "alice-secret\u{0}x"))))
        #expect(why.contains("NUL"))
    }

    @Test func authenticate_withWrongArgumentCount_rejects() throws {
        let plugin = try AuthPAMUnderTest.configured(section(dir, ["default_role": .string("operator")]))
        let result = try plugin.authenticate(LoginRequest(arguments: ["alice"], clientAddress: "::1"))
        #expect(reason(result) != nil)
    }

    @Test func authenticate_whenPAMCannotWork_throwsAndReportsHealth() throws {
        // pam_matrix answers PAM_AUTHINFO_UNAVAIL when its password database cannot be read.
        try dir.addService("broken", passdb: dir.path + "/no-such-passdb")
        let plugin = try AuthPAMUnderTest.configured(section(dir, service: "broken"))
        #expect(plugin.healthProblem == nil)
        let error = try #require(throws: PluginError.self) { try plugin.authenticate(login("alice", "alice-secret")) }
        #expect(error.message.contains("Authentication service cannot retrieve authentication info"))
        #expect(!error.message.contains("alice-secret"))
        #expect(plugin.healthProblem == error.message)
    }

    @Test func authenticate_beforeConfigure_throws() throws {
        let plugin = try AuthPAMUnderTest.make()
        #expect(throws: PluginError.self) { try plugin.authenticate(login("alice", "alice-secret")) }
        #expect(plugin.healthProblem == "not configured")
    }

    @Test func authenticate_neverLogsPasswords() throws {
        let log = LogLines()
        let plugin = try AuthPAMUnderTest.configured(section(dir, ["default_role": .string("viewer")]), log: log)
        _ = try plugin.authenticate(login("alice", "alice-secret"))
        _ = try plugin.authenticate(login("alice", "typo-secret"))
        _ = try plugin.authenticate(login("bob", "bob-secret"))
        for line in log.all {
            #expect(!line.contains("secret"), "log line \(line)")
        }
    }
}

@Suite struct AuthPAMConfigurationTests {
    let dir: PAMTestDirectory

    init() throws {
        dir = try PAMTestDirectory(users: [("alice", "alice-secret", "ctd")])
        try dir.addService("ctd")
    }

    private func configureError(_ values: [String: ConfigValue]) throws -> String {
        let plugin = try AuthPAMUnderTest.make()
        let error = try #require(throws: PluginError.self) {
            try plugin.configure(
                PluginConfiguration(pluginName: "AuthPAM", values: values), context: LogLines().context)
        }
        return error.message
    }

    @Test func configure_withUnknownKey_fails() throws {
        #expect(try configureError(section(dir, ["admin_group": groups("wheel")])).contains("'admin_group'"))
    }

    @Test func configure_withWrongTypes_fails() throws {
        #expect(try configureError(section(dir, ["viewer_groups": .string("staff")])).contains("viewer_groups"))
        #expect(try configureError(section(dir, ["service": .integer(1)])).contains("service"))
        #expect(try configureError(section(dir, ["admin_groups": .array([.integer(0)])])).contains("admin_groups"))
    }

    @Test(arguments: ["", "../ctd", "ctd/x", ".hidden", "c t d"])
    func configure_withInvalidServiceName_fails(service: String) throws {
        #expect(try configureError(section(dir, service: service)).contains("'service'"))
    }

    @Test func configure_withRelativeOrMissingConfdir_fails() throws {
        #expect(try configureError(["confdir": .string("pam.d")]).contains("absolute"))
        #expect(try configureError(["confdir": .string(dir.path + "/nope")]).contains("not a directory"))
        #expect(try configureError(section(dir, service: "other")).contains("no file 'other'"))
    }

    @Test func configure_withUnknownDefaultRole_fails() throws {
        #expect(try configureError(section(dir, ["default_role": .string("root")])).contains("unknown role 'root'"))
    }

    @Test func configure_withInvalidGroupName_fails() throws {
        #expect(try configureError(section(dir, ["admin_groups": groups("")])).contains("admin_groups"))
        #expect(try configureError(section(dir, ["admin_groups": groups("a:b")])).contains("admin_groups"))
    }

    @Test func configure_warnsAboutGroupsThatDoNotExist() throws {
        let log = LogLines()
        _ = try AuthPAMUnderTest.configured(
            section(dir, ["admin_groups": groups("root", "no-such-group-xyz")]), log: log)
        #expect(log.all.contains { $0.contains("'no-such-group-xyz' does not exist") })
        #expect(!log.all.contains { $0.contains("'root' does not exist") })
    }

    @Test func configure_withoutGroupsOrDefaultRole_warnsThatNobodyCanLogIn() throws {
        let log = LogLines()
        _ = try AuthPAMUnderTest.configured(
            section(dir, ["viewer_groups": groups(), "operator_groups": groups(), "admin_groups": groups()]), log: log)
        #expect(log.all.contains { $0.contains("nobody can log in") })
    }

    @Test func configure_withoutConfdirAndWithoutSystemService_warnsAboutOther() throws {
        let log = LogLines()
        _ = try AuthPAMUnderTest.configured(["service": .string("ctd-test-no-such-service")], log: log)
        #expect(log.all.contains { $0.contains("/etc/pam.d/other") })
    }
}

/// Timing tests: serialized so that the other suites' logins do not compete for the two cores here.
@Suite(.serialized) struct AuthPAMConcurrencyTests {
    @Test func authenticate_manyUsersInParallel_eachGetsTheirOwnAnswer() throws {
        let users = (0..<16).map { ("user\($0)", "password-\($0)", "ctd") }
        let dir = try PAMTestDirectory(users: users)
        try dir.addService("ctd")
        let plugin = try AuthPAMUnderTest.configured(section(dir, ["default_role": .string("viewer")]))
        // Even threads use their own password, odd threads their neighbour's: any mix-up between concurrent
        // conversations would flip an answer.
        let results = onParallelThreads(16) { i in
            Result { try plugin.authenticate(login("user\(i)", i % 2 == 0 ? "password-\(i)" : "password-\(i - 1)")) }
        }
        for (i, result) in results.enumerated() {
            let answer = try result.get()
            if i % 2 == 0 {
                #expect(answer == .accepted(Identity(user: "user\(i)", roles: [.viewer])))
            } else {
                #expect(reason(answer)?.hasPrefix("wrong password") == true, "user\(i): \(answer)")
            }
        }
    }

    @Test func authenticate_slowLoginsInParallel_doNotWaitForEachOther() throws {
        // pam_faildelay makes every failed login sleep (Linux-PAM randomises it to 0.5-1.5x), like pam_unix's
        // 2 s: a sleeping login must not hold anything the next one needs.
        let delay = 0.4
        let dir = try PAMTestDirectory(users: [("alice", "alice-secret", "ctd")])
        try dir.addService("ctd", authPrefix: ["pam_faildelay.so delay=\(Int(delay * 1_000_000))"])
        let plugin = try AuthPAMUnderTest.configured(section(dir, ["default_role": .string("viewer")]))

        var start = Date()
        #expect(reason(try plugin.authenticate(login("alice", "wrong"))) != nil)
        let one = Date().timeIntervalSince(start)
        #expect(one >= delay * 0.4, "the fail delay did not apply: \(one) s")

        start = Date()
        let results = onParallelThreads(16) { _ in Result { try plugin.authenticate(login("alice", "wrong")) } }
        let sixteen = Date().timeIntervalSince(start)
        for result in results { #expect(reason(try result.get()) != nil) }
        // Serialised, 16 logins would take at least 16 x 0.5 x delay = 8 x delay.
        #expect(sixteen < 4 * delay, "16 parallel failed logins took \(sixteen) s; one took \(one) s")
        #expect(sixteen < 8 * one, "16 parallel failed logins took \(sixteen) s; one took \(one) s")
    }
}
