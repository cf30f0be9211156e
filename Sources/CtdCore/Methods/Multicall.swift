import XMLRPC

extension Procedure {
    static let multicall = Procedure(
        name: "system.multicall", params: ["calls"], required: 1, role: nil, signatures: [["array", "array"]],
        help:
            "system.multicall([{methodName, params}, ...]) -> one entry per call: [result] or {faultCode, faultString}. At most 1000 calls; not nestable.",
        run: { try .value(Multicall.run($0)) })
}

/// `system.multicall`: each call dispatched as if sent alone, answers in order.
enum Multicall {
    static func run(_ call: Call) throws -> XMLRPCValue {
        guard !call.nested else { throw Fault.invalidParams("system.multicall cannot be nested") }
        guard case .array(let calls) = call.params.values[0] else {
            throw Fault.invalidParams("system.multicall takes an array of {methodName, params} structs")
        }
        let limit = call.context.settings.maxMulticallCalls
        guard calls.count <= limit else { throw Fault.tooManyItems("system.multicall accepts at most \(limit) calls") }
        return .array(
            calls.map { c -> XMLRPCValue in
                guard case .structure(let st) = c, case .string(let name)? = st["methodName"] else {
                    return faultStruct(.invalidParams("each call needs a methodName string"))
                }
                let params: [XMLRPCValue]
                switch st["params"] {
                case .array(let a)?: params = a
                case nil: params = []
                default: return faultStruct(.invalidParams("params of \(name) must be an array"))
                }
                switch call.dispatcher.call(name, params, client: call.client, nested: true) {
                case .success(let v): return .array([v])
                case .failure(let f): return faultStruct(f)
                }
            })
    }

    private static func faultStruct(_ f: Fault) -> XMLRPCValue {
        .structure(XMLRPCStruct([("faultCode", .int(Int64(f.code))), ("faultString", .string(f.message))]))
    }
}
