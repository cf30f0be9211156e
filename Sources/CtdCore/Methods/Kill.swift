import Conntrack
import CtdPluginAPI
import XMLRPC

extension Procedure {
    static let kill = Procedure(
        name: "kill", params: ["session", "ids"], required: 2, role: .operator,
        signatures: [["struct", "string", "array"], ["struct", "string", "string"]],
        help:
            "kill(session, ids) -> {killed, killed_ids, not_found, ambiguous, failed}. ids is an array of connection ids (strings, ints or negative two's-complement ints). Only the entries with these exact ids are deleted; fault 4 if none of them exists. Needs the operator role.",
        run: { try .value(Kill.run($0)) })
}

/// `kill(session, ids)`: deletes exactly the entries with these ids, asking the hooks first.
enum Kill {
    static func run(_ call: Call) throws -> XMLRPCValue {
        let ids = try self.ids(call)
        guard let answer = try call.context.actions.pass({ try kill(ids, call) }) else { throw Fault.shuttingDown }
        return answer
    }

    private static func ids(_ call: Call) throws -> [UInt32] {
        let rawIDs: [XMLRPCValue]
        switch call.params[1]! {
        case .array(let a): rawIDs = a
        case let single: rawIDs = [single]
        }
        guard !rawIDs.isEmpty else { throw Fault.invalidParams("kill needs at least one id") }
        let limit = call.context.settings.maxKillIDs
        guard rawIDs.count <= limit else {
            throw Fault.tooManyItems("kill accepts at most \(limit) ids per call, \(rawIDs.count) given")
        }
        return try rawIDs.enumerated().map { i, v in
            guard let id = UInt32Argument.parse(v) else {
                throw Fault.invalidParams(
                    "id \(i + 1) of kill is not a connection id (an unsigned 32-bit number as string or int)")
            }
            return id
        }
    }

    private static func kill(_ ids: [UInt32], _ call: Call) throws -> XMLRPCValue {
        let context = call.context
        var seen = Set<UInt32>()
        let unique = ids.filter { seen.insert($0).inserted }
        var targets: [Flow] = []
        var notFound: [UInt32] = []
        var ambiguous: [UInt32] = []
        for (id, found) in zip(unique, context.table.lookup(ids: unique)) {
            switch found {
            // Outside a scoped session's scope, an entry does not exist for it.
            case .found(let f) where Scoping.allows(call.user, f, context): targets.append(f)
            case .found: notFound.append(id)
            case .missing: notFound.append(id)
            case .ambiguous: ambiguous.append(id)
            }
        }
        context.metrics.kills(.not_found, count: notFound.count + ambiguous.count)
        let result = try BulkKill.run(targets, call: call)
        notFound += result.gone
        if result.killed.isEmpty && result.failed.isEmpty {
            if ids.count == 1 && !ambiguous.isEmpty {
                throw Fault.noSuchConnection("id \(ids[0]) is shared by several entries right now; nothing was killed")
            }
            throw Fault.noSuchConnection(
                ids.count == 1
                    ? "id \(ids[0]) does not exist (any more)" : "none of the \(seen.count) ids exists (any more)")
        }
        return result.answer(notFound: notFound, ambiguous: ambiguous)
    }
}
