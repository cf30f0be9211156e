import CoreMetrics

/// What the request path counts, through swift-metrics: the executable picks the backend (Prometheus, in
/// `Sources/ctd/Services/MetricsService.swift`); without one every call is a no-op.
///
/// Every label value comes from a closed set (procedure names, fault codes, fixed result words, configured plugin
/// names), so that no client can create new series (docs/metrics.md).
public struct ServerMetrics: Sendable {
    public enum Name {
        public static let requests = "ctd_rpc_requests_total"
        public static let duration = "ctd_rpc_duration_seconds"
        public static let logins = "ctd_logins_total"
        public static let kills = "ctd_kills_total"
        public static let auditRecords = "ctd_audit_records_total"
        public static let auditFailures = "ctd_audit_failures_total"
        public static let auditVetoes = "ctd_audit_vetoes_total"
    }

    /// The `result` label of ``Name/logins``.
    public enum LoginResult: String, CaseIterable, Sendable {
        /// A session was opened.
        case success
        /// Wrong credentials, an unknown user, or a user without a role.
        case rejected
        /// Refused by the failure throttle before the authenticator was asked.
        case throttled
        /// Too many logins in progress, or the session store full.
        case busy
        /// The authenticator failed (a technical failure, not wrong credentials).
        case error
    }

    /// The `result` label of ``Name/kills``, per entry.
    public enum KillResult: String, CaseIterable, Sendable {
        case killed
        /// Gone before the kernel got to it.
        case gone
        case vetoed
        /// The kernel refused, or the netlink socket failed.
        case failed
        /// No live entry had the id (or several had it).
        case not_found
    }

    /// The `method` label: a procedure name of the method table, or this for anything else.
    public static let otherMethod = "other"

    let factory: any MetricsFactory

    /// - Parameter factory: where the counts go; the default counts nothing.
    public init(factory: any MetricsFactory = NOOPMetricsHandler.instance) {
        self.factory = factory
    }

    /// The bounded `method` label of a method name sent by a client.
    public static func methodLabel(_ method: String) -> String {
        MethodTable.byName[method] != nil ? method : otherMethod
    }

    /// One top-level call answered (`code` 0) or faulted (its fault code), and how long it took.
    func request(method: String, code: Int, nanoseconds: Int64) {
        let label = Self.methodLabel(method)
        Counter(label: Name.requests, dimensions: [("method", label), ("code", String(code))], factory: factory)
            .increment()
        Timer(label: Name.duration, dimensions: [("method", label)], factory: factory)
            .recordNanoseconds(nanoseconds)
    }

    func login(_ result: LoginResult) {
        Counter(label: Name.logins, dimensions: [("result", result.rawValue)], factory: factory).increment()
    }

    func kills(_ result: KillResult, count: Int) {
        guard count > 0 else { return }
        Counter(label: Name.kills, dimensions: [("result", result.rawValue)], factory: factory)
            .increment(by: Int64(count))
    }

    /// Records a hook took in (`after` accepted), per configured plugin.
    func auditRecords(plugin: String, count: Int) {
        guard count > 0 else { return }
        Counter(label: Name.auditRecords, dimensions: [("plugin", plugin)], factory: factory)
            .increment(by: Int64(count))
    }

    /// A hook's `before` or `after` threw.
    func auditFailure(plugin: String, phase: String) {
        Counter(label: Name.auditFailures, dimensions: [("plugin", plugin), ("phase", phase)], factory: factory)
            .increment()
    }

    func auditVetoes(plugin: String, count: Int) {
        guard count > 0 else { return }
        Counter(label: Name.auditVetoes, dimensions: [("plugin", plugin)], factory: factory)
            .increment(by: Int64(count))
    }
}
