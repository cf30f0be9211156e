import CtdCore
import ServiceLifecycle

/// Periodic housekeeping of the procedures (the summaries of failed logins), and its last round at shutdown, after
/// the listener has drained and before the plugins close.
struct MaintenanceService: Service {
    let context: ServerContext
    let interval: Duration

    func run() async throws {
        let context = self.context
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                await blocking { context.maintenance() }
            }
        }
        await blocking { context.maintenance(final: true) }
    }
}
