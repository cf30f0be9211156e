"""systemd service integration, with this test playing the manager's side of NOTIFY_SOCKET: an AF_UNIX datagram
socket, WATCHDOG_USEC and WATCHDOG_PID set as systemd sets them (docs/service.md). Checks READY=1 only once the
listener answers and the table was dumped, STATUS= lines, WATCHDOG=1 keeps coming, RELOADING=1 then READY=1
around SIGHUP, STOPPING=1 at SIGTERM. Every wait polls with a generous deadline; no timing assumptions.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from ctdtest import CTD, LISTEN_RE, conntrack_count, ct_insert, make_password_file, write_config

DEADLINE = 60.0


class NotifyManager:
    """The manager's end: a bound AF_UNIX SOCK_DGRAM socket; every datagram is one sd_notify message."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []

    def poll(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def wait_for(self, key: str, value: str | None = None, after: int = 0, what: str = "") -> int:
        """Index of the first message at or after `after` carrying key (= value); polls until DEADLINE."""
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            for i in range(after, len(self.messages)):
                m = self.messages[i]
                if key in m and (value is None or m[key] == value):
                    return i
            self.poll()
        raise AssertionError(f"no {key}={value or '*'} {what} within {DEADLINE} s; got {self.messages}")

    def close(self):
        self.sock.close()


def start_under_manager(tmp_path: Path, watchdog_usec: int):
    manager = NotifyManager(tmp_path / "notify.sock")
    pw = tmp_path / "passwd"
    make_password_file(pw, "admin", "pw-service-test")
    cfg = tmp_path / "ctd.toml"
    write_config(cfg, password_file=pw)
    env = dict(os.environ, NOTIFY_SOCKET=str(manager.path), WATCHDOG_USEC=str(watchdog_usec))
    out = open(tmp_path / "ctd.stdout", "wb")
    err = open(tmp_path / "ctd.stderr", "wb")
    # WATCHDOG_PID names the main process, as systemd sets it: the shell's pid, which exec hands to ctd.
    proc = subprocess.Popen(
        ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"', str(CTD), "serve", "--config", str(cfg), "--port", "0"],
        env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    return manager, proc, tmp_path / "ctd.stdout", tmp_path / "ctd.stderr"


def test_notify_protocol(tmp_path):
    for i in range(5):
        ct_insert("tcp", "10.77.0.1", "10.77.0.2", 40000 + i, 80, state="ESTABLISHED")
    kernel = conntrack_count()
    manager, proc, out_path, err_path = start_under_manager(tmp_path, watchdog_usec=2_000_000)
    try:
        ready = manager.wait_for("READY", "1", what="at start")
        # READY=1 came after the listener was open: the listening line is printed before the group (and the
        # notifier) starts, and the port answers.
        m = LISTEN_RE.search(out_path.read_text())
        assert m, "READY=1 before the listener was announced"
        port = int(m.group(2))
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        # The first dump is done: the status sent with READY=1 counts the kernel's entries.
        status = manager.messages[ready]["STATUS"]
        entries = int(status.split(" entries")[0])
        assert entries >= kernel - 1, f"status {status!r} vs conntrack -C {kernel}"
        assert "client connections" in status and "sessions" in status

        # WATCHDOG=1 keeps coming (at half of WATCHDOG_USEC), each after the internal request answered.
        w1 = manager.wait_for("WATCHDOG", "1", after=ready, what="first ping")
        w2 = manager.wait_for("WATCHDOG", "1", after=w1 + 1, what="second ping")
        manager.wait_for("WATCHDOG", "1", after=w2 + 1, what="third ping")
        manager.wait_for("STATUS", after=ready + 1, what="periodic status")

        # SIGHUP: RELOADING=1 (with MONOTONIC_USEC) then READY=1.
        mark = len(manager.messages)
        proc.send_signal(signal.SIGHUP)
        r = manager.wait_for("RELOADING", "1", after=mark, what="at SIGHUP")
        assert int(manager.messages[r]["MONOTONIC_USEC"]) > 0
        manager.wait_for("READY", "1", after=r + 1, what="after the reload")

        # SIGTERM: STOPPING=1, then a clean exit.
        mark = len(manager.messages)
        proc.send_signal(signal.SIGTERM)
        manager.wait_for("STOPPING", "1", after=mark, what="at SIGTERM")
        assert proc.wait(timeout=DEADLINE) == 0, err_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        manager.close()


class ThreadStop:
    """Stops one thread of another process, and only that thread, as a debugger does: PTRACE_SEIZE and
    PTRACE_INTERRUPT of its tid (the other threads run on), PTRACE_DETACH to let it go. No code in ctd helps."""

    PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT, WALL = 17, 0x4206, 0x4207, 0x40000000

    def __init__(self, tid: int):
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self.tid = tid
        for request in (self.PTRACE_SEIZE, self.PTRACE_INTERRUPT):
            if self.libc.ptrace(request, tid, None, None) != 0:
                raise OSError(ctypes.get_errno(), f"ptrace({request:#x}) of thread {tid}")
        _, status = os.waitpid(tid, self.WALL)  # returns once the thread is stopped
        assert os.WIFSTOPPED(status), f"thread {tid}: wait status {status:#x}"

    def release(self):
        self.libc.ptrace(self.PTRACE_DETACH, self.tid, None, None)


def event_loop_threads(pid: int) -> list[int]:
    tids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().startswith("NIO-ELT-"):
                tids.append(int(tid))
    return sorted(tids)


def test_watchdog_withheld_while_an_event_loop_is_stalled_and_resumed_after(tmp_path):
    """One NIO event loop thread stopped from outside (ptrace): the liveness probe cannot make its round trip, so
    WATCHDOG=1 stops (systemd would kill and restart ctd after WatchdogSec) and the log says why; once the thread
    runs again, the pings come back. Waits on conditions only: the probe's own 10 s bound ends the stalled check."""
    manager, proc, _, err_path = start_under_manager(tmp_path, watchdog_usec=2_000_000)
    stop = None
    try:
        ready = manager.wait_for("READY", "1", what="at start")
        manager.wait_for("WATCHDOG", "1", after=ready, what="before the stall")
        loops = event_loop_threads(proc.pid)
        assert loops, f"no NIO-ELT thread in {os.listdir(f'/proc/{proc.pid}/task')}"
        stop = ThreadStop(loops[-1])
        manager.poll()
        stalled_at = len(manager.messages)
        # The stalled check ends at its 10 s bound with a logged error; wait for that line (it names the cause).
        end = time.monotonic() + DEADLINE
        while "watchdog check failed" not in err_path.read_text():
            assert time.monotonic() < end, "no 'watchdog check failed' in ctd's log while a loop was stopped"
            assert proc.poll() is None, err_path.read_text()
            time.sleep(0.2)
        manager.poll()
        pings = [m for m in manager.messages[stalled_at:] if m.get("WATCHDOG") == "1"]
        # A check that passed just before the stop may still send its ping; none after it.
        assert len(pings) <= 1, f"{len(pings)} WATCHDOG=1 while an event loop was stopped: {manager.messages}"
        resumed_from = len(manager.messages)
        stop.release()
        stop = None
        manager.wait_for("WATCHDOG", "1", after=resumed_from, what="after the thread runs again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0, err_path.read_text()
    finally:
        if stop is not None:
            stop.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        manager.close()


def test_without_notify_socket_nothing_changes(ctd):
    """Started by hand (no NOTIFY_SOCKET), ctd serves as before and stops cleanly (checked by the fixture)."""
    c = ctd()
    rpc, sid = c.login()
    assert rpc.status(sid) is not None


def test_port_in_use_names_the_address_and_the_reason(tmp_path):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        pw = tmp_path / "passwd"
        make_password_file(pw, "admin", "pw-service-test")
        cfg = tmp_path / "ctd.toml"
        write_config(cfg, password_file=pw)
        r = subprocess.run([str(CTD), "serve", "--config", str(cfg), "--port", str(port)],
                           capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)
        assert r.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use (another process holds that port)" \
            in r.stderr, r.stderr
        assert "bind(descriptor" not in r.stderr
    finally:
        holder.close()


def test_unreadable_config_file_says_why(tmp_path):
    """Each way a config file can be unreadable gets the file's name and the system's reason, in one sentence."""
    (tmp_path / "latin1.toml").write_bytes(b"\xff\xfe[server]\n")
    secret = tmp_path / "secret.toml"
    secret.write_text("[server]\n")
    secret.chmod(0o600)
    cases = [
        ([str(CTD), "serve", "--config", str(tmp_path / "missing.toml")], "No such file or directory"),
        ([str(CTD), "serve", "--config", str(tmp_path)], "it is a directory"),
        ([str(CTD), "serve", "--config", str(tmp_path / "latin1.toml")], "it is not UTF-8 text"),
        # Another user than the file's owner (root's bypass would hide the permission).
        (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(CTD), "serve", "--config",
          str(secret)], "Permission denied"),
    ]
    tmp_path.chmod(0o755)
    for cmd, reason in cases:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)
        path = cmd[cmd.index("--config") + 1]
        assert r.returncode != 0, (cmd, r.stderr)
        assert f"cannot read config file {path}: {reason}" in r.stderr, r.stderr
        assert "NSCocoaErrorDomain" not in r.stderr


def test_plaintext_listener_beyond_loopback_warns_loopback_does_not(tmp_path):
    """Listening beyond loopback without TLS logs a warning that passwords travel in the clear (the private
    namespace has only its loopback interface, so nothing outside it can reach this listener)."""
    pw = tmp_path / "passwd"
    make_password_file(pw, "admin", "pw-service-test")
    cfg = tmp_path / "ctd.toml"
    write_config(cfg, password_file=pw)
    for listen, warned in (("0.0.0.0", True), ("127.0.0.1", False)):
        err = tmp_path / f"ctd-{listen}.stderr"
        out = tmp_path / f"ctd-{listen}.stdout"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen([str(CTD), "serve", "--config", str(cfg), "--listen", listen, "--port", "0"],
                                    stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + DEADLINE
            while "serving XML-RPC on" not in out.read_text(errors="replace") + err.read_text(errors="replace"):
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "ctd did not start"
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=DEADLINE)
        logs = out.read_text(errors="replace") + err.read_text(errors="replace")
        sentence = "without TLS: passwords and session ids travel in the clear"
        assert (sentence in logs) == warned, logs[-2000:]
        if warned:
            assert f"listening on 0.0.0.0:" in logs


def _cert(d: Path, name: str):
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    key.chmod(0o600)
    return crt, key


def test_tls_files_are_checked_before_the_table_is_read_and_named(tmp_path):
    """A swapped certificate and key, or a pair that does not belong together, stop ctd at once with a sentence that
    names the file: before the kernel table is dumped (seconds at a million entries), not after."""
    crt, key = _cert(tmp_path, "one")
    other_crt, _ = _cert(tmp_path, "two")
    swapped_key = tmp_path / "swapped.key"
    swapped_key.write_bytes(crt.read_bytes())
    swapped_key.chmod(0o600)
    pw = tmp_path / "passwd"
    make_password_file(pw, "admin", "pw-service-test")
    cases = [
        (key, swapped_key, f"cannot load the TLS certificate {key}"),
        (other_crt, key, f"the TLS certificate {other_crt} and key {key} do not go together"),
    ]
    for cert_file, key_file, sentence in cases:
        cfg = tmp_path / "ctd.toml"
        write_config(cfg, password_file=pw, tls_cert=cert_file, tls_key=key_file)
        r = subprocess.run([str(CTD), "serve", "--config", str(cfg), "--port", "0"],
                           capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)
        assert r.returncode != 0, r.stderr
        assert sentence in r.stderr, r.stderr
        assert "conntrack mirror loaded" not in r.stderr, "the table was read before the TLS files were checked"
        assert "failedToLoadCertificate" not in r.stderr.split(sentence)[0]


def test_plugins_list_without_a_config_lists_what_is_installed_and_what_it_needs(tmp_path):
    """A fresh install has no password file yet: bare `ctd plugins list` shows every installed plugin (loaded by
    real dlopen) with its health, the authenticator's missing setting named, and exits 0."""
    cmd = [str(CTD), "plugins", "list", "--plugin-dir", str(CTD.parent)]
    if Path("/etc/ctd/ctd.toml").exists():
        # Hide an installed config from this one process (a private mount namespace).
        empty = tmp_path / "etc-ctd"
        empty.mkdir()
        cmd = ["unshare", "-m", "--", "sh", "-c", 'mount --bind "$0" /etc/ctd && exec "$@"', str(empty), *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = {l.split("\t")[0]: l.split("\t") for l in r.stdout.splitlines() if "\t" in l}
    assert {"AuthSHA", "AuthPAM", "UIDResolver", "AuditSQLite"} <= set(lines), r.stdout
    assert lines["AuthSHA"][1] == "auth.sha" and lines["AuthSHA"][4] == "authenticator"
    assert "not configured" in lines["AuthSHA"][5] and "password_file" in lines["AuthSHA"][5], lines["AuthSHA"]
    assert lines["UIDResolver"][5] == "not enabled"
    # With a config file that fails, it is an error (exit 1), as before.
    cfg = tmp_path / "ctd.toml"
    write_config(cfg, password_file=tmp_path / "missing-passwd")
    r = subprocess.run([str(CTD), "plugins", "list", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=DEADLINE, stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "error:" in r.stdout, r.stdout + r.stderr
