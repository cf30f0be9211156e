import ConntrackQuery
import CtdPluginAPI
import Foundation
import Logging
import XMLRPC

/// One HTTP body in, one out: decodes the call, finds the procedure in the ``MethodTable``, checks the session's
/// role, runs it and encodes the answer. Every failure becomes a fault; nothing escapes.
public final class Dispatcher: @unchecked Sendable {
    public let context: ServerContext
    /// Encoded top-level answers by ``Reply/cacheKey``: a page polled by many frontends is encoded once a second.
    private let encodedReplies = RecentResults<RenderedViewKey, [UInt8]>(capacity: 16) { $0.second < $1.second - 1 }

    public init(context: ServerContext) { self.context = context }

    /// Answers a request through `respond`, exactly once: at once, or later for a long poll (`changes`), which
    /// then holds no thread while it waits. Never throws: every failure becomes a fault.
    public func handle(body: [UInt8], client: String, respond: @escaping @Sendable ([UInt8]) -> Void) {
        handle(body: body, client: client, mayWait: true, respond: respond)
    }

    /// The answer at once (a long poll answers with what there is now): for tests and the fuzzers.
    public func handle(body: [UInt8], client: String) -> [UInt8] {
        let box = AnswerBox()
        handle(body: body, client: client, mayWait: false) { box.set($0) }
        return box.wait()
    }

    private func handle(
        body: [UInt8], client: String, mayWait: Bool, respond: @escaping @Sendable ([UInt8]) -> Void
    ) {
        let started = DispatchTime.now().uptimeNanoseconds
        let metrics = context.metrics
        let counted = { @Sendable (method: String, code: Int) in
            let elapsed = DispatchTime.now().uptimeNanoseconds &- started
            metrics.request(method: method, code: code, nanoseconds: Int64(clamping: elapsed))
        }
        let request: XMLRPCRequest
        do {
            request = try XMLRPCDecoder.decodeRequest(body, maxDepth: context.settings.maxDepth)
        } catch {
            counted(ServerMetrics.otherMethod, error.code)
            return respond(XMLRPCEncoder.fault(error))
        }
        let method = request.methodName
        let limit = context.settings.maxResponseBytes
        let bounded: @Sendable ([UInt8]) -> [UInt8] = { body in
            if body.count <= limit {
                counted(method, 0)
                return body
            }
            let fault = Fault.responseTooLarge(limit: limit)
            counted(method, fault.code)
            return XMLRPCEncoder.fault(fault)
        }
        switch reply(method, request.params, client: client, nested: false, mayWait: mayWait) {
        case .success(let reply):
            if let later = reply.later {
                later { value in respond(bounded(XMLRPCEncoder.response(value))) }
                return
            }
            let body =
                reply.cacheKey.map { key in encodedReplies.value(for: key) { XMLRPCEncoder.response(reply.build()) } }
                ?? XMLRPCEncoder.response(reply.build())
            respond(bounded(body))
        case .failure(let fault):
            counted(method, fault.code)
            respond(XMLRPCEncoder.fault(fault))
        }
    }

    /// One call, as a value or a fault (``Multicall`` uses it for each of its calls).
    func call(_ method: String, _ params: [XMLRPCValue], client: String, nested: Bool) -> Result<XMLRPCValue, Fault> {
        reply(method, params, client: client, nested: nested, mayWait: false).map { $0.build() }
    }

    private func reply(
        _ method: String, _ values: [XMLRPCValue], client: String, nested: Bool, mayWait: Bool
    ) -> Result<Reply, Fault> {
        do {
            guard let procedure = MethodTable.byName[method] else {
                throw Fault.methodNotFound(String(method.prefix(100)))
            }
            let params = try Params(
                method: method, values: values, names: procedure.params, required: procedure.required)
            let session = try procedure.role.map { try authorize(params, need: $0, client: client) }
            let call = Call(
                dispatcher: self, params: params, client: client, session: session, nested: nested,
                mayWait: mayWait && !nested)
            return .success(try procedure.run(call))
        } catch let fault as Fault {
            return .failure(fault)
        } catch let error as FlowQueryError {
            return .failure(Fault(error))
        } catch {
            context.logger.error("\(String(method.prefix(100))) failed: \(error)")
            return .failure(.internalError)
        }
    }

    /// The live session of the call's first argument, if its role is enough; a denied call is told to the hooks.
    private func authorize(_ p: Params, need role: Role, client: String) throws -> Session {
        guard let s = context.sessions.use(try p.string(0)) else { throw Fault.invalidSession }
        guard s.role >= role else {
            let event = ActionEvent(
                kind: .denied, procedure: p.method, user: s.identity.user, roles: Array(s.identity.roles),
                clientAddress: client)
            _ = try? context.hooks.before(event)
            context.logger.notice("denied \(p.method) to \(s.identity.user) (\(s.role.rawValue)) from \(client)")
            throw Fault.permissionDenied(
                "\(p.method) needs the \(role.rawValue) role; \(s.identity.user) is \(s.role.rawValue)")
        }
        return s
    }
}

/// One answer handed from the thread that has it to the thread that waits for it.
final class AnswerBox: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var value: [UInt8] = []

    func set(_ v: [UInt8]) {
        value = v
        done.signal()
    }

    func wait() -> [UInt8] {
        done.wait()
        return value
    }
}
