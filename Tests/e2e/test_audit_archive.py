"""Keeping an audit trail (docs/audit.md): `ctd audit backup` (SQLite's online backup API) while ctd writes,
`ctd audit prune --before T` (itself audited, the rest still verifiable from a signed checkpoint of the pruned
prefix), and exports whose manifest `ctd audit verify --export FILE --pubkey K` checks offline. Every tampering is
made with sqlite3 or a text edit on a copy.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
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


def _sqlite(db: Path, sql: str) -> str:
    p = subprocess.run(["sqlite3", str(db), sql], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def _copy(db: Path, dest: Path) -> Path:
    _sqlite(db, f".backup {dest}")
    return dest


def test_prune_whileCtdRuns_isAuditedAndTheRestVerifies_andTamperingAfterItFails(ctd, tmp_path):
    c, db = _audited(ctd, tmp_path)
    pub = _pubkey(db, tmp_path)
    rpc, sid = c.login()
    e = ct_insert("tcp", "10.75.0.1", "10.75.0.2", 4200, 80, timeout=600, mark=1, state="ESTABLISHED")
    _visible(rpc, sid, e)
    for mark in range(2, 12):
        rpc.change(sid, "mark", str(e["id"]), mark)
    old_rows = _count(db)
    cutoff = time.time()
    wait_for(time.time, timeout=5, done=lambda t: t > cutoff + 0.01, what="the clock past the cut-off")
    for mark in range(12, 17):
        rpc.change(sid, "mark", str(e["id"]), mark)

    p = _audit("prune", "--db", db, "--before", f"{cutoff:.6f}")
    assert p.stdout.startswith(f"pruned rows 1 to {old_rows} ({old_rows} rows); the trail now starts at seq "
                               f"{old_rows + 1}, anchored by signed checkpoint "), p.stdout
    prune_cp = int(p.stdout.split("anchored by signed checkpoint ")[1].split()[0])
    assert _sqlite(db, "SELECT count(*) FROM audit WHERE seq <= %d" % old_rows) == "0"
    # ctd goes on writing after the prune, and the whole remainder verifies with the key.
    rpc.change(sid, "mark", str(e["id"]), 99)
    assert c.stop() == 0
    ok = _audit("verify", "--db", db, "--pubkey", pub)
    assert ok.stdout.startswith(f"ok: {_count(db)} rows (seq {old_rows + 1} to "), ok.stdout
    assert f"rows 1 to {old_rows} were pruned, checkpoint {prune_cp}), chain intact, anchored up to seq" in ok.stdout
    assert "not yet anchored" not in ok.stdout, ok.stdout
    assert _audit("verify", "--db", db).stdout.startswith("ok: ")
    # The prune is in the trail: who, when, what, and its outcome.
    listing = _audit("list", "--db", db, "--action", "prune").stdout.splitlines()
    assert len(listing) == 2 and " root " in listing[1] and "before=" in listing[1], listing
    assert "succeeded" in listing[1], listing
    prune_rows = [r for r in json.loads(_audit("export", "--db", db, "--format", "json", "--action", "prune").stdout)]
    assert prune_rows[0]["reason"].startswith(f"removed rows 1 to {old_rows} ({old_rows} rows)")
    # The trigger is back: a plain DELETE is still refused.
    bad = subprocess.run(["sqlite3", str(_copy(db, tmp_path / "t0.db")), f"DELETE FROM audit WHERE seq = {old_rows + 1}"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "append-only" in bad.stderr

    # Tampering after the prune, each on a copy.
    first = old_rows + 1
    cut = _copy(db, tmp_path / "t1.db")  # the first kept rows deleted as if pruned
    _sqlite(cut, f"DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq <= {first + 1}")
    r = _audit("verify", "--db", cut, check=False)
    assert r.returncode == 1 and f"FAILED at seq {first}: rows {first} to {first + 1} are missing" in r.stdout, r.stdout
    moved = _copy(db, tmp_path / "t2.db")  # ... and the prune checkpoint moved to cover them: its signature breaks
    _sqlite(moved, f"DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq <= {first + 1}; "
                   "DROP TRIGGER checkpoint_no_update; UPDATE checkpoint SET head_seq = "
                   f"{first + 1}, head_hash = (SELECT prev_hash FROM audit WHERE seq = {first + 2}) "
                   f"WHERE number = {prune_cp}")
    assert _audit("verify", "--db", moved).returncode == 0  # the chain alone cannot tell
    r = _audit("verify", "--db", moved, "--pubkey", pub, check=False)
    assert r.returncode == 1 and f"checkpoint {prune_cp}'s signature is not valid" in r.stdout, r.stdout
    gone = _copy(db, tmp_path / "t3.db")  # the prune checkpoint deleted
    _sqlite(gone, f"DROP TRIGGER checkpoint_no_delete; DELETE FROM checkpoint WHERE number = {prune_cp}")
    r = _audit("verify", "--db", gone, check=False)
    assert r.returncode == 1 and f"rows 1 to {old_rows} are missing" in r.stdout, r.stdout
    r = _audit("verify", "--db", gone, "--pubkey", pub, check=False)
    assert r.returncode == 1 and f"rows 1 to {old_rows} are missing" in r.stdout, r.stdout
    edited = _copy(db, tmp_path / "t4.db")  # a kept row edited
    _sqlite(edited, f"DROP TRIGGER audit_no_update; UPDATE audit SET new_value = '1313' WHERE seq = {first + 2}")
    r = _audit("verify", "--db", edited, "--pubkey", pub, check=False)
    assert r.returncode == 1 and f"FAILED at seq {first + 2}: the row was changed" in r.stdout, r.stdout


def test_prune_withAFutureTimeOrAnotherKey_isRefusedAndNothingIsRemoved(ctd, tmp_path):
    c, db = _audited(ctd, tmp_path)
    c.login()
    before = _count(db)
    p = _audit("prune", "--db", db, "--before", "2999-01-01T00:00:00Z", check=False)
    assert p.returncode == 2 and "--before must be in the past" in p.stderr, p.stderr
    other = tmp_path / "other.key"
    other.write_text("ctd-audit-ed25519-private " + "22" * 32 + "\n")
    other.chmod(0o600)
    p = _audit("prune", "--db", db, "--before", "2000-01-01T00:00:00Z", "--key", other, check=False)
    assert p.returncode == 2 and "is not the key that signed this trail's checkpoints" in p.stderr, p.stderr
    p = _audit("prune", "--db", db, "--before", "yesterday", check=False)
    assert p.returncode != 0 and "--before must be epoch seconds or an ISO 8601 time" in p.stderr, p.stderr
    assert _count(db) >= before and _sqlite(db, "SELECT min(seq) FROM audit") == "1"


def _manifest_trail(ctd, tmp_path):
    """A trail with a failed login (a user name with a quote, a comma and a line break, which ctd stores with `?`
    for each; empty roles), changes and a kill, closed by ctd's shutdown checkpoint."""
    c, db = _audited(ctd, tmp_path)
    rpc, sid = c.login()
    try:
        c.proxy().login('we"ird,\nname', "wrong")
    except Exception:
        pass
    e = ct_insert("tcp", "10.76.0.1", "10.76.0.2", 4300, 80, timeout=600, mark=1, state="ESTABLISHED")
    _visible(rpc, sid, e)
    for mark in (5, 6, 7):
        rpc.change(sid, "mark", str(e["id"]), mark)
    assert rpc.kill(sid, [str(e["id"])])["killed"] == 1
    assert c.stop() == 0
    return db, _pubkey(db, tmp_path)


def _verify_export(path: Path, pub: Path) -> subprocess.CompletedProcess:
    return _audit("verify", "--export", path, "--pubkey", pub, check=False)


def test_exportWithManifest_jsonAndCsv_verifyOffline_andEachTamperingFails(ctd, tmp_path):
    db, pub = _manifest_trail(ctd, tmp_path)
    rows = _count(db)
    js, cs = tmp_path / "trail.json", tmp_path / "trail.csv"
    p = _audit("export", "--db", db, "--format", "json", "--manifest", "--output", js)
    assert p.stdout.startswith(f"exported rows 1 to {rows} ({rows} rows) to {js} with its manifest inside"), p.stdout
    p = _audit("export", "--db", db, "--format", "csv", "--manifest", "--output", cs)
    assert f"with its manifest {cs}.manifest.json" in p.stdout, p.stdout
    for f in (js, cs):
        ok = _verify_export(f, pub)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.startswith(f"ok: export of {rows} rows, seq 1 to {rows} (from the first row of the trail)")
    # Readable by ordinary tools: Python's csv and json modules see every row, the awkward name intact.
    import csv
    with open(cs, newline="") as f:
        parsed = list(csv.DictReader(f))
    assert len(parsed) == rows and any(r["user"] == "we?ird??name" and r["roles"] == "" for r in parsed)
    doc = json.loads(js.read_text())
    assert len(doc["rows"]) == rows and doc["manifest"]["checkpoint"]["head_seq"] == rows
    assert any(r["user"] == "we?ird??name" and r["roles"] == "" and r["conn_id"] is None for r in doc["rows"])
    # An existing file is never overwritten.
    again = _audit("export", "--db", db, "--format", "json", "--manifest", "--output", js, check=False)
    assert again.returncode == 2 and "it exists" in again.stderr

    def tampered(name: str, edit) -> Path:
        d = json.loads(js.read_text())
        edit(d)
        out = tmp_path / name
        out.write_text(json.dumps(d))
        return out

    def fails(path: Path, sentence: str):
        r = _verify_export(path, pub)
        assert r.returncode == 1 and r.stdout.startswith("FAILED: ") and sentence in r.stdout, r.stdout

    mid = rows // 2
    fails(tampered("edited.json", lambda d: d["rows"][mid - 1].update(user="mallory")),
          f"row seq {mid} was changed after it was exported")
    fails(tampered("dropped.json", lambda d: d["rows"].pop(mid - 1)),
          f"the export jumps from seq {mid - 1} to {mid + 1}: rows {mid} to {mid} were removed")
    fails(tampered("tail.json", lambda d: d["rows"].pop()),
          f"the export ends at seq {rows - 1}, but its signed checkpoint")
    fails(tampered("tail-and-manifest.json",
                   lambda d: (d["rows"].pop(), d["manifest"].update(last_seq=rows - 1, rows=rows - 1,
                                                                     head_hash=d["rows"][-1]["hash"]))),
          "the manifest was edited: it names seq")
    fails(tampered("signature.json", lambda d: d["manifest"]["checkpoint"].update(head_seq=rows - 1)),
          "signature in the manifest is not valid for the given public key")
    fails(tampered("count.json", lambda d: d["manifest"].update(rows=rows + 1)),
          f"the manifest says {rows + 1} rows, the export has {rows}")
    fails(tampered("head.json",
                   lambda d: (d["rows"].pop(0), d["manifest"].update(first_seq=2, rows=rows - 1,
                                                                     first_prev_hash=d["rows"][0]["prev_hash"]))),
          "the export starts at seq 2 with no signed prune checkpoint")
    # CSV: a text edit of one field, a dropped line, an edited sidecar manifest.
    lines = cs.read_bytes().split(b"\r\n")
    edited = tmp_path / "edited.csv"
    edited.write_bytes(b"\r\n".join(lines).replace(b'"mark","7"', b'"mark","8"', 1))
    (tmp_path / "edited.csv.manifest.json").write_bytes(Path(f"{cs}.manifest.json").read_bytes())
    assert edited.read_bytes() != cs.read_bytes()
    fails(edited, "was changed after it was exported")
    dropped = tmp_path / "dropped.csv"
    header_and_rows = [line for line in lines if line]
    # The line of the row with seq == mid (a row's first field is its seq; the user with a line break spans two).
    k = next(i for i, line in enumerate(header_and_rows) if line.startswith(f"{mid},".encode()))
    dropped.write_bytes(b"\r\n".join(header_and_rows[:k] + header_and_rows[k + 1:]) + b"\r\n")
    (tmp_path / "dropped.csv.manifest.json").write_bytes(Path(f"{cs}.manifest.json").read_bytes())
    fails(dropped, f"rows {mid} to {mid} were removed")
    m = json.loads(Path(f"{cs}.manifest.json").read_text())
    m["checkpoint"]["number"] += 1
    manifest_edit = tmp_path / "manifest.csv"
    manifest_edit.write_bytes(cs.read_bytes())
    Path(f"{manifest_edit}.manifest.json").write_text(json.dumps(m))
    fails(manifest_edit, "signature in the manifest is not valid")
    other = tmp_path / "other.pub"
    other.write_text("ctd-audit-ed25519-public " + "11" * 32 + "\n")
    r = _verify_export(js, other)
    assert r.returncode == 1 and "was not signed by the given public key" in r.stdout, r.stdout


def test_exportWithManifest_ofAPrunedTrail_startsAtItsSignedPruneCheckpoint(ctd, tmp_path):
    db, pub = _manifest_trail(ctd, tmp_path)
    cutoff = time.time()
    wait_for(time.time, timeout=5, done=lambda t: t > cutoff + 0.01, what="the clock past the cut-off")
    pruned = _audit("prune", "--db", db, "--before", f"{cutoff:.6f}").stdout
    through = int(pruned.split("pruned rows 1 to ")[1].split()[0])
    out = tmp_path / "pruned.json"
    _audit("export", "--db", db, "--format", "json", "--manifest", "--output", out)
    # CSV too: the prune's outcome reason has a comma and a semicolon, quoted in the file.
    _audit("export", "--db", db, "--format", "csv", "--manifest", "--output", tmp_path / "pruned.csv")
    assert f'"removed rows 1 to {through} ({through} rows); the trail starts at seq {through + 1}, anchored by '.encode() \
        in (tmp_path / "pruned.csv").read_bytes()
    for f in (out, tmp_path / "pruned.csv"):
        ok = _verify_export(f, pub)
        assert ok.returncode == 0, ok.stdout
        assert f"seq {through + 1} to " in ok.stdout and f"after the pruned prefix (rows 1 to {through}" in ok.stdout
    d = json.loads(out.read_text())
    d["rows"].pop(0)
    d["manifest"].update(first_seq=through + 2, rows=len(d["rows"]), first_prev_hash=d["rows"][0]["prev_hash"])
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(d))
    r = _verify_export(cut, pub)
    assert r.returncode == 1 and f"rows {through + 1} to {through + 1} were removed from its start" in r.stdout, \
        r.stdout
    bad = _audit("export", "--db", db, "--format", "csv", "--manifest", check=False)
    assert bad.returncode != 0 and "--manifest needs --output FILE" in bad.stderr
    bad = _audit("export", "--db", db, "--format", "csv", "--manifest", "--output", tmp_path / "x.csv", "--user",
                 "admin", check=False)
    assert bad.returncode != 0 and "takes no --since, --until, --user" in bad.stderr


def test_pruneTwice_thenBackup_theCopyStartsAtTheNewestPruneAndVerifies(ctd, tmp_path):
    c, db = _audited(ctd, tmp_path)
    pub = _pubkey(db, tmp_path)
    rpc, sid = c.login()
    e = ct_insert("tcp", "10.77.0.1", "10.77.0.2", 4400, 80, timeout=600, mark=1, state="ESTABLISHED")
    _visible(rpc, sid, e)
    cuts = []
    for round_ in range(2):
        for mark in range(2, 6):
            rpc.change(sid, "mark", str(e["id"]), mark + 10 * round_)
        cutoff = time.time()
        wait_for(time.time, timeout=5, done=lambda t: t > cutoff + 0.01, what="the clock past the cut-off")
        out = _audit("prune", "--db", db, "--before", f"{cutoff:.6f}").stdout
        cuts.append(int(out.split(" to ")[1].split()[0]))
    assert cuts[1] > cuts[0]
    copy = tmp_path / "pruned-copy.db"
    _audit("backup", "--db", db, copy)
    assert c.stop() == 0
    for f in (db, copy):
        ok = _audit("verify", "--db", f, "--pubkey", pub).stdout
        assert ok.startswith(f"ok: ") and f"(seq {cuts[1] + 1} to " in ok and f"rows 1 to {cuts[1]} were pruned" in ok, ok
    assert _sqlite(copy, "SELECT count(*) FROM checkpoint WHERE kind = 'prune'") == "2"
