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

    /// Never throws: every failure becomes a fault.
    public func handle(body: [UInt8], client: String) -> [UInt8] {
        let request: XMLRPCRequest
        do {
            request = try XMLRPCDecoder.decodeRequest(body, maxDepth: context.settings.maxDepth)
        } catch {
            return XMLRPCEncoder.fault(error)
        }
        switch reply(request.methodName, request.params, client: client, nested: false) {
        case .success(let reply):
            let body =
                reply.cacheKey.map { key in encodedReplies.value(for: key) { XMLRPCEncoder.response(reply.build()) } }
                ?? XMLRPCEncoder.response(reply.build())
            let limit = context.settings.maxResponseBytes
            return body.count <= limit ? body : XMLRPCEncoder.fault(.responseTooLarge(limit: limit))
        case .failure(let fault):
            return XMLRPCEncoder.fault(fault)
        }
    }

    /// One call, as a value or a fault (``Multicall`` uses it for each of its calls).
    func call(_ method: String, _ params: [XMLRPCValue], client: String, nested: Bool) -> Result<XMLRPCValue, Fault> {
        reply(method, params, client: client, nested: nested).map { $0.build() }
    }

    private func reply(_ method: String, _ values: [XMLRPCValue], client: String, nested: Bool) -> Result<Reply, Fault>
    {
        do {
            guard let procedure = MethodTable.byName[method] else {
                throw Fault.methodNotFound(String(method.prefix(100)))
            }
            let params = try Params(
                method: method, values: values, names: procedure.params, required: procedure.required)
            let session = try procedure.role.map { try authorize(params, need: $0, client: client) }
            let call = Call(dispatcher: self, params: params, client: client, session: session, nested: nested)
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
