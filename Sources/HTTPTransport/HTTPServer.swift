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
                let address = channel.remoteAddress?.ipAddress ?? "unknown"
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
            throw TransportError("cannot listen on \(Self.display(host: options.host, port: options.port)): \(error)")
        }
        channel = ch
        return ch.localAddress?.port ?? options.port
    }

    /// `host:port`, with an IPv6 address in brackets.
    public static func display(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Loads a certificate chain and key (PEM) for the connections accepted from now on; connections already open
    /// keep theirs. Throws, keeping the current ones, when the files cannot be used.
    public func reloadTLS(certificate: String, key: String) throws {
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
            tls.context = try NIOSSLContext(configuration: config)
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

    /// Closes every connection and stops the threads.
    public func shutdown() {
        stopAccepting()
        try? group.syncShutdownGracefully()
        try? pool.syncShutdownGracefully()
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

/// Counts open connections, in total and per client address, for the limits checked at accept.
final class ConnectionLimiter: @unchecked Sendable {
    private let lock = NSLock()
    private let total: Int
    private let perAddress: Int
    private let logger: Logger
    private var open = 0
    private var byAddress: [String: Int] = [:]
    private var refusedCount = 0
    private var lastWarning: Date?

    init(total: Int, perAddress: Int, logger: Logger) {
        self.total = total
        self.perAddress = perAddress
        self.logger = logger
    }

    var refused: Int { lock.withLock { refusedCount } }

    /// Counts the connection in, or refuses it (and counts that) when a limit is reached.
    func admit(_ address: String) -> Bool {
        let (admitted, warn, why, count): (Bool, Bool, String, Int) = lock.withLock {
            let mine = byAddress[address, default: 0]
            var why = ""
            if open >= total {
                why = "the limit of \(total) open connections is reached"
            } else if mine >= perAddress {
                why = "the limit of \(perAddress) open connections from \(address) is reached"
            } else {
                open += 1
                byAddress[address] = mine + 1
                return (true, false, "", 0)
            }
            refusedCount += 1
            let now = Date()
            let warn = lastWarning.map { now.timeIntervalSince($0) >= 10 } ?? true
            if warn { lastWarning = now }
            return (false, warn, why, refusedCount)
        }
        if !admitted {
            // At most one warning each 10 s, so that a flood does not flood the log too.
            if warn {
                logger.warning("refusing new connections: \(why) (\(count) refused since start)")
            } else {
                logger.debug("refused a connection from \(address): \(why)")
            }
        }
        return admitted
    }

    func release(_ address: String) {
        lock.withLock {
            open -= 1
            let mine = byAddress[address, default: 1] - 1
            byAddress[address] = mine > 0 ? mine : nil
        }
    }
}

/// Which requests may be served at all, by their headers (browser origins and DNS rebinding).
struct RequestPolicy: Sendable {
    /// Host names, lower case, IPv6 addresses in brackets; with a port (`name:port`) or without (any port ctd has).
    let names: Set<String>
    let origins: Set<String>
    let scheme: String

    init(serverNames: [String], allowedOrigins: [String], tls: Bool) {
        names = Set(
            serverNames.map { name in
                let n = name.lowercased()
                return n.filter({ $0 == ":" }).count > 1 && !n.hasPrefix("[") ? "[\(n)]" : n
            })
        origins = Set(allowedOrigins.map { Self.trimmed($0.lowercased()) })
        scheme = tls ? "https" : "http"
    }

    private static func trimmed(_ s: String) -> String { s.hasSuffix("/") ? String(s.dropLast()) : s }

    /// `host[:port]` split; an IPv6 host keeps its brackets.
    static func split(_ authority: String) -> (host: String, port: Int?) {
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            let host = String(authority[...close])
            let rest = authority[authority.index(after: close)...]
            return (host, rest.hasPrefix(":") ? Int(rest.dropFirst()) ?? -1 : (rest.isEmpty ? nil : -1))
        }
        if let colon = authority.lastIndex(of: ":") {
            return (String(authority[..<colon]), Int(authority[authority.index(after: colon)...]) ?? -1)
        }
        return (authority, nil)
    }

    /// Whether `host` (a Host header's value) names this server, reached on `localIP`:`localPort`.
    func hostAllowed(_ host: String, localIP: String?, localPort: Int) -> Bool {
        let value = host.lowercased().trimmingCharacters(in: .whitespaces)
        if names.contains(value) { return true }  // `name:port` configured as such
        let (name, port) = Self.split(value)
        let defaultPort = scheme == "https" ? 443 : 80
        guard (port ?? defaultPort) == localPort else { return false }
        if names.contains(name) { return true }
        guard let ip = localIP?.lowercased() else { return false }
        return name == ip || name == "[\(ip)]"
    }

    enum Verdict {
        case allowed
        case refused(HTTPResponseStatus, String)
    }

    func check(_ head: HTTPRequestHead, localIP: String?, localPort: Int) -> Verdict {
        let hosts = head.headers["host"]
        if hosts.count > 1 {
            return .refused(.badRequest, "A request carries one Host header, not \(hosts.count).\n")
        }
        if let host = hosts.first, !hostAllowed(host, localIP: localIP, localPort: localPort) {
            return .refused(
                .misdirectedRequest,
                "This ctd does not answer to the name in the Host header; add it to [server] server_names.\n")
        }
        for origin in head.headers["origin"] {
            let o = Self.trimmed(origin.lowercased().trimmingCharacters(in: .whitespaces))
            if origins.contains(o) { continue }
            if let host = hosts.first?.lowercased(), o == "\(scheme)://\(host)" { continue }
            return .refused(
                .forbidden,
                "Requests from web pages of another origin are refused; add the origin to [server] allowed_origins.\n")
        }
        if head.method == .POST {
            let type = head.headers.first(name: "content-type").map {
                $0.split(separator: ";", maxSplits: 1).first.map(String.init) ?? ""
            }?.trimmingCharacters(in: .whitespaces).lowercased()
            guard type == "text/xml" || type == "application/xml" else {
                return .refused(
                    .unsupportedMediaType, "ctd serves XML-RPC: the body must be sent as Content-Type: text/xml.\n")
            }
        }
        return .allowed
    }
}

/// What one connection is doing, shared by its two handlers; used on its event loop only.
final class ConnectionState {
    enum Phase {
        /// No request under way: nothing has come since the connection opened or the previous answer was written.
        case waiting
        /// Bytes of a request have come, its head is not complete.
        case head
        /// The head is complete, the body is coming.
        case body
        /// The request is complete; it is being answered.
        case answering
        /// The last answer is written and our side is shut: what comes is read and dropped until the client closes.
        case lingering
    }

    var phase = Phase.waiting
    var discarded = 0
    /// Called by the gate when the first byte of a request comes.
    var onFirstByte: (() -> Void)?
    /// Called by the gate when lingering has read enough.
    var onLingeredEnough: (() -> Void)?
    var lingerBytes = 0
}

/// Sits before the HTTP decoder: notices the first byte of a request (for the header deadline) and drops what
/// comes while the connection lingers.
final class InputGate: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let state: ConnectionState

    init(state: ConnectionState) { self.state = state }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state.phase {
        case .lingering:
            state.discarded += unwrapInboundIn(data).readableBytes
            if state.discarded > state.lingerBytes { state.onLingeredEnough?() }
            return
        case .waiting:
            state.onFirstByte?()
        case .head, .body, .answering:
            break
        }
        context.fireChannelRead(data)
    }
}

/// Answers the requests of one connection, one at a time, in order: the next request is read only once the answer
/// to the previous one is in the socket (a client that pipelines and never reads is not read either).
final class RequestChannelHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let options: HTTPServer.Options
    private let policy: RequestPolicy
    private let state: ConnectionState
    private let handler: RequestHandler
    private let pool: NIOThreadPool
    private let tooLargeBody: [UInt8]
    private let inFlight: InFlightCalls
    private let logger: Logger

    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false
    /// Set once the connection is to end: every part that still comes is dropped.
    private var closing = false
    /// Parts the decoder handed over while an answer was pending (at most what one read brought).
    private var queued: [HTTPServerRequestPart] = []
    /// A read the channel asked for while an answer was pending.
    private var readHeld = false
    private var timer: Scheduled<Void>?

    init(
        options: HTTPServer.Options, policy: RequestPolicy, state: ConnectionState, handler: @escaping RequestHandler,
        pool: NIOThreadPool, tooLargeBody: [UInt8], inFlight: InFlightCalls, logger: Logger
    ) {
        self.options = options
        self.policy = policy
        self.state = state
        self.inFlight = inFlight
        self.handler = handler
        self.pool = pool
        self.tooLargeBody = tooLargeBody
        self.logger = logger
        state.lingerBytes = options.lingerBytes
    }

    // MARK: Deadlines

    func handlerAdded(context: ChannelHandlerContext) {
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        let headerTimeout = options.headerTimeout
        state.onFirstByte = {
            this.value.state.phase = .head
            this.value.arm(ctx.value, headerTimeout, "no complete request head")
        }
        state.onLingeredEnough = { ctx.value.close(promise: nil) }
        arm(context, options.idleTimeout, "idle too long")
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        state.onFirstByte = nil
        state.onLingeredEnough = nil
    }

    /// Closes the connection after `delay` unless re-armed or cancelled first.
    private func arm(_ context: ChannelHandlerContext, _ seconds: Double, _ why: String) {
        let delay = TimeAmount.nanoseconds(Int64(seconds * 1e9))
        timer?.cancel()
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        let logger = self.logger
        let peer = context.channel.remoteAddress?.description ?? "unknown"
        timer = context.eventLoop.scheduleTask(in: delay) {
            logger.debug("closing the connection from \(peer): \(why) (\(Self.seconds(seconds)) s)")
            ctx.value.close(promise: nil)
        }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }

    private static func seconds(_ s: Double) -> String {
        return s == s.rounded() ? String(Int(s)) : String(s)
    }

    // MARK: Reading

    func read(context: ChannelHandlerContext) {
        if state.phase == .answering {
            readHeld = true
        } else {
            context.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if closing { return }
        if state.phase == .answering {
            queued.append(part)
            return
        }
        handle(context: context, part: part)
    }

    private func handle(context: ChannelHandlerContext, part: HTTPServerRequestPart) {
        switch part {
        case .head(let h):
            head = h
            body.removeAll(keepingCapacity: true)
            tooLarge = false
            state.phase = .body
            arm(context, options.bodyTimeout, "no complete request body")
            if let length = h.headers.first(name: "content-length").flatMap(Int.init), length > options.maxBodyBytes {
                // Answered at once, without waiting for a body that may never come; the rest is ignored.
                tooLarge = true
                head = nil
                respond(context: context, head: h)
            }
        case .body(var buffer):
            guard !tooLarge else { return }
            if body.count + buffer.readableBytes > options.maxBodyBytes {
                tooLarge = true
                body = []
                if let h = head {
                    head = nil
                    respond(context: context, head: h)
                }
                return
            }
            body.append(contentsOf: buffer.readBytes(length: buffer.readableBytes) ?? [])
        case .end:
            guard let h = head else { return }
            head = nil
            respond(context: context, head: h)
        }
    }

    /// The answer to the previous request is in the socket: go on with what came meanwhile, then read again.
    private func answered(context: ChannelHandlerContext) {
        state.phase = .waiting
        arm(context, options.idleTimeout, "idle too long")
        while !queued.isEmpty, state.phase != .answering, !closing {
            let part = queued.removeFirst()
            if state.phase == .waiting {
                // A request that came while the previous one was answered: its head deadline runs from now.
                state.phase = .head
                arm(context, options.headerTimeout, "no complete request head")
            }
            handle(context: context, part: part)
        }
        if state.phase != .answering, readHeld {
            readHeld = false
            context.read()
        }
    }

    // MARK: Answering

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead) {
        state.phase = .answering
        disarm()
        // An answer given before the body's end closes the connection, and lingers so that the client reads it.
        let early = tooLarge
        let keepAlive = head.isKeepAlive && !early
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard path == "/" || path == "/RPC2" else {
            write(
                context: context, head: head, status: .notFound, contentType: "text/plain; charset=utf-8",
                body: Array("ctd serves XML-RPC on POST / and POST /RPC2\n".utf8), keepAlive: keepAlive)
            return
        }
        guard head.method == .POST else {
            write(
                context: context, head: head, status: .methodNotAllowed, contentType: "text/plain; charset=utf-8",
                body: Array("ctd serves XML-RPC: send a POST with a text/xml methodCall\n".utf8),
                keepAlive: keepAlive, extra: [("Allow", "POST")])
            return
        }
        let local = context.channel.localAddress
        if case .refused(let status, let sentence) = policy.check(
            head, localIP: local?.ipAddress, localPort: local?.port ?? options.port)
        {
            logger.debug(
                "refused a request from \(context.channel.remoteAddress?.description ?? "unknown"): \(status.code)")
            write(
                context: context, head: head, status: status, contentType: "text/plain; charset=utf-8",
                body: Array(sentence.utf8), keepAlive: keepAlive)
            return
        }
        if early {
            // The rest of an oversized body is not worth parsing: answer with a fault and close (lingering).
            write(
                context: context, head: head, status: .ok, contentType: "text/xml; charset=utf-8", body: tooLargeBody,
                keepAlive: false)
            return
        }
        let request = body
        body = []
        let client = context.channel.remoteAddress?.ipAddress ?? "unknown"
        let handler = self.handler
        let loop = context.eventLoop
        let ctx = NIOLoopBound(context, eventLoop: loop)
        let this = NIOLoopBound(self, eventLoop: loop)
        let inFlight = self.inFlight
        inFlight.begin()
        let respond: @Sendable ([UInt8]) -> Void = { response in
            loop.execute {
                defer { inFlight.end() }
                this.value.write(
                    context: ctx.value, head: head, status: .ok, contentType: "text/xml; charset=utf-8",
                    body: response, keepAlive: head.isKeepAlive)
            }
        }
        pool.runIfActive(eventLoop: loop) { handler(request, client, respond) }.whenFailure { error in
            inFlight.end()
            this.value.logger.error("worker pool refused a call: \(error)")
            ctx.value.close(promise: nil)
        }
    }

    private func write(
        context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, contentType: String,
        body: [UInt8], keepAlive: Bool, extra: [(String, String)] = []
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Server", value: "ctd")
        for (k, v) in extra { headers.add(name: k, value: v) }
        var response = HTTPResponseHead(version: head.version, status: status, headers: headers)
        response.headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        if !keepAlive { closing = true }
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: body.count)
        buffer.writeBytes(body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        done.futureResult.whenComplete { result in
            guard case .success = result else {
                ctx.value.close(promise: nil)
                return
            }
            if keepAlive {
                this.value.answered(context: ctx.value)
            } else {
                this.value.linger(context: ctx.value)
            }
        }
    }

    /// Shuts our side after the last answer, then reads and drops what the client still sends (bounded in time and
    /// bytes) until it closes, so that it is not reset before it has read the answer.
    private func linger(context: ChannelHandlerContext) {
        queued = []
        state.phase = .lingering
        arm(context, options.lingerTime, "lingered long enough")
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        let half = context.eventLoop.makePromise(of: Void.self)
        half.futureResult.whenFailure { _ in ctx.value.close(promise: nil) }
        context.close(mode: .output, promise: half)
        readHeld = false
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("connection error: \(error)")
        context.close(promise: nil)
    }
}
