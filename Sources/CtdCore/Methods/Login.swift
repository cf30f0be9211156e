import CtdPluginAPI
import XMLRPC

extension Procedure {
    static let login = Procedure(
        name: "login", params: ["username", "password"], required: 0, role: nil,
        signatures: [["string", "string", "string"]],
        help:
            "Checks the credentials with the configured authenticator and opens a session. Sessions end after the idle timeout (10 s by default) or the absolute lifetime. Fault 1 on wrong credentials.",
        run: { try .value(Login.run($0)) })

    static let logout = Procedure(
        name: "logout", params: ["session"], required: 1, role: nil, signatures: [["boolean", "string"]],
        help: "logout(session) -> true if the session existed. Ends the session at once.",
        run: { call in .value(.bool(call.context.sessions.close(try call.params.string(0)))) })
}

/// `login(...)`: the authenticator's arguments (`system.methodHelp("login")`) -> a session id.
enum Login {
    static func run(_ call: Call) throws -> XMLRPCValue {
        let context = call.context
        let p = call.params
        let client = call.client
        let wanted = context.plugins.authenticator.loginParameters
        guard p.values.count == wanted.count else {
            throw Fault.invalidParams(
                "login takes \(wanted.count) arguments (\(wanted.joined(separator: ", "))), \(p.values.count) given")
        }
        let args = try (0..<wanted.count).map { i -> String in
            guard case .string(let s) = p.values[i] else {
                throw Fault.invalidParams("argument \(i + 1) of login (\(wanted[i])) must be a string")
            }
            return s
        }
        let user = args.first ?? ""
        let throttle = context.loginThrottle
        guard throttle.allows(client) else {
            context.logger.warning(
                "login from \(client) refused: \(throttle.limit) failures in \(Int(throttle.window)) s")
            try auditFailure(context, user: user, client: client, reason: "too many failed logins from this address")
            throw Fault.loginFailed
        }
        let result: AuthResult
        do {
            result = try context.plugins.authenticator.authenticate(LoginRequest(arguments: args, clientAddress: client))
        } catch {
            context.plugins.reportProblem(context.plugins.authenticatorInfo.name, "\(error)")
            throw Fault.internalError
        }
        switch result {
        case .accepted(let identity) where identity.highestRole != nil:
            let tokens = try context.hooks.before(
                ActionEvent(
                    kind: .login, procedure: "login", user: identity.user, roles: Array(identity.roles),
                    clientAddress: client))
            let s = context.sessions.open(identity: identity, clientAddress: client)
            throttle.succeeded(client)
            context.hooks.after(tokens, outcome: .succeeded)
            context.logger.info("login \(identity.user) (\(s.role.rawValue)) from \(client)")
            return .string(s.id)
        case .accepted(let identity):
            throttle.failed(client)
            context.logger.notice("login refused for \(identity.user) from \(client): no role granted")
            try auditFailure(context, user: user, client: client, reason: "no role granted")
            throw Fault.loginFailed
        case .rejected(let reason):
            throttle.failed(client)
            context.logger.notice("login failed for \(sanitized(user)) from \(client): \(reason)")
            try auditFailure(context, user: user, client: client, reason: reason)
            throw Fault.loginFailed
        @unknown default:
            throw Fault.loginFailed
        }
    }

    private static func auditFailure(_ context: ServerContext, user: String, client: String, reason: String) throws {
        let event = ActionEvent(
            kind: .login, procedure: "login", user: sanitized(user), roles: [], clientAddress: client)
        let tokens = try context.hooks.before(event)
        context.hooks.after(tokens, outcome: .failed(reason: reason))
    }

    /// A user name as sent, made safe for logs and the audit trail (as sshd logs failed user names).
    static func sanitized(_ s: String) -> String {
        String(s.prefix(64).map { $0.isLetter || $0.isNumber || "._-@".contains($0) ? $0 : "?" })
    }
}
