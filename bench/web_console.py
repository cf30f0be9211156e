"""Web console figures (`make bench-web`, not part of make test): run inside `unshare -n` (the Makefile does it).

1. Time to the first table paint at N entries (default 250,000, filled with ctd-fill): from the login click to the
   first row in the DOM, in headless Chromium; beside it, the same first page fetched by a Python XML-RPC client
   (the reference, same run, same table).
2. The page's JS heap (CDP Performance.getMetrics JSHeapUsedSize) after WEB_BENCH_SECONDS (default 600) of live
   updates: 200 entries created and deleted every second by ctd-fill while the page shows page 1; beside it the
   heap right after the first paint (the reference). Only 127.0.0.1 is contacted; processes ended by PID.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(os.environ.get("CTD_BIN", os.path.join(REPO, ".build/debug")))
N = int(os.environ.get("WEB_BENCH_ENTRIES", "250000"))
SECONDS = float(os.environ.get("WEB_BENCH_SECONDS", "600"))
PASSWORD = "bench-" + os.urandom(6).hex()


def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def main():
    links = sh("ip -o link").stdout.strip().splitlines()
    if len(links) != 1 or " lo:" not in links[0]:
        sys.exit("run inside a private network namespace (make bench-web does unshare -n)")
    sh("ip link set lo up")
    sh("sysctl -qw net.netfilter.nf_conntrack_acct=1")
    work = tempfile.mkdtemp(prefix="ctd-webbench-")
    passwd = os.path.join(work, "passwd")
    subprocess.run([f"{BIN}/ctd", "passwd", "add", "bench", "--file", passwd, "--stdin"], input=PASSWORD + "\n",
                   text=True, check=True, capture_output=True)
    cfg = os.path.join(work, "ctd.toml")
    with open(cfg, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1"\nport = 0\n[conntrack]\nhide = []\n[log]\nlevel = "warning"\n'
                f'[web]\nroot = "{REPO}/www"\n'
                f'[plugin.AuthSHA]\npassword_file = "{passwd}"\ndefault_roles = ["operator"]\n')
    sh("conntrack -F", check=False)
    t = time.perf_counter()
    sh(f"{BIN}/ctd-fill create {N} --timeout 3600")
    fill_s = time.perf_counter() - t
    proc = subprocess.Popen([f"{BIN}/ctd", "serve", "--config", cfg], stdout=subprocess.PIPE,
                            stderr=open(os.path.join(work, "ctd.err"), "w"), text=True)
    driver = None
    churn = None
    try:
        port = int(re.search(r"port (\d+)", proc.stdout.readline()).group(1))
        rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2")
        t = time.perf_counter()
        sid = rpc.login("bench", PASSWORD)
        total = rpc.view(sid, {}, "id", "ASC", 0, 50)["total"]
        ref_first_page = time.perf_counter() - t
        profile = tempfile.mkdtemp(prefix="ctd-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium")
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                  f"--user-data-dir={profile}", "--lang=en-US"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        driver.find_element(By.ID, "user").send_keys("bench")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        t = time.perf_counter()
        driver.find_element(By.ID, "login-btn").click()
        WebDriverWait(driver, 120, poll_frequency=0.01).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#rows tr"))
        first_paint = time.perf_counter() - t
        driver.execute_cdp_cmd("Performance.enable", {})

        def heap():
            driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
            m = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
            return next(x["value"] for x in m if x["name"] == "JSHeapUsedSize") / 1e6
        heap0 = heap()
        churn = subprocess.Popen(
            ["sh", "-c", f"while :; do {BIN}/ctd-fill create 200 --base 10.200.0.1 --timeout 3600 >/dev/null 2>&1;"
                         f" {BIN}/ctd-fill delete 200 --base 10.200.0.1 >/dev/null 2>&1; sleep 1; done"])
        end = time.monotonic() + SECONDS
        samples = []
        while time.monotonic() < end:
            time.sleep(min(60, max(0, end - time.monotonic())))
            samples.append(round(heap(), 2))
        churn.terminate()
        churn.wait()
        churn = None
        heap1 = heap()
        print(f"entries: {total} (filled in {fill_s:.1f} s)")
        print(f"first table paint after login click: {first_paint * 1000:.0f} ms "
              f"(reference: Python XML-RPC login + first page: {ref_first_page * 1000:.0f} ms)")
        print(f"JS heap used: {heap0:.2f} MB after first paint (reference), {heap1:.2f} MB after {SECONDS:.0f} s "
              f"of live updates (samples each minute: {samples})")
    finally:
        if churn is not None:
            churn.terminate()
            churn.wait()
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(30)
        sh("conntrack -F", check=False)


if __name__ == "__main__":
    main()
