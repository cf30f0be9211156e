import Conntrack

/// What the procedures need to know of the configuration (the `ctd` command reads it from the config file).
public struct CoreSettings: Sendable {
    /// The largest `length` of a `view` page; a page of this size stays below xmlrpc-c's 512 KiB default limit.
    public var maxPageLength = 150
    public var maxKillIDs = 65_536
    public var maxDepth = 32
    public var maxMulticallCalls = 1000
    /// Failed logins within `loginFailureWindow` seconds before further logins are refused until the window has
    /// passed: for one user name from one source, from one source, and for one user name from anywhere
    /// (``LoginThrottle``); 0 turns that count off.
    public var loginFailureLimit = 10
    public var loginFailureLimitPerSource = 50
    public var loginFailureLimitPerUser = 30
    public var loginFailureWindow = 60.0
    /// Logins the authenticator works on at once; more are refused at once (fault 11) so that a slow
    /// authenticator (pam_unix sleeps about 2 s after a wrong password) cannot take every worker.
    public var maxConcurrentLogins = 4
    /// Sessions one user may hold; a new login beyond it ends that user's least recently used session.
    public var maxSessionsPerUser = 32
    /// The largest answer, multicall answers included: a call that would answer more is refused (-32003)
    /// before the answer is built.
    public var maxResponseBytes = 16 << 20
    /// Seconds a `kill_preview` token stays valid.
    public var killPreviewLifetime = 60.0
    /// The most entries one `kill_matching` may kill.
    public var maxKillMatching = 100_000
    /// Names of ct label bits, from `[conntrack] connlabel_file` (empty when it does not exist).
    public var labelNames = ConnLabelMap.empty

    public init() {}
}
