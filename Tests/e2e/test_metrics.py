"""Prometheus metrics on their own listener (docs/metrics.md): parsed with prometheus_client's text parser (Debian's
python3-prometheus-client) and scraped by a real Prometheus server (Debian's prometheus) started here on loopback.
Values are checked against `conntrack -C`, `conntrack -L`, nf_conntrack_max and real XML-RPC calls. Every wait
polls with a generous deadline; no timing assumptions.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import xmlrpc.client
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ctdtest import CTD, conntrack_count, ct_insert, make_password_file, toml_str, write_config

DEADLINE = 60.0
METRICS_RE = re.compile(r"^ctd: metrics on (\S+) port (\d+)\s*$", re.M)
ADMIN_ROLES = '\n[plugin.AuthSHA.roles]\nadmin = ["admin"]\n'


def metrics_port(c) -> int:
    m = METRICS_RE.search((c.workdir / "ctd.stdout").read_text(errors="replace"))
    assert m, f"ctd printed no metrics line\n{(c.workdir / 'ctd.stdout').read_text()}"
    assert m.group(1) == "127.0.0.1"
    return int(m.group(2))


def get(port: int, path: str = "/metrics", method: str = "GET", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


class Scrape:
    """One scrape, parsed by prometheus_client: families by name, samples by (name, labels)."""

    def __init__(self, port: int):
        status, headers, body = get(port)
        assert status == 200, (status, body[:300])
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
        self.text = body.decode()
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}
        self.samples: dict[tuple[str, frozenset], float] = {}
        for f in self.families.values():
            for s in f.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels} in the scrape:\n{self.text[:4000]}"
        return self.samples[key]

    def series(self, name: str) -> list[tuple[dict, float]]:
        return [(dict(k[1]), v) for k, v in self.samples.items() if k[0] == name]


def wait_for_scrape(port: int, check, what: str) -> Scrape:
    end = time.monotonic() + DEADLINE
    last = None
    while time.monotonic() < end:
        last = Scrape(port)
        if check(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen within {DEADLINE} s; last scrape:\n{last.text[:4000] if last else ''}")


def start_metrics_ctd(ctd, tmp_path: Path, **options):
    db = tmp_path / "audit" / "audit.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    extra = ADMIN_ROLES + f"\n[plugin.AuditSQLite]\ndatabase = {toml_str(str(db))}\n"
    c = ctd(args=["--plugin", "AuditSQLite", "--metrics-listen", "127.0.0.1:0"], extra=extra, **options)
    return c, metrics_port(c)


def test_metrics_parse_and_types(ctd, tmp_path):
    c, port = start_metrics_ctd(ctd, tmp_path)
    s = Scrape(port)
    types = {name: f.type for name, f in s.families.items()}
    # prometheus_client names a counter family without its _total suffix.
    expected = {
        "ctd_conntrack_entries": "gauge", "ctd_conntrack_entries_limit": "gauge", "ctd_mirror_entries": "gauge",
        "ctd_connections": "gauge", "ctd_sessions": "gauge", "ctd_events": "counter", "ctd_resyncs": "counter",
        "ctd_conntrack_stat_found": "counter", "ctd_conntrack_stat_insert": "counter",
        "ctd_conntrack_stat_drop": "counter", "ctd_conntrack_stat_early_drop": "counter",
        "ctd_conntrack_stat_insert_failed": "counter", "ctd_conntrack_stat_invalid": "counter",
        "ctd_conntrack_stat_error": "counter", "ctd_conntrack_stat_search_restart": "counter",
        "ctd_logins": "counter", "ctd_kills": "counter", "ctd_audit_records": "counter",
        "ctd_build_info": "gauge", "ctd_kernel_statistics_up": "gauge",
    }
    for name, kind in expected.items():
        assert types.get(name) == kind, f"{name}: {types.get(name)} (want {kind})\n{s.text[:3000]}"
    for name, f in s.families.items():
        assert name.startswith("ctd_"), name
        assert f.documentation, f"{name} has no HELP text"
    max_entries = int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
    assert s.value("ctd_conntrack_entries_limit") == max_entries
    assert s.value("ctd_kernel_statistics_up") == 1
    assert s.value("ctd_build_info", version=CTD_VERSION()) == 1
    # Bounded label sets, present from the start at 0.
    assert {lab["result"] for lab, _ in s.series("ctd_logins_total")} == {
        "success", "rejected", "throttled", "busy", "error"}
    assert {lab["result"] for lab, _ in s.series("ctd_kills_total")} == {
        "killed", "gone", "vetoed", "failed", "not_found"}
    assert s.value("ctd_audit_records_total", plugin="AuditSQLite") >= 0
    protos = {lab["l4proto"] for lab, _ in s.series("ctd_connections")}
    assert {"tcp", "udp", "icmp", "other"} <= protos


def CTD_VERSION() -> str:
    return subprocess.run([str(CTD), "--version"], capture_output=True, text=True, check=True).stdout.strip()


def test_entries_match_conntrack(ctd, tmp_path):
    c, port = start_metrics_ctd(ctd, tmp_path)
    for i in range(4):
        ct_insert("udp", "10.41.0.1", "10.41.0.2", 30000 + i, 53, timeout=300)
    for i in range(3):
        ct_insert("tcp", "10.41.1.1", "10.41.1.2", 31000 + i, 443, timeout=300, state="ESTABLISHED")
    ct_insert("tcp", "10.41.1.1", "10.41.1.2", 31100, 22, timeout=300, state="TIME_WAIT")
    ct_insert("icmp", "10.41.2.1", "10.41.2.2", icmp_id=7, timeout=300)
    # The mirror follows the kernel by events: wait until it shows the 9 entries (loopback is hidden by default).
    s = wait_for_scrape(port, lambda s: s.value("ctd_mirror_entries") == 9, "ctd_mirror_entries == 9")
    after = conntrack_count()
    # The kernel's count includes the scrape's own loopback connection (made before ctd read the count) and those
    # of earlier requests; nothing else makes connections in this namespace.
    assert s.value("ctd_conntrack_entries") == after, (s.value("ctd_conntrack_entries"), after)
    assert s.value("ctd_connections", l4proto="udp", state="none") == 4
    assert s.value("ctd_connections", l4proto="tcp", state="ESTABLISHED") == 3
    assert s.value("ctd_connections", l4proto="tcp", state="TIME_WAIT") == 1
    assert s.value("ctd_connections", l4proto="icmp", state="none") == 1
    assert sum(v for _, v in s.series("ctd_connections")) == s.value("ctd_mirror_entries")
    # The kernel's insert counter moved with the -I's (conntrack -S sums the same per-CPU counters).
    stat = subprocess.run(["conntrack", "-S"], capture_output=True, text=True, check=True).stdout
    inserts = sum(int(m) for m in re.findall(r"\binsert=(\d+)", stat))
    assert s.value("ctd_conntrack_stat_insert_total") <= inserts
    assert s.value("ctd_events_total") >= 9


def test_rpc_login_kill_counters_move(ctd, tmp_path):
    c, port = start_metrics_ctd(ctd, tmp_path)
    before = Scrape(port)
    rpc = c.proxy()
    with pytest.raises(xmlrpc.client.Fault) as f:
        rpc.login("admin", "wrong-" + c.password)
    assert f.value.faultCode == 1
    rpc, sid = c.login()
    e = ct_insert("udp", "10.42.0.1", "10.42.0.2", 32000, 53, timeout=300)
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        answer = rpc.kill(sid, [str(e["id"])])
        if answer["killed"] == 1:
            break
        time.sleep(0.1)  # the entry's event may not be applied yet: kill answers not_found, counted as such
    with pytest.raises(xmlrpc.client.Fault):
        rpc.kill(sid, ["4294967295"])
    with pytest.raises(xmlrpc.client.Fault) as f:
        rpc.__getattr__("no.such.method" + "x" * 40)()
    assert f.value.faultCode == -32601
    after = Scrape(port)

    def delta(name, **labels):
        return after.value(name, **labels) - before.samples.get((name, frozenset(labels.items())), 0.0)

    assert delta("ctd_logins_total", result="rejected") == 1
    assert delta("ctd_logins_total", result="success") == 1
    assert delta("ctd_rpc_requests_total", method="login", code="1") == 1
    assert delta("ctd_rpc_requests_total", method="login", code="0") == 1
    assert delta("ctd_rpc_requests_total", method="kill", code="0") >= 1
    assert delta("ctd_rpc_requests_total", method="other", code="-32601") == 1
    assert delta("ctd_kills_total", result="killed") == 1
    assert delta("ctd_kills_total", result="not_found") >= 1
    assert delta("ctd_rpc_duration_seconds_count", method="login") == 2
    assert after.value("ctd_rpc_duration_seconds_bucket", method="login", le="+Inf") == after.value(
        "ctd_rpc_duration_seconds_count", method="login")
    # login, the failed login's record, the kill: AuditSQLite took at least these.
    assert delta("ctd_audit_records_total", plugin="AuditSQLite") >= 3
    assert after.value("ctd_sessions") == 1
    # A client's method name never becomes a label value.
    methods = {lab["method"] for lab, _ in after.series("ctd_rpc_requests_total")}
    assert all(not m.startswith("no.such") for m in methods), methods
    assert subprocess.run(["conntrack", "-L", "-p", "udp", "--sport", "32000"], capture_output=True,
                          text=True).stdout.count("10.42.0.1") == 0


def test_listener_answers_only_get_metrics(ctd, tmp_path):
    c, port = start_metrics_ctd(ctd, tmp_path)
    assert get(port, "/")[0] == 404
    assert get(port, "/RPC2")[0] == 404
    status, headers, _ = get(port, "/metrics", method="POST")
    assert status == 405 and headers.get("Allow") == "GET, HEAD"
    status, headers, body = get(port, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    # The XML-RPC listener does not serve /metrics, and the metrics listener does not serve XML-RPC.
    assert c.post(b"", path="/metrics", method="GET")[0] in (404, 405)
    # A page of another origin is refused, as on the XML-RPC listener (DNS rebinding, browsers).
    assert get(port, headers={"Host": "evil.example"})[0] == 421
    # A connection that never completes its head is closed by the header deadline (10 s by default).
    s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert s.recv(1024) == b""
    finally:
        s.close()


def test_metrics_off_and_bad_address(tmp_path):
    pw = tmp_path / "passwd"
    make_password_file(pw, "admin", "pw-metrics")
    cfg = tmp_path / "ctd.toml"
    write_config(cfg, password_file=pw, extra='\n[metrics]\nlisten = "127.0.0.1:80:80"\n')
    p = subprocess.run([str(CTD), "serve", "--config", str(cfg), "--port", "0"], capture_output=True, text=True,
                       timeout=DEADLINE, stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert "[metrics] listen must be host:port" in p.stderr, p.stderr
    # A port in use: one sentence naming the address, before serving.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    try:
        write_config(cfg, password_file=pw)
        p = subprocess.run([str(CTD), "serve", "--config", str(cfg), "--port", "0", "--metrics-listen",
                            f"127.0.0.1:{busy}"], capture_output=True, text=True, timeout=DEADLINE,
                           stdin=subprocess.DEVNULL)
        assert p.returncode != 0
        assert f"cannot listen on 127.0.0.1:{busy}: Address already in use" in p.stderr, p.stderr
    finally:
        holder.close()


def test_off_by_default(ctd, tmp_path):
    c = ctd()
    assert not METRICS_RE.search((c.workdir / "ctd.stdout").read_text())
    assert "Prometheus" not in c.stderr()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def prometheus_query(port: int, query: str):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=20) as r:
        answer = json.load(r)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_real_prometheus_scrapes_ctd(ctd, tmp_path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian's prometheus package is missing: run `make test-deps`"
    # The test's own queries to Prometheus are loopback connections too: hidden, as by default.
    c, port = start_metrics_ctd(ctd, tmp_path, hide=("127.0.0.0/8", "::1/128"))
    for i in range(5):
        ct_insert("udp", "10.43.0.1", "10.43.0.2", 33000 + i, 53, timeout=300)
    wait_for_scrape(port, lambda s: s.value("ctd_mirror_entries") == 5, "ctd_mirror_entries == 5")
    rpc, sid = c.login()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        f"scrape_configs:\n  - job_name: ctd\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    web = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{web}"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        up = None
        while time.monotonic() < end:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                up = prometheus_query(web, 'up{job="ctd"}')
                mirror = prometheus_query(web, "ctd_mirror_entries")
                sessions = prometheus_query(web, "ctd_sessions")
                if up and up[0]["value"][1] == "1" and mirror and sessions and sessions[0]["value"][1] == "1":
                    break
            except OSError:
                pass
            time.sleep(0.25)
        else:
            raise AssertionError(f"Prometheus did not scrape ctd within 120 s: up={up}\n"
                                 + (tmp_path / "prometheus.log").read_text()[-3000:])
        # Prometheus stored what ctd exposed: the values, the labels, the types it accepted.
        assert prometheus_query(web, "ctd_mirror_entries")[0]["value"][1] == "5"
        assert prometheus_query(web, 'ctd_connections{l4proto="udp",state="none"}')[0]["value"][1] == "5"
        limit = prometheus_query(web, "ctd_conntrack_entries_limit")[0]["value"][1]
        assert int(limit) == int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
        assert float(prometheus_query(web, 'ctd_logins_total{result="success"}')[0]["value"][1]) == 1
        assert prometheus_query(web, 'ctd_rpc_duration_seconds_bucket{method="login",le="+Inf"}')
        samples = prometheus_query(web, 'scrape_samples_scraped{job="ctd"}')
        assert float(samples[0]["value"][1]) > 50
        # The scrape's own TCP connection is in the kernel's count: ctd_conntrack_entries is conntrack -C's.
        entries = float(prometheus_query(web, "ctd_conntrack_entries")[0]["value"][1])
        assert 5 <= entries <= conntrack_count()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_scrapes_do_not_count_as_views(ctd, tmp_path):
    """A scrape is no client looking at the table: the counter refresher keeps its idle back-off (10 s and more)
    instead of dumping every counter_interval (0.2 s here), which cost 8.5 CPU s per 30 s at 250,000 entries when
    scrapes counted as views (docs/metrics.md, "Measured"). An upper bound only: a busy machine dumps less, not more."""
    c, port = start_metrics_ctd(ctd, tmp_path, counter_interval=0.2)
    first = Scrape(port).value("ctd_counter_refreshes_total")
    end = time.monotonic() + 5
    scrapes = 0
    while time.monotonic() < end:
        Scrape(port)
        scrapes += 1
        time.sleep(0.1)
    last = Scrape(port).value("ctd_counter_refreshes_total")
    assert scrapes >= 5
    assert last - first <= 1, f"{last - first} counter dumps during {scrapes} scrapes in 5 s"
