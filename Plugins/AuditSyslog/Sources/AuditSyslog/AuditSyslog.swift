import CtdPluginAPI
import Foundation
import Synchronization
import SyslogForwarding

#if canImport(Glibc)
    import Glibc
#endif

/// Forwards every audit event (logins, kills, changes, denied calls, audit reads, and each action's outcome) as an
/// RFC 5424 message with structured data to the local syslog socket or to a collector over TLS (RFC 5425), through
/// a bounded, fsync'd queue on disk (see README.md next to this directory).
///
/// Policy: ``failureStopsAction`` is `true`. An action's message is in the queue file before ``before(_:)``
/// returns; if it cannot be queued (the queue file cannot be written, or the queue is full and `queue_full` is
/// `refuse`) the host refuses the action. With `queue_full = "drop_oldest"` a full queue drops its oldest events
/// instead, counts them and logs it.
public final class AuditSyslogPlugin: ActionHook {
    /// From this many events in one batch, delivery pauses until the batch's outcomes are queued
    /// (``SyslogForwarder/pause(atMost:)``); smaller actions are sent at once.
    static let bulkEvents = 256

    public let metadata = PluginMetadata(
        id: "hook.audit_syslog",
        name: "AuditSyslog",
        version: "1.0.0",
        roles: [.actionHook],
        summary:
            "Forwards every audit event as RFC 5424 syslog (local socket or TLS collector) through an on-disk queue."
    )

    public let failureStopsAction = true

    struct State: Sendable {
        let settings: AuditSyslogSettings
        let queue: DurableQueue
        let forwarder: SyslogForwarder
        let formatter: AuditEventFormatter
        let log: @Sendable (PluginLogLevel, String) -> Void
    }

    let state = Mutex<State?>(nil)
    /// Why the last append failed, until one succeeds again.
    private let appendProblem = Mutex<String?>(nil)

    public init() {}

    public func configure(_ configuration: PluginConfiguration, context: PluginContext) throws {
        let settings = try AuditSyslogSettings(configuration)
        let transport: any SyslogTransport
        switch settings.address {
        case .unix(let path):
            transport = UnixSyslogTransport(path: path, timeout: settings.timeout)
        case .tls(let host, let port):
            guard let ca = settings.tlsCAFile else {
                throw PluginError(
                    "plugin AuditSyslog needs 'tls_ca_file' (the CA that signed the collector's certificate) for \(settings.address)"
                )
            }
            do {
                let tls = try TLSSyslogTransport(
                    host: host, port: port, serverName: settings.tlsServerName, caFile: ca,
                    certFile: settings.tlsCertFile, keyFile: settings.tlsKeyFile, timeout: settings.timeout)
                let log = context.log
                tls.onWeakConfirmation = { log(.warning, "AuditSyslog: \($0)") }
                transport = tls
            } catch {
                throw PluginError("plugin AuditSyslog: \(error)")
            }
        }
        let directory = (settings.queuePath as NSString).deletingLastPathComponent
        if !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw PluginError(
                    "plugin AuditSyslog: cannot create the directory of the queue \(settings.queuePath): \(error)")
            }
        }
        let queue: DurableQueue
        do {
            queue = try DurableQueue(
                path: settings.queuePath, maxBytes: settings.queueMaxBytes, maxEvents: settings.queueMaxEvents)
        } catch {
            throw PluginError("plugin AuditSyslog: \(error)")
        }
        let log = context.log
        let forwarder = SyslogForwarder(
            queue: queue, transport: transport, batchEvents: settings.batchEvents,
            retryMaxSeconds: settings.retryMaxSeconds,
            log: { isError, line in log(isError ? .error : .info, "AuditSyslog: \(line)") })
        let formatter = AuditEventFormatter(
            facility: settings.facility, hostname: settings.hostname, appName: settings.appName,
            procID: String(getpid()), sdID: settings.sdID)
        state.withLock {
            $0 = State(settings: settings, queue: queue, forwarder: forwarder, formatter: formatter, log: log)
        }
        context.log(
            .info,
            "AuditSyslog: forwarding to \(transport.destination) through \(settings.queuePath) (\(queue.count) events "
                + "queued from before; full queue: \(settings.queueFull.rawValue))")
        forwarder.start()
    }

    public func before(_ event: ActionEvent) throws -> (decision: HookDecision, token: Int64) {
        try before(batch: [event])[0]
    }

    public func after(_ event: ActionEvent, token: Int64, outcome: ActionOutcome) throws {
        try after(batch: [(event, token, outcome)])
    }

    public func before(batch events: [ActionEvent]) throws -> [(decision: HookDecision, token: Int64)] {
        try before(batch: events, positions: [])
    }

    public func after(batch results: [(event: ActionEvent, token: Int64, outcome: ActionOutcome)]) throws {
        try after(batch: results, outcomePositions: [], actionPositions: [])
    }

    public var healthProblem: String? {
        guard let s = state.withLock({ $0 }) else { return "not configured" }
        var problems: [String] = []
        if let p = appendProblem.withLock({ $0 }) { problems.append(p) }
        let status = s.forwarder.currentStatus
        if let p = status.problem {
            let since = status.since.map { " since \(SyslogMessage.timestamp($0))" } ?? ""
            problems.append(
                "cannot deliver to \(s.forwarder.transport.destination)\(since): \(p); \(s.queue.count) events queued")
        }
        let dropped = s.queue.dropped
        if dropped > 0 { problems.append("\(dropped) events dropped since start (queue full, policy drop_oldest)") }
        return problems.isEmpty ? nil : problems.joined(separator: "; ")
    }

    public func shutdown() {
        guard let s = state.withLock({ $0 }) else { return }
        let left = s.forwarder.stop(drainSeconds: s.settings.drainSeconds)
        let status = s.forwarder.currentStatus
        s.log(
            left == 0 ? .info : .warning,
            "AuditSyslog: stopped; \(status.delivered) events delivered (\(status.resent) of them resent), \(left) left in "
                + "\(s.settings.queuePath) for the next start")
    }

    // MARK: Helpers

    func configured() throws -> State {
        guard let s = state.withLock({ $0 }) else { throw PluginError("plugin AuditSyslog is not configured") }
        return s
    }

    func enqueue(
        _ s: State, count: Int, exempt: Bool, doing what: String, make: (Int, UInt64) -> [UInt8]
    ) throws -> UInt64 {
        guard count > 0 else { return s.queue.nextSequence }
        let policy: DurableQueue.FullPolicy = s.settings.queueFull
        do {
            var base: UInt64 = 0
            let result = try s.queue.append(count: count, policy: policy, exempt: exempt) { seq in
                if base == 0 { base = seq }
                return make(Int(seq - base), seq)
            }
            appendProblem.withLock { $0 = nil }
            if result.dropped > 0 {
                s.log(
                    .warning,
                    "AuditSyslog: queue full: dropped the \(result.dropped) oldest events (\(s.queue.dropped) since start)"
                )
            }
            s.forwarder.notify()
            return result.first
        } catch {
            appendProblem.withLock { $0 = "last append failed: \(error)" }
            throw PluginError("AuditSyslog cannot \(what): \(error)")
        }
    }
}

extension AuditSyslogPlugin: TrailPositionObserver {
    /// The actions' messages with the trail rows AuditSQLite wrote just before (`audit_seq`, `audit_hash`).
    public func before(batch events: [ActionEvent], positions: [TrailPosition?]) throws
        -> [(decision: HookDecision, token: Int64)]
    {
        let s = try configured()
        // A bulk action: its messages wait on disk until its outcomes are queued (or 2 s at most).
        if events.count >= Self.bulkEvents { s.forwarder.pause(atMost: 2) }
        var encoder = AuditMessageEncoder(formatter: s.formatter, time: Date().timeIntervalSince1970)
        let first = try enqueue(s, count: events.count, exempt: false, doing: "queue \(events.count) events") {
            i, seq in encoder.action(events[i], event: seq, position: i < positions.count ? positions[i] : nil)
        }
        return (0..<events.count).map { (HookDecision.allow, Int64(first + UInt64($0))) }
    }

    public func after(
        batch results: [(event: ActionEvent, token: Int64, outcome: ActionOutcome)], outcomePositions: [TrailPosition?],
        actionPositions: [TrailPosition?]
    ) throws {
        let s = try configured()
        var encoder = AuditMessageEncoder(formatter: s.formatter, time: Date().timeIntervalSince1970)
        // Outcomes of actions that were let through always fit: `refuse` bounds new actions, and each admitted
        // action has exactly one outcome (the overshoot is bounded by the actions in flight).
        defer { if results.count >= Self.bulkEvents { s.forwarder.resume() } }
        _ = try enqueue(s, count: results.count, exempt: true, doing: "queue \(results.count) outcomes") { i, seq in
            let r = results[i]
            return encoder.outcome(
                r.event, outcome: r.outcome, event: seq, ref: r.token,
                position: i < outcomePositions.count ? outcomePositions[i] : nil,
                actionPosition: i < actionPositions.count ? actionPositions[i] : nil)
        }
    }
}

extension AuditSyslogPlugin: InterruptedActionObserver {
    /// Queues one `interrupted` outcome message per action (always admitted, like outcomes: the actions were let
    /// through before the crash).
    public func observeInterrupted(_ actions: [InterruptedAction]) throws {
        let s = try configured()
        let now = Date().timeIntervalSince1970
        _ = try enqueue(s, count: actions.count, exempt: true, doing: "queue \(actions.count) interrupted outcomes") {
            i, seq in s.formatter.interrupted(actions[i], event: seq, time: now).encoded()
        }
    }
}

/// The entry symbol the host looks up with `dlsym` (``ctdPluginEntrySymbol``).
@_cdecl("ctd_plugin_create")
public func ctdPluginCreate() -> UnsafeMutableRawPointer? {
    CtdPluginExport.export(AuditSyslogPlugin())
}
