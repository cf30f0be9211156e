import AuditLog
import Testing

@testable import CtdHost

/// What the audit record of an `audit_list` call says was asked for.
@Test func describeAuditRead_quotesTheUserSoThatItCannotForgeOtherFilters() {
    let filter = AuditFilter(since: 0, user: #"x" limit=1 \"#, action: .kill)
    #expect(
        RPCService.describe(filter, limit: 50)
            == #"since=1970-01-01T00:00:00.000000Z user="x\" limit=1 \\" action=kill limit=50"#)
    #expect(RPCService.describe(AuditFilter(), limit: 10) == "limit=10")
}
