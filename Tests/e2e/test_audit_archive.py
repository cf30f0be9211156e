"""Keeping an audit trail (docs/audit.md): `ctd audit backup` (SQLite's online backup API) while ctd writes,
`ctd audit prune --before T` (itself audited, the rest still verifiable from a signed checkpoint of the pruned
prefix), and exports whose manifest `ctd audit verify --export FILE --pubkey K` checks offline. Every tampering is
made with sqlite3 or a text edit on a copy.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ctdtest import ct_find, ct_insert, wait_for
from test_audit import _audit, _audited, _python_verify, _visible


def _count(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM audit").fetchone()[0]
    finally:
        con.close()


def _hash_at(db: Path, seq: int) -> str | None:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
        return row[0] if row else None
    finally:
        con.close()


class _Writer:
    """Changes one entry's mark in a loop over XML-RPC (each change: a pending row, then its outcome row)."""

    def __init__(self, c):
        self.rpc, self.sid = c.login()
        self.entry = ct_insert("tcp", "10.74.0.1", "10.74.0.2", 4100, 80, timeout=600, mark=1, state="ESTABLISHED")
        _visible(self.rpc, self.sid, self.entry)
        self.stop = threading.Event()
        self.changes = 0
        self.error = None
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        try:
            while not self.stop.is_set():
                self.changes += 1
                self.rpc.change(self.sid, "mark", str(self.entry["id"]), self.changes)
        except Exception as e:  # reported by finish()
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=60)
        assert self.error is None, f"the writer failed: {self.error!r}"


def _pubkey(db: Path, tmp_path: Path) -> Path:
    pub = tmp_path / "audit.pub"
    pub.write_text(_audit("pubkey", "--db", db).stdout)
    return pub


def test_backup_whileCtdWrites_isAConsistentSelfContainedCopyThatVerifiesWithThePublicKey(ctd, tmp_path):
    c, db = _audited(ctd, tmp_path)
    pub = _pubkey(db, tmp_path)
    copies = []
    with _Writer(c) as w:
        for i in range(3):
            at_start = _count(db)
            wait_for(lambda: _count(db), timeout=30, done=lambda n: n > at_start + 20,
                     what="ctd writing rows while the backup is taken")
            dest = tmp_path / f"backup-{i}.db"
            p = _audit("backup", "--db", db, dest)
            assert p.stdout.startswith(f"backup {dest}: "), p.stdout
            copies.append((dest, at_start))
        wait_for(lambda: w.changes, timeout=30, done=lambda n: n > 60, what="changes after the backups")
    assert c.stop() == 0
    assert ct_find("tcp", "10.74.0.1", "10.74.0.2", 4100, 80)["mark"] == w.changes
    live = _count(db)
    for dest, at_start in copies:
        # One file, mode 0600, in rollback-journal mode (header bytes 18 and 19 are 1): nothing to carry along.
        assert not Path(str(dest) + "-wal").exists() and not Path(str(dest) + "-journal").exists()
        assert oct(dest.stat().st_mode & 0o777) == "0o600"
        assert dest.read_bytes()[18:20] == b"\x01\x01"
        rows = _count(dest)
        assert at_start <= rows < live, (at_start, rows, live)
        # A prefix of the live trail, exactly: the copy's head row is the live row with that seq.
        con = sqlite3.connect(f"file:{dest}?mode=ro", uri=True)
        head_seq, head_hash = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        con.close()
        assert _hash_at(db, head_seq) == head_hash
        assert _python_verify(dest) == rows
        ok = _audit("verify", "--db", dest, "--pubkey", pub)
        assert ok.stdout.startswith(f"ok: {rows} rows, chain intact, anchored up to seq "), ok.stdout


def test_backup_toAnExistingFile_isRefusedAndTheFileIsLeftAlone(ctd, tmp_path):
    c, db = _audited(ctd, tmp_path)
    rpc, sid = c.login()
    dest = tmp_path / "already-there.db"
    dest.write_bytes(b"keep me")
    p = _audit("backup", "--db", db, dest, check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"cannot create the backup {dest}: it exists (a backup never overwrites a file)" in p.stderr
    assert dest.read_bytes() == b"keep me"
    missing = _audit("backup", "--db", tmp_path / "nope.db", tmp_path / "x.db", check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "x.db").exists()
