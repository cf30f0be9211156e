"""The web console (www/, served by ctd on GET /) driven in Debian's headless Chromium through Selenium and
chromedriver, against the built ctd with AuthSHA and AuditSQLite, on the real conntrack table of the suite's
private network namespace. Cross-checked with `conntrack -L` and the audit trail. Fails (never skips) when Chromium
or chromedriver cannot run. Screenshots go to .build/web-screenshots/.
"""
from __future__ import annotations

import http.client
import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from ctdtest import REPO, conntrack_list, ct_find, ct_insert, ct_delete, make_password_file, toml_str, wait_for

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
