"""Authentication (AuthSHA password files made by common tools), the passwd and plugins commands, sessions with
autorefresh on and off, and the default hide list."""

from __future__ import annotations

import re
import time

import pytest

from ctdtest import (CTD, TCPPair, assert_fault, conntrack_list, ct_delete, ct_insert, ids_of, run, wait_for,
                     write_config)

PASSWORDS = {
    "u_openssl": "open-Sesame 1",
    "u_mkpasswd": "mk-p@ss:2",
    "u_htpasswd": "ht-pass-3",
    "u_ctd": "ctd pass 4 é",
}


@pytest.fixture
def password_file(tmp_path):
    """A password file with one user per tool: openssl passwd -6, mkpasswd -m yescrypt, htpasswd -s, ctd."""
    f = tmp_path / "passwd"
    openssl = run(["openssl", "passwd", "-6", "-stdin"], input=PASSWORDS["u_openssl"] + "\n").stdout.strip()
    assert openssl.startswith("$6$")
    mkpasswd = run(["mkpasswd", "-m", "yescrypt", "--stdin"], input=PASSWORDS["u_mkpasswd"] + "\n").stdout.strip()
    assert mkpasswd.startswith("$y$")
    htpasswd = run(["htpasswd", "-n", "-i", "-s", "u_htpasswd"], input=PASSWORDS["u_htpasswd"]).stdout.strip()
    assert htpasswd.startswith("u_htpasswd:{SHA}")
    f.write_text(f"# made by the e2e suite\nu_openssl:{openssl}\nu_mkpasswd:{mkpasswd}\n{htpasswd}\n")
    f.chmod(0o600)
    run([str(CTD), "passwd", "add", "u_ctd", "--file", str(f), "--stdin"], input=PASSWORDS["u_ctd"] + "\n")
    return f


def test_login_withHashesFromOpensslMkpasswdHtpasswdAndCtd_onlyRightPasswordAccepted(ctd, password_file):
    c = ctd(password_file=password_file)
    rpc = c.proxy()
    failures = set()
    for user, password in PASSWORDS.items():
        sid = rpc.login(user, password)
        assert isinstance(sid, str) and len(sid) >= 16, user
        assert rpc.status(sid)["sessions"] >= 1
        assert rpc.logout(sid) is True
        f = assert_fault(1, rpc.login, user, password + "x")
        failures.add(f.faultString)
        f = assert_fault(1, rpc.login, user, password.upper())
        failures.add(f.faultString)
    f = assert_fault(1, rpc.login, "nobody", "whatever")
    failures.add(f.faultString)
    f = assert_fault(1, rpc.login, "", "")
    failures.add(f.faultString)
    assert len(failures) == 1, f"wrong password and unknown user must look the same: {failures}"


def test_passwd_listAndRemove_showSchemesAndRemoveUser(ctd, password_file):
    listing = run([str(CTD), "passwd", "list", "--file", str(password_file)]).stdout
    schemes = {line.split("\t")[0]: line.split("\t")[1] for line in listing.splitlines() if "\t" in line}
    assert schemes == {"u_openssl": "sha512-crypt", "u_mkpasswd": "yescrypt", "u_htpasswd": "htpasswd-sha1",
                       "u_ctd": "yescrypt"}
    assert "legacy" in [line for line in listing.splitlines() if line.startswith("u_htpasswd")][0]
    only = run([str(CTD), "passwd", "list", "u_ctd", "--file", str(password_file)]).stdout
    assert only.strip() == "u_ctd\tyescrypt"

    c = ctd(password_file=password_file)
    rpc = c.proxy()
    assert rpc.login("u_htpasswd", PASSWORDS["u_htpasswd"])
    run([str(CTD), "passwd", "remove", "u_htpasswd", "--file", str(password_file)])
    assert "u_htpasswd" not in password_file.read_text()
    assert "# made by the e2e suite" in password_file.read_text()  # comments are kept
    again = run([str(CTD), "passwd", "remove", "u_htpasswd", "--file", str(password_file)], check=False)
    assert again.returncode != 0
    # The running daemon reloads the file: the removed user can no longer log in, the others still can.
    wait_for(lambda: _login_fails(rpc, "u_htpasswd", PASSWORDS["u_htpasswd"]), timeout=4, interval=0.3,
             what="login of the removed user to fail")
    assert rpc.login("u_ctd", PASSWORDS["u_ctd"])


def _login_fails(rpc, user, password):
    try:
        rpc.login(user, password)
        return False
    except Exception as e:  # noqa: BLE001 - only a login fault counts
        return getattr(e, "faultCode", None) == 1


def test_login_userAddedToFileWhileRunning_canLogIn(ctd, password_file):
    c = ctd(password_file=password_file)
    rpc = c.proxy()
    assert_fault(1, rpc.login, "newbie", "fresh-pass")
    run([str(CTD), "passwd", "add", "newbie", "--file", str(password_file), "--stdin"], input="fresh-pass\n")
    sid = wait_for(lambda: None if _login_fails(rpc, "newbie", "fresh-pass") else rpc.login("newbie", "fresh-pass"),
                   timeout=4, interval=0.3, what="the new user to log in")
    assert rpc.status(sid)["version"]
    # Changing the password takes effect the same way.
    run([str(CTD), "passwd", "add", "newbie", "--file", str(password_file), "--stdin"], input="second-pass\n")
    wait_for(lambda: _login_fails(rpc, "newbie", "fresh-pass"), timeout=4, interval=0.3,
             what="the old password to stop working")
    assert rpc.login("newbie", "second-pass")


def _view_ids(rpc, sid, block="10.12.0.0/16"):
    v = rpc.view(sid, {"orig_src": block}, "", "ASC", 0, 50)
    return ids_of(v["connections"]), v


def test_autorefresh_offThenOn_viewFollowsSnapshotUntilRefresh(ctd):
    c = ctd()
    rpc, sid = c.login()
    live, live_sid = c.login()  # a second session keeps autorefresh on
    assert rpc.set_autorefresh(sid, False) is False
    e1 = ct_insert("udp", "10.12.0.1", "10.12.0.2", 100, 53)
    wait_for(lambda: _view_ids(live, live_sid)[0] == {e1["id"]}, timeout=1, what="e1 in the live session")
    time.sleep(0.2)
    ids, v = _view_ids(rpc, sid)
    assert ids == set() and v["autorefresh"] is False
    assert rpc.status(sid)["entries"] >= 1
    r = rpc.refresh(sid)
    assert r["autorefresh"] is False and r["entries"] >= 1 and isinstance(r["generation"], str)
    assert _view_ids(rpc, sid)[0] == {e1["id"]}
    # Still pinned: a deletion is not seen until the next refresh either.
    ct_delete("udp", "10.12.0.1", "10.12.0.2", 100, 53)
    wait_for(lambda: _view_ids(live, live_sid)[0] == set(), timeout=1, what="e1 gone in the live session")
    assert _view_ids(rpc, sid)[0] == {e1["id"]}
    rpc.refresh(sid)
    assert _view_ids(rpc, sid)[0] == set()
    # Back on: new entries show at once.
    assert rpc.set_autorefresh(sid, True) is True
    e2 = ct_insert("udp", "10.12.0.3", "10.12.0.2", 101, 53)
    ids = wait_for(lambda: _view_ids(rpc, sid)[0], timeout=1, what="e2 with autorefresh on")
    assert ids == {e2["id"]}
    assert _view_ids(rpc, sid)[1]["autorefresh"] is True


def test_hide_defaultList_hidesLoopbackAndOwnClientsButShowsOthers(ctd):
    c = ctd(hide=None)  # no hide key: the default list (127.0.0.0/8, ::1)
    rpc, sid = c.login()
    other = ct_insert("udp", "10.13.0.1", "10.13.0.2", 4444, 53, mark=3)
    with TCPPair("127.0.0.1", payload=2000) as v4, TCPPair("::1", payload=2000) as v6:
        kernel = conntrack_list()
        loopback = [k for k in kernel if k["src"] in ("127.0.0.1", "::1")]
        assert any(k["dport"] == v4.server_port for k in loopback)
        assert any(k["dport"] == v6.server_port and k["l3proto"] == "ipv6" for k in loopback)
        assert any(k["dport"] == c.port for k in loopback)  # this very client
        time.sleep(0.3)
        v = rpc.view(sid, {}, "", "ASC", 0, 50)
        assert v["total"] == 1 and [x["id"] for x in v["connections"]] == [str(other["id"])]
        assert rpc.view(sid, {"orig_src": "127.0.0.0/8"}, "", "ASC", 0, 50)["total"] == 0
        assert rpc.view(sid, {"orig_src": "::1"}, "", "ASC", 0, 50)["total"] == 0
        assert rpc.view(sid, {"orig_port_dst": v4.server_port}, "", "ASC", 0, 50)["total"] == 0
        # Hidden entries cannot be touched either.
        hidden = next(k for k in loopback if k["dport"] == v4.server_port)
        assert_fault(4, rpc.kill, sid, [str(hidden["id"])])
        assert_fault(4, rpc.change, sid, "mark", str(hidden["id"]), 5)
        assert hidden["id"] in {k["id"] for k in conntrack_list()}
        assert rpc.status(sid)["entries"] == 1


def test_serve_withUnknownAuthPlugin_exitsNonZeroNamingIt(tmp_path):
    cfg = tmp_path / "ctd.toml"
    pw = tmp_path / "passwd"
    run([str(CTD), "passwd", "add", "admin", "--file", str(pw), "--stdin"], input="x-secret\n")
    write_config(cfg, password_file=pw)
    p = run([str(CTD), "serve", "--config", str(cfg), "--port", "0", "--mod-auth", "NoSuchPlugin"], check=False,
            timeout=30)
    assert p.returncode != 0
    assert "NoSuchPlugin" in p.stderr + p.stdout
    assert "listening" not in p.stdout


def test_plugins_list_printsAuthSHAWithItsVersion(ctd, tmp_path):
    pw = tmp_path / "passwd"
    run([str(CTD), "passwd", "add", "admin", "--file", str(pw), "--stdin"], input="x-secret\n")
    out = run([str(CTD), "plugins", "list", "--password-file", str(pw)]).stdout
    line = next((x for x in out.splitlines() if x.startswith("AuthSHA\t")), None)
    assert line is not None, out
    fields = line.split("\t")
    assert fields[1] == "auth.sha"
    assert re.fullmatch(r"\d+\.\d+\.\d+", fields[2]), fields
    assert "ok" in fields
    # The same version as a running daemon reports.
    c = ctd(password_file=pw)
    rpc = c.proxy()
    sid = rpc.login("admin", "x-secret")
    plugins = {p["name"]: p for p in rpc.status(sid)["plugins"]}
    assert plugins["AuthSHA"]["version"] == fields[2] and plugins["AuthSHA"]["health"] == "ok"
