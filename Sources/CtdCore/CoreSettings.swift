/// What the procedures need to know of the configuration (the `ctd` command reads it from the config file).
public struct CoreSettings: Sendable {
    /// The largest `length` of a `view` page; a page of this size stays below xmlrpc-c's 512 KiB default limit.
    public var maxPageLength = 150
    public var maxKillIDs = 65_536
    public var maxDepth = 32
    public var maxMulticallCalls = 1000
    /// Failed logins from one address within `loginFailureWindow` seconds before further logins from it are
    /// refused until the window has passed; 0 turns the throttle off.
    public var loginFailureLimit = 10
    public var loginFailureWindow = 60.0

    public init() {}
}
