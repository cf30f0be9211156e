/// The method table: parameters, signatures and help, used for dispatch and introspection.
struct MethodSpec {
    let params: [String]
    let required: Int
    let signatures: [[String]]
    let help: String
}

extension RPCService {
    static let methods: [String: MethodSpec] = [
        "login": MethodSpec(
            params: ["username", "password"], required: 0, signatures: [["string", "string", "string"]],
            help:
                "Checks the credentials with the configured authenticator and opens a session. Sessions end after the idle timeout (10 s by default) or the absolute lifetime. Fault 1 on wrong credentials."
        ),
        "logout": MethodSpec(
            params: ["session"], required: 1, signatures: [["boolean", "string"]],
            help: "logout(session) -> true if the session existed. Ends the session at once."),
        "view": MethodSpec(
            params: ["session", "filters", "order_by", "order_dir", "start", "length"], required: 1,
            signatures: [
                ["struct", "string"], ["struct", "string", "struct"], ["struct", "string", "struct", "string"],
                ["struct", "string", "struct", "string", "string"],
                ["struct", "string", "struct", "string", "string", "int"],
                ["struct", "string", "struct", "string", "string", "int", "int"],
            ],
            help:
                "view(session, filters, order_by, order_dir, start, length) -> {total, start, length, connections, generation, time, autorefresh, accounting[, note]} (note: why counters are missing). filters is a struct (or an empty array) of field: value; order_dir is ASC or DESC; length is at most max_page_length (150)."
        ),
        "kill": MethodSpec(
            params: ["session", "ids"], required: 2,
            signatures: [["struct", "string", "array"], ["struct", "string", "string"]],
            help:
                "kill(session, ids) -> {killed, killed_ids, not_found, ambiguous, failed}. ids is an array of connection ids (strings, ints or negative two's-complement ints). Only the entries with these exact ids are deleted; fault 4 if none of them exists. Needs the operator role."
        ),
        "change": MethodSpec(
            params: ["session", "field_name", "id", "value"], required: 4,
            signatures: [
                ["struct", "string", "string", "string", "int"], ["struct", "string", "string", "string", "string"],
            ],
            help:
                "change(session, field_name, id, value) -> the connection after the change. field_name is 'mark' (0..4294967295) or 'timeout' (seconds, 1..2147483647). Needs the operator role."
        ),
        "refresh": MethodSpec(
            params: ["session"], required: 1, signatures: [["struct", "string"]],
            help:
                "refresh(session) -> {generation, time, entries, autorefresh}. Takes a new snapshot of the table for this session, holding every change the kernel made before the call; with autorefresh off, view pages through this snapshot until the next refresh."
        ),
        "set_autorefresh": MethodSpec(
            params: ["session", "on"], required: 2, signatures: [["boolean", "string", "boolean"]],
            help:
                "set_autorefresh(session, on) -> on. On (the default): every view reads the live table. Off: view reads the snapshot taken now or at the last refresh, so that pages do not shift while a frontend pages through them."
        ),
        "status": MethodSpec(
            params: ["session"], required: 1, signatures: [["struct", "string"]],
            help:
                "status(session) -> {version, entries, generation, resyncs, events_applied, events_healthy, receive_buffer, counter_refreshes, accounting, sessions, uptime, plugins}."
        ),
        "audit_list": MethodSpec(
            params: ["session", "filters", "limit"], required: 1,
            signatures: [["array", "string"], ["array", "string", "struct"], ["array", "string", "struct", "int"]],
            help:
                "audit_list(session, filters, limit) -> array of audit records {seq, time, time_iso, action, procedure, user, roles, client, conn_id, l3proto, l4proto, orig_src, orig_dst, orig_sport, orig_dport, repl_src, repl_dst, repl_sport, repl_dport, mark, timeout, zone, field, new_value, outcome, reason, outcome_seq, outcome_time, hash}, missing members left out. filters is a struct (or an empty array) with any of since, until (epoch seconds or ISO 8601), user, action (login, kill, change, denied, audit_read); limit (default 50, at most 200) returns the most recent matching actions, oldest first. Needs the admin role and the AuditSQLite plugin; the call is itself audited (action audit_read)."
        ),
        "system.listMethods": MethodSpec(
            params: [], required: 0, signatures: [["array"]], help: "system.listMethods() -> the names of all methods."),
        "system.methodHelp": MethodSpec(
            params: ["method"], required: 1, signatures: [["string", "string"]],
            help: "system.methodHelp(name) -> a description of the method."),
        "system.methodSignature": MethodSpec(
            params: ["method"], required: 1, signatures: [["array", "string"]],
            help: "system.methodSignature(name) -> the method's signatures: arrays of [return type, argument types...]."
        ),
        "system.multicall": MethodSpec(
            params: ["calls"], required: 1, signatures: [["array", "array"]],
            help:
                "system.multicall([{methodName, params}, ...]) -> one entry per call: [result] or {faultCode, faultString}. At most 1000 calls; not nestable."
        ),
    ]
}
