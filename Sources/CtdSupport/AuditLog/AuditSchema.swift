/// The layout of an audit database and the migrations between its versions (`PRAGMA user_version`).
///
/// Rules for a new version, so that old rows keep verifying:
/// - append a ``Migration`` with the next version number; never edit a released one;
/// - add columns with `ALTER TABLE audit ADD COLUMN name TYPE` (nullable, no default): the chain hash covers the
///   non-NULL columns of a row by name (see ``AuditChain``), so rows written before the column existed hash exactly
///   as they did;
/// - never rename or drop a column, never rewrite rows: that is what `verify` reports as tampering.
enum AuditSchema {
    /// `PRAGMA application_id` of an audit database: "ctdA".
    static let applicationID: Int32 = 0x6374_6441

    struct Migration: Sendable {
        let version: Int
        let statements: [String]
    }

    static let migrations: [Migration] = [
        Migration(
            version: 1,
            statements: [
                """
                CREATE TABLE audit (
                    seq INTEGER PRIMARY KEY,
                    time REAL NOT NULL,
                    time_iso TEXT NOT NULL,
                    action TEXT NOT NULL,
                    ref_seq INTEGER,
                    procedure TEXT NOT NULL,
                    user TEXT NOT NULL,
                    roles TEXT NOT NULL,
                    client TEXT NOT NULL,
                    conn_id INTEGER,
                    l3proto TEXT,
                    l4proto INTEGER,
                    orig_src TEXT,
                    orig_dst TEXT,
                    orig_sport INTEGER,
                    orig_dport INTEGER,
                    repl_src TEXT,
                    repl_dst TEXT,
                    repl_sport INTEGER,
                    repl_dport INTEGER,
                    mark INTEGER,
                    timeout INTEGER,
                    zone INTEGER,
                    field TEXT,
                    new_value TEXT,
                    outcome TEXT NOT NULL,
                    reason TEXT,
                    prev_hash TEXT NOT NULL,
                    hash TEXT NOT NULL
                ) STRICT
                """,
                "CREATE INDEX audit_ref_seq ON audit(ref_seq) WHERE ref_seq IS NOT NULL",
                "CREATE INDEX audit_time ON audit(time)",
                "CREATE INDEX audit_user ON audit(user, seq)",
                // Guards against accidents (an administrator "fixing" a row). Anyone who can write the file can
                // drop them; the hash chain is what makes such edits visible.
                """
                CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
                BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END
                """,
                noDeleteTrigger,
            ]),
        // Version 2: signed checkpoints of the chain's head (docs/audit.md) and the writer sessions that let
        // `verify` tell a copy made without its -wal file.
        Migration(
            version: 2,
            statements: [
                """
                CREATE TABLE checkpoint (
                    number INTEGER PRIMARY KEY,
                    time_ms INTEGER NOT NULL,
                    kind TEXT NOT NULL,
                    head_seq INTEGER NOT NULL,
                    head_hash TEXT NOT NULL,
                    public_key TEXT NOT NULL,
                    signature TEXT NOT NULL
                ) STRICT
                """,
                """
                CREATE TRIGGER checkpoint_no_update BEFORE UPDATE ON checkpoint
                BEGIN SELECT RAISE(ABORT, 'the checkpoint table is append-only'); END
                """,
                """
                CREATE TRIGGER checkpoint_no_delete BEFORE DELETE ON checkpoint
                BEGIN SELECT RAISE(ABORT, 'the checkpoint table is append-only'); END
                """,
                """
                CREATE TABLE writer_session (
                    id INTEGER PRIMARY KEY,
                    opened_ms INTEGER NOT NULL,
                    closed_ms INTEGER
                ) STRICT
                """,
            ]),
        // Version 3: start-up finds the actions a crash left without an outcome through this index, without reading
        // the whole trail.
        Migration(
            version: 3,
            statements: ["CREATE INDEX audit_pending ON audit(seq) WHERE outcome = 'pending'"]),
        // Version 4: one outcome row may complete a run of action rows (`ref_seq` to `ref_last`): a bulk kill of
        // 10,000 connections that all went writes one outcome row, not 10,000 (docs/audit.md, "Outcome runs").
        // NULL in every older row, and NULLs are not part of the canonical form: no existing hash changes.
        Migration(version: 4, statements: ["ALTER TABLE audit ADD COLUMN ref_last INTEGER"]),
        // Version 5: a settled mark per writer session (every action row below it has its outcome, see
        // ``AuditStore/settle()``), so that start-up reads only the rows after it; the partial index of version 3
        // goes (every action row stayed in it, and a 10,000-id kill inserted 10,000 entries).
        Migration(
            version: 5,
            statements: [
                "ALTER TABLE writer_session ADD COLUMN settled_below INTEGER",
                "DROP INDEX IF EXISTS audit_pending",
            ]),
    ]

    /// The guard against deleting rows; `ctd audit prune` drops and recreates it inside its transaction.
    static let noDeleteTrigger = """
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END
        """

    /// The version this code writes.
    static var latestVersion: Int { migrations.last?.version ?? 0 }

    /// Triggers a healthy database has; `verify` warns when one is missing.
    static let guardTriggers = ["audit_no_update", "audit_no_delete"]

    /// Brings the database to ``latestVersion`` (or to the last of `migrations`), in one write transaction.
    /// Refuses a file that is some other application's database or comes from a newer ctd.
    static func migrate(_ db: SQLiteConnection, migrations: [Migration] = migrations) throws {
        try db.execute("BEGIN IMMEDIATE", doing: "lock the database for the schema check")
        do {
            let version = try checkedVersion(db, newest: migrations.last?.version ?? 0)
            if version == 0 {
                let tables = try db.scalar(
                    "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'", doing: "read the schema")
                if tables.integer != 0 {
                    throw AuditError.unusable(db.path, "it is an SQLite database of something else (it has tables)")
                }
            }
            for m in migrations where m.version > version {
                for sql in m.statements {
                    try db.execute(sql, doing: "migrate the schema to version \(m.version)")
                }
                try db.execute("PRAGMA user_version = \(m.version)", doing: "record schema version \(m.version)")
            }
            if version == 0 {
                try db.execute("PRAGMA application_id = \(applicationID)", doing: "mark the file as an audit database")
            }
            try db.execute("COMMIT", doing: "commit the schema")
        } catch {
            if db.isInTransaction { try? db.execute("ROLLBACK", doing: "roll back") }
            throw error
        }
    }

    /// The schema version of an existing database, checked: 0 (empty file) up to `newest`.
    static func checkedVersion(_ db: SQLiteConnection, newest: Int = latestVersion) throws -> Int {
        let version = Int(try db.scalar("PRAGMA user_version", doing: "read the schema version").integer ?? 0)
        let application = Int32(
            truncatingIfNeeded: try db.scalar("PRAGMA application_id", doing: "read the file type").integer ?? 0)
        if application != 0 && application != applicationID {
            throw AuditError.unusable(db.path, "it is not a ctd audit database (application_id \(application))")
        }
        if version > 0 && application != applicationID {
            throw AuditError.unusable(db.path, "it is not a ctd audit database (no ctd application_id)")
        }
        if version > newest {
            throw AuditError.unusable(
                db.path, "it has schema version \(version), newer than this ctd understands (\(newest)); upgrade ctd")
        }
        return version
    }
}
