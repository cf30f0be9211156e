import Conntrack
import CtdCore
import Foundation
import HTTPTransport
import Logging
import PluginHost
import ServiceLifecycle

/// Runs a blocking call off the cooperative thread pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: body()) }
    }
}

/// The HTTP listener. On shutdown: stop accepting, let the calls in flight finish (at most `drainTimeout` seconds),
/// then refuse writes that have not started and wait for the writes already running, so that none is cut between
/// the kernel and its audit record; then close every connection.
struct HTTPService: Service {
    let server: HTTPServer
    let actions: ActionGate
    /// Answers the long polls at once, so that they do not hold the drain.
    let endLongPolls: @Sendable () -> Void
    let drainTimeout: Double
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        let server = self.server
        let actions = self.actions
        let drainTimeout = self.drainTimeout
        server.stopAccepting()
        endLongPolls()
        logger.notice("no longer accepting connections; \(server.callsInFlight) calls in flight")
        let drained = await blocking { server.drain(timeout: drainTimeout) }
        if !drained {
            logger.warning(
                "\(server.callsInFlight) calls still running after \(drainTimeout) s; writes not yet started are refused")
        }
        await blocking { actions.closeAndWait() }
        // What is left are reads and refused writes: they finish at once.
        _ = await blocking { server.drain(timeout: 2) }
        await blocking { server.shutdown() }
    }
}

/// The conntrack event and counter threads, stopped after the listener.
struct ConntrackFollowerService: Service {
    let follower: ConntrackService
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        let follower = self.follower
        await blocking { follower.stop() }
        logger.info("conntrack threads stopped")
    }
}

/// The plugins, shut down last: an audit hook closes its store only when no action can reach it any more.
struct PluginsService: Service {
    let plugins: PluginRegistry
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        let plugins = self.plugins
        await blocking { plugins.shutdown() }
        logger.info("plugins shut down")
    }
}

/// Prints the machine-readable line scripts and tests wait for ("ctd: listening on ADDR port N", useful with port 0)
/// once the service group runs, so that its signal handlers are in place: a SIGTERM right after the line drains
/// and stops as any other.
struct ReadyAnnouncer: Service {
    let line: String

    func run() async throws {
        print(line)
        fflush(stdout)
        try? await gracefulShutdown()
    }
}
