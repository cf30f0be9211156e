import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Handles one request: body and client address in, response body out. Runs on a worker thread (never on the event
/// loop), so it may block.
public typealias RequestHandler = @Sendable (_ body: [UInt8], _ client: String) -> [UInt8]

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
        public var idleTimeout: TimeAmount = .seconds(60)

        public init(
            host: String, port: Int, maxBodyBytes: Int, tlsCertificate: String?, tlsKey: String?, workerThreads: Int
        ) {
            self.host = host
            self.port = port
            self.maxBodyBytes = maxBodyBytes
            self.tlsCertificate = tlsCertificate
            self.tlsKey = tlsKey
            self.workerThreads = workerThreads
        }
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

    public init(options: Options, handler: @escaping RequestHandler, tooLargeBody: [UInt8], logger: Logger) {
        self.options = options
        self.handler = handler
        self.tooLargeBody = tooLargeBody
        self.logger = logger
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
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let sslContext = tls.context { try sync.addHandler(NIOSSLServerHandler(context: sslContext)) }
                    try sync.addHandler(IdleStateHandler(allTimeout: options.idleTimeout))
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                    try sync.addHandler(
                        RequestChannelHandler(
                            maxBodyBytes: options.maxBodyBytes, handler: handler, pool: pool, tooLargeBody: tooLarge,
                            inFlight: inFlight, logger: logger))
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
        do {
            privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
        } catch {
            throw TransportError("cannot load the TLS key \(key): \(error)")
        }
        var config = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain, privateKey: .privateKey(privateKey))
        config.minimumTLSVersion = .tlsv12
        do {
            tls.context = try NIOSSLContext(configuration: config)
        } catch {
            throw TransportError("the TLS certificate \(certificate) and key \(key) do not go together: \(error)")
        }
    }

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

final class RequestChannelHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let maxBodyBytes: Int
    private let handler: RequestHandler
    private let pool: NIOThreadPool
    private let tooLargeBody: [UInt8]
    private let inFlight: InFlightCalls
    private let logger: Logger

    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false

    init(
        maxBodyBytes: Int, handler: @escaping RequestHandler, pool: NIOThreadPool, tooLargeBody: [UInt8],
        inFlight: InFlightCalls, logger: Logger
    ) {
        self.inFlight = inFlight
        self.maxBodyBytes = maxBodyBytes
        self.handler = handler
        self.pool = pool
        self.tooLargeBody = tooLargeBody
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body.removeAll(keepingCapacity: true)
            tooLarge = false
            if let length = h.headers.first(name: "content-length").flatMap(Int.init), length > maxBodyBytes {
                // Answered at once, without waiting for a body that may never come; the rest is ignored.
                tooLarge = true
                head = nil
                respond(context: context, head: h)
            }
        case .body(var buffer):
            guard !tooLarge else { return }
            if body.count + buffer.readableBytes > maxBodyBytes {
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

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard path == "/" || path == "/RPC2" else {
            write(
                context: context, head: head, status: .notFound, contentType: "text/plain; charset=utf-8",
                body: Array("ctd serves XML-RPC on POST / and POST /RPC2\n".utf8), keepAlive: head.isKeepAlive)
            return
        }
        guard head.method == .POST else {
            write(
                context: context, head: head, status: .methodNotAllowed, contentType: "text/plain; charset=utf-8",
                body: Array("ctd serves XML-RPC: send a POST with a text/xml methodCall\n".utf8),
                keepAlive: head.isKeepAlive, extra: [("Allow", "POST")])
            return
        }
        if tooLarge {
            // The rest of an oversized body is not worth reading: answer with a fault and close.
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
        pool.runIfActive(eventLoop: loop) { handler(request, client) }.whenComplete { result in
            defer { inFlight.end() }
            switch result {
            case .success(let response):
                this.value.write(
                    context: ctx.value, head: head, status: .ok, contentType: "text/xml; charset=utf-8",
                    body: response, keepAlive: head.isKeepAlive)
            case .failure(let error):
                this.value.logger.error("worker pool refused a call: \(error)")
                ctx.value.close(promise: nil)
            }
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
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: body.count)
        buffer.writeBytes(body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        if !keepAlive {
            let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.futureResult.whenComplete { _ in ctx.value.close(promise: nil) }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
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
