import Conntrack
import ConntrackQuery
import Foundation
import XMLRPC

extension Procedure {
    static let view = Procedure(
        name: "view", params: ["session", "filters", "order_by", "order_dir", "start", "length"], required: 1,
        role: .viewer,
        signatures: [
            ["struct", "string"], ["struct", "string", "struct"], ["struct", "string", "struct", "string"],
            ["struct", "string", "struct", "string", "string"],
            ["struct", "string", "struct", "string", "string", "int"],
            ["struct", "string", "struct", "string", "string", "int", "int"],
        ],
        help:
            "view(session, filters, order_by, order_dir, start, length) -> {total, start, length, connections, generation, time, autorefresh, accounting, timestamps[, note]} (note: why counters or start times are missing). filters is a struct (or an empty array) of field: value; order_dir is ASC or DESC; length is at most max_page_length (150).",
        run: View.run)
}

/// `view`: one page of the table, filtered and sorted, from the live mirror or the session's pinned snapshot.
enum View {
    static func run(_ call: Call) throws -> Reply {
        let context = call.context
        let p = call.params
        let s = call.user
        let query = Scoping.restrict(
            try FlowQuery.parse(
                filters: try Filters.inputs(p[1], procedure: "view"), orderBy: try p.optionalString(2),
                orderDirection: try p.optionalString(3), start: try p.int(4, default: 0),
                length: try p.int(5, default: Int64(min(100, context.settings.maxPageLength))),
                maxLength: context.settings.maxPageLength, resolvedFields: Set(context.plugins.resolvedFieldNames),
                labelNames: context.settings.labelNames),
            to: s)
        let snap: MirrorSnapshot
        if s.autorefresh {
            snap = context.table.snapshot()
        } else if let pinned = s.pinned {
            snap = pinned
        } else {
            snap = context.table.snapshot()
            context.sessions.pin(s.id, snap)
        }
        let now = context.clock.now()
        let statistics = context.mirror.statistics
        let accounting = statistics.accountingEnabled
        let timestamps = statistics.timestampsEnabled
        // Orders and filters on `timeout` depend on the clock, not only on the table: never cached. Otherwise the
        // encoded answer is reused within one second (timeouts are shown in whole seconds).
        let clockDependent = query.mentionsTimeout
        let key =
            clockDependent || s.lostPinnedSnapshot
            ? nil
            : RenderedViewKey(
                generation: snap.generation, query: query, second: Int64(now), autorefresh: s.autorefresh,
                accounting: accounting, timestamps: timestamps)
        return Reply(cacheKey: key) {
            let resolve = context.resolvedFields.resolver()
            let wallNow = Date().timeIntervalSince1970
            let compute = {
                query.run(
                    on: snap.flows, indexes: snap.indexes, now: now, wallNow: wallNow,
                    resolve: context.plugins.resolvers.isEmpty ? nil : resolve)
            }
            let result =
                clockDependent
                ? compute()
                : context.queryResults.value(for: QueryKey(generation: snap.generation, query: query), compute: compute)
            var page: [XMLRPCValue] = []
            page.reserveCapacity(result.page.count)
            for i in result.page {
                let flow = snap.flows[i]
                page.append(
                    flow.xmlrpcEncodedStruct(
                        now: now, wallNow: wallNow, labelNames: context.settings.labelNames,
                        extra: context.resolvedFields.members(mark: flow.mark)))
            }
            var out: [(String, XMLRPCValue)] = [
                ("total", .int(Int64(result.total))),
                ("start", .int(Int64(query.start))),
                ("length", .int(Int64(page.count))),
                ("connections", .array(page)),
                ("generation", .string(String(snap.generation))),
                ("time", .double(snap.takenAt)),
                ("autorefresh", .bool(s.autorefresh)),
                ("accounting", .bool(accounting)),
                ("timestamps", .bool(timestamps)),
            ]
            var notes: [String] = []
            if s.lostPinnedSnapshot { notes.append(Notes.snapshotReleased) }
            if !accounting { notes.append(Notes.accountingOff) }
            if !timestamps { notes.append(Notes.timestampsOff) }
            if !notes.isEmpty { out.append(("note", .string(notes.joined(separator: "; ")))) }
            return .structure(XMLRPCStruct(out))
        }
    }

    enum Notes {
        static let snapshotReleased =
            "this page comes from a new snapshot: the one this session had pinned was let go because too many different snapshots were pinned (max_pinned_snapshots)"
        static let accountingOff =
            "byte and packet counters and byte_rate are not measured: net.netfilter.nf_conntrack_acct is 0 on this host"
        static let timestampsOff =
            "connection start times and ages are not recorded: net.netfilter.nf_conntrack_timestamp is 0 on this host (sysctl -w net.netfilter.nf_conntrack_timestamp=1 enables them for new connections)"
    }
}

/// The `filters` argument of the procedures that filter the table.
enum Filters {
    /// `filters` as pyctd sent it (a struct), or an empty array (PHP cannot encode an empty struct), or nil.
    static func inputs(_ value: XMLRPCValue?, procedure: String) throws -> [String: FilterInput] {
        guard let value else { return [:] }
        switch value {
        case .nil: return [:]
        case .string(let s) where s.isEmpty: return [:]
        case .array(let a) where a.isEmpty: return [:]
        case .structure(let st):
            var out: [String: FilterInput] = [:]
            for (name, v) in st { out[name] = try input(name, v) }
            return out
        default:
            throw Fault.invalidParams(
                "argument 2 of \(procedure) (filters) must be a struct of field: value, not \(value.typeName)")
        }
    }

    private static func input(_ name: String, _ v: XMLRPCValue) throws -> FilterInput {
        switch v {
        case .int(let n): return .int(n)
        case .string(let s): return .string(s)
        case .bool(let b): return .int(b ? 1 : 0)
        case .double(let d) where d == d.rounded() && abs(d) < 1e18: return .int(Int64(d))
        case .double(let d) where d.isFinite: return .double(d)
        case .array(let items): return .list(try items.map { try input(name, $0) })
        case .structure(let members):
            var out: [String: FilterInput] = [:]
            for (k, v) in members { out[k] = try input(name, v) }
            return .structure(out)
        default: throw Fault.invalidParams("filter \(name): a \(v.typeName) is not a valid filter value")
        }
    }
}
