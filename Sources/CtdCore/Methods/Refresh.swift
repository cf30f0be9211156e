import Conntrack
import XMLRPC

extension Procedure {
    static let refresh = Procedure(
        name: "refresh", params: ["session"], required: 1, role: .viewer, signatures: [["struct", "string"]],
        help:
            "refresh(session) -> {generation, time, entries, autorefresh}. Takes a new snapshot of the table for this session, holding every change the kernel made before the call; with autorefresh off, view pages through this snapshot until the next refresh.",
        run: { try .value(Refresh.refresh($0)) })

    static let setAutorefresh = Procedure(
        name: "set_autorefresh", params: ["session", "on"], required: 2, role: .viewer,
        signatures: [["boolean", "string", "boolean"]],
        help:
            "set_autorefresh(session, on) -> on. On (the default): every view reads the live table. Off: view reads the snapshot taken now or at the last refresh, so that pages do not shift while a frontend pages through them.",
        run: { try .value(Refresh.setAutorefresh($0)) })
}

/// `refresh` and `set_autorefresh`: the snapshot a session pages through.
enum Refresh {
    static func refresh(_ call: Call) throws -> XMLRPCValue {
        let s = call.user
        // The snapshot holds every change the kernel made before this call (the event thread catches up first).
        let snap = call.context.table.freshSnapshot()
        call.context.sessions.pin(s.id, snap)
        return .structure(
            XMLRPCStruct([
                ("generation", .string(String(snap.generation))),
                ("time", .double(snap.takenAt)),
                ("entries", .int(Int64(Scoping.visibleCount(s, snap, call.context)))),
                ("autorefresh", .bool(s.autorefresh)),
            ]))
    }

    static func setAutorefresh(_ call: Call) throws -> XMLRPCValue {
        let on = try call.params.bool(1)
        let snap: MirrorSnapshot? = on ? nil : call.context.table.snapshot()
        call.context.sessions.update(call.user.id) { $0.autorefresh = on }
        call.context.sessions.pin(call.user.id, snap)
        return .bool(on)
    }
}
