import CSystemd
import Foundation
import Logging
import ServiceLifecycle

/// The service manager's side of `Type=notify` (sd_notify(3) through libsystemd). Without `$NOTIFY_SOCKET` every
/// call is a no-op, so ctd started by hand behaves as before.
struct SystemdNotifier: Sendable {
    let logger: Logger

    /// The messages ctd sends, built in one place (unit-tested).
    enum Message {
        static let ready = "READY=1"
        static func reloading(monotonicMicroseconds: UInt64) -> String {
            "RELOADING=1\nMONOTONIC_USEC=\(monotonicMicroseconds)"
        }
        static let stopping = "STOPPING=1"
        static let watchdog = "WATCHDOG=1"
        /// `STATUS=` is one line: newlines in the text would end the assignment early.
        static func status(entries: Int, limit: Int?, connections: Int, sessions: Int) -> String {
            let cap = limit.map { " of \($0)" } ?? ""
            return "STATUS=\(entries) entries\(cap); \(connections) client connections, \(sessions) sessions"
        }
        static func statusText(_ text: String) -> String {
            "STATUS=" + text.replacingOccurrences(of: "\n", with: " ")
        }
    }

    var enabled: Bool { ProcessInfo.processInfo.environment["NOTIFY_SOCKET"] != nil }

    func send(_ state: String) {
        let rc = ctd_sd_notify(state)
        if rc < 0 {
            logger.warning("sd_notify(\(state.prefix(12))) failed: \(String(cString: strerror(-rc)))")
        }
    }

    /// Half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises; nil when the manager asks for no pings.
    func watchdogInterval() -> Double? {
        var usec: UInt64 = 0
        let rc = ctd_sd_watchdog_enabled(&usec)
        if rc < 0 {
            logger.warning("WATCHDOG_USEC is malformed (\(String(cString: strerror(-rc)))); no watchdog pings")
            return nil
        }
        return rc > 0 ? Double(usec) / 2e6 : nil
    }
}

/// READY=1 once the group runs (the dump is done and the listener is open before the group starts), STATUS=
/// every `statusInterval` seconds, WATCHDOG=1 at half of WATCHDOG_USEC, each only after `alive()` proved the event
/// loops and the request path answer, and STOPPING=1 at shutdown.
struct NotifyService: Service {
    let notifier: SystemdNotifier
    let status: @Sendable () -> String
    /// True when an internal request went through the event loops and the dispatcher in time.
    let alive: @Sendable () -> Bool
    let statusInterval: Double

    func run() async throws {
        guard notifier.enabled else {
            try? await gracefulShutdown()
            return
        }
        notifier.send("\(SystemdNotifier.Message.ready)\n\(status())")
        let watchdog = notifier.watchdogInterval()
        let tick = min(watchdog ?? statusInterval, statusInterval)
        // The sleeps end at once when shutdown begins.
        try? await cancelWhenGracefulShutdown { try await loop(watchdog: watchdog, tick: tick) }
        notifier.send("\(SystemdNotifier.Message.stopping)\n\(SystemdNotifier.Message.statusText("stopping"))")
    }

    private func loop(watchdog: Double?, tick: Double) async throws {
        var sinceStatus = 0.0
        while !Task.isCancelled {
            try await Task.sleep(for: .milliseconds(Int(tick * 1000)))
            if watchdog != nil {
                let alive = self.alive
                if await blocking({ alive() }) {
                    notifier.send(SystemdNotifier.Message.watchdog)
                } else {
                    notifier.logger.error("watchdog check failed: the request path did not answer; no WATCHDOG=1")
                }
            }
            sinceStatus += tick
            if sinceStatus >= statusInterval {
                sinceStatus = 0
                notifier.send(status())
            }
        }
    }
}
