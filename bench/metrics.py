"""The cost of a Prometheus scrape (`make bench-metrics`; docs/metrics.md, "Measured"): a real kernel table of N
entries (ctd-fill) in a private network namespace, each figure beside references measured in the same run on the
same table: `conntrack -L` (what an exporter that dumps the table pays), `conntrack -C`, and ctd's own `stats` call
(the same kernel counters over XML-RPC, no per-entry work). Then the idle cost: counter-refresh dumps and CPU
seconds of ctd in a window without scrapes against one with a scrape every SCRAPE_EVERY seconds.

Run inside `unshare -n` (the Makefile does). Only 127.0.0.1 is contacted. Every process started here is ended by
PID. Environment: CTD_BIN (default .build/release), BENCH_METRICS_SIZES (default "10000 250000"),
BENCH_METRICS_WINDOW (seconds per idle window, default 30), SCRAPE_EVERY (default 10).
"""
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

BIN = os.path.abspath(os.environ.get("CTD_BIN", ".build/release"))
SIZES = [int(x) for x in os.environ.get("BENCH_METRICS_SIZES", "10000 250000").split()]
WINDOW = float(os.environ.get("BENCH_METRICS_WINDOW", "30"))
SCRAPE_EVERY = float(os.environ.get("SCRAPE_EVERY", "10"))
PASSWORD = "bench-" + os.urandom(6).hex()


def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def timed(fn, reps=15):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]


class Daemon:
    def __init__(self, workdir):
        passwd = os.path.join(workdir, "passwd")
        subprocess.run([f"{BIN}/ctd", "passwd", "add", "bench", "--file", passwd, "--stdin"], input=PASSWORD + "\n",
                       text=True, check=True, capture_output=True)
        cfg = os.path.join(workdir, "ctd.toml")
        with open(cfg, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1"\nport = 0\n[sessions]\nidle_timeout = 3600\n[conntrack]\nhide = []\n'
                    f'[plugins]\ndirectory = "{BIN}"\n[log]\nlevel = "warning"\n'
                    f'[metrics]\nlisten = "127.0.0.1:0"\n'
                    f'[plugin.AuthSHA]\npassword_file = "{passwd}"\ndefault_roles = ["admin"]\n')
        self.err = open(os.path.join(workdir, "ctd.err"), "w")
        self.proc = subprocess.Popen([f"{BIN}/ctd", "serve", "--config", cfg], stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, stdin=subprocess.DEVNULL)
        metrics = re.search(r"port (\d+)", self.proc.stdout.readline())
        listen = re.search(r"port (\d+)", self.proc.stdout.readline())
        if not metrics or not listen:
            raise RuntimeError("ctd did not start: " + open(os.path.join(workdir, "ctd.err")).read())
        self.metrics_port = int(metrics.group(1))
        self.rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{listen.group(1)}/RPC2")
        self.session = self.rpc.login("bench", PASSWORD)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=60)

    def scrape(self) -> bytes:
        try:
            self.conn.request("GET", "/metrics")
            r = self.conn.getresponse()
        except (http.client.HTTPException, OSError):  # the keep-alive connection outlived idle_timeout
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=60)
            self.conn.request("GET", "/metrics")
            r = self.conn.getresponse()
        body = r.read()
        assert r.status == 200
        return body

    def value(self, name: str) -> float:
        m = re.search(rf"^{name} (\S+)$", self.scrape().decode(), re.M)
        return float(m.group(1))

    def cpu_seconds(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def idle_window(d: Daemon, scrape_every: float | None):
    """Counter-refresh dumps and ctd's CPU seconds over WINDOW seconds, nobody viewing; scrapes if asked.
    The counts are read with the `stats` call, which takes no snapshot (a scrape would count as a view)."""
    time.sleep(12)  # out of the 10 s "someone viewed" window of earlier calls
    refreshes = d.rpc.stats(d.session)["ctd"]["counter_refreshes"]
    cpu = d.cpu_seconds()
    end = time.monotonic() + WINDOW
    while time.monotonic() < end:
        time.sleep(min(scrape_every or WINDOW, max(0.0, end - time.monotonic())))
        if scrape_every and time.monotonic() < end:
            d.scrape()
    return d.rpc.stats(d.session)["ctd"]["counter_refreshes"] - refreshes, d.cpu_seconds() - cpu


def main():
    links = sh("ip -o link").stdout.strip().splitlines()
    if len(links) != 1 or " lo:" not in links[0]:
        sys.exit("bench/metrics.py must run in a private network namespace (make bench-metrics does unshare -n)")
    sh("ip link set lo up")
    sh("nft add table inet ctdbenchm")
    sh("nft add chain inet ctdbenchm out '{ type filter hook output priority 0; }'")
    sh("nft add rule inet ctdbenchm out ct state new,established accept")
    rows = []
    for n in SIZES:
        sh("conntrack -F", check=False)
        sh(f"{BIN}/ctd-fill create {n} --timeout 3600")
        work = tempfile.mkdtemp(prefix="ctd-bench-metrics-")
        d = Daemon(work)
        try:
            deadline = time.monotonic() + 120
            while d.value("ctd_mirror_entries") < n and time.monotonic() < deadline:
                time.sleep(0.2)
            size = len(d.scrape())
            scrape = timed(d.scrape)
            stats = timed(lambda: d.rpc.stats(d.session))
            dump = timed(lambda: sh("conntrack -L > /dev/null 2>&1"), reps=5)
            count = timed(lambda: sh("conntrack -C"), reps=5)
            quiet = idle_window(d, None)
            scraped = idle_window(d, SCRAPE_EVERY)
            rows.append((n, size, scrape, stats, dump, count, quiet, scraped))
        finally:
            d.stop()
            shutil.rmtree(work, ignore_errors=True)
    sh("conntrack -F", check=False)
    sh("nft delete table inet ctdbenchm", check=False)
    ms = lambda t: f"{t[0] * 1000:.1f} / {t[1] * 1000:.1f}"  # noqa: E731
    print(f"ctd {sh(f'{BIN}/ctd --version').stdout.strip()}, {os.cpu_count()} CPUs, "
          f"idle windows of {WINDOW:.0f} s, scrape every {SCRAPE_EVERY:.0f} s in the second")
    print("| entries | scrape ms (median / p90) | body bytes | `stats` call ms | `conntrack -L` ms | `conntrack -C` ms "
          "| counter dumps / CPU s, no scrape | counter dumps / CPU s, scraped |")
    print("|---|---|---|---|---|---|---|---|")
    for n, size, scrape, stats, dump, count, quiet, scraped in rows:
        print(f"| {n:,} | {ms(scrape)} | {size:,} | {ms(stats)} | {ms(dump)} | {ms(count)} "
              f"| {quiet[0]:.0f} / {quiet[1]:.2f} | {scraped[0]:.0f} / {scraped[1]:.2f} |")


if __name__ == "__main__":
    main()
