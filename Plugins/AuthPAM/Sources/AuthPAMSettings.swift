import CtdPluginAPI

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The `[plugin.AuthPAM]` section, validated (see README.md next to this directory).
struct AuthPAMSettings: Sendable, Equatable {
    /// The PAM service: `/etc/pam.d/<service>`, or `<confdir>/<service>`.
    var service: PAMService
    /// Unix group name → the roles its members get.
    var rolesByGroup: [String: Set<Role>]
    /// The role of authenticated users who are in none of the groups; `nil` refuses them.
    var defaultRole: Role?
    /// Members of these groups see and act on their own connections only (``Scope/own``).
    var ownScopeGroups: Set<String> = []

    /// Every key the section may hold.
    static let keys: Set<String> = [
        "service", "confdir", "viewer_groups", "operator_groups", "admin_groups", "default_role", "own_scope_groups",
    ]
    static let defaultService = "ctd"
    static let defaultGroups: [(key: String, role: Role, groups: [String])] = [
        ("viewer_groups", .viewer, ["ctd-viewers"]),
        ("operator_groups", .operator, ["ctd-operators"]),
        ("admin_groups", .admin, ["ctd-admins"]),
    ]

    /// The roles of a user who is a member of `groups`: the union of the roles of each configured group, else the
    /// default role, else none.
    func roles(forGroups groups: Set<String>) -> Set<Role> {
        var roles = Set<Role>()
        for group in groups { roles.formUnion(rolesByGroup[group] ?? []) }
        if roles.isEmpty, let defaultRole { roles.insert(defaultRole) }
        return roles
    }

    /// Reads and checks a configuration section strictly: an unknown key, a wrong type, an invalid service name,
    /// a relative or missing `confdir`, an empty group name or an unknown role name is an error.
    /// - Parameter warn: receives remarks that do not stop the plugin (no PAM file for the service...).
    static func parse(_ configuration: PluginConfiguration, warn: (String) -> Void) throws -> AuthPAMSettings {
        let plugin = configuration.pluginName
        try configuration.expectOnly(keys)

        let service = try configuration.string("service", default: defaultService) ?? defaultService
        guard isValidServiceName(service) else {
            throw PluginError(
                "'service' of plugin \(plugin) must be a PAM service name (letters, digits, '.', '_', '-'), "
                    + "not '\(service)'")
        }

        let confdir = try configuration.string("confdir")
        if let confdir {
            guard confdir.hasPrefix("/") else {
                throw PluginError("'confdir' of plugin \(plugin) must be an absolute path, not '\(confdir)'")
            }
            guard isDirectory(confdir) else {
                throw PluginError("'confdir' of plugin \(plugin): \(confdir) is not a directory")
            }
            // With a confdir, Linux-PAM reads only that directory: a missing file makes every pam_start fail.
            guard isRegularFile("\(confdir)/\(service)") else {
                throw PluginError(
                    "'confdir' of plugin \(plugin): \(confdir) has no file '\(service)' for PAM service '\(service)'")
            }
        } else if !["/etc/pam.d", "/usr/lib/pam.d"].contains(where: { isRegularFile("\($0)/\(service)") }) {
            warn(
                "AuthPAM: no /etc/pam.d/\(service): PAM uses /etc/pam.d/other for service '\(service)'; install "
                    + "the sample pam.d/ctd from the plugin's README")
        }

        var rolesByGroup: [String: Set<Role>] = [:]
        for (key, role, defaults) in defaultGroups {
            for group in try configuration.strings(key, default: defaults) ?? [] {
                guard !group.isEmpty, !group.contains(where: { $0 == ":" || $0 == "," || $0.isNewline }),
                    !group.utf8.contains(0)
                else {
                    throw PluginError("'\(key)' of plugin \(plugin): '\(group)' is not a Unix group name")
                }
                rolesByGroup[group, default: []].insert(role)
            }
        }

        var defaultRole: Role?
        if let name = try configuration.string("default_role") {
            guard let role = Role(rawValue: name) else {
                let valid = Role.allCases.map(\.rawValue).joined(separator: ", ")
                throw PluginError("'default_role' of plugin \(plugin): unknown role '\(name)' (valid: \(valid))")
            }
            defaultRole = role
        }

        var ownScopeGroups = Set<String>()
        for group in try configuration.strings("own_scope_groups", default: []) ?? [] {
            guard !group.isEmpty, !group.contains(where: { $0 == ":" || $0 == "," || $0.isNewline }) else {
                throw PluginError("'own_scope_groups' of plugin \(plugin): '\(group)' is not a Unix group name")
            }
            ownScopeGroups.insert(group)
        }

        if rolesByGroup.isEmpty && defaultRole == nil {
            warn("AuthPAM: no groups are configured and default_role is not set: nobody can log in")
        }
        return AuthPAMSettings(
            service: PAMService(name: service, confdir: confdir), rolesByGroup: rolesByGroup,
            defaultRole: defaultRole, ownScopeGroups: ownScopeGroups)
    }

    static func isValidServiceName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.utf8.count <= 255 else { return false }
        let allowed = { (c: Unicode.Scalar) in
            c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c) || c == "." || c == "_" || c == "-")
        }
        return first != "." && name.unicodeScalars.allSatisfy(allowed)
    }

    private static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    private static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }
}
