/// A capability of an ``ActionHook`` that keeps an audit trail: the host serves its records to admins over
/// `audit_list`, and `ctd audit` finds the trail's file through it. The host looks for it with `as?`; it names no
/// plugin.
///
/// ``readTrail(_:)`` is called from several threads at once, like the other plugin calls.
public protocol AuditTrailReader: ActionHook {
    /// Where the trail is kept (a file path for a SQLite trail), as `ctd audit` opens it.
    var trailLocation: String { get }

    /// The most recent records that match `query`, oldest first.
    /// - Parameter query: the filters as the client sent them; the plugin parses them.
    /// - Returns: the records and a one-line description of the query, for the audit record of the read itself.
    /// - Throws: ``AuditTrailQueryError`` for a query the client got wrong (the client sees its message); any
    ///   other error is a failure of the trail (the client sees an internal error; the log has the details).
    func readTrail(_ query: AuditTrailQuery) throws -> AuditTrailAnswer
}

/// What an `audit_list` call asked for, unparsed.
public struct AuditTrailQuery: Sendable, Equatable {
    /// Lower bound on the record time: epoch seconds or ISO 8601 text.
    public var since: String?
    /// Upper bound on the record time: epoch seconds or ISO 8601 text.
    public var until: String?
    /// Only actions by this user.
    public var user: String?
    /// Only actions of this kind (an ``ActionKind`` raw value).
    public var action: String?
    /// At most this many actions (the newest).
    public var limit: Int

    /// A query; every filter is optional.
    public init(since: String? = nil, until: String? = nil, user: String? = nil, action: String? = nil, limit: Int) {
        self.since = since
        self.until = until
        self.user = user
        self.action = action
        self.limit = limit
    }
}

/// One value of an audit record.
public enum AuditTrailValue: Sendable, Equatable {
    /// A whole number.
    case integer(Int64)
    /// A real number (times in epoch seconds).
    case real(Double)
    /// Text.
    case text(String)
}

/// The records a trail answered, each a list of named values (missing values are left out).
public struct AuditTrailAnswer: Sendable {
    /// The records, oldest first; each is a list of (member name, value) in a stable order.
    public var records: [[(name: String, value: AuditTrailValue)]]
    /// The query as the trail understood it, in one line (`user="alice" action=kill limit=50`).
    public var description: String

    /// An answer.
    public init(records: [[(name: String, value: AuditTrailValue)]], description: String) {
        self.records = records
        self.description = description
    }
}

/// A query the client got wrong: an unknown action, a time that cannot be read, a limit out of range.
public struct AuditTrailQueryError: Error, Sendable, CustomStringConvertible {
    /// One sentence for the client.
    public var message: String

    /// An error with this sentence.
    public init(_ message: String) { self.message = message }

    /// The sentence.
    public var description: String { message }
}

/// A capability of an ``AuditTrailReader`` that checks its own trail: the host answers `audit_verify` with it
/// (the console's audit panel shows the answer). A protocol of its own, not a new requirement of
/// ``AuditTrailReader``, so that a plugin built before it keeps loading and working unchanged (the ABI version
/// stays the same); the host looks for it with `as?`, and without it `audit_verify` answers "not available".
///
/// ``verifyTrail()`` is called from several threads at once, like the other plugin calls; it may read the whole
/// trail, so it can take as long as `ctd audit verify` does.
public protocol AuditTrailVerifier: AuditTrailReader {
    /// Checks the whole trail as it is now, as `ctd audit verify` does.
    /// - Returns: whether it is intact, how far, and one sentence saying so or naming the first bad record.
    /// - Throws: when the trail cannot be read at all (the client sees an internal error; the log has the details).
    func verifyTrail() throws -> AuditTrailVerification
}

/// What ``AuditTrailVerifier/verifyTrail()`` found.
public struct AuditTrailVerification: Sendable, Equatable {
    /// Whether every record is as it was written and none is missing.
    public var intact: Bool
    /// Records checked (all of them when intact).
    public var records: Int64
    /// The sequence number of the last good record (0 for an empty trail).
    public var headSeq: Int64
    /// The first record found bad, or nil when the trail is intact.
    public var firstBadSeq: Int64?
    /// One sentence: intact and how far it is anchored, or what is wrong where (English, for people and logs).
    public var summary: String
    /// What does not break the trail but deserves attention (a dropped append-only trigger), one sentence each.
    public var warnings: [String]

    /// A verification result.
    /// - Parameters:
    ///   - intact: whether the trail is intact.
    ///   - records: the records checked.
    ///   - headSeq: the last good record's sequence number.
    ///   - firstBadSeq: the first bad record, nil when intact.
    ///   - summary: one sentence for people.
    ///   - warnings: notes that do not break the trail.
    public init(
        intact: Bool, records: Int64, headSeq: Int64, firstBadSeq: Int64? = nil, summary: String,
        warnings: [String] = []
    ) {
        self.intact = intact
        self.records = records
        self.headSeq = headSeq
        self.firstBadSeq = firstBadSeq
        self.summary = summary
        self.warnings = warnings
    }
}
