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
            case .found(let f): targets.append(f)
            case .missing: notFound.append(id)
            case .ambiguous: ambiguous.append(id)
            }
        }
        var failed: [(UInt32, String)] = []
        var batch = HookRunner.Batch.unasked(count: targets.count)
        if !context.hooks.isEmpty {
            let now = context.clock.now()
            batch = try context.hooks.before(
                batch: targets.map { call.event(.kill, connection: $0.connectionInfo(now: now)) })
            if targets.count == 1, let reason = batch.vetoes[0] {
                context.hooks.after(batch: batch, outcomes: [.failed(reason: "vetoed: \(reason)")])
                throw Fault.vetoed(reason)
            }
            for (i, reason) in batch.vetoes.enumerated() where reason != nil { failed.append((targets[i].id, reason!)) }
        }
        let approvedIndices = targets.indices.filter { batch.approved[$0] }
        var outcomes = [ActionOutcome](repeating: .failed(reason: "vetoed"), count: targets.count)
        let kernelOutcomes: [ConntrackTable.WriteOutcome]
        do {
            kernelOutcomes = try context.table.destroy(approvedIndices.map { targets[$0] })
        } catch {
            for i in approvedIndices { outcomes[i] = .failed(reason: "\(error)") }
            context.hooks.after(batch: batch, outcomes: outcomes)
            context.logger.error("kill: \(error)")
            throw Fault.kernelRefused("the conntrack netlink socket failed; nothing was killed")
        }
        var killed: [UInt32] = []
        for (k, outcome) in kernelOutcomes.enumerated() {
            let i = approvedIndices[k]
            let id = targets[i].id
            switch outcome {
            case .done:
                killed.append(id)
                outcomes[i] = .succeeded
            case .gone:
                notFound.append(id)
                outcomes[i] = .failed(reason: "no such connection")
            case .failed(let why):
                failed.append((id, why))
                outcomes[i] = .failed(reason: why)
            }
        }
        context.hooks.after(batch: batch, outcomes: outcomes)
        context.logger.info(
            "kill by \(call.user.identity.user) from \(call.client): \(killed.count) killed, \(notFound.count) not found")
        if killed.isEmpty && failed.isEmpty {
            if ids.count == 1 && !ambiguous.isEmpty {
                throw Fault.noSuchConnection("id \(ids[0]) is shared by several entries right now; nothing was killed")
            }
            throw Fault.noSuchConnection(
                ids.count == 1
                    ? "id \(ids[0]) does not exist (any more)" : "none of the \(seen.count) ids exists (any more)")
        }
        return .structure(
            XMLRPCStruct([
                ("killed", .int(Int64(killed.count))),
                ("killed_ids", .array(killed.map { .string(String($0)) })),
                ("not_found", .array(notFound.map { .string(String($0)) })),
                ("ambiguous", .array(ambiguous.map { .string(String($0)) })),
                (
                    "failed",
                    .array(
                        failed.map {
                            .structure(XMLRPCStruct([("id", .string(String($0.0))), ("reason", .string($0.1))]))
                        })
                ),
            ]))
    }
}
