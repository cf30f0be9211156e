"""ctd benchmark (`make bench`): real kernel table in a private network namespace, figures printed side by side with
references measured in the same run on the same table (`conntrack -L`, `conntrack -D`).

Run through scripts/bench.sh, which enters `unshare -n`. Only 127.0.0.1 is contacted. Every process started here is
ended by PID. Environment: CTD_BIN (release build dir), BENCH_SIZES (default "10000 100000 250000"),
BENCH_IDLE_SECONDS (default 30), BENCH_OUT (markdown file to append the table to).
"""
import http.client
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client

BIN = os.path.abspath(os.environ.get("CTD_BIN", ".build/release"))
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "10000 100000 250000").split()]
IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "30"))
OUT = os.environ.get("BENCH_OUT", "docs/benchmark.md")
PASSWORD = "bench-" + os.urandom(6).hex()
MARKS = 25  # ctd-fill gives entry i the mark i % 25: one mark = N/25 entries (10,000 at 250k)


def sh(cmd, check=True, **kw):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True, **kw)


def setup_namespace():
    links = sh("ip -o link").stdout.strip().splitlines()
    if len(links) != 1 or " lo:" not in links[0]:
        sys.exit("bench must run in a private network namespace (scripts/bench.sh does unshare -n)")
    sh("ip link set lo up")
    sh("sysctl -qw net.netfilter.nf_conntrack_acct=1")
    sh("nft add table inet ctdbench")
    sh("nft add chain inet ctdbench out '{ type filter hook output priority 0; }'")
    sh("nft add rule inet ctdbench out ct state new,established accept")


def fill(n):
    sh("conntrack -F", check=False)
    t = time.perf_counter()
    sh(f"{BIN}/ctd-fill create {n} --marks {MARKS} --timeout 3600")
    return time.perf_counter() - t


def count():
    out = sh("conntrack -C").stdout.strip()
    return int(out or 0)


def conntrack_list_seconds(reps=3):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        sh("conntrack -L > /dev/null 2>&1")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class Daemon:
    def __init__(self, workdir, plugins):
        self.workdir = workdir
        passwd = os.path.join(workdir, "passwd")
        subprocess.run([f"{BIN}/ctd", "passwd", "add", "bench", "--file", passwd, "--stdin"], input=PASSWORD + "\n",
                       text=True, check=True, capture_output=True)
        cfg = os.path.join(workdir, "ctd.toml")
        enabled = ", ".join(f'"{p}"' for p in plugins)
        # AuthSHA's default role is viewer: the benchmark's account kills, so it is an operator.
        sections = f'[plugin.AuthSHA]\npassword_file = "{passwd}"\ndefault_roles = ["operator"]\n'
        if "AuditSQLite" in plugins:
            sections += f'[plugin.AuditSQLite]\ndatabase = "{workdir}/audit.db"\n'
        if "UIDResolver" in plugins:
            sections += "[plugin.UIDResolver]\nmask = 0xFFFF\nshift = 0\n"
        with open(cfg, "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1"
port = 0
max_connections = 1500
max_connections_per_address = 1500
[sessions]
idle_timeout = 300
[conntrack]
hide = []
[plugins]
directory = "{BIN}"
enable = [{enabled}]
[log]
level = "warning"
{sections}""")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([f"{BIN}/ctd", "serve", "--config", cfg], stdout=subprocess.PIPE,
                                     stderr=open(os.path.join(workdir, "ctd.err"), "w"), text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"port (\d+)", line)
        if not m:
            raise RuntimeError("ctd did not start: " + open(os.path.join(workdir, "ctd.err")).read())
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}/RPC2"
        self.rpc = xmlrpc.client.ServerProxy(self.url)
        self.session = self.rpc.login("bench", PASSWORD)
        self.rpc.view(self.session, {}, "", "ASC", 0, 1)
        self.startup = time.perf_counter() - self.started
        self.rss_loaded = self.rss_mb()

    def rss_mb(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def request_body(method, *params):
    return xmlrpc.client.dumps(params, method).encode()


class RawClient:
    """Keep-alive HTTP client that times a full response without decoding it (the decoding is the client's cost)."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, body):
        t = time.perf_counter()
        self.conn.request("POST", "/RPC2", body, {"Content-Type": "text/xml"})
        r = self.conn.getresponse()
        data = r.read()
        elapsed = time.perf_counter() - t
        if b"faultCode" in data:
            raise RuntimeError(data[:300])
        return elapsed, data


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def latency(daemon, body, calls=60):
    c = RawClient(daemon.port)
    c.call(body)
    times = [c.call(body)[0] for _ in range(calls)]
    return percentile(times, 50) * 1000, percentile(times, 99) * 1000


def latency_varying(daemon, make_body, calls=60):
    c = RawClient(daemon.port)
    c.call(make_body(calls + 1))
    times = [c.call(make_body(i))[0] for i in range(calls)]
    return percentile(times, 50) * 1000, percentile(times, 99) * 1000


def throughput(daemon, seconds=10, clients=8):
    body = request_body("view", daemon.session, {}, "", "ASC", 0, 50).decode()
    lua = os.path.join(daemon.workdir, "view.lua")
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "text/xml"\nwrk.body = [==[' + body + "]==]\n")
    out = sh(f"wrk -t2 -c{clients} -d{seconds}s --latency -s {lua} {daemon.url}", check=False).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, float(p99.group(1)) * scale, int(errors.group(1)) if errors else 0


def freshness(daemon, reps=20):
    c = RawClient(daemon.port)
    appear, vanish = [], []
    for i in range(reps):
        src = f"192.0.2.{i + 1}"
        body = request_body("view", daemon.session, {"orig_src": src}, "", "ASC", 0, 1)
        sh(f"conntrack -I -p udp -s {src} -d 198.51.100.1 --sport 999 --dport 53 -t 120 2>/dev/null", check=False)
        t = time.perf_counter()
        while b"<name>total</name><value><int>1</int>" not in c.call(body)[1]:
            if time.perf_counter() - t > 5:
                break
        appear.append(time.perf_counter() - t)
        sh(f"conntrack -D -p udp -s {src} 2>/dev/null", check=False)
        t = time.perf_counter()
        while b"<name>total</name><value><int>0</int>" not in c.call(body)[1]:
            if time.perf_counter() - t > 5:
                break
        vanish.append(time.perf_counter() - t)
    both = appear + vanish
    return percentile(both, 50) * 1000, percentile(both, 99) * 1000


def ids_with_mark(mark):
    out = sh(f"conntrack -L -m {mark} -o id 2>/dev/null").stdout
    return re.findall(r"id=(\d+)", out)


KILL_MARKS = (6, 8, 9)  # three separate sets of N/25 entries, each killed with one `kill` call
REF_MARKS = (7, 10, 11)  # three more sets, deleted with `conntrack -D -m MARK`


def kill_one_set(daemon, mark):
    ids = ids_with_mark(mark)
    body = request_body("kill", daemon.session, ids)
    c = RawClient(daemon.port)
    t = time.perf_counter()
    elapsed, data = c.call(body)
    killed = int(re.search(rb"<name>killed</name><value><int>(\d+)</int>", data).group(1))
    # `conntrack -C` counts every entry, including the benchmark's own new loopback connections to ctd, so the
    # killed set is counted by its mark (a kernel-filtered dump), as an admin would check it.
    while len(ids_with_mark(mark)) > len(ids) - killed:
        if time.perf_counter() - t > 30:
            break
    gone = time.perf_counter() - t
    return len(ids), killed, elapsed * 1000, gone * 1000


def bulk_kill(daemon, n):
    """Three one-call kills of separate N/25-entry sets (a single call varies with what else the 2 cores do); the
    median one is reported with the range. Reference: `conntrack -D` of three same-size sets, median."""
    runs = sorted((kill_one_set(daemon, mark) for mark in KILL_MARKS), key=lambda r: r[2])
    median = runs[len(runs) // 2]
    refs = []
    for mark in REF_MARKS:
        ref_ids = len(ids_with_mark(mark))
        t = time.perf_counter()
        sh(f"conntrack -D -m {mark} > /dev/null 2>&1", check=False)
        refs.append((ref_ids, (time.perf_counter() - t) * 1000))
    ref = sorted(refs, key=lambda r: r[1])[len(refs) // 2]
    return (median[0], median[1], median[2], median[3], ref[0], ref[1], runs[0][2], runs[-1][2])


PREVIEW_MARKS = (12, 13, 14)  # three sets killed by filter: kill_preview + kill_matching
PREVIEW_REF_MARKS = (15, 16, 17)  # the reference: `conntrack -D -m MARK`, the same filter


def preview_kill_one(daemon, mark):
    """kill_preview({"mark": M}) then kill_matching(token, total): the incident path, timed from the preview."""
    c = RawClient(daemon.port)
    t = time.perf_counter()
    _, data = c.call(request_body("kill_preview", daemon.session, {"mark": mark}))
    preview = xmlrpc.client.loads(data)[0][0]
    _, data = c.call(request_body("kill_matching", daemon.session, preview["token"], preview["total"]))
    elapsed = time.perf_counter() - t
    killed = xmlrpc.client.loads(data)[0][0]["killed"]
    return preview["total"], killed, elapsed * 1000


# The same incident path on a ctd without an audit plugin (like for like with `conntrack -D`, which writes no trail).
UNAUDITED_MARKS = (18, 19, 20)
UNAUDITED_REF_MARKS = (21, 22, 23)


def preview_kill(daemon, marks=PREVIEW_MARKS, ref_marks=PREVIEW_REF_MARKS):
    """Median of three filter kills of separate sets, and of three `conntrack -D -m MARK` of same-size sets."""
    runs = sorted((preview_kill_one(daemon, m) for m in marks), key=lambda r: r[2])
    refs = []
    for mark in ref_marks:
        n = len(ids_with_mark(mark))
        t = time.perf_counter()
        sh(f"conntrack -D -m {mark} > /dev/null 2>&1", check=False)
        refs.append((n, (time.perf_counter() - t) * 1000))
    ref = sorted(refs, key=lambda r: r[1])[1]
    return runs[1] + ref


def summary_latency(daemon, calls=20):
    """`summary`, every call different (group_by and filter rotate; summaries are never cached)."""
    keys = ["orig_src", "orig_dst_port", "l4proto", "mark", "pair"]
    filters = [{}, {"orig_port_dst": 53}, {"l4proto": "udp"}, {"mark": [1, 2, 3]}, {"orig_src": "10.0.0.0/16"}]
    c = RawClient(daemon.port)
    times = [c.call(request_body("summary", daemon.session, filters[i % 5], keys[(i // 5) % 5], "count", 10))[0]
             for i in range(calls)]
    return percentile(times, 50) * 1000, percentile(times, 99) * 1000


def changes_latency(daemon, reps=20):
    """From `conntrack -I` to the answer of a client waiting in `changes`: p50 / p99 (ms)."""
    import threading
    rpc = xmlrpc.client.ServerProxy(daemon.url)
    times = []
    for i in range(reps):
        cursor = rpc.changes(daemon.session, "")["cursor"]
        got = {}
        src = f"10.250.{i // 250}.{i % 250 + 1}"

        def wait(cursor=cursor, src=src):
            # Other changes (entries of earlier steps ending) may come first: wait for the one inserted below.
            waiter = xmlrpc.client.ServerProxy(daemon.url)
            for _ in range(50):
                answer = waiter.changes(daemon.session, cursor, 30)
                if any(row["orig_src"] == src for row in answer["new"]):
                    got["at"] = time.perf_counter()
                    return
                cursor = answer["cursor"]

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.2)  # the waiter's request reaches ctd (a benchmark, not a test: a fixed head start is fine)
        t0 = time.perf_counter()
        sh(f"conntrack -I -p udp -s {src} -d 10.251.0.1 --sport 9 --dport 53 -t 60 2>/dev/null", check=False)
        t.join(timeout=30)
        if "at" in got:
            times.append(got["at"] - t0)
    return percentile(times, 50) * 1000, percentile(times, 99) * 1000


def changes_waiting_cost(daemon, clients=1000, seconds=10):
    """`clients` connections each waiting in `changes`: ctd's CPU over `seconds` and its RSS growth, beside the
    reference: ctd's CPU over the same `seconds` with nobody waiting, taken first. Both windows begin once no view
    has been made for 12 s, so that the counter dumps that views bring (every counter_interval for 10 s after a
    view) fall in neither."""
    import socket
    time.sleep(12)
    c0, t0 = daemon.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    reference = 100 * (daemon.cpu_seconds() - c0) / (time.perf_counter() - t0)
    rss0 = daemon.rss_mb()
    cursor = xmlrpc.client.ServerProxy(daemon.url).changes(daemon.session, "")["cursor"]
    body = request_body("changes", daemon.session, cursor, 30)
    head = (f"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\nContent-Type: text/xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    socks = []
    for _ in range(clients):
        s = socket.create_connection(("127.0.0.1", daemon.port))
        s.sendall(head + body)
        socks.append(s)
    time.sleep(2)  # let every request be read and parked
    c0, t0 = daemon.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    cpu = 100 * (daemon.cpu_seconds() - c0) / (time.perf_counter() - t0)
    rss = daemon.rss_mb() - rss0
    for s in socks:
        s.close()
    return cpu, rss, reference


def idle_cpu(daemon, seconds):
    time.sleep(12)  # let the viewing window (10 s) lapse: an idle daemon stops refreshing counters
    c0, t0 = daemon.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    return 100 * (daemon.cpu_seconds() - c0) / (time.perf_counter() - t0)


def main():
    setup_namespace()
    plugins = [p for p in ("AuditSQLite", "UIDResolver") if os.path.exists(f"{BIN}/lib{p}.so")]
    rows = []
    notes = []
    for n in SIZES:
        fill_s = fill(n)
        ref_list = conntrack_list_seconds()
        work = tempfile.mkdtemp(prefix="ctd-bench-")
        daemon = Daemon(work, plugins)
        try:
            s = daemon.session
            deep = request_body("view", s, {}, "orig_port_src", "DESC", 5000, 100)
            queries = {
                "no filter, page 0, length 100": request_body("view", s, {}, "", "ASC", 0, 100),
                "orig_port_src DESC, start 5000, length 100": deep,
                "byte_rate DESC, start 5000, length 100": request_body("view", s, {}, "byte_rate", "DESC", 5000, 100),
                "orig_src 10.0.0.0/30 + orig_port_dst 53, length 100":
                    request_body("view", s, {"orig_src": "10.0.0.0/30", "orig_port_dst": 53}, "", "ASC", 0, 100),
            }
            if "UIDResolver" in plugins:
                queries["username DESC, start 5000, length 100"] = request_body(
                    "view", s, {}, "username", "DESC", 5000, 100)
            lat = {name: latency(daemon, body) for name, body in queries.items()}
            # Every call a different page: neither the query cache nor the rendered-answer cache can help.
            lat["orig_port_src DESC, start 5000+i, length 100 (uncached)"] = latency_varying(
                daemon, lambda i: request_body("view", s, {}, "orig_port_src", "DESC", 5000 + i, 100))
            rps, p99_load, errors = throughput(daemon)
            fresh = freshness(daemon)
            kill = bulk_kill(daemon, n)
            summary = summary_latency(daemon)
            by_filter = preview_kill(daemon)
            poll = changes_latency(daemon)
            waiting = changes_waiting_cost(daemon) if n == max(SIZES) else None
            rss = daemon.rss_mb()
            cpu = idle_cpu(daemon, IDLE_SECONDS) if n == max(SIZES) else None
            rows.append((n, fill_s, ref_list, lat, rps, p99_load, errors, fresh, kill, rss, cpu, daemon.startup,
                         daemon.rss_loaded, daemon.rss_mb(), summary, by_filter, poll, waiting))
        finally:
            daemon.stop()
            shutil.rmtree(work, ignore_errors=True)
        # The filter kill again, on a ctd with no ActionHook loaded: the audit's share of the figure above.
        work = tempfile.mkdtemp(prefix="ctd-bench-")
        daemon = Daemon(work, ["AuthSHA"])
        try:
            rows[-1] += (preview_kill(daemon, UNAUDITED_MARKS, UNAUDITED_REF_MARKS),)
        finally:
            daemon.stop()
            shutil.rmtree(work, ignore_errors=True)
    sh("conntrack -F", check=False)
    report = render(rows, plugins)
    print(report)
    if OUT:
        with open(OUT, "a") as f:
            f.write(report + "\n")


def render(rows, plugins):
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — {os.cpu_count()} cores ({cpu_model}), "
        f"kernel {platform.release()}, plugins: AuthSHA{''.join(', ' + p for p in plugins)}",
        "",
        "| figure | " + " | ".join(f"N = {r[0]:,}" for r in rows) + " | target |",
        "|---|" + "---|" * len(rows) + "---|",
    ]

    def row(name, values, target=""):
        lines.append(f"| {name} | " + " | ".join(values) + f" | {target} |")

    row("reference: `conntrack -L > /dev/null`", [f"{r[2] * 1000:.0f} ms" for r in rows])
    for q in rows[0][3]:
        target = "≤ 10 ms (250k)" if "start 5000" in q and "orig_port" in q else ""
        row(f"`view` {q}: p50 / p99", [f"{r[3][q][0]:.2f} / {r[3][q][1]:.2f} ms" for r in rows], target)
    row("deep sorted page vs `conntrack -L` (times faster, p50)",
        [f"{r[2] * 1000 / r[3]['orig_port_src DESC, start 5000, length 100'][0]:.0f}×" for r in rows], "≈170×")
    row("throughput `view` length 50, 8 keep-alive clients, 10 s (wrk)",
        [f"{r[4]:,.0f} req/s" + (f" ({r[6]} errors)" if r[6] else "") for r in rows], "≥ 5,000 req/s")
    row("p99 latency under that load", [f"{r[5]:.1f} ms" for r in rows], "≤ 50 ms")
    row("freshness (create/destroy → seen in `view`): p50 / p99",
        [f"{r[7][0]:.1f} / {r[7][1]:.1f} ms" for r in rows], "p99 ≤ 100 ms")
    row("bulk kill: one `kill` call (ids, audited if AuditSQLite), median of 3 sets (range)",
        [f"{r[8][1]:,} of {r[8][0]:,} in {r[8][2]:.0f} ms ({r[8][6]:.0f}–{r[8][7]:.0f})" for r in rows],
        "10,000 in ≤ 250 ms")
    row("… until `conntrack -L -m MARK` shows them gone (from the call)", [f"{r[8][3]:.0f} ms" for r in rows])
    row("reference: `conntrack -D -m MARK` (same-size set, median of 3)",
        [f"{r[8][4]:,} in {r[8][5]:.0f} ms" for r in rows])
    row("`summary` top 10, every call different (group_by and filter rotate): p50 / p99",
        [f"{r[14][0]:.1f} / {r[14][1]:.1f} ms" for r in rows], "≤ 20 ms (250k)")
    row("kill by filter: `kill_preview` {mark} + `kill_matching`, median of 3 sets",
        [f"{r[15][1]:,} of {r[15][0]:,} in {r[15][2]:.0f} ms" for r in rows], "beats `conntrack -D`")
    row("reference: `conntrack -D -m MARK`, the same filter (same-size set, median of 3)",
        [f"{r[15][3]:,} in {r[15][4]:.0f} ms" for r in rows])
    row("… the same on a ctd without an audit plugin (`conntrack -D` writes no trail either)",
        [f"{r[18][1]:,} of {r[18][0]:,} in {r[18][2]:.0f} ms" for r in rows], "beats `conntrack -D`")
    row("reference: `conntrack -D -m MARK` on the same table, just after (same-size set, median of 3)",
        [f"{r[18][3]:,} in {r[18][4]:.0f} ms" for r in rows])
    row("`changes`: `conntrack -I` → answer to the waiting client: p50 / p99",
        [f"{r[16][0]:.1f} / {r[16][1]:.1f} ms" for r in rows], "p99 ≤ 50 ms")
    row("1,000 clients waiting in `changes`: ctd CPU / RSS growth",
        [f"{r[17][0]:.2f} % / {r[17][1]:.1f} MB" if r[17] else "—" for r in rows], "< 1 % / < 20 MB")
    row("reference: ctd CPU over the same time with nobody waiting (just before)",
        [f"{r[17][2]:.2f} %" if r[17] else "—" for r in rows])
    row("resident memory (RSS) loaded, first view served / per entry",
        [f"{r[12]:.0f} MB / {r[12] * 1048576 / r[0]:.0f} B" for r in rows], "≤ 150 MB at 250k")
    row("RSS right after the load tests and the bulk kill (peak)", [f"{r[9]:.0f} MB" for r in rows])
    row("RSS after the idle period (snapshots released, pages returned)",
        [f"{r[13]:.0f} MB" if r[10] is not None else "—" for r in rows])
    row(f"idle CPU over {IDLE_SECONDS:.0f} s, no clients", [f"{r[10]:.2f} %" if r[10] is not None else "—" for r in rows],
        "< 1 %")
    row("start-up to first served `view` (incl. login)", [f"{r[11] * 1000:.0f} ms" for r in rows], "≤ 2 s at 250k")
    row("(fill with ctd-fill, for scale)", [f"{r[1]:.1f} s" for r in rows])
    return "\n".join(lines)


if __name__ == "__main__":
    main()
