import CtdPluginAPI
import PasswordFile
import Synchronization

/// Checks `login(username, password)` against a password file (see README.md next to this directory).
///
/// Configuration (`[plugin.AuthSHA]`, strict: any other key is an error):
/// - `password_file` (string, required): absolute path of the password file.
/// - `own_scope` (array of user names, default empty): users who see and act on their own connections only.
/// - `default_roles` (array of role names, default `["viewer"]`): roles of users not listed in `roles`; a
///   user who may kill or change must be given `operator` (or `admin`) explicitly.
///   An empty array means only users listed in `roles` may log in.
/// - `roles` (table, optional): user name → role name or array of role names, e.g.
///   `roles = { alice = ["admin"], bob = "viewer" }`. A user mapped to `[]` may not log in.
///
/// Role names: `viewer`, `operator`, `admin`.
public final class AuthSHAPlugin: Authenticator {
    public let metadata = PluginMetadata(
        id: "auth.sha",
        name: "AuthSHA",
        version: "1.0.0",
        roles: [.authenticator],
        summary: "Checks logins against a password file (yescrypt, SHA-crypt, bcrypt, htpasswd {SHA}, legacy hex SHA)."
    )

    public let loginParameters = ["username", "password"]

    /// The configuration keys this plugin understands.
    static let configurationKeys: Set<String> = ["password_file", "default_roles", "roles", "own_scope"]

    struct Settings: Sendable {
        var store: PasswordStore
        var defaultRoles: Set<Role>
        var userRoles: [String: Set<Role>]
        /// Users who see and act on their own connections only.
        var ownScope: Set<String> = []
        var log: @Sendable (PluginLogLevel, String) -> Void
    }

    let settings = Mutex<Settings?>(nil)
    /// Users already warned about for logging in with a legacy hash (one warning per user and process).
    private let warnedLegacyUsers = Mutex<Set<String>>([])

    public init() {}

    public func configure(_ configuration: PluginConfiguration, context: PluginContext) throws {
        let name = metadata.name
        try configuration.expectOnly(Self.configurationKeys)

        guard let path = try configuration.string("password_file") else {
            throw PluginError("plugin \(name) needs 'password_file' (the path of the password file)")
        }
        guard path.hasPrefix("/") else {
            throw PluginError("'password_file' of plugin \(name) must be an absolute path, not '\(path)'")
        }
        let defaultRoles = try Self.roles(
            try configuration.strings("default_roles", default: ["viewer"]) ?? [], key: "default_roles",
            plugin: name)
        let userRoles = try Self.userRoles(configuration.values["roles"], plugin: name)
        let ownScope = Set(try configuration.strings("own_scope", default: []) ?? [])

        let log = context.log
        let store: PasswordStore
        do {
            store = try PasswordStore(path: path) { summary in
                Self.reportLoad(summary, log: log)
            }
        } catch let error as PasswordFileError {
            throw PluginError("plugin \(name): cannot load the password file: \(error)")
        }

        let known = Set(store.entries.map(\.user))
        let strangers = userRoles.keys.filter { !known.contains($0) }.sorted()
        if !strangers.isEmpty {
            log(.warning, "AuthSHA: 'roles' names users that are not in \(path): \(strangers.joined(separator: ", "))")
        }
        if defaultRoles.isEmpty && userRoles.isEmpty {
            log(.warning, "AuthSHA: default_roles is empty and 'roles' is empty: nobody can log in")
        }
        settings.withLock {
            $0 = Settings(store: store, defaultRoles: defaultRoles, userRoles: userRoles, ownScope: ownScope, log: log)
        }
    }

    public func authenticate(_ request: LoginRequest) throws -> AuthResult {
        guard let settings = settings.withLock({ $0 }) else {
            throw PluginError("plugin AuthSHA is not configured")
        }
        guard request.arguments.count == loginParameters.count else {
            return .rejected(
                reason: "expected \(loginParameters.count) login arguments, got \(request.arguments.count)")
        }
        let user = request.arguments[0]
        let password = request.arguments[1]
        let verdict: PasswordStore.Verdict
        do {
            verdict = try settings.store.verify(user: user, password: password)
        } catch let error as PasswordFileError {
            throw PluginError("AuthSHA cannot use the password file: \(error)")
        }
        switch verdict {
        case .unknownUser:
            return .rejected(reason: "unknown user")
        case .wrongPassword:
            return .rejected(reason: "wrong password")
        case .accepted(let scheme):
            let roles = settings.userRoles[user] ?? settings.defaultRoles
            guard !roles.isEmpty else {
                return .rejected(reason: "no role granted to this user")
            }
            if scheme.isLegacy {
                let first = warnedLegacyUsers.withLock { $0.insert(user).inserted }
                if first {
                    settings.log(
                        .warning,
                        "AuthSHA: user '\(user)' logged in with an unsalted legacy \(scheme.name) hash; "
                            + "replace it with `ctd passwd add \(user) --file \(settings.store.path)`")
                }
            }
            return .accepted(Identity(user: user, roles: roles, scope: settings.ownScope.contains(user) ? .own : .all))
        }
    }

    public var healthProblem: String? {
        guard let settings = settings.withLock({ $0 }) else { return "not configured" }
        if let error = settings.store.lastError { return "password file unusable: \(error)" }
        return nil
    }

    // MARK: Helpers

    static func reportLoad(_ summary: PasswordStore.LoadSummary, log: @Sendable (PluginLogLevel, String) -> Void) {
        let verb = summary.isInitial ? "loaded" : "reloaded"
        log(.info, "AuthSHA: \(verb) \(summary.path): \(summary.entries.count) user(s)")
        let legacy = summary.legacyUsers
        if !legacy.isEmpty {
            log(
                .warning,
                "AuthSHA: \(legacy.count) user(s) in \(summary.path) have unsalted legacy hashes "
                    + "(SHA-1/SHA-256/SHA-512 hex or {SHA}): \(legacy.joined(separator: ", ")); "
                    + "re-hash them with `ctd passwd add USER --file \(summary.path)`")
        }
        if summary.signature.mode & 0o007 != 0 {
            log(.warning, "AuthSHA: \(summary.path) is accessible to all users; chmod o-rwx it")
        }
    }

    static func roles(_ names: [String], key: String, plugin: String) throws -> Set<Role> {
        var result = Set<Role>()
        for name in names {
            guard let role = Role(rawValue: name) else {
                let valid = Role.allCases.map(\.rawValue).joined(separator: ", ")
                throw PluginError("'\(key)' of plugin \(plugin): unknown role '\(name)' (valid: \(valid))")
            }
            result.insert(role)
        }
        return result
    }

    static func userRoles(_ value: ConfigValue?, plugin: String) throws -> [String: Set<Role>] {
        guard let value else { return [:] }
        guard case .table(let table) = value else {
            throw PluginError(
                "key 'roles' in the configuration of plugin \(plugin) must be a table of user = [role names]")
        }
        var result: [String: Set<Role>] = [:]
        for (user, item) in table {
            let names: [String]
            switch item {
            case .string(let single):
                names = [single]
            case .array(let items):
                names = try items.map {
                    guard case .string(let s) = $0 else {
                        throw PluginError("'roles.\(user)' of plugin \(plugin) must be an array of role names")
                    }
                    return s
                }
            default:
                throw PluginError("'roles.\(user)' of plugin \(plugin) must be a role name or an array of role names")
            }
            result[user] = try roles(names, key: "roles.\(user)", plugin: plugin)
        }
        return result
    }
}

/// The entry symbol the host looks up with `dlsym` (``ctdPluginEntrySymbol``).
@_cdecl("ctd_plugin_create")
public func ctdPluginCreate() -> UnsafeMutableRawPointer? {
    CtdPluginExport.export(AuthSHAPlugin())
}
