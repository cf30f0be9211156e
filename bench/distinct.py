"""ctd benchmark, second part (`make bench`): every request different, at the sizes of a carrier-grade gateway.

A table like a busy gateway's (ctd-fill --mix: 3/4 TCP ESTABLISHED, 1/4 UDP, 4 Mi source addresses in 10.0.0.0/10,
4,096 servers, 1,000 services, 25 marks) in a private network namespace; every `view` differs from every other: a
random deep `start` (within the filter's total), the order rotating over orig_port_src, timeout, orig_port_dst, id,
orig_src and mark, ASC or DESC, the filter rotating over none, a destination port, a protocol, a /30 destination and
a mark, length 100. Figures are printed beside `conntrack -L` on the same table, from the same run.

Run through scripts/bench.sh (it raises nf_conntrack_max outside the namespace and restores it). Only 127.0.0.1 is
contacted; every process started here is ended by PID. Environment: BENCH_DISTINCT_SIZES (default
"250000 1000000"; empty skips), CTD_BIN, BENCH_OUT.
"""
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import xmlrpc.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the first part: Daemon, RawClient, sh, percentile)

SIZES = [int(x) for x in os.environ.get("BENCH_DISTINCT_SIZES", "250000 1000000").split()]
MARKS = 25
SORTS = ["orig_port_src", "timeout", "orig_port_dst", "id", "orig_src", "mark"]
SHAPES = ["none", "dport", "protocol", "/30 dst", "mark"]


def fill(n):
    bench.sh("conntrack -F", check=False)
    t = time.perf_counter()
    bench.sh(f"{bench.BIN}/ctd-fill create {n} --mix --marks {MARKS} --timeout 432000 --batch 64")
    return time.perf_counter() - t


def distinct_bodies(session, n, count, seed):
    """`count` different view requests, each with its filter shape."""
    rng = random.Random(seed)
    seen = set()
    out = []
    while len(out) < count:
        shape = SHAPES[len(out) % len(SHAPES)]
        if shape == "none":
            filters, total = {}, n
        elif shape == "dport":
            filters, total = {"orig_port_dst": 1024 + rng.randrange(1000)}, n // 1000
        elif shape == "protocol":
            tcp = rng.random() < 0.5
            filters, total = {"l4proto": "tcp" if tcp else "udp"}, (3 * n // 4 if tcp else n // 4)
        elif shape == "/30 dst":
            k = rng.randrange(1024) * 4  # servers 11.0.0.1 + (i % 4096)
            filters, total = {"orig_dst": f"11.0.{k >> 8}.{k & 255}/30"}, n // 1024
        else:
            filters, total = {"mark": rng.randrange(MARKS)}, n // MARKS
        order = SORTS[rng.randrange(len(SORTS))]
        direction = rng.choice(["ASC", "DESC"])
        start = rng.randrange(max(1, int(total * 0.95) - 100))
        key = (repr(sorted(filters.items())), order, direction, start)
        if key in seen:
            continue
        seen.add(key)
        out.append((shape, bench.request_body("view", session, filters, order, direction, start, 100)))
    return out


def sequential(daemon, bodies):
    c = bench.RawClient(daemon.port)
    c.call(bodies[-1][1])
    per_shape = {s: [] for s in SHAPES}
    times = []
    for shape, body in bodies[:-1]:
        t, data = c.call(body)
        if b"<name>connections</name>" not in data:
            raise RuntimeError(data[:300])
        times.append(t)
        per_shape[shape].append(t)
    return times, per_shape


def _client(port, bodies, seconds, queue):
    c = bench.RawClient(port)
    done = 0
    deadline = time.perf_counter() + seconds
    for _, body in bodies:
        if time.perf_counter() >= deadline:
            break
        c.call(body)
        done += 1
    queue.put((done, done == len(bodies)))


def parallel(daemon, session, n, seconds=10, clients=4):
    """Different requests per second from `clients` processes (each its own bodies, none repeated)."""
    queue = multiprocessing.Queue()
    per_client = 6000
    procs = []
    for k in range(clients):
        bodies = distinct_bodies(session, n, per_client, seed=1000 + k)
        procs.append(multiprocessing.Process(target=_client, args=(daemon.port, bodies, seconds, queue)))
    t = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    elapsed = time.perf_counter() - t
    for p in procs:
        p.join(30)
    if any(ran_out for _, ran_out in results):
        raise RuntimeError("a client ran out of distinct requests: raise per_client")
    return sum(done for done, _ in results) / elapsed


def timed_calls(daemon, make_body, calls=20):
    c = bench.RawClient(daemon.port)
    c.call(make_body(calls))
    times = [c.call(make_body(i))[0] for i in range(calls)]
    return bench.percentile(times, 50) * 1000, bench.percentile(times, 99) * 1000


KILL_MARK, KILL_REF_MARK = 7, 8  # (i % 25): 40,000 entries each at 1M


def audited_kill(daemon):
    """One `kill` call of 10,000 ids of one mark (audited if AuditSQLite is loaded), and the reference:
    `conntrack -D -m MARK` of another mark's entries on the same table (N/25 of them), with its rate per 10,000."""
    ids = bench.ids_with_mark(KILL_MARK)[:10_000]
    c = bench.RawClient(daemon.port)
    elapsed, data = c.call(bench.request_body("kill", daemon.session, ids))
    killed = int(bench.re.search(rb"<name>killed</name><value><int>(\d+)</int>", data).group(1))
    ref_n = len(bench.ids_with_mark(KILL_REF_MARK))
    t = time.perf_counter()
    bench.sh(f"conntrack -D -m {KILL_REF_MARK} > /dev/null 2>&1", check=False)
    ref = time.perf_counter() - t
    return {"ids": len(ids), "killed": killed, "ms": elapsed * 1000, "ref_n": ref_n, "ref_ms": ref * 1000}


FLOOD = 100_000
FLOOD_BASE = "10.200.0.0"  # ctd-fill's default layout from here: sources 10.200.0.1-2, destination 11.200.0.1


def flood(daemon):
    """A creation flood into the loaded table: `ctd-fill create 100000 --batch 64` as fast as the kernel goes (the
    kernel makes each NEW event in the creating process's time, so the rate is what the 2 cores give with ctd
    listening). Then: how long until the mirror holds all 100,000 (a filtered `view` total), whether ctd lost events
    (its resync count; the kernel reports ENOBUFS to the listener as a resync), and the rate itself."""
    rpc = xmlrpc.client.ServerProxy(daemon.url)
    before = rpc.status(daemon.session)
    t = time.perf_counter()
    out = bench.sh(f"{bench.BIN}/ctd-fill create {FLOOD} --base {FLOOD_BASE} --batch 64 --timeout 3600 --marks 0",
                   check=False)
    created_s = time.perf_counter() - t
    m = bench.re.search(r"created (\d+) entries, (\d+) failed", out.stderr)
    failed = int(m.group(2)) if m else -1
    body = bench.request_body("view", daemon.session, {"orig_dst": "11.200.0.1"}, "", "ASC", 0, 1)
    c = bench.RawClient(daemon.port)
    end = time.perf_counter()
    total = 0
    while time.perf_counter() - end < 60:
        _, data = c.call(body)
        total = int(bench.re.search(rb"<name>total</name><value><int>(\d+)</int>", data).group(1))
        if total >= FLOOD - failed:
            break
        time.sleep(0.005)
    lag = time.perf_counter() - end
    after = rpc.status(daemon.session)
    bench.sh(f"{bench.BIN}/ctd-fill delete {FLOOD} --base {FLOOD_BASE} --batch 64", check=False)
    return {"rate": FLOOD / created_s, "failed": failed, "seen": total, "lag_ms": lag * 1000,
            "resyncs": after["resyncs"] - before["resyncs"], "healthy": after["events_healthy"],
            "buffer": after["receive_buffer"]}


def peak_rss_mb(daemon):
    for line in open(f"/proc/{daemon.proc.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    if not SIZES:
        return
    bench.setup_namespace()
    plugins = [p for p in ("AuditSQLite",) if os.path.exists(f"{bench.BIN}/lib{p}.so")]
    rows = []
    for n in SIZES:
        fill_s = fill(n)
        have = bench.count()
        if have < n * 0.99:
            sys.exit(f"the table holds {have} entries, not {n}: is nf_conntrack_max high enough? (scripts/bench.sh)")
        ref_list = bench.conntrack_list_seconds()
        work = tempfile.mkdtemp(prefix="ctd-bench-distinct-")
        daemon = bench.Daemon(work, plugins)
        try:
            s = daemon.session
            times, per_shape = sequential(daemon, distinct_bodies(s, n, 1001, seed=n))
            rps = parallel(daemon, s, n)
            # Summaries and previews of a /16 (1/64 of the table), a different /16 each call.
            summary = timed_calls(daemon, lambda i: bench.request_body(
                "summary", s, {"orig_src": f"10.{i % 64}.0.0/16"}, ["orig_dst", "orig_port_dst", "mark"][i % 3],
                "count", 10))
            preview = timed_calls(daemon, lambda i: bench.request_body(
                "kill_preview", s, {"orig_src": f"10.{i % 64}.0.0/16"}))
            rss, peak_requests = daemon.rss_mb(), peak_rss_mb(daemon)
            kill = audited_kill(daemon)
            peak_kill = peak_rss_mb(daemon)
            flooded = flood(daemon)
            rows.append({
                "n": n, "fill": fill_s, "ref": ref_list, "times": times, "shapes": per_shape, "rps": rps,
                "summary": summary, "preview": preview, "rss": rss, "peak": peak_rss_mb(daemon),
                "loaded": daemon.rss_loaded, "startup": daemon.startup, "kill": kill, "flood": flooded,
                "peak_requests": peak_requests, "peak_kill": peak_kill,
            })
        finally:
            daemon.stop()
            shutil.rmtree(work, ignore_errors=True)
    bench.sh("conntrack -F", check=False)
    report = render(rows, plugins)
    print(report)
    if bench.OUT:
        with open(bench.OUT, "a") as f:
            f.write(report + "\n")


def render(rows, plugins):
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — every request different — {os.cpu_count()} cores "
        f"({cpu_model}), plugins: AuthSHA{''.join(', ' + p for p in plugins)}",
        "",
        "| figure | " + " | ".join(f"N = {r['n']:,}" for r in rows) + " | target (1M) |",
        "|---|" + "---|" * len(rows) + "---|",
    ]

    def row(name, values, target=""):
        lines.append(f"| {name} | " + " | ".join(values) + f" | {target} |")

    def ms(values):
        return f"{bench.percentile(values, 50) * 1000:.2f} / {bench.percentile(values, 99) * 1000:.2f} ms"

    row("reference: `conntrack -L > /dev/null`", [f"{r['ref']:.2f} s" for r in rows])
    row("`view`, every request different, 1,000 requests: p50 / p99", [ms(r["times"]) for r in rows],
        "≤ 2 / ≤ 10 ms (p50 ≤ 1 ms at 250k)")
    for shape in SHAPES:
        row(f"… filter {shape}: p50 / p99", [ms(r["shapes"][shape]) for r in rows])
    row("… vs `conntrack -L` (times faster, p50)",
        [f"{r['ref'] / bench.percentile(r['times'], 50):,.0f}×" for r in rows])
    row("different requests per second, 4 client processes, 10 s", [f"{r['rps']:,.0f}" for r in rows], "≥ 1,000")
    row("`summary` of a /16 (1/64 of the table), top 10, a different /16 each call: p50 / p99",
        [f"{r['summary'][0]:.1f} / {r['summary'][1]:.1f} ms" for r in rows], "≤ 20 ms")
    row("`kill_preview` of a /16, a different /16 each call: p50 / p99",
        [f"{r['preview'][0]:.1f} / {r['preview'][1]:.1f} ms" for r in rows], "≤ 20 ms")
    row("RSS, loaded and first view served / per entry",
        [f"{r['loaded']:.0f} MB / {r['loaded'] * 1048576 / r['n']:.0f} B" for r in rows])
    row("RSS after the requests / peak (VmHWM) by then", [f"{r['rss']:.0f} / {r['peak_requests']:.0f} MB" for r in rows],
        "≤ 400 / ≤ 450 MB")
    row("peak (VmHWM) after the kill below / after the flood below (the whole benchmark)",
        [f"{r['peak_kill']:.0f} / {r['peak']:.0f} MB" for r in rows], "≤ 450 MB")
    audited = "audited" if plugins else "not audited: no AuditSQLite"
    row(f"one `kill` of 10,000 ids of one mark ({audited})", [f"{r['kill']['ms']:.0f} ms ({r['kill']['killed']:,} killed)"
                                               for r in rows], "≤ 250 ms")
    row("reference: `conntrack -D -m MARK` on the same table (its entries; per 10,000)",
        [f"{r['kill']['ref_ms']:.0f} ms ({r['kill']['ref_n']:,}; {r['kill']['ref_ms'] * 10000 / max(1, r['kill']['ref_n']):.0f} ms)"
         for r in rows])
    row(f"creation flood of {FLOOD:,} (`ctd-fill --batch 64`, as fast as the kernel goes with ctd listening)",
        [f"{r['flood']['rate']:,.0f} entries/s, {r['flood']['failed']} failed" for r in rows], "≥ 100,000/s")
    row("… the mirror holds all of them, after the flood's end; resyncs (lost events); receive buffer",
        [f"{r['flood']['lag_ms']:.0f} ms ({r['flood']['seen']:,}); {r['flood']['resyncs']}; "
         f"{r['flood']['buffer'] // 1048576} MB" for r in rows], "0 resyncs")
    row("start-up to the first complete `view` (incl. login)", [f"{r['startup']:.2f} s" for r in rows],
        "≤ 4 s and < `conntrack -L`")
    row("(fill with ctd-fill --mix, for scale)", [f"{r['fill']:.1f} s" for r in rows])
    return "\n".join(lines)


if __name__ == "__main__":
    main()
