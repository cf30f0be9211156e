"""ctd soak (`make soak`): many concurrent clients, well-formed and hostile, against a real 250,000-entry kernel table.

Run through scripts/soak.sh, which enters `unshare -n`: the table lives in a private network namespace and only
loopback addresses are contacted (clients bind 127.0.0.x source addresses so that the bad logins come from an address
of their own). Every process started here is ended by PID.

Environment: CTD_BIN (release build dir), SOAK_ENTRIES (250000), SOAK_CLIENTS (100), SOAK_SECONDS (60),
SOAK_WARMUP (15), SOAK_PROCS (client processes, 4), SOAK_THINK_MS (mean pause between a client's calls, 250),
SOAK_SKIP (client kinds to leave out, e.g. "nonreading slow", for diagnosis), BENCH_OUT (markdown file the table is
appended to, docs/benchmark.md; empty: print only).

Client kinds (share of SOAK_CLIENTS): viewers (varied filters, order_by, deep random starts, page sizes), multicall
viewers (3 to 5 views per call), operators (each kills random ids of its own ctd-fill mark, never another's; they
view too), one admin (status, audit_list, views), good logins (login, a view, logout), bad logins (wrong passwords
and unknown users from 127.0.0.2: the throttle refuses them, which is expected), malformed bodies (each must be
answered with a fault), slow clients (a view trickled byte by byte, about 2 s per request) and non-reading clients
(pipeline views and never read; the server should cut them or stop reading).
"""
import http.client
import json
import multiprocessing
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xmlrpc.client

BIN = os.path.abspath(os.environ.get("CTD_BIN", ".build/release"))
ENTRIES = int(os.environ.get("SOAK_ENTRIES", "250000"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "100"))
SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
WARMUP = float(os.environ.get("SOAK_WARMUP", "15"))
PROCS = int(os.environ.get("SOAK_PROCS", "4"))
THINK = float(os.environ.get("SOAK_THINK_MS", "250")) / 1000
OUT = os.environ.get("BENCH_OUT", "docs/benchmark.md")
SKIP = set(os.environ.get("SOAK_SKIP", "").split())
PASSWORD = "soak-" + os.urandom(6).hex()
MARKS = 50  # ctd-fill gives entry i the mark i % 50; operator k owns mark k + 1 (mark 0 and the rest: nobody's)
GOOD_SRC = "127.0.0.1"
BAD_SRC = "127.0.0.2"  # every bad login comes from here: the per-address throttle is meant to lock it out
SID = "@SID@"  # placeholder in pre-encoded bodies

# Shares of the clients (the rest are viewers).
SHARES = [("multicall", 0.08), ("operator", 0.10), ("admin", 0.01), ("goodlogin", 0.06), ("badlogin", 0.04),
          ("malformed", 0.08), ("slow", 0.06), ("nonreading", 0.04)]


def sh(cmd, check=True, **kw):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------------------------------------------------- setup

def setup_namespace():
    links = sh("ip -o link").stdout.strip().splitlines()
    if len(links) != 1 or " lo:" not in links[0]:
        sys.exit("soak must run in a private network namespace (scripts/soak.sh does unshare -n)")
    sh("ip link set lo up")
    sh("sysctl -qw net.netfilter.nf_conntrack_acct=1")
    # No nft rule: loopback connections stay untracked, so `conntrack -C` counts only the filled entries.


def fill(n):
    sh("conntrack -F", check=False)
    t = time.perf_counter()
    sh(f"{BIN}/ctd-fill create {n} --marks {MARKS} --timeout 3600")
    return time.perf_counter() - t


def table(with_shared=False):
    """{id: mark} of every entry in the kernel table (one dump); with_shared: also the ids two or more entries hold
    (ids are 32-bit hashes: about 7 pairs collide at 250,000 entries, and `kill` refuses such an id as ambiguous)."""
    out = sh("conntrack -L -o id 2>/dev/null").stdout
    pairs = [(int(i), int(m)) for m, i in re.findall(r"mark=(\d+).*?id=(\d+)", out)]
    entries = dict(pairs)
    if not with_shared:
        return entries
    seen, shared = set(), set()
    for i, _ in pairs:
        (shared if i in seen else seen).add(i)
    return entries, shared


def count():
    return int(sh("conntrack -C").stdout.strip() or 0)


def assign_kinds(n):
    kinds = []
    for kind, share in SHARES:
        if kind not in SKIP:
            kinds += [kind] * max(1, round(n * share))
    kinds = kinds[:n]
    kinds += ["viewer"] * (n - len(kinds))
    return kinds


class Daemon:
    def __init__(self, workdir, accounts):
        self.workdir = workdir
        passwd = os.path.join(workdir, "passwd")
        subprocess.run([f"{BIN}/ctd", "passwd", "add", "template", "--file", passwd, "--stdin"],
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True)
        line = open(passwd).read().strip().splitlines()[-1]
        hashed = line.split(":", 1)[1]
        with open(passwd, "w") as f:  # one password for all: one hash, many user names
            for user, _ in accounts:
                f.write(f"{user}:{hashed}\n")
        os.chmod(passwd, 0o600)
        roles = "".join(f'{u} = "{r}"\n' for u, r in accounts if r != "viewer")  # viewers: AuthSHA's default role
        cfg = os.path.join(workdir, "ctd.toml")
        with open(cfg, "w") as f:
            # Every soak client comes from this one host: the per-address connection limit (64 by default, sized
            # for many hosts) is raised to the total, which stays at its default.
            f.write(f"""[server]
listen = "127.0.0.1"
port = 0
max_connections_per_address = 512
[plugins]
directory = "{BIN}"
auth = "AuthSHA"
enable = ["AuditSQLite"]
[log]
level = "warning"
[plugin.AuthSHA]
password_file = "{passwd}"
[plugin.AuthSHA.roles]
{roles}[plugin.AuditSQLite]
database = "{workdir}/audit/audit.db"
""")
        self.err_path = os.path.join(workdir, "ctd.err")
        t = time.perf_counter()
        self.proc = subprocess.Popen([f"{BIN}/ctd", "serve", "--config", cfg], stdout=subprocess.PIPE,
                                     stderr=open(self.err_path, "w"), text=True)
        m = re.search(r"port (\d+)", self.proc.stdout.readline())
        if not m:
            raise RuntimeError("ctd did not start: " + open(self.err_path).read())
        self.port = int(m.group(1))
        rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2")
        s = rpc.login("admin", PASSWORD)
        rpc.view(s, {}, "", "ASC", 0, 1)
        rpc.logout(s)
        self.startup = time.perf_counter() - t

    def rss_mb(self):
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def cpu_seconds(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        """SIGTERM; the exit code (None if it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


# ------------------------------------------------------------------------------------------------ request bodies

def body(method, *params):
    return xmlrpc.client.dumps(params, method, allow_none=False).encode()


ORDERS = ["", "id", "orig_port_src", "byte_rate", "timeout", "mark", "orig_src", "bytes", "repl_port_dst", "packets",
          "l4proto", "orig_dst"]


def random_filters(rng):
    pick = rng.randrange(10)
    if pick < 3:
        return {}
    if pick == 3:
        return {"orig_src": f"10.0.0.{rng.randint(1, 5)}"}
    if pick == 4:
        return {"orig_port_src": f"{rng.randint(1024, 30000)}-{rng.randint(30001, 61000)}"}
    if pick == 5:
        return {"mark": [rng.randrange(MARKS) for _ in range(rng.randint(1, 4))]}
    if pick == 6:
        return {"orig_port_dst": 53, "l4proto": "udp"}
    if pick == 7:
        return {"host": "10.0.0.0/30"}
    if pick == 8:
        return {"port": [rng.randint(1024, 61000) for _ in range(rng.randint(1, 20))]}
    return {"timeout": {"min": 100}}


def view_templates(rng, count=400):
    out = []
    for _ in range(count):
        filters = random_filters(rng)
        start = rng.choice([0, 0, rng.randrange(1000), rng.randrange(max(1, ENTRIES - 200))])
        length = rng.choice([10, 25, 50, 100, 150])
        out.append(body("view", SID, filters, rng.choice(ORDERS), rng.choice(["ASC", "DESC"]), start, length))
    return out


def multicall_templates(rng, count=100):
    out = []
    for _ in range(count):
        calls = []
        for _ in range(rng.randint(3, 5)):
            calls.append({"methodName": "view", "params": [SID, random_filters(rng), rng.choice(ORDERS),
                                                              rng.choice(["ASC", "DESC"]),
                                                              rng.randrange(max(1, ENTRIES - 200)),
                                                              rng.choice([10, 50, 100])]})
        out.append(body("system.multicall", calls))
    return out


def malformed_bodies():
    """(name, body): each must be answered with an XML-RPC fault."""
    view = body("view", SID, {}, "", "ASC", 0, 10)
    return [
        ("garbage", os.urandom(300)),
        ("not xml", b"hello, ctd\n" * 20),
        ("truncated", view[: len(view) // 2]),
        ("attributes", b'<?xml version="1.0"?><methodCall ' + b" ".join(b'a%d="x"' % i for i in range(3000)) +
         b"><methodName>status</methodName><params/></methodCall>"),
        ("huge int", view.replace(b"<int>0</int>", b"<int>99999999999999999999999999999</int>", 1)),
        ("huge i8", body("view", SID, {}, "", "ASC", 0, 10).replace(b"<int>10</int>",
                                                                     b"<i8>-99999999999999999999999</i8>")),
        ("bad UTF-8", view.replace(b"<string>ASC</string>", b"<string>\xff\xfe\xc3\x28</string>")),
        ("NUL byte", view.replace(b"ASC", b"A\x00C")),
        ("DOCTYPE", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><methodCall><methodName>&a;'
                    b"</methodName></methodCall>"),
        ("too deep", b"<?xml version='1.0'?><methodCall><methodName>status</methodName><params><param>" +
         b"<value><array><data>" * 40 + b"<value>x</value>" + b"</data></array></value>" * 40 +
         b"</param></params></methodCall>"),
        ("wrong root", b"<?xml version='1.0'?><methodResponse><params/></methodResponse>"),
        ("unknown type", view.replace(b"<int>0</int>", b"<bigint>0</bigint>", 1)),
        ("unknown method", body("no.such.method", 1)),
        ("wrong params", body("view", SID, "not a struct")),
        ("bad order_by", body("view", SID, {}, "nonsense", "ASC", 0, 10)),
        ("negative start", body("view", SID, {}, "", "ASC", -5, 10)),
        ("bad filter", body("view", SID, {"orig_src": "10.0.0.300/99"}, "", "ASC", 0, 10)),
        ("empty body", b""),
    ]


# --------------------------------------------------------------------------------------------------------- clients

FAULT_RE = re.compile(rb"<name>faultCode</name><value><int>(-?\d+)</int>")
STR_RE = re.compile(rb"<string>([^<]*)</string>")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}
        self.view_lat = []
        self.multi_lat = []
        self.kill_lat = []
        self.samples = {}  # category -> first few messages
        self.killed = {}  # operator user -> [ids]
        self.kill_foreign = []  # ids reported killed that were not the killer's own
        self.ambiguous = []  # ids `kill` refused as shared by two entries
        self.nonreading = []

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def sample(self, key, text):
        with self.lock:
            lst = self.samples.setdefault(key, [])
            if len(lst) < 5:
                lst.append(text[:400] if isinstance(text, str) else repr(text[:400]))

    def export(self):
        return {"c": self.c, "view_lat": self.view_lat, "multi_lat": self.multi_lat, "kill_lat": self.kill_lat,
                "samples": self.samples, "killed": self.killed, "kill_foreign": self.kill_foreign,
                "ambiguous": self.ambiguous, "nonreading": self.nonreading}


class Conn:
    """A keep-alive HTTP/1.1 connection from a chosen loopback source address; sends pre-encoded bodies."""

    def __init__(self, port, source):
        self.port = port
        self.source = source
        self.c = None

    def post(self, data, timeout=30):
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                                    source_address=(self.source, 0))
            try:
                self.c.request("POST", "/RPC2", data, {"Content-Type": "text/xml"})
                r = self.c.getresponse()
                out = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return r.status, out
            except (ConnectionError, http.client.RemoteDisconnected, BrokenPipeError) as e:
                # A keep-alive connection the server closed between calls (idle timeout): retry once on a new one.
                self.close()
                if attempt == 1:
                    raise
            except Exception:
                self.close()
                raise

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def fault_code(data):
    m = FAULT_RE.search(data)
    return int(m.group(1)) if m else None


class Client(threading.Thread):
    def __init__(self, kind, index, user, port, deadline, stats, owned):
        super().__init__(daemon=True)
        self.kind, self.index, self.user, self.port, self.deadline, self.st = kind, index, user, port, deadline, stats
        self.rng = random.Random(index * 7919 + 1)
        self.owned = owned  # operator: list of its own ids
        self.conn = Conn(port, BAD_SRC if kind == "badlogin" else GOOD_SRC)
        self.sid = None

    def pause(self):
        time.sleep(self.rng.uniform(0.5, 1.5) * THINK)

    def live(self):
        return time.time() < self.deadline

    # One well-formed call: counts it, and any fault that is not in `expected` as an error. Returns (data, fault).
    def call(self, category, data, expected=(), lat=None):
        t = time.perf_counter()
        try:
            status, out = self.conn.post(data)
        except Exception as e:
            self.st.add("wf_calls")
            self.st.add("wf_errors")
            self.st.add(f"error:{category}:transport")
            self.st.sample(f"error:{category}", f"{type(e).__name__}: {e}")
            return None, None
        elapsed = time.perf_counter() - t
        self.st.add("wf_calls")
        self.st.add(f"calls:{category}")
        if status != 200 or not out.startswith(b"<?xml") or b"<methodResponse>" not in out:
            self.st.add("wf_errors")
            self.st.add(f"error:{category}:http{status}")
            self.st.sample(f"error:{category}", out[:300])
            return None, None
        code = fault_code(out) if b"<fault>" in out[:200] else None
        if code is not None:
            if code in expected:
                self.st.add(f"refused:{category}:{code}")
            else:
                self.st.add("wf_errors")
                self.st.add(f"error:{category}:fault{code}")
                self.st.sample(f"error:{category}", out[:400])
            if code == 2:
                self.sid = None  # expired or ended: log in again
            return out, code
        if lat is not None:
            lat.append((round(time.time(), 2), elapsed))
        if self.rng.random() < 0.01:  # now and then, a full decode: the answer must be well-formed XML-RPC
            try:
                xmlrpc.client.loads(out)
            except Exception as e:
                self.st.add("wf_errors")
                self.st.add(f"error:{category}:undecodable")
                self.st.sample(f"error:{category}", f"{e}: {out[:200]!r}")
        return out, None

    def login(self, expected=(11,)):
        while self.live():
            out, code = self.call("login", body("login", self.user, PASSWORD), expected=expected)
            if out is not None and code is None:
                m = STR_RE.search(out)
                self.sid = m.group(1)
                return True
            time.sleep(self.rng.uniform(0.1, 0.3))
        return False

    def with_sid(self, template):
        return template.replace(SID.encode(), self.sid)

    def run(self):
        try:
            getattr(self, "run_" + self.kind)()
        except Exception:
            self.st.add("client_crashes")
            self.st.sample("client_crash", traceback.format_exc())
        finally:
            self.conn.close()

    def run_viewer(self):
        views = view_templates(self.rng)
        while self.live():
            if self.sid is None and not self.login():
                return
            self.call("view", self.with_sid(self.rng.choice(views)), lat=self.st.view_lat)
            if self.rng.random() < 0.01:  # a viewer may not kill: fault 3, and nothing of anyone's goes
                self.call("kill (viewer)", self.with_sid(body("kill", SID, [str(self.rng.randrange(1, 1 << 31))])),
                          expected=(3,))
            self.pause()

    def run_multicall(self):
        multis = multicall_templates(self.rng)
        while self.live():
            if self.sid is None and not self.login():
                return
            out, code = self.call("multicall", self.with_sid(self.rng.choice(multis)), lat=self.st.multi_lat)
            if out is not None and code is None and b"faultCode" in out:
                self.st.add("wf_errors")
                self.st.add("error:multicall:inner fault")
                self.st.sample("error:multicall", out[:400])
            self.pause()

    def run_operator(self):
        views = view_templates(self.rng, 100)
        own = list(self.owned)
        self.rng.shuffle(own)
        mine = set(own)
        killed = self.st.killed.setdefault(self.user, [])
        while self.live():
            if self.sid is None and not self.login():
                return
            if own and self.rng.random() < 0.6:
                n = min(len(own), self.rng.choice([1, 1, 2, 5, 10, 20, 50]))
                batch, own = own[:n], own[n:]
                out, code = self.call("kill", self.with_sid(body("kill", SID, [str(i) for i in batch])),
                                      lat=self.st.kill_lat)
                if out is not None and code is None:
                    part = out.split(b"<name>killed_ids</name>", 1)[1].split(b"</array>", 1)[0]
                    ids = [int(x) for x in STR_RE.findall(part)]
                    amb = out.split(b"<name>ambiguous</name>", 1)[1].split(b"</array>", 1)[0]
                    ambiguous = [int(x) for x in STR_RE.findall(amb)]
                    foreign = [i for i in ids if i not in mine or i not in batch]
                    with self.st.lock:
                        killed.extend(ids)
                        self.st.kill_foreign.extend(foreign)
                        self.st.ambiguous.extend(ambiguous)
                    if ambiguous:
                        self.st.add("refused:kill (id shared by two entries): ambiguous", len(ambiguous))
                    if len(ids) + len(ambiguous) != len(batch):
                        self.st.add("wf_errors")
                        self.st.add("error:kill:not all killed")
                        self.st.sample("error:kill", out[:600])
            else:
                self.call("view", self.with_sid(self.rng.choice(views)), lat=self.st.view_lat)
            self.pause()

    def run_admin(self):
        views = view_templates(self.rng, 50)
        while self.live():
            if self.sid is None and not self.login():
                return
            r = self.rng.random()
            if r < 0.3:
                self.call("status", self.with_sid(body("status", SID)))
            elif r < 0.5:
                self.call("audit_list", self.with_sid(body("audit_list", SID, {}, 20)))
            else:
                self.call("view", self.with_sid(self.rng.choice(views)), lat=self.st.view_lat)
            self.pause()

    def run_goodlogin(self):
        views = view_templates(self.rng, 50)
        while self.live():
            if not self.login():
                return
            self.call("view", self.with_sid(self.rng.choice(views)), lat=self.st.view_lat)
            self.call("logout", self.with_sid(body("logout", SID)))
            self.sid = None
            self.pause()

    def run_badlogin(self):
        while self.live():
            r = self.rng.random()
            # Only names no good client uses: the per-user lockout would otherwise (rightly) keep that user out.
            user = "guessme" if r < 0.5 else f"nobody{self.rng.randrange(1000)}"
            out, code = self.call("bad login", body("login", user, "wrong-" + str(self.rng.random())),
                                  expected=(1, 11))
            if out is not None and code is None:
                self.st.sample("error:bad login", b"a wrong password was accepted: " + out[:200])
                self.st.add("wf_errors")
            self.pause()

    def run_malformed(self):
        bodies = malformed_bodies()
        sid = None
        while self.live():
            if sid is None:
                if not self.login():
                    return
                sid = self.sid
            name, data = self.rng.choice(bodies)
            data = data.replace(SID.encode(), sid)
            self.st.add("malformed_sent")
            try:
                status, out = self.conn.post(data)
            except Exception as e:
                self.st.add("malformed_unanswered")
                self.st.sample("malformed_unanswered", f"{name}: {type(e).__name__}: {e}")
                self.pause()
                continue
            code = fault_code(out) if status == 200 else None
            if code is None:
                self.st.add("malformed_unanswered")
                self.st.sample("malformed_unanswered", f"{name}: HTTP {status} {out[:200]!r}")
            else:
                self.st.add("malformed_faulted")
                self.st.add(f"malformed:{code}")
                if code == 2:
                    sid = None
            self.pause()

    def run_slow(self):
        views = view_templates(self.rng, 50)
        while self.live():
            if self.sid is None and not self.login():
                return
            data = self.with_sid(self.rng.choice(views))
            req = (b"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(data)) + data
            delay = 2.0 / len(req)  # about 2 s per request, one byte per send
            self.st.add("wf_calls")
            self.st.add("calls:slow view")
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=30, source_address=(GOOD_SRC, 0))
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(len(req)):
                    s.send(req[i:i + 1])
                    time.sleep(delay)
                resp = b""
                while b"\r\n\r\n" not in resp:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed before the answer")
                    resp += chunk
                head, rest = resp.split(b"\r\n\r\n", 1)
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
                while len(rest) < length:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed in the middle of the answer")
                    rest += chunk
                s.close()
                code = fault_code(rest)
                if b" 200 " not in head.split(b"\r\n")[0] or code is not None:
                    self.st.add("wf_errors")
                    self.st.add(f"error:slow view:fault{code}")
                    self.st.sample("error:slow view", head[:100] + rest[:300])
                    if code == 2:
                        self.sid = None
                else:
                    self.st.add("slow_ok")
            except Exception as e:
                self.st.add("wf_errors")
                self.st.add("error:slow view:transport")
                self.st.sample("error:slow view", f"{type(e).__name__}: {e}")
            self.pause()

    def run_nonreading(self):
        """Pipelines up to 400 large views on one connection and never reads. Notes how many the server took
        before the socket stopped accepting (back-pressure) and whether it cut the connection, then holds it
        for 15 s and starts over."""
        if not self.login():
            return
        data = body("view", SID, {}, "orig_port_src", "DESC", 0, 150).replace(SID.encode(), self.sid)
        req = (b"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
               b"Content-Length: %d\r\n\r\n" % len(data)) + data
        while self.live():
            s = socket.create_connection(("127.0.0.1", self.port), source_address=(GOOD_SRC, 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.setblocking(False)
            sent, blocked, cut = 0, False, False
            pending = req * 400
            t0 = time.time()
            while pending and self.live():
                try:
                    n = s.send(pending[:65536])
                    sent += n
                    pending = pending[n:]
                except BlockingIOError:
                    _, w, _ = select.select([], [s], [], 3.0)
                    if not w:
                        blocked = True
                        break
                except OSError:
                    cut = True
                    break
            time.sleep(2)
            queues = server_queues(self.port, s.getsockname()[1])
            hold_until = min(self.deadline, time.time() + 15)
            while not cut and time.time() < hold_until:
                p = select.poll()
                p.register(s, select.POLLRDHUP | select.POLLERR | select.POLLHUP)
                ev = p.poll(500)
                if ev and ev[0][1] & (select.POLLRDHUP | select.POLLERR | select.POLLHUP):
                    cut = True
            later = server_queues(self.port, s.getsockname()[1])
            with self.st.lock:
                self.st.nonreading.append({"requests_sent": sent // len(req), "request_bytes": len(req),
                                           "blocked": blocked, "cut": cut, "seconds": round(time.time() - t0, 1),
                                           "server_recvq": queues[0], "server_sendq": queues[1],
                                           "client_recvq": queues[2], "server_recvq_later": later[0],
                                           "server_sendq_later": later[1]})
            s.close()


def server_queues(port, client_port):
    """(server socket's unread request bytes, its unsent answer bytes, the client socket's unread answer bytes)."""
    out = sh(f"ss -tnH state established '( sport = :{port} and dport = :{client_port} ) or "
             f"( sport = :{client_port} and dport = :{port} )'", check=False).stdout
    server, client = (None, None), (None, None)
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4:
            if f[2].endswith(f":{port}"):
                server = (int(f[0]), int(f[1]))
            else:
                client = (int(f[0]), int(f[1]))
    return server[0], server[1], client[0]


def probe(port, deadline, lat):
    """One client in the main process (no GIL shared with other clients): an uncached view every 100 ms."""
    rng = random.Random(42)
    rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2")
    sid = rpc.login("probe", PASSWORD).encode()
    views = view_templates(rng, 1000)
    conn = Conn(port, GOOD_SRC)
    while time.time() < deadline:
        t = time.perf_counter()
        status, out = conn.post(rng.choice(views).replace(SID.encode(), sid))
        if status == 200 and b"<fault>" not in out[:200]:
            lat.append((round(time.time(), 2), time.perf_counter() - t))
        time.sleep(0.1)


def worker(specs, port, deadline, start_at, pipe):
    stats = Stats()
    time.sleep(max(0, start_at - time.time()))
    threads = [Client(kind, idx, user, port, deadline, stats, owned) for kind, idx, user, owned in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline - time.time() + 60)
    pipe.send(json.dumps(stats.export()))
    pipe.close()


# ---------------------------------------------------------------------------------------------------------- main

def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[max(0, min(len(values) - 1, int(round(p / 100 * (len(values) - 1)))))]


def main():
    setup_namespace()
    kinds = assign_kinds(CLIENTS)
    ops = kinds.count("operator")
    if ops + 1 > MARKS:
        sys.exit("too many operators for the marks")
    accounts, specs = [("admin", "admin"), ("guessme", "viewer"), ("probe", "viewer")], []
    for i, kind in enumerate(kinds):
        user = f"{kind}{i}"
        role = {"operator": "operator", "admin": "admin"}.get(kind, "viewer")
        if kind != "badlogin":
            accounts.append((user, role))
        specs.append([kind, i, user, []])

    fill_s = fill(ENTRIES)
    before, shared_ids = table(with_shared=True)
    start_count = count()
    op_marks = {}
    by_mark = {}
    for i, m in before.items():
        by_mark.setdefault(m, []).append(i)
    mark = 1
    for spec in specs:
        if spec[0] == "operator":
            spec[3] = by_mark.get(mark, [])
            op_marks[spec[2]] = mark
            mark += 1
    owner_of = {i: u for u, m in op_marks.items() for i in by_mark.get(m, [])}

    work = tempfile.mkdtemp(prefix="ctd-soak-")
    daemon = Daemon(work, accounts)
    rss, cpu = [], []
    t_start = time.time() + 1.0
    deadline = t_start + SECONDS
    pipes, procs = [], []
    ctx = multiprocessing.get_context("fork")
    for p in range(PROCS):
        r, w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker, args=(specs[p::PROCS], daemon.port, deadline, t_start, w))
        proc.start()
        pipes.append(r)
        procs.append(proc)
    time.sleep(max(0, t_start - time.time()))
    probe_lat = []
    threading.Thread(target=probe, args=(daemon.port, deadline, probe_lat), daemon=True).start()
    cpu0, w0 = daemon.cpu_seconds(), time.time()
    while time.time() < deadline:
        v = daemon.rss_mb()
        if v is None:
            break
        rss.append((time.time() - t_start, v))
        time.sleep(1.0 - (time.time() - t_start) % 1.0)
    alive = daemon.proc.poll() is None
    cpu_pct = 100 * (daemon.cpu_seconds() - cpu0) / (time.time() - w0) if alive else float("nan")
    results = [json.loads(r.recv()) for r in pipes]
    for p in procs:
        p.join(30)
    time.sleep(1)
    end_count = count()
    after = table()
    alive_end = daemon.proc.poll() is None
    rss_end = daemon.rss_mb()
    exit_code = daemon.stop()
    err_text = open(daemon.err_path, errors="replace").read()
    throttled = {}
    for reason in re.findall(r"login of \S+ from \S+ refused: ([^\n]+)", err_text):
        throttled[reason] = throttled.get(reason, 0) + 1
    busy = len(re.findall(r"logins in progress", err_text))

    # merge
    c, samples, killed, foreign, nonreading, ambiguous = {}, {}, {}, [], [], []
    view_lat, multi_lat, kill_lat = [], [], []
    for r in results:
        for k, v in r["c"].items():
            c[k] = c.get(k, 0) + v
        for k, v in r["samples"].items():
            samples.setdefault(k, []).extend(v)
        for u, ids in r["killed"].items():
            killed.setdefault(u, []).extend(ids)
        foreign += r["kill_foreign"]
        ambiguous += r["ambiguous"]
        nonreading += r["nonreading"]
        view_lat += r["view_lat"]
        multi_lat += r["multi_lat"]
        kill_lat += r["kill_lat"]
    all_killed = [i for ids in killed.values() for i in ids]
    not_own = [i for u, ids in killed.items() for i in ids if owner_of.get(i) != u]
    expected_after = {i: m for i, m in before.items() if i not in set(all_killed)}
    missing = [i for i in expected_after if i not in after]  # gone though nobody named them
    survivors = [i for i in all_killed if i in after]  # reported killed, still there
    steady = [v for t, v in rss if t >= WARMUP]
    # Latency per 5 s of the run (p99 of the views), to see whether slow answers cluster.
    buckets = {}
    for ts, v in view_lat:
        buckets.setdefault(int((ts - t_start) // 5) * 5, []).append(v)
    lat_timeline = {k: (len(v), percentile(v, 50) * 1000, percentile(v, 99) * 1000) for k, v in sorted(buckets.items())}
    view_lat = [v for _, v in view_lat]
    multi_lat = [v for _, v in multi_lat]
    kill_lat = [v for _, v in kill_lat]
    probe_lat = [v for _, v in probe_lat]
    r = dict(
        fill_s=fill_s, startup=daemon.startup, c=c, samples=samples, view_lat=view_lat, multi_lat=multi_lat,
        kill_lat=kill_lat, killed=len(all_killed), kill_dupes=len(all_killed) - len(set(all_killed)),
        not_own=len(not_own) + len(foreign), missing=len(missing), survivors=len(survivors),
        start_count=start_count, end_count=end_count, alive=alive and alive_end, exit_code=exit_code, rss=rss,
        steady=steady, rss_end=rss_end, cpu_pct=cpu_pct, throttled=throttled, busy_log=busy, nonreading=nonreading,
        kinds={k: kinds.count(k) for k in sorted(set(kinds))}, ops=ops, owned_each=len(by_mark.get(1, [])),
        probe_lat=probe_lat, ambiguous=len(ambiguous), ambiguous_unshared=len(set(ambiguous) - shared_ids),
        shared_ids=len(shared_ids),
    )
    sh("conntrack -F", check=False)
    report = render(r)
    print(report)
    for k in sorted(samples):
        print(f"\n[{k}]", *samples[k][:5], sep="\n  ")
    print("\nRSS timeline (s, MB):", " ".join(f"{t:.0f}:{v:.0f}" for t, v in rss))
    print("view latency per 5 s (views, p50 ms, p99 ms):",
          " ".join(f"{k}s:{n}/{a:.1f}/{b:.1f}" for k, (n, a, b) in lat_timeline.items()))
    print("non-reading connections:", json.dumps(nonreading))
    print("counters:", json.dumps(c, sort_keys=True))
    if err_text.strip():
        lines = err_text.strip().splitlines()
        print(f"\nctd stderr: {len(lines)} lines; last 15:", *lines[-15:], sep="\n  ")
    shutil.rmtree(work, ignore_errors=True)
    if OUT:
        with open(OUT, "a") as f:
            f.write("\n" + report + "\n")


def render(r):
    c = r["c"]
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    steady = r["steady"]
    smax, smin = (max(steady), min(steady)) if steady else (float("nan"), float("nan"))
    spread = 100 * (smax - smin) / smin if steady else float("nan")
    v50, v99 = percentile(r["view_lat"], 50) * 1000, percentile(r["view_lat"], 99) * 1000
    m50, m99 = percentile(r["multi_lat"], 50) * 1000, percentile(r["multi_lat"], 99) * 1000
    p50, p99 = percentile(r["probe_lat"], 50) * 1000, percentile(r["probe_lat"], 99) * 1000
    k50, k99 = percentile(r["kill_lat"], 50) * 1000, percentile(r["kill_lat"], 99) * 1000
    refusals = {}
    for k, v in c.items():
        if k.startswith("refused:"):
            # "refused:CATEGORY:CODE": a fault code, or a word ("ambiguous": ids `kill` refused in its answer).
            _, cat, code = k.split(":", 2)
            code = code.strip()
            refusals[(cat, code)] = refusals.get((cat, code), 0) + v
    refused_text = "; ".join(f"{cat}: {'fault ' + code if code.isdigit() else code} × {n:,}"
                             for (cat, code), n in sorted(refusals.items())) or "none"
    throttle_text = "; ".join(f"{n:,} × “{k}”" for k, n in sorted(r["throttled"].items())) or "none logged"
    mal_codes = "; ".join(f"{k.split(':')[1]} × {v:,}" for k, v in sorted(c.items()) if k.startswith("malformed:"))
    errors = {k[6:]: v for k, v in c.items() if k.startswith("error:")}
    nr = r["nonreading"]
    if nr:
        read_all = [x for x in nr if not x["blocked"] and not x["cut"]
                    and (x["server_recvq_later"] or 0) < x["request_bytes"]]
        nr_text = (f"{len(nr)} connections, up to 400 pipelined 150-entry views each: {sum(x['blocked'] for x in nr)} "
                   f"back-pressured (send blocked), {sum(x['cut'] for x in nr)} cut by the server, {len(read_all)} "
                   f"neither (the server read every request: its receive queue empty at the end of the hold)")
    else:
        nr_text = "none"
    calls = sum(v for k, v in c.items() if k.startswith("calls:"))
    duration = SECONDS
    kinds = ", ".join(f"{k} {v}" for k, v in r["kinds"].items())
    ok = lambda b: "yes" if b else "**no**"
    lines = [
        f"## Soak (make soak) — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — {os.cpu_count()} cores "
        f"({cpu_model}), kernel {platform.release()}",
        "",
        f"{CLIENTS} clients ({kinds}) in {PROCS} processes for {duration:.0f} s, mean pause {THINK * 1000:.0f} ms "
        f"between a client's calls; {ENTRIES:,} entries (filled in {r['fill_s']:.1f} s); ctd release, AuthSHA + "
        f"AuditSQLite, default limits; ready in {r['startup']:.1f} s.",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| well-formed calls done (all kinds; rate) | {c.get('wf_calls', 0):,} ({c.get('wf_calls', 0) / duration:,.0f}/s)"
        f" | |",
        f"| errors on well-formed calls | {c.get('wf_errors', 0):,}"
        + (f" ({'; '.join(f'{k} × {v}' for k, v in sorted(errors.items()))})" if errors else "") + " | 0 |",
        f"| malformed bodies answered with a fault | {c.get('malformed_faulted', 0):,} of {c.get('malformed_sent', 0):,}"
        f" ({mal_codes}) | all |",
        f"| daemon crashes (alive at the end; exit code on SIGTERM) | {0 if r['alive'] and r['exit_code'] == 0 else 1}"
        f" (alive: {ok(r['alive'])}; exit {r['exit_code']}) | 0 |",
        f"| RSS after {WARMUP:.0f} s warm-up: min / max (spread) | {smin:.0f} / {smax:.0f} MB ({spread:.1f} %) | "
        f"flat within 10 % |",
        f"| `view` latency p50 / p99 ({len(r['view_lat']):,} views) | {v50:.1f} / {v99:.1f} ms | p99 < 50 ms |",
        f"| … the same from one probe client alone in its process, every 100 ms ({len(r['probe_lat']):,}) | "
        f"{p50:.1f} / {p99:.1f} ms | |",
        f"| multicall (3–5 views) p50 / p99 ({len(r['multi_lat']):,}) | {m50:.1f} / {m99:.1f} ms | |",
        f"| `kill` p50 / p99 ({len(r['kill_lat']):,} calls, 1–50 ids, audited) | {k50:.1f} / {k99:.1f} ms | |",
        f"| refusals (expected; fault code counts) | {refused_text} | |",
        f"| … of them by the login throttle (ctd's log) | {throttle_text} | |",
        f"| kills done: ids killed by {r['ops']} operators ({r['owned_each']:,} own ids each) | {r['killed']:,} | |",
        f"| … killed ids that were not the killer's own / killed twice | {r['not_own']} / {r['kill_dupes']} | 0 / 0 |",
        f"| … ids refused as ambiguous / of them not shared by two entries in the starting dump "
        f"({r['shared_ids']} ids shared there) | {r['ambiguous']} / {r['ambiguous_unshared']} | any / 0 |",
        f"| … `conntrack -C` start − killed = end | {r['start_count']:,} − {r['killed']:,} = "
        f"{r['start_count'] - r['killed']:,}; end {r['end_count']:,} "
        f"({'equal' if r['start_count'] - r['killed'] == r['end_count'] else '**differs**'}) | equal |",
        f"| … entries gone that nobody killed / killed but still there | {r['missing']} / {r['survivors']} | 0 / 0 |",
        f"| slow clients (view trickled byte by byte, ≈2 s) answered | {c.get('slow_ok', 0):,} of "
        f"{c.get('calls:slow view', 0):,} | all |",
        f"| non-reading clients (pipeline, never read) | {nr_text} | cut or back-pressured |",
        f"| ctd CPU during the run | {r['cpu_pct']:.0f} % of one core | |",
    ]
    lines += ["", reading(r, spread, v99, p99)]
    return "\n".join(lines)


def reading(r, spread, v99, p99):
    """The one-paragraph reading under the table, from the figures."""
    c, nr = r["c"], r["nonreading"]
    out = []
    errs = c.get("wf_errors", 0)
    out.append(f"{c.get('wf_calls', 0):,} well-formed calls got {'no error' if errs == 0 else f'{errs:,} errors'}; "
               f"every refusal was an expected one (busy logins, fault 11; bad logins, fault 1, most of them refused by "
               f"the throttle without asking the authenticator; viewers' kills, fault 3)." if errs == 0 else
               f"{c.get('wf_calls', 0):,} well-formed calls got {errs:,} errors (listed in the table).")
    mal_ok = c.get("malformed_faulted", 0) == c.get("malformed_sent", 0)
    out.append(f"{'Every' if mal_ok else 'Not every'} malformed body was answered with a fault.")
    kills_ok = r["not_own"] == 0 and r["missing"] == 0 and r["survivors"] == 0 and \
        r["start_count"] - r["killed"] == r["end_count"]
    out.append(f"The {r['killed']:,} kills {'add up' if kills_ok else 'do not add up'}: "
               f"{'only the killers’ own ids went, and the kernel table lost exactly those' if kills_ok else 'see the kill rows'}.")
    out.append(f"The daemon {'survived and exited 0 on SIGTERM' if r['alive'] and r['exit_code'] == 0 else 'did not survive cleanly'}.")
    if nr:
        took = [x for x in nr if not x["blocked"] and not x["cut"]]
        if took:
            out.append(f"{len(took)} of {len(nr)} non-reading connections were neither cut nor back-pressured: their "
                       f"pipelined requests (about 300 bytes each) fit in ctd's socket receive buffer and its first "
                       f"reads, and ctd answers them one at a time, holding further reads while an answer cannot be "
                       f"written (the kernel send queue of such a socket was full at about "
                       f"{max((x['server_sendq'] or 0) for x in nr) / 1e6:.1f} MB).")
        else:
            out.append("Every non-reading connection was cut or back-pressured.")
    out.append(f"View p99 {'met' if v99 < 50 else 'missed'} the 50 ms target ({v99:.0f} ms; {p99:.0f} ms from the "
               f"lone probe client, alone in its process: the wait is in ctd's queue and its share of the cores, not in the "
               f"clients' interpreters).")
    return " ".join(out)


if __name__ == "__main__":
    main()
