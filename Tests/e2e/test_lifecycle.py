"""Lifecycle: SIGTERM drains (a bulk kill in flight is completed and audited whole), SIGHUP reloads what can change
without dropping a client (roles, the password file, the hide list, the log level, the TLS certificate), a reload
that fails keeps the old configuration, and a reload that changes nothing keeps every session.

Every wait polls a condition (a line in ctd's stderr, an answer, rows of the audit database) with a long deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import collections
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
import xmlrpc.client
from pathlib import Path

from ctdtest import (CTD, assert_fault, conntrack_list, ct_fill, ct_insert, ids_of, make_password_file, run,
                     toml_str, view_all, wait_for, write_config)

DEADLINE = 60.0
# An id no entry has: an operator's kill of it answers fault 4 (no such connection), a viewer's fault 3.
ABSENT_ID = "4000000000"
LOOPBACK_HIDE = ["127.0.0.0/8", "::1/128"]


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def _log_since(c, offset: int) -> str:
    return c.stderr()[offset:]


def _wait_log(c, needle: str, offset: int = 0, timeout: float = DEADLINE) -> str:
    """Waits until ctd's stderr (from offset on) contains needle; returns that part of the log."""
    def look():
        if c.proc.poll() is not None:
            raise AssertionError(f"ctd exited with {c.proc.returncode} while waiting for {needle!r}\n"
                                 f"--- stderr ---\n{c.stderr()[-8000:]}")
        text = _log_since(c, offset)
        return text if needle in text else None
    return wait_for(look, timeout=timeout, interval=0.05, what=f"{needle!r} in ctd's log")


def _hup(c, needle: str) -> str:
    """SIGHUP by pid; waits for needle in the log written after it; returns that log."""
    offset = len(c.stderr())
    os.kill(c.proc.pid, signal.SIGHUP)
    _wait_log(c, "SIGHUP: reloading the configuration", offset)
    return _wait_log(c, needle, offset)


def _rewrite(c, **config):
    """Writes ctd's config file again (the same helper start_ctd used, same password file)."""
    write_config(c.config_path, password_file=c.password_file, **config)


def _kill_fault_code(rpc, sid) -> int:
    """The fault a kill of an absent id answers: 4 for an operator, 3 for a viewer."""
    try:
        result = rpc.kill(sid, [ABSENT_ID])
    except xmlrpc.client.Fault as f:
        return f.faultCode
    raise AssertionError(f"kill of absent id {ABSENT_ID} answered {result!r}")


def _total(rpc, sid, filters=None) -> int:
    return rpc.view(sid, filters or {}, "", "ASC", 0, 0)["total"]


def _make_cert(directory: Path, cn: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    crt, key = directory / "cert.pem", directory / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)])
    key.chmod(0o600)
    return crt, key


def _der(pem_path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_path.read_text())


def _xmlrpc_on(conn: http.client.HTTPConnection, method: str, *params):
    """One XML-RPC call on an existing (keep-alive) HTTP connection; returns the answer."""
    conn.request("POST", "/RPC2", body=xmlrpc.client.dumps(params, method).encode(),
                 headers={"Content-Type": "text/xml"})
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, f"{method}: HTTP {r.status} {body[:300]!r}"
    assert (r.getheader("Connection") or "").lower() != "close", f"{method}: ctd closed the keep-alive connection"
    return xmlrpc.client.loads(body)[0][0]


# ---------------------------------------------------------------------------------------------------------------
# 1. SIGTERM during a real audited bulk kill


BULK = 20000
BULK_BASE = "10.40.0.0"
BULK_SRC = "10.40.0.1"  # ctd-fill --base 10.40.0.0: UDP 10.40.0.1:1024+i -> 11.40.0.1:53


def _audit_rows(db: Path, sql: str, *args):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def _pending_kills(db: Path) -> int:
    try:
        return _audit_rows(db, "SELECT count(*) FROM audit WHERE action = 'kill'")[0][0]
    except sqlite3.OperationalError:
        return 0  # busy or not yet created: poll again


def _bulk_count() -> int:
    return len(conntrack_list("-p", "udp", "-s", BULK_SRC))


def test_sigterm_duringAuditedBulkKill_killFinishesWholeAuditedAndCtdExitsZero(ctd, tmp_path):
    db = tmp_path / "audit" / "audit.db"
    db.parent.mkdir()
    c = ctd(args=["--plugin", "AuditSQLite"], idle_timeout=600, hide=LOOPBACK_HIDE,
            extra=f"\n[plugin.AuditSQLite]\ndatabase = {toml_str(str(db))}\n")
    rpc, sid = c.login()
    ct_fill("create", BULK, "--base", BULK_BASE, "--timeout", 600)
    entries = conntrack_list("-p", "udp", "-s", BULK_SRC)
    assert len(entries) == BULK
    ids = [str(e["id"]) for e in entries]
    # Ids are random 32-bit values: among 20,000 two share one about once in 20 runs, and such an id is refused as
    # ambiguous (both entries stay), by design.
    counts = collections.Counter(ids)
    shared = {i for i, n in counts.items() if n > 1}
    expected_killed = sum(1 for i in ids if i not in shared)
    wait_for(lambda: _total(rpc, sid, {"orig_src": BULK_SRC}), timeout=DEADLINE, interval=0.2,
             done=lambda t: t == BULK, what=f"the {BULK} entries in view")
    before = _bulk_count()
    assert before == BULK

    answer: dict = {}

    def bulk_kill():
        try:
            answer["result"] = c.proxy().kill(sid, ids)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            answer["error"] = e

    killer = threading.Thread(target=bulk_kill, daemon=True)
    killer.start()
    # The pending rows are written in one transaction before the kernel is touched: SIGTERM as soon as they show.
    wait_for(lambda: _pending_kills(db), timeout=DEADLINE, interval=0.002, what="the kill's pending audit rows")
    sigterm_at = time.time()
    os.kill(c.proc.pid, signal.SIGTERM)

    killer.join(timeout=DEADLINE)
    assert not killer.is_alive(), "the kill got no answer after SIGTERM"
    assert "error" not in answer, f"the kill in flight at SIGTERM failed: {answer.get('error')!r}"
    result = answer["result"]
    try:
        rc = c.proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"ctd did not exit after SIGTERM\n{c.stderr()[-8000:]}") from None
    assert rc == 0, f"ctd exited {rc} after SIGTERM\n{c.stderr()[-8000:]}"

    # The kill ran whole: every id killed, and the kernel lost exactly these entries.
    after = _bulk_count()
    assert result["killed"] == expected_killed, {k: v for k, v in result.items() if k != "killed_ids"}
    assert set(result["killed_ids"]) == set(ids) - shared and len(result["killed_ids"]) == expected_killed
    assert result["not_found"] == [] and result["failed"] == [] and set(result["ambiguous"]) == shared
    assert before - after == result["killed"], f"conntrack went from {before} to {after}"

    # Every pending kill row is completed by exactly one outcome row: its own (ref_seq = its seq) or a run's
    # (ref_seq <= its seq <= ref_last): nothing cut between kernel and audit.
    kills = _audit_rows(db, "SELECT seq, conn_id, outcome FROM audit WHERE action = 'kill' ORDER BY seq")
    assert len(kills) == expected_killed  # an ambiguous id reaches no hook
    assert all(outcome == "pending" for _, _, outcome in kills)
    assert {str(conn_id) for _, conn_id, _ in kills} == set(ids) - shared
    outcomes = _audit_rows(db, "SELECT ref_seq, coalesce(ref_last, ref_seq), outcome FROM audit "
                               "WHERE action = 'outcome'")
    covering = {}
    for first, last, outcome in outcomes:
        for seq in range(first, last + 1):
            covering.setdefault(seq, []).append(outcome)
    orphans = [seq for seq, _, _ in kills if seq not in covering]
    assert not orphans, f"{len(orphans)} kill rows have no outcome"
    doubled = [seq for seq, found in covering.items() if len(found) > 1]
    assert not doubled, f"{len(doubled)} action rows have more than one outcome"
    succeeded = sum(1 for seq, _, _ in kills if covering[seq] == ["succeeded"])
    assert succeeded == result["killed"] == before - after
    # The kill of thousands that all went takes a handful of outcome rows (runs), not one per connection.
    kill_seqs = {seq for seq, _, _ in kills}
    assert len([o for o in outcomes if o[0] in kill_seqs]) < len(kills) / 100
    # The kill was still running when SIGTERM came: the listener stopped with it in flight, and its outcomes were
    # written after the signal.
    last_outcome = _audit_rows(db, "SELECT max(time) FROM audit WHERE action = 'outcome'")[0][0]
    assert last_outcome >= sigterm_at, (last_outcome, sigterm_at)

    verify = subprocess.run([str(CTD), "audit", "verify", "--db", str(db)], capture_output=True, text=True,
                            timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("ok: "), verify.stdout

    # The shutdown order, in the log.
    log = c.stderr()
    order = ["no longer accepting connections", "conntrack threads stopped", "plugins shut down", "ctd stopped"]
    positions = [log.find(line) for line in order]
    assert all(p >= 0 for p in positions), f"missing shutdown lines {order} in\n{log[-4000:]}"
    assert positions == sorted(positions), f"shutdown out of order: {list(zip(order, positions))}\n{log[-4000:]}"
    assert "no longer accepting connections; 1 calls in flight" in log, log[-4000:]
    kill_done = log.find(f"kill by admin from 127.0.0.1: {expected_killed} killed")
    assert positions[0] < kill_done < positions[1], "the kill did not finish between the drain's start and its end"
    assert "shutting down" not in str(result)


# ---------------------------------------------------------------------------------------------------------------
# 2. SIGHUP reloads


def test_sighup_roles_newLoginGetsNewDefaultRole_andTheSessionThatLostItsRoleEnds(ctd):
    c = ctd(idle_timeout=600, hide=LOOPBACK_HIDE, extra='default_roles = ["operator"]\n')
    old_rpc, old_sid = c.login()
    assert _kill_fault_code(old_rpc, old_sid) == 4  # an operator: the kill ran and found nothing
    e = ct_insert("udp", "10.31.0.1", "10.31.0.2", 4000, 53, timeout=300)
    wait_for(lambda: _total(old_rpc, old_sid, {"orig_src": "10.31.0.1"}), timeout=DEADLINE, done=lambda t: t == 1,
             what="the entry in view")

    _rewrite(c, idle_timeout=600, hide=LOOPBACK_HIDE, extra='default_roles = ["viewer"]\n')
    log = _hup(c, "reload: AuthSHA: default_roles operator -> viewer")
    assert "reload failed" not in log and "next restart" not in log, log

    new_rpc, new_sid = c.login()
    f = assert_fault(3, new_rpc.kill, new_sid, [str(e["id"])])
    assert f.faultCode == 3
    assert [x["id"] for x in new_rpc.view(new_sid, {"orig_src": "10.31.0.1"}, "", "ASC", 0, 10)["connections"]] \
        == [str(e["id"])]
    # The operator session opened before the reload lost its role: the reload ended it (issue 8), and said so.
    assert "session of admin (operator) from 127.0.0.1 ended" in log, log
    assert_fault(2, old_rpc.view, old_sid, {"orig_src": "10.31.0.1"}, "", "ASC", 0, 10)


def test_sighup_passwordFileAndRoles_newUserLogsInWithTheGivenRole(ctd):
    c = ctd(idle_timeout=600, hide=LOOPBACK_HIDE, extra='default_roles = ["viewer"]\n')
    admin_rpc, admin_sid = c.login()
    assert _kill_fault_code(admin_rpc, admin_sid) == 3  # admin is a viewer (default_roles)
    assert_fault(1, c.proxy().login, "carol", "pw-carol")

    make_password_file(c.password_file, "carol", "pw-carol")
    _rewrite(c, idle_timeout=600, hide=LOOPBACK_HIDE,
             extra='default_roles = ["viewer"]\n\n[plugin.AuthSHA.roles]\ncarol = ["operator"]\n')
    log = _hup(c, "reload: AuthSHA: roles")
    assert "reload: AuthSHA: users in " in log and ": 1 -> 2" in log, log
    assert "carol=operator" in log, log

    carol_rpc, carol_sid = c.login("carol", "pw-carol")
    assert _kill_fault_code(carol_rpc, carol_sid) == 4  # an operator
    e = ct_insert("udp", "10.32.0.1", "10.32.0.2", 4000, 53, timeout=300)
    wait_for(lambda: _total(carol_rpc, carol_sid, {"orig_src": "10.32.0.1"}), timeout=DEADLINE,
             done=lambda t: t == 1, what="the entry in view")
    assert carol_rpc.kill(carol_sid, [str(e["id"])])["killed"] == 1
    assert not conntrack_list("-p", "udp", "-s", "10.32.0.1")
    # Users not named in roles keep the default role; the old session is still there.
    assert _kill_fault_code(*c.login()) == 3
    assert _kill_fault_code(admin_rpc, admin_sid) == 3


def test_sighup_hideList_hidesThenResyncBringsBack(ctd):
    c = ctd(idle_timeout=600, hide=LOOPBACK_HIDE)
    rpc, sid = c.login()
    hidden_later = [ct_insert("udp", "10.9.0.1", "10.9.1.1", 5000 + i, 53, timeout=600) for i in range(3)]
    hidden_later.append(ct_insert("tcp", "10.8.0.1", "10.9.0.7", 5100, 80, timeout=600, state="ESTABLISHED"))
    shown = [ct_insert("udp", "10.19.0.1", "10.19.0.2", 6000 + i, 53, timeout=600) for i in range(2)]
    everything = ids_of({"id": e["id"]} for e in hidden_later + shown)
    wait_for(lambda: ids_of(view_all(rpc, sid)), timeout=DEADLINE, done=lambda s: s == everything,
             what="all six entries in view")

    _rewrite(c, idle_timeout=600, hide=[*LOOPBACK_HIDE, "10.9.0.0/16"])
    log = _hup(c, "reload: hidden blocks: 127.0.0.0/8, ::1/128, 10.9.0.0/16")
    assert "reload failed" not in log
    visible = ids_of({"id": e["id"]} for e in shown)
    wait_for(lambda: ids_of(view_all(rpc, sid)), timeout=DEADLINE, done=lambda s: s == visible,
             what="only the entries outside 10.9.0.0/16 in view")
    assert _total(rpc, sid) == len(shown)
    # Hidden entries are never touched either.
    assert_fault(4, rpc.kill, sid, [str(hidden_later[0]["id"])])
    # They are still in the kernel.
    in_kernel = ids_of(conntrack_list("-s", "10.9.0.1")) | ids_of(conntrack_list("-d", "10.9.0.7"))
    assert in_kernel == ids_of({"id": e["id"]} for e in hidden_later)

    _rewrite(c, idle_timeout=600, hide=LOOPBACK_HIDE)
    _hup(c, "reload: hidden blocks: 127.0.0.0/8, ::1/128\n")
    wait_for(lambda: ids_of(view_all(rpc, sid)), timeout=DEADLINE, done=lambda s: s == everything,
             what="the entries of 10.9.0.0/16 back in view after the resync")
    kernel_ids = ids_of(e for e in conntrack_list() if e["src"] in ("10.9.0.1", "10.8.0.1", "10.19.0.1"))
    assert ids_of(view_all(rpc, sid)) == kernel_ids == everything
    # And they can be touched again.
    assert rpc.kill(sid, [str(hidden_later[0]["id"])])["killed"] == 1


def _garbage_request(c):
    """A request that is not HTTP: ctd drops the connection and logs it at debug level."""
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
        s.sendall(b"\x00\x01NOT HTTP\r\n\r\n")
        with contextlib.suppress(OSError):
            while s.recv(4096):
                pass


def test_sighup_logLevel_infoToDebug(ctd):
    c = ctd(idle_timeout=600, hide=LOOPBACK_HIDE, log_level="info")
    rpc, sid = c.login()
    _garbage_request(c)
    assert rpc.status(sid)["version"]
    assert " debug " not in c.stderr(), "debug lines logged at level info"

    _rewrite(c, idle_timeout=600, hide=LOOPBACK_HIDE, log_level="debug")
    log = _hup(c, "reload: log level info -> debug")
    assert "reload failed" not in log
    offset = len(c.stderr())
    _garbage_request(c)
    _wait_log(c, "debug ctd: [HTTPTransport] connection error", offset)
    assert rpc.status(sid)["version"]


def test_sighup_tlsCertificate_newConnectionsGetNewCert_keepAliveConnectionKeepsWorking(ctd, tmp_path):
    crt_a, key_a = _make_cert(tmp_path / "a", "ctd-a")
    crt_b, key_b = _make_cert(tmp_path / "b", "ctd-b")
    assert _der(crt_a) != _der(crt_b)
    crt, key = tmp_path / "server-cert.pem", tmp_path / "server-key.pem"
    crt.write_bytes(crt_a.read_bytes())
    key.write_bytes(key_a.read_bytes())
    key.chmod(0o600)
    c = ctd(idle_timeout=600, hide=LOOPBACK_HIDE, tls_cert=crt, tls_key=key)
    trust_a = ssl.create_default_context(cafile=str(crt_a))
    trust_b = ssl.create_default_context(cafile=str(crt_b))

    keep = http.client.HTTPSConnection("127.0.0.1", c.port, timeout=30, context=trust_a)
    sid = _xmlrpc_on(keep, "login", "admin", c.password)
    sock = keep.sock
    assert sock.getpeercert(binary_form=True) == _der(crt_a)
    assert ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", c.port))) == _der(crt_a)

    crt.write_bytes(crt_b.read_bytes())
    key.write_bytes(key_b.read_bytes())
    log = _hup(c, "reload: TLS certificate")
    assert "reload failed" not in log, log

    # A new connection presents B (and one trusting only A is refused).
    assert ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", c.port))) == _der(crt_b)
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as raw:
        with trust_b.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.getpeercert(binary_form=True) == _der(crt_b)
    new_rpc = xmlrpc.client.ServerProxy(c.url, context=trust_b)
    new_sid = new_rpc.login("admin", c.password)
    assert new_rpc.status(new_sid)["version"]
    try:
        with socket.create_connection(("127.0.0.1", c.port), timeout=10) as raw:
            with trust_a.wrap_socket(raw, server_hostname="127.0.0.1"):
                raise AssertionError("a client trusting only the old certificate was accepted after the reload")
    except ssl.SSLCertVerificationError:
        pass

    # The keep-alive connection opened before the reload is the same socket, still with A, and still serves.
    e = ct_insert("udp", "10.33.0.1", "10.33.0.2", 4000, 53, timeout=300)
    v = wait_for(lambda: _xmlrpc_on(keep, "view", sid, {"orig_src": "10.33.0.1"}, "", "ASC", 0, 10),
                 timeout=DEADLINE, done=lambda v: v["total"] == 1, what="the entry on the old connection")
    assert v["connections"][0]["id"] == str(e["id"])
    assert keep.sock is sock and sock.getpeercert(binary_form=True) == _der(crt_a)
    keep.close()


def test_sighup_brokenConfig_keepsOldConfiguration_thenFixedReloadApplies(ctd):
    c = ctd(idle_timeout=600, hide=[*LOOPBACK_HIDE, "10.9.0.0/16"])
    rpc, sid = c.login()
    hidden = ct_insert("udp", "10.9.0.1", "10.9.0.2", 4000, 53, timeout=600)
    shown = ct_insert("udp", "10.19.0.1", "10.19.0.2", 4000, 53, timeout=600)
    wait_for(lambda: ids_of(view_all(rpc, sid)), timeout=DEADLINE, done=lambda s: s == {shown["id"]},
             what="only the entry outside 10.9.0.0/16 in view")

    good = c.config_path.read_text()
    c.config_path.write_text(good.replace("[conntrack]", "[conntrack\nhide = [1, "))
    log = _hup(c, "reload failed, the old configuration stays")
    assert "reload: " not in log, log
    line = next(ln for ln in log.splitlines() if "reload failed" in ln)
    assert len(line.split("reload failed, the old configuration stays:", 1)[1].strip()) > 0, line

    # The daemon serves on with the old configuration: logins, views, and the old hide list.
    assert c.proc.poll() is None
    assert ids_of(view_all(rpc, sid)) == {shown["id"]}
    rpc2, sid2 = c.login()
    assert ids_of(view_all(rpc2, sid2)) == {shown["id"]}
    assert_fault(1, c.proxy().login, "admin", "wrong")
    assert_fault(4, rpc2.kill, sid2, [str(hidden["id"])])
    assert conntrack_list("-s", "10.9.0.1")[0]["id"] == hidden["id"]

    # Fixed (and the hide list changed): the reload succeeds and applies.
    _rewrite(c, idle_timeout=600, hide=LOOPBACK_HIDE)
    log = _hup(c, "reload: hidden blocks: 127.0.0.0/8, ::1/128\n")
    assert "reload failed" not in log
    wait_for(lambda: ids_of(view_all(rpc, sid)), timeout=DEADLINE, done=lambda s: s == {shown["id"], hidden["id"]},
             what="the 10.9.0.0/16 entry back in view")
    assert ids_of(view_all(rpc2, sid2)) == {shown["id"], hidden["id"]}


# ---------------------------------------------------------------------------------------------------------------
# 3. SIGHUP with nothing changed


def test_sighup_nothingChanged_keepsEverySession(ctd):
    c = ctd(idle_timeout=600, hide=LOOPBACK_HIDE)
    e = ct_insert("udp", "10.34.0.1", "10.34.0.2", 4000, 53, timeout=300)
    sessions = [c.login() for _ in range(3)]
    for rpc, sid in sessions:
        wait_for(lambda: _total(rpc, sid, {"orig_src": "10.34.0.1"}), timeout=DEADLINE, done=lambda t: t == 1,
                 what="the entry in view")
    before = c.config_path.read_text()

    log = _hup(c, "reload: nothing changed")
    assert c.config_path.read_text() == before
    # Nothing is reported as changed; no warnings, no failure.
    reload_lines = [ln for ln in log.splitlines() if "reload:" in ln]
    assert len(reload_lines) == 1, log
    assert "reload failed" not in log and "next restart" not in log, log

    for rpc, sid in sessions:
        v = rpc.view(sid, {"orig_src": "10.34.0.1"}, "", "ASC", 0, 10)
        assert v["total"] == 1 and v["connections"][0]["id"] == str(e["id"])
        assert rpc.status(sid)["version"]
    assert c.proc.poll() is None
