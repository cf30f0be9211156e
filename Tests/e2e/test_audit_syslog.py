"""AuditSyslog against a real rsyslog (Debian's rsyslogd with its OpenSSL stream driver), started by each test in
this namespace on 127.0.0.1 with a certificate the test makes; rsyslog writes every message it parsed (RFC 5424
fields, its own parse of the structured data) to a file the test reads.

The main test restarts the collector (SIGSTOP, SIGTERM, SIGCONT by PID, then a new rsyslogd on the same port) in
the middle of the delivery of a 10,000-id kill_matching of real `conntrack -I` entries, and checks the guarantee
docs/audit.md states: every event at least once, in order, a resend only of an unconfirmed batch (so at most
batch_events duplicates per interruption, each byte-identical to its first copy), the count received equal to
the count sent (AuditSQLite's row count, loaded beside it), and the killed tuples equal to what `conntrack -L`
showed.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ctdtest import (CTD, assert_fault, conntrack_list, ct_insert, make_password_file, run, toml_str, wait_for)

ROLES = 'default_roles = ["operator"]\n\n[plugin.AuthSHA.roles]\nadmin = ["admin"]\nwatcher = "viewer"\n'
SD_ID = "ctd@32473"
BATCH = 100


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_certificates(d: Path) -> dict:
    """A throwaway CA and a server certificate for 127.0.0.1 (IP SAN), made with openssl(1)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
         "-subj", "/CN=ctd-e2e-syslog-ca", "-days", "2"])
    run(["openssl", "req", *ec, "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"),
         "-subj", "/CN=127.0.0.1"])
    (d / "san.ext").write_text("subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n"
                               "extendedKeyUsage = serverAuth\n")
    run(["openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey",
         str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "server.pem"), "-days", "2",
         "-extfile", str(d / "san.ext")])
    # Another CA, which did not sign the server's certificate.
    run(["openssl", "req", "-x509", *ec, "-keyout", str(d / "other.key"), "-out", str(d / "other-ca.pem"),
         "-subj", "/CN=someone-else", "-days", "2"])
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key", "other_ca": d / "other-ca.pem"}


FIELDS = "%pri%\\t%timereported:::date-rfc3339%\\t%hostname%\\t%app-name%\\t%procid%\\t%msgid%\\t%structured-data%\\t%msg%\\n"


class Rsyslog:
    """rsyslogd -n with its own config, work directory and pid file; TLS (imtcp + ossl) on 127.0.0.1:port and a
    datagram socket (imuxsock) at <dir>/log; every message goes to <dir>/received.log, one line of tab-separated
    RFC 5424 fields as rsyslog parsed them."""

    def __init__(self, d: Path, certs: dict, port: int):
        self.dir = d
        self.port = port
        self.work = d / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.out = d / "received.log"
        self.socket = d / "log"
        self.conf = d / "rsyslog.conf"
        self.proc: subprocess.Popen | None = None
        self.conf.write_text(f"""
global(workDirectory="{self.work}" maxMessageSize="64k"
       defaultNetstreamDriver="ossl" defaultNetstreamDriverCAFile="{certs['ca']}"
       defaultNetstreamDriverCertFile="{certs['cert']}" defaultNetstreamDriverKeyFile="{certs['key']}")
main_queue(queue.timeoutShutdown="60000" queue.size="100000")
module(load="imtcp" streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
module(load="imuxsock" sysSock.use="off")
template(name="fields" type="string" string="{FIELDS}")
ruleset(name="ctd") {{ action(type="omfile" file="{self.out}" template="fields") }}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="ctd")
input(type="imuxsock" socket="{self.socket}" useSpecialParser="off" ruleset="ctd")
""")
        run(["rsyslogd", "-N1", "-f", str(self.conf)])

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        self.stderr = open(self.dir / "rsyslogd.stderr", "ab")
        self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")],
                                     stdout=self.stderr, stderr=self.stderr, stdin=subprocess.DEVNULL)
        wait_for(self._listening, timeout=30, what=f"rsyslogd listening on 127.0.0.1:{self.port} and {self.socket}")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited with {self.proc.returncode}: "
                                 f"{(self.dir / 'rsyslogd.stderr').read_text(errors='replace')}")
        ss = run(["ss", "-ltnH", f"sport = :{self.port}"]).stdout
        return "LISTEN" in ss and self.socket.exists()

    def stop(self, sig=signal.SIGTERM):
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGSTOP:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise AssertionError("rsyslogd did not stop within 90 s of SIGTERM")
        self.stderr.close()

    def count(self) -> int:
        """Lines received so far, reading only what was added since the last call."""
        if not hasattr(self, "_counted"):
            self._counted, self._offset = 0, 0
        if self.out.exists():
            with open(self.out, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            self._offset += len(data)
            self._counted += data.count(b"\n")
        return self._counted

    def lines(self) -> list[str]:
        if not self.out.exists():
            return []
        # Lines end at LF only (str.splitlines would also cut at U+0085, U+2028...); a last line without its LF is
        # still being written.
        return [line.decode() for line in self.out.read_bytes().split(b"\n")[:-1]]


def parse_sd(sd: str) -> tuple[str, dict]:
    """One RFC 5424 SD-ELEMENT `[ID name="value" ...]` with its escapes (\\" \\\\ \\]) undone."""
    assert sd.startswith("[") and sd.endswith("]"), sd
    i = sd.index(" ") if " " in sd else len(sd) - 1
    sd_id, params, pos = sd[1:i], {}, i
    while sd[pos] == " ":
        eq = sd.index("=", pos)
        name = sd[pos + 1:eq]
        assert sd[eq + 1] == '"', sd
        j, value = eq + 2, []
        while sd[j] != '"':
            if sd[j] == "\\" and sd[j + 1] in '"\\]':
                value.append(sd[j + 1])
                j += 2
            else:
                value.append(sd[j])
                j += 1
        assert name not in params, f"{name} twice in {sd}"
        params[name] = "".join(value)
        pos = j + 1
    assert sd[pos:] == "]", sd
    return sd_id, params


def parse(line: str) -> dict:
    pri, ts, host, app, procid, msgid, sd, msg = line.split("\t", 7)
    sd_id, params = parse_sd(sd)
    return {"pri": int(pri), "time": ts, "host": host, "app": app, "procid": procid, "msgid": msgid,
            "sd_id": sd_id, "sd": params, "msg": msg.strip(), "line": line}


def _events(rs: Rsyslog) -> list[dict]:
    return [parse(line) for line in rs.lines()]


def _distinct(rs: Rsyslog) -> int:
    return len({parse(line)["sd"]["event"] for line in rs.lines()})


def _whole_events(rs: Rsyslog) -> tuple[list[dict], list[str]]:
    """The events of every line that parses, and the lines that do not. A collector stopped in the middle of a
    stream may write a torn record; ctd resends what it cannot prove delivered, so each event must still arrive
    whole in another line (the callers check that)."""
    events, torn = [], []
    for line in rs.lines():
        try:
            events.append(parse(line))
        except (ValueError, AssertionError, IndexError):
            torn.append(line)
    return events, torn


def _syslog_section(rs: Rsyslog, certs: dict, queue: Path, **extra) -> str:
    values = {"address": f"tls://127.0.0.1:{rs.port}", "tls_ca_file": str(certs["ca"]), "queue_path": str(queue),
              "hostname": "ctd-e2e", "batch_events": BATCH, "retry_max_seconds": 0.5, "timeout": 5}
    values.update(extra)
    body = "".join(f"{k} = {toml_str(v) if isinstance(v, str) else v}\n" for k, v in values.items())
    return "\n[plugin.AuditSyslog]\n" + body


def _span(row: dict) -> range:
    """The action rows an AuditSQLite row accounts for: an outcome run (ref_seq to ref_last) completes many, each
    with its own message at the collector; any other row is one event."""
    if row["action"] == "outcome" and row.get("ref_last") is not None:
        return range(row["ref_seq"], row["ref_last"] + 1)
    return range(row["seq"], row["seq"] + 1)


def _event_count(rows: list[dict]) -> int:
    """The events AuditSyslog sends for these trail rows: one per row, and one per action an outcome run completes."""
    return sum(len(_span(r)) for r in rows)


def _audit_rows(db: Path) -> list[dict]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM audit ORDER BY seq")]
    finally:
        con.close()


def _login_eventually(c, user, password):
    def attempt():
        try:
            return c.login(user, password)
        except Exception:
            return None
    return wait_for(attempt, timeout=5, interval=0.2, what=f"login of {user}")


def _health(rpc, sid, name="AuditSyslog") -> str:
    return next(p["health"] for p in rpc.status(sid)["plugins"] if p["name"] == name)


@pytest.fixture
def collector(tmp_path):
    certs = make_certificates(tmp_path / "pki")
    rs = Rsyslog(tmp_path / "rsyslog", certs, _free_port())
    rs.start()
    yield rs, certs
    rs.stop()


def _late_ranges(numbers: list[int]) -> list[range]:
    """The events whose first copy came after the first copy of a later event, as ranges of consecutive numbers."""
    late, highest = [], 0
    for n in dict.fromkeys(numbers):
        if n < highest:
            late.append(n)
        highest = max(highest, n)
    ranges = []
    for n in sorted(late):
        if ranges and ranges[-1].stop == n:
            ranges[-1] = range(ranges[-1].start, n + 1)
        else:
            ranges.append(range(n, n + 1))
    return ranges


def test_lateRanges_namesTheEventsAResentBatchFilledIn():
    assert _late_ranges([1, 2, 3, 4]) == []
    assert _late_ranges([1, 2, 5, 6, 3, 4, 5, 6, 7]) == [range(3, 5)]
    assert _late_ranges([1, 4, 2, 3, 4, 5, 7, 6, 7]) == [range(2, 4), range(6, 7)]


def _fill(n: int) -> list[dict]:
    """n UDP entries 10.80.x.y:port -> 10.81.0.1:53 through `conntrack -R` (conntrack -I lines, one process)."""
    lines = [f"-I -p udp -s 10.80.{i // 250}.{i % 250 + 1} -d 10.81.0.1 --sport {20000 + i % 30000} --dport 53 "
             f"-t 900 -m {i % 7}" for i in range(n)]
    run(["conntrack", "-R", "-"], input="\n".join(lines) + "\n", timeout=300)
    entries = [e for e in conntrack_list("-p", "udp", "-d", "10.81.0.1") if e["dst"] == "10.81.0.1"]
    assert len(entries) == n, f"conntrack -L shows {len(entries)} of the {n} entries made"
    return entries


def test_forwarding_acrossACollectorRestartInABulkKill_deliversEverySentEventAtLeastOnce(ctd, collector, tmp_path):
    rs, certs = collector
    db = tmp_path / "audit" / "audit.db"
    db.parent.mkdir()
    extra = (ROLES + f"\n[plugin.AuditSQLite]\ndatabase = {toml_str(str(db))}\n"
             + _syslog_section(rs, certs, tmp_path / "queue" / "audit-syslog.queue"))
    c = ctd(args=["--plugin", "AuditSQLite", "--plugin", "AuditSyslog"], extra=extra)
    rpc, sid = c.login()
    wrong = "wrong-" + c.password[::-1]
    assert_fault(1, c.proxy().login, "admin", wrong)
    make_password_file(c.password_file, "watcher", "pw-watcher")
    w_rpc, w_sid = _login_eventually(c, "watcher", "pw-watcher")
    one = ct_insert("tcp", "10.82.0.1", "10.82.0.2", 40000, 443, timeout=600, state="ESTABLISHED", mark=5)
    wait_for(lambda: rpc.view(sid, {"id": str(one["id"])}, "", "ASC", 0, 1)["total"] == 1, timeout=10,
             what="the tcp entry in view")
    assert_fault(3, w_rpc.kill, w_sid, [str(one["id"])])
    rpc.change(sid, "mark", str(one["id"]), 77)
    assert rpc.kill(sid, [str(one["id"])])["killed"] == 1

    entries = _fill(10_000)
    by_id = {e["id"]: e for e in entries}
    wait_for(lambda: rpc.view(sid, {"orig_dst": "10.81.0.1"}, "", "ASC", 0, 1)["total"], timeout=60,
             done=lambda t: t == 10_000, what="10,000 entries in view")
    wait_for(lambda: _distinct(rs), timeout=60, done=lambda n: n == _event_count(_audit_rows(db)),
             what="every event so far at the collector")
    before = len(rs.lines())
    assert rs.count() == before

    # The bulk kill; the collector stops while its events are being delivered. AuditSyslog pauses delivery while a
    # bulk action is in the call (docs/audit.md, "Forwarding made cheaper"), so the 20,000 events flow from the end
    # of the call's recording on: the collector is stopped in the middle of that stream, whether the call has
    # returned by then or not.
    preview = rpc.kill_preview(sid, {"orig_dst": "10.81.0.1"})
    assert preview["total"] == 10_000
    result = {}
    killer = threading.Thread(target=lambda: result.update(rpc.kill_matching(sid, preview["token"], 10_000)))
    killer.start()
    # The collector is frozen (SIGSTOP) once a quarter of the kill's 20,000 events arrived, then stopped (SIGTERM).
    wait_for(rs.count, timeout=120, interval=0.002, done=lambda n: n >= before + 5000,
             what="the first quarter of the bulk kill's events")
    rs.stop(signal.SIGSTOP)
    at_stop = len(rs.lines())
    rs.stop(signal.SIGTERM)
    killer.join(timeout=120)
    assert not killer.is_alive()
    assert result["killed"] == 10_000 and not result["not_found"] and not result["failed"], result
    assert at_stop < before + 20_000, "the whole bulk kill reached the collector before it could be stopped"
    left = [e for e in conntrack_list("-p", "udp", "-d", "10.81.0.1") if e["dst"] == "10.81.0.1"]
    assert left == [], f"{len(left)} entries still in conntrack -L after the kill"

    # While the collector is away: the health says so, and new events wait in the queue.
    h = wait_for(lambda: _health(rpc, sid), timeout=60, done=lambda s: "cannot deliver" in s,
                 what="AuditSyslog's health to show the collector away")
    assert f"tls://127.0.0.1:{rs.port}" in h and "events queued" in h, h
    rpc2, sid2 = c.login()
    rs.start()
    sent = _event_count(_audit_rows(db))
    try:
        wait_for(lambda: len({e["sd"]["event"] for e in _whole_events(rs)[0]}), timeout=180, interval=0.2,
                 done=lambda n: n >= sent, what=f"all {sent} events at the restarted collector")
    except AssertionError:
        got = sorted({int(e["sd"]["event"]) for e in _whole_events(rs)[0]})
        missing = sorted(set(range(got[0], got[0] + sent)) - set(got))
        raise AssertionError(f"{len(missing)} of {sent} events never arrived: {missing[:5]}...{missing[-5:]} "
                             f"(collector stopped at line {at_stop}; ctd log: {c.stderr()[-3000:]})")
    assert wait_for(lambda: _health(rpc, sid), timeout=30, done=lambda s: s == "ok") == "ok"

    events, torn = _whole_events(rs)
    # One interruption of the collector: at most the records it was writing when it stopped are torn.
    assert len(torn) <= 2, f"{len(torn)} torn records at the collector: {[t[:200] for t in torn[:3]]}"
    rows = _audit_rows(db)
    assert _event_count(rows) == sent, "AuditSQLite wrote rows after the count was taken"
    # Count sent (one message per AuditSQLite row, and per action an outcome run completes) equals count received;
    # nothing unknown arrived.
    numbers = [int(e["sd"]["event"]) for e in events]
    distinct = sorted(set(numbers))
    assert len(distinct) == sent and distinct == list(range(distinct[0], distinct[0] + sent)), \
        f"{len(distinct)} distinct events received for {sent} sent"
    # At least once, in order: ctd sends every event in sequence, and the first copies arrive in sequence except
    # where the collector itself lost part of a batch it was reading when its session ended (rsyslog may drop a
    # few records in the middle of a batch and keep the rest; measured, docs/audit.md): those events come with the
    # resend of that batch, so each such range lies within two batches, and all of them were resent.
    late = _late_ranges(numbers)
    assert all(len(r) <= 2 * BATCH for r in late), f"events arrived out of order: {late}"
    copies = collections.defaultdict(set)
    for e in events:
        copies[e["sd"]["event"]].add(e["line"])
    assert all(len(v) == 1 for v in copies.values()), "a resent event differs from its first copy"
    duplicates = len(numbers) - len(distinct)
    assert duplicates <= 2 * BATCH, f"{duplicates} duplicates, more than two batches ({BATCH} each)"
    assert c.stop() == 0
    m = re.search(r"AuditSyslog: stopped; (\d+) events delivered \((\d+) of them resent\), 0 left", c.stderr())
    assert m, c.stderr()[-3000:]
    # Stopping closes the test's sessions, which is audited too: compare with the trail as it is now.
    assert int(m.group(1)) == _event_count(_audit_rows(db)) and duplicates <= int(m.group(2)), m.group(0)
    assert sum(len(r) for r in late) <= int(m.group(2)), f"events out of order that were not resent: {late}"
    print(f"sent {sent}, received {len(numbers)} ({duplicates} duplicates, {m.group(2)} retransmissions), "
          f"collector stopped at {at_stop} lines; {len(torn)} torn records: {[t[:120] for t in torn]}")

    # Each message as rsyslog parsed it: RFC 5424 header, the SD-ID, the hook's fields.
    for e in events:
        assert e["sd_id"] == SD_ID and e["app"] == "ctd" and e["host"] == "ctd-e2e"
        assert e["procid"] == str(c.proc.pid) and e["pri"] // 8 == 10
        assert e["msgid"] in ("login", "kill", "change", "denied", "outcome"), e["line"]
    assert wrong not in rs.out.read_text() and c.password not in rs.out.read_text()

    # The same actions as AuditSQLite recorded, field by field.
    def key(action, user, conn, outcome):
        return (action, user, None if conn is None else str(conn), outcome)
    by_seq = {r["seq"]: r for r in rows}
    # An outcome run stands for one outcome of each action it completes (the connection is in the action's row).
    from_db = collections.Counter(
        key("outcome" if r["action"] == "outcome" else r["action"], r["user"],
            by_seq[seq]["conn_id"] if r["action"] == "outcome" and r["ref_last"] is not None else r["conn_id"],
            r["outcome"])
        for r in rows for seq in _span(r))
    from_syslog = collections.Counter(
        key(e["msgid"], e["sd"]["user"], e["sd"].get("conn_id"), e["sd"]["outcome"])
        for e in {e["sd"]["event"]: e for e in events}.values())
    assert from_syslog == from_db

    unique = {e["sd"]["event"]: e for e in events}
    # AuditSQLite comes before AuditSyslog: each message names its trail row (docs/audit.md), one message per row,
    # and one per action an outcome run completes, each naming the run's row.
    assert collections.Counter(int(e["sd"]["audit_seq"]) for e in unique.values()) == {
        r["seq"]: len(_span(r)) for r in rows}
    for e in unique.values():
        r = by_seq[int(e["sd"]["audit_seq"])]
        assert e["sd"]["audit_hash"] == r["hash"] and e["sd"]["user"] == r["user"], (e["line"], r)
        assert (e["msgid"] == "outcome") == (r["action"] == "outcome") and e["sd"]["outcome"] == r["outcome"]
        if r["action"] == "outcome":
            assert int(e["sd"]["audit_ref_seq"]) in range(r["ref_seq"], (r["ref_last"] or r["ref_seq"]) + 1)
    bulk = [e for e in unique.values() if e["sd"].get("procedure") == "kill_matching"]
    pending = [e for e in bulk if e["msgid"] == "kill"]
    outcomes = [e for e in bulk if e["msgid"] == "outcome"]
    assert len(pending) == 10_000 and len(outcomes) == 10_000
    assert {int(e["sd"]["conn_id"]) for e in pending} == set(by_id)
    assert all(e["sd"]["outcome"] == "succeeded" for e in outcomes)
    refs = {e["sd"]["event"] for e in pending}
    assert {e["sd"]["ref"] for e in outcomes} == refs
    for e in pending:
        sd, k = e["sd"], by_id[int(e["sd"]["conn_id"])]
        assert (sd["user"], sd["roles"], sd["client"], sd["outcome"]) == ("admin", "admin", "127.0.0.1", "pending")
        assert (sd["l3proto"], sd["l4proto"]) == ("ipv4", "17")
        assert (sd["orig_src"], sd["orig_dst"], int(sd["orig_sport"]), int(sd["orig_dport"])) == (
            k["src"], k["dst"], k["sport"], k["dport"])
        assert (sd["repl_src"], sd["repl_dst"], int(sd["repl_sport"]), int(sd["repl_dport"])) == (
            k["repl_src"], k["repl_dst"], k["repl_sport"], k["repl_dport"])
        assert int(sd["mark"]) == k["mark"]

    logins = collections.Counter((e["sd"]["user"], e["sd"]["outcome"]) for e in unique.values()
                                 if e["sd"]["action"] == "login" and e["msgid"] == "outcome")
    # Two good logins of admin, the wrong password, watcher's login (retried until AuthSHA reread its file).
    assert logins[("admin", "succeeded")] == 2 and logins[("admin", "failed")] == 1, logins
    assert logins[("watcher", "succeeded")] == 1, logins
    failed = next(e for e in unique.values() if e["msgid"] == "outcome" and e["sd"]["outcome"] == "failed"
                  and e["sd"]["action"] == "login")
    assert failed["pri"] % 8 == 4 and failed["sd"]["client"] == "127.0.0.1" and "reason" in failed["sd"]
    denied = [e for e in unique.values() if e["msgid"] == "denied"]
    assert len(denied) == 1 and denied[0]["sd"]["user"] == "watcher" and denied[0]["sd"]["procedure"] == "kill"
    change = next(e for e in unique.values() if e["msgid"] == "change")
    assert (change["sd"]["field"], change["sd"]["old_value"], change["sd"]["new_value"]) == ("mark", "5", "77")
    assert change["sd"]["conn_id"] == str(one["id"]) and change["sd"]["l4proto"] == "6"


def test_queueFull_withRefuse_refusesTheKillAndTheEntryStays(ctd, collector, tmp_path):
    rs, certs = collector
    rs.stop()
    extra = ROLES + _syslog_section(rs, certs, tmp_path / "q" / "queue", queue_max_events=5, queue_full="refuse")
    c = ctd(args=["--plugin", "AuditSyslog"], extra=extra)
    rpc, sid = c.login()  # 2 events queued (the collector is down)
    entries = [ct_insert("udp", "10.83.0.1", "10.83.0.2", 5000 + i, 53, timeout=600) for i in range(3)]
    wait_for(lambda: rpc.view(sid, {"orig_dst": "10.83.0.2"}, "", "ASC", 0, 1)["total"] == 3, timeout=10,
             what="3 entries in view")
    assert rpc.kill(sid, [str(entries[0]["id"])])["killed"] == 1  # 4 queued
    # Two kills at once do not fit (4 + 2 > 5): refused before the kernel is touched, fault 7.
    assert_fault(7, rpc.kill, sid, [str(e["id"]) for e in entries[1:]], contains="AuditSyslog")
    assert len([e for e in conntrack_list("-d", "10.83.0.2") if e["dst"] == "10.83.0.2"]) == 2
    assert "queue" in _health(rpc, sid) and "full" in _health(rpc, sid)
    rs.start()
    # Everything queued arrives; the refused kill was never queued, so it is not there. The next action that fits
    # clears the health.
    wait_for(lambda: _distinct(rs), timeout=60, done=lambda n: n >= 4, what="the queued events")
    c.login()
    wait_for(lambda: _distinct(rs), timeout=60, done=lambda n: n >= 6, what="the new login's events")
    wait_for(lambda: _health(rpc, sid), timeout=30, done=lambda s: s == "ok", what="health ok after delivery")
    kills = [e for e in _events(rs) if e["msgid"] == "kill"]
    assert [e["sd"]["conn_id"] for e in kills] == [str(entries[0]["id"])]


def test_queueFull_withDropOldest_dropsCountsAndLogs(ctd, collector, tmp_path):
    rs, certs = collector
    rs.stop()
    extra = ROLES + _syslog_section(rs, certs, tmp_path / "q" / "queue", queue_max_events=5,
                                    queue_full="drop_oldest")
    c = ctd(args=["--plugin", "AuditSyslog"], extra=extra)
    rpc, sid = c.login()
    entries = [ct_insert("udp", "10.84.0.1", "10.84.0.2", 6000 + i, 53, timeout=600) for i in range(4)]
    wait_for(lambda: rpc.view(sid, {"orig_dst": "10.84.0.2"}, "", "ASC", 0, 1)["total"] == 4, timeout=10,
             what="4 entries in view")
    # login (2 events), then the kill: 4 pending (one dropped), 4 outcomes (4 more dropped).
    r = rpc.kill(sid, [str(e["id"]) for e in entries])
    assert r["killed"] == 4
    h = _health(rpc, sid)
    assert "5 events dropped" in h and "drop_oldest" in h, h
    assert "queue full: dropped" in c.stderr()
    rs.start()
    wait_for(lambda: _distinct(rs), timeout=60, done=lambda n: n >= 5, what="the 5 kept events")
    got = [e for e in _events(rs)]
    # The newest five survive: the last kill's pending event and the four outcomes.
    assert [e["msgid"] for e in got] == ["kill"] + ["outcome"] * 4
    assert {e["sd"]["action"] for e in got} == {"kill"} and got[0]["sd"]["conn_id"] == str(entries[3]["id"])


def test_localSocket_deliversToRsyslogsDatagramInput(ctd, collector, tmp_path):
    rs, certs = collector
    extra = (f"\n[plugin.AuditSyslog]\naddress = {toml_str('unix:' + str(rs.socket))}\n"
             f"queue_path = {toml_str(str(tmp_path / 'q' / 'queue'))}\nhostname = \"ctd-local\"\nfacility = \"local3\"\n")
    c = ctd(args=["--plugin", "AuditSyslog"], extra=extra)
    rpc, sid = c.login()
    e = ct_insert("udp", "10.85.0.1", "10.85.0.2", 7000, 53, timeout=600)
    wait_for(lambda: rpc.view(sid, {"id": str(e["id"])}, "", "ASC", 0, 1)["total"] == 1, timeout=10,
             what="the entry in view")
    assert rpc.kill(sid, [str(e["id"])])["killed"] == 1
    got = wait_for(lambda: _events(rs), timeout=60, done=lambda ev: len(ev) >= 4, what="4 events over /dev/log")
    assert [g["msgid"] for g in got] == ["login", "outcome", "kill", "outcome"]
    kill = got[2]
    assert kill["host"] == "ctd-local" and kill["pri"] // 8 == 19 and kill["sd_id"] == SD_ID
    assert (kill["sd"]["conn_id"], kill["sd"]["orig_src"], kill["sd"]["orig_sport"]) == (str(e["id"]), "10.85.0.1", "7000")
    assert c.password not in rs.out.read_text()


def test_collectorCertificateFromAnotherCA_isRefusedAndEventsWait(ctd, collector, tmp_path):
    rs, certs = collector
    extra = ROLES + _syslog_section(rs, {**certs, "ca": certs["other_ca"]}, tmp_path / "q" / "queue")
    c = ctd(args=["--plugin", "AuditSyslog"], extra=extra)
    rpc, sid = c.login()
    h = wait_for(lambda: _health(rpc, sid), timeout=30, done=lambda s: "certificate" in s, what="a certificate error")
    assert "refused" in h and "events queued" in h, h
    assert rs.lines() == []


def test_pluginsList_withTheSampleConfig_andBadSections(tmp_path):
    sample = (Path(__file__).resolve().parents[2] / "Plugins" / "AuditSyslog" / "auditsyslog.sample.toml").read_text()
    assert 'queue_full = "refuse"' in sample and '"/var/lib/ctd/audit-syslog.queue"' in sample
    password_file = tmp_path / "passwd"
    make_password_file(password_file, "admin", "pw-sample")
    cfg = tmp_path / "ctd.toml"
    head = f"[plugin.AuthSHA]\npassword_file = {toml_str(str(password_file))}\n\n"
    cfg.write_text(head + sample.replace("/var/lib/ctd/audit-syslog.queue", str(tmp_path / "queue")))
    p = subprocess.run([str(CTD), "plugins", "list", "--config", str(cfg), "--plugin", "AuditSyslog"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in p.stdout.splitlines() if "\t" in line}
    assert rows["AuditSyslog"][1:3] == ["hook.audit_syslog", "1.0.0"] and rows["AuditSyslog"][4] == "action_hook"
    assert oct((tmp_path / "queue").stat().st_mode & 0o777) == "0o600"
    for section, complaint in [
        ('address = "udp://127.0.0.1:514"', "'address'"),
        ('address = "tls://127.0.0.1:6514"', "tls_ca_file"),
        ('queue_full = "block"', "'queue_full'"),
        ('sd_id = "ctd"', "'sd_id'"),
        ('colour = "red"', "unknown key 'colour'"),
    ]:
        cfg.write_text(head + f"[plugin.AuditSyslog]\nqueue_path = {toml_str(str(tmp_path / 'q2'))}\n{section}\n")
        p = subprocess.run([str(CTD), "plugins", "list", "--config", str(cfg), "--plugin", "AuditSyslog"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and complaint in p.stdout + p.stderr, (section, p.stdout + p.stderr)


def test_queue_survivesARestartOfCtd_andIsDeliveredByTheNextOne(ctd, collector, tmp_path):
    rs, certs = collector
    rs.stop()
    queue = tmp_path / "q" / "queue"
    extra = _syslog_section(rs, certs, queue, drain_seconds=0.5)
    first = ctd(args=["--plugin", "AuditSyslog"], extra=extra)
    first.login()
    e = ct_insert("udp", "10.86.0.1", "10.86.0.2", 8000, 53, timeout=600)
    rpc, sid = first.login()
    wait_for(lambda: rpc.view(sid, {"id": str(e["id"])}, "", "ASC", 0, 1)["total"] == 1, timeout=10,
             what="the entry in view")
    assert rpc.kill(sid, [str(e["id"])])["killed"] == 1
    assert first.stop() == 0
    m = re.search(r"stopped; 0 events delivered \(0 of them resent\), (\d+) left in", first.stderr())
    assert m and int(m.group(1)) >= 6, first.stderr()[-2000:]
    left = int(m.group(1))
    rs.start()
    second = ctd(args=["--plugin", "AuditSyslog"], extra=extra)
    assert f"({left} events queued from before" in second.stderr()
    got = wait_for(lambda: _events(rs), timeout=60, done=lambda ev: len(ev) >= left, what="the first ctd's events")
    assert [g["procid"] for g in got[:left]] == [str(first.proc.pid)] * left
    assert sorted(int(g["sd"]["event"]) for g in got[:left]) == list(range(1, left + 1))
    assert any(g["msgid"] == "kill" and g["sd"]["conn_id"] == str(e["id"]) for g in got)


def test_start_whenAPluginAfterItFails_stopsTheSenderBeforeExiting(ctd, collector, tmp_path):
    """A plugin configured after AuditSyslog fails: ctd exits 1 with the reason, and AuditSyslog, already sending, is
    stopped first (its stop line is logged); the process does not end with the sender thread still running."""
    rs, certs = collector
    extra = _syslog_section(rs, certs, tmp_path / "q" / "queue") + '\n[plugin.UIDResolver]\ncolour = "red"\n'
    with pytest.raises(AssertionError) as failed:
        ctd(args=["--plugin", "AuditSyslog", "--plugin", "UIDResolver"], extra=extra)
    text = str(failed.value)
    assert "ctd exited with 1 before listening" in text, text
    assert "unknown key 'colour'" in text and "AuditSyslog: stopped;" in text, text
