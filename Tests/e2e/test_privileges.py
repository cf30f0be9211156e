"""Privilege drop (docs/service.md, "Privilege drop"): started as root with `[service] user` or `--user`, ctd runs as
that user with CAP_NET_ADMIN only, as the unit does under systemd; /proc/PID/status shows it, and the daemon still
reads the table, logs in and kills (the kill's netlink write needs CAP_NET_ADMIN in the worker threads), checked
with `conntrack -L`. `--keep-privileges` stays root; an unknown user stops the start with one sentence.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ctdtest import CTD, conntrack_list, ct_find, ct_insert, make_password_file, start_ctd, write_config

CAP_NET_ADMIN = 1 << 12
PASSWORD = "pw-privileges-test"


def status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ":\t" in line)


@pytest.fixture
def world_dir():
    """A directory the unprivileged user can read (pytest's tmp_path is under a 0700 root directory)."""
    d = Path(tempfile.mkdtemp(prefix="ctd-priv-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start_as(world_dir: Path, *, args=(), extra=""):
    nobody = pwd.getpwnam("nobody")
    work = world_dir / "ctd"
    work.mkdir()
    pw = work / "passwd"
    make_password_file(pw, "admin", PASSWORD)
    os.chown(pw, nobody.pw_uid, nobody.pw_gid)
    return start_ctd(work, password_file=pw, args=args, extra=extra), nobody


def wait_for_status(pid: int, key: str, value: str) -> dict[str, str]:
    end = time.monotonic() + 60
    s = status(pid)
    while time.monotonic() < end and s.get(key, "").split() != value.split():
        time.sleep(0.05)
        s = status(pid)
    return s


def test_drop_to_user_keeps_cap_net_admin_only(world_dir):
    c, nobody = start_as(world_dir, extra='\n[service]\nuser = "nobody"\n')
    try:
        s = wait_for_status(c.proc.pid, "Uid", f"{nobody.pw_uid} " * 4)
        # The same pid: the drop re-executes the process in place.
        assert s["Uid"].split() == [str(nobody.pw_uid)] * 4, s["Uid"]
        assert s["Gid"].split() == [str(nobody.pw_gid)] * 4, s["Gid"]
        assert s["Groups"].split() == [str(g) for g in os.getgrouplist("nobody", nobody.pw_gid)], s["Groups"]
        for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"):
            assert int(s[key], 16) == CAP_NET_ADMIN, f"{key} {s[key]}"
        assert s["NoNewPrivs"].strip() == "1"
        for task in Path(f"/proc/{c.proc.pid}/task").iterdir():
            t = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line)
            assert t["Uid"].split()[1] == str(nobody.pw_uid) and int(t["CapEff"], 16) == CAP_NET_ADMIN, task
        assert "dropped root: running as nobody" in c.stderr()
        # Still does its work: the table, a login, a view, a kill (a netlink write from a worker thread).
        keep = ct_insert("udp", "10.44.0.1", "10.44.0.2", 34000, 53, timeout=300)
        gone = ct_insert("udp", "10.44.0.1", "10.44.0.2", 34001, 53, timeout=300)
        rpc = c.proxy()
        sid = rpc.login("admin", PASSWORD)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if rpc.kill(sid, [str(gone["id"])])["killed"] == 1:
                break
            time.sleep(0.1)
        assert ct_find("udp", "10.44.0.1", "10.44.0.2", 34001, 53) is None, conntrack_list()
        assert ct_find("udp", "10.44.0.1", "10.44.0.2", 34000, 53)["id"] == keep["id"]
        rows = rpc.view(sid)
        assert rows["total"] >= 1
    finally:
        assert c.stop() == 0, c.stderr()


def test_keep_privileges_stays_root(world_dir):
    c, _ = start_as(world_dir, args=["--user", "nobody", "--keep-privileges"])
    try:
        s = status(c.proc.pid)
        assert s["Uid"].split() == ["0"] * 4
        assert int(s["CapEff"], 16) == int(status(os.getpid())["CapEff"], 16)
        assert "running as root with every capability (--keep-privileges)" in c.stderr()
    finally:
        assert c.stop() == 0, c.stderr()


def test_unknown_user_is_refused_with_a_sentence(world_dir):
    pw = world_dir / "passwd"
    make_password_file(pw, "admin", PASSWORD)
    cfg = world_dir / "ctd.toml"
    write_config(cfg, password_file=pw)
    p = subprocess.run([str(CTD), "serve", "--config", str(cfg), "--port", "0", "--user", "ctd-no-such-user"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 1
    assert "cannot drop privileges: there is no user 'ctd-no-such-user'" in p.stderr, p.stderr
