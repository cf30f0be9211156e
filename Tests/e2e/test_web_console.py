"""The web console (www/, served by ctd on GET /) driven in Debian's headless Chromium through Selenium and
chromedriver, against the built ctd with AuthSHA and AuditSQLite, on the real conntrack table of the suite's
private network namespace. Cross-checked with `conntrack -L` and the audit trail. Fails (never skips) when Chromium
or chromedriver cannot run. Screenshots go to .build/web-screenshots/.
"""
from __future__ import annotations

import csv
import html.parser
import http.client
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import xmlrpc.client
from pathlib import Path

import pytest

from ctdtest import (CTD, REPO, conntrack_list, ct_delete, ct_find, ct_insert, make_password_file, run, toml_str,
                     wait_for)

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as e:  # pragma: no cover - the suite must fail, not skip
    raise RuntimeError("selenium is not installed: run `make deps`") from e

SHOTS = REPO / ".build" / "web-screenshots"
WAIT = 20  # generous: a busy machine
XSS = "<img src=x onerror=alert(1)>"
ROLES = ('default_roles = ["operator"]\n\n[plugin.AuthSHA.roles]\nadmin = ["admin"]\nwatcher = "viewer"\n')
BANNER = "Authorised use only. <b>All actions are audited.</b>"


def _config(tmp_path: Path, extra_sessions: str = "") -> dict:
    db = tmp_path / "audit" / "audit.db"
    db.parent.mkdir(exist_ok=True)
    extra = (ROLES + f"\n[plugin.AuditSQLite]\ndatabase = {toml_str(str(db))}\n"
             + f"\n[web]\nroot = {toml_str(str(REPO / 'www'))}\nbanner = {toml_str(BANNER)}\n" + extra_sessions)
    return {"args": ["--plugin", "AuditSQLite"], "extra": extra}


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromium-driver are missing: run `make deps`", pytrace=False)
    profile = tempfile.mkdtemp(prefix="ctd-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,900",
              f"--user-data-dir={profile}", "--lang=en-US", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    # The network log (CDP events): which URLs the page requested and what ctd answered.
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    except Exception as e:
        pytest.fail(f"headless Chromium could not start: {e}", pytrace=False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def shot(driver, name):
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait(driver, timeout=WAIT):
    return WebDriverWait(driver, timeout, poll_frequency=0.05)


def visible(driver, css):
    return wait(driver).until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def no_alert(driver):
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def base(c) -> str:
    return f"{c.scheme}://127.0.0.1:{c.port}/"


def login(driver, c, user="admin", password=None, expect_ok=True):
    driver.get(base(c))
    wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    u = visible(driver, "#user")
    u.clear()
    u.send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password if password is not None else c.password)
    driver.find_element(By.ID, "login-btn").click()
    if expect_ok:
        visible(driver, "#app-view")
        wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))


def table_ids(driver) -> list[str]:
    # One script call: the rows may be replaced between two WebDriver calls (live updates).
    return driver.execute_script("return [...document.querySelectorAll('#rows tr')].map(r => r.dataset.id)")


def cell_text(driver, row_id, col) -> str | None:
    return driver.execute_script(
        "const c = document.querySelector(`#rows tr[data-id='${arguments[0]}'] td[data-col=${arguments[1]}]`);"
        "return c ? c.textContent : null;", str(row_id), col)


def click_in_row(driver, row_id, css):
    driver.execute_script(
        "document.querySelector(`#rows tr[data-id='${arguments[0]}'] ${arguments[1]}`).click()", str(row_id), css)


def add_filter(driver, key, value):
    Select(driver.find_element(By.ID, "f-key")).select_by_value(key)
    box = driver.find_element(By.ID, "f-value")
    box.clear()
    box.send_keys(value)
    before = driver.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
    driver.find_element(By.ID, "f-add").click()
    wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") != before)


def page_text(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


# ---------------------------------------------------------------------------------------------------------------


def test_static_files_headers_and_refusals(ctd, tmp_path):
    c = ctd(**_config(tmp_path))
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200 and r.getheader("Content-Type") == "text/html; charset=utf-8" and b"<main>" in body
    csp = r.getheader("Content-Security-Policy")
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.getheader("X-Content-Type-Options") == "nosniff" and r.getheader("Referrer-Policy") == "no-referrer"
    etag = r.getheader("ETag")
    conn.request("GET", "/", headers={"If-None-Match": etag})
    r = conn.getresponse()
    r.read()
    assert r.status == 304
    for path, ctype in (("/js/app.js", "text/javascript; charset=utf-8"), ("/css/app.css", "text/css; charset=utf-8"),
                        ("/config.json", "application/json; charset=utf-8")):
        conn.request("GET", path)
        r = conn.getresponse()
        data = r.read()
        assert r.status == 200 and r.getheader("Content-Type") == ctype, path
    assert json.loads(data) == {"banner": BANNER}
    for path in ("/nope.html", "/../ctd.sample.toml", "/js/../../Makefile", "/%2e%2e/Makefile", "/js//app.js"):
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        assert r.status == 404 and r.getheader("Content-Security-Policy"), path
    conn.request("GET", "/RPC2")
    r = conn.getresponse()
    r.read()
    assert r.status == 405  # the XML-RPC path stays POST only
    conn.request("DELETE", "/")
    r = conn.getresponse()
    r.read()
    assert r.status == 405
    # XML-RPC on POST / is unchanged.
    rpc, sid = c.login()
    assert rpc.view(sid, {}, "", "ASC", 0, 1)["total"] >= 0


def test_login_banner_bad_good_logout_and_expiry(ctd, tmp_path, browser):
    c = ctd(**_config(tmp_path, extra_sessions="\n[sessions]\nmax_lifetime = 4.0\n"))
    browser.get(base(c))
    banner = visible(browser, "#banner")
    assert banner.text == BANNER  # shown as text, markup included
    assert not browser.find_elements(By.CSS_SELECTOR, "#banner b")
    login(browser, c, password="wrong-password", expect_ok=False)
    msg = wait(browser).until(lambda d: d.find_element(By.ID, "login-msg").text)
    assert msg.startswith("Login failed")
    assert not browser.find_element(By.ID, "app-view").is_displayed()
    shot(browser, "login-failed")
    login(browser, c)
    assert "admin" in browser.find_element(By.ID, "who").text
    browser.find_element(By.ID, "logout").click()
    visible(browser, "#login-view")
    assert browser.find_element(By.ID, "login-msg").text == "You are logged out."
    # max_lifetime ends the session; the next call brings the login page with a sentence.
    login(browser, c)

    def expired(d):
        if d.find_element(By.ID, "login-view").is_displayed():
            return True
        d.find_element(By.ID, "f-clear").click()  # a call to the server
        return False
    wait(browser, 60).until(expired)
    assert "expired" in browser.find_element(By.ID, "login-msg").text
    assert no_alert(browser)


def test_filter_sort_page_live_kill_change_audit(ctd, tmp_path, browser):
    c = ctd(**_config(tmp_path))
    made = [ct_insert("tcp", f"10.61.0.{i}", "10.62.0.1", 20000 + i, 80, timeout=600, state="ESTABLISHED")
            for i in range(1, 41)]
    made += [ct_insert("udp", f"10.63.1.{i}", "10.64.0.9", 30000 + i, 53, timeout=600) for i in range(1, 6)]
    login(browser, c)
    Select(browser.find_element(By.ID, "page-size")).select_by_visible_text("25")
    # CIDR filter: the rows equal conntrack -L for the same block.
    add_filter(browser, "orig_src", "10.61.0.0/24")
    expected = sorted((e for e in conntrack_list("-s", "10.61.0.0/24")), key=lambda e: e["id"])
    assert len(expected) == 40
    assert table_ids(browser) == [str(e["id"]) for e in expected[:25]]
    assert "40" in browser.find_element(By.ID, "count").text
    # Sort by source port, descending: click twice.
    for _ in range(2):
        before = browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
        browser.find_element(By.CSS_SELECTOR, "th[data-col=orig_port_src] button").click()
        wait(browser).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") != before)
    by_port = sorted(expected, key=lambda e: -e["sport"])
    assert table_ids(browser) == [str(e["id"]) for e in by_port[:25]]
    # Page 2: the rest, and live updates pause there.
    browser.find_element(By.ID, "next").click()
    wait(browser).until(lambda d: table_ids(d) == [str(e["id"]) for e in by_port[25:]])
    assert "2" in browser.find_element(By.ID, "live").text
    browser.find_element(By.ID, "first").click()
    wait(browser).until(lambda d: table_ids(d) == [str(e["id"]) for e in by_port[:25]])
    # Host filter replaces the CIDR one.
    browser.find_element(By.ID, "f-clear").click()
    add_filter(browser, "host", "10.64.0.9")
    assert sorted(table_ids(browser)) == sorted(str(e["id"]) for e in conntrack_list("-d", "10.64.0.9"))
    assert len(table_ids(browser)) == 5
    shot(browser, "table")
    # conntrack -I appears within 1 s without reload; a deleted one disappears.
    t0 = time.monotonic()
    new = ct_insert("udp", "10.63.9.9", "10.64.0.9", 40000, 53, timeout=600)
    wait(browser, 1.0).until(lambda d: str(new["id"]) in table_ids(d))
    appeared = time.monotonic() - t0
    print(f"new connection shown after {appeared * 1000:.0f} ms")
    ct_delete("udp", "10.63.9.9", "10.64.0.9", 40000, 53)
    wait(browser).until(lambda d: str(new["id"]) not in table_ids(d))
    # Kill one row.
    victim = ct_find("udp", "10.63.1.1", "10.64.0.9", 30001, 53)
    click_in_row(browser, victim["id"], "input.sel")
    browser.find_element(By.ID, "kill-sel").click()
    visible(browser, "#confirm")
    assert "1" in browser.find_element(By.ID, "confirm-text").text
    browser.find_element(By.ID, "confirm-yes").click()
    wait(browser).until(lambda d: str(victim["id"]) not in table_ids(d))
    assert ct_find("udp", "10.63.1.1", "10.64.0.9", 30001, 53) is None
    # Change a mark.
    target = ct_find("udp", "10.63.1.2", "10.64.0.9", 30002, 53)
    click_in_row(browser, target["id"], "button.change")
    visible(browser, "#change")
    box = browser.find_element(By.ID, "c-value")
    box.clear()
    box.send_keys("3000000001")
    browser.find_element(By.ID, "c-ok").click()
    wait(browser).until(lambda _: (ct_find("udp", "10.63.1.2", "10.64.0.9", 30002, 53) or {}).get("mark") == 3000000001,
                        message=f"mark not changed; the page says: {browser.find_element(By.ID, 'msg').text!r}")
    wait(browser).until(lambda d: cell_text(d, target["id"], "mark") == "3000000001",
                        message=f"{cell_text(browser, target['id'], 'mark')!r} {table_ids(browser)} {target['id']}")
    # Kill by filter through the preview: the dialog shows the count that is killed.
    remaining = conntrack_list("-d", "10.64.0.9")
    assert len(remaining) == 4
    browser.find_element(By.ID, "kill-filter").click()
    visible(browser, "#confirm")
    assert "4" in browser.find_element(By.ID, "confirm-text").text
    assert "10.63.1." in browser.find_element(By.ID, "confirm-detail").text
    shot(browser, "kill-preview")
    browser.find_element(By.ID, "confirm-yes").click()
    wait(browser).until(lambda d: table_ids(d) == [])
    assert conntrack_list("-d", "10.64.0.9") == []
    assert len(conntrack_list("-s", "10.61.0.0/24")) == 40  # outside the filter: untouched
    # Both kills and the change are in the audit trail, shown to the admin.
    browser.find_element(By.CSS_SELECTOR, "[data-tab=audit]").click()
    Select(browser.find_element(By.ID, "a-action")).select_by_value("kill")
    browser.find_element(By.CSS_SELECTOR, "#audit-form button").click()

    def audit_text(d):
        return d.execute_script("return document.querySelector('#audit tbody').textContent")
    text = wait(browser).until(lambda d: (t := audit_text(d)) and str(victim["id"]) in t and t)
    for e in remaining:
        assert str(e["id"]) in text
    shot(browser, "audit")


def test_summary_counts_match_conntrack(ctd, tmp_path, browser):
    c = ctd(**_config(tmp_path))
    for i in range(1, 8):
        for j in range(i):
            ct_insert("tcp", f"10.71.0.{i}", "10.72.0.1", 21000 + j, 443, timeout=600, state="ESTABLISHED")
    login(browser, c)
    browser.find_element(By.CSS_SELECTOR, "[data-tab=summary]").click()
    fig = visible(browser, "figure[data-group=orig_src]")
    counts: dict[str, int] = {}
    for e in conntrack_list("-s", "10.71.0.0/24"):
        counts[e["src"]] = counts.get(e["src"], 0) + 1
    lines = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "figure[data-group=orig_src] svg text"))
    texts = [t.text for t in lines]
    shown = dict(zip(texts[0::2], (int(x.replace(",", "").replace("\u202f", "")) for x in texts[1::2])))
    for src, n in counts.items():
        assert shown.get(src) == n, (src, n, shown)
    fill = browser.find_element(By.ID, "fill").text
    assert str(len(conntrack_list())) in fill.replace(",", "")
    shot(browser, "summary")
    assert fig.is_displayed()


def test_language_switch_translates_every_string(ctd, tmp_path, browser):
    c = ctd(**_config(tmp_path))
    ct_insert("tcp", "10.81.0.1", "10.82.0.1", 22000, 22, timeout=600, state="ESTABLISHED")
    login(browser, c)
    Select(browser.find_element(By.ID, "lang")).select_by_value("fr")
    msgs = browser.execute_async_script(
        "const done = arguments[arguments.length - 1]; import('/js/i18n.js').then(m => done(m.messages));")
    en, fr = msgs["en"], msgs["fr"]
    assert set(en) == set(fr), set(en) ^ set(fr)
    for tab in ("table", "summary", "audit"):
        browser.find_element(By.CSS_SELECTOR, f"[data-tab={tab}]").click()
        for e in browser.find_elements(By.CSS_SELECTOR, "[data-i18n]"):
            if e.is_displayed():
                assert e.text == fr[e.get_attribute("data-i18n")].strip(), e.get_attribute("data-i18n")
        text = page_text(browser)
        for key, s in en.items():
            if s != fr[key] and "{" not in s and len(s) > 3:
                assert s not in text.splitlines(), f"English '{s}' ({key}) left in French mode"
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
    browser.find_element(By.CSS_SELECTOR, "[data-tab=table]").click()
    assert "Connexions" in page_text(browser)
    shot(browser, "table-fr")
    Select(browser.find_element(By.ID, "lang")).select_by_value("en")


def test_viewer_has_no_kill_control_and_xss_stays_inert(ctd, tmp_path, browser):
    c = ctd(**_config(tmp_path))
    make_password_file(c.password_file, "watcher", "pw-watcher")
    make_password_file(c.password_file, XSS, "pw-xss")
    ct_insert("tcp", "10.91.0.1", "10.92.0.1", 23000, 25, timeout=600, state="ESTABLISHED")

    def try_login(user, pw):
        login(browser, c, user=user, password=pw, expect_ok=False)
        return wait(browser).until(lambda d: d.find_element(By.ID, "app-view").is_displayed()
                                   or d.find_element(By.ID, "login-msg").text)
    # AuthSHA rereads its password file at most once a second.
    wait(browser, 30, ).until(lambda d: try_login("watcher", "pw-watcher") is True)
    wait(browser).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
    assert table_ids(browser)
    for css in ("#kill-sel", "#kill-filter"):
        assert not browser.find_element(By.CSS_SELECTOR, css).is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "input.sel, button.change")
    assert not browser.find_element(By.ID, "audit-tab").is_displayed()
    shot(browser, "viewer")
    browser.find_element(By.ID, "logout").click()
    wait(browser, 30).until(lambda d: try_login(XSS, "pw-xss") is True)
    who = browser.find_element(By.ID, "who")
    assert XSS in who.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#who img, header img")
    assert no_alert(browser)
    browser.find_element(By.ID, "logout").click()
    # The probe as a name in the audit trail, read by the admin.
    login(browser, c)
    browser.find_element(By.CSS_SELECTOR, "[data-tab=audit]").click()
    browser.find_element(By.CSS_SELECTOR, "#audit-form button").click()
    wait(browser).until(lambda d: XSS in d.execute_script("return document.getElementById('audit').textContent"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#audit img")
    assert no_alert(browser)


# ---------------------------------------------------------------------------------------------------------------
# Scoped users, timeout changes, the column chooser, exports, TLS and refusals, labels, the chain's verify status.


def network_log(driver) -> list[dict]:
    """The CDP Network events Chromium logged since the last call (reading drains the log)."""
    out = []
    for entry in driver.get_log("performance"):
        m = json.loads(entry["message"])["message"]
        if m["method"].startswith("Network."):
            out.append(m)
    return out


def digits(text: str | None) -> int | None:
    """A number the page formatted in its locale (grouping separators and all), as an int."""
    d = re.sub(r"\D", "", text or "")
    return int(d) if d else None


def _nss_env(tmp_path: Path) -> dict[str, str]:
    """nss_wrapper with alice = 1000 and bob = 1001 (UIDResolver resolves the uid in the mark through NSS)."""
    p = subprocess.run(["dpkg", "-L", "libnss-wrapper"], capture_output=True, text=True)
    lib = next((line for line in p.stdout.splitlines() if line.endswith("/libnss_wrapper.so")), None)
    if lib is None or not Path(lib).exists():
        pytest.fail("libnss_wrapper.so not found: install libnss-wrapper (`make test-deps`)", pytrace=False)
    passwd, group = tmp_path / "nss-passwd", tmp_path / "nss-group"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/:/bin/sh\nbob:x:1001:1001::/:/bin/sh\n")
    group.write_text("root:x:0:\nalice:x:1000:\nbob:x:1001:\n")
    return {"LD_PRELOAD": lib, "NSS_WRAPPER_PASSWD": str(passwd), "NSS_WRAPPER_GROUP": str(group)}


def test_scoped_user_sees_only_their_own_connections(ctd, tmp_path, browser, monkeypatch):
    pw = tmp_path / "passwd"
    make_password_file(pw, "admin", "pw-admin")
    make_password_file(pw, "alice", "pw-alice")
    cfg = _config(tmp_path)
    cfg["args"] += ["--plugin", "UIDResolver"]
    cfg["extra"] = ('own_scope = ["alice"]\n' + cfg["extra"]
                    + "\n[plugin.UIDResolver]\nmask = 0xFFFF\ncache_ttl = 60\n")
    with monkeypatch.context() as m:
        for k, v in _nss_env(tmp_path).items():
            m.setenv(k, v)
        c = ctd(password="pw-admin", password_file=pw, **cfg)
    for i in range(1, 4):
        ct_insert("udp", f"10.66.0.{i}", "10.66.9.1", 27000 + i, 53, mark=1000, timeout=600)
    for i in range(1, 3):
        ct_insert("udp", f"10.66.1.{i}", "10.66.9.1", 27100 + i, 53, mark=1001, timeout=600)
    alices = sorted(str(e["id"]) for e in conntrack_list("--mark", "1000"))
    bobs = sorted(str(e["id"]) for e in conntrack_list("--mark", "1001"))
    assert len(alices) == 3 and len(bobs) == 2
    # The admin (unscoped) sees all five: the reference (filtered: the table also holds the browser's own loopback
    # connections to chromedriver).
    login(browser, c, user="admin", password="pw-admin")
    add_filter(browser, "orig_dst", "10.66.9.1")
    wait(browser).until(lambda d: sorted(table_ids(d)) == sorted(alices + bobs),
                        message=f"the admin sees {table_ids(browser)}; conntrack -L: {alices + bobs}; "
                        f"{browser.find_element(By.ID, 'msg').text!r}")
    browser.find_element(By.ID, "logout").click()
    login(browser, c, user="alice", password="pw-alice")
    assert "alice" in browser.find_element(By.ID, "who").text
    # No filter at all: the server gives alice her own connections and nothing else.
    wait(browser).until(lambda d: sorted(table_ids(d)) == alices,
                        message=f"alice sees {table_ids(browser)}, conntrack -L --mark 1000 shows {alices}")
    assert digits(browser.find_element(By.ID, "count").text) == 3
    assert {cell_text(browser, i, "username") for i in alices} == {"alice"}
    # Even a filter naming bob's connections shows none of them.
    add_filter(browser, "orig_src", "10.66.1.0/24")
    assert table_ids(browser) == []
    browser.find_element(By.ID, "f-clear").click()
    wait(browser).until(lambda d: sorted(table_ids(d)) == alices)
    shot(browser, "scoped")
    # Kill by filter: the destination all five share previews her three; cancelled, nothing is killed.
    add_filter(browser, "orig_dst", "10.66.9.1")
    wait(browser).until(lambda d: sorted(table_ids(d)) == alices)
    browser.find_element(By.ID, "kill-filter").click()
    visible(browser, "#confirm")
    assert digits(browser.find_element(By.ID, "confirm-text").text) == 3
    browser.find_element(By.ID, "confirm-no").click()
    wait(browser).until(lambda d: not d.find_element(By.ID, "confirm").is_displayed())
    assert len(conntrack_list("-d", "10.66.9.1")) == 5
    # The summary's users are hers alone.
    browser.find_element(By.CSS_SELECTOR, "[data-tab=summary]").click()
    texts = wait(browser).until(lambda d: [t.text for t in d.find_elements(
        By.CSS_SELECTOR, "figure[data-group=username] svg text")] or None)
    assert texts == ["alice", "3"], texts
    # Table-wide figures (stats) are not hers: the panel says so in a sentence, not as an error.
    assert browser.find_element(By.ID, "fill").text == ("Table-wide figures (fill, kernel counters) are not shown to "
                                                        "a user who sees only their own connections.")
    assert not browser.find_element(By.ID, "msg").text
    browser.find_element(By.CSS_SELECTOR, "[data-tab=table]").click()
    browser.find_element(By.ID, "logout").click()


def test_change_timeout_and_column_chooser_remembered(ctd, tmp_path, browser):
    c = ctd(**_config(tmp_path))
    e = ct_insert("tcp", "10.51.0.1", "10.52.0.1", 24000, 8080, timeout=600, state="ESTABLISHED")
    login(browser, c)
    try:
        add_filter(browser, "host", "10.52.0.1")
        wait(browser).until(lambda d: table_ids(d) == [str(e["id"])])
        # Timeout: 600 -> 5000, seen in conntrack -L and in the row.
        click_in_row(browser, e["id"], "button.change")
        visible(browser, "#change")
        Select(browser.find_element(By.ID, "c-field")).select_by_value("timeout")
        box = browser.find_element(By.ID, "c-value")
        box.clear()
        box.send_keys("5000")
        browser.find_element(By.ID, "c-ok").click()
        wait(browser).until(
            lambda _: 4000 < (ct_find("tcp", "10.51.0.1", "10.52.0.1", 24000, 8080) or {}).get("timeout", 0) <= 5000,
            message=f"timeout not changed; the page says {browser.find_element(By.ID, 'msg').text!r}")
        wait(browser).until(lambda d: 4000 < (digits(cell_text(d, e["id"], "timeout")) or 0) <= 5000)
        assert ct_find("tcp", "10.51.0.1", "10.52.0.1", 24000, 8080)["mark"] == 0  # the mark untouched
        # Column chooser: hide Mark, show Zone and Reply source.
        browser.find_element(By.CSS_SELECTOR, "#columns summary").click()
        for col in ("mark", "zone", "repl_src"):
            browser.find_element(By.ID, f"col-{col}").click()

        def heads(d):
            return d.execute_script(
                "return [...document.querySelectorAll('#head th[data-col]')].map(t => t.dataset.col)")
        assert "mark" not in heads(browser) and {"zone", "repl_src"} <= set(heads(browser))
        assert cell_text(browser, e["id"], "mark") is None
        assert cell_text(browser, e["id"], "repl_src") == ct_find("tcp", "10.51.0.1", "10.52.0.1", 24000,
                                                                   8080)["repl_src"]
        assert cell_text(browser, e["id"], "zone") == "0"
        shot(browser, "columns")
        # Remembered: a reload (which logs out) and a new login show the same columns.
        stored = json.loads(browser.execute_script("return localStorage.getItem('ctd.columns')"))
        assert "mark" not in stored and {"zone", "repl_src"} <= set(stored)
        chosen = heads(browser)
        login(browser, c)
        assert heads(browser) == chosen
        assert browser.find_element(By.ID, "col-mark").is_selected() is False
        assert browser.find_element(By.ID, "col-zone").is_selected() is True
    finally:
        browser.execute_script("localStorage.removeItem('ctd.columns')")


def _wait_download(directory: Path, name: str) -> Path:
    # Chromium writes NAME.crdownload and renames it to NAME when the download is complete.
    path = directory / name
    wait_for(path.exists, timeout=WAIT, what=f"the download {name} (in {sorted(directory.iterdir())})")
    return path


def test_export_csv_and_json_equal_conntrack(ctd, tmp_path, browser):
    c = ctd(**_config(tmp_path))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    # 160 rows (more than one 150-row page of view), half of them with marks above 2^31, and 5 outside the filter.
    for i in range(160):
        run(["conntrack", "-I", "-p", "udp", "-s", f"10.41.{i // 100}.{i % 100 + 1}", "-d", "10.42.0.1",
             "--sport", str(25000 + i), "--dport", "53", "-t", "600", "-m", str(3_000_000_000 + i if i % 2 else i)])
    for i in range(5):
        ct_insert("udp", f"10.43.0.{i + 1}", "10.42.0.1", 25500 + i, 53, timeout=600)
    login(browser, c)
    add_filter(browser, "orig_src", "10.41.0.0/16")
    wait(browser).until(lambda d: digits(d.find_element(By.ID, "count").text) == 160)
    browser.find_element(By.ID, "export-csv").click()
    csv_path = _wait_download(downloads, "ctd-connections.csv")
    browser.find_element(By.ID, "export-json").click()
    json_path = _wait_download(downloads, "ctd-connections.json")
    kernel = {str(e["id"]): e for e in conntrack_list("-s", "10.41.0.0/16")}  # after the export: timeouts lower
    assert len(kernel) == 160

    def check(row, e, as_text):
        conv = str if as_text else (lambda x: x)
        assert row["l4proto"] == "udp" and row["orig_src"] == e["src"] and row["orig_dst"] == e["dst"]
        assert row["orig_port_src"] == conv(e["sport"]) and row["orig_port_dst"] == conv(e["dport"])
        assert row["repl_src"] == e["repl_src"] and row["repl_dst"] == e["repl_dst"]
        assert row["mark"] == conv(e["mark"]), (row["mark"], e["mark"])  # unsigned, as conntrack shows it
        assert e["timeout"] - 1 <= int(row["timeout"]) <= 600
        assert row["zone"] == conv(e["zone"])

    with open(csv_path, newline="") as f:
        text = f.read()
    assert text.endswith("\r\n")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["id"] for r in rows) == sorted(kernel)
    for r in rows:
        check(r, kernel[r["id"]], as_text=True)
    data = json.loads(json_path.read_text())
    assert sorted(r["id"] for r in data) == sorted(kernel)
    for r in data:
        check(r, kernel[r["id"]], as_text=False)
        assert r["labels"] == [] and r["bytes"] == 0
    print(f"exported {len(rows)} rows as CSV ({csv_path.stat().st_size} bytes) and JSON "
          f"({json_path.stat().st_size} bytes)")


class _HostilePage(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


HOSTILE_JS = r"""
// Another origin's page trying to kill and change through a session id it somehow holds.
window.attack = async (url, sid, killId, changeId) => {
  const call = (m, ...p) => `<?xml version="1.0"?><methodCall><methodName>${m}</methodName><params>` +
    p.map((v) => `<param><value><string>${v}</string></value></param>`).join('') + '</params></methodCall>';
  const kill = `<?xml version="1.0"?><methodCall><methodName>kill</methodName><params><param><value><string>${sid}` +
    `</string></value></param><param><value><array><data><value><string>${killId}</string></value></data></array>` +
    '</value></param></params></methodCall>';
  const change = call('change', sid, 'mark', changeId, '77');
  const out = {};
  for (const [name, body] of [['kill', kill], ['change', change]]) {
    // A "simple" request needs no preflight: text/plain, the answer opaque to this page.
    try { await fetch(url, { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body });
      out[name + '_simple'] = 'sent'; } catch (e) { out[name + '_simple'] = 'blocked'; }
    // text/xml needs a CORS preflight, which ctd does not grant.
    try { const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'text/xml' }, body });
      out[name + '_cors'] = 'answered ' + r.status; } catch (e) { out[name + '_cors'] = 'blocked'; }
  }
  return out;
};
document.body.dataset.ready = '1';
"""


class _Scripts(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.inline, self.handlers, self.srcs = 0, [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            if a.get("src"):
                self.srcs.append(a["src"])
            else:
                self.inline += 1
        self.handlers += [k for k in a if k.startswith("on")]


def test_console_over_tls_headers_session_and_cross_origin_refusals(ctd, tmp_path, browser):
    crt, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)])
    key.chmod(0o600)
    c = ctd(tls_cert=crt, tls_key=key, **_config(tmp_path))
    assert c.scheme == "https"
    # Headers of the static side over TLS.
    conn = c.http()
    for path in ("/", "/js/app.js", "/css/app.css", "/config.json"):
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, path
        assert r.getheader("Strict-Transport-Security") == "max-age=31536000", path
        csp = r.getheader("Content-Security-Policy")
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, (path, csp)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (path, csp)
        assert r.getheader("X-Content-Type-Options") == "nosniff", path
        if path == "/":
            page = _Scripts()
            page.feed(body.decode())
            assert page.inline == 0 and page.handlers == [] and page.srcs == ["/js/app.js"]
    conn.close()
    victim = ct_insert("udp", "10.21.0.1", "10.22.0.1", 28001, 53, timeout=600, mark=5)
    target = ct_insert("udp", "10.21.0.2", "10.22.0.1", 28002, 53, timeout=600, mark=5)
    network_log(browser)  # drain what earlier tests left
    browser.execute_cdp_cmd("Security.setIgnoreCertificateErrors", {"ignore": True})  # the test's own certificate
    evil = None
    try:
        login(browser, c)
        assert browser.current_url == base(c) and base(c).startswith("https://")
        # The session id, from the body of the login answer as Chromium received it.
        events = network_log(browser)
        sent = {m["params"]["requestId"]: m["params"]["request"] for m in events
                if m["method"] == "Network.requestWillBeSent"}
        login_req = [rid for rid, req in sent.items()
                     if req["method"] == "POST" and "<methodName>login</methodName>" in req.get("postData", "")]
        assert len(login_req) == 1, [r.get("postData", "")[:80] for r in sent.values()]
        answer = browser.execute_cdp_cmd("Network.getResponseBody", {"requestId": login_req[0]})["body"]
        sid = xmlrpc.client.loads(answer)[0][0]
        assert isinstance(sid, str) and len(sid) >= 16
        assert c.proxy().view(sid, {}, "", "ASC", 0, 1)["total"] >= 1  # it is the live session
        # Never in a URL, a cookie, web storage or ctd's output.
        urls = [req["url"] for req in sent.values()]
        assert urls and not [u for u in urls if sid in u], urls
        assert sid not in browser.current_url and browser.get_cookies() == []
        stored = browser.execute_script(
            "return JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage}])")
        assert sid not in stored
        assert sid not in c.stderr() and sid not in (c.workdir / "ctd.stdout").read_text(errors="replace")
        # Reference: the same-origin console kills one row (cross-checked with conntrack -L).
        add_filter(browser, "host", "10.22.0.1")
        click_in_row(browser, victim["id"], "input.sel")
        browser.find_element(By.ID, "kill-sel").click()
        visible(browser, "#confirm")
        browser.find_element(By.ID, "confirm-yes").click()
        wait(browser).until(lambda d: str(victim["id"]) not in table_ids(d))
        assert ct_find("udp", "10.21.0.1", "10.22.0.1", 28001, 53) is None
        # Another origin (a page served from another port of 127.0.0.1) with a valid admin session id of its own.
        site = tmp_path / "hostile"
        site.mkdir()
        (site / "index.html").write_text('<!doctype html><html><body><script src="/evil.js"></script></body></html>')
        (site / "evil.js").write_text(HOSTILE_JS)
        handler = lambda *a, **kw: _HostilePage(*a, directory=str(site), **kw)  # noqa: E731
        evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=evil.serve_forever, daemon=True).start()
        _, forged_sid = c.login()
        browser.get(f"http://127.0.0.1:{evil.server_address[1]}/")
        wait(browser).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        network_log(browser)
        out = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.attack(arguments[0], arguments[1], arguments[2], arguments[3]).then(done, (e) => done(String(e)));",
            f"https://127.0.0.1:{c.port}/", forged_sid, str(target["id"]), str(target["id"]))
        assert out == {"kill_simple": "sent", "kill_cors": "blocked", "change_simple": "sent",
                       "change_cors": "blocked"}, out
        # What reached ctd and what it answered, as Chromium logged it: refusals only (the two simple POSTs 403 or
        # 415; the preflights of the text/xml ones, when logged, not granted), never a 200.
        statuses = [m["params"]["response"]["status"] for m in network_log(browser)
                    if m["method"] == "Network.responseReceived"
                    and m["params"]["response"]["url"].startswith(f"https://127.0.0.1:{c.port}/")]
        assert 200 not in statuses and sum(s in (403, 415) for s in statuses) >= 2, statuses
        print(f"cross-origin calls answered {statuses}")
        # What ctd answers that request, read outside the browser: a refusal with a sentence.
        status, reply = c.post(b"<methodCall/>", path="/", headers={
            "Origin": f"http://127.0.0.1:{evil.server_address[1]}", "Content-Type": "text/xml"})
        assert status == 403 and b"another origin" in reply, (status, reply)
        # Nothing happened: the entry is there with its mark, and the trail has no kill or change of it.
        still = ct_find("udp", "10.21.0.2", "10.22.0.1", 28002, 53)
        assert still is not None and still["mark"] == 5
        rpc, admin_sid = c.login()
        acted = [r for r in rpc.audit_list(admin_sid, {}, 200) if str(r.get("conn_id")) == str(target["id"])]
        assert acted == [], acted
    finally:
        browser.execute_cdp_cmd("Security.setIgnoreCertificateErrors", {"ignore": False})
        if evil is not None:
            evil.shutdown()
            evil.server_close()


LABEL_XSS = "<img/src=x/onerror=alert(1)>"  # one word: a valid connlabel.conf name


def _conntrack_with_labels(conf: Path, *args) -> str:
    """conntrack with `conf` as /etc/xtables/connlabel.conf (the only place it reads label names), in a private
    mount namespace with a tmpfs over /etc."""
    script = ('mount -t tmpfs ctdweb /etc && mkdir /etc/xtables && cat > /etc/xtables/connlabel.conf && '
              'exec conntrack "$@"')
    return run(["unshare", "-m", "sh", "-c", script, "conntrack", *args], input=conf.read_text()).stdout


def test_connlabel_named_like_the_xss_probe_stays_inert(ctd, tmp_path, browser):
    # ctd reads label names from its connlabel_file: there bit 3 is named like the probe. conntrack(8) (through
    # libnetfilter_conntrack 1.0.9) skips such a line: it takes only names of letters, digits and '-', so it sets
    # and shows bit 3 through a file of its own that calls it "probe". Same kernel bit, two names.
    ctd_conf = tmp_path / "connlabel.conf"
    ctd_conf.write_text(f"0 web\n3 {LABEL_XSS}\n")
    ct_conf = tmp_path / "connlabel-conntrack.conf"
    ct_conf.write_text("0 web\n3 probe\n")
    # The kernel gives entries room for labels only when a rule uses ct labels.
    run(["nft", "-f", "-"], input="table inet ctdweblabels {\n chain labels {\n  ct label set 127\n }\n}\n")
    try:
        c = ctd(connlabel_file=ctd_conf, **_config(tmp_path))
        e = ct_insert("udp", "10.31.0.1", "10.32.0.1", 26000, 53, timeout=600)
        other = ct_insert("udp", "10.31.0.2", "10.32.0.1", 26001, 53, timeout=600)
        _conntrack_with_labels(ct_conf, "-U", "-p", "udp", "-s", "10.31.0.1", "--label-add", "probe")
        _conntrack_with_labels(ct_conf, "-U", "-p", "udp", "-s", "10.31.0.1", "--label-add", "web")
        listed = _conntrack_with_labels(ct_conf, "-L", "-p", "udp", "-s", "10.31.0.1", "-o", "id,labels")
        assert f"id={e['id']} labels=web,probe" in listed, listed
        # What conntrack makes of ctd's file: the probe's line does not exist for it.
        refused = run(["unshare", "-m", "sh", "-c", "mount -t tmpfs ctdweb /etc && mkdir /etc/xtables && "
                       "cat > /etc/xtables/connlabel.conf && exec conntrack -U -p udp -s 10.31.0.1 --label-add \"$0\"",
                       LABEL_XSS], input=ctd_conf.read_text(), check=False)
        assert refused.returncode != 0 and "unknown label" in refused.stderr, refused.stderr
        login(browser, c)
        add_filter(browser, "host", "10.32.0.1")
        wait(browser).until(lambda d: cell_text(d, e["id"], "labels") == f"web, {LABEL_XSS}",
                            message=f"labels cell: {cell_text(browser, e['id'], 'labels')!r}")
        assert cell_text(browser, other["id"], "labels") == ""
        # A filter by that name (typed into the filter bar) finds it, and only it.
        add_filter(browser, "label", LABEL_XSS)
        wait(browser).until(lambda d: table_ids(d) == [str(e["id"])])
        assert LABEL_XSS in browser.find_element(By.ID, "chips").text
        assert not browser.find_elements(By.CSS_SELECTOR, "img")
        assert no_alert(browser)
        shot(browser, "label-xss")
    finally:
        run(["nft", "delete", "table", "inet", "ctdweblabels"], check=False)


def test_audit_panel_shows_the_chain_verify_status(ctd, tmp_path, browser):
    c = ctd(**_config(tmp_path))
    db = tmp_path / "audit" / "audit.db"
    e = ct_insert("udp", "10.11.0.1", "10.12.0.1", 29000, 53, timeout=600)
    rpc, sid = c.login()
    wait_for(lambda: rpc.view(sid, {"host": "10.12.0.1"}, "", "ASC", 0, 1)["total"] == 1, timeout=WAIT,
             what="the entry in view")
    assert rpc.kill(sid, [str(e["id"])])["killed"] == 1
    login(browser, c)
    browser.find_element(By.CSS_SELECTOR, "[data-tab=audit]").click()
    verify = browser.find_element(By.ID, "verify")
    wait(browser).until(lambda d: verify.get_attribute("data-state") == "ok",
                        message=f"verify line: {verify.text!r} {verify.get_attribute('data-state')}")
    shown = digits(verify.text)
    detail = browser.find_element(By.ID, "verify-detail").text
    assert verify.text.startswith("Audit chain verified: intact") and "chain intact" in detail, (verify.text, detail)
    # Cross-checked: the call's own record (written after the check) holds the same sentence, and the records
    # before it are the ones counted; `ctd audit verify` agrees.
    out = run(["sqlite3", str(db), "SELECT seq, new_value FROM audit WHERE field = 'verify' ORDER BY seq DESC LIMIT 1"])
    seq, sentence = out.stdout.strip().split("|", 1)
    assert sentence == detail.splitlines()[0] and int(seq) == shown + 1, (out.stdout, shown, detail)
    cli = run([str(CTD), "audit", "verify", "--db", str(db)])
    assert "chain intact" in cli.stdout
    shot(browser, "audit-verify")
    # An intruder edits the login record (dropping the append-only trigger first): the panel says so.
    run(["sqlite3", str(db), "DROP TRIGGER audit_no_update; UPDATE audit SET user = 'mallory' WHERE seq = 1"])
    browser.find_element(By.CSS_SELECTOR, "#audit-form button").click()
    wait(browser).until(lambda d: verify.get_attribute("data-state") == "bad",
                        message=f"verify line: {verify.text!r}")
    assert digits(verify.text) == 1 and "FAILED" in verify.text
    detail = browser.find_element(By.ID, "verify-detail").text
    assert detail.startswith("FAILED at seq 1: the row was changed after it was written"), detail
    assert "audit_no_update is missing" in detail
    cli = run([str(CTD), "audit", "verify", "--db", str(db)], check=False)
    assert cli.returncode == 1 and "FAILED at seq 1:" in cli.stdout
    shot(browser, "audit-verify-failed")
    # In French, the status line is translated; the server's sentence stays as the server wrote it.
    Select(browser.find_element(By.ID, "lang")).select_by_value("fr")
    browser.find_element(By.CSS_SELECTOR, "#audit-form button").click()
    wait(browser).until(lambda d: "ÉCHOUÉE" in verify.text, message=verify.text)
    shot(browser, "audit-verify-failed-fr")
    Select(browser.find_element(By.ID, "lang")).select_by_value("en")
    # An operator has no audit tab, and the server refuses the procedure (fault 3).
    make_password_file(c.password_file, "op2", "pw-op2")
    wait_for(lambda: _try_login(c, "op2", "pw-op2"), timeout=30, what="op2's login")
    op, op_sid = _try_login(c, "op2", "pw-op2")
    with pytest.raises(xmlrpc.client.Fault) as f:
        op.audit_verify(op_sid)
    assert f.value.faultCode == 3


def _try_login(c, user, password):
    try:
        return c.login(user, password)
    except xmlrpc.client.Fault:
        return None
