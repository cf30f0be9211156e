extension AuditStore {
    /// The largest `limit` of ``recordsForRPC(path:filter:limit:)``: 200 records stay well below xmlrpc-c's 512 KiB
    /// response limit (about 1.5 KiB of XML each).
    public static let rpcMaximumLimit = 200

    /// The audit records for the XML-RPC method `audit_list`: the most recent `limit` matching `filter`, oldest
    /// first, each as ordered members ready for an XML-RPC struct.
    ///
    /// Missing values are left out (no `<nil/>`). Types follow the host's interoperability rules (docs/design.md, "What the client stacks do with integers"):
    /// `conn_id` and `mark` (unsigned 32-bit) are decimal strings; `time` and `outcome_time` are doubles (epoch
    /// seconds); ports, `seq` and the other numbers are ints; the rest are strings.
    ///
    /// Opens the database read-only for the call, so it never blocks or disturbs the audit plugin's writes.
    /// - Parameters:
    ///   - path: the audit database (the `database` key of `[plugin.AuditSQLite]`).
    ///   - filter: see ``AuditFilter/parse(since:until:user:action:)`` to build it from client strings.
    ///   - limit: 1 to ``rpcMaximumLimit``.
    /// - Throws: ``AuditError``: ``AuditError/isMissingDatabase`` when nothing was audited yet; an invalid-argument
    ///   error for a bad limit; otherwise a read failure (log it, answer with an internal-error fault).
    public static func recordsForRPC(path: String, filter: AuditFilter, limit: Int) throws
        -> [[(name: String, value: AuditValue)]]
    {
        guard (1...rpcMaximumLimit).contains(limit) else {
            throw AuditError.invalidArgument("limit must be 1 to \(rpcMaximumLimit), not \(limit)")
        }
        let store = try AuditStore(readingFrom: path)
        defer { store.close() }
        return try store.query(filter, limit: limit).map(rpcMembers)
    }

    /// One record as RPC members (see ``recordsForRPC(path:filter:limit:)``).
    public static func rpcMembers(_ record: AuditRecord) -> [(name: String, value: AuditValue)] {
        record.fields.compactMap { field in
            guard let value = field.value else { return nil }
            if field.name == "conn_id" || field.name == "mark" { return (field.name, .text(value.description)) }
            return (field.name, value)
        }
    }
}
