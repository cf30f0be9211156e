import CtdPluginAPI

extension AuthSHAPlugin: ReloadablePlugin {
    /// SIGHUP: reads the section and the password file again and swaps them in at once; wrong settings or an
    /// unusable file throw and leave the old ones in force. Reports the file, user count and roles that changed.
    public func reload(_ configuration: PluginConfiguration, context: PluginContext) throws -> [String] {
        let before = currentSummary()
        try configure(configuration, context: context)
        let after = currentSummary()
        var changes: [String] = []
        if before.path != after.path { changes.append("password_file \(before.path) -> \(after.path)") }
        if before.users != after.users { changes.append("users in \(after.path): \(before.users) -> \(after.users)") }
        if before.defaultRoles != after.defaultRoles {
            changes.append("default_roles \(before.defaultRoles) -> \(after.defaultRoles)")
        }
        if before.roles != after.roles { changes.append("roles \(before.roles) -> \(after.roles)") }
        return changes
    }

    private func currentSummary() -> (path: String, users: Int, defaultRoles: String, roles: String) {
        settings.withLock { s in
            guard let s else { return ("", 0, "", "") }
            let roles = s.userRoles.keys.sorted().map { user in
                "\(user)=\(s.userRoles[user]!.map(\.rawValue).sorted().joined(separator: "+"))"
            }
            return (
                s.store.path, s.store.entries.count, s.defaultRoles.map(\.rawValue).sorted().joined(separator: ","),
                roles.isEmpty ? "(none)" : roles.joined(separator: " ")
            )
        }
    }
}

extension AuthSHAPlugin: IdentityRechecking {
    /// What `user` may do now: nil when the password file no longer lists them.
    public func currentIdentity(of user: String) -> Identity? {
        settings.withLock { s in
            guard let s, s.store.entries.contains(where: { $0.user == user }) else { return nil }
            return Identity(
                user: user, roles: s.userRoles[user] ?? s.defaultRoles, scope: s.ownScope.contains(user) ? .own : .all)
        }
    }
}
