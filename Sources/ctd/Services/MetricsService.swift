import Conntrack
import CoreMetrics
import CtdCore
import Foundation
import HTTPTransport
import Logging
import Prometheus
import ServiceLifecycle

/// The HELP text of every family ctd exports (docs/metrics.md lists them with their labels and types).
enum MetricFamilies {
    static let help: [String: String] = [
        "ctd_build_info": "ctd's version, as a label; the value is always 1.",
        "ctd_start_time_seconds": "When this ctd started, in seconds since the epoch.",
        "ctd_conntrack_entries": "Entries of the kernel's conntrack table (nf_conntrack_count, conntrack -C).",
        "ctd_conntrack_entries_limit": "The table's size limit (nf_conntrack_max); 0 when it cannot be read.",
        "ctd_mirror_entries": "Entries in ctd's copy of the table (those it shows: hidden blocks left out).",
        "ctd_connections": "Entries in ctd's copy of the table by layer-4 protocol and TCP state.",
        "ctd_events_total": "Kernel conntrack events applied to ctd's copy of the table.",
        "ctd_resyncs_total": "Full dumps after lost events (ENOBUFS) or on request.",
        "ctd_counter_refreshes_total": "Dumps that refreshed byte and packet counters.",
        "ctd_events_healthy": "1 while the event socket is subscribed and no event loss is pending, else 0.",
        "ctd_kernel_statistics_up": "1 when the kernel's per-CPU counters could be read for this scrape, else 0.",
        "ctd_sessions": "Open XML-RPC sessions.",
        "ctd_http_connections": "Open client connections of the XML-RPC listener.",
        "ctd_http_refused_connections_total": "Connections refused at accept by the XML-RPC listener's limits.",
        ServerMetrics.Name.requests: "XML-RPC calls answered, by procedure and fault code (0: no fault).",
        ServerMetrics.Name.duration: "Time from a decoded call to its answer, by procedure (changes includes its wait).",
        ServerMetrics.Name.logins: "Login attempts by result.",
        ServerMetrics.Name.kills: "Entries asked to be killed, by result.",
        ServerMetrics.Name.auditRecords: "Actions an action hook (audit plugin) recorded.",
        ServerMetrics.Name.auditFailures: "Calls to an action hook that failed, by phase (before or after).",
        ServerMetrics.Name.auditVetoes: "Actions an action hook vetoed.",
    ].merging(CPUStatistics.sum([]).named.map { name, _ in (statName(name), statHelp(name)) }) { a, _ in a }

    static func statName(_ counter: String) -> String { "ctd_conntrack_stat_\(counter)_total" }

    static func statHelp(_ counter: String) -> String {
        "The kernel's '\(counter)' counter summed over CPUs (conntrack -S)."
    }

    static func descriptor(_ name: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help[name] ?? "")
    }

    /// The `l4proto` label: the protocols conntrack knows by name, anything else "other".
    static let l4protos = ["tcp", "udp", "icmp", "icmpv6", "sctp", "dccp", "gre", "udplite", "igmp", "other"]

    static func l4protoLabel(_ number: UInt8) -> String {
        let name = ConntrackNames.l4(number)
        return l4protos.contains(name) ? name : "other"
    }

    /// The `state` label: a TCP state, or "none" for the other protocols.
    static func stateLabel(_ flow: Flow) -> String {
        guard flow.l4proto == 6 else { return "none" }
        let s = ConntrackNames.tcpState(flow.tcpState)
        return s.isEmpty ? "none" : s
    }

    /// Every (l4proto, state) pair the family can carry: TCP's states, "none" for the others.
    static var connectionLabelSets: [(String, String)] {
        ConntrackNames.tcpStates.map { ("tcp", $0) } + ["UNKNOWN", "none"].map { ("tcp", $0) }
            + l4protos.filter { $0 != "tcp" }.map { ($0, "none") }
    }
}

/// swift-metrics' factory over a Prometheus registry that gives every family its HELP text, so that the counters
/// CtdCore makes through swift-metrics and the gauges sampled here are one registry with one text per name.
struct DocumentedPrometheusFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry
    let durationBuckets: [Duration]

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: MetricFamilies.descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: MetricFamilies.descriptor(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: MetricFamilies.descriptor(label), labels: dimensions) }
        return registry.makeValueHistogram(
            descriptor: MetricFamilies.descriptor(label), labels: dimensions,
            buckets: durationBuckets.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 })
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: MetricFamilies.descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(
            descriptor: MetricFamilies.descriptor(label), labels: dimensions, buckets: durationBuckets)
    }

    func destroyCounter(_ handler: any CounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    func destroyRecorder(_ handler: any RecorderHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
        if let h = handler as? ValueHistogram { registry.unregisterValueHistogram(h) }
    }

    func destroyMeter(_ handler: any MeterHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
    }

    func destroyTimer(_ handler: any TimerHandler) {
        if let h = handler as? DurationHistogram { registry.unregisterDurationHistogram(h) }
    }
}

/// The Prometheus document: the request path's counters (made through swift-metrics by CtdCore) plus what is
/// sampled at each scrape (the kernel's table size and counters, the mirror, sessions, the listener).
final class MetricsExporter: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    let factory: DocumentedPrometheusFactory
    /// One scrape at a time: the sampled counters are set by reset-and-add, which a concurrent emit must not see.
    private let scrapeLock = NSLock()

    private struct Sources {
        let mirror: ConntrackMirror
        let table: ConntrackTable
        let sessions: SessionStore
        let server: HTTPServer
    }
    private var sources: Sources?
    private var lastConnectionCounts: [String: Int] = [:]

    static let durationBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
    ]

    init() {
        factory = DocumentedPrometheusFactory(registry: registry, durationBuckets: Self.durationBuckets)
    }

    /// What CtdCore counts through.
    var serverMetrics: ServerMetrics { ServerMetrics(factory: factory) }

    /// Creates every series of the bounded label sets at 0, so that a rate over a series that has not moved yet
    /// is 0 rather than absent.
    func attach(
        mirror: ConntrackMirror, table: ConntrackTable, sessions: SessionStore, server: HTTPServer,
        hookPlugins: [String]
    ) {
        scrapeLock.withLock {
            sources = Sources(mirror: mirror, table: table, sessions: sessions, server: server)
        }
        gauge("ctd_build_info", [("version", ctdVersion)]).set(1.0)
        gauge("ctd_start_time_seconds").set(Date().timeIntervalSince1970)
        for r in ServerMetrics.LoginResult.allCases { counter(ServerMetrics.Name.logins, [("result", r.rawValue)]) }
        for r in ServerMetrics.KillResult.allCases { counter(ServerMetrics.Name.kills, [("result", r.rawValue)]) }
        for p in hookPlugins {
            counter(ServerMetrics.Name.auditRecords, [("plugin", p)])
            counter(ServerMetrics.Name.auditVetoes, [("plugin", p)])
            for phase in ["before", "after"] {
                counter(ServerMetrics.Name.auditFailures, [("plugin", p), ("phase", phase)])
            }
        }
        for (proto, state) in MetricFamilies.connectionLabelSets {
            gauge("ctd_connections", [("l4proto", proto), ("state", state)])
        }
    }

    @discardableResult
    private func counter(_ name: String, _ labels: [(String, String)] = []) -> Prometheus.Counter {
        registry.makeCounter(descriptor: MetricFamilies.descriptor(name), labels: labels)
    }

    private func gauge(_ name: String, _ labels: [(String, String)] = []) -> Prometheus.Gauge {
        registry.makeGauge(descriptor: MetricFamilies.descriptor(name), labels: labels)
    }

    /// A counter kept by someone else (the kernel, the mirror), set to its current value.
    private func setCounter(_ name: String, _ value: UInt64) {
        let c = counter(name)
        c.reset()
        c.increment(by: Int64(clamping: value))
    }

    /// Samples and renders the text exposition format (version 0.0.4).
    func render() -> [UInt8] {
        scrapeLock.withLock {
            if let s = sources { sample(s) }
            return registry.emitToBuffer()
        }
    }

    private func sample(_ s: Sources) {
        let settings = KernelSettings.current()
        let stats = s.mirror.statistics
        gauge("ctd_conntrack_entries").set(Double(settings.entries ?? stats.entries))
        gauge("ctd_conntrack_entries_limit").set(Double(settings.maximumEntries ?? 0))
        gauge("ctd_mirror_entries").set(Double(stats.entries))
        setCounter("ctd_events_total", stats.eventsApplied)
        setCounter("ctd_resyncs_total", UInt64(max(0, stats.resyncs)))
        setCounter("ctd_counter_refreshes_total", UInt64(max(0, stats.counterRefreshes)))
        gauge("ctd_events_healthy").set(stats.eventsHealthy ? 1.0 : 0.0)
        gauge("ctd_sessions").set(Double(s.sessions.count))
        gauge("ctd_http_connections").set(Double(s.server.openConnections))
        setCounter("ctd_http_refused_connections_total", UInt64(max(0, s.server.refusedConnections)))
        // One failing part never fails the whole answer (node_exporter's rule): it shows as _up 0.
        if let cpus = try? s.table.cpuStatistics() {
            for (name, value) in CPUStatistics.sum(cpus).named { setCounter(MetricFamilies.statName(name), value) }
            gauge("ctd_kernel_statistics_up").set(1.0)
        } else {
            gauge("ctd_kernel_statistics_up").set(0.0)
        }
        var counts: [String: Int] = [:]
        for flow in s.mirror.snapshot(countingAsView: false).flows {
            counts[MetricFamilies.l4protoLabel(flow.l4proto) + "\u{0}" + MetricFamilies.stateLabel(flow), default: 0] += 1
        }
        for (proto, state) in MetricFamilies.connectionLabelSets {
            gauge("ctd_connections", [("l4proto", proto), ("state", state)])
                .set(Double(counts[proto + "\u{0}" + state] ?? 0))
        }
    }
}

/// The Prometheus listener: its own ``HTTPServer`` answering GET /metrics only, with the XML-RPC listener's
/// deadlines and a small connection limit. Bound before the group starts (a port in use stops the start with one
/// sentence); closed when shutdown begins, before the XML-RPC listener drains.
struct MetricsService: Service {
    let server: HTTPServer
    let logger: Logger

    /// A server for `exporter` at `address`, with `config`'s deadlines; not started.
    static func makeServer(
        exporter: MetricsExporter, address: DaemonConfig.MetricsAddress, config: DaemonConfig, logger: Logger
    ) -> HTTPServer {
        var options = HTTPServer.Options(
            host: address.host, port: address.port, maxBodyBytes: 1024, tlsCertificate: nil, tlsKey: nil,
            workerThreads: 2)
        options.maxConnections = config.metricsMaxConnections
        options.maxConnectionsPerAddress = max(1, config.metricsMaxConnections / 2)
        options.headerTimeout = config.headerTimeout
        options.bodyTimeout = config.bodyTimeout
        options.idleTimeout = config.connectionIdleTimeout
        options.writeTimeout = config.writeTimeout
        options.serverNames = HTTPServer.defaultServerNames(listen: address.host)
        options.web = nil
        options.endpoint = .document(
            path: "/metrics", contentType: "text/plain; version=0.0.4; charset=utf-8",
            render: { exporter.render() })
        return HTTPServer(
            options: options, handler: { _, _, respond in respond([]) }, tooLargeBody: Array("too large\n".utf8),
            logger: logger)
    }

    func run() async throws {
        try? await gracefulShutdown()
        let server = self.server
        await blocking {
            server.stopAccepting()
            _ = server.drain(timeout: 2)
            server.shutdown()
        }
        logger.info("metrics listener closed")
    }
}
