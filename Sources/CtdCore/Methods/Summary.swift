import Conntrack
import ConntrackQuery
import XMLRPC

extension Procedure {
    static let summary = Procedure(
        name: "summary", params: ["session", "filters", "group_by", "order_by", "limit"], required: 3,
        role: .viewer,
        signatures: [
            ["struct", "string", "struct", "string"], ["struct", "string", "struct", "string", "string"],
            ["struct", "string", "struct", "string", "string", "int"],
        ],
        help:
            "summary(session, filters, group_by, order_by, limit) -> {groups: [{key, count, bytes, packets, byte_rate}], other, total, group_by, order_by}. Groups the entries that match filters (as view's) by orig_src, orig_dst, pair, orig_port_dst (service: proto/port), l4proto, state, mark, zone or a resolved field; order_by is count (default), bytes, packets or byte_rate; the top limit groups (default 10, at most 1000) plus an 'other' bucket and the grand total, so the numbers add up.",
        run: { try .value(Summary.run($0)) })
}

/// `summary`: who talks to whom, how much, at a glance.
enum Summary {
    static let maximumLimit = 1000

    static func run(_ call: Call) throws -> XMLRPCValue {
        let context = call.context
        let p = call.params
        let resolved = Set(context.plugins.resolvedFieldNames)
        let query = Scoping.restrict(
            try FlowQuery.parse(
                filters: try Filters.inputs(p[1], procedure: "summary"), orderBy: nil, orderDirection: nil, start: 0,
                length: 0, maxLength: 0, resolvedFields: resolved, labelNames: context.settings.labelNames),
            to: call.user)
        let key = try FlowSummary.Key.parse(try p.string(2), resolvedFields: resolved)
        let order = try FlowSummary.Order.parse(try p.optionalString(3))
        let limit = try p.int(4, default: 10)
        guard (1...Int64(maximumLimit)).contains(limit) else {
            throw Fault.valueOutOfRange("limit must be 1 to \(maximumLimit), not \(limit)")
        }
        let snap = context.table.snapshot()
        let resolve = context.plugins.resolvers.isEmpty ? nil : context.resolvedFields.resolver()
        let summary = FlowSummary.summarize(
            snap.flows, indexes: snap.indexes, query: query, key: key, order: order, limit: Int(limit), now: context.clock.now(),
            resolve: resolve)
        return .structure(
            XMLRPCStruct([
                ("groups", .array(summary.groups.map { totals($0.totals, key: $0.name) })),
                ("other", totals(summary.other, key: nil)),
                ("total", totals(summary.total, key: nil)),
                ("group_by", .string(try p.string(2))),
                ("order_by", .string(order.rawValue)),
                ("generation", .string(String(snap.generation))),
            ]))
    }

    static func totals(_ t: FlowSummary.Totals, key: String?) -> XMLRPCValue {
        var members: [(String, XMLRPCValue)] = key.map { [("key", .string($0))] } ?? []
        members += [
            ("count", .int(Int64(t.count))), ("bytes", .double(Double(t.bytes))),
            ("packets", .double(Double(t.packets))), ("byte_rate", .double(t.byteRate)),
        ]
        return .structure(XMLRPCStruct(members))
    }
}
