import Foundation
import XMLRPC

extension Procedure {
    static let status = Procedure(
        name: "status", params: ["session"], required: 1, role: .viewer, signatures: [["struct", "string"]],
        help:
            "status(session) -> {version, entries, generation, resyncs, events_applied, events_healthy, resyncing, receive_buffer, counter_refreshes, accounting, sessions, uptime, plugins}.",
        run: { .value(Status.run($0)) })
}

/// `status(session)`: the daemon, the mirror and the plugins at a glance.
enum Status {
    static func run(_ call: Call) -> XMLRPCValue {
        let context = call.context
        let st = context.mirror.statistics
        let plugins = context.plugins
        // Health strings can hold file paths and SQLite errors: only admins read them; others see whether it is ok.
        let detailed = call.user.role >= .admin
        let pluginList: [XMLRPCValue] = plugins.all.map { lp in
            let health = plugins.health(lp)
            return .structure(
                XMLRPCStruct([
                    ("name", .string(lp.name)), ("id", .string(lp.metadata.id)),
                    ("version", .string(lp.metadata.version)),
                    ("roles", .array(lp.metadata.roles.map { .string($0.rawValue) })),
                    ("health", .string(detailed || health == "ok" ? health : "problem (an admin's status tells more)")),
                ]))
        }
        return .structure(
            XMLRPCStruct([
                ("version", .string(ctdVersion)),
                ("entries", .int(Int64(Scoping.visibleCount(call.user, context.table.snapshot(), context)))),
                ("generation", .string(String(st.generation))),
                ("resyncs", .int(Int64(st.resyncs))),
                ("events_applied", .double(Double(st.eventsApplied))),
                ("events_healthy", .bool(st.eventsHealthy)),
                ("resyncing", .bool(st.resyncing)),
                ("receive_buffer", .int(Int64(st.receiveBuffer))),
                ("counter_refreshes", .int(Int64(st.counterRefreshes))),
                ("accounting", .bool(st.accountingEnabled)),
                ("sessions", .int(Int64(context.sessions.count))),
                ("uptime", .double(Date().timeIntervalSince1970 - context.startedAt)),
                ("plugins", .array(pluginList)),
            ]))
    }
}
