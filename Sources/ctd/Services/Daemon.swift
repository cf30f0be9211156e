import Conntrack
import CtdCore
import CtdRuntime
import Foundation
import HTTPTransport
import Logging
import PluginHost
import ServiceLifecycle
import XMLRPC

/// Builds the parts in order (plugins, the conntrack mirror, the procedures, the HTTP listener) and runs them as a
/// service group: SIGTERM and SIGINT stop them in reverse order, SIGHUP reloads (``Reloader``).
final class Daemon {
    let config: DaemonConfig
    let logger: Logger
    /// Reads the configuration again, as at start (the config file with the command line's options), on SIGHUP.
    let reloadConfig: () throws -> DaemonConfig
    let logLevel: LogLevelSwitch

    init(
        config: DaemonConfig, logger: Logger, logLevel: LogLevelSwitch,
        reloadConfig: @escaping () throws -> DaemonConfig
    ) {
        self.config = config
        self.logger = logger
        self.logLevel = logLevel
        self.reloadConfig = reloadConfig
    }

    /// Where plugins are looked for when the config names no directory: next to the binary (a build directory)
    /// and `../lib/ctd/plugins` (an installation).
    static func defaultPluginDirectories() -> [String] {
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let linkTarget =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            .map { URL(fileURLWithPath: $0).deletingLastPathComponent() } ?? exe
        return [
            linkTarget.appendingPathComponent("../lib/ctd/plugins").standardized.path,
            linkTarget.path,
        ]
    }

    /// Runs until SIGTERM or SIGINT. Throws (and the process exits non-zero) when a required part cannot start:
    /// the authenticator, the kernel table, or the listening socket.
    func run() async throws {
        ProcessTuning.limitMallocArenas()
        let plugins = try PluginRegistry.load(config.pluginSelection, logger: logger)
        // When a later part cannot start, the plugins are stopped before the process exits (threads such as
        // AuditSyslog's sender must not outlive main); after a normal stop PluginsService did it and this is a no-op.
        defer { plugins.shutdown() }
        for p in plugins.all {
            logger.info(
                "plugin loaded",
                metadata: [
                    "name": "\(p.name)", "id": "\(p.metadata.id)", "version": "\(p.metadata.version)",
                    "path": "\(p.path)",
                ])
        }
        let clock = MonotonicClock.system
        let hide = HidePolicy(blocks: config.hide.compactMap(CIDRBlock.init))
        let mirror = ConntrackMirror(hide: hide, clock: clock, logger: logger)
        let kernel = KernelConntrack(clock: clock)
        let follower = ConntrackService(
            mirror: mirror, kernel: kernel, receiveBuffer: config.receiveBuffer, counterInterval: config.counterInterval,
            logger: logger)
        // The TLS files are checked before the table is read: a dump of a million entries takes seconds.
        if let certificate = config.tlsCertificate, let key = config.tlsKey {
            do {
                _ = try HTTPServer.makeTLSContext(certificate: certificate, key: key)
            } catch {
                throw DaemonConfig.Error(message: "\(error)")
            }
        }
        do {
            try follower.start()
        } catch {
            throw DaemonConfig.Error(
                message:
                    "cannot read the kernel conntrack table (\(error)); ctd needs CAP_NET_ADMIN and the nf_conntrack module"
            )
        }
        // Before any call is served: actions a crash left without an outcome get one, from the kernel's table.
        InterruptedActionRecovery(plugins: plugins, dump: { try kernel.dump($0) }, now: { clock.now() }, logger: logger)
            .run()
        let table = ConntrackTable(mirror: mirror, kernel: kernel, service: follower, logger: logger)
        let sessions = SessionStore(
            idleTimeout: config.idleTimeout, maxLifetime: config.maxLifetime, maxSessions: config.maxSessions,
            maxSessionsPerUser: config.core.maxSessionsPerUser, maxPinnedGenerations: config.maxPinnedSnapshots,
            clock: clock)
        var settings = config.core
        settings.labelNames = ConnLabelMap.load(path: config.connlabelFile)
        if settings.labelNames.path != nil {
            logger.info(
                "ct label names read from \(config.connlabelFile)",
                metadata: ["names": "\(settings.labelNames.sortedNames.count)"])
        } else {
            logger.debug("no \(config.connlabelFile): ct labels are shown by bit number")
        }
        let exporter = config.metricsListen == nil ? nil : MetricsExporter()
        let context = ServerContext(
            settings: settings, table: table, sessions: sessions, plugins: plugins, clock: clock,
            metrics: exporter?.serverMetrics ?? ServerMetrics(), logger: logger)
        let dispatcher = Dispatcher(context: context)
        var options = HTTPServer.Options(
            host: config.listen, port: config.port, maxBodyBytes: config.maxBodyBytes,
            tlsCertificate: config.tlsCertificate, tlsKey: config.tlsKey, workerThreads: config.workerThreads)
        options.maxConnections = config.maxConnections
        options.maxConnectionsPerAddress = config.maxConnectionsPerAddress
        options.headerTimeout = config.headerTimeout
        options.bodyTimeout = config.bodyTimeout
        options.idleTimeout = config.connectionIdleTimeout
        options.writeTimeout = config.writeTimeout
        options.allowedOrigins = config.allowedOrigins
        if let names = config.serverNames { options.serverNames = names }
        if config.webEnabled {
            let root =
                config.webRoot.isEmpty
                ? StaticFiles.defaultRoot(executable: CommandLine.arguments[0]) : config.webRoot
            if let root, let web = try? StaticFiles(root: root, banner: config.webBanner) {
                options.web = web
                logger.info("web console served on GET / from \(root)")
            } else {
                logger.warning("web console not served: no index.html under \(root ?? "share/ctd/www or www/")")
            }
        }
        let server = HTTPServer(
            options: options,
            handler: { body, client, respond in dispatcher.handle(body: body, client: client, respond: respond) },
            tooLargeBody: XMLRPCEncoder.fault(.requestTooLarge(limit: config.maxBodyBytes)),
            logger: logger)
        let port: Int
        do {
            port = try server.start()
        } catch {
            follower.stop()
            throw error
        }
        var metricsServer: HTTPServer?
        var metricsEndpoints: [HidePolicy.Endpoint] = []
        var readyLines: [String] = []
        if let exporter, let address = config.metricsListen {
            let m = MetricsService.makeServer(exporter: exporter, address: address, config: config, logger: logger)
            let metricsPort: Int
            do {
                metricsPort = try m.start()
            } catch {
                server.shutdown()
                follower.stop()
                throw error
            }
            exporter.attach(
                mirror: mirror, table: table, sessions: sessions, server: server,
                hookPlugins: plugins.hooks.map { $0.0.name })
            metricsServer = m
            metricsEndpoints = LocalAddresses.listening(on: address.host).map {
                HidePolicy.Endpoint(address: $0, port: UInt16(metricsPort))
            }
            readyLines.append("ctd: metrics on \(address.host) port \(metricsPort)")
            let place = HTTPServer.display(host: address.host, port: metricsPort)
            logger.notice("serving Prometheus metrics on http://\(place)/metrics")
            if !Self.isLoopback(address.host) {
                logger.warning(
                    "the metrics listener \(place) is beyond loopback and has no login: whoever reaches it reads the table's size, the call and login counts; limit it with a firewall")
            }
        }
        if config.hideOwnConnections {
            mirror.hideOwnEndpoints(
                Set(
                    LocalAddresses.listening(on: config.listen).map {
                        HidePolicy.Endpoint(address: $0, port: UInt16(port))
                    } + metricsEndpoints))
        }
        let scheme = config.tlsCertificate == nil ? "http" : "https"
        logger.notice(
            "ctd \(ctdVersion) serving XML-RPC on \(scheme)://\(HTTPServer.display(host: config.listen, port: port))/RPC2")
        if config.tlsCertificate == nil, !Self.isLoopback(config.listen) {
            logger.warning(
                "listening on \(HTTPServer.display(host: config.listen, port: port)) without TLS: passwords and session ids travel in the clear; set tls_certificate and tls_key, or listen on 127.0.0.1")
        }

        let notifier = SystemdNotifier(logger: logger)
        // The watchdog's internal request: harmless, needs no login, goes through decoding and the dispatcher.
        let probe = Array(
            "<?xml version=\"1.0\"?><methodCall><methodName>system.listMethods</methodName><params/></methodCall>".utf8)
        let reloader = Reloader(
            current: config, load: reloadConfig, logLevel: logLevel, mirror: mirror, follower: follower,
            server: server, plugins: plugins, sessions: sessions, logger: logger, notifier: notifier)
        // Started in this order above; stopped in reverse: the reloader, then HTTP (drained), then the conntrack
        // threads, then the last housekeeping (the summaries of failed logins), then the plugins (so a kill in flight
        // and the last audit records still find the audit store open).
        // A service that fails (a listener's loop, the reloader) starts the same ordered shutdown as SIGTERM, not a
        // cancellation of every service at once: the plugins must still shut down after HTTP has drained.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: ([
                    .init(service: PluginsService(plugins: plugins, logger: logger), serviceName: "plugins"),
                    .init(service: MaintenanceService(context: context, interval: .seconds(5)), serviceName: "maintenance"),
                    .init(service: ConntrackFollowerService(follower: follower, logger: logger), serviceName: "conntrack"),
                    .init(
                        service: HTTPService(
                            server: server, actions: context.actions, endLongPolls: { mirror.changes.close() },
                            drainTimeout: config.drainTimeout, logger: logger),
                        serviceName: "http"),
                    .init(service: reloader, serviceName: "reload"),
                ] + (metricsServer.map { [.init(service: MetricsService(server: $0, logger: logger), serviceName: "metrics")] } ?? []) + [
                    .init(
                        service: NotifyService(
                            notifier: notifier,
                            status: {
                                SystemdNotifier.Message.status(
                                    entries: mirror.statistics.entries, limit: nil,
                                    connections: server.openConnections, sessions: sessions.count)
                            },
                            alive: {
                                guard let answer = server.probe(body: probe, client: "watchdog", timeout: 10) else {
                                    return false
                                }
                                return String(decoding: answer, as: UTF8.self).contains("<methodResponse>")
                            },
                            statusInterval: 5),
                        serviceName: "notify"),
                    .init(
                        service: ReadyAnnouncer(
                            line: (readyLines + ["ctd: listening on \(config.listen) port \(port)"]).joined(separator: "\n")),
                        serviceName: "ready"),
                ] as [ServiceGroupConfiguration.ServiceConfiguration]).map {
                    var service = $0
                    service.failureTerminationBehavior = .gracefullyShutdownGroup
                    return service
                },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
        logger.notice("ctd stopped")
    }

    /// Whether a listen address reaches only this machine (127.0.0.0/8, ::1, localhost).
    static func isLoopback(_ host: String) -> Bool {
        let h = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
        return h == "localhost" || h == "::1" || h.hasPrefix("127.") || h == "::ffff:127.0.0.1"
    }
}
