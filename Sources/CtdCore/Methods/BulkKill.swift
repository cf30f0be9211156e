import Conntrack
import CtdPluginAPI
import XMLRPC

/// Deletes given entries as one audited action: the hooks are asked for every entry first (a veto stops that
/// entry, a failing audit stops all), the table deletes the approved ones (kernel and mirror together), and the
/// hooks hear every outcome. `kill` and `kill_matching` both end here.
enum BulkKill {
    struct Result {
        var killed: [UInt32] = []
        /// Gone before the kernel got to them (or their tuple now belongs to a newer connection).
        var gone: [UInt32] = []
        var failed: [(UInt32, String)] = []

        /// The answer of `kill` and `kill_matching`.
        func answer(notFound: [UInt32], ambiguous: [UInt32]) -> XMLRPCValue {
            .structure(
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

    /// - Parameters:
    ///   - field, newValue: what the audit records carry besides the entry (`kill_matching`: the filter).
    static func run(_ targets: [Flow], call: Call, field: String? = nil, newValue: String? = nil) throws -> Result {
        let context = call.context
        var result = Result()
        var batch = HookRunner.Batch.unasked(count: targets.count)
        if !context.hooks.isEmpty {
            let now = context.clock.now()
            batch = try context.hooks.before(
                batch: targets.map {
                    call.event(.kill, connection: $0.connectionInfo(now: now), field: field, newValue: newValue)
                })
            if targets.count == 1, let reason = batch.vetoes[0] {
                context.metrics.kills(.vetoed, count: 1)
                context.hooks.after(batch: batch, outcomes: [.failed(reason: "vetoed: \(reason)")])
                throw Fault.vetoed(reason)
            }
            for (i, reason) in batch.vetoes.enumerated() where reason != nil {
                result.failed.append((targets[i].id, reason!))
            }
        }
        let approvedIndices = targets.indices.filter { batch.approved[$0] }
        var outcomes = [ActionOutcome](repeating: .failed(reason: "vetoed"), count: targets.count)
        let kernelOutcomes: [ConntrackTable.WriteOutcome]
        do {
            kernelOutcomes = try context.table.destroy(approvedIndices.map { targets[$0] })
        } catch {
            for i in approvedIndices { outcomes[i] = .failed(reason: "\(error)") }
            context.metrics.kills(.vetoed, count: targets.count - approvedIndices.count)
            context.metrics.kills(.failed, count: approvedIndices.count)
            context.hooks.after(batch: batch, outcomes: outcomes)
            context.logger.error("\(call.params.method): \(error)")
            throw Fault.kernelRefused("the conntrack netlink socket failed; nothing was killed")
        }
        for (k, outcome) in kernelOutcomes.enumerated() {
            let i = approvedIndices[k]
            let id = targets[i].id
            switch outcome {
            case .done:
                result.killed.append(id)
                outcomes[i] = .succeeded
            case .gone:
                result.gone.append(id)
                outcomes[i] = .failed(reason: "no such connection")
            case .failed(let why):
                result.failed.append((id, why))
                outcomes[i] = .failed(reason: why)
            }
        }
        context.hooks.after(batch: batch, outcomes: outcomes)
        let metrics = context.metrics
        metrics.kills(.killed, count: result.killed.count)
        metrics.kills(.gone, count: result.gone.count)
        metrics.kills(.failed, count: kernelOutcomes.count - result.killed.count - result.gone.count)
        metrics.kills(.vetoed, count: targets.count - approvedIndices.count)
        let summary = "\(result.killed.count) killed, \(result.gone.count) gone, \(result.failed.count) failed"
        context.logger.info("\(call.params.method) by \(call.user.identity.user) from \(call.client): \(summary)")
        return result
    }
}
