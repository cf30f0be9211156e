import Conntrack
import XMLRPC

extension Procedure {
    static let killMatching = Procedure(
        name: "kill_matching", params: ["session", "token", "expected_total"], required: 3, role: .operator,
        signatures: [["struct", "string", "string", "int"]],
        help:
            "kill_matching(session, token, expected_total) -> {killed, killed_ids, not_found, ambiguous, failed}, as kill answers. Kills exactly the entries kill_preview's token names that still exist with the same id and tuple (found by both, so ambiguous is always empty); a connection that started after the preview is never touched, even if it matches. expected_total must be the preview's total. Audited as one action carrying the filter and every entry. Needs the operator role.",
        run: { try .value(KillMatching.run($0)) })
}

/// `kill_matching(session, token, expected_total)`: the kill a preview showed, and nothing more.
enum KillMatching {
    static func run(_ call: Call) throws -> XMLRPCValue {
        let context = call.context
        let token = try call.params.string(1)
        let expected = try call.params.int(2, default: -1)
        guard expected >= 0, expected <= Int64(context.settings.maxKillMatching) else {
            throw Fault.tooManyItems(
                "expected_total must be 0 to max_kill_matching (\(context.settings.maxKillMatching)), not \(expected)")
        }
        let preview: KillPreviews.Preview
        switch context.killPreviews.take(token, session: call.user.id, expectedTotal: Int(expected)) {
        case .found(let p): preview = p
        case .unknown:
            throw Fault.invalidParams(
                "the token is unknown, expired, already used or another session's: call kill_preview again")
        case .otherTotal(let total):
            throw Fault.invalidParams(
                "expected_total \(expected) is not the preview's total (\(total)): nothing was killed")
        }
        guard let answer = try context.actions.pass({ try kill(preview, call) }) else { throw Fault.shuttingDown }
        return answer
    }

    private static func kill(_ preview: KillPreviews.Preview, _ call: Call) throws -> XMLRPCValue {
        var targets: [Flow] = []
        var gone: [UInt32] = []
        // By id and tuple, as the preview saw them: an id that two entries share (random 32-bit ids collide a few
        // times in 250,000) still names one entry here.
        let keys = preview.entries.map(FlowKey.init)
        for (entry, found) in zip(preview.entries, call.context.table.lookup(keys: keys)) {
            if let now = found, Scoping.allows(call.user, now, call.context) {
                targets.append(now)
            } else {
                gone.append(entry.id)
            }
        }
        call.context.metrics.kills(.gone, count: gone.count)
        let result = try BulkKill.run(targets, call: call, field: "filter", newValue: preview.filter)
        return result.answer(notFound: gone + result.gone, ambiguous: [])
    }
}
