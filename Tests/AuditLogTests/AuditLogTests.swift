import Foundation
import Synchronization
import Testing

@testable import AuditLog

// Real SQLite files in a temporary directory; tampering is done with the sqlite3 CLI, as an intruder would.

// MARK: Helpers

private struct TempDir: ~Copyable {
    let path: String

    init() throws {
        var template = Array("/tmp/auditlog-test.XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw AuditError.invalidArgument("mkdtemp failed")
        }
        path = String(cString: p)
    }

    func file(_ name: String) -> String { "\(path)/\(name)" }

    deinit {
        // An immutable file left behind by a failed test could not be removed otherwise.
        _ = try? run("chattr", "-R", "-i", path)
        try? FileManager.default.removeItem(atPath: path)
    }
}

@discardableResult
private func run(_ arguments: String..., input: String? = nil) throws -> (status: Int32, out: String, err: String) {
    try run(arguments, input: input)
}

private func run(_ arguments: [String], input: String? = nil) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    let inp = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = inp
    try p.run()
    if let input { inp.fileHandleForWriting.write(Data(input.utf8)) }
    try inp.fileHandleForWriting.close()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

private func sqlite(_ db: String, _ sql: String) throws {
    let r = try run("sqlite3", db, sql)
    #expect(r.status == 0, "sqlite3 \(sql): \(r.err)")
}

private func connection(id: UInt32 = 3_000_000_001, mark: UInt32 = 7) -> AuditConnection {
    AuditConnection(
        id: id, l3proto: "ipv4", l4proto: 17, origSource: "10.0.0.1", origDestination: "10.0.0.2",
        origSourcePort: 5353, origDestinationPort: 53, replySource: "10.0.0.2", replyDestination: "10.0.0.1",
        replySourcePort: 53, replyDestinationPort: 5353, mark: mark, timeout: 100, zone: 0)
}

private func kill(_ user: String = "alice", id: UInt32 = 3_000_000_001) -> AuditEntry {
    AuditEntry(
        action: .kill, procedure: "kill", user: user, roles: ["operator"], client: "127.0.0.1",
        connection: connection(id: id))
}

/// Appends `n` actions, each followed by its outcome: 2n rows.
private func fill(_ store: AuditStore, actions n: Int) throws {
    for i in 0..<n {
        let entry = kill(id: UInt32(1000 + i))
        let seq = try store.append(entry)
        try store.append(.outcome(of: entry, seq: seq, outcome: .succeeded, reason: nil))
    }
}

/// Whether `chattr +i` works here (root with CAP_LINUX_IMMUTABLE on a file system that supports it).
private func immutable(_ paths: String...) throws {
    for path in paths {
        let r = try run("chattr", "+i", path)
        guard r.status == 0 else {
            let why = r.err.trimmingCharacters(in: .whitespacesAndNewlines)
            let message =
                "chattr +i \(path) failed (\(why)): this test needs root and a file system with the "
                + "immutable attribute (ext4, xfs, btrfs); root ignores chmod"
            Issue.record(Comment(rawValue: message))
            throw AuditError.invalidArgument("chattr unavailable")
        }
    }
}

private func mutable(_ paths: String...) throws {
    for path in paths { try run("chattr", "-i", path) }
}

// MARK: Append and verify

@Test func verify_afterAppendingActionsAndOutcomes_reportsIntactChain() throws {
    let dir = try TempDir()
    let store = try AuditStore(path: dir.file("audit.db"))
    try fill(store, actions: 5)
    let report = try store.verify()
    #expect(report.isIntact, "\(report)")
    #expect(report.rows == 10)
    #expect(report.headSeq == 10)
    #expect(report.headHash == (try store.head())?.hash)
    #expect(report.warnings.isEmpty)
    #expect(report.description.hasPrefix("ok: 10 rows, chain intact"))
}

@Test func append_returnsConsecutiveSeqsAndLinksEachRowToThePrevious() throws {
    let dir = try TempDir()
    let store = try AuditStore(path: dir.file("audit.db"))
    #expect(try store.append(kill()) == 1)
    #expect(try store.append(kill()) == 2)
    let rows = try run(
        "sqlite3", "-separator", " ", dir.file("audit.db"), "SELECT seq, prev_hash, hash FROM audit ORDER BY seq")
    let lines = rows.out.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
    #expect(lines.count == 2)
    #expect(lines[0][1] == String(repeating: "0", count: 64))
    #expect(lines[1][1] == lines[0][2])
}

@Test func open_setsWALAndFullSynchronousAndMode0600() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    let store = try AuditStore(path: path)
    try store.append(kill())
    let mode = try store.withConnection { try $0.scalar("PRAGMA journal_mode", doing: "read").text }
    let sync = try store.withConnection { try $0.scalar("PRAGMA synchronous", doing: "read").integer }
    #expect(mode == "wal")
    #expect(sync == 2)  // FULL
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    #expect((attributes[.posixPermissions] as? Int) == 0o600)
    #expect(
        try run("sqlite3", path, "PRAGMA user_version").out.trimmingCharacters(in: .whitespacesAndNewlines)
            == String(AuditSchema.latestVersion))
}

@Test func reopen_continuesTheChain() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    do {
        let store = try AuditStore(path: path)
        try fill(store, actions: 2)
        store.close()
    }
    let store = try AuditStore(path: path)
    #expect(try store.append(kill()) == 5)
    #expect(try store.verify().isIntact)
}

// MARK: Crash recovery's settled mark

@Test func settle_movesTheMarkToTheOldestActionWithoutOutcome_andStartUpReadsOnlyFromThere() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    do {
        let store = try AuditStore(path: path)
        try store.markOpened()
        #expect(try store.settledBelow() == 0)
        try fill(store, actions: 3)  // seq 1 to 6, all finished
        let open = kill(id: 77)
        let inFlight = try store.append(open)  // 7: an action in flight
        try fill(store, actions: 1)  // 8, 9
        #expect(try store.settle() == inFlight)
        #expect(try store.unfinishedActions().map(\.seq) == [inFlight])
        try store.append(.outcome(of: open, seq: inFlight, outcome: .succeeded, reason: nil))  // 10
        #expect(try store.settle() == 11)
        #expect(try store.unfinishedActions().isEmpty)
        // The mark never goes back, and a crash leaves what came after it to the next start.
        #expect(try store.settle() == 11)
        #expect(try store.append(kill(id: 78)) == 11)
        store.close()
    }
    // A restart: a new writer session (no mark of its own yet) reads from the greatest mark, 11.
    let store = try AuditStore(path: path)
    try store.markOpened()
    #expect(try store.settledBelow() == 11)
    #expect(try store.unfinishedActions().map(\.seq) == [11])
    // An outcome run completes its actions as single outcomes do.
    let first = try store.append(kill(id: 79))
    let last = try store.append(kill(id: 80))
    try store.append(.outcome(ofRun: kill(id: 79), first: first, last: last, outcome: .succeeded, reason: nil))
    #expect(try store.settle() == 11)  // 11 still has no outcome
    #expect(try store.unfinishedActions().map(\.seq) == [11])
    #expect(try store.verify().isIntact)
    // The partial index of version 3 is gone from version 5 on.
    #expect(
        try run("sqlite3", path, "SELECT count(*) FROM sqlite_schema WHERE name = 'audit_pending'").out
            .trimmingCharacters(in: .whitespacesAndNewlines) == "0")
}

@Test func settle_passesAPendingPruneRow_whichIsNotTheHostsToSettle() throws {
    let dir = try TempDir()
    let store = try AuditStore(path: dir.file("audit.db"))
    try store.markOpened()
    try fill(store, actions: 1)  // 1, 2
    let prune = AuditEntry(
        action: .prune, procedure: "audit prune", user: "root", roles: [], client: "local", field: "before",
        newValue: "2026-01-01T00:00:00Z")
    let stopped = try store.append(prune)  // 3: a prune that stopped before its transaction
    #expect(try store.settle() == 4)
    #expect(try store.unfinishedActions().isEmpty)
    #expect(try store.append(kill()) == 4)
    #expect(try store.unfinishedActions().map(\.seq) == [4])
    #expect(stopped == 3)
}

// MARK: Tampering

@Test func verify_afterEditingARowWithSqlite3_failsAtThatSeq() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    let store = try AuditStore(path: path)
    try fill(store, actions: 4)
    store.close()
    // The append-only trigger stops a plain UPDATE; an intruder drops it first.
    let blocked = try run("sqlite3", path, "UPDATE audit SET mark = 99 WHERE seq = 5")
    #expect(blocked.status != 0)
    #expect(blocked.err.contains("append-only"))
    try sqlite(path, "DROP TRIGGER audit_no_update; UPDATE audit SET mark = 99 WHERE seq = 5")
    let report = try AuditStore(readingFrom: path).verify()
    #expect(!report.isIntact)
    #expect(report.firstBadSeq == 5)
    #expect(report.problem == .editedRow)
    #expect(report.warnings.contains { $0.contains("audit_no_update") })
    #expect(report.description.contains("seq 5"))
}

@Test func verify_afterDeletingARow_reportsTheMissingSeq() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    let store = try AuditStore(path: path)
    try fill(store, actions: 4)
    store.close()
    try sqlite(path, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq IN (3, 4)")
    let report = try AuditStore(readingFrom: path).verify()
    #expect(report.firstBadSeq == 3)
    #expect(report.problem == .missingRows(from: 3, to: 4))
    #expect(report.rows == 2)
}

@Test func verify_afterDeletingTheFirstRow_reportsSeq1() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    try fill(try AuditStore(path: path), actions: 2)
    try sqlite(path, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 1")
    let report = try AuditStore(readingFrom: path).verify()
    #expect(report.firstBadSeq == 1)
    #expect(report.problem == .missingRows(from: 1, to: 1))
}

@Test func verify_afterRewritingARowWithARecomputedHash_reportsTheBrokenLink() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    let store = try AuditStore(path: path)
    try fill(store, actions: 3)
    // The intruder knows the algorithm: rewrites row 2 and gives it a matching hash. Row 3 still links to the old.
    let forged = try store.withConnection { db -> String in
        let s = try db.prepare("SELECT * FROM audit WHERE seq = 2", doing: "read")
        _ = try s.step(doing: "read")
        var columns = (0..<s.columnCount).map { (name: s.columnName($0), value: s.column($0)) }
        s.reset()
        for i in columns.indices where columns[i].name == "user" { columns[i].value = .text("mallory") }
        return try AuditChain.hash(columns)
    }
    store.close()
    try sqlite(
        path, "DROP TRIGGER audit_no_update; UPDATE audit SET user = 'mallory', hash = '\(forged)' WHERE seq = 2")
    let report = try AuditStore(readingFrom: path).verify()
    #expect(report.problem == .brokenLink)
    #expect(report.firstBadSeq == 2)
    #expect(report.description.contains("row 3 does not link to row 2"))
}

@Test func verify_afterSettingAColumnThatWasNULL_failsAtThatSeq() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    try fill(try AuditStore(path: path), actions: 2)
    try sqlite(path, "DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'x' WHERE seq = 2")
    #expect(try AuditStore(readingFrom: path).verify().firstBadSeq == 2)
}

@Test func verify_ofTruncatedTail_isIntactButTheHeadMoves() throws {
    // Documented limit: dropping the newest rows leaves a valid chain; compare the head with an anchor kept elsewhere.
    let dir = try TempDir()
    let path = dir.file("audit.db")
    let store = try AuditStore(path: path)
    try fill(store, actions: 3)
    let anchor = try #require(try store.head())
    store.close()
    try sqlite(path, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq > 4")
    let report = try AuditStore(readingFrom: path).verify()
    #expect(report.isIntact)
    #expect(report.headSeq == 4)
    #expect(report.headHash != anchor.hash)
}

@Test func chain_matchesTheDocumentedCanonicalFormComputedByPython() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    let store = try AuditStore(path: path)
    try fill(store, actions: 2)
    var odd = kill("ü,\"x\"\nnew line")
    odd.reason = "tab\there"
    try store.append(odd)
    store.close()
    // An independent implementation of the canonical form described in AuditChain / the README.
    let script = """
        import hashlib, sqlite3, struct, sys
        db = sqlite3.connect(sys.argv[1])
        db.text_factory = bytes
        cur = db.execute("SELECT * FROM audit ORDER BY seq")
        names = [d[0] for d in cur.description]
        prev = b"0" * 64
        n = 0
        for row in cur:
            parts = []
            for name, value in sorted(zip(names, row), key=lambda p: p[0].encode()):
                if name == "hash" or value is None:
                    continue
                if isinstance(value, int):
                    tag, data = b"i", str(value).encode()
                elif isinstance(value, float):
                    tag, data = b"r", struct.pack(">d", value).hex().encode()
                else:
                    tag, data = b"t", value
                parts.append(name.encode() + b"=" + tag + str(len(data)).encode() + b":" + data + b"\\n")
            row = dict(zip(names, row))
            assert row["prev_hash"] == prev, row["seq"]
            digest = hashlib.sha256(b"ctd-audit-1\\n" + b"".join(parts)).hexdigest().encode()
            assert digest == row["hash"], row["seq"]
            prev = digest
            n += 1
        print(n)
        """
    let r = try run("python3", "-c", script, path)
    #expect(r.status == 0, "\(r.err)")
    #expect(r.out.trimmingCharacters(in: .whitespacesAndNewlines) == "5")
}

// MARK: Writes the file system refuses (root ignores chmod: the immutable attribute and a full database do not)

@Test func append_whenDatabaseAndWALAreImmutable_throwsAndWorksAgainAfterwards() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    let store = try AuditStore(path: path)
    try fill(store, actions: 2)
    #expect(FileManager.default.fileExists(atPath: path + "-wal"))
    try immutable(path, path + "-wal")
    let error = #expect(throws: AuditError.self) { try store.append(kill()) }
    try mutable(path, path + "-wal")
    #expect(error?.isWriteRefused == true, "\(String(describing: error))")
    #expect(error?.description.contains("SQLITE_IOERR_WRITE") == true, "\(String(describing: error))")
    #expect(try store.append(kill()) == 5)
    #expect(try store.verify().isIntact)
}

@Test func open_whenFileAndDirectoryAreImmutable_throws() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    do {
        let store = try AuditStore(path: path)
        try fill(store, actions: 1)
        store.close()  // checkpoints and removes the WAL
    }
    #expect(!FileManager.default.fileExists(atPath: path + "-wal"))
    try immutable(path, dir.path)
    let error = #expect(throws: AuditError.self) { try AuditStore(path: path) }
    try mutable(dir.path, path)
    #expect(
        error?.isWriteRefused == true || error?.description.contains("cannot use") == true,
        "\(String(describing: error))")
}

@Test func readingFrom_aWALDatabaseInAnImmutableDirectory_readsItAsAnArchive() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    do {
        let store = try AuditStore(path: path)
        try fill(store, actions: 2)
        store.close()
    }
    try immutable(path, dir.path)
    defer { try? mutable(dir.path, path) }
    let report = try AuditStore(readingFrom: path).verify()
    #expect(report.isIntact && report.rows == 4, "\(report)")
}

@Test func open_whenFileIsChmod0444_stillWritesAsRoot() throws {
    // Why the tests above use chattr: for root, permission bits are no barrier.
    guard geteuid() == 0 else { return }
    let dir = try TempDir()
    let path = dir.file("audit.db")
    try AuditStore(path: path).close()
    chmod(path, 0o444)
    chmod(dir.path, 0o555)
    defer { chmod(dir.path, 0o755) }
    #expect(try AuditStore(path: path).append(kill()) == 1)
}

@Test func append_whenTheDatabaseIsFull_throwsAndWritesNothing() throws {
    let dir = try TempDir()
    let store = try AuditStore(path: dir.file("audit.db"))
    try fill(store, actions: 1)
    let pages = try store.withConnection { try $0.scalar("PRAGMA page_count", doing: "read").integer ?? 0 }
    try store.withConnection { try $0.execute("PRAGMA max_page_count = \(pages)", doing: "cap") }
    var big = kill()
    big.reason = String(repeating: "x", count: 64 * 1024)
    let error = #expect(throws: AuditError.self) { try store.append(big) }
    #expect(error?.isWriteRefused == true)
    #expect(error?.description.contains("full") == true, "\(String(describing: error))")
    let report = try store.verify()
    #expect(report.isIntact && report.rows == 2)
}

@Test func append_whenAnotherConnectionHoldsTheWriteLock_throwsBusyAfterTheTimeout() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    let holder = try AuditStore(path: path)
    let store = try AuditStore(path: path, busyTimeout: 0.2)
    try holder.withConnection { try $0.execute("BEGIN IMMEDIATE", doing: "lock") }
    let started = Date()
    let error = #expect(throws: AuditError.self) { try store.append(kill()) }
    #expect(Date().timeIntervalSince(started) >= 0.15)
    #expect(error?.isBusy == true, "\(String(describing: error))")
    try holder.withConnection { try $0.execute("ROLLBACK", doing: "unlock") }
    #expect(try store.append(kill()) == 1)
}

@Test func append_onAReadOnlyStore_throws() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    try AuditStore(path: path).close()
    let reader = try AuditStore(readingFrom: path)
    #expect(throws: AuditError.self) { try reader.append(kill()) }
}

// MARK: Concurrency

@Test func append_fromEightThreadsOnOneStore_keepsTheChainValid() async throws {
    let dir = try TempDir()
    let store = try AuditStore(path: dir.file("audit.db"))
    try await withThrowingTaskGroup(of: Void.self) { group in
        for t in 0..<8 {
            group.addTask {
                try await Task.detached {
                    for i in 0..<25 { try store.append(kill("user\(t)", id: UInt32(t * 100 + i))) }
                }.value
            }
        }
        try await group.waitForAll()
    }
    let report = try store.verify()
    #expect(report.isIntact, "\(report)")
    #expect(report.rows == 200)
}

@Test func append_fromEightThreadsWithOneStoreEach_serializesOnTheFileLock() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    try AuditStore(path: path).close()
    let stores = try (0..<8).map { _ in try AuditStore(path: path, busyTimeout: 30) }
    let failures = Mutex<[String]>([])
    DispatchQueue.concurrentPerform(iterations: 8) { t in
        for i in 0..<20 {
            do {
                try stores[t].append(kill("user\(t)", id: UInt32(t * 100 + i)))
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
    }
    #expect(failures.withLock { $0 }.isEmpty)
    let report = try AuditStore(readingFrom: path).verify()
    #expect(report.isIntact, "\(report)")
    #expect(report.rows == 160)
    let perUser = try AuditStore(readingFrom: path).query(user: "user3")
    #expect(perUser.count == 20)
}

@Test func append_ofBatchesPastTheWALThreshold_checkpointsInTheBackground() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    let store = try AuditStore(path: path)
    // SQLite reports 0 when its own checkpoint-on-commit is replaced by a WAL hook.
    #expect(try store.withConnection { try $0.scalar("PRAGMA wal_autocheckpoint", doing: "read") } == .integer(0))
    func mainFileSize() -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : -1
    }
    let before = mainFileSize()
    // Two bulk kills of 10,000: each takes the WAL past 1,000 pages. SQLite's own checkpoint is off on the appending
    // connection, so the main file grows only if the background checkpoint ran.
    for round in 0..<2 {
        let entries = (0..<10_000).map { kill(id: UInt32(round * 10_000 + $0)) }
        let seqs = try store.append(batch: entries)
        try store.append(
            batch: zip(entries, seqs).map { AuditEntry.outcome(of: $0, seq: $1, outcome: .succeeded, reason: nil) })
    }
    let deadline = Date().addingTimeInterval(10)
    while mainFileSize() <= before + 1_000_000 && Date() < deadline { usleep(20_000) }
    #expect(mainFileSize() > before + 1_000_000, "the main file stayed at \(mainFileSize()) bytes: no checkpoint ran")
    store.close()
    let report = try AuditStore(readingFrom: path).verify()
    #expect(report.isIntact, "\(report)")
    #expect(report.rows == 40_000)
}

@Test func canonicalForm_ofEveryStorageClass_isTheDocumentedBytes() {
    let bytes = AuditChain.canonical([
        ("seq", .integer(-42)), ("hash", .text("ignored")), ("b", .blob([0, 255])), ("t", .text("é")),
        ("r", .real(1.5)), ("n", .null), ("a", .integer(0)),
    ])
    let expected: [UInt8] =
        Array("ctd-audit-1\na=i1:0\nb=b2:".utf8) + [0, 255]
        + Array("\nr=r16:3ff8000000000000\nseq=i3:-42\nt=t2:é\n".utf8)
    #expect(bytes == expected)
}

// MARK: Query

@Test func query_joinsEachActionWithItsOutcomeAndFilters() throws {
    let dir = try TempDir()
    let store = try AuditStore(path: dir.file("audit.db"))
    let login = AuditEntry(action: .login, procedure: "login", user: "bob", roles: [], client: "10.1.1.1")
    let s1 = try store.append(login, at: 1_000)
    try store.append(.outcome(of: login, seq: s1, outcome: .failed, reason: "wrong password"), at: 1_000.5)
    let k = kill("alice")
    let s2 = try store.append(k, at: 2_000)
    try store.append(.outcome(of: k, seq: s2, outcome: .succeeded, reason: nil), at: 2_000.25)
    var change = AuditEntry(
        action: .change, procedure: "change", user: "alice", roles: ["admin", "operator"], client: "::1",
        connection: connection(), field: "mark", newValue: "42")
    change.reason = nil
    try store.append(change, at: 3_000)  // no outcome: pending

    let all = try store.query()
    #expect(all.map(\.seq) == [1, 3, 5])
    #expect(all[0].outcome == .failed && all[0].reason == "wrong password" && all[0].outcomeSeq == 2)
    #expect(all[1].outcome == .succeeded && all[1].outcomeTime == 2_000.25)
    #expect(all[1].connID == 3_000_000_001 && all[1].mark == 7 && all[1].origDestinationPort == 53)
    #expect(all[2].outcome == .pending && all[2].outcomeSeq == nil)
    #expect(all[2].roles == ["admin", "operator"] && all[2].field == "mark" && all[2].newValue == "42")
    #expect(all[1].timeISO == "1970-01-01T00:33:20.000000Z")

    #expect(try store.query(user: "alice").map(\.seq) == [3, 5])
    #expect(try store.query(action: .login).map(\.seq) == [1])
    #expect(try store.query(since: 2_000).map(\.seq) == [3, 5])
    #expect(try store.query(until: 2_000).map(\.seq) == [1])
    #expect(try store.query(limit: 2).map(\.seq) == [3, 5])
    #expect(try store.query(user: "nobody").isEmpty)
}

@Test func deniedCalls_areCompleteRecords() throws {
    let dir = try TempDir()
    let store = try AuditStore(path: dir.file("audit.db"))
    let denied = AuditEntry(
        action: .denied, procedure: "kill", user: "viewer1", roles: ["viewer"], client: "127.0.0.1", outcome: .failed,
        reason: "permission denied")
    try store.append(denied)
    let r = try #require(try store.query(action: .denied).first)
    #expect(r.outcome == .failed && r.reason == "permission denied" && r.procedure == "kill")
}

@Test func filterParse_acceptsEpochAndISOAndRejectsNonsense() throws {
    let f = try AuditFilter.parse(since: "2025-01-01", until: "1735776000.5", user: "alice", action: "KILL")
    #expect(f.since == 1_735_689_600)
    #expect(f.until == 1_735_776_000.5)
    #expect(f.action == .kill)
    #expect(throws: AuditError.self) { try AuditFilter.parse(since: "yesterday", until: nil, user: nil, action: nil) }
    #expect(throws: AuditError.self) { try AuditFilter.parse(since: nil, until: nil, user: nil, action: "outcome") }
}

@Test(arguments: [
    ("2025-01-01T00:00:00Z", 1_735_689_600.0),
    ("2025-01-01T01:00:00+01:00", 1_735_689_600.0),
    ("2025-01-01 00:00", 1_735_689_600.0),
    ("2024-12-31T19:00:00-0500", 1_735_689_600.0),
    ("2025-01-01T00:00:00.250Z", 1_735_689_600.25),
    ("1735689600", 1_735_689_600.0),
])
func timeParse_understandsCommonForms(text: String, expected: Double) {
    #expect(AuditTime.parse(text) == expected)
}

@Test(arguments: ["", "2025-02-30", "2025-13-01", "2025-01-01T25:00", "12:00", "2025-01-01Tx", "1.2.3"])
func timeParse_rejectsInvalidTimes(text: String) {
    #expect(AuditTime.parse(text) == nil)
}

@Test func timeISO_roundTripsThroughParse() {
    let t = 1_735_689_600.123456
    #expect(AuditTime.iso(t) == "2025-01-01T00:00:00.123456Z")
    #expect(abs((AuditTime.parse(AuditTime.iso(t)) ?? 0) - t) < 1e-6)
}

// MARK: Export

private func storeWithAwkwardValues(_ dir: borrowing TempDir) throws -> AuditStore {
    let store = try AuditStore(path: dir.file("audit.db"))
    let k = kill("o'brien, \"the\" admin")
    let seq = try store.append(k, at: 1_700_000_000.5)
    try store.append(
        .outcome(of: k, seq: seq, outcome: .failed, reason: "line one\r\nline two, with \"quotes\" and ü\u{1}"),
        at: 1_700_000_001)
    try store.append(AuditEntry(action: .login, procedure: "login", user: "plain", roles: ["viewer"], client: "::1"))
    return store
}

@Test func exportCSV_parsesBackWithPythonsCSVModule() throws {
    let dir = try TempDir()
    let store = try storeWithAwkwardValues(dir)
    let csv = try store.export(format: .csv)
    #expect(csv.hasPrefix("seq,time,time_iso,action,"))
    #expect(csv.hasSuffix("\r\n"))
    let script = """
        import csv, io, json, sys
        rows = list(csv.DictReader(io.StringIO(sys.stdin.read(), newline="")))
        print(json.dumps(rows))
        """
    let r = try run(["python3", "-c", script], input: csv)
    #expect(r.status == 0, "\(r.err)")
    let rows = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: String]]
    #expect(rows?.count == 2)
    #expect(rows?[0]["user"] == "o'brien, \"the\" admin")
    #expect(rows?[0]["reason"] == "line one\r\nline two, with \"quotes\" and ü\u{1}")
    #expect(rows?[0]["conn_id"] == "3000000001")
    #expect(rows?[0]["outcome"] == "failed")
    #expect(rows?[0]["time"] == "1700000000.5")
    #expect(rows?[1]["conn_id"] == "")
    #expect(rows?[1]["outcome"] == "pending")
    #expect(Set(rows?[0].keys.map { $0 } ?? []) == Set(AuditRecord.fieldNames))
}

@Test func exportJSON_parsesBackWithPythonsJSONModule() throws {
    let dir = try TempDir()
    let store = try storeWithAwkwardValues(dir)
    let json = try store.export(format: .json)
    let script = """
        import json, sys
        rows = json.loads(sys.stdin.read())
        assert isinstance(rows, list) and len(rows) == 2, rows
        assert list(rows[0].keys())[:4] == ["seq", "time", "time_iso", "action"], list(rows[0].keys())
        assert rows[0]["user"] == 'o\\'brien, "the" admin', rows[0]["user"]
        assert rows[0]["reason"] == 'line one\\r\\nline two, with "quotes" and \\u00fc\\x01', repr(rows[0]["reason"])
        assert rows[0]["conn_id"] == 3000000001 and rows[0]["mark"] == 7 and rows[0]["orig_dport"] == 53
        assert rows[0]["time"] == 1700000000.5 and rows[0]["outcome_time"] == 1700000001
        assert rows[1]["conn_id"] is None and rows[1]["outcome"] == "pending"
        print("ok")
        """
    let r = try run(["python3", "-c", script], input: json)
    #expect(r.status == 0, "\(r.err)\n\(json)")
    #expect(r.out.trimmingCharacters(in: .whitespacesAndNewlines) == "ok")
    // Also parses in Swift.
    let parsed = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]]
    #expect(parsed?.count == 2)
}

@Test func exportJSON_ofNothing_isAnEmptyArray() throws {
    let dir = try TempDir()
    let store = try AuditStore(path: dir.file("audit.db"))
    #expect(try store.export(format: .json) == "[]\n")
    #expect(try store.export(format: .csv) == AuditExport.csvHeader)
}

@Test func recordsForRPC_sendsIdsAndMarksAsStringsAndLeavesOutMissingValues() throws {
    let dir = try TempDir()
    let store = try storeWithAwkwardValues(dir)
    store.close()
    let records = try AuditStore.recordsForRPC(path: dir.file("audit.db"), filter: AuditFilter(), limit: 10)
    #expect(records.count == 2)
    let first = Dictionary(uniqueKeysWithValues: records[0].map { ($0.name, $0.value) })
    #expect(first["conn_id"] == .text("3000000001"))
    #expect(first["mark"] == .text("7"))
    #expect(first["orig_dport"] == .integer(53))
    #expect(first["time"] == .real(1_700_000_000.5))
    let second = Dictionary(uniqueKeysWithValues: records[1].map { ($0.name, $0.value) })
    #expect(second["conn_id"] == nil && second["reason"] == nil)
    #expect(throws: AuditError.self) {
        try AuditStore.recordsForRPC(path: dir.file("audit.db"), filter: AuditFilter(), limit: 0)
    }
    let missing = #expect(throws: AuditError.self) {
        try AuditStore.recordsForRPC(path: dir.file("none.db"), filter: AuditFilter(), limit: 10)
    }
    #expect(missing?.isMissingDatabase == true)
}

// MARK: Schema

@Test func open_ofAnotherApplicationsDatabase_isRefusedAndLeftAlone() throws {
    let dir = try TempDir()
    let path = dir.file("other.db")
    try sqlite(path, "CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    let error = #expect(throws: AuditError.self) { try AuditStore(path: path) }
    #expect(error?.description.contains("something else") == true)
    #expect(try run("sqlite3", path, "SELECT count(*) FROM sqlite_schema").out.hasPrefix("1"))
}

@Test func open_ofANewerSchema_isRefused() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    try AuditStore(path: path).close()
    try sqlite(path, "PRAGMA user_version = 99")
    let error = #expect(throws: AuditError.self) { try AuditStore(path: path) }
    #expect(error?.description.contains("newer") == true)
    #expect(throws: AuditError.self) { try AuditStore(readingFrom: path) }
}

@Test func readingFrom_aMissingFile_throwsMissingAndCreatesNothing() throws {
    let dir = try TempDir()
    let error = #expect(throws: AuditError.self) { try AuditStore(readingFrom: dir.file("nope.db")) }
    #expect(error?.isMissingDatabase == true)
    #expect(!FileManager.default.fileExists(atPath: dir.file("nope.db")))
}

@Test func migrationAddingANullableColumn_keepsOldRowsVerifiable() throws {
    let dir = try TempDir()
    let path = dir.file("audit.db")
    let store = try AuditStore(path: path)
    try fill(store, actions: 2)
    let v2 =
        AuditSchema.migrations + [
            AuditSchema.Migration(
                version: AuditSchema.latestVersion + 1, statements: ["ALTER TABLE audit ADD COLUMN session TEXT"])
        ]
    try store.withConnection { try AuditSchema.migrate($0, migrations: v2) }
    #expect(try run("sqlite3", path, "PRAGMA user_version").out.hasPrefix(String(AuditSchema.latestVersion + 1)))
    #expect(try store.verify().isIntact)
    // A v2 row with the new column set is covered by its hash too.
    try store.withConnection { try $0.execute("DROP TRIGGER audit_no_update", doing: "tamper") }
    try store.append(kill())
    try store.withConnection { try $0.execute("UPDATE audit SET session = 's1' WHERE seq = 5", doing: "tamper") }
    #expect(try store.verify().firstBadSeq == 5)
    // A v1 reader refuses the v2 file instead of misreading it.
    store.close()
    #expect(throws: AuditError.self) { try AuditStore(readingFrom: path) }
}
