"""`--log-format auto|text|json|journal` (docs/service.md, "Log formats"): ctd's standard error read in each format,
with real logins (a wrong password among them, which must never appear in any line), concurrent clients (JSON lines
never interleave), and JOURNAL_STREAM set as systemd sets it (the device and inode of standard error).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import xmlrpc.client
from datetime import datetime

import pytest

from ctdtest import CTD, make_password_file, write_config

TEXT_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} (trace|debug|info|notice|warning|error|critical) ctd: ")
JOURNAL_RE = re.compile(r"^<([2-7])>ctd: ")
WRONG = "wrong-pw-Zq81-never-logged"


def exercise(c):
    """A wrong login, a right one, a view, and 8 threads of wrong logins at once: lines of every kind."""
    rpc = c.proxy()
    with pytest.raises(xmlrpc.client.Fault):
        rpc.login("admin", WRONG)
    rpc, sid = c.login()
    rpc.view(sid)

    def wrong(i):
        p = xmlrpc.client.ServerProxy(c.url)
        for _ in range(3):
            try:
                p.login(f"nobody{i}", WRONG)
            except xmlrpc.client.Fault:
                pass

    threads = [threading.Thread(target=wrong, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    rpc.logout(sid)


def lines_of(c) -> list[str]:
    c.stop()
    text = c.stderr()
    assert c.password not in text and WRONG not in text, "a password reached the log"
    return [line for line in text.splitlines() if line]


def test_text_format(ctd):
    c = ctd(args=["--log-format", "text"])
    exercise(c)
    lines = lines_of(c)
    assert lines
    for line in lines:
        assert TEXT_RE.match(line), line
    assert any("login failed for admin" in line and " notice " in line for line in lines)


def test_json_format_one_object_per_line(ctd):
    c = ctd(args=["--log-format", "json"])
    exercise(c)
    lines = lines_of(c)
    objects = []
    for line in lines:
        o = json.loads(line)  # every line is one whole object
        assert set(o) >= {"timestamp", "level", "label", "source", "message"}, o
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["timestamp"]), o["timestamp"]
        datetime.strptime(o["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert o["level"] in ("trace", "debug", "info", "notice", "warning", "error", "critical")
        objects.append(o)
    serving = [o for o in objects if o["message"].startswith("ctd ") and "serving XML-RPC" in o["message"]]
    assert serving and serving[0]["level"] == "notice" and serving[0]["label"] == "ctd"
    failed = [o for o in objects if "login failed for nobody" in o["message"]]
    assert len(failed) >= 8, len(failed)  # the throttle may refuse some after the first failures
    loaded = [o for o in objects if o["message"] == "plugin loaded"]
    assert loaded and loaded[0]["metadata"]["name"] == "AuthSHA", loaded


def test_journal_format_has_priorities(ctd):
    c = ctd(args=["--log-format", "journal"])
    exercise(c)
    lines = lines_of(c)
    for line in lines:
        assert JOURNAL_RE.match(line), line
        assert not re.match(r"^<\d>\d{4}-", line), "the journal adds its own timestamp"
    prio = {int(JOURNAL_RE.match(line).group(1)) for line in lines}
    assert {5, 6} <= prio, prio  # notice (serving, failed login), info (login)
    assert any(line.startswith("<5>") and "login failed for admin" in line for line in lines)
    assert any(line.startswith("<6>") and "login admin" in line for line in lines)


def test_auto_is_journal_only_when_journal_stream_is_stderr(ctd, tmp_path, monkeypatch):
    # The factory's first daemon writes its stderr to <tmp>/ctd0/ctd.stderr (opened "wb": the same inode).
    err = tmp_path / "ctd0" / "ctd.stderr"
    err.parent.mkdir(parents=True)
    err.write_bytes(b"")
    st = os.stat(err)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    c = ctd()
    assert os.stat(err).st_ino == st.st_ino
    lines = lines_of(c)
    assert lines and all(JOURNAL_RE.match(line) for line in lines), lines[:3]
    # Inherited by a process whose stderr is another file: plain text.
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
    c2 = ctd()
    lines = lines_of(c2)
    assert lines and all(TEXT_RE.match(line) for line in lines), lines[:3]


def test_bad_format_is_refused_with_a_sentence(tmp_path):
    pw = tmp_path / "passwd"
    make_password_file(pw, "admin", "pw-log")
    cfg = tmp_path / "ctd.toml"
    write_config(cfg, password_file=pw)
    p = subprocess.run([str(CTD), "serve", "--config", str(cfg), "--port", "0", "--log-format", "xml"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert "[log] format must be one of auto, text, json, journal, not 'xml'" in p.stderr, p.stderr
