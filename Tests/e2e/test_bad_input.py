"""Hostile and broken requests: each gets the documented fault (or HTTP status) and the daemon keeps serving.

Most tests share one daemon (module scope) so that the last test can check it survived all of them.
"""

from __future__ import annotations

import socket
import time
import xmlrpc.client

import pytest

from ctdtest import MAX_PAGE, assert_fault, assert_human_fault, ct_insert, fault_of, wait_for

CALL = b"<?xml version='1.0'?><methodCall><methodName>%s</methodName><params>%s</params></methodCall>"


@pytest.fixture(scope="module")
def daemon(module_ctd):
    return module_ctd()


def raw_fault(c, body: bytes, path="/RPC2"):
    """POSTs body; expects HTTP 200 with an XML-RPC fault; returns (code, string, raw reply)."""
    status, reply = c.post(body, path=path)
    assert status == 200, f"HTTP {status}: {reply[:200]!r}"
    try:
        result = xmlrpc.client.loads(reply)
    except xmlrpc.client.Fault as f:
        assert_human_fault(f.faultString)
        return f.faultCode, f.faultString, reply
    raise AssertionError(f"expected a fault, got {result!r}")


def test_post_malformedXML_faultParseError(daemon):
    for body in (b"<?xml version='1.0'?><methodCall><methodName>view</methodName><params>",
                 b"<methodCall><methodName>view</methodName></methodCal>",
                 b"this is not xml at all",
                 b""):
        code, _, _ = raw_fault(daemon, body)
        assert code == -32700, body


def test_post_wellFormedButNotXMLRPC_faultInvalidRequest(daemon):
    code, msg, _ = raw_fault(daemon, b"<foo/>")
    assert code == -32600, msg
    code, msg, _ = raw_fault(daemon, b"<?xml version='1.0'?><methodCall><params/></methodCall>")
    assert code == -32600, msg


def test_post_billionLaughs_faultParseErrorFastWithoutMemoryGrowth(daemon):
    lol = ["<!ENTITY lol \"lol\">"]
    for i in range(1, 10):
        prev = "lol" if i == 1 else f"lol{i - 1}"
        lol.append(f"<!ENTITY lol{i} \"" + f"&{prev};" * 10 + "\">")
    body = ("<?xml version=\"1.0\"?>\n<!DOCTYPE methodCall [\n" + "\n".join(lol) + "\n]>\n"
            "<methodCall><methodName>&lol9;</methodName><params/></methodCall>").encode()
    rss_before = daemon.rss_kib()
    t0 = time.monotonic()
    code, msg, _ = raw_fault(daemon, body)
    elapsed = time.monotonic() - t0
    assert code == -32700, msg
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    growth_mib = (daemon.rss_kib() - rss_before) / 1024
    assert growth_mib < 50, f"RSS grew by {growth_mib:.0f} MiB"


def test_post_externalEntity_faultParseErrorWithoutFileContent(daemon):
    body = (b"<?xml version=\"1.0\"?>\n<!DOCTYPE methodCall [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n"
            b"<methodCall><methodName>system.methodHelp</methodName><params><param><value><string>&xxe;"
            b"</string></value></param></params></methodCall>")
    code, msg, reply = raw_fault(daemon, body)
    assert code == -32700, msg
    assert b"root:" not in reply and b"/bin/" not in reply
    # Also without a DOCTYPE: an undeclared entity is an error, not an empty string.
    code, _, reply = raw_fault(daemon, CALL % (b"system.methodHelp",
                                               b"<param><value><string>&xxe;</string></value></param>"))
    assert code == -32700 and b"root:" not in reply


def test_post_invalidUTF8_faultParseError(daemon):
    code, msg, _ = raw_fault(daemon, CALL % (b"vi\xff\xfeew", b""))
    assert code == -32700, msg
    code, msg, _ = raw_fault(daemon, CALL % (b"login", b"<param><value><string>ad\xc3min</string></value></param>"
                                                       b"<param><value><string>x</string></value></param>"))
    assert code == -32700, msg


def test_post_bodyOverMaxBodyBytes_faultRequestTooLarge(ctd):
    small = ctd(max_body_bytes=4096)
    padding = b"<param><value><string>" + b"a" * 3000 + b"</string></value></param>"
    code, msg, _ = raw_fault(small, CALL % (b"login", padding + b"<param><value><string>x</string></value></param>"))
    assert code == 1, msg  # under the limit: parsed, and the login simply fails
    big = b"<param><value><string>" + b"a" * 10000 + b"</string></value></param>"
    code, msg, _ = raw_fault(small, CALL % (b"login", big + big))
    assert code == -32000, msg
    assert "4096" in msg
    # A much larger body is cut off the same way, and the daemon still serves.
    code, msg, _ = raw_fault(small, CALL % (b"login", big * 200))
    assert code == -32000, msg
    rpc, sid = small.login()
    assert rpc.view(sid, {}, "", "ASC", 0, 1)["total"] >= 0
    assert small.proc.poll() is None


def test_post_declaredLengthOverMaxBodyBytes_isAnsweredAtOnceWithoutReadingTheBody(ctd):
    """A client that announces a huge body gets the fault right after the headers, not after a timeout."""
    small = ctd(max_body_bytes=4096)
    with socket.create_connection(("127.0.0.1", small.port), timeout=5) as s:
        s.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/xml\r\n"
                  b"Content-Length: 999999999\r\n\r\n<?xml" % small.port)
        t0 = time.monotonic()
        answer = b""
        while b"</methodResponse>" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        took = time.monotonic() - t0
    assert b"<name>faultCode</name><value><int>-32000</int>" in answer, answer[:600]
    assert b"Connection: close" in answer or b"connection: close" in answer.lower(), answer[:300]
    assert took < 2.0, f"the fault took {took:.1f} s"
    assert small.proc.poll() is None


def test_post_nesting200ArraysDeep_faultNestingTooDeep(daemon):
    deep = b"<value><array><data>" * 200 + b"</data></array></value>" * 200
    code, msg, _ = raw_fault(daemon, CALL % (b"system.methodHelp", b"<param>" + deep + b"</param>"))
    assert code == -32001, msg
    shallow = b"<value><array><data>" * 10 + b"</data></array></value>" * 10
    code, msg, _ = raw_fault(daemon, CALL % (b"system.methodHelp", b"<param>" + shallow + b"</param>"))
    assert code == -32602, msg  # parsed fine; just not a method name


def test_call_unknownMethod_faultMethodNotFound(daemon):
    rpc = daemon.proxy()
    f = assert_fault(-32601, rpc.no_such_method, 1, 2)
    assert "no_such_method" in f.faultString
    assert_fault(-32601, rpc.system.methodHelp, "frobnicate")


def test_call_wrongParamCountOrTypes_faultInvalidParams(daemon):
    rpc, sid = daemon.login()
    assert_fault(-32602, rpc.view, contains="view")
    assert_fault(-32602, rpc.view, sid, {}, "", "ASC", "abc", 10, contains="start")
    assert_fault(-32602, rpc.view, sid, {}, "", "ASC", 0, 10, "extra")
    assert_fault(-32602, rpc.view, sid, {}, 5, "ASC", 0, 10, contains="order_by")
    assert_fault(-32602, rpc.view, 12345, contains="session")
    assert_fault(-32602, rpc.login, "admin")
    assert_fault(-32602, rpc.login, "admin", 12345)
    assert_fault(-32602, rpc.kill, sid)
    assert_fault(-32602, rpc.kill, sid, [{"id": 1}])
    assert_fault(-32602, rpc.set_autorefresh, sid, "maybe")
    assert_fault(-32602, rpc.change, sid, "mark")
    assert_fault(-32602, rpc.status)


def test_call_unknownOrLoggedOutSession_faultInvalidSession(daemon):
    rpc, sid = daemon.login()
    assert_fault(2, rpc.view, "no-such-session", {}, "", "ASC", 0, 10)
    assert_fault(2, rpc.status, "")
    assert_fault(2, rpc.kill, "0" * 32, ["1"])
    assert rpc.status(sid)["sessions"] >= 1
    assert rpc.logout(sid) is True
    assert rpc.logout(sid) is False
    for call in (lambda: rpc.view(sid, {}, "", "ASC", 0, 10), lambda: rpc.status(sid), lambda: rpc.refresh(sid),
                 lambda: rpc.kill(sid, ["1"]), lambda: rpc.change(sid, "mark", "1", 1)):
        f = fault_of(call)
        assert f.faultCode == 2, f.faultString
        assert_human_fault(f.faultString)


def test_call_afterIdleTimeout_faultInvalidSession(ctd):
    c = ctd(idle_timeout=1)
    rpc, sid = c.login()
    ct_insert("udp", "10.8.0.1", "10.8.0.2", 1, 2)
    wait_for(lambda: rpc.view(sid, {"orig_src": "10.8.0.1"}, "", "ASC", 0, 10)["total"] == 1, timeout=1)
    time.sleep(0.6)
    assert rpc.view(sid, {"orig_src": "10.8.0.1"}, "", "ASC", 0, 10)["total"] == 1  # use keeps it alive
    time.sleep(2)
    assert_fault(2, rpc.view, sid, {}, "", "ASC", 0, 10)
    assert_fault(2, rpc.status, sid)
    rpc2, sid2 = c.login()
    assert rpc2.view(sid2, {"orig_src": "10.8.0.1"}, "", "ASC", 0, 10)["total"] == 1


def test_http_getAndOtherPath_get405And404(daemon):
    # GET / is the web console (docs/web-console.md); the XML-RPC path answers GET with 405.
    status, body = daemon.post(b"", path="/", method="GET")
    assert status == 200 and b"<html" in body, body
    status, body = daemon.post(b"", path="/RPC2", method="GET")
    assert status == 405, body
    status, body = daemon.post(CALL % (b"system.listMethods", b""), path="/other")
    assert status == 404, body
    status, body = daemon.post(CALL % (b"system.listMethods", b""), path="/")
    assert status == 200 and b"system.listMethods" in body


def test_multicall_mixOfGoodAndBadCalls_returnsEachResultOrFault(daemon):
    ct_insert("udp", "10.8.0.1", "10.8.0.2", 1, 2)
    rpc, sid = daemon.login()
    results = rpc.system.multicall([
        {"methodName": "status", "params": [sid]},
        {"methodName": "no.such.method", "params": []},
        {"methodName": "view", "params": [sid, {}, "", "ASC", -1, 10]},
        {"methodName": "view", "params": [sid, {"orig_src": "10.8.0.1"}, "", "ASC", 0, 10]},
        {"methodName": "view", "params": ["bogus-session"]},
        {"methodName": "system.multicall", "params": [[]]},
        {"params": []},
    ])
    assert len(results) == 7
    assert isinstance(results[0], list) and results[0][0]["version"]
    assert results[1]["faultCode"] == -32601
    assert results[2]["faultCode"] == -32602
    assert isinstance(results[3], list) and results[3][0]["total"] == 1
    assert results[3][0]["connections"][0]["orig_dst"] == "10.8.0.2"
    assert results[4]["faultCode"] == 2
    assert results[5]["faultCode"] == -32602
    assert results[6]["faultCode"] == -32602
    for r in results:
        if isinstance(r, dict):
            assert_human_fault(r["faultString"])


def test_introspection_helpAndSignature_describeTheMethods(daemon):
    rpc = daemon.proxy()
    methods = rpc.system.listMethods()
    for m in ("login", "logout", "view", "kill", "change", "refresh", "set_autorefresh", "status",
              "system.multicall", "system.methodHelp", "system.methodSignature", "system.listMethods"):
        assert m in methods
    help_text = rpc.system.methodHelp("view")
    assert help_text.startswith("view(session, filters, order_by, order_dir, start, length)")
    assert f"({MAX_PAGE})" in help_text
    assert rpc.system.methodSignature("kill") == [["struct", "string", "array"], ["struct", "string", "string"]]
    assert rpc.system.methodSignature("login") == [["string", "string", "string"]]


def test_daemon_afterAllBadInput_stillServesViewsAndRuns(daemon):
    assert daemon.proc.poll() is None
    e = ct_insert("udp", "10.8.9.1", "10.8.9.2", 11, 22, mark=5)
    fresh = xmlrpc.client.ServerProxy(daemon.url, allow_none=True)
    daemon.proxies.append(fresh)
    sid = fresh.login("admin", daemon.password)
    v = wait_for(lambda: fresh.view(sid, {"orig_src": "10.8.9.1"}, "", "ASC", 0, 10), timeout=1,
                 what="the new entry in view", done=lambda v: v["total"] == 1)
    assert v["total"] == 1 and v["connections"][0]["id"] == str(e["id"]) and v["connections"][0]["mark"] == 5
    assert daemon.proc.poll() is None
    assert "critical" not in daemon.stderr() and "Fatal error" not in daemon.stderr()
