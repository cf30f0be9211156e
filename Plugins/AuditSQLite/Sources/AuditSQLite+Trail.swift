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

extension AuditSQLitePlugin: AuditTrailVerifier {
    /// `audit_verify`: `ctd audit verify --pubkey` with the plugin's own signing key, on a read-only connection: the
    /// chain (numbering, every hash, every link, the file's integrity) and the signed checkpoints. A trail not
    /// written yet is intact and empty.
    public func verifyTrail() throws -> AuditTrailVerification {
        let key = state.withLock { $0?.key.publicKey }
        let store: AuditStore
        do {
            store = try AuditStore(readingFrom: trailLocation)
        } catch let error as AuditError where error.isMissingDatabase {
            return AuditTrailVerification(intact: true, records: 0, headSeq: 0, summary: "ok: 0 rows, chain intact")
        }
        defer { store.close() }
        let report = try store.verify(publicKey: key)
        return AuditTrailVerification(
            intact: report.isIntact, records: Int64(report.chain.rows), headSeq: report.chain.headSeq,
            firstBadSeq: report.chain.firstBadSeq, summary: report.description,
            warnings: report.chain.warnings + report.notes)
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
