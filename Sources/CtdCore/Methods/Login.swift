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
        // No user name is this long: refused before it can cost the throttle's memory or the authenticator's time.
        guard user.utf8.count <= maximumUserNameBytes else {
            context.logger.notice("login refused from \(client): a user name of \(user.utf8.count) bytes")
            context.metrics.login(.rejected)
            throw Fault.loginFailed
        }
        let throttle = context.loginThrottle
        if let lock = throttle.check(user: user, client: client) {
            context.logger.warning("login of \(sanitized(user)) from \(client) refused: \(lock.reason)")
            context.metrics.login(.throttled)
            try auditFailure(context, user: user, client: client, reason: lock.reason)
            throw Fault.loginFailed
        }
        let answer = try context.loginGate.pass { () throws -> AuthResult in
            do {
                return try context.plugins.authenticator.authenticate(
                    LoginRequest(arguments: args, clientAddress: client))
            } catch {
                context.plugins.reportProblem(context.plugins.authenticatorInfo.name, "\(error)")
                context.metrics.login(.error)
                throw Fault.internalError
            }
        }
        guard let result = answer else {
            context.logger.warning("login from \(client) refused: \(context.settings.maxConcurrentLogins) logins in progress")
            context.metrics.login(.busy)
            throw Fault.busy
        }
        switch result {
        case .accepted(let identity) where identity.highestRole != nil:
            // A scoped login says so in the audit trail.
            let scoped = identity.scope == .own
            let tokens = try context.hooks.before(
                ActionEvent(
                    kind: .login, procedure: "login", user: identity.user, roles: Array(identity.roles),
                    clientAddress: client, field: scoped ? "scope" : nil, newValue: scoped ? "own" : nil))
            guard let s = context.sessions.open(identity: identity, clientAddress: client) else {
                context.hooks.after(tokens, outcome: .failed(reason: "the session store is full"))
                context.logger.warning("login \(identity.user) from \(client) refused: the session store is full")
                context.metrics.login(.busy)
                throw Fault.tooManyItems(
                    "the server holds as many sessions as it may (max_sessions); try again when some have ended")
            }
            throttle.succeeded(user: user, client: client)
            context.metrics.login(.success)
            context.hooks.after(tokens, outcome: .succeeded)
            let scope = scoped ? ", own connections only" : ""
            context.logger.info("login \(identity.user) (\(s.role.rawValue)\(scope)) from \(client)")
            return .string(s.id)
        case .accepted(let identity):
            throttle.failed(user: user, client: client)
            context.logger.notice("login refused for \(identity.user) from \(client): no role granted")
            context.metrics.login(.rejected)
            try auditFailure(context, user: user, client: client, reason: "no role granted")
            throw Fault.loginFailed
        case .rejected(let reason):
            throttle.failed(user: user, client: client)
            context.logger.notice("login failed for \(sanitized(user)) from \(client): \(reason)")
            context.metrics.login(.rejected)
            try auditFailure(context, user: user, client: client, reason: reason)
            throw Fault.loginFailed
        @unknown default:
            throw Fault.loginFailed
        }
    }

    /// The first failure of a source in a window is recorded with its reason; the next ones are summarised
    /// (``FailedLoginRecorder``), so that a flood of bad logins cannot fill the audit trail's disk.
    private static func auditFailure(_ context: ServerContext, user: String, client: String, reason: String) throws {
        guard context.failedLogins.failure(user: sanitized(user), client: client) else { return }
        let event = ActionEvent(
            kind: .login, procedure: "login", user: sanitized(user), roles: [], clientAddress: client)
        let tokens = try context.hooks.before(event)
        context.hooks.after(tokens, outcome: .failed(reason: reason))
    }

    /// Records the summaries of failed logins whose window has passed (every one with `all`, at shutdown).
    static func recordSummaries(_ context: ServerContext, all: Bool) {
        for summary in context.failedLogins.due(all: all) {
            let event = ActionEvent(
                kind: .login, procedure: "login", user: summary.users.first ?? "", roles: [],
                clientAddress: summary.source)
            guard let tokens = try? context.hooks.before(event) else {
                context.logger.error("the summary of failed logins could not be audited: \(summary.description)")
                continue
            }
            context.hooks.after(tokens, outcome: .failed(reason: summary.description))
        }
    }

    /// The longest user name a login may carry (bytes).
    static let maximumUserNameBytes = 256

    /// A user name as sent, made safe for logs and the audit trail (as sshd logs failed user names).
    static func sanitized(_ s: String) -> String {
        String(s.prefix(64).map { $0.isLetter || $0.isNumber || "._-@".contains($0) ? $0 : "?" })
    }
}
