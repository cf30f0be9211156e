"""`make bench-syslog`: what forwarding to a collector costs a 10,000-id audited kill, and how fast a real rsyslog
receives the events, each beside a reference measured in the same run (docs/audit.md, "Figures").

Runs inside `unshare -n` (a private namespace: its own table and loopback). Figures:
- one `kill` call of 10,000 ids: without any audit hook (the reference), with AuditSQLite and no signed checkpoint
  inside the call (checkpoint_rows and checkpoint_seconds at their maximum), with AuditSQLite as configured by
  default (a 10,000-id kill signs two checkpoints inside the call), and with AuditSQLite + AuditSyslog over TLS to
  rsyslog: median of 3 sets (range) each, all in the same run;
- from that call to the last of its 20,000 events written by rsyslog: events per second;
- reference: the same 20,000 messages sent by a plain Python TLS client on one connection, to the same rsyslog.
"""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Tests" / "e2e"))

from ctdtest import conntrack_list, run, start_ctd, toml_str, wait_for  # noqa: E402
from test_audit_syslog import Rsyslog, _free_port, make_certificates  # noqa: E402

N = 10_000
SETS = 5


def fill(base: int) -> list[str]:
    lines = [f"-I -p udp -s 10.{base}.{i // 250}.{i % 250 + 1} -d 10.99.0.1 --sport {20000 + i % 30000} --dport 53 "
             f"-t 900" for i in range(N)]
    run(["conntrack", "-R", "-"], input="\n".join(lines) + "\n", timeout=300)
    # A dump can show an entry twice while the table changes: the ids are a set. Now and then one insert of the
    # 10,000 fails (`conntrack -R` goes on): the set is what the table holds, and the kill is of those.
    ids = sorted({str(e["id"]) for e in conntrack_list("-s", f"10.{base}.0.0/16") if e["dst"] == "10.99.0.1"})
    assert N - 10 <= len(ids) <= N, f"{len(ids)} of the {N} entries made"
    return ids


def kills(c, rs: Rsyslog | None, first_base: int) -> list[tuple[float, float | None]]:
    """SETS one-call kills of N ids; (call ms, events/s until rsyslog wrote all 2N of the call's events)."""
    rpc, sid = c.login()
    out = []
    for k in range(SETS):
        ids = fill(first_base + k)
        wait_for(lambda: rpc.view(sid, {"orig_dst": "10.99.0.1"}, "", "ASC", 0, 1)["total"], timeout=60,
                 done=lambda t: t == len(ids), what="the set in view")
        before = rs.count() if rs else 0
        t = time.perf_counter()
        r = rpc.kill(sid, ids)
        call = time.perf_counter() - t
        assert r["killed"] == len(ids), {k: (v if not isinstance(v, list) else v[:5]) for k, v in r.items()}
        rate = None
        if rs:
            wait_for(rs.count, timeout=300, interval=0.01, done=lambda n: n >= before + 2 * len(ids),
                     what="the events")
            rate = 2 * len(ids) / (time.perf_counter() - t)
        out.append((call * 1000, rate))
    return out


def reference_client(rs: Rsyslog, certs: dict) -> float:
    """20,000 messages like AuditSyslog's, one TLS connection, octet counting; events/s until rsyslog wrote them."""
    msg = ('<85>1 2026-12-02T01:31:21.948540Z gw1 ctd 1 kill [ctd@32473 event="{n}" action="kill" procedure="kill" '
           'user="bench" roles="operator" client="127.0.0.1" outcome="pending" conn_id="992664488" l3proto="ipv4" '
           'l4proto="17" orig_src="10.82.0.1" orig_dst="10.82.0.2" orig_sport="40000" orig_dport="53" '
           'repl_src="10.82.0.2" repl_dst="10.82.0.1" repl_sport="53" repl_dport="40000" mark="0" timeout="599" '
           'zone="0"] kill by bench from 127.0.0.1 of conntrack id 992664488: about to happen')
    frames = b"".join((lambda b: str(len(b)).encode() + b" " + b)(msg.format(n=n).encode()) for n in range(2 * N))
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    before = rs.count()
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", rs.port)) as s, ctx.wrap_socket(s, server_hostname="127.0.0.1") as tls:
        tls.sendall(frames)
        tls.unwrap()
    wait_for(rs.count, timeout=300, interval=0.01, done=lambda n: n >= before + 2 * N, what="the reference events")
    return 2 * N / (time.perf_counter() - t)


def main():
    run(["ip", "link", "set", "lo", "up"])
    work = Path(tempfile.mkdtemp(prefix="ctd-bench-syslog-"))
    certs = make_certificates(work / "pki")
    rs = Rsyslog(work / "rsyslog", certs, _free_port())
    rs.start()
    try:
        ref_rate = reference_client(rs, certs)

        def measure(name, plugins, extra, base, collector=None):
            c = start_ctd(work / name, args=[a for p in plugins for a in ("--plugin", p)], extra=extra)
            try:
                return kills(c, collector, base)
            finally:
                c.stop()

        def sqlite(d, more=""):
            return f"[plugin.AuditSQLite]\ndatabase = {toml_str(str(work / d / 'audit.db'))}\n" + more

        bare = measure("bare", [], "", 100)
        no_cp = measure("nocp", ["AuditSQLite"], sqlite("n", "checkpoint_rows = 1000000\ncheckpoint_seconds = 86400\n"),
                        110)
        alone = measure("sqlite", ["AuditSQLite"], sqlite("a"), 120)
        syslog = (sqlite("b") + f"[plugin.AuditSyslog]\naddress = \"tls://127.0.0.1:{rs.port}\"\n"
                  f"tls_ca_file = {toml_str(str(certs['ca']))}\nqueue_path = {toml_str(str(work / 'q' / 'queue'))}\n")
        both = measure("syslog", ["AuditSQLite", "AuditSyslog"], syslog, 130, rs)
    finally:
        rs.stop()
        run(["conntrack", "-F"], check=False)

    def med(values):
        return statistics.median(values), min(values), max(values)

    z, n = med([x[0] for x in bare]), med([x[0] for x in no_cp])
    a, b = med([x[0] for x in alone]), med([x[0] for x in both])
    r = med([x[1] for x in both])
    print(f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — {os.cpu_count()} cores, AuditSyslog over TLS "
          f"to rsyslog 8 on 127.0.0.1\n")
    print("| figure | value |\n|---|---|")
    print(f"| reference: one `kill` of {N:,} ids, no audit hook, median of {SETS} (range) | "
          f"{z[0]:.0f} ms ({z[1]:.0f}–{z[2]:.0f}) |")
    print(f"| AuditSQLite, no checkpoint inside the call | {n[0]:.0f} ms ({n[1]:.0f}–{n[2]:.0f}); "
          f"auditing adds {n[0] - z[0]:.0f} ms |")
    print(f"| AuditSQLite as by default (checkpoint_rows 1000: two signed checkpoints inside the call) | {a[0]:.0f} ms ({a[1]:.0f}–{a[2]:.0f}); "
          f"checkpoints add {a[0] - n[0]:.0f} ms |")
    print(f"| AuditSQLite + AuditSyslog (TLS to rsyslog) | "
          f"{b[0]:.0f} ms ({b[1]:.0f}–{b[2]:.0f}); forwarding adds {b[0] - a[0]:.0f} ms |")
    print(f"| rsyslog receives the kill's {2 * N:,} events (from the call to the last written), median | "
          f"{r[0]:,.0f} events/s ({r[1]:,.0f}–{r[2]:,.0f}) |")
    print(f"| reference: the same number of messages from one plain TLS client connection | {ref_rate:,.0f} events/s |")
    subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
