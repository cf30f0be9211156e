import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Handles one request: body and client address in; the response body goes to `respond`, exactly once, from any
/// thread, at once or later (a long poll answers when something happens, holding no thread meanwhile). Runs on a
/// worker thread (never on the event loop), so it may block.
public typealias RequestHandler = @Sendable (
    _ body: [UInt8], _ client: String, _ respond: @escaping @Sendable ([UInt8]) -> Void
) -> Void

/// HTTP/1.1 with keep-alive (and optional TLS) on SwiftNIO: POST on `/` and `/RPC2`, body size limited before it is
/// buffered, calls handed to a thread pool so that slow calls (password hashing, PAM) never stall other clients.
public final class HTTPServer: @unchecked Sendable {
    public struct Options: Sendable {
        public var host: String
        public var port: Int
        public var maxBodyBytes: Int
        public var tlsCertificate: String?
        public var tlsKey: String?
        public var workerThreads: Int
        /// Open connections at most, in total and from one client address; the excess is closed as it is accepted
        /// (and counted, see ``HTTPServer/refusedConnections``), like sshd's MaxStartups and nginx's limit_conn.
        public var maxConnections = 512
        public var maxConnectionsPerAddress = 64
        /// Deadlines, in seconds. A request head must be complete this long after its first byte (or after the previous response, for bytes
        /// that came while it was being answered).
        public var headerTimeout = 10.0
        /// A request body must be complete this long after its head.
        public var bodyTimeout = 30.0
        /// A connection with no request under way is closed after this long.
        public var idleTimeout = 60.0
        /// An answer must be in the socket this long after ctd starts writing it; a client that does not read it
        /// (its window stays shut) is closed, so that the answer's memory is not held for it.
        public var writeTimeout = 60.0
        /// After an answer that closes the connection while the client may still be sending (the oversized-body
        /// fault), ctd shuts its side, then reads and discards for at most this long and this many bytes before it
        /// closes, so that the client reads the answer instead of a reset.
        public var lingerTime = 10.0
        public var lingerBytes = 16 << 20
        /// Origins (`scheme://host[:port]`) whose requests are served; a request with any other `Origin` header gets
        /// 403, except a same-origin one (the Origin's host and port are the request's Host).
        public var allowedOrigins: [String] = []
        /// Names a request's `Host` may carry (with ctd's port, or `name:port`); any other gets 421, which stops DNS
        /// rebinding. The address a connection came in on is always accepted.
        public var serverNames: [String]
        /// The web console's files, served on GET and HEAD (nil: GET answers 405 as before).
        public var web: StaticFiles?
        /// What the listener serves: XML-RPC (the handler), or one read-only document (``Endpoint/document``).
        public var endpoint = Endpoint.xmlrpc

        public init(
            host: String, port: Int, maxBodyBytes: Int, tlsCertificate: String?, tlsKey: String?, workerThreads: Int
        ) {
            self.host = host
            self.port = port
            self.maxBodyBytes = maxBodyBytes
            self.tlsCertificate = tlsCertificate
            self.tlsKey = tlsKey
            self.workerThreads = workerThreads
            self.serverNames = HTTPServer.defaultServerNames(listen: host)
        }
    }

    /// What a listener answers.
    public enum Endpoint: Sendable {
        /// POST on `/` and `/RPC2` to the request handler (and the web console's files, when configured).
        case xmlrpc
        /// GET (and HEAD) on `path` only, answered with `render()`'s bytes, which runs on the worker pool; any other
        /// path is 404 and any other method 405. The request handler is not used. (The Prometheus listener.)
        case document(path: String, contentType: String, render: @Sendable () -> [UInt8])
    }

    /// The listen address, localhost, 127.0.0.1, [::1] and this machine's host name.
    public static func defaultServerNames(listen: String) -> [String] {
        var names = [listen, "localhost", "127.0.0.1", "::1"]
        var buffer = [CChar](repeating: 0, count: 256)
        if gethostname(&buffer, buffer.count - 1) == 0 {
            let name = String(cString: buffer)
            if !name.isEmpty { names.append(name) }
        }
        return names
    }

    private let options: Options
    private let handler: RequestHandler
    private let tooLargeBody: [UInt8]
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let pool: NIOThreadPool
    private var channel: Channel?
    private let tls = TLSBox()
    private let inFlight = InFlightCalls()
    private let limiter: ConnectionLimiter
    private let policy: RequestPolicy

    public init(options: Options, handler: @escaping RequestHandler, tooLargeBody: [UInt8], logger: Logger) {
        self.options = options
        self.handler = handler
        self.tooLargeBody = tooLargeBody
        self.logger = logger
        limiter = ConnectionLimiter(
            total: options.maxConnections, perAddress: options.maxConnectionsPerAddress, logger: logger)
        policy = RequestPolicy(
            serverNames: options.serverNames, allowedOrigins: options.allowedOrigins, tls: options.tlsCertificate != nil
        )
        let threads = max(1, System.coreCount)
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        pool = NIOThreadPool(numberOfThreads: options.workerThreads > 0 ? options.workerThreads : max(16, 4 * threads))
    }

    /// Binds and starts serving; returns the bound port (useful with port 0).
    public func start() throws -> Int {
        if let cert = options.tlsCertificate, let key = options.tlsKey {
            try reloadTLS(certificate: cert, key: key)
        }
        pool.start()
        let tls = self.tls
        let inFlight = self.inFlight
        let options = self.options
        let handler = self.handler
        let pool = self.pool
        let tooLarge = self.tooLargeBody
        let logger = self.logger
        let limiter = self.limiter
        let policy = self.policy
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let address = ConnectionLimiter.key(channel.remoteAddress)
                guard limiter.admit(address) else {
                    // Refused as it is accepted: nothing is read from it and nothing is sent.
                    channel.close(promise: nil)
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
                channel.closeFuture.whenComplete { _ in limiter.release(address) }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let sslContext = tls.context { try sync.addHandler(NIOSSLServerHandler(context: sslContext)) }
                    let state = ConnectionState()
                    try sync.addHandler(InputGate(state: state))
                    // No pipelining assistance: RequestChannelHandler answers one request at a time and reads the
                    // next only once the answer has been written to the socket.
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try sync.addHandler(
                        RequestChannelHandler(
                            options: options, policy: policy, state: state, handler: handler, pool: pool,
                            tooLargeBody: tooLarge, inFlight: inFlight, logger: logger))
                }
            }
        let ch: Channel
        do {
            ch = try bootstrap.bind(host: options.host, port: options.port).wait()
        } catch {
            throw TransportError(Self.listenFailure(host: options.host, port: options.port, error: error))
        }
        channel = ch
        return ch.localAddress?.port ?? options.port
    }

    /// One sentence naming the address and the reason a bind failed (the errno's text, not NIO's call name).
    static func listenFailure(host: String, port: Int, error: Error) -> String {
        let place = display(host: host, port: port)
        guard let io = error as? IOError else { return "cannot listen on \(place): \(error)" }
        let reason = String(cString: strerror(io.errnoCode))
        switch io.errnoCode {
        case EADDRINUSE: return "cannot listen on \(place): \(reason) (another process holds that port)"
        case EACCES: return "cannot listen on \(place): \(reason) (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        case EADDRNOTAVAIL: return "cannot listen on \(place): \(reason) (no interface of this host has that address)"
        default: return "cannot listen on \(place): \(reason)"
        }
    }

    /// `host:port`, with an IPv6 address in brackets.
    public static func display(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Loads a certificate chain and key (PEM) for the connections accepted from now on; connections already open
    /// keep theirs. Throws, keeping the current ones, when the files cannot be used.
    public func reloadTLS(certificate: String, key: String) throws {
        tls.context = try Self.makeTLSContext(certificate: certificate, key: key)
    }

    /// The server TLS context of a certificate chain and key (PEM). Throws a sentence naming the file and the
    /// reason: the daemon checks the files this way before it reads the kernel table, so that a wrong path or a
    /// swapped pair fails at once.
    public static func makeTLSContext(certificate: String, key: String) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificateSource]
        let privateKey: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
        } catch {
            throw TransportError("cannot load the TLS certificate \(certificate): \(error)")
        }
        try Self.checkKeyMode(key)
        do {
            privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
        } catch {
            throw TransportError("cannot load the TLS key \(key): \(error)")
        }
        var config = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain, privateKey: .privateKey(privateKey))
        config.minimumTLSVersion = .tlsv12
        // TLS 1.3 stays on (its suites are all AEAD with ephemeral keys); TLS 1.2 is limited to ECDHE key exchange
        // with AEAD ciphers: no static-RSA key exchange, no CBC, no SHA-1 MACs.
        config.cipherSuites = Self.tls12CipherSuites
        do {
            return try NIOSSLContext(configuration: config)
        } catch {
            throw TransportError("the TLS certificate \(certificate) and key \(key) do not go together: \(error)")
        }
    }

    /// The TLS 1.2 suites offered (OpenSSL names): ECDHE key exchange with AES-GCM or ChaCha20-Poly1305.
    public static let tls12CipherSuites = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ].joined(separator: ":")

    /// Refuses a private key file that its group or others may read.
    static func checkKeyMode(_ key: String) throws {
        var st = stat()
        guard stat(key, &st) == 0 else { return }  // the load that follows names the problem
        let mode = Int(st.st_mode) & 0o7777
        if mode & 0o044 != 0 {
            throw TransportError(
                "the TLS key \(key) has mode \(String(format: "%04o", mode)), readable by "
                    + (mode & 0o040 != 0 ? (mode & 0o004 != 0 ? "its group and others" : "its group") : "others")
                    + "; make it readable by ctd's user only (chmod 600 \(key))")
        }
    }

    /// Connections refused at accept because a limit was reached, since start.
    public var refusedConnections: Int { limiter.refused }

    /// Stops accepting connections; open connections are served on.
    public func stopAccepting() { try? channel?.close().wait() }

    /// Waits until no call is running, at most `timeout` seconds.
    /// - Returns: whether every call finished.
    public func drain(timeout: Double) -> Bool { inFlight.waitUntilIdle(timeout: timeout) }

    /// Calls running now.
    public var callsInFlight: Int { inFlight.count }

    /// Closes every connection and stops the threads: the worker pool first, while the event loops still run, since
    /// a finished job completes its future by hopping to its connection's loop (after a drain, the last calls' futures
    /// may still be on their way; with the loops gone first, NIO prints "Cannot schedule tasks on an EventLoop that
    /// has already shut down" to standard error, outside any log format).
    public func shutdown() {
        stopAccepting()
        try? pool.syncShutdownGracefully()
        try? group.syncShutdownGracefully()
    }

    /// Connections open now (the service status line).
    public var openConnections: Int { limiter.openCount }

    /// A liveness probe for the watchdog: a round trip through every event loop, then `body` through the request
    /// handler on the worker pool, as a request would go. Returns the answer, or nil when either did not come back
    /// within `timeout` seconds (a stalled loop or a request path that hangs).
    public func probe(body: [UInt8], client: String, timeout: Double) -> [UInt8]? {
        let deadline = NIODeadline.now() + .milliseconds(Int64(timeout * 1000))
        for loop in group.makeIterator() {
            let left = deadline - .now()
            guard left > .zero else { return nil }
            let done = DispatchSemaphore(value: 0)
            loop.execute { done.signal() }
            guard done.wait(timeout: .now() + .nanoseconds(Int(left.nanoseconds))) == .success else { return nil }
        }
        let answer = ProbeAnswer()
        let handler = self.handler
        pool.submit { state in
            guard case .active = state else { return answer.set(nil) }
            handler(body, client) { answer.set($0) }
        }
        let left = deadline - .now()
        guard left > .zero else { return nil }
        return answer.wait(timeout: Double(left.nanoseconds) / 1e9)
    }
}

/// The answer of a probe, handed from the worker to the waiting thread.
private final class ProbeAnswer: @unchecked Sendable {
    private let lock = NSLock()
    private let ready = DispatchSemaphore(value: 0)
    private var value: [UInt8]?
    private var answered = false

    func set(_ body: [UInt8]?) {
        lock.lock()
        let first = !answered
        answered = true
        if first { value = body }
        lock.unlock()
        if first { ready.signal() }
    }

    func wait(timeout: Double) -> [UInt8]? {
        guard ready.wait(timeout: .now() + .milliseconds(Int(timeout * 1000))) == .success else { return nil }
        lock.lock()
        defer { lock.unlock() }
        return value
    }
}

/// A transport failure, in one sentence naming what failed (an address, a file).
public struct TransportError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The TLS context new connections get (swapped by a reload).
final class TLSBox: @unchecked Sendable {
    private let lock = NSLock()
    private var current: NIOSSLContext?
    var context: NIOSSLContext? {
        get { lock.withLock { current } }
        set { lock.withLock { current = newValue } }
    }
}

/// Counts calls between the moment their body is complete and the moment their answer is written.
final class InFlightCalls: @unchecked Sendable {
    private let condition = NSCondition()
    private var running = 0

    var count: Int { condition.withLock { running } }

    func begin() { condition.withLock { running += 1 } }

    func end() {
        condition.withLock {
            running -= 1
            condition.broadcast()
        }
    }

    func waitUntilIdle(timeout: Double) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while running > 0 { if !condition.wait(until: deadline) { return running == 0 } }
        return true
    }
}
