import Conntrack
import ConntrackQuery
import XMLRPC

extension Procedure {
    static let killPreview = Procedure(
        name: "kill_preview", params: ["session", "filters"], required: 2, role: .operator,
        signatures: [["struct", "string", "struct"]],
        help:
            "kill_preview(session, filters) -> {total, sample, groups: {sources, destinations}, token, expires, filter[, note]}. Shows what kill_matching would kill: the entries that match filters (as view's) now, the first 20 as view shows them, the top sources and destination:port pairs with counts, and a token (single use, this session only, valid for 60 s) that names exactly these entries. No token (an empty string, with a note) when nothing matches or more than max_kill_matching do. Needs the operator role.",
        run: { try .value(KillPreview.run($0)) })
}

/// `kill_preview(session, filters)`: what a filter would kill, and a token for exactly that.
enum KillPreview {
    static let sampleLength = 20
    static let groupLimit = 10

    static func run(_ call: Call) throws -> XMLRPCValue {
        let context = call.context
        let resolved = Set(context.plugins.resolvedFieldNames)
        let inputs = try Filters.inputs(call.params[1], procedure: "kill_preview")
        let query = Scoping.restrict(
            try FlowQuery.parse(
                filters: inputs, orderBy: "id", orderDirection: "ASC", start: 0, length: Int64(sampleLength),
                maxLength: sampleLength, resolvedFields: resolved, labelNames: context.settings.labelNames),
            to: call.user)
        // Every event the kernel sent before the call is in the snapshot (a connection made a moment ago is in the
        // preview). No reconciliation dump: an entry that ended unannounced is reported gone by kill_matching.
        context.table.catchUp()
        let snap = context.table.snapshot()
        let now = context.clock.now()
        let resolve = context.plugins.resolvers.isEmpty ? nil : context.resolvedFields.resolver()
        // Only what a kill_matching may take is kept (the rest is counted): a preview of a huge match costs no memory.
        let limit = context.settings.maxKillMatching
        var entries: [Flow] = []
        var total = 0
        query.forEachMatch(on: snap.flows, indexes: snap.indexes, now: now, resolve: resolve) {
            total += 1
            if total <= limit { entries.append($0) }
        }
        let sample = query.run(on: snap.flows, indexes: snap.indexes, now: now, resolve: resolve).page.map { i in
            snap.flows[i].xmlrpcStruct(
                now: now, labelNames: context.settings.labelNames,
                extra: context.resolvedFields.members(mark: snap.flows[i].mark))
        }
        let table = FlowTable(entries)
        func top(_ key: FlowSummary.Key) -> XMLRPCValue {
            let s = FlowSummary.summarize(
                table, query: query, key: key, order: .count, limit: groupLimit, now: now, resolve: resolve)
            return .array(s.groups.map { Summary.totals($0.totals, key: $0.name) })
        }
        let filter = describe(call.params[1])
        var out: [(String, XMLRPCValue)] = [
            ("total", .int(Int64(total))),
            ("sample", .array(sample)),
            ("groups", .structure(XMLRPCStruct([("sources", top(.origSrc)), ("destinations", top(.destinationPort))]))),
        ]
        if entries.isEmpty || total > limit {
            out += [("token", .string("")), ("expires", .double(0)), ("filter", .string(filter))]
            out.append(
                (
                    "note",
                    .string(
                        entries.isEmpty
                            ? "nothing matches: there is nothing to kill"
                            : "\(total) entries match, more than max_kill_matching (\(limit)): narrow the filter")
                ))
        } else {
            let (token, expires) = context.killPreviews.add(session: call.user.id, filter: filter, entries: entries)
            let wallExpiry = snap.takenAt + (expires - snap.monotonic)
            out += [("token", .string(token)), ("expires", .double(wallExpiry)), ("filter", .string(filter))]
        }
        return .structure(XMLRPCStruct(out))
    }

    /// The filter as the audit trail records it (bounded).
    static func describe(_ value: XMLRPCValue?) -> String {
        guard let value, case .structure(let members) = value else { return "{}" }
        let text = members.map { "\($0.0)=\($0.1)" }.sorted().joined(separator: " ")
        return String(text.prefix(2000))
    }
}
