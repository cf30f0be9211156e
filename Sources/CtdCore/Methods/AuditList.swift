import CtdPluginAPI
import XMLRPC

extension Procedure {
    static let auditList = Procedure(
        name: "audit_list", params: ["session", "filters", "limit"], required: 1, role: .admin,
        signatures: [["array", "string"], ["array", "string", "struct"], ["array", "string", "struct", "int"]],
        help:
            "audit_list(session, filters, limit) -> array of audit records {seq, time, time_iso, action, procedure, user, roles, client, conn_id, l3proto, l4proto, orig_src, orig_dst, orig_sport, orig_dport, repl_src, repl_dst, repl_sport, repl_dport, mark, timeout, zone, field, new_value, outcome, reason, outcome_seq, outcome_time, hash}, missing members left out. filters is a struct (or an empty array) with any of since, until (epoch seconds or ISO 8601), user, action (login, kill, change, denied, audit_read); limit (default 50, at most 200) returns the most recent matching actions, oldest first. Needs the admin role and an audit trail plugin (AuditSQLite); the call is itself audited (action audit_read).",
        run: { try .value(AuditList.run($0)) })
}

/// `audit_list(session, filters, limit)`: the records of the plugin that keeps the audit trail
/// (``AuditTrailReader``), for admins. Reading the trail is itself an audited action.
enum AuditList {
    /// The most records one call returns.
    static let maximumLimit = 200

    static func run(_ call: Call) throws -> XMLRPCValue {
        let context = call.context
        guard let (info, reader) = context.plugins.auditTrail else {
            throw Fault.notAvailable("no audit trail plugin (such as AuditSQLite) is enabled on this server.")
        }
        var query = try self.query(call.params[1])
        let limit = try call.params.int(2, default: 50)
        guard limit >= 1 && limit <= Int64(maximumLimit) else {
            throw Fault.valueOutOfRange("limit must be 1 to \(maximumLimit)")
        }
        query.limit = Int(limit)
        let answer: AuditTrailAnswer
        do {
            answer = try reader.readTrail(query)
        } catch let error as AuditTrailQueryError {
            throw Fault.invalidParams("audit_list filters: \(error.message)")
        } catch {
            context.plugins.reportProblem(info.name, "audit_list: \(error)")
            throw Fault.internalError
        }
        // Recorded once the answer is ready and before it is sent: the record is not part of its own answer, and an
        // answer the hooks cannot record is withheld (fault 7).
        let hooks = try context.hooks.before(call.event(.auditRead, field: "filters", newValue: answer.description))
        context.hooks.after(hooks, outcome: .succeeded)
        return .array(
            answer.records.map { members in
                .structure(XMLRPCStruct(members.map { ($0.name, $0.value.xmlrpc) }))
            })
    }

    private static func query(_ value: XMLRPCValue?) throws -> AuditTrailQuery {
        var query = AuditTrailQuery(limit: 50)
        switch value {
        case nil, .nil?: break
        case .string(let s)? where s.isEmpty: break
        case .array(let a)? where a.isEmpty: break
        case .structure(let st)?:
            for (name, v) in st {
                let text: String
                switch (name, v) {
                case ("since", .int(let n)), ("until", .int(let n)): text = String(n)
                case ("since", .double(let d)) where d.isFinite && d >= 0, ("until", .double(let d))
                where d.isFinite && d >= 0:
                    text = String(d)
                case (_, .string(let s)): text = s
                default:
                    guard ["since", "until", "user", "action"].contains(name) else { throw unknownKey(name) }
                    throw Fault.invalidParams("audit_list filter \(name): a \(v.typeName) is not a valid value")
                }
                switch name {
                case "since": query.since = text
                case "until": query.until = text
                case "user": query.user = text
                case "action": query.action = text
                default: throw unknownKey(name)
                }
            }
        case let other?:
            throw Fault.invalidParams("argument 2 of audit_list (filters) must be a struct, not \(other.typeName)")
        }
        return query
    }

    private static func unknownKey(_ name: String) -> Fault {
        Fault.invalidParams(
            "audit_list filters: unknown key '\(String(name.prefix(40)))' (known: since, until, user, action)")
    }
}

extension AuditTrailValue {
    var xmlrpc: XMLRPCValue {
        switch self {
        case .integer(let n): return .int(n)
        case .real(let d): return .double(d)
        case .text(let s): return .string(s)
        @unknown default: return .string("")
        }
    }
}
