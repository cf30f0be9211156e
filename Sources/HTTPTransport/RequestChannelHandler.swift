import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

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
        if case .document(let served, let contentType, let render) = options.endpoint {
            serveDocument(
                context: context, head: head, path: path, served: served, contentType: contentType, render: render,
                keepAlive: keepAlive)
            return
        }
        if let web = options.web, path != "/RPC2", head.method == .GET || head.method == .HEAD {
            serveStatic(context: context, head: head, path: path, web: web, keepAlive: keepAlive)
            return
        }
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

    /// The read-only listener (``HTTPServer/Endpoint/document``): one path, GET and HEAD, the same host and origin
    /// checks as XML-RPC; the document is built on the worker pool (it may read the kernel).
    private func serveDocument(
        context: ChannelHandlerContext, head: HTTPRequestHead, path: String, served: String, contentType: String,
        render: @escaping @Sendable () -> [UInt8], keepAlive: Bool
    ) {
        let text = "text/plain; charset=utf-8"
        guard path == served else {
            write(
                context: context, head: head, status: .notFound, contentType: text,
                body: Array("this listener serves GET \(served) only\n".utf8), keepAlive: keepAlive)
            return
        }
        guard head.method == .GET || head.method == .HEAD else {
            write(
                context: context, head: head, status: .methodNotAllowed, contentType: text,
                body: Array("\(served) is read with GET\n".utf8), keepAlive: keepAlive, extra: [("Allow", "GET, HEAD")])
            return
        }
        let local = context.channel.localAddress
        if case .refused(let status, let sentence) = policy.check(
            head, localIP: local?.ipAddress, localPort: local?.port ?? options.port)
        {
            write(
                context: context, head: head, status: status, contentType: text, body: Array(sentence.utf8),
                keepAlive: keepAlive)
            return
        }
        body = []
        let loop = context.eventLoop
        let ctx = NIOLoopBound(context, eventLoop: loop)
        let this = NIOLoopBound(self, eventLoop: loop)
        let inFlight = self.inFlight
        inFlight.begin()
        pool.runIfActive(eventLoop: loop) { render() }.whenComplete { result in
            defer { inFlight.end() }
            switch result {
            case .success(let document):
                this.value.write(
                    context: ctx.value, head: head, status: .ok, contentType: contentType,
                    body: head.method == .HEAD ? [] : document, keepAlive: keepAlive,
                    extra: [("Cache-Control", "no-store")], length: document.count)
            case .failure(let error):
                this.value.logger.error("worker pool refused a request: \(error)")
                ctx.value.close(promise: nil)
            }
        }
    }

    private func serveStatic(
        context: ChannelHandlerContext, head: HTTPRequestHead, path: String, web: StaticFiles, keepAlive: Bool
    ) {
        var extra = StaticFiles.securityHeaders
        if options.tlsCertificate != nil { extra.append(("Strict-Transport-Security", "max-age=31536000")) }
        guard let file = web.lookup(path) else {
            write(
                context: context, head: head, status: .notFound, contentType: "text/plain; charset=utf-8",
                body: Array("not found\n".utf8), keepAlive: keepAlive, extra: extra)
            return
        }
        extra.append(("ETag", file.etag))
        extra.append(("Cache-Control", "no-cache"))
        if head.headers["if-none-match"].contains(where: { $0.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == file.etag } }) {
            write(
                context: context, head: head, status: .notModified, contentType: file.contentType, body: [],
                keepAlive: keepAlive, extra: extra)
            return
        }
        write(
            context: context, head: head, status: .ok, contentType: file.contentType,
            body: head.method == .HEAD ? [] : file.body, keepAlive: keepAlive, extra: extra,
            length: file.body.count)
    }

    private func write(
        context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, contentType: String,
        body: [UInt8], keepAlive: Bool, extra: [(String, String)] = [], length: Int? = nil
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(length ?? body.count))
        headers.add(name: "Server", value: "ctd")
        for (k, v) in extra { headers.add(name: k, value: v) }
        var response = HTTPResponseHead(version: head.version, status: status, headers: headers)
        response.headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        if !keepAlive { closing = true }
        // The client must take the answer within the write deadline; a client that never reads is closed.
        arm(context, options.writeTimeout, "its answer was not read")
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
