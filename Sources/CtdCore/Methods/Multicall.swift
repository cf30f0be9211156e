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
        let settings = call.context.settings
        guard calls.count <= settings.maxMulticallCalls else {
            throw Fault.tooManyItems("system.multicall accepts at most \(settings.maxMulticallCalls) calls")
        }
        // A work budget: at most one login (each costs a password hash, and guesses must not come in bulk), and the
        // answers' encoded size counted as they come, so an answer over the limit is refused before it is built.
        var logins = 0
        // refresh and kill_preview may each cost a full dump of the table: one of them per multicall.
        var dumps = 0
        let dumping: Set<String> = [Procedure.refresh.name, Procedure.killPreview.name]
        var budget = Budget(limit: settings.maxResponseBytes)
        var answers: [XMLRPCValue] = []
        answers.reserveCapacity(calls.count)
        for c in calls {
            let answer: XMLRPCValue
            if case .structure(let st) = c, case .string(let name)? = st["methodName"] {
                if name == Procedure.login.name { logins += 1 }
                if dumping.contains(name) { dumps += 1 }
                if logins > 1 && name == Procedure.login.name {
                    answer = faultStruct(.tooManyItems("system.multicall may hold at most one login"))
                } else if dumps > 1 && dumping.contains(name) {
                    answer = faultStruct(.tooManyItems("system.multicall may hold at most one refresh or kill_preview"))
                } else {
                    answer = one(name, st["params"], call)
                }
            } else {
                answer = faultStruct(.invalidParams("each call needs a methodName string"))
            }
            guard budget.spend(on: answer) else { throw Fault.responseTooLarge(limit: settings.maxResponseBytes) }
            answers.append(answer)
        }
        return .array(answers)
    }

    private static func one(_ name: String, _ rawParams: XMLRPCValue?, _ call: Call) -> XMLRPCValue {
        let params: [XMLRPCValue]
        switch rawParams {
        case .array(let a)?: params = a
        case nil: params = []
        default: return faultStruct(.invalidParams("params of \(name) must be an array"))
        }
        switch call.dispatcher.call(name, params, client: call.client, nested: true) {
        case .success(let v): return .array([v])
        case .failure(let f): return faultStruct(f)
        }
    }

    /// The encoded size of the answers so far, against the response limit.
    struct Budget {
        let limit: Int
        private var used = 0
        private var scratch: [UInt8] = []

        init(limit: Int) { self.limit = limit }

        /// Counts one answer; false once the total is over the limit.
        mutating func spend(on value: XMLRPCValue) -> Bool {
            scratch.removeAll(keepingCapacity: true)
            XMLRPCEncoder.append(value, to: &scratch)
            used += scratch.count
            return used <= limit
        }
    }

    private static func faultStruct(_ f: Fault) -> XMLRPCValue {
        .structure(XMLRPCStruct([("faultCode", .int(Int64(f.code))), ("faultString", .string(f.message))]))
    }
}
