import CtdPluginAPI
import PluginHost
import XMLRPC

/// Asks the action hooks before an action and tells them after.
struct HookRunner {
    let plugins: PluginRegistry
    let metrics: ServerMetrics

    var isEmpty: Bool { plugins.hooks.isEmpty }

    /// The hooks' answers for a batch: `tokens[h]` are hook h's tokens (hooks that were asked, in order).
    struct Batch {
        var events: [ActionEvent]
        var tokens: [[Int64]]
        var approved: [Bool]
        var vetoes: [String?] = []

        /// A batch no hook was asked about: every action approved.
        static func unasked(count: Int) -> Batch {
            Batch(events: [], tokens: [], approved: Array(repeating: true, count: count), vetoes: [])
        }
    }

    /// `before(batch:)` on every hook: a veto stops that action only; a failure of a hook whose failure stops
    /// actions stops the whole batch with a fault (nothing unaudited).
    func before(batch events: [ActionEvent]) throws -> Batch {
        var result = Batch(
            events: events, tokens: [], approved: Array(repeating: true, count: events.count),
            vetoes: Array(repeating: nil, count: events.count))
        // The chain's rows of these actions, once a recorder (AuditSQLite) wrote them, for observers after it.
        var chain: (recorder: any ChainedTrailRecorder, tokens: [Int64])?
        for (info, hook) in plugins.hooks {
            do {
                let answers: [(decision: HookDecision, token: Int64)]
                if let observer = hook as? any TrailPositionObserver, let chain {
                    answers = try observer.before(
                        batch: events, positions: chain.recorder.actionPositions(for: chain.tokens))
                } else {
                    answers = try hook.before(batch: events)
                }
                guard answers.count == events.count else {
                    throw PluginError("answered \(answers.count) decisions for \(events.count) actions")
                }
                result.tokens.append(answers.map(\.token))
                if chain == nil, let recorder = hook as? any ChainedTrailRecorder {
                    chain = (recorder, answers.map(\.token))
                }
                var vetoes = 0
                for (i, a) in answers.enumerated() {
                    if case .veto = a.decision { vetoes += 1 }
                    if case .veto(let reason) = a.decision, result.approved[i] {
                        result.approved[i] = false
                        result.vetoes[i] = "\(reason) (\(info.name))"
                    }
                }
                metrics.auditVetoes(plugin: info.name, count: vetoes)
                plugins.reportProblem(info.name, nil)
            } catch {
                metrics.auditFailure(plugin: info.name, phase: "before")
                plugins.reportProblem(info.name, "\(error)")
                if hook.failureStopsAction {
                    after(
                        batch: result,
                        outcomes: Array(repeating: .failed(reason: "\(info.name) failed"), count: events.count))
                    throw Fault.vetoed("\(info.name) could not record the action, so it was not done")
                }
                result.tokens.append([])
            }
        }
        return result
    }

    func after(batch: Batch, outcomes: [ActionOutcome]) {
        var chain: (recorder: any ChainedTrailRecorder, tokens: [Int64])?
        for (h, tokens) in batch.tokens.enumerated() where !tokens.isEmpty {
            let (info, hook) = plugins.hooks[h]
            do {
                let results = (0..<batch.events.count).map { (batch.events[$0], tokens[$0], outcomes[$0]) }
                if let observer = hook as? any TrailPositionObserver, let chain {
                    try observer.after(
                        batch: results, outcomePositions: chain.recorder.outcomePositions(for: chain.tokens),
                        actionPositions: chain.recorder.actionPositions(for: chain.tokens))
                } else {
                    try hook.after(batch: results)
                }
                if chain == nil, let recorder = hook as? any ChainedTrailRecorder { chain = (recorder, tokens) }
                metrics.auditRecords(plugin: info.name, count: batch.events.count)
            } catch {
                metrics.auditFailure(plugin: info.name, phase: "after")
                plugins.reportProblem(info.name, "\(error)")
            }
        }
    }

    /// One action (login, change, a denied call): the batch path with one event. A veto throws the fault, after
    /// telling the hooks that were asked that the action did not happen.
    func before(_ event: ActionEvent) throws -> Batch {
        let batch = try before(batch: [event])
        if let reason = batch.vetoes.first.flatMap({ $0 }) {
            after(batch: batch, outcomes: [.failed(reason: "vetoed: \(reason)")])
            throw Fault.vetoed(reason)
        }
        return batch
    }

    func after(_ batch: Batch, outcome: ActionOutcome) { after(batch: batch, outcomes: [outcome]) }
}
