import CtdPluginAPI

/// Which plugins to load, from where, with which settings.
public struct PluginSelection: Sendable {
    /// Directories searched in order for `lib<Name>.so`.
    public var directories: [String]
    /// The authenticator (exactly one; the daemon refuses to start without it).
    public var authenticator: String
    /// Resolvers and hooks, in the order their hooks run.
    public var plugins: [String]
    /// Each plugin's `[plugin.NAME]` section.
    public var sections: [String: [String: ConfigValue]]

    public init(
        directories: [String], authenticator: String, plugins: [String], sections: [String: [String: ConfigValue]]
    ) {
        self.directories = directories
        self.authenticator = authenticator
        self.plugins = plugins
        self.sections = sections
    }
}
