import CSQLite

#if canImport(Glibc)
    import Glibc
#endif

/// What ``AuditStore/backup(to:)`` wrote, read back from the copy.
public struct AuditBackupReport: Sendable {
    /// The copy's path.
    public var path: String
    /// The chain check of the copy.
    public var chain: VerifyReport
    /// The copy's last checkpoint, when it has any.
    public var lastCheckpoint: AuditCheckpoint?
    /// The copy's size in bytes.
    public var bytes: Int64

    /// One line for `ctd audit backup`.
    public var description: String {
        var line = "backup \(path): \(chain.rows) rows, head seq \(chain.headSeq) hash \(chain.headHash)"
        if let c = lastCheckpoint {
            line += ", last signed checkpoint \(c.number) (head seq \(c.headSeq))"
        } else {
            line += ", no signed checkpoint"
        }
        return line + ", \(bytes) bytes"
    }
}

extension AuditStore {
    /// Copies the database to `destination` with SQLite's online backup API: one read transaction of the source
    /// (the WAL's committed frames included; writers go on meanwhile, in this process or another), so the copy is
    /// the trail exactly as it stood at one commit. The copy is made self-contained (rollback journal, no -wal to
    /// carry along), synced to disk with its directory, and its chain is checked.
    ///
    /// - Parameter destination: a new file; an existing file is never overwritten. Created with mode 0600.
    /// - Returns: what the copy holds.
    /// - Throws: ``AuditError`` when the destination exists or cannot be written, or the source cannot be read.
    public func backup(to destination: String) throws -> AuditBackupReport {
        let fd = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 {
            let why = errno == EEXIST ? "it exists (a backup never overwrites a file)" : errnoText(errno)
            throw AuditError(.writeRefused, "cannot create the backup \(destination): \(why)")
        }
        Glibc.close(fd)
        do {
            try copy(to: destination)
            try Self.sync(path: destination)
            let directory = destination.contains("/") ? String(destination[..<destination.lastIndex(of: "/")!]) : "."
            try Self.sync(path: directory.isEmpty ? "/" : directory)
        } catch {
            unlink(destination)
            unlink(destination + "-journal")
            throw error
        }
        let copy = try AuditStore(readingFrom: destination)
        defer { copy.close() }
        var st = stat()
        _ = stat(destination, &st)
        return AuditBackupReport(
            path: destination, chain: try copy.verify(), lastCheckpoint: try copy.checkpoints().last,
            bytes: Int64(st.st_size))
    }

    private func copy(to destination: String) throws {
        let target = try SQLiteConnection(
            path: destination, readOnly: false, create: false, busyTimeoutMilliseconds: 5000)
        defer { target.close() }
        try withConnection { source in
            guard let b = sqlite3_backup_init(target.handle, "main", source.handle, "main") else {
                throw target.error(sqlite3_errcode(target.handle), doing: "start the backup to \(destination)")
            }
            var rc = SQLITE_OK
            var tries = 0
            repeat {
                // -1: every page in one step, i.e. inside one read transaction of the source: a consistent copy.
                rc = sqlite3_backup_step(b, -1)
                tries += 1
                if rc == SQLITE_BUSY || rc == SQLITE_LOCKED { usleep(20_000) }
            } while (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && tries < 250
            let finish = sqlite3_backup_finish(b)
            guard rc == SQLITE_DONE else {
                throw target.error(rc, doing: "copy \(self.path) to \(destination)")
            }
            guard finish == SQLITE_OK else { throw target.error(finish, doing: "finish the backup to \(destination)") }
        }
        // The copy's header says WAL like its source's; a rollback journal makes it one file, whole without a -wal.
        let mode = try target.scalar("PRAGMA journal_mode = DELETE", doing: "make the backup self-contained").text
        guard mode?.lowercased() == "delete" else {
            throw AuditError(.writeRefused, "cannot switch the backup \(destination) out of WAL mode (\(mode ?? "?"))")
        }
    }

    static func sync(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw AuditError(.writeRefused, "cannot open \(path) to sync it: \(errnoText(errno))") }
        defer { Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw AuditError(.writeRefused, "cannot sync \(path): \(errnoText(errno))") }
    }
}
