import XMLRPC

extension Procedure {
    static let listMethods = Procedure(
        name: "system.listMethods", params: [], required: 0, role: nil, signatures: [["array"]],
        help: "system.listMethods() -> the names of all methods.",
        run: { _ in .value(.array(MethodTable.all.map(\.name).sorted().map { .string($0) })) })

    static let methodHelp = Procedure(
        name: "system.methodHelp", params: ["method"], required: 1, role: nil, signatures: [["string", "string"]],
        help: "system.methodHelp(name) -> a description of the method.",
        run: { call in .value(.string(try Introspection.help(call.params.string(0), call.context))) })

    static let methodSignature = Procedure(
        name: "system.methodSignature", params: ["method"], required: 1, role: nil,
        signatures: [["array", "string"]],
        help: "system.methodSignature(name) -> the method's signatures: arrays of [return type, argument types...].",
        run: { call in .value(try Introspection.signature(call.params.string(0), call.context)) })
}

/// `system.methodHelp` and `system.methodSignature`, from the ``MethodTable``; `login`'s arguments are the
/// authenticator's.
enum Introspection {
    static func procedure(_ name: String) throws -> Procedure {
        guard let p = MethodTable.byName[name] else { throw Fault.methodNotFound(String(name.prefix(100))) }
        return p
    }

    static func help(_ name: String, _ context: ServerContext) throws -> String {
        let p = try procedure(name)
        guard name == Procedure.login.name else { return p.help }
        let args = context.plugins.authenticator.loginParameters.joined(separator: ", ")
        return "login(\(args)) -> session id string. \(p.help)"
    }

    static func signature(_ name: String, _ context: ServerContext) throws -> XMLRPCValue {
        let p = try procedure(name)
        let signatures =
            name == Procedure.login.name
            ? [["string"] + context.plugins.authenticator.loginParameters.map { _ in "string" }] : p.signatures
        return .array(signatures.map { .array($0.map { .string($0) }) })
    }
}
