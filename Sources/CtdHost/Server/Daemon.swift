import CConntrack
import Foundation
import Logging

/// Wires the parts together: plugins, the mirror, sessions, the RPC service and the HTTP server.
public final class Daemon {
    public let config: DaemonConfig
    let logger: Logger

    public init(config: DaemonConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    /// Where plugins are looked for when the config names no directory: next to the binary (a build directory)
    /// and `../lib/ctd/plugins` (an installation).
    public static func defaultPluginDirectories() -> [String] {
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let linkTarget =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            .map { URL(fileURLWithPath: $0).deletingLastPathComponent() } ?? exe
        return [
            linkTarget.appendingPathComponent("../lib/ctd/plugins").standardized.path,
            linkTarget.path,
        ]
    }

    /// glibc malloc arenas (see ``run()``).
    static let mallocArenas: Int32 = 2

    /// Runs until the process is stopped. Throws (and the process exits non-zero) when a required part cannot start:
    /// the authenticator, the kernel table, or the listening socket.
    public func run() throws {
        // Each thread that allocates would get a glibc malloc arena of its own (up to 8 per core) and keep its freed
        // pages: two arenas took the peak after the load tests and a bulk kill at 250k from 155 to 130-143 MB
        // (`make bench`) at no measured cost to throughput. MALLOC_ARENA_MAX (or a GLIBC_TUNABLES malloc.arena_max)
        // in the environment overrides it.
        _ = ctd_limit_malloc_arenas(Self.mallocArenas)
        let plugins = try PluginRegistry.load(config: config, logger: logger)
        for p in plugins.all {
            logger.info(
                "plugin loaded",
                metadata: [
                    "name": "\(p.name)", "id": "\(p.metadata.id)", "version": "\(p.metadata.version)",
                    "path": "\(p.path)",
                ])
        }
        let hide = HidePolicy(
            blocks: config.hide.compactMap(CIDRBlock.init),
            ownTCPPorts: config.hideOwnConnections ? [UInt16(config.port)] : [])
        let mirror = ConntrackMirror(hide: hide, logger: logger)
        let service = ConntrackService(
            mirror: mirror, receiveBuffer: config.receiveBuffer, counterInterval: config.counterInterval,
            logger: logger)
        do {
            try service.start()
        } catch {
            throw DaemonConfig.Error(
                message:
                    "cannot read the kernel conntrack table (\(error)); ctd needs CAP_NET_ADMIN and the nf_conntrack module"
            )
        }
        let sessions = SessionStore(
            idleTimeout: config.idleTimeout, maxLifetime: config.maxLifetime, maxSessions: config.maxSessions)
        let rpc = RPCService(config: config, mirror: mirror, sessions: sessions, plugins: plugins, logger: logger)
        let server = HTTPServer(
            options: .init(
                host: config.listen, port: config.port, maxBodyBytes: config.maxBodyBytes,
                tlsCertificate: config.tlsCertificate, tlsKey: config.tlsKey, workerThreads: config.workerThreads),
            handler: { body, client in rpc.handle(body: body, client: client) },
            tooLargeBody: XMLRPCEncoder.fault(.requestTooLarge(limit: config.maxBodyBytes)),
            logger: logger)
        let port = try server.start()
        if config.hideOwnConnections { mirror.hideOwnPort(UInt16(port)) }
        let scheme = config.tlsCertificate == nil ? "http" : "https"
        logger.notice("ctd \(ctdVersion) serving XML-RPC on \(scheme)://\(config.listen):\(port)/RPC2")
        // Machine-readable line for scripts and tests that start ctd on port 0.
        print("ctd: listening on \(config.listen) port \(port)")
        fflush(stdout)
        let signals = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                self.logger.notice("signal \(sig): shutting down")
                service.stop()
                plugins.shutdown()
                server.stop()
                exit(0)
            }
            source.resume()
            return source
        }
        try server.wait()
        withExtendedLifetime(signals) {}
    }
}
