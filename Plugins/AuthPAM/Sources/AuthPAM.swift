import CtdPluginAPI
import Synchronization

/// Checks `login(username, password)` with PAM and grants roles from Unix group membership (see README.md next
/// to this directory).
///
/// Configuration (`[plugin.AuthPAM]`, strict: any other key is an error):
/// - `service` (string, default `"ctd"`): the PAM service, i.e. `/etc/pam.d/<service>`.
/// - `confdir` (string, optional): a directory to read `<service>` from instead of `/etc/pam.d` (tests).
/// - `viewer_groups`, `operator_groups`, `admin_groups` (arrays of Unix group names, defaults `["ctd-viewers"]`,
///   `["ctd-operators"]`, `["ctd-admins"]`): members get that role; roles add up.
/// - `default_role` (role name, optional): the role of authenticated users in none of the groups; without it they
///   are refused ("no role granted").
///
/// Each login runs on its own PAM handle and takes no lock while PAM works, so logins proceed in parallel; a
/// login blocks its worker thread for as long as the PAM stack takes.
public final class AuthPAMPlugin: Authenticator {
    public let metadata = PluginMetadata(
        id: "auth.pam",
        name: "AuthPAM",
        version: "1.0.0",
        roles: [.authenticator],
        summary: "Checks logins with PAM (/etc/pam.d/ctd); roles come from Unix groups."
    )

    public let loginParameters = ["username", "password"]

    /// Longest user name passed to PAM, in UTF-8 bytes.
    static let maxUserNameBytes = 256

    private let settings = Mutex<AuthPAMSettings?>(nil)
    /// The last technical failure, until a login gets an answer from PAM again.
    private let lastFailure = Mutex<String?>(nil)

    public init() {}

    public func configure(_ configuration: PluginConfiguration, context: PluginContext) throws {
        let log = context.log
        let parsed = try AuthPAMSettings.parse(configuration) { log(.warning, $0) }
        for group in parsed.rolesByGroup.keys.sorted() {
            do {
                if try !UnixGroups.exists(group: group) {
                    log(.warning, "AuthPAM: group '\(group)' does not exist (yet); nobody gets its role")
                }
            } catch {
                log(.warning, "AuthPAM: cannot look up group '\(group)': \(error)")
            }
        }
        let confdir = parsed.service.confdir.map { " in \($0)" } ?? ""
        log(.info, "AuthPAM: PAM service '\(parsed.service.name)'\(confdir)")
        settings.withLock { $0 = parsed }
    }

    public func authenticate(_ request: LoginRequest) throws -> AuthResult {
        guard let settings = settings.withLock({ $0 }) else {
            throw PluginError("plugin AuthPAM is not configured")
        }
        guard request.arguments.count == loginParameters.count else {
            return .rejected(
                reason: "expected \(loginParameters.count) login arguments, got \(request.arguments.count)")
        }
        let user = request.arguments[0]
        let password = request.arguments[1]
        if let problem = Self.userNameProblem(user) {
            return .rejected(reason: "invalid user name: \(problem)")
        }
        guard !password.utf8.contains(0) else {
            return .rejected(reason: "the password contains a NUL byte")
        }

        let outcome = settings.service.authenticate(user: user, password: password, remoteHost: request.clientAddress)
        let pamUser: String
        switch outcome {
        case .accepted(let name):
            pamUser = name
        case .authenticationFailed(let detail):
            clearFailure()
            return .rejected(reason: "wrong password or unknown user (\(detail))")
        case .accountRefused(let detail):
            clearFailure()
            return .rejected(reason: "account refused (\(detail))")
        case .failed(let detail):
            let message = "AuthPAM: PAM service '\(settings.service.name)' failed: \(detail)"
            lastFailure.withLock { $0 = message }
            throw PluginError(message)
        }
        clearFailure()

        let groups: Set<String>
        do {
            groups = try UnixGroups.names(ofUser: pamUser)
        } catch {
            let message = "AuthPAM: cannot read the groups of '\(pamUser)': \(error)"
            lastFailure.withLock { $0 = message }
            throw PluginError(message)
        }
        let roles = settings.roles(forGroups: groups)
        guard !roles.isEmpty else {
            return .rejected(reason: "no role granted (in none of viewer_groups, operator_groups, admin_groups)")
        }
        let scope: Scope = groups.isDisjoint(with: settings.ownScopeGroups) ? .all : .own
        return .accepted(Identity(user: pamUser, roles: roles, scope: scope))
    }

    public var healthProblem: String? {
        guard settings.withLock({ $0 }) != nil else { return "not configured" }
        return lastFailure.withLock { $0 }
    }

    /// Why `user` cannot be a user name, or `nil` when it can.
    static func userNameProblem(_ user: String) -> String? {
        if user.isEmpty { return "empty" }
        if user.utf8.count > maxUserNameBytes { return "longer than \(maxUserNameBytes) bytes" }
        if user.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return "contains a control character"
        }
        return nil
    }

    private func clearFailure() {
        lastFailure.withLock { if $0 != nil { $0 = nil } }
    }
}

/// The entry symbol the host looks up with `dlsym` (``ctdPluginEntrySymbol``).
@_cdecl("ctd_plugin_create")
public func ctdPluginCreate() -> UnsafeMutableRawPointer? {
    CtdPluginExport.export(AuthPAMPlugin())
}
