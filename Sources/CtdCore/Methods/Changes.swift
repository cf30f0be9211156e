import Conntrack
import XMLRPC

extension Procedure {
    static let changes = Procedure(
        name: "changes", params: ["session", "cursor", "timeout"], required: 1, role: .viewer,
        signatures: [["struct", "string"], ["struct", "string", "string"], ["struct", "string", "string", "int"]],
        help:
            "changes(session, cursor, timeout) -> {cursor, new, updated, destroyed, overflow}. A long poll: answers at once when the table changed after cursor, else when it does or after timeout seconds (default 25, at most 30). new are rows as view gives them, updated [{id, mark, state, status, timeout}], destroyed [ids], in the order they happened (at most 1000 changes an answer; call again with the new cursor). overflow: the cursor is too old (the change ring has moved on): reload the page. An empty cursor answers at once with the current one. A session waiting here does not idle out. Not inside system.multicall.",
        run: Changes.run)
}

/// `changes(session, cursor, timeout)`: the table's changes as they come, without re-reading pages.
enum Changes {
    static let maximumTimeout = 30.0
    static let defaultTimeout: Int64 = 25
    static let maximumChanges = 1000

    static func run(_ call: Call) throws -> Reply {
        let context = call.context
        let feed = context.mirror.changes
        let session = call.user
        guard !call.nested else { throw Fault.invalidParams("changes cannot be called inside system.multicall") }
        let text = try call.params.optionalString(1) ?? ""
        let timeout = min(maximumTimeout, Double(max(0, try call.params.int(2, default: defaultTimeout))))
        guard !text.isEmpty else {
            return .value(answer(ChangeFeed.Batch(changes: [], next: feed.head, overflow: false), session, context))
        }
        let parts = text.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let cursor = UInt64(parts[0]) else {
            throw Fault.invalidParams("cursor '\(text.prefix(40))' is not a cursor of changes (pass \"\" for a new one)")
        }
        guard String(parts[1]) == session.cursorKey else {
            throw Fault.invalidParams("this cursor belongs to another session: pass \"\" for a new one")
        }
        let wait = call.mayWait ? timeout : 0
        context.sessions.keepAlive(session.id, until: context.clock.now() + wait)
        return .deferred { done in
            feed.wait(after: cursor, limit: maximumChanges, timeout: wait) { batch in
                // The session may have ended (logout, revocation) while it waited: then nothing is delivered.
                guard let current = context.sessions.peek(session.id) else {
                    return done(answer(ChangeFeed.Batch(changes: [], next: cursor, overflow: false), session, context))
                }
                done(answer(batch, current, context))
            }
        }
    }

    static func answer(_ batch: ChangeFeed.Batch, _ session: Session, _ context: ServerContext) -> XMLRPCValue {
        let now = context.clock.now()
        var new: [XMLRPCValue] = []
        var updated: [XMLRPCValue] = []
        var destroyed: [XMLRPCValue] = []
        for c in batch.changes where Scoping.allows(session, c.flow, context) {
            switch c.kind {
            case .new:
                new.append(
                    c.flow.xmlrpcStruct(
                        now: now, labelNames: context.settings.labelNames,
                        extra: context.resolvedFields.members(mark: c.flow.mark)))
            case .updated:
                updated.append(
                    .structure(
                        XMLRPCStruct([
                            ("id", .string(String(c.flow.id))), ("mark", .string(String(c.flow.mark))),
                            ("state", .string(ConntrackNames.tcpState(c.flow.tcpState))),
                            ("status", .int(Int64(c.flow.status))),
                            ("timeout", .int(Int64(c.flow.remainingTimeout(at: now)))),
                        ])))
            case .destroyed: destroyed.append(.string(String(c.flow.id)))
            }
        }
        return .structure(
            XMLRPCStruct([
                ("cursor", .string("\(batch.next).\(session.cursorKey)")), ("new", .array(new)),
                ("updated", .array(updated)), ("destroyed", .array(destroyed)), ("overflow", .bool(batch.overflow)),
            ]))
    }
}
