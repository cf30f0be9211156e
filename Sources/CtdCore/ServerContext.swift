import Conntrack
import ConntrackQuery
import CtdPluginAPI
import CtdRuntime
import Foundation
import Logging
import PluginHost

/// What every procedure may use: the table, sessions, plugins and hooks, the settings, and the caches.
public final class ServerContext: @unchecked Sendable {
    public let settings: CoreSettings
    public let table: ConntrackTable
    public let sessions: SessionStore
    public let plugins: PluginRegistry
    public let logger: Logger
    public let clock: MonotonicClock
    /// Counts of calls, logins, kills and audit records (``ServerMetrics``).
    public let metrics: ServerMetrics
    /// Writes (kill, change) pass through it, so that a shutdown can wait for them (``ActionGate``).
    public let actions = ActionGate()
    let hooks: HookRunner
    let resolvedFields: ResolvedFieldCache
    let loginThrottle: LoginThrottle
    let loginGate: LoginGate
    let failedLogins: FailedLoginRecorder
    let killPreviews: KillPreviews
    let queryResults = RecentResults<QueryKey, FlowQueryResult>(capacity: 32)
    let startedAt = Date().timeIntervalSince1970

    public init(
        settings: CoreSettings, table: ConntrackTable, sessions: SessionStore, plugins: PluginRegistry,
        clock: MonotonicClock = .system, metrics: ServerMetrics = ServerMetrics(), logger: Logger
    ) {
        self.settings = settings
        self.table = table
        self.sessions = sessions
        self.plugins = plugins
        self.clock = clock
        self.logger = logger
        self.metrics = metrics
        self.hooks = HookRunner(plugins: plugins, metrics: metrics)
        self.resolvedFields = ResolvedFieldCache(plugins: plugins, clock: clock)
        self.loginThrottle = LoginThrottle(
            limits: LoginThrottle.Limits(
                perPair: settings.loginFailureLimit, perSource: settings.loginFailureLimitPerSource,
                perUser: settings.loginFailureLimitPerUser),
            window: settings.loginFailureWindow, clock: clock)
        self.loginGate = LoginGate(limit: settings.maxConcurrentLogins)
        self.failedLogins = FailedLoginRecorder(window: settings.loginFailureWindow, clock: clock)
        self.killPreviews = KillPreviews(lifetime: settings.killPreviewLifetime, clock: clock)
    }

    /// Periodic work (every few seconds): records the summaries of failed logins whose window has passed. With
    /// `final` (at shutdown, before the plugins close), records all of them.
    public func maintenance(final: Bool = false) {
        Login.recordSummaries(self, all: final)
    }

    /// The mirror, for reads.
    var mirror: ConntrackMirror { table.mirror }
}

/// ctd's version, as `status` and `--version` show it.
public let ctdVersion = "0.2.0"
