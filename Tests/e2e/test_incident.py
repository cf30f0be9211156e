"""Incident response (issue 9): kill by filter through a preview, host/port/range filters, summaries and the
kernel's statistics, against the real table of this private namespace, cross-checked with conntrack -L and -S."""

import collections
import subprocess

from ctdtest import assert_fault, conntrack_list, ct_insert, wait_for

LOOPBACK = ["127.0.0.0/8", "::1/128"]


def _fill(prefix: str, sources: int, per_source: int, dport=80):
    """per_source TCP entries from each of `sources` addresses prefix.1.. to prefix.200:dport."""
    out = []
    for s in range(1, sources + 1):
        for i in range(per_source):
            out.append(ct_insert("tcp", f"{prefix}.{s}", f"{prefix}.200", 20000 + i, dport, timeout=600,
                                 state="ESTABLISHED"))
    return out


def _wait_total(rpc, sid, filters, n):
    return wait_for(lambda: rpc.view(sid, filters, "", "ASC", 0, 1)["total"], timeout=30, done=lambda t: t == n,
                    what=f"{n} entries matching {filters}")


def test_killPreview_thenKillMatching_killsExactlyThePreviewedEntries(ctd):
    c = ctd(hide=LOOPBACK)
    rpc, sid = c.login()
    _fill("10.90.0", sources=3, per_source=4)
    _wait_total(rpc, sid, {"orig_src": "10.90.0.0/24"}, 12)

    p = rpc.kill_preview(sid, {"orig_src": "10.90.0.0/24"})
    assert p["total"] == 12 and len(p["sample"]) == 12 and p["token"]
    assert sorted(g["key"] for g in p["groups"]["sources"]) == ["10.90.0.1", "10.90.0.2", "10.90.0.3"]
    assert all(g["count"] == 4 for g in p["groups"]["sources"])
    assert p["groups"]["destinations"] == [{"key": "10.90.0.200:80/tcp", "count": 12, "bytes": 0.0,
                                            "packets": 0.0, "byte_rate": 0.0}]
    # A connection that starts after the preview matches the filter but is not in the token.
    late = ct_insert("tcp", "10.90.0.9", "10.90.0.200", 30000, 80, timeout=600, state="ESTABLISHED")
    _wait_total(rpc, sid, {"orig_src": "10.90.0.0/24"}, 13)
    # A frontend may not kill more (or less) than it showed; a wrong total leaves the token usable.
    assert_fault(-32602, rpc.kill_matching, sid, p["token"], 13)
    r = rpc.kill_matching(sid, p["token"], 12)
    assert r["killed"] == 12 and not r["not_found"] and not r["failed"]
    left = conntrack_list("-s", "10.90.0.0/24")
    assert [e["id"] for e in left] == [late["id"]]
    # Single use.
    assert_fault(-32602, rpc.kill_matching, sid, p["token"], 12)


def test_killMatching_withAnotherSessionsToken_isRefused(ctd):
    c = ctd(hide=LOOPBACK)
    rpc, sid = c.login()
    e = ct_insert("udp", "10.91.0.1", "10.91.0.2", 1, 53, timeout=300)
    _wait_total(rpc, sid, {"host": "10.91.0.2"}, 1)
    token = rpc.kill_preview(sid, {"host": "10.91.0.2"})["token"]
    other, other_sid = c.login()
    assert_fault(-32602, other.kill_matching, other_sid, token, 1)
    assert conntrack_list("-s", "10.91.0.1")[0]["id"] == e["id"]
    assert rpc.kill_matching(sid, token, 1)["killed"] == 1


def test_killPreview_asViewer_isDenied_andNothingMatchingGivesNoToken(ctd):
    c = ctd(hide=LOOPBACK, extra='default_roles = ["viewer"]\n')
    rpc, sid = c.login()
    assert_fault(3, rpc.kill_preview, sid, {"orig_src": "10.92.0.0/24"})
    assert_fault(3, rpc.kill_matching, sid, "x", 1)


def test_killPreview_whenNothingMatches_hasNoToken(ctd):
    c = ctd(hide=LOOPBACK)
    rpc, sid = c.login()
    p = rpc.kill_preview(sid, {"orig_src": "10.93.0.0/24"})
    assert p["total"] == 0 and p["token"] == "" and "nothing" in p["note"]


def test_hostAndPortFilters_findNatdTraffic_andRangesWork(ctd):
    c = ctd(hide=LOOPBACK)
    rpc, sid = c.login()
    # A DNAT'd entry: the client talks to 10.94.0.100, the reply comes from the real server 10.94.0.5.
    nat = subprocess.run(["conntrack", "-I", "-p", "tcp", "-s", "10.94.0.1", "-d", "10.94.0.100", "--sport", "40000",
                          "--dport", "80", "-r", "10.94.0.5", "-q", "10.94.0.1", "--reply-port-src", "8080",
                          "--reply-port-dst", "40000", "-t", "300", "--state", "ESTABLISHED"],
                         capture_output=True, text=True)
    assert nat.returncode == 0, nat.stderr
    ct_insert("udp", "10.94.0.2", "10.94.0.3", 5353, 53, timeout=300)
    _wait_total(rpc, sid, {"orig_src": "10.94.0.0/24"}, 2)
    # host matches the reply side too: the real server's address finds the NAT'd connection.
    assert rpc.view(sid, {"host": "10.94.0.5"}, "", "ASC", 0, 10)["total"] == 1
    assert rpc.view(sid, {"port": 8080}, "", "ASC", 0, 10)["total"] == 1
    assert rpc.view(sid, {"port": "5000-6000"}, "", "ASC", 0, 10)["total"] == 1
    v = rpc.view(sid, {"orig_src": "10.94.0.0/24", "timeout": {"min": 1, "max": 300}}, "", "ASC", 0, 10)
    assert v["total"] == 2
    assert_fault(-32602, rpc.view, sid, {"port": "90-10"}, "", "ASC", 0, 10)


def test_summary_countsAddUpAndEqualConntrackL(ctd):
    c = ctd(hide=LOOPBACK)
    rpc, sid = c.login()
    _fill("10.95.0", sources=5, per_source=3, dport=443)
    _fill("10.95.1", sources=2, per_source=2, dport=22)
    _wait_total(rpc, sid, {"orig_src": "10.95.0.0/23"}, 19)
    s = rpc.summary(sid, {"orig_src": "10.95.0.0/23"}, "orig_src", "count", 3)
    listed = collections.Counter(e["src"] for e in conntrack_list("-s", "10.95.0.0/23"))
    assert s["total"]["count"] == sum(listed.values()) == 19
    assert [g["count"] for g in s["groups"]] == [3, 3, 3]
    assert sum(g["count"] for g in s["groups"]) + s["other"]["count"] == s["total"]["count"]
    assert all(listed[g["key"]] == g["count"] for g in s["groups"])
    services = rpc.summary(sid, {"orig_src": "10.95.0.0/23"}, "orig_port_dst", "", 10)
    assert {g["key"]: g["count"] for g in services["groups"]} == {"tcp/443": 15, "tcp/22": 4}
    assert_fault(-32602, rpc.summary, sid, {}, "colour")


def test_stats_matchConntrackSAndC(ctd):
    c = ctd(hide=LOOPBACK)
    rpc, sid = c.login()
    for i in range(5):
        ct_insert("udp", f"10.96.0.{i + 1}", "10.96.0.200", 1000 + i, 53, timeout=300)
    _wait_total(rpc, sid, {"orig_dst": "10.96.0.200"}, 5)
    st = rpc.stats(sid)
    count = int(subprocess.run(["conntrack", "-C"], capture_output=True, text=True, check=True).stdout.split()[0])
    assert st["kernel_entries"] == count and st["entries"] == 5  # ctd's own client connection is hidden
    assert st["max_entries"] > 0 and 0 < st["fill"] <= 1
    cpus = subprocess.run(["conntrack", "-S"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(st["per_cpu"]) == len(cpus)
    # Counters only grow: what conntrack -S showed after our call is at least what ctd read.
    after = collections.Counter()
    for line in cpus:
        for field in line.split()[1:]:
            k, _, v = field.partition("=")
            after[k] += int(v)
    for key in ("found", "invalid", "insert", "insert_failed", "drop", "early_drop", "error", "search_restart"):
        assert st["kernel"][key] <= after[key], key
    assert set(st["sysctl"]) == {"acct", "timestamp", "events"}


def test_changes_longPoll_reportsNewUpdatedAndDestroyedEntries(ctd):
    import threading
    c = ctd(hide=LOOPBACK, idle_timeout=2)
    rpc, sid = c.login()
    start = rpc.changes(sid, "")
    assert start["new"] == [] and not start["overflow"]
    cursor = start["cursor"]
    # A client waiting in changes is answered when the connection appears (no reload, no polling of view).
    got = {}
    t = threading.Thread(target=lambda: got.update(c.proxy().changes(sid, cursor, 30)))
    t.start()
    e = ct_insert("udp", "10.97.0.1", "10.97.0.2", 7000, 53, timeout=300)
    t.join(timeout=60)
    assert not t.is_alive() and got, "changes did not answer"
    new_ids = [row["id"] for row in got["new"]]
    assert str(e["id"]) in new_ids
    cursor = got["cursor"]
    subprocess.run(["conntrack", "-U", "-p", "udp", "-s", "10.97.0.1", "-d", "10.97.0.2", "-m", "77"],
                   capture_output=True, check=True)
    upd = wait_for(lambda: rpc.changes(sid, cursor, 10), timeout=30, done=lambda a: a["updated"],
                   what="the mark change")
    assert [u["mark"] for u in upd["updated"] if u["id"] == str(e["id"])] == ["77"]
    cursor = upd["cursor"]
    subprocess.run(["conntrack", "-D", "-p", "udp", "-s", "10.97.0.1"], capture_output=True, check=True)
    gone = wait_for(lambda: rpc.changes(sid, cursor, 10), timeout=30, done=lambda a: a["destroyed"],
                    what="the end of the entry")
    assert str(e["id"]) in gone["destroyed"]
    # Waiting longer than the idle timeout (2 s) does not end the session.
    quiet = rpc.changes(sid, gone["cursor"], 3)
    assert quiet["new"] == [] and quiet["destroyed"] == []
    assert rpc.status(sid)["version"]


def test_changes_withAnotherSessionsOrABadCursor_isRefused(ctd):
    c = ctd(hide=LOOPBACK)
    rpc, sid = c.login()
    other, other_sid = c.login()
    cursor = rpc.changes(sid, "")["cursor"]
    assert_fault(-32602, other.changes, other_sid, cursor, 1)
    assert_fault(-32602, rpc.changes, sid, "not-a-cursor", 1)
    calls = [{"methodName": "changes", "params": [sid, cursor, 1]}]
    assert rpc.system.multicall(calls)[0]["faultCode"] == -32602
