import CtdPluginAPI
import XMLRPC

extension Procedure {
    static let auditVerify = Procedure(
        name: "audit_verify", params: ["session"], required: 1, role: .admin, signatures: [["struct", "string"]],
        help:
            "audit_verify(session) -> {intact, records, head_seq, first_bad_seq, summary, warnings}: the audit trail checked as `ctd audit verify --pubkey` does (every record's hash, every link, no gap, the file's integrity, the signed checkpoints); first_bad_seq only when it is not intact; summary is one sentence. Needs the admin role and an audit trail plugin that can check its trail (AuditSQLite); the call is itself audited (action audit_read, field verify).",
        run: { try .value(AuditVerify.run($0)) })
}

/// `audit_verify(session)`: the verify status of the trail kept by the audit plugin (``AuditTrailVerifier``), for
/// admins. Like reading the trail, checking it is an audited action.
enum AuditVerify {
    static func run(_ call: Call) throws -> XMLRPCValue {
        let context = call.context
        guard let (info, verifier) = context.plugins.auditVerifier else {
            throw Fault.notAvailable(
                context.plugins.auditTrail == nil
                    ? "no audit trail plugin (such as AuditSQLite) is enabled on this server."
                    : "the audit trail plugin of this server cannot check its trail (it predates audit_verify).")
        }
        let report: AuditTrailVerification
        do {
            report = try verifier.verifyTrail()
        } catch {
            context.plugins.reportProblem(info.name, "audit_verify: \(error)")
            throw Fault.internalError
        }
        // Recorded after the check, so the record is not part of what was checked; an answer the hooks cannot
        // record is withheld (fault 7), as for audit_list.
        let hooks = try context.hooks.before(call.event(.auditRead, field: "verify", newValue: report.summary))
        context.hooks.after(hooks, outcome: .succeeded)
        var members: [(String, XMLRPCValue)] = [
            ("intact", .bool(report.intact)), ("records", .int(report.records)), ("head_seq", .int(report.headSeq)),
        ]
        if let bad = report.firstBadSeq { members.append(("first_bad_seq", .int(bad))) }
        members.append(("summary", .string(report.summary)))
        members.append(("warnings", .array(report.warnings.map { .string($0) })))
        return .structure(XMLRPCStruct(members))
    }
}
