import Conntrack
import CtdCore
import CtdPluginAPI
import Foundation
import HTTPTransport
import Logging
import PluginHost
import ServiceLifecycle
import UnixSignals

/// SIGHUP: reads the configuration again and applies what can change without dropping a client: the log level,
/// the hide list, the TLS certificate and key, and the settings of plugins that declare them reloadable (AuthSHA's
/// password file and roles among them). What needs a restart is named in the log. A reload that fails keeps the
/// whole old configuration and says why.
final class Reloader: Service, @unchecked Sendable {
    private var current: DaemonConfig
    private let load: () throws -> DaemonConfig
    private let logLevel: LogLevelSwitch
    private let mirror: ConntrackMirror
    private let follower: ConntrackService
    private let server: HTTPServer
    private let plugins: PluginRegistry
    private let sessions: SessionStore
    private let logger: Logger
    private let notifier: SystemdNotifier?
    private let lock = NSLock()

    init(
        current: DaemonConfig, load: @escaping () throws -> DaemonConfig, logLevel: LogLevelSwitch,
        mirror: ConntrackMirror, follower: ConntrackService, server: HTTPServer, plugins: PluginRegistry,
        sessions: SessionStore, logger: Logger, notifier: SystemdNotifier? = nil
    ) {
        self.notifier = notifier
        self.sessions = sessions
        self.current = current
        self.load = load
        self.logLevel = logLevel
        self.mirror = mirror
        self.follower = follower
        self.server = server
        self.plugins = plugins
        self.logger = logger
    }

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in hangups {
                // RELOADING=1 carries MONOTONIC_USEC (CLOCK_MONOTONIC), as systemd 253's Type=notify-reload asks.
                self.notifier?.send(SystemdNotifier.Message.reloading(monotonicMicroseconds: monotonicMicroseconds()))
                let lines = await blocking { [self] in self.reload() }
                self.notifier?.send(
                    "\(SystemdNotifier.Message.ready)\n\(SystemdNotifier.Message.statusText("reloaded: " + (lines.last ?? "")))")
            }
        }
    }

    /// Applies the configuration as it is now; returns the lines it logged (what changed, or why nothing did).
    @discardableResult
    func reload() -> [String] {
        lock.lock()
        defer { lock.unlock() }
        logger.notice("SIGHUP: reloading the configuration")
        let new: DaemonConfig
        do {
            new = try load()
        } catch {
            logger.error("reload failed, the old configuration stays: \(error)")
            return ["failed: \(error)"]
        }
        var changes: [String] = []
        if let cert = new.tlsCertificate, let key = new.tlsKey, current.tlsCertificate != nil {
            do {
                try server.reloadTLS(certificate: cert, key: key)
                changes.append("TLS certificate \(cert) and key \(key) loaded for new connections")
            } catch {
                logger.error("reload failed, the old configuration stays: \(error)")
                return ["failed: \(error)"]
            }
        }
        let (pluginChanges, pluginFailures) = plugins.reload(sections: new.pluginSections)
        for failure in pluginFailures {
            logger.error("reload of plugin \(failure); that plugin keeps its old settings")
        }
        changes += pluginChanges
        changes += revokeSessionsThatLostTheirRole()
        if new.logLevel != current.logLevel, let level = Logger.Level(rawValue: new.logLevel) {
            logLevel.level = level
            changes.append("log level \(current.logLevel) -> \(new.logLevel)")
        }
        if new.hide != current.hide || new.hideOwnConnections != current.hideOwnConnections {
            mirror.setHiddenBlocks(new.hide.compactMap(CIDRBlock.init))
            follower.resync()
            changes.append("hidden blocks: \(new.hide.joined(separator: ", "))")
        }
        for (name, changed) in restartOnly(new) where changed {
            logger.warning("reload: \(name) changed; it takes effect at the next restart")
        }
        var kept = new
        kept.hideOwnConnections = current.hideOwnConnections
        current = kept
        if changes.isEmpty { changes.append("nothing changed") }
        for line in changes { logger.notice("reload: \(line)") }
        return changes
    }

    /// Ends the sessions of users the authenticator no longer knows, who lost the role their session has, or who
    /// were narrowed to their own connections.
    private func revokeSessionsThatLostTheirRole() -> [String] {
        guard let checker = plugins.authenticator as? any IdentityRechecking else { return [] }
        let ended = sessions.revoke { session in
            guard let now = checker.currentIdentity(of: session.identity.user), let best = now.highestRole else {
                return false
            }
            let narrowed = session.identity.scope == .all && now.scope == .own
            return best >= session.role && !narrowed
        }
        return ended.map { "session of \($0.identity.user) (\($0.role.rawValue)) from \($0.clientAddress) ended" }
    }

    private func restartOnly(_ new: DaemonConfig) -> [(String, Bool)] {
        [
            ("[server] listen", new.listen != current.listen), ("[server] port", new.port != current.port),
            ("[metrics] listen", new.metricsListen != current.metricsListen),
            ("[log] format", new.logFormat != current.logFormat),
            ("[service] user", new.serviceUser != current.serviceUser),
            ("TLS on or off", (new.tlsCertificate == nil) != (current.tlsCertificate == nil)),
            ("[plugins] auth", new.authenticator != current.authenticator),
            ("[plugins] enable", new.plugins != current.plugins),
            ("[conntrack] receive_buffer", new.receiveBuffer != current.receiveBuffer),
            ("[conntrack] connlabel_file", new.connlabelFile != current.connlabelFile),
            ("[sessions]", new.idleTimeout != current.idleTimeout || new.maxSessions != current.maxSessions),
        ]
    }
}

/// The log level every logger of the process follows, changed by a reload.
final class LogLevelSwitch: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Logger.Level

    init(_ level: Logger.Level) { value = level }

    var level: Logger.Level {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}

/// CLOCK_MONOTONIC in microseconds, for RELOADING=1's MONOTONIC_USEC.
func monotonicMicroseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
}
