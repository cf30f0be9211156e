import CtdPluginAPI
import XMLRPC

/// One XML-RPC procedure: its name, parameters, the role it needs, its introspection, and what it does.
///
/// Each procedure lives in its own file under `Methods/`, and ``MethodTable`` lists them all: adding one is one
/// file and one table entry.
struct Procedure: Sendable {
    let name: String
    /// Parameter names, in order; the first `required` must be given.
    let params: [String]
    let required: Int
    /// The role a session needs (the session id is then the first parameter); nil: no session (login, system.*).
    let role: Role?
    /// `system.methodSignature`: arrays of [return type, argument types...].
    let signatures: [[String]]
    let help: String
    let run: @Sendable (Call) throws -> Reply
}

/// What a procedure answers: a value, built when the answer is sent. A top-level answer with a `cacheKey` is
/// encoded once and reused while the key is the same (frontends poll the same `view` page).
struct Reply {
    let cacheKey: RenderedViewKey?
    let build: () -> XMLRPCValue
    /// A long poll: calls its argument once, later, with the answer (`changes`); `build` is then not used.
    var later: ((@escaping @Sendable (XMLRPCValue) -> Void) -> Void)? = nil

    static func value(_ v: XMLRPCValue) -> Reply { Reply(cacheKey: nil, build: { v }) }

    static func deferred(_ later: @escaping (@escaping @Sendable (XMLRPCValue) -> Void) -> Void) -> Reply {
        Reply(cacheKey: nil, build: { .nil }, later: later)
    }
}

/// One call of a procedure: its parameters, who asked, and the session when the procedure needs one.
struct Call {
    let dispatcher: Dispatcher
    let params: Params
    let client: String
    /// Present when the procedure needs a role (the dispatcher checked it).
    let session: Session?
    /// Inside `system.multicall`.
    let nested: Bool
    /// Whether the answer may come later (a long poll); false inside multicall and for callers that need the
    /// answer at once.
    let mayWait: Bool

    var context: ServerContext { dispatcher.context }

    /// The session of a procedure that needs a role.
    var user: Session { session! }

    /// An event for the hooks, by this call's user.
    func event(
        _ kind: ActionKind, connection: ConnectionInfo? = nil, field: String? = nil, newValue: String? = nil
    ) -> ActionEvent {
        ActionEvent(
            kind: kind, procedure: params.method, user: user.identity.user, roles: Array(user.identity.roles),
            clientAddress: client, connection: connection, field: field, newValue: newValue)
    }
}
