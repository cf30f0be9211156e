import Conntrack
import CtdPluginAPI
import XMLRPC

/// Deletes given entries as one audited action: the hooks are asked about every entry before the kernel is (a veto
/// stops that entry; a failing audit stops the entries not recorded yet), the table deletes the approved ones
/// (kernel and mirror together; a large kill in two parts, the first deleted while the second is recorded), and the
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
        let hooked = !context.hooks.isEmpty
        let now = context.clock.now()
        // The hooks' answers, part by part, while the kernel deletes the parts approved before.
        var asked: [(batch: HookRunner.Batch, part: Range<Int>)] = []
        let destroyed = context.table.destroy(targets, parts: parts(targets.count, hooked: hooked)) { part in
            guard hooked else { return Array(repeating: true, count: part.count) }
            let batch = try context.hooks.before(
                batch: targets[part].map {
                    call.event(.kill, connection: $0.connectionInfo(now: now), field: field, newValue: newValue)
                })
            asked.append((batch, part))
            return batch.approved
        }
        // A hook whose failure stops actions failed on the first part: nothing was done (the hooks were told).
        if let stop = destroyed.stoppedBy, asked.isEmpty { throw stop }
        if targets.count == 1, let reason = asked.first?.batch.vetoes[0] {
            context.metrics.kills(.vetoed, count: 1)
            context.hooks.after(batch: asked[0].batch, outcomes: [.failed(reason: "vetoed: \(reason)")])
            throw Fault.vetoed(reason)
        }
        var result = Result()
        var outcomes = [ActionOutcome](repeating: .failed(reason: "vetoed"), count: targets.count)
        var vetoed = 0
        for (batch, part) in asked {
            for (k, reason) in batch.vetoes.enumerated() {
                guard let reason else { continue }
                result.failed.append((targets[part.lowerBound + k].id, reason))
                vetoed += 1
            }
        }
        if let error = destroyed.socketFailure {
            for (i, outcome) in destroyed.outcomes.enumerated() where outcome != nil {
                outcomes[i] = .failed(reason: "\(error)")
            }
            context.metrics.kills(.vetoed, count: vetoed)
            context.metrics.kills(.failed, count: targets.count - vetoed)
            context.hooks.after(parts: asked.map { ($0.batch, outcomes[$0.part]) })
            context.logger.error("\(call.params.method): \(error)")
            throw Fault.kernelRefused("the conntrack netlink socket failed; nothing was killed")
        }
        var attempted = 0
        for (i, outcome) in destroyed.outcomes.enumerated() {
            guard let outcome else { continue }
            attempted += 1
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
        // A hook that stops actions failed on a later part: the parts before it were recorded and deleted; the
        // rest were not touched, and the hooks were told about the failed part.
        var refused = 0
        if let stop = destroyed.stoppedBy, let first = asked.last?.part.upperBound {
            let reason = (stop as? Fault)?.message ?? "\(stop)"
            for i in first..<targets.count { result.failed.append((targets[i].id, reason)) }
            refused = targets.count - first
        }
        context.hooks.after(parts: asked.map { ($0.batch, outcomes[$0.part]) })
        let metrics = context.metrics
        metrics.kills(.killed, count: result.killed.count)
        metrics.kills(.gone, count: result.gone.count)
        metrics.kills(.failed, count: attempted - result.killed.count - result.gone.count)
        metrics.kills(.vetoed, count: vetoed + refused)
        let summary = "\(result.killed.count) killed, \(result.gone.count) gone, \(result.failed.count) failed"
        context.logger.info("\(call.params.method) by \(call.user.identity.user) from \(call.client): \(summary)")
        return result
    }

    /// How a kill of `count` entries is split so that the hooks' records of one part (AuditSQLite: one transaction
    /// of pending rows) are written while the kernel deletes the part before: from ``pipelineThreshold`` entries,
    /// ``firstPartShare`` of them first, then the rest. The last part is the only one whose kernel deletes nothing
    /// overlaps, and each part costs its own commit (one fsync): two parts, the second the smaller (docs/design.md,
    /// "A bulk kill in two parts"). Without hooks there is nothing to overlap: one part.
    static func parts(_ count: Int, hooked: Bool) -> [Range<Int>] {
        guard count > 0 else { return [] }
        guard hooked, count >= pipelineThreshold else { return [0..<count] }
        let first = count * firstPartShare / 100
        return [0..<first, first..<count]
    }

    static let pipelineThreshold = 1024
    /// Percent.
    static let firstPartShare = 70
}
