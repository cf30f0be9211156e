"""AuditSQLite: every kill, change, login and denied call is on disk before it happens, the chain shows tampering,
and an audit database that cannot be written stops the action (fault 7) instead of letting it through unaudited.

The database is made unwritable with `chattr +i` (the immutable attribute): root ignores permission bits, but not
this attribute, and it also stops writes through the daemon's already-open descriptors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import struct
import subprocess
from pathlib import Path

import pytest

from ctdtest import CTD, assert_fault, ct_find, ct_insert, make_password_file, run, toml_str, wait_for

ADMIN_ROLES = 'default_roles = ["operator"]\n\n[plugin.AuthSHA.roles]\nadmin = ["admin"]\nwatcher = "viewer"\n'


def _audited(ctd, tmp_path: Path, **options):
    """ctd with AuditSQLite on <tmp>/audit/audit.db; user admin is admin, every other user an operator."""
    db = tmp_path / "audit" / "audit.db"
    db.parent.mkdir(exist_ok=True)
    extra = ADMIN_ROLES + f"\n[plugin.AuditSQLite]\ndatabase = {toml_str(str(db))}\n"
    c = ctd(args=["--plugin", "AuditSQLite"], extra=extra, **options)
    return c, db


def _audit(*args, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run([str(CTD), "audit", *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, f"ctd audit {args} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def _export(db: Path, *filters) -> list[dict]:
    return json.loads(_audit("export", "--db", db, "--format", "json", *filters).stdout)


def _visible(rpc, sid, entry):
    wait_for(lambda: rpc.view(sid, {"id": str(entry["id"])}, "", "ASC", 0, 10)["total"] == 1, timeout=2,
             what=f"entry {entry['id']} in view")


def _login_eventually(c, user, password):
    """AuthSHA rereads its password file at most once a second: retry a fresh user's first login briefly."""
    return wait_for(lambda: _try_login(c, user, password), timeout=3, interval=0.2, what=f"login of {user}")


def _try_login(c, user, password):
    try:
        return c.login(user, password)
    except Exception:
        return None


def _python_verify(db: Path) -> int:
    """An independent check of the documented chain (README: canonical form); returns the number of rows."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.text_factory = bytes
    try:
        cur = con.execute("SELECT * FROM audit ORDER BY seq")
        names = [d[0] for d in cur.description]
        prev, n = b"0" * 64, 0
        for values in cur:
            parts = []
            for name, value in sorted(zip(names, values), key=lambda p: p[0].encode()):
                if name == "hash" or value is None:
                    continue
                if isinstance(value, int):
                    tag, data = b"i", str(value).encode()
                elif isinstance(value, float):
                    tag, data = b"r", struct.pack(">d", value).hex().encode()
                else:
                    tag, data = b"t", value
                parts.append(name.encode() + b"=" + tag + str(len(data)).encode() + b":" + data + b"\n")
            row = dict(zip(names, values))
            assert row["seq"] == n + 1 and row["prev_hash"] == prev, f"chain broken at {row['seq']}"
            digest = hashlib.sha256(b"ctd-audit-1\n" + b"".join(parts)).hexdigest().encode()
            assert digest == row["hash"], f"hash mismatch at {row['seq']}"
            prev, n = digest, n + 1
        return n
    finally:
        con.close()


@contextlib.contextmanager
def _immutable(*paths: Path):
    """chattr +i on the paths for the duration; fails (never skips) where the attribute is unavailable."""
    done = []
    try:
        for p in paths:
            r = subprocess.run(["chattr", "+i", str(p)], capture_output=True, text=True)
            if r.returncode != 0:
                pytest.fail(f"chattr +i {p} failed ({r.stderr.strip()}): the unwritable-database tests need root and a "
                            "file system with the immutable attribute (ext4, xfs, btrfs)", pytrace=False)
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)


# ---------------------------------------------------------------------------------------------------------------


def test_kill_isRecordedWithTheTupleTheKernelLost(ctd, tmp_path):
    c, db = _audited(ctd, tmp_path)
    rpc, sid = c.login()
    e = ct_insert("udp", "10.71.0.1", "10.71.0.2", 4001, 53, timeout=300, mark=4242)
    _visible(rpc, sid, e)
    assert rpc.kill(sid, [str(e["id"])])["killed"] == 1
    assert ct_find("udp", "10.71.0.1", "10.71.0.2", 4001, 53) is None

    kills = _export(db, "--action", "kill")
    assert len(kills) == 1, kills
    k = kills[0]
    assert k["conn_id"] == e["id"]
    assert (k["l3proto"], k["l4proto"]) == ("ipv4", 17)
    assert (k["orig_src"], k["orig_dst"], k["orig_sport"], k["orig_dport"]) == ("10.71.0.1", "10.71.0.2", 4001, 53)
    assert (k["repl_src"], k["repl_dst"], k["repl_sport"], k["repl_dport"]) == (
        e["repl_src"], e["repl_dst"], e["repl_sport"], e["repl_dport"])
    assert k["mark"] == 4242
    assert 0 < k["timeout"] <= 300
    assert (k["user"], k["roles"], k["client"], k["procedure"]) == ("admin", "admin", "127.0.0.1", "kill")
    assert k["outcome"] == "succeeded" and k["reason"] is None
    assert k["outcome_seq"] > k["seq"] and k["outcome_time"] >= k["time"]
    assert k["time_iso"].endswith("Z")

    logins = _export(db, "--action", "login", "--user", "admin")
    assert [r["outcome"] for r in logins] == ["succeeded"]

    listed = _audit("list", "--db", db).stdout
    assert f"id {e['id']} udp 10.71.0.1:4001 > 10.71.0.2:53 mark 4242" in listed, listed
    assert "succeeded" in listed
    # Without --db, the database named by the daemon's config ([plugin.AuditSQLite] database).
    assert _audit("list", "--config", c.config_path).stdout == listed
    wrong = _audit("list", "--config", c.workdir / "no-such.toml", check=False)
    assert wrong.returncode != 0 and "cannot read config file" in wrong.stderr, wrong.stderr

    verify = _audit("verify", "--db", db)
    assert verify.stdout.startswith("ok: 4 rows, chain intact"), verify.stdout
    assert _python_verify(db) == 4


def test_changeFailedLoginAndDeniedCall_areRecordedWithTheirOutcome(ctd, tmp_path):
    c, db = _audited(ctd, tmp_path)
    make_password_file(c.password_file, "watcher", "pw-watcher")
    rpc, sid = c.login()
    e = ct_insert("tcp", "10.72.0.1", "10.72.0.2", 4002, 80, timeout=300, mark=1, state="ESTABLISHED")
    _visible(rpc, sid, e)
    rpc.change(sid, "mark", str(e["id"]), 77)
    assert ct_find("tcp", "10.72.0.1", "10.72.0.2", 4002, 80)["mark"] == 77
    assert_fault(1, c.proxy().login, "admin", "wrong")
    assert_fault(1, c.proxy().login, "nobody", "x")
    w_rpc, w_sid = _login_eventually(c, "watcher", "pw-watcher")
    assert_fault(3, w_rpc.kill, w_sid, [str(e["id"])])
    assert ct_find("tcp", "10.72.0.1", "10.72.0.2", 4002, 80) is not None
    # The second failure from the same address in the same window is summarised, not recorded alone; the summary
    # is written when the window ends, or at shutdown.
    assert c.stop() == 0

    rows = _export(db)
    change = [r for r in rows if r["action"] == "change"]
    assert len(change) == 1
    assert (change[0]["field"], change[0]["new_value"], change[0]["mark"]) == ("mark", "77", 1)
    assert change[0]["outcome"] == "succeeded"
    failed = [(r["user"], r["reason"]) for r in rows if r["action"] == "login" and r["outcome"] == "failed"]
    assert ("admin", "wrong password") in failed, failed
    # Then one summary: nobody's failure and those of watcher while the password file was being reloaded.
    assert any(user == "nobody" and re.match(r"\d+ more failed logins from 127\.0\.0\.1 in this window; users: nobody",
                                             reason) for user, reason in failed), failed
    denied = [r for r in rows if r["action"] == "denied"]
    assert len(denied) == 1
    assert (denied[0]["user"], denied[0]["procedure"], denied[0]["roles"]) == ("watcher", "kill", "viewer")
    assert denied[0]["outcome"] == "failed" and denied[0]["reason"] == "permission denied"
    assert _audit("verify", "--db", db).returncode == 0


def test_verify_afterEditingOrDeletingARow_failsNamingTheFirstBadSeq(ctd, tmp_path):
    c, db = _audited(ctd, tmp_path)
    rpc, sid = c.login()
    entries = [ct_insert("udp", "10.73.0.1", "10.73.0.2", 4100 + i, 53, timeout=300, mark=5) for i in range(3)]
    for e in entries:
        _visible(rpc, sid, e)
        rpc.kill(sid, [str(e["id"])])
    victim = [r for r in _export(db, "--action", "kill") if r["conn_id"] == entries[1]["id"]][0]
    seq = victim["seq"]

    # The append-only trigger refuses a plain UPDATE; an intruder drops it first (the daemon keeps running).
    blocked = run(["sqlite3", str(db), f"UPDATE audit SET mark = 6 WHERE seq = {seq}"], check=False)
    assert blocked.returncode != 0 and "append-only" in blocked.stderr
    run(["sqlite3", str(db), f"DROP TRIGGER audit_no_update; UPDATE audit SET mark = 6 WHERE seq = {seq}"])
    v = _audit("verify", "--db", db, check=False)
    assert v.returncode == 1, v.stdout + v.stderr
    assert f"FAILED at seq {seq}:" in v.stdout and "changed after it was written" in v.stdout, v.stdout
    assert "audit_no_update is missing" in v.stderr

    # Restore the value: intact again. Then delete a row: the gap is named.
    run(["sqlite3", str(db), f"UPDATE audit SET mark = 5 WHERE seq = {seq}"])
    assert _audit("verify", "--db", db, check=False).returncode == 0
    run(["sqlite3", str(db), f"DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = {seq}"])
    v = _audit("verify", "--db", db, check=False)
    assert v.returncode == 1 and f"FAILED at seq {seq}: row {seq} is missing" in v.stdout, v.stdout

    # The daemon keeps appending after the row it knows as the head.
    e = ct_insert("udp", "10.73.0.1", "10.73.0.2", 4200, 53, timeout=300)
    _visible(rpc, sid, e)
    assert rpc.kill(sid, [str(e["id"])])["killed"] == 1


def test_kill_whenTheAuditDatabaseCannotBeWritten_isRefusedAndTheEntryStays(ctd, tmp_path):
    c, db = _audited(ctd, tmp_path)
    rpc, sid = c.login()
    e = ct_insert("udp", "10.74.0.1", "10.74.0.2", 4300, 53, timeout=300, mark=9)
    _visible(rpc, sid, e)
    wal = Path(str(db) + "-wal")
    assert wal.exists(), "the daemon's connection should hold a WAL file"
    rows_before = _python_verify(db)

    with _immutable(db, wal):
        f = assert_fault(7, rpc.kill, sid, [str(e["id"])], contains="AuditSQLite")
        assert "not done" in f.faultString
        assert_fault(7, rpc.change, sid, "mark", str(e["id"]), 10)
        assert_fault(7, c.proxy().login, "admin", c.password)
        assert_fault(7, rpc.audit_list, sid, {}, 10)  # an answer that cannot be recorded is withheld
        kept = ct_find("udp", "10.74.0.1", "10.74.0.2", 4300, 53)
        assert kept is not None and kept["id"] == e["id"] and kept["mark"] == 9
        health = {p["name"]: p["health"] for p in rpc.status(sid)["plugins"]}
        assert "SQLITE_IOERR" in health["AuditSQLite"] or "refused the write" in health["AuditSQLite"], health
        # Reading still works while writing does not.
        assert _audit("verify", "--db", db).stdout.startswith(f"ok: {rows_before} rows")

    assert rpc.kill(sid, [str(e["id"])])["killed"] == 1
    assert ct_find("udp", "10.74.0.1", "10.74.0.2", 4300, 53) is None
    assert {p["name"]: p["health"] for p in rpc.status(sid)["plugins"]}["AuditSQLite"] == "ok"
    kills = _export(db, "--action", "kill")
    assert [(k["conn_id"], k["outcome"]) for k in kills] == [(e["id"], "succeeded")]
    assert _audit("verify", "--db", db).returncode == 0
    assert _python_verify(db) == rows_before + 2


def test_start_withUnwritableAuditDatabase_failsClosed(ctd, tmp_path):
    db = tmp_path / "ro" / "audit.db"
    db.parent.mkdir()
    with _immutable(db.parent):
        with pytest.raises(AssertionError, match="audit database"):
            _audited_at(ctd, tmp_path, db)


def _audited_at(ctd, tmp_path, db):
    extra = f"\n[plugin.AuditSQLite]\ndatabase = {toml_str(str(db))}\n"
    return ctd(args=["--plugin", "AuditSQLite"], extra=extra)


@pytest.mark.parametrize("section, complaint", [
    ('database = "audit.db"\n', "absolute path"),
    ('database = "/tmp/x.db"\nsync = "normal"\n', "'sync'"),
    ('database = "/tmp/x.db"\ndatabse = "typo"\n', "'databse'"),
    ('database = "/etc/hostname/audit.db"\n', "/etc/hostname/audit.db"),
    ('database = 5\n', "'database'"),
])
def test_start_withBadAuditConfiguration_isRefusedNamingTheKey(ctd, tmp_path, section, complaint):
    with pytest.raises(AssertionError, match=complaint):
        ctd(args=["--plugin", "AuditSQLite"], extra="\n[plugin.AuditSQLite]\n" + section)


def test_auditList_overXMLRPC_isForAdminsOnlyAndFilters(ctd, tmp_path):
    c, db = _audited(ctd, tmp_path)
    make_password_file(c.password_file, "op", "pw-op")
    rpc, sid = c.login()
    e = ct_insert("udp", "10.75.0.1", "10.75.0.2", 4400, 53, timeout=300, mark=3000000000)
    _visible(rpc, sid, e)
    rpc.kill(sid, [str(e["id"])])

    records = rpc.audit_list(sid, {"action": "kill"}, 10)
    assert len(records) == 1
    r = records[0]
    assert r["conn_id"] == str(e["id"]) and r["mark"] == "3000000000"  # u32 as strings, like view
    assert r["orig_dport"] == 53 and r["outcome"] == "succeeded" and isinstance(r["time"], float)
    assert "reason" not in r  # missing values are left out, no <nil/>
    # Each read is recorded before its answer is sent, so it shows in the next read, never in its own.
    assert [x["action"] for x in rpc.audit_list(sid, [], 200)] == ["login", "kill", "audit_read"]
    reads = rpc.audit_list(sid, {"action": "audit_read"}, 10)
    assert [(x["user"], x["procedure"], x["field"], x["new_value"], x["outcome"]) for x in reads] == [
        ("admin", "audit_list", "filters", "action=kill limit=10", "succeeded"),
        ("admin", "audit_list", "filters", "limit=200", "succeeded"),
    ]
    assert rpc.audit_list(sid, {"user": "nobody"}, 5) == []
    assert rpc.audit_list(sid, {"since": "2999-01-01"}, 5) == []
    assert len(rpc.audit_list(sid, {"since": 0, "until": 4102444800.0}, 200)) == 7  # login, kill, 5 reads
    # Refused calls read nothing and are not reads.
    assert_fault(-32602, rpc.audit_list, sid, {"colour": "red"}, 5, contains="colour")
    assert_fault(-32602, rpc.audit_list, sid, {"action": "reboot"}, 5)
    assert_fault(5, rpc.audit_list, sid, {}, 201)
    assert len(rpc.audit_list(sid, {"action": "audit_read"}, 200)) == 6

    op_rpc, op_sid = _login_eventually(c, "op", "pw-op")
    assert_fault(3, op_rpc.audit_list, op_sid, {}, 10)
    assert [x["user"] for x in rpc.audit_list(sid, {"action": "denied"}, 10)] == ["op"]
    listed = _audit("list", "--db", db, "--action", "audit_read").stdout
    assert "audit_read" in listed and "filters=action=kill limit=10" in listed, listed
    assert _audit("verify", "--db", db).returncode == 0


def test_pluginsList_withTheSampleConfig_loadsTheHookHealthy(tmp_path):
    sample = (Path(__file__).resolve().parents[2] / "Plugins" / "AuditSQLite" / "auditsqlite.sample.toml").read_text()
    db = tmp_path / "audit.db"
    assert '"/var/lib/ctd/audit.db"' in sample
    password_file = tmp_path / "passwd"
    make_password_file(password_file, "admin", "pw-sample")
    cfg = tmp_path / "ctd.toml"
    cfg.write_text(f"[plugin.AuthSHA]\npassword_file = {toml_str(str(password_file))}\n\n"
                   + sample.replace("/var/lib/ctd/audit.db", str(db)))
    p = subprocess.run([str(CTD), "plugins", "list", "--config", str(cfg), "--plugin", "AuditSQLite"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in p.stdout.splitlines() if "\t" in line}
    assert rows["AuditSQLite"][1:3] == ["hook.audit_sqlite", "1.0.0"]
    assert rows["AuditSQLite"][4:6] == ["action_hook", "ok"]
    assert db.exists() and oct(db.stat().st_mode & 0o777) == "0o600"
    assert _audit("verify", "--db", db).stdout.startswith("ok: 0 rows")


def test_signedCheckpoints_verifyWithThePublicKey_andATruncatedTailFails(tmp_path):
    """A real plugin load writes the key (0600) and an open checkpoint; with a row added and its tail cut by
    sqlite3 on a copy, `verify --pubkey` exits 1 naming the deleted rows (docs/audit.md)."""
    sample = (Path(__file__).resolve().parents[2] / "Plugins" / "AuditSQLite" / "auditsqlite.sample.toml").read_text()
    db = tmp_path / "audit.db"
    password_file = tmp_path / "passwd"
    make_password_file(password_file, "admin", "pw-sample")
    cfg = tmp_path / "ctd.toml"
    cfg.write_text(f"[plugin.AuthSHA]\npassword_file = {toml_str(str(password_file))}\n\n"
                   + sample.replace("/var/lib/ctd/audit.db", str(db)))
    p = subprocess.run([str(CTD), "plugins", "list", "--config", str(cfg), "--plugin", "AuditSQLite"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    key = tmp_path / "audit-signing.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    pub = tmp_path / "audit.pub"
    pub.write_text(_audit("pubkey", "--db", db).stdout)
    assert pub.read_text().startswith("ctd-audit-ed25519-public ")
    assert key.read_text().split()[1] not in pub.read_text()
    ok = _audit("verify", "--db", db, "--pubkey", pub)
    assert ok.stdout.startswith("ok: 0 rows, chain intact, anchored up to seq 0 by signed checkpoint"), ok.stdout
    # A second load: its shutdown checkpoint (number 2 or later) is the anchor; cutting checkpoints is caught
    # against the number the log showed.
    copy = tmp_path / "copy.db"
    subprocess.run(["sqlite3", str(db), f".backup {copy}"], check=True, timeout=30)
    last = int(subprocess.run(["sqlite3", str(copy), "SELECT max(number) FROM checkpoint"], capture_output=True,
                              text=True, check=True, timeout=30).stdout)
    subprocess.run(["sqlite3", str(copy), f"DROP TRIGGER checkpoint_no_delete; DELETE FROM checkpoint WHERE number = {last}"],
                   check=True, timeout=30)
    bad = _audit("verify", "--db", copy, "--pubkey", pub, "--expect-checkpoint", last, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"checkpoint {last} was issued" in bad.stdout
    other = tmp_path / "other.pub"
    other.write_text("ctd-audit-ed25519-public " + "11" * 32 + "\n")
    wrong = _audit("verify", "--db", db, "--pubkey", other, check=False)
    assert wrong.returncode == 1 and "not signed by the given public key" in wrong.stdout, wrong.stdout
