import AuditLog
import CtdPluginAPI
import Foundation

extension RPCService {
    /// `audit_list(session, filters, limit)`: the AuditSQLite trail, newest `limit` actions oldest first, for admins.
    ///
    /// filters: a struct (or an empty array, or nil) with any of `since`, `until` (epoch seconds as int/double, or an
    /// ISO 8601 string), `user`, `action` (`login`, `kill`, `change`, `denied`, `audit_read`).
    /// The call is itself recorded (``ActionKind/auditRead``).
    func auditList(_ p: Params, client: String) throws -> XMLRPCValue {
        let s = try session(p, need: .admin, client: client)
        guard config.plugins.contains("AuditSQLite") else {
            throw Fault.notAvailable("the AuditSQLite plugin is not enabled on this server.")
        }
        var path = AuditStore.defaultPath
        if case .string(let configured)? = config.pluginSections["AuditSQLite"]?["database"] { path = configured }
        let filter = try auditFilter(p[1])
        let limit = try p.int(2, default: 50)
        guard limit >= 1 && limit <= Int64(AuditStore.rpcMaximumLimit) else {
            throw Fault.valueOutOfRange("limit must be 1 to \(AuditStore.rpcMaximumLimit)")
        }
        let rows: [[(name: String, value: AuditValue)]]
        do {
            rows = try AuditStore.recordsForRPC(path: path, filter: filter, limit: Int(limit))
        } catch let error as AuditError where error.isMissingDatabase {
            return .array([])
        } catch {
            logger.error("audit_list: \(error)")
            throw Fault.internalError
        }
        // Reading the trail is itself an audited action, recorded once the answer is ready and before it is sent:
        // the record is not part of its own answer, and an answer the hooks cannot record is withheld (fault 7).
        let event = ActionEvent(
            kind: .auditRead, procedure: "audit_list", user: s.identity.user, roles: Array(s.identity.roles),
            clientAddress: client, field: "filters", newValue: Self.describe(filter, limit: limit))
        let hooks = try runHooksBefore(event)
        runHooksAfter(hooks, outcome: .succeeded)
        return .array(
            rows.map { members in
                .structure(XMLRPCStruct(members.map { ($0.name, $0.value.xmlrpc) }))
            })
    }

    /// What an `audit_list` call asked for, as its audit record shows it: `user="alice" action=kill limit=50` (the
    /// user name, the only free text, quoted with `"` and `\` escaped).
    static func describe(_ filter: AuditFilter, limit: Int64) -> String {
        var parts: [String] = []
        if let since = filter.since { parts.append("since=\(AuditTime.iso(since))") }
        if let until = filter.until { parts.append("until=\(AuditTime.iso(until))") }
        if let user = filter.user {
            let escaped = user.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            parts.append("user=\"\(escaped)\"")
        }
        if let action = filter.action { parts.append("action=\(action.rawValue)") }
        parts.append("limit=\(limit)")
        return parts.joined(separator: " ")
    }

    private func auditFilter(_ value: XMLRPCValue?) throws -> AuditFilter {
        var texts: [String: String] = [:]
        switch value {
        case nil, .nil?: break
        case .string(let s)? where s.isEmpty: break
        case .array(let a)? where a.isEmpty: break
        case .structure(let st)?:
            for (name, v) in st {
                guard ["since", "until", "user", "action"].contains(name) else {
                    throw Fault.invalidParams(
                        "audit_list filters: unknown key '\(String(name.prefix(40)))' "
                            + "(known: since, until, user, action)"
                    )
                }
                switch v {
                case .string(let s): texts[name] = s
                case .int(let n) where name == "since" || name == "until": texts[name] = String(n)
                case .double(let d) where (name == "since" || name == "until") && d.isFinite && d >= 0:
                    texts[name] = String(d)
                default:
                    throw Fault.invalidParams("audit_list filter \(name): a \(v.typeName) is not a valid value")
                }
            }
        case let other?:
            throw Fault.invalidParams("argument 2 of audit_list (filters) must be a struct, not \(other.typeName)")
        }
        do {
            return try AuditFilter.parse(
                since: texts["since"], until: texts["until"], user: texts["user"], action: texts["action"])
        } catch let error as AuditError {
            throw Fault.invalidParams("audit_list filters: \(error.message)")
        }
    }
}

extension AuditValue {
    var xmlrpc: XMLRPCValue {
        switch self {
        case .integer(let n): return .int(n)
        case .real(let d): return .double(d)
        case .text(let s): return .string(s)
        }
    }
}
