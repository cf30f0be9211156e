import AuditLog
import CtdPluginAPI

extension AuditSQLitePlugin: AuditTrailReader {
    public var trailLocation: String { state.withLock { $0?.store.path } ?? Self.defaultDatabase }

    /// `audit_list`: the newest `query.limit` matching actions, oldest first, read through a read-only connection.
    public func readTrail(_ query: AuditTrailQuery) throws -> AuditTrailAnswer {
        let filter: AuditFilter
        do {
            filter = try AuditFilter.parse(
                since: query.since, until: query.until, user: query.user, action: query.action)
        } catch let error as AuditError {
            throw AuditTrailQueryError(error.message)
        }
        let description = Self.describe(filter, limit: Int64(query.limit))
        let rows: [[(name: String, value: AuditValue)]]
        do {
            rows = try AuditStore.recordsForRPC(path: trailLocation, filter: filter, limit: query.limit)
        } catch let error as AuditError where error.isMissingDatabase {
            rows = []
        }
        return AuditTrailAnswer(
            records: rows.map { $0.map { (name: $0.name, value: $0.value.trailValue) } }, description: description)
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
}

extension AuditValue {
    var trailValue: AuditTrailValue {
        switch self {
        case .integer(let n): return .integer(n)
        case .real(let d): return .real(d)
        case .text(let s): return .text(s)
        }
    }
}
