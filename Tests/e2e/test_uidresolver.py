"""UIDResolver: uid and username from the connection mark, resolved through NSS (nss_wrapper), in view, filters and
ordering; real entries inserted with conntrack -I; the plugin dlopen'ed by the built ctd."""

from __future__ import annotations

import socket
import subprocess
import tomllib
from pathlib import Path

import pytest

from ctdtest import BIN_DIR, CTD, MAX_PAGE, REPO, ct_insert, make_password_file, run, view_all, wait_for

PLUGIN_DIR = REPO / "Plugins" / "UIDResolver"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001:Bob:/home/bob:/bin/sh
"""
GROUP = """\
root:x:0:
alice:x:1000:
bob:x:1001:
"""
TEST_NET = "10.77.0.0/16"


def _nss_wrapper_library() -> str:
    p = subprocess.run(["dpkg", "-L", "libnss-wrapper"], capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.endswith("/libnss_wrapper.so") and Path(line).exists():
            return line
    pytest.fail("libnss_wrapper.so not found: install the Debian package libnss-wrapper (`make deps`)",
                pytrace=False)


@pytest.fixture
def nss(tmp_path) -> dict[str, str]:
    """The environment of a fake user database (alice = 1000, bob = 1001) served by nss_wrapper."""
    passwd = tmp_path / "nss-passwd"
    group = tmp_path / "nss-group"
    passwd.write_text(PASSWD)
    group.write_text(GROUP)
    return {"LD_PRELOAD": _nss_wrapper_library(), "NSS_WRAPPER_PASSWD": str(passwd),
            "NSS_WRAPPER_GROUP": str(group)}


@pytest.fixture(scope="module", autouse=True)
def built_plugin():
    library = BIN_DIR / "libUIDResolver.so"
    if not library.is_file():
        pytest.fail(f"{library} is missing: Package.swift must have the UIDResolver product; run `swift build`",
                    pytrace=False)


@pytest.fixture
def uid_ctd(ctd, nss, monkeypatch):
    """Starts `ctd serve --plugin UIDResolver --show-all` under nss_wrapper with a [plugin.UIDResolver] section."""
    def start(section: str):
        with monkeypatch.context() as m:
            for key, value in nss.items():
                m.setenv(key, value)
            return ctd(args=["--plugin", "UIDResolver", "--show-all"], extra="\n[plugin.UIDResolver]\n" + section)
    return start


def _insert(marks: dict[str, int]) -> dict[str, dict]:
    """One UDP entry per name, 10.77.0.1:(20000+i) -> 10.77.0.2:53, with the given mark."""
    return {name: ct_insert("udp", "10.77.0.1", "10.77.0.2", 20000 + i, 53, mark=mark, timeout=300)
            for i, (name, mark) in enumerate(marks.items())}


def _ids(connections) -> set[int]:
    return {int(c["id"]) for c in connections}


def test_uidresolver_view_showsUidAndNameFromTheMark(uid_ctd):
    c = uid_ctd("mask = 0xFFFF\ncache_ttl = 60\n")
    e = _insert({"alice": 1000, "alice_high_bits": 0x5_0000 | 1000, "bob": 1001, "unmapped": 4242,
                 "unauthenticated": 0, "only_high_bits": 0x7_0000})
    rpc, sid = c.login()
    rows = {int(r["id"]): r for r in view_all(rpc, sid, {"orig_src": TEST_NET})}
    assert set(rows) == {x["id"] for x in e.values()}
    got = {name: (rows[x["id"]]["uid"], rows[x["id"]]["username"]) for name, x in e.items()}
    assert got == {
        "alice": (1000, "alice"),
        "alice_high_bits": (1000, "alice"),
        "bob": (1001, "bob"),
        "unmapped": (4242, ""),
        "unauthenticated": ("", ""),
        "only_high_bits": ("", ""),
    }
    assert rows[e["alice_high_bits"]["id"]]["mark"] == 0x5_0000 | 1000
    plugins = {p["id"]: p for p in rpc.status(sid)["plugins"]}
    assert plugins["resolver.uid"]["health"] == "ok" and plugins["resolver.uid"]["roles"] == ["field_resolver"]


def test_uidresolver_filterAndOrderByUsername_useTheResolvedNames(uid_ctd):
    c = uid_ctd("mask = 0xFFFF\n")
    e = _insert({"bob": 1001, "alice1": 1000, "nobody": 0, "unmapped": 4242, "alice2": 0x1_0000 | 1000})
    rpc, sid = c.login()

    alice = view_all(rpc, sid, {"username": "alice"})
    assert _ids(alice) == {e["alice1"]["id"], e["alice2"]["id"]}
    assert {r["uid"] for r in alice} == {1000}
    assert _ids(view_all(rpc, sid, {"username": ["alice", "bob"]})) == {e[n]["id"] for n in ("alice1", "alice2", "bob")}
    assert _ids(view_all(rpc, sid, {"uid": 1001})) == {e["bob"]["id"]}
    assert _ids(view_all(rpc, sid, {"uid": "4242"})) == {e["unmapped"]["id"]}
    # The empty name is a value (an authenticated uid without an entry); an unauthenticated mark has none.
    assert _ids(view_all(rpc, sid, {"username": ""})) == {e["unmapped"]["id"]}

    asc = rpc.view(sid, {"orig_src": TEST_NET}, "username", "ASC", 0, MAX_PAGE)["connections"]
    assert [r["username"] for r in asc] == ["", "", "alice", "alice", "bob"]
    assert int(asc[0]["id"]) == e["nobody"]["id"], "no value sorts before every value"
    assert int(asc[1]["id"]) == e["unmapped"]["id"]
    desc = rpc.view(sid, {"orig_src": TEST_NET}, "username", "DESC", 0, MAX_PAGE)["connections"]
    assert [r["username"] for r in desc] == ["bob", "alice", "alice", "", ""]
    page = rpc.view(sid, {"orig_src": TEST_NET}, "username", "ASC", 2, 2)
    assert page["total"] == 5 and [r["username"] for r in page["connections"]] == ["alice", "alice"]
    by_uid = rpc.view(sid, {"orig_src": TEST_NET}, "uid", "DESC", 0, MAX_PAGE)["connections"]
    assert [r["uid"] for r in by_uid] == [4242, 1001, 1000, 1000, ""]


def test_uidresolver_withMaskShiftAndUnmappedUid_usesTheUpperBits(uid_ctd):
    c = uid_ctd('mask = 0xFFFF0000\nshift = 16\nunmapped = "uid"\n')
    e = _insert({"bob": 1001 << 16 | 0x2A, "unmapped": 4242 << 16, "low_bits_only": 1000})
    rpc, sid = c.login()
    rows = {int(r["id"]): r for r in view_all(rpc, sid, {"orig_src": TEST_NET})}
    assert (rows[e["bob"]["id"]]["uid"], rows[e["bob"]["id"]]["username"]) == (1001, "bob")
    assert (rows[e["unmapped"]["id"]]["uid"], rows[e["unmapped"]["id"]]["username"]) == (4242, "4242")
    assert (rows[e["low_bits_only"]["id"]]["uid"], rows[e["low_bits_only"]["id"]]["username"]) == ("", "")


def test_uidresolver_badConfiguration_ctdExitsNamingThePluginAndKey(tmp_path):
    password_file = tmp_path / "passwd"
    make_password_file(password_file, "admin", "pw-secret")
    for section, key in (("mask = 0", "'mask'"), ("mask = 0xFFFF\nshift = 16", "'shift'"),
                         ("uid_mask = 0xFFFF", "'uid_mask'"), ('unmapped = "nobody"', "'unmapped'")):
        cfg = tmp_path / "ctd.toml"
        cfg.write_text(f'[server]\nlisten = "127.0.0.1"\n\n[plugin.AuthSHA]\npassword_file = "{password_file}"\n\n'
                       f"[plugin.UIDResolver]\n{section}\n")
        p = subprocess.run([str(CTD), "serve", "--config", str(cfg), "--port", "0", "--plugin", "UIDResolver"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert p.returncode != 0, f"ctd started with [plugin.UIDResolver] {section!r}"
        assert "UIDResolver" in p.stderr and key in p.stderr, p.stderr


UID_MARK_RULES = """\
table inet ctdtest_uidmark {
    chain output {
        type filter hook output priority 0; policy accept;
        ct state new ct mark set meta skuid map { 1000 : 1000, 1001 : 1001 }
    }
}
"""


def test_uidresolver_connectionMarkedByNftablesWithSocketOwner_showsTheUser(uid_ctd):
    """The README's recipe: the kernel marks bob's own connection with his uid; ctd shows it as bob's."""
    c = uid_ctd("mask = 0xFFFFFFFF\n")
    rpc, sid = c.login()
    run(["nft", "-f", "-"], input=UID_MARK_RULES)
    try:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            # bash, not python3: this interpreter may live where uid 1001 cannot read (/root/.pyenv).
            subprocess.run(["/bin/bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"], user=1001, check=True,
                           timeout=30)
            rows = wait_for(lambda: rpc.view(sid, {"orig_port_dst": port}, "", "ASC", 0, 10)["connections"],
                            timeout=3, what="bob's connection in view")
    finally:
        run(["nft", "delete", "table", "inet", "ctdtest_uidmark"])
    assert [(r["mark"], r["uid"], r["username"]) for r in rows] == [(1001, 1001, "bob")]
    assert _ids(view_all(rpc, sid, {"username": "bob"})) == _ids(rows)


def test_uidresolver_sampleConfiguration_isValidAndStatesTheDefaults(tmp_path):
    sample = (PLUGIN_DIR / "uidresolver.sample.toml").read_text()
    section = tomllib.loads(sample)["plugin"]["UIDResolver"]
    assert section == {"mask": 0xFFFF, "shift": 0, "cache_ttl": 60, "unmapped": "empty"}
    password_file = tmp_path / "passwd"
    make_password_file(password_file, "admin", "pw-secret")
    cfg = tmp_path / "ctd.toml"
    cfg.write_text(f'[plugin.AuthSHA]\npassword_file = "{password_file}"\n\n' + sample)
    p = subprocess.run([str(CTD), "plugins", "list", "--config", str(cfg), "--plugin", "UIDResolver"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    row = next(line.split("\t") for line in p.stdout.splitlines() if line.startswith("UIDResolver\t"))
    assert row[1:6] == ["resolver.uid", "1.0.0", row[3], "field_resolver", "ok"]


def test_scopedUser_seesAndActsOnTheirOwnConnectionsOnly(uid_ctd):
    """AuthSHA's own_scope: alice (an operator) sees, summarises, previews, kills and changes only the connections
    whose mark carries her uid; bob's are invisible and untouchable for her, and her login is audited as scoped."""
    from ctdtest import assert_fault, conntrack_list
    c = uid_ctd("mask = 0xFFFF\ncache_ttl = 60\n")
    make_password_file(c.password_file, "alice", "pw-alice")
    cfg = c.config_path.read_text().replace(
        'default_roles = ["operator"]\n', 'default_roles = ["operator"]\nown_scope = ["alice"]\n')
    c.config_path.write_text(cfg)
    import os
    import signal
    offset = len(c.stderr())
    os.kill(c.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload:" in c.stderr()[offset:], timeout=30, what="the reload")
    e = _insert({"alice1": 1000, "alice2": 1000, "bob": 1001})
    admin, admin_sid = c.login()
    wait_for(lambda: admin.view(admin_sid, {"orig_src": TEST_NET}, "", "ASC", 0, 10)["total"], timeout=30,
             done=lambda t: t == 3, what="the three entries")
    rpc, sid = wait_for(lambda: _login(c, "alice", "pw-alice"), timeout=30, what="alice's login")
    v = rpc.view(sid, {"orig_src": TEST_NET}, "", "ASC", 0, 10)
    assert _ids(v["connections"]) == {e["alice1"]["id"], e["alice2"]["id"]}
    assert rpc.summary(sid, {"orig_src": TEST_NET}, "username")["total"]["count"] == 2
    assert rpc.kill_preview(sid, {"orig_src": TEST_NET})["total"] == 2
    # Table-wide figures are not hers to see: her counts are her own, and stats is refused.
    assert rpc.status(sid)["entries"] == 2 and rpc.refresh(sid)["entries"] == 2
    assert admin.status(admin_sid)["entries"] >= 3
    assert_fault(3, rpc.stats, sid)
    # bob's entry does not exist for alice: neither kill nor change reaches it.
    assert_fault(4, rpc.kill, sid, [str(e["bob"]["id"])])
    assert_fault(4, rpc.change, sid, "mark", str(e["bob"]["id"]), 1001)
    assert rpc.kill(sid, [str(e["alice1"]["id"])])["killed"] == 1
    left = {x["id"] for x in conntrack_list("-s", "10.77.0.1")}
    assert left == {e["alice2"]["id"], e["bob"]["id"]}
    assert "login alice (operator, own connections only)" in c.stderr()


def _login(c, user, password):
    import xmlrpc.client
    try:
        rpc = c.proxy()
        return rpc, rpc.login(user, password)
    except xmlrpc.client.Fault:
        return None
