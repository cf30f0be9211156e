import Conntrack
import CtdPluginAPI
import Logging
import PluginHost

/// At start-up, before any call is served: the actions a recorder hook (AuditSQLite) wrote as about to happen and
/// never completed, because the daemon stopped in between (`kill -9`, a crash), get an "interrupted" outcome derived
/// from the kernel table as it is now; observer hooks (AuditSyslog) hear of them (docs/audit.md, "Crash recovery").
public struct InterruptedActionRecovery {
    let plugins: PluginRegistry
    let dump: ((Flow) -> Void) throws -> Void
    let now: () -> Double
    let logger: Logger

    /// - Parameters:
    ///   - dump: reads the kernel table (``KernelConntrack/dump(_:)``); called once, only when some action is unfinished.
    ///   - now: the clock the flows are stamped with, for their remaining timeouts.
    public init(
        plugins: PluginRegistry, dump: @escaping ((Flow) -> Void) throws -> Void, now: @escaping () -> Double,
        logger: Logger
    ) {
        self.plugins = plugins
        self.dump = dump
        self.now = now
        self.logger = logger
    }

    /// The kernel's identity of an entry: the id and the original tuple in its zone. An id alone could name a
    /// recycled entry; a tuple alone could name a newer connection.
    struct Key: Hashable {
        var id: UInt32
        var l3proto: String
        var l4proto: UInt8
        var source: String
        var destination: String
        var sourcePort: UInt16
        var destinationPort: UInt16
        var zone: UInt16

        init(_ c: ConnectionInfo) {
            id = c.id
            l3proto = c.l3proto
            l4proto = c.l4proto
            source = c.origSource
            destination = c.origDestination
            sourcePort = c.origSourcePort
            destinationPort = c.origDestinationPort
            zone = c.zone
        }
    }

    /// Runs the recovery; a failing hook is logged and shown in its health, and never stops the daemon (its rows
    /// stay pending and the next start tries again).
    /// - Returns: how many actions were recorded as interrupted.
    @discardableResult
    public func run() -> Int {
        var recorded = 0
        for (info, hook) in plugins.hooks {
            guard let recorder = hook as? any UnfinishedActionRecorder else { continue }
            let unfinished: [UnfinishedAction]
            do {
                unfinished = try recorder.unfinishedActions()
            } catch {
                fail(info.name, "cannot list the actions left without an outcome: \(error)")
                continue
            }
            if unfinished.isEmpty { continue }
            let present: [Key: ConnectionInfo]
            do {
                present = try kernelEntries(for: unfinished)
            } catch {
                fail(info.name, "cannot read the kernel table to settle \(unfinished.count) interrupted actions: \(error)")
                continue
            }
            var actions = unfinished.map { u -> InterruptedAction in
                let current = u.event.connection.flatMap { present[Key($0)] }
                return InterruptedAction(
                    event: u.event, token: u.token, recordedBy: info.name,
                    connectionPresent: u.event.connection == nil ? nil : current != nil, current: current,
                    reason: Self.reason(u.event, current: current))
            }
            do {
                let positions = try recorder.recordInterrupted(actions)
                for (i, p) in positions.enumerated() where i < actions.count {
                    actions[i].outcomeRecord = p?.outcome
                    actions[i].actionRecord = p?.action
                }
            } catch {
                fail(info.name, "cannot record \(actions.count) interrupted actions: \(error)")
                continue
            }
            recorded += actions.count
            let stillThere = actions.filter { $0.connectionPresent == true }.count
            let gone = actions.filter { $0.connectionPresent == false }.count
            logger.warning(
                "actions interrupted by the last stop recorded",
                metadata: [
                    "plugin": "\(info.name)", "actions": "\(actions.count)", "connection_still_there": "\(stillThere)",
                    "connection_gone": "\(gone)",
                ])
            for (other, observer) in plugins.hooks where other.name != info.name {
                guard let observer = observer as? any InterruptedActionObserver else { continue }
                do {
                    try observer.observeInterrupted(actions)
                } catch {
                    fail(other.name, "cannot forward \(actions.count) interrupted actions: \(error)")
                }
            }
        }
        return recorded
    }

    func kernelEntries(for unfinished: [UnfinishedAction]) throws -> [Key: ConnectionInfo] {
        let ids = Set(unfinished.compactMap { $0.event.connection?.id })
        var found: [Key: ConnectionInfo] = [:]
        if ids.isEmpty { return found }
        let stamp = now()
        try dump { flow in
            guard ids.contains(flow.id) else { return }
            let info = flow.connectionInfo(now: stamp)
            found[Key(info)] = info
        }
        return found
    }

    /// What the kernel's state says about the action, in one sentence; the finding first (the outcome
    /// `interrupted` already says that the daemon stopped before recording one).
    static func reason(_ event: ActionEvent, current: ConnectionInfo?) -> String {
        guard let before = event.connection else {
            return "stopped before the outcome was recorded (no kernel state to check)"
        }
        switch event.kind {
        case .kill:
            return current == nil
                ? "the connection is gone from the kernel table at restart: the kill reached it, or it ended otherwise"
                : "the connection is still in the kernel table at restart: the kill did not reach it"
        case .change:
            guard let current else { return "the connection is gone from the kernel table at restart" }
            if event.field == "mark", let wanted = event.newValue.flatMap(UInt32.init) {
                let prefix = "at restart the connection has mark \(current.mark)"
                if current.mark == wanted {
                    return prefix + ", the requested value"
                        + (before.mark == wanted ? " (it had that mark before too)" : ": the change reached it")
                }
                return prefix + ", not the requested \(wanted)"
                    + (current.mark == before.mark ? ": the change did not reach it" : "")
            }
            return "the connection is still in the kernel table at restart; whether the \(event.field ?? "") change "
                + "reached it cannot be told from the table"
        default:
            return "stopped before the outcome was recorded"
        }
    }

    private func fail(_ plugin: String, _ problem: String) {
        logger.error("\(plugin): \(problem)")
        plugins.reportProblem(plugin, problem)
    }
}
