"""Hostile HTTP clients (issue 8): connection floods, slow heads, clients that keep sending or never read, browser
origins, attribute bodies, weak TLS. Each test shows the refusal and that ctd keeps serving everyone else."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import time
import xmlrpc.client

import pytest

from ctdtest import CTD, assert_human_fault, ct_fill, run, wait_for, write_config, make_password_file


def _closed_by_peer(s: socket.socket) -> bool:
    """True once the peer has closed (EOF or reset); False while the socket is open and silent."""
    s.setblocking(False)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        s.setblocking(True)


def _call_from(c, source: str, method="system.listMethods", *params):
    """One XML-RPC call on a new connection whose source address is `source`."""
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", "/RPC2", body=xmlrpc.client.dumps(params, method).encode(),
                     headers={"Content-Type": "text/xml"})
        r = conn.getresponse()
        assert r.status == 200, r.status
        return xmlrpc.client.loads(r.read())[0][0]
    finally:
        conn.close()


def _read_until_closed(s: socket.socket) -> bytes:
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


def test_connectionFlood_beyondPerAddressLimit_refusedAtAccept_othersServed(ctd):
    c = ctd(server_extra="max_connections = 20\nmax_connections_per_address = 5")
    # Five keep-alive clients, each served once (so ctd has counted them all before the flood).
    keep = [c.http() for _ in range(5)]
    for conn in keep:
        conn.request("POST", "/RPC2", body=LIST, headers={"Content-Type": "text/xml"})
        assert b"login" in conn.getresponse().read()
    held = [conn.sock for conn in keep]
    # From then on, every new connection from the same address is closed at once, without an answer.
    refused = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", c.port), timeout=10)
        s.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        refused.append(s)
    for s in refused:
        wait_for(lambda: _closed_by_peer(s), timeout=30, what="the connection over the per-address limit closed")
    assert all(not _closed_by_peer(s) for s in held), "a connection under the limit was closed"
    # Another address is served meanwhile, and so are the keep-alive clients, and 127.0.0.1 once they are gone.
    assert "login" in _call_from(c, "127.0.0.2")
    for conn in keep:
        conn.request("POST", "/RPC2", body=LIST, headers={"Content-Type": "text/xml"})
        assert b"login" in conn.getresponse().read()
    for s in held + refused:
        s.close()
    wait_for(lambda: _try_call(c, "127.0.0.1"), timeout=30, what="127.0.0.1 served again")
    wait_for(lambda: "refusing new connections: the limit of 5 open connections from 127.0.0.1" in c.stderr(),
             timeout=10, what="the refusal logged")


def _try_call(c, source):
    try:
        return "login" in _call_from(c, source)
    except OSError:
        return False


def test_connectionFlood_beyondTotalLimit_refused(ctd):
    c = ctd(server_extra="max_connections = 6\nmax_connections_per_address = 6")
    held = []
    for i in range(6):
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=30, source_address=(f"127.0.0.{2 + i}", 0))
        conn.request("POST", "/RPC2", body=LIST, headers={"Content-Type": "text/xml"})
        assert b"login" in conn.getresponse().read()
        held.append(conn.sock)
    extra = socket.create_connection(("127.0.0.1", c.port), timeout=10, source_address=("127.0.1.1", 0))
    wait_for(lambda: _closed_by_peer(extra), timeout=30, what="the connection over the total limit closed")
    held[0].close()
    wait_for(lambda: _try_call(c, "127.0.1.1"), timeout=30, what="a new connection served once one closed")
    for s in held[1:]:
        s.close()


def test_halfRequestLine_closedAfterHeaderDeadline(ctd):
    c = ctd(server_extra="header_timeout = 1\nidle_timeout = 600")
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as idle, \
            socket.create_connection(("127.0.0.1", c.port), timeout=10) as slow:
        slow.sendall(b"POST /RP")
        t0 = time.monotonic()
        wait_for(lambda: _closed_by_peer(slow), timeout=60, what="the half request line closed")
        assert time.monotonic() - t0 >= 0.9, "closed before the deadline"
        # One more byte now and then does not keep a connection: the deadline runs from the first byte.
        with socket.create_connection(("127.0.0.1", c.port), timeout=10) as drip:
            t0 = time.monotonic()
            drip.sendall(b"POST /RPC2?")

            def dripped_and_closed():
                with contextlib.suppress(OSError):
                    drip.sendall(b"a")
                return _closed_by_peer(drip)
            wait_for(dripped_and_closed, timeout=60, interval=0.2, what="the dripping client closed")
            assert time.monotonic() - t0 >= 0.9
        # A connection that has sent nothing is idle (600 s here), not late with a head, and is still open.
        assert not _closed_by_peer(idle)
        assert "login" in _call_from(c, "127.0.0.1")


def test_bodyDeadline_closesAClientThatStopsMidBody(ctd):
    c = ctd(server_extra="body_timeout = 1")
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
        s.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/xml\r\nContent-Length: 100\r\n\r\n"
                  b"<methodCall>" % c.port)
        wait_for(lambda: _closed_by_peer(s), timeout=60, what="the unfinished body closed")


def test_idleTimeout_closesAKeepAliveConnectionWithNoRequest(ctd):
    c = ctd(server_extra="idle_timeout = 1")
    conn = c.http()
    conn.request("POST", "/RPC2", body=xmlrpc.client.dumps((), "system.listMethods").encode(),
                 headers={"Content-Type": "text/xml"})
    assert conn.getresponse().read()
    wait_for(lambda: _closed_by_peer(conn.sock), timeout=60, what="the idle keep-alive connection closed")
    conn.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["declared-length", "chunked"])
def test_oversizedBody_clientThatKeepsSending_readsTheFault(ctd, chunked):
    """ctd answers -32000 as soon as the body is too large, then shuts its side and drains what the client still
    sends: a client that sends its whole 4 MiB body before reading gets the fault, not EPIPE or a reset."""
    c = ctd(max_body_bytes=4096)
    body = xmlrpc.client.dumps(("x" * (4 << 20),), "login").encode()
    for attempt in range(3):  # the same, three times: a race here would show
        with socket.create_connection(("127.0.0.1", c.port), timeout=30) as s:
            head = b"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/xml\r\n" % c.port
            if chunked:
                s.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
                for k in range(0, len(body), 16384):
                    part = body[k:k + 16384]
                    s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                s.sendall(b"0\r\n\r\n")
            else:
                s.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body))
                for k in range(0, len(body), 65536):
                    s.sendall(body[k:k + 65536])
            answer = _read_until_closed(s)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b"connection: close" in answer.lower()
        fault = answer.split(b"\r\n\r\n", 1)[1]
        with pytest.raises(xmlrpc.client.Fault) as f:
            xmlrpc.client.loads(fault)
        assert f.value.faultCode == -32000 and "4096" in f.value.faultString
    assert "login" in _call_from(c, "127.0.0.1")


def test_pipeliningClientThatNeverReads_isNotRead_rssBounded(ctd):
    ct_fill("create", 300, "--base", "10.77.0.0", "--timeout", 600)
    c = ctd()
    rpc, sid = c.login()
    wait_for(lambda: rpc.view(sid, {}, "", "ASC", 0, 1)["total"] >= 300, timeout=30, what="the entries in view")
    request = xmlrpc.client.dumps((sid, {}, "id", "ASC", 0, 150), "view").encode()
    page = len(_raw_answer(c, request))
    assert page > 50_000, page
    baseline = c.rss_kib()
    s = socket.create_connection(("127.0.0.1", c.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    one = (b"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n"
           % (c.port, len(request))) + request
    s.setblocking(False)
    sent = 0
    stalled_since = None
    pending = b""
    # Send pipelined views without ever reading, until ctd stops reading them (our sends stall for 3 s).
    while sent < 40_000:
        if not pending:
            pending = one * 50
        try:
            n = s.send(pending)
            pending = pending[n:]
            sent += n // len(one)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 3:
                break
            time.sleep(0.01)
        # Others are served meanwhile.
    assert stalled_since is not None, f"ctd read all {sent} pipelined requests of a client that never reads"
    for _ in range(3):
        assert rpc.view(sid, {}, "", "ASC", 0, 150)["total"] >= 300
    grown_mib = (c.rss_kib() - baseline) / 1024
    # Unbounded, this would be the answers to every request sent: `sent` pages of `page` bytes.
    assert grown_mib < 64, f"RSS grew by {grown_mib:.0f} MiB for {sent} pipelined requests of {page} bytes each"
    print(f"pipelined {sent} requests ({sent * page / 2**20:.0f} MiB of answers if all were built); RSS grew "
          f"{grown_mib:.1f} MiB")
    s.close()
    assert "login" in _call_from(c, "127.0.0.1")


def _server_side_established(port: int, client_port: int) -> bool:
    """Whether ctd still holds its end of the connection from `client_port` (seen by the kernel, not by reading)."""
    out = run(["ss", "-Htn", "state", "established", f"( sport = :{port} and dport = :{client_port} )"]).stdout
    return bool(out.strip())


def test_clientThatNeverReadsALargeAnswer_isClosedAtTheWriteDeadline_othersServed(ctd):
    """A client that asks for a large answer and never reads it shuts its TCP window: ctd gives up on it after
    write_timeout and lets the answer's memory go, instead of holding the connection for ever."""
    ct_fill("create", 300, "--base", "10.78.0.0", "--timeout", 600)
    c = ctd(server_extra="write_timeout = 1\nidle_timeout = 600")
    rpc, sid = c.login()
    wait_for(lambda: rpc.view(sid, {}, "", "ASC", 0, 1)["total"] >= 300, timeout=30, what="the entries in view")
    calls = [{"methodName": "view", "params": [sid, {}, "id", "ASC", 0, 150]} for _ in range(30)]
    request = xmlrpc.client.dumps((calls,), "system.multicall").encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", c.port))
    client_port = s.getsockname()[1]
    s.sendall((b"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n"
               % (c.port, len(request))) + request)
    assert _server_side_established(c.port, client_port)
    # Nothing is read: ctd's end must go (its socket leaves ESTABLISHED once ctd closes it).
    wait_for(lambda: not _server_side_established(c.port, client_port), timeout=60,
             what="ctd closing the connection whose answer is not read")
    # What the client can still read is a cut answer: the declared length was never sent in full.
    s.settimeout(30)
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        answer = _read_until_closed(s)
    s.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    declared = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    assert declared > 8_000_000 and len(body) < declared, (declared, len(body))
    # Everyone else is served as before.
    assert rpc.view(sid, {}, "", "ASC", 0, 10)["total"] >= 300
    assert "login" in _call_from(c, "127.0.0.1")


def _raw_answer(c, body: bytes, headers=None) -> bytes:
    status, reply = c.post(body, headers=headers)
    assert status == 200, (status, reply[:200])
    return reply


LIST = xmlrpc.client.dumps((), "system.listMethods").encode()


def test_browserOrigins_foreignOriginHostOrTextPlain_refused_sameOriginAndConfiguredServed(ctd):
    c = ctd(server_extra='allowed_origins = ["https://console.example:8443"]\nserver_names = ["ctd.example"]')
    hp = f"127.0.0.1:{c.port}"
    refused = [
        ({"Origin": "http://evil.example"}, 403, b"another origin"),
        ({"Origin": "null"}, 403, b"another origin"),
        ({"Origin": f"https://{hp}"}, 403, b"another origin"),  # another scheme is another origin
        ({"Host": f"evil.example:{c.port}"}, 421, b"server_names"),  # DNS rebinding
        ({"Host": "127.0.0.1:1"}, 421, b"server_names"),
        ({"Host": f"ctd.example:{c.port + 1}"}, 421, b"server_names"),
        ({"Content-Type": "text/plain"}, 415, b"text/xml"),  # a cross-origin POST without preflight
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, b"text/xml"),
    ]
    for headers, status, sentence in refused:
        got, reply = c.post(LIST, headers=headers)
        assert got == status, (headers, got, reply)
        assert sentence in reply, (headers, reply)
    served = [
        {}, {"Origin": f"http://{hp}"}, {"Origin": "https://console.example:8443"},
        {"Host": f"ctd.example:{c.port}"},
        {"Content-Type": "application/xml"}, {"Content-Type": "text/xml; charset=utf-8"},
    ]
    for headers in served:
        assert b"system.listMethods" in _raw_answer(c, LIST, headers), headers
    assert c.proc.poll() is None


def test_defaultServerNames_localhostAndLoopbackServed(ctd):
    c = ctd()
    for host in (f"localhost:{c.port}", f"127.0.0.1:{c.port}", f"{socket.gethostname()}:{c.port}"):
        assert b"system.listMethods" in _raw_answer(c, LIST, {"Host": host}), host
    assert c.post(LIST, headers={"Host": f"rebound.example:{c.port}"})[0] == 421


def _attributes(n: int) -> bytes:
    return (b'<?xml version="1.0"?><methodCall' + b"".join(b' a%d=""' % k for k in range(n))
            + b"><methodName>system.listMethods</methodName></methodCall>")


def test_attributeBody_faultInvalidRequest_daemonKeepsServing(ctd):
    c = ctd()
    before = _cpu_seconds(c)
    t0 = time.monotonic()
    reply = _raw_answer(c, _attributes(150_000))
    took = time.monotonic() - t0
    with pytest.raises(xmlrpc.client.Fault) as f:
        xmlrpc.client.loads(reply)
    assert f.value.faultCode == -32600, f.value.faultString
    assert "attributes are not part of XML-RPC" in f.value.faultString
    assert_human_fault(f.value.faultString)
    print(f"150,000 attributes: answered in {took:.3f} s, ctd CPU {_cpu_seconds(c) - before:.3f} s")
    rpc, sid = c.login()
    assert rpc.status(sid)["version"]


def _cpu_seconds(c) -> float:
    fields = open(f"/proc/{c.proc.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def cert(tmp_path):
    crt, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)])
    key.chmod(0o600)
    return crt, key


def _s_client(port, *args):
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args], input="",
                          capture_output=True, text=True, timeout=60)


def test_tls12_cbcAndStaticRSARefused_ecdheAeadAndTls13Accepted(ctd, cert):
    crt, key = cert
    c = ctd(tls_cert=crt, tls_key=key)
    for cipher in ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA"):
        p = _s_client(c.port, "-tls1_2", "-cipher", cipher)
        assert p.returncode != 0 and "Cipher is (NONE)" in p.stdout + p.stderr or "alert" in p.stderr, \
            (cipher, p.stdout[-600:], p.stderr[-600:])
        assert f"Cipher is {cipher}" not in p.stdout
    for cipher in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"):
        p = _s_client(c.port, "-tls1_2", "-cipher", cipher)
        assert f"Cipher is {cipher}" in p.stdout, (cipher, p.stdout[-600:], p.stderr[-600:])
    p = _s_client(c.port, "-tls1_3")
    assert "TLSv1.3" in p.stdout, p.stdout[-600:]
    rpc, sid = c.login()
    assert rpc.status(sid)["version"]


def test_tlsKeyReadableByOthers_refusedAtStartNamingFileAndMode(tmp_path, cert):
    crt, key = cert
    key.chmod(0o644)
    password_file = tmp_path / "passwd"
    make_password_file(password_file, "admin", "pw")
    cfg = tmp_path / "ctd.toml"
    write_config(cfg, password_file=password_file, tls_cert=crt, tls_key=key)
    p = subprocess.run([str(CTD), "serve", "--config", str(cfg), "--port", "0"], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode != 0, p.stdout
    assert str(key) in p.stderr and "0644" in p.stderr and "chmod 600" in p.stderr, p.stderr[-2000:]
    assert "listening" not in p.stdout
