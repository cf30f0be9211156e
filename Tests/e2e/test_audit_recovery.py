"""Crash recovery of the audit trail (docs/audit.md, "Crash recovery"): `kill -9` of ctd in the middle of a real
10,000-id audited bulk kill (kill_preview + kill_matching of `conntrack -I` entries), then a restart. Every action
with a pending row and no outcome gets an `interrupted` outcome at start-up, derived from the kernel table (the
entry still there, or gone), written by AuditSQLite in its chain and forwarded by AuditSyslog to a real rsyslog;
`ctd audit verify --pubkey`, `ctd audit list` and `audit_list` show them. Cross-checked with `conntrack -L`.

A kill of 10,000 is recorded in two parts (7,000 pending rows, then 3,000) and the kernel deletes the first part while
the second is written (docs/design.md, "A bulk kill in two parts"), so the crash finds 7,000 or 10,000 pending rows;
either way an entry that no pending row names must still be in the kernel table.

The kill lands in the middle without any timing: the test watches the namespace's entry count
(/proc/sys/net/netfilter/nf_conntrack_count) and freezes ctd (SIGSTOP) as soon as ctd's deletes started, then reads
the trail: pending rows and no outcome means the freeze is inside the kill, and SIGKILL follows. An attempt whose
freeze came too late (outcomes written, or every entry already gone) lets ctd finish (SIGCONT) and tries again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from ctdtest import CTD, conntrack_list, start_ctd, toml_str, wait_for
from test_audit_syslog import (ROLES, Rsyslog, _fill, _free_port, _syslog_section, _whole_events,
                               make_certificates)

COUNT = Path("/proc/sys/net/netfilter/nf_conntrack_count")
DST = "10.81.0.1"
ATTEMPTS = 10


def _rows(db: Path, sql: str, *args) -> list[dict]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def _audit(*args, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run([str(CTD), "audit", *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, f"ctd audit {args} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def _left() -> dict[int, tuple]:
    """The kill's entries still in `conntrack -L`: id -> original tuple."""
    return {e["id"]: (e["src"], e["sport"], e["dst"], e["dport"])
            for e in conntrack_list("-p", "udp", "-d", DST) if e["dst"] == DST}


def _interrupt_a_bulk_kill(victim, db: Path) -> tuple[int, int, dict[int, tuple]]:
    """Runs kill_matching of 10,000 fresh entries and kill -9s ctd inside it. Returns the seq range of the kill's
    pending rows and the kill's entries as they were before it. Fails after ATTEMPTS freezes that all came too
    late."""
    rpc, sid = victim.login()
    for attempt in range(ATTEMPTS):
        _fill(10_000)
        wait_for(lambda: rpc.view(sid, {"orig_dst": DST}, "", "ASC", 0, 1)["total"], timeout=120,
                 done=lambda t: t == 10_000, what="10,000 entries in view")
        preview = rpc.kill_preview(sid, {"orig_dst": DST})
        assert preview["total"] == 10_000
        before = _left()
        assert len(before) == 10_000
        head = _rows(db, "SELECT coalesce(max(seq), 0) AS s FROM audit")[0]["s"]
        killer_rpc = victim.proxy()
        outcome = {}

        def kill():
            try:
                outcome["result"] = killer_rpc.kill_matching(sid, preview["token"], 10_000)
            except Exception as e:  # the connection dies with ctd
                outcome["error"] = e

        base = int(COUNT.read_text())
        killer = threading.Thread(target=kill)
        killer.start()
        # ctd's first netlink batch deletes 256 entries at once; loopback entries (the RPC's own) move by a few.
        while int(COUNT.read_text()) > base - 50:
            if not killer.is_alive():
                break
        os.kill(victim.proc.pid, signal.SIGSTOP)
        try:
            pending = _rows(db, "SELECT seq FROM audit WHERE seq > ? AND procedure = 'kill_matching' "
                                "AND action = 'kill'", head)
            seqs = [r["seq"] for r in pending]
            outcomes = _rows(db, "SELECT count(*) AS n FROM audit WHERE seq > ? AND action = 'outcome'", head)[0]["n"]
        except sqlite3.OperationalError as e:
            # Frozen in the middle of a commit (the WAL index being written): this attempt cannot be read.
            seqs, outcomes = [], f"unreadable ({e})"
        left = len(_left())
        if len(seqs) in (7_000, 10_000) and outcomes == 0 and 0 < left < 10_000:
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(timeout=30)
            killer.join(timeout=60)
            assert "result" not in outcome, f"kill_matching answered although ctd was killed: {outcome}"
            return min(seqs), max(seqs), before
        print(f"attempt {attempt + 1}: frozen too late ({len(seqs)} pending rows, {outcomes} outcomes, {left} "
              f"entries left); letting ctd finish")
        os.kill(victim.proc.pid, signal.SIGCONT)
        killer.join(timeout=120)
        assert "result" in outcome, f"kill_matching failed: {outcome}"
        wait_for(lambda: len(_left()), timeout=30, done=lambda n: n == 0, what="the finished kill's entries gone")
    raise AssertionError(f"in {ATTEMPTS} attempts ctd could not be frozen inside the bulk kill")


def test_kill9_inABulkKill_restartRecordsEachActionInterrupted_asTheKernelTableShows(ctd, tmp_path):
    certs = make_certificates(tmp_path / "pki")
    rs = Rsyslog(tmp_path / "rsyslog", certs, _free_port())
    rs.start()
    victim = None
    try:
        db = tmp_path / "audit" / "audit.db"
        db.parent.mkdir()
        extra = (ROLES + f"\n[plugin.AuditSQLite]\ndatabase = {toml_str(str(db))}\n"
                 + _syslog_section(rs, certs, tmp_path / "queue" / "audit-syslog.queue"))
        args = ["--plugin", "AuditSQLite", "--plugin", "AuditSyslog"]
        victim = start_ctd(tmp_path / "victim", args=args, extra=extra)
        first, last, before = _interrupt_a_bulk_kill(victim, db)
        assert victim.proc.returncode == -signal.SIGKILL
        assert Path(str(db) + "-wal").exists(), "a killed writer leaves its -wal beside the database"

        # What the kernel has after the crash, and what the trail says was about to happen.
        left = _left()
        actions = {r["seq"]: r for r in _rows(db, "SELECT * FROM audit WHERE seq BETWEEN ? AND ?", first, last)}
        recorded = len(actions)
        assert recorded in (7_000, 10_000) and all(a["outcome"] == "pending" for a in actions.values())
        assert not _rows(db, "SELECT seq FROM audit WHERE ref_seq BETWEEN ? AND ?", first, last)
        named = {a["conn_id"]: (a["orig_src"], a["orig_sport"], a["orig_dst"], a["orig_dport"])
                 for a in actions.values()}
        assert all(before.get(i) == t for i, t in named.items()), "a pending row names an entry the kill did not have"
        assert all(before.get(i) == t for i, t in left.items()), "an entry the kill did not have is in the table"
        unrecorded = set(before) - set(named)
        assert unrecorded <= set(left), "an entry without a pending row was deleted: a kill reached the kernel unaudited"
        assert 0 < len(left) < 10_000
        left_named = set(left) & set(named)

        # The restart records the interrupted outcomes before it serves.
        c = ctd(password_file=victim.password_file, password=victim.password, args=args, extra=extra)
        outcomes = _rows(db, "SELECT * FROM audit WHERE action = 'outcome' AND ref_seq BETWEEN ? AND ?", first, last)
        assert len(outcomes) == recorded and len({o["ref_seq"] for o in outcomes}) == recorded
        present = gone = 0
        for o in outcomes:
            a = actions[o["ref_seq"]]
            assert o["outcome"] == "interrupted" and o["conn_id"] == a["conn_id"] and o["user"] == "admin"
            if a["conn_id"] in left:
                present += 1
                assert "still in the kernel table at restart: the kill did not reach it" in o["reason"], o["reason"]
            else:
                gone += 1
                assert "gone from the kernel table" in o["reason"], o["reason"]
        assert present == len(left_named) and gone == recorded - len(left_named)
        assert _left() == left, "the restart itself changed the kernel table"
        assert "actions interrupted by the last stop recorded" in c.stderr()

        # verify: the chain with the new rows, anchored by the recovery checkpoint.
        pub = tmp_path / "audit.pub"
        pub.write_text(_audit("pubkey", "--db", db).stdout)
        top = max(o["seq"] for o in outcomes)
        recovery = _rows(db, "SELECT * FROM checkpoint WHERE kind = 'recovery'")
        assert len(recovery) == 1 and recovery[0]["head_seq"] == top
        ok = _audit("verify", "--db", db, "--pubkey", pub)
        assert ok.stdout.startswith("ok: ") and "chain intact" in ok.stdout, ok.stdout
        anchored = int(ok.stdout.split("anchored up to seq ")[1].split()[0])
        assert anchored >= top, ok.stdout

        # ctd audit list and audit_list show them.
        listing = _audit("list", "--db", db, "--action", "kill", "--limit", 0).stdout.splitlines()
        assert sum("interrupted: " in line for line in listing) == recorded
        assert sum("kill did not reach it" in line or "gone from the kernel" in line for line in listing) == recorded
        rpc, sid = c.login()
        records = rpc.audit_list(sid, {"action": "kill"}, 200)
        assert len(records) == 200 and all(r["outcome"] == "interrupted" for r in records)
        assert {r["outcome_seq"] for r in records} <= {o["seq"] for o in outcomes}

        # AuditSyslog forwards each interrupted outcome, tied to the chain by seq and hash.
        def interrupted():
            return [e for e in _whole_events(rs)[0] if e["sd"].get("outcome") == "interrupted"]
        events = wait_for(interrupted, timeout=180, interval=0.2, done=lambda es: len({e["sd"]["event"] for e in es})
                          >= recorded, what=f"{recorded} interrupted outcomes at the collector")
        by_seq = {o["seq"]: o for o in outcomes}
        seen = set()
        for e in events:
            sd = e["sd"]
            o = by_seq[int(sd["audit_seq"])]
            assert sd["audit_hash"] == o["hash"] and int(sd["audit_ref_seq"]) == o["ref_seq"]
            assert int(sd["conn_id"]) == o["conn_id"] and sd["recorded_by"] == "AuditSQLite"
            assert sd["kernel"] == ("present" if o["conn_id"] in left else "gone")
            assert sd["reason"] == o["reason"] and e["msgid"] == "outcome"
            seen.add(o["seq"])
        assert seen == set(by_seq)

        # A second restart finds nothing left to settle.
        assert c.stop() == 0
        c2 = ctd(password_file=victim.password_file, password=victim.password, args=args, extra=extra)
        again = _rows(db, "SELECT count(*) AS n FROM audit WHERE action = 'outcome' AND ref_seq BETWEEN ? AND ?",
                      first, last)[0]["n"]
        assert again == recorded
        assert "actions interrupted by the last stop" not in c2.stderr()
        assert _left() == left
    finally:
        if victim is not None and victim.proc.poll() is None:
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(timeout=30)
        rs.stop()
