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

    func after(batch: Batch, outcomes: [ActionOutcome]) { after(parts: [(batch, outcomes[...])]) }

    /// Tells every hook the outcomes of the actions it was asked about in one or several batches (the parts of one
    /// bulk kill, each asked with its own `before(batch:)`): one `after(batch:)` per hook for all of them.
    func after(parts: [(batch: Batch, outcomes: ArraySlice<ActionOutcome>)]) {
        // The recorder's tokens (AuditSQLite), by part, for the observers after it.
        var chain: (recorder: any ChainedTrailRecorder, tokens: [Int: [Int64]])?
        for (h, (info, hook)) in plugins.hooks.enumerated() {
            let included = parts.indices.filter {
                h < parts[$0].batch.tokens.count && !parts[$0].batch.tokens[h].isEmpty
            }
            if included.isEmpty { continue }
            var results: [(event: ActionEvent, token: Int64, outcome: ActionOutcome)] = []
            for p in included {
                let (batch, outcomes) = parts[p]
                results += zip(batch.events.indices, outcomes.indices).map {
                    (batch.events[$0], batch.tokens[h][$0], outcomes[$1])
                }
            }
            do {
                if let observer = hook as? any TrailPositionObserver, let chain {
                    var outcomePositions: [TrailPosition?] = []
                    var actionPositions: [TrailPosition?] = []
                    for p in included {
                        if let tokens = chain.tokens[p] {
                            outcomePositions += chain.recorder.outcomePositions(for: tokens)
                            actionPositions += chain.recorder.actionPositions(for: tokens)
                        } else {
                            let unknown = [TrailPosition?](repeating: nil, count: parts[p].batch.events.count)
                            outcomePositions += unknown
                            actionPositions += unknown
                        }
                    }
                    try observer.after(
                        batch: results, outcomePositions: outcomePositions, actionPositions: actionPositions)
                } else {
                    try hook.after(batch: results)
                }
                if chain == nil, let recorder = hook as? any ChainedTrailRecorder {
                    chain = (
                        recorder, Dictionary(uniqueKeysWithValues: included.map { ($0, parts[$0].batch.tokens[h]) })
                    )
                }
                metrics.auditRecords(plugin: info.name, count: results.count)
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
