"""Helpers of the end-to-end suite: start ctd, talk to the kernel table with conntrack(8), small utilities.

Imported by conftest.py and by the test modules (pytest puts this directory on sys.path: there is no
__init__.py here, so the default "prepend" import mode applies).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import time
import tomllib
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("CTD_BIN") or (REPO / ".build" / "debug"))
if not BIN_DIR.is_absolute():
    BIN_DIR = REPO / BIN_DIR
CTD = BIN_DIR / "ctd"
CTD_FILL = BIN_DIR / "ctd-fill"

# The documented default of view's largest page (ctd.sample.toml shows every option with its default).
MAX_PAGE = tomllib.loads((REPO / "ctd.sample.toml").read_text())["server"]["max_page_length"]

LISTEN_RE = re.compile(r"^ctd: listening on (\S+) port (\d+)\s*$", re.M)


def run(cmd, *, input=None, check=True, timeout=120):
    """Runs a command, returns the CompletedProcess (text mode)."""
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd!r} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


# ---------------------------------------------------------------------------------------------------------------
# conntrack(8)


def _parse_conntrack_line(line: str) -> dict | None:
    tokens = line.split()
    if len(tokens) < 6 or tokens[0] not in ("ipv4", "ipv6"):
        return None
    e: dict = {
        "l3proto": tokens[0],
        "l3proto_num": int(tokens[1]),
        "proto": tokens[2],
        "protonum": int(tokens[3]),
        "timeout": int(tokens[4]),
        "state": "",
        "flags": set(),
        "mark": 0,
        "zone": 0,
    }
    rest = tokens[5:]
    if rest and "=" not in rest[0] and not rest[0].startswith("["):
        e["state"] = rest[0]
        rest = rest[1:]
    direction = None  # "orig" then "repl"
    names = {"src": "src", "dst": "dst", "sport": "sport", "dport": "dport", "type": "icmp_type",
             "code": "icmp_code", "id": "icmp_id", "packets": "packets", "bytes": "bytes"}
    for tok in rest:
        if tok.startswith("[") and tok.endswith("]"):
            e["flags"].add(tok[1:-1])
            continue
        if "=" not in tok:
            continue
        key, value = tok.split("=", 1)
        if key == "src":
            direction = "orig" if direction is None else "repl"
        if key in ("mark", "use", "zone"):
            e[key] = int(value)
        elif key == "id" and direction == "repl" and "repl_icmp_id" in e:
            e["id"] = int(value)  # the connection id comes after the reply's icmp id
        elif key == "id" and direction == "repl" and e["protonum"] not in (1, 58):
            e["id"] = int(value)
        elif key in names and direction is not None:
            v = value if key in ("src", "dst") else int(value)
            e[f"{direction}_{names[key]}"] = v
        else:
            e[key] = value
    # Short names for the original tuple.
    e["src"] = e.get("orig_src")
    e["dst"] = e.get("orig_dst")
    e["sport"] = e.get("orig_sport")
    e["dport"] = e.get("orig_dport")
    return e


def conntrack_list(*filters: str) -> list[dict]:
    """`conntrack -L -o extended,id [filters]` as dicts: l3proto, proto, src, dst, sport, dport, mark, id, timeout,
    state ('' for non-TCP), flags, repl_*, orig_/repl_ packets and bytes (with accounting), icmp fields."""
    p = run(["conntrack", "-L", "-o", "extended,id", *filters], check=False)
    if p.returncode != 0 and "0 flow entries" not in p.stderr:
        raise AssertionError(f"conntrack -L failed: {p.stderr}")
    out = []
    for line in p.stdout.splitlines():
        e = _parse_conntrack_line(line)
        if e is not None:
            assert "id" in e, f"no id in conntrack line: {line}"
            out.append(e)
    return out


def without_ctd_clients(entries, c) -> list[dict]:
    """The entries minus TCP connections to ctd c itself (which ctd hides from its own view)."""
    return [e for e in entries if not (e["protonum"] == 6 and c.port in (e["sport"], e["dport"]))]


def conntrack_count() -> int:
    return int(run(["conntrack", "-C"]).stdout.strip())


def conntrack_flush():
    run(["conntrack", "-F"], check=False)


def ct_args(proto, src, dst, sport=None, dport=None, *, icmp_type=8, icmp_code=0, icmp_id=1):
    args = ["-p", proto, "-s", src, "-d", dst]
    if proto in ("icmp", "icmpv6"):
        args += ["--icmp-type", str(icmp_type), "--icmp-code", str(icmp_code), "--icmp-id", str(icmp_id)]
    else:
        args += ["--sport", str(sport), "--dport", str(dport)]
    return args


def ct_insert(proto, src, dst, sport=None, dport=None, *, timeout=100, mark=None, state=None, status=None,
              icmp_type=8, icmp_code=0, icmp_id=1) -> dict:
    """`conntrack -I` one entry; returns it as `conntrack -L` shows it (with its id)."""
    args = ["conntrack", "-I", *ct_args(proto, src, dst, sport, dport, icmp_type=icmp_type, icmp_code=icmp_code,
                                        icmp_id=icmp_id), "-t", str(timeout)]
    if state is not None:
        args += ["--state", state]
    if status is not None:
        args += ["-u", status]
    if mark is not None:
        # After -u: conntrack 1.4.7 overwrites an earlier -m with the status bits when -u follows it.
        args += ["-m", str(mark)]
    run(args)
    found = ct_find(proto, src, dst, sport, dport, icmp_id=icmp_id)
    assert found is not None, f"entry {args} not in conntrack -L after -I"
    if mark is not None:
        assert found["mark"] == int(mark) & 0xFFFFFFFF, f"conntrack -I set mark {found['mark']}, not {mark}"
    return found


def ct_find(proto, src, dst, sport=None, dport=None, *, icmp_id=None) -> dict | None:
    family = "-f ipv6" if ipaddress.ip_address(src).version == 6 else "-f ipv4"
    for e in conntrack_list(*family.split(), "-p", proto, "-s", src, "-d", dst):
        if proto in ("icmp", "icmpv6"):
            if icmp_id is None or e.get("orig_icmp_id") == icmp_id:
                return e
        elif e["sport"] == sport and e["dport"] == dport:
            return e
    return None


def ct_delete(proto, src, dst, sport=None, dport=None, **kw):
    run(["conntrack", "-D", *ct_args(proto, src, dst, sport, dport, **kw)])


def ct_fill(*args, timeout=120):
    """Runs ctd-fill (create|delete N [options])."""
    return run([str(CTD_FILL), *map(str, args)], timeout=timeout)


def signed32(n: int) -> int:
    """The two's complement int an i4-only client sends for an unsigned 32-bit value."""
    return n - (1 << 32) if n >= 1 << 31 else n


def wait_for(predicate, timeout=5.0, interval=0.05, what="condition", done=bool):
    """Polls predicate() until done(its value) (default: the value is truthy); returns the value, or fails after
    timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if done(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------------------
# XML-RPC


def fault_of(fn, *args):
    """Calls fn(*args) and returns the xmlrpc.client.Fault it raises (fails if it returns)."""
    try:
        result = fn(*args)
    except xmlrpc.client.Fault as f:
        return f
    raise AssertionError(f"expected a fault, got {result!r}")


FORBIDDEN_IN_FAULTS = ("Swift", "CtdHost", "Error(", "Fault(", "XMLRPCValue", "Optional(", ".swift", "Thread ",
                       "backtrace", "NIO", "DecodingError", "file:///", "/work/", "fatal")


def assert_human_fault(fault_string: str):
    """A fault string is a sentence for a person: no Swift type names, no traces."""
    assert isinstance(fault_string, str) and fault_string.strip(), "empty faultString"
    assert len(fault_string) < 600, f"faultString too long: {fault_string!r}"
    assert "\n" not in fault_string.strip(), f"multi-line faultString: {fault_string!r}"
    assert re.match(r"^[A-Z]", fault_string), f"faultString is not a sentence: {fault_string!r}"
    for bad in FORBIDDEN_IN_FAULTS:
        assert bad not in fault_string, f"faultString contains {bad!r}: {fault_string!r}"


def assert_fault(code: int, fn, *args, contains: str | None = None) -> xmlrpc.client.Fault:
    f = fault_of(fn, *args)
    assert f.faultCode == code, f"expected fault {code}, got {f.faultCode}: {f.faultString}"
    assert_human_fault(f.faultString)
    if contains is not None:
        assert contains in f.faultString, f"{contains!r} not in {f.faultString!r}"
    return f


def view_all(rpc, sid, filters=None, order_by="", order_dir="ASC", page=MAX_PAGE) -> list[dict]:
    """Pages through view; checks that `total` stays the same on every page."""
    filters = {} if filters is None else filters
    out: list[dict] = []
    start = 0
    total = None
    while True:
        v = rpc.view(sid, filters, order_by, order_dir, start, page)
        if total is None:
            total = v["total"]
        assert v["total"] == total, "total changed while paging"
        assert v["start"] == start and v["length"] == len(v["connections"])
        out.extend(v["connections"])
        start += page
        if start >= total:
            break
    assert len(out) == total
    return out


def ids_of(connections) -> set[int]:
    return {int(c["id"]) for c in connections}


# ---------------------------------------------------------------------------------------------------------------
# ctd itself


@dataclass
class Ctd:
    proc: subprocess.Popen
    port: int
    scheme: str
    workdir: Path
    config_path: Path
    password_file: Path
    password: str
    stderr_path: Path
    ssl_context: ssl.SSLContext | None = None
    proxies: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/RPC2"

    def proxy(self, **kw) -> xmlrpc.client.ServerProxy:
        if self.ssl_context is not None:
            kw.setdefault("context", self.ssl_context)
        p = xmlrpc.client.ServerProxy(self.url, allow_none=True, **kw)
        self.proxies.append(p)
        return p

    def login(self, user: str = "admin", password: str | None = None):
        """Logs in with a fresh client; returns (proxy, session id)."""
        rpc = self.proxy()
        sid = rpc.login(user, self.password if password is None else password)
        assert isinstance(sid, str) and len(sid) >= 16, f"bad session id {sid!r}"
        return rpc, sid

    def http(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.ssl_context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def post(self, body: bytes, path: str = "/RPC2", method: str = "POST", headers=None):
        """One raw HTTP request on a new connection; returns (status, body bytes)."""
        conn = self.http()
        try:
            h = {"Content-Type": "text/xml"}
            h.update(headers or {})
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def close_clients(self):
        for p in self.proxies:
            with contextlib.suppress(Exception):
                p("close")()
        self.proxies.clear()

    def stop(self) -> int:
        """SIGTERM by pid, wait; returns the exit code."""
        self.close_clients()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
                raise AssertionError(f"ctd did not exit on SIGTERM within 15 s\n--- stderr ---\n{self.stderr()}")
        return self.proc.returncode


def make_password_file(path: Path, user: str, password: str):
    run([str(CTD), "passwd", "add", user, "--file", str(path), "--stdin"], input=password + "\n")


def toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


DEFAULT = object()


def write_config(path: Path, *, password_file: Path, hide=(), hide_own_connections=True, idle_timeout=None,
                 max_body_bytes=None, max_page_length=None, tls_cert=None, tls_key=None, receive_buffer=None,
                 counter_interval=None, connlabel_file=None, log_level="info", extra: str = "",
                 server_extra: str = ""):
    server = ['listen = "127.0.0.1"'] + [line for line in server_extra.splitlines() if line.strip()]
    if max_body_bytes is not None:
        server.append(f"max_body_bytes = {int(max_body_bytes)}")
    if max_page_length is not None:
        server.append(f"max_page_length = {int(max_page_length)}")
    if tls_cert is not None:
        server.append(f"tls_certificate = {toml_str(str(tls_cert))}")
        server.append(f"tls_key = {toml_str(str(tls_key))}")
    sessions = []
    if idle_timeout is not None:
        sessions.append(f"idle_timeout = {float(idle_timeout)}")
    conntrack = [f"hide_own_connections = {'true' if hide_own_connections else 'false'}"]
    if hide is not DEFAULT and hide is not None:
        conntrack.append("hide = [" + ", ".join(toml_str(h) for h in hide) + "]")
    if receive_buffer is not None:
        conntrack.append(f"receive_buffer = {int(receive_buffer)}")
    if counter_interval is not None:
        conntrack.append(f"counter_interval = {float(counter_interval)}")
    if connlabel_file is not None:
        conntrack.append(f"connlabel_file = {toml_str(str(connlabel_file))}")
    text = (
        "[server]\n" + "\n".join(server) + "\n\n"
        + ("[sessions]\n" + "\n".join(sessions) + "\n\n" if sessions else "")
        + "[conntrack]\n" + "\n".join(conntrack) + "\n\n"
        + f'[log]\nlevel = "{log_level}"\n\n'
        + f"[plugin.AuthSHA]\npassword_file = {toml_str(str(password_file))}\n"
        # AuthSHA's default role is viewer; most tests kill and change as the first account, an operator.
        + ("" if "default_roles" in extra else 'default_roles = ["operator"]\n')
        + extra
    )
    path.write_text(text)


def start_ctd(workdir: Path, *, password: str | None = None, password_file: Path | None = None,
              args=(), startup_timeout=30.0, **config) -> Ctd:
    """Starts `ctd serve --config <workdir>/ctd.toml --port 0`; returns once it printed its listening line."""
    workdir.mkdir(parents=True, exist_ok=True)
    if password_file is None:
        password = password or "pw-" + secrets.token_hex(8)
        password_file = workdir / "passwd"
        make_password_file(password_file, "admin", password)
    cfg = workdir / "ctd.toml"
    write_config(cfg, password_file=password_file, **config)
    out_path = workdir / "ctd.stdout"
    err_path = workdir / "ctd.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([str(CTD), "serve", "--config", str(cfg), "--port", "0", *args],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + startup_timeout
    port = None
    while time.monotonic() < deadline:
        m = LISTEN_RE.search(out_path.read_text(errors="replace"))
        if m:
            assert m.group(1) == "127.0.0.1"
            port = int(m.group(2))
            break
        if proc.poll() is not None:
            raise AssertionError(
                f"ctd exited with {proc.returncode} before listening\n--- stderr ---\n"
                f"{err_path.read_text(errors='replace')}")
        time.sleep(0.02)
    if port is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"ctd did not print its listening line within {startup_timeout} s\n--- stderr ---\n"
                             f"{err_path.read_text(errors='replace')}")
    ctx = None
    scheme = "http"
    if config.get("tls_cert"):
        scheme = "https"
        ctx = ssl.create_default_context(cafile=str(config["tls_cert"]))
    return Ctd(proc=proc, port=port, scheme=scheme, workdir=workdir, config_path=cfg, password_file=password_file,
               password=password or "", stderr_path=err_path, ssl_context=ctx)


# ---------------------------------------------------------------------------------------------------------------
# Real loopback traffic


class TCPPair:
    """A connected TCP client/server pair on a loopback address, with some bytes exchanged."""

    def __init__(self, host="127.0.0.1", payload=5000):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(1)
        self.server_port = self.listener.getsockname()[1]
        self.client = socket.create_connection((host, self.server_port), timeout=5)
        self.client_port = self.client.getsockname()[1]
        self.server, _ = self.listener.accept()
        self.exchange(payload)

    def exchange(self, n):
        if n <= 0:
            return
        self.client.sendall(b"x" * n)
        got = 0
        while got < n:
            got += len(self.server.recv(65536))
        self.server.sendall(b"y" * (n // 2 or 1))
        got = 0
        while got < (n // 2 or 1):
            got += len(self.client.recv(65536))

    def close(self):
        for s in (self.client, self.server, self.listener):
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
