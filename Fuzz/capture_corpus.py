#!/usr/bin/env python3
"""Seeds the fuzz corpus (Fuzz/corpus/<target>/) with real XML-RPC requests and with hostile bodies.

A loopback HTTP server on 127.0.0.1 records every request body while four real client stacks call ctd's procedures
against it: Python xmlrpc.client, PHP's xmlrpc extension (php8.2-xmlrpc), Perl RPC::XML and xmlrpc-c (compiled
here with gcc, as Tests/e2e/test_xmlrpc_c.py does). Each client logs in, views (with filters, sorted, paged), kills,
changes a mark and a timeout, runs a multicall and the introspection calls, and logs out.

The fake server answers `login` with the string "SID", so every later call carries "SID" where the session id goes:
the RequestPathFuzz target replaces that marker with a live admin session (SIDV: viewer, SIDO: operator), which is
how the fuzzer reaches the procedures behind a session.

Besides the requests, the server's canned answers (values and faults, as the encoders of the four stacks would
read them) and a set of hostile bodies (deep nesting, attributes, DOCTYPE, huge ints, invalid UTF-8, ...) are
written. Files are named by the SHA-1 of their content, as libFuzzer names them, so running this again adds only
what changed.

    python3 Fuzz/capture_corpus.py            # writes into Fuzz/corpus/
    python3 Fuzz/capture_corpus.py --check    # fails unless every client could be run
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
import xmlrpc.client
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
TARGETS = ("XMLRPCDecoderFuzz", "RequestPathFuzz")

# --- the fake server -----------------------------------------------------------------------------------------------

CAPTURED: list[tuple[str, bytes]] = []  # (client, body)
CURRENT = ["?"]


def canned_answer(method: str, params: tuple) -> object:
    if method == "login":
        return "SID"
    if method == "view":
        return {"total": 1, "start": 0, "length": 1, "generation": "7", "time": 1764600000.0, "autorefresh": True,
                "accounting": True, "connections": [
                    {"id": "4294967295", "l3proto": "ipv4", "l3proto_num": 2, "l4proto": "tcp", "l4proto_num": 6,
                     "orig_src": "10.0.0.1", "orig_dst": "10.1.0.1", "orig_port_src": 1001, "orig_port_dst": 443,
                     "repl_src": "10.1.0.1", "repl_dst": "10.0.0.1", "repl_port_src": 443, "repl_port_dst": 1001,
                     "mark": "0", "timeout": 431999, "status": 14, "status_flags": ["SEEN_REPLY", "ASSURED"],
                     "state": "ESTABLISHED", "zone": 0, "orig_bytes": 8589934592.0, "orig_packets": 3.0,
                     "repl_bytes": 1000.0, "repl_packets": 1.0, "byte_rate": 0.5}]}
    if method == "kill":
        return {"killed": 1, "killed_ids": ["1"], "not_found": [], "ambiguous": [], "failed": []}
    if method == "system.listMethods":
        return ["audit_list", "change", "kill", "login", "logout", "refresh", "set_autorefresh", "status",
                "system.listMethods", "system.methodHelp", "system.methodSignature", "system.multicall", "view"]
    if method == "system.methodHelp":
        return "help"
    if method == "system.methodSignature":
        return [["struct", "string"]]
    if method == "system.multicall":
        calls = params[0] if params else []
        return [[canned_answer(c.get("methodName", ""), tuple(c.get("params", [])))] for c in calls
                if isinstance(c, dict)]
    if method == "status":
        return {"version": "0.2.0", "entries": 1, "generation": "7", "events_applied": 3.0}
    return True


class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        CAPTURED.append((CURRENT[0], body))
        try:
            params, method = xmlrpc.client.loads(body, use_builtin_types=True)
            answer = xmlrpc.client.dumps((canned_answer(method, params),), methodresponse=True, allow_none=False)
        except Exception as e:  # a body our parser does not take: still answer something well-formed
            answer = xmlrpc.client.dumps(xmlrpc.client.Fault(-32700, str(e)), methodresponse=True)
        data = answer.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


# --- the clients ---------------------------------------------------------------------------------------------------

def python_client(url: str) -> None:
    s = xmlrpc.client.ServerProxy(url, allow_none=False)
    sid = s.login("admin", "pw")
    s.system.listMethods()
    s.system.methodHelp("view")
    s.system.methodSignature("kill")
    s.view(sid, {}, "id", "ASC", 0, 10)
    s.view(sid, {"orig_l4proto": "tcp", "orig_port_dst": [53, 443], "state": "ESTABLISHED"}, "bytes", "DESC", 5, 150)
    s.view(sid, {"orig_src": "10.0.0.0/8", "l3proto": "ipv4", "mark": "1073741824", "status": ["ASSURED"]})
    s.view(sid, {"orig_dst": "2001:db8::/32", "zone": 1, "id": ["1", "4294967295"]}, "orig_src", "ASC", 0, 0)
    s.kill(sid, ["1", "2", "4294967295"])
    s.kill(sid, "3")
    s.change(sid, "mark", "4", -1)  # Python cannot send an int > 2^31-1 (OverflowError)
    s.change(sid, "timeout", "5", 120)
    s.refresh(sid)
    s.set_autorefresh(sid, False)
    s.status(sid)
    s.audit_list(sid, {"since": "2026-01-01T00:00:00", "action": "kill"}, 10)
    m = xmlrpc.client.MultiCall(s)
    m.view(sid, {"orig_port_src": 1001})
    m.status(sid)
    m.kill(sid, ["6"])
    m.system.listMethods()
    list(m())
    s.view(sid, {"orig_ipv4_src": 167772161}, "timeout", "DESC", 0, 150)
    s.logout(sid)


PHP = r"""<?php
$url = $argv[1];
function call($method, $params) {
    global $url;
    $req = xmlrpc_encode_request($method, $params);
    $ctx = stream_context_create(['http' => ['method' => 'POST', 'header' => "Content-Type: text/xml\r\n",
        'content' => $req]]);
    return xmlrpc_decode(file_get_contents($url, false, $ctx));
}
$sid = call('login', ['operator', 'pw']);
call('system.listMethods', []);
call('system.methodHelp', ['kill']);
call('system.methodSignature', ['view']);
call('view', [$sid, [], 'id', 'ASC', 0, 150]);
call('view', [$sid, ['orig_src' => ['10.0.0.1', '10.0.0.2'], 'orig_port_dst' => 443], 'orig_bytes', 'DESC', 0, 20]);
call('view', [$sid, ['l4proto' => 'udp', 'repl_src' => '10.1.0.0/16', 'timeout' => 30]]);
call('kill', [$sid, ['1', '2']]);
call('kill', [$sid, -1]);
call('change', [$sid, 'mark', '3', 7]);
call('change', [$sid, 'timeout', '3', 3600]);
call('system.multicall', [[['methodName' => 'view', 'params' => [$sid, [], 'id', 'DESC', 0, 5]],
    ['methodName' => 'status', 'params' => [$sid]], ['methodName' => 'refresh', 'params' => [$sid]]]]);
call('set_autorefresh', [$sid, true]);
call('status', [$sid]);
call('logout', [$sid]);
"""

PERL = r"""
use strict; use warnings;
use RPC::XML; use RPC::XML::Client;
my $c = RPC::XML::Client->new($ARGV[0]);
my $sid = $c->simple_request('login', 'viewer', 'pw');
$c->simple_request('system.listMethods');
$c->simple_request('system.methodHelp', 'change');
$c->simple_request('system.methodSignature', 'login');
$c->simple_request('view', $sid, {}, 'id', 'ASC', 0, 10);
$c->simple_request('view', $sid, { orig_port_src => RPC::XML::array->new(1001, 1002), state => 'TIME_WAIT' },
    'byte_rate', 'DESC', 0, 150);
$c->simple_request('view', $sid, { id => RPC::XML::string->new('4294967295'), l3proto => 'ipv6' });
$c->simple_request('kill', $sid, RPC::XML::array->new(RPC::XML::string->new('1'), 4294967295));
$c->simple_request('change', $sid, 'mark', '2', RPC::XML::i8->new(4294967295));
$c->simple_request('change', $sid, 'timeout', RPC::XML::int->new(2), 60);
$c->simple_request('system.multicall', RPC::XML::array->new(
    RPC::XML::struct->new(methodName => 'view', params => RPC::XML::array->new($sid, {}, 'mark', 'ASC', 0, 3)),
    RPC::XML::struct->new(methodName => 'status', params => RPC::XML::array->new($sid)),
    RPC::XML::struct->new(methodName => 'kill', params => RPC::XML::array->new($sid, RPC::XML::array->new('9')))));
$c->simple_request('refresh', $sid);
$c->simple_request('set_autorefresh', $sid, RPC::XML::boolean->new(0));
$c->simple_request('status', $sid);
$c->simple_request('audit_list', $sid, { user => 'alice', until => 1764600000 }, 5);
$c->simple_request('view', $sid, { zone => 2 }, '', 'ASC', 0, 1, RPC::XML::double->new(1.5),
    RPC::XML::base64->new("\x00\xff"), RPC::XML::datetime_iso8601->new('20261201T10:00:00'));
$c->simple_request('logout', $sid);
"""

XMLRPC_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <xmlrpc-c/base.h>
#include <xmlrpc-c/client.h>

static xmlrpc_env env;
int main(int argc, char **argv) {
    xmlrpc_client *client;
    xmlrpc_value *params, *result;
    xmlrpc_server_info *server;
    (void)argc;
    const char *url = argv[1];
    xmlrpc_env_init(&env);
    xmlrpc_client_setup_global_const(&env);
    xmlrpc_client_create(&env, XMLRPC_CLIENT_NO_FLAGS, "capture", "1", NULL, 0, &client);
    if (env.fault_occurred) { fprintf(stderr, "client: %s\n", env.fault_string); return 2; }
    server = xmlrpc_server_info_new(&env, url);
#define CALL(method, ...) do { \
        params = xmlrpc_build_value(&env, __VA_ARGS__); \
        if (env.fault_occurred) { fprintf(stderr, "build %s: %s\n", method, env.fault_string); return 2; } \
        xmlrpc_client_call2(&env, client, server, method, params, &result); \
        if (env.fault_occurred) { fprintf(stderr, "%s: %s\n", method, env.fault_string); return 3; } \
        xmlrpc_DECREF(result); xmlrpc_DECREF(params); } while (0)
    CALL("login", "(ss)", "admin", "pw");
    CALL("system.listMethods", "()");
    CALL("system.methodHelp", "(s)", "view");
    CALL("system.methodSignature", "(s)", "change");
    CALL("view", "(s{}ssii)", "SID", "id", "ASC", 0, 150);
    CALL("view", "(s{s:s,s:(ii),s:s}ssii)", "SID", "orig_src", "192.168.0.0/16", "orig_port_dst", 53, 443,
         "l4proto", "udp", "repl_packets", "DESC", 10, 50);
    CALL("view", "(s{s:I,s:b})", "SID", "mark", (xmlrpc_int64)4294967295LL, "bogus", 1);
    CALL("kill", "(s(sss))", "SID", "1", "2", "4294967295");
    CALL("kill", "(s(i))", "SID", -1);
    CALL("change", "(sssi)", "SID", "mark", "3", 123);
    CALL("change", "(sssI)", "SID", "timeout", "3", (xmlrpc_int64)2147483647LL);
    CALL("system.multicall", "(({s:s,s:(s)}{s:s,s:(s{}ssii)}))", "methodName", "status", "params", "SID",
         "methodName", "view", "params", "SID", "orig_dst", "ASC", 0, 2);
    CALL("refresh", "(s)", "SID");
    CALL("set_autorefresh", "(sb)", "SID", 0);
    CALL("status", "(s)", "SID");
    CALL("audit_list", "(s{s:s}i)", "SID", "action", "login", 50);
    CALL("view", "(s{}ssiid)", "SID", "", "ASC", 0, 1, 2.5e-3);
    CALL("logout", "(s)", "SID");
    xmlrpc_server_info_free(server);
    xmlrpc_client_destroy(client);
    xmlrpc_client_teardown_global_const();
    return 0;
}
"""


def run_php(url: str, tmp: Path) -> None:
    php = shutil.which("php") or shutil.which("php8.2")
    if php is None:
        raise RuntimeError("php is missing (apt-get install php8.2-cli php8.2-xmlrpc)")
    script = tmp / "capture.php"
    script.write_text(PHP)
    subprocess.run([php, str(script), url], check=True, timeout=60, capture_output=True)


def run_perl(url: str, tmp: Path) -> None:
    script = tmp / "capture.pl"
    script.write_text(PERL)
    subprocess.run(["perl", str(script), url], check=True, timeout=60, capture_output=True)


def run_xmlrpc_c(url: str, tmp: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is missing (apt-get install gcc libxmlrpc-core-c3-dev)")
    src = tmp / "capture.c"
    src.write_text(XMLRPC_C)
    exe = tmp / "capture_c"
    subprocess.run([gcc, "-std=gnu11", "-O1", "-o", str(exe), str(src), "-lxmlrpc_client", "-lxmlrpc",
                    "-lxmlrpc_util"], check=True, timeout=120, capture_output=True, text=True)
    env = {"PATH": "/usr/bin:/bin"}  # no *_proxy: libcurl honours them
    subprocess.run([str(exe), url], check=True, timeout=60, capture_output=True, env=env)


# --- hostile and response seeds ------------------------------------------------------------------------------------

def call(method: str, *values: str) -> bytes:
    ps = "".join(f"<param><value>{v}</value></param>" for v in values)
    return f'<?xml version="1.0"?><methodCall><methodName>{method}</methodName><params>{ps}</params></methodCall>'.encode()


def hostile() -> list[bytes]:
    deep_ok = "<array><data><value>" * 30 + "<int>1</int>" + "</value></data></array>" * 30
    deep_bad = "<array><data><value>" * 40 + "<int>1</int>" + "</value></data></array>" * 40
    deep_struct = "<struct><member><name>a</name><value>" * 33 + "x" + "</value></member></struct>" * 33
    seeds = [
        call("view", "<string>SID</string>", deep_ok),
        call("view", "<string>SID</string>", deep_bad),
        call("system.multicall", deep_struct),
        b'<?xml version="1.0"?><methodCall a="1" b="2" c=""><methodName>login</methodName></methodCall>',
        b'<methodCall xmlns:ex="http://ws.apache.org/xmlrpc/namespaces/extensions"><methodName>view</methodName>'
        b'<params><param><value><ex:i8>9223372036854775807</ex:i8></value></param>'
        b'<param><value><ex:nil/></value></param></params></methodCall>',
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b'<methodCall><methodName>&lol2;</methodName></methodCall>',
        b'<!DOCTYPE x SYSTEM "file:///etc/passwd"><methodCall><methodName>status</methodName></methodCall>',
        b'<?xml version="1.0" encoding="ISO-8859-1"?><methodCall><methodName>view</methodName><params>'
        b'<param><value>SID</value></param><param><value><struct><member><name>orig_src</name><value>'
        b'caf\xe9</value></member></struct></value></param></params></methodCall>',
        b'<methodCall><methodName>login\xff\xfe</methodName></methodCall>',
        b'\xef\xbb\xbf<?xml version="1.0"?><methodCall><methodName>status</methodName><params><param><value>'
        b'SIDV</value></param></params></methodCall>',
        call("change", "SIDO", "mark", "<string>1</string>", "<int>99999999999999999999999</int>"),
        call("change", "SIDO", "timeout", "<i4>4294967295</i4>", "<i8>-9223372036854775808</i8>"),
        call("kill", "SIDO", "<array><data><value><int>-2147483648</int></value><value><i8>4294967296</i8>"
             "</value><value><double>1e308</double></value></data></array>"),
        call("audit_list", "SID", "<struct><member><name>since</name><value>99999999999999999999</value></member>"
             "<member><name>until</name><value><dateTime.iso8601>99991231T23:59:59</dateTime.iso8601></value>"
             "</member></struct>", "<int>2147483647</int>"),
        call("view", "SIDV", "<struct><member><name>orig_src</name><value><array><data>"
             + "".join(f"<value>10.0.{i // 250}.{i % 250}/{8 + i % 25}</value>" for i in range(300))
             + "</data></array></value></member></struct>", "id", "ASC", "<int>0</int>", "<int>150</int>"),
        call("view", "SIDV", "<array><data></data></array>", "<string></string>", "desc", "<int>-1</int>",
             "<int>151</int>"),
        call("view", "SIDV", "<struct><member><name>orig_dst</name><value>::ffff:10.1.0.1/128</value></member>"
             "<member><name>orig_dst</name><value>2001:db8::/129</value></member></struct>"),
        call("set_autorefresh", "SIDV", "<boolean>true</boolean>"),
        call("system.multicall", "<array><data>" + "".join(
            f"<value><struct><member><name>methodName</name><value>{m}</value></member><member><name>params"
            f"</name><value><array><data><value>SID</value></data></array></value></member></struct></value>"
            for m in ("status", "refresh", "logout", "login", "system.multicall", "view")) + "</data></array>"),
        call("system.multicall", "<array><data><value><struct><member><name>methodName</name><value>login"
             "</value></member><member><name>params</name><value><array><data><value>admin</value><value>pw"
             "</value></data></array></value></member></struct></value><value><struct><member><name>methodName"
             "</name><value>login</value></member><member><name>params</name><value><array><data><value>admin"
             "</value><value>pw</value></data></array></value></member></struct></value></data></array>"),
        call("login", "fz-admin", "wrong"),
        call("system.methodHelp", "<base64>c3lzdGVtLm11bHRpY2FsbA==</base64>"),
        call("view", "SID", "<struct/>", "<![CDATA[orig_src]]>", "ASC&#13;", "<double>-0.0</double>"),
        call("view", "SID", "<struct><member><name>status</name><value><array><data><value>ASSURED</value>"
             "<value>NAT</value><value>FIXED_TIMEOUT</value></data></array></value></member><member><name>state"
             "</name><value>SYN_SENT2</value></member><member><name>l4proto</name><value><int>256</int></value>"
             "</member></struct>"),
        b'<methodCall><methodName>status</methodName><params><param><value>SID</value></param></params>'
        b'</methodCall><methodCall/>',
        b'<methodCall><methodName>status</methodName><!-- c --><?pi x?><params/></methodCall>',
        b'<methodCall><methodName>x</methodName>' + b'<params>' * 3 + b'</methodCall>',
        b'<methodCall><methodName>status</methodName><params><param><value>SID\x00</value></param></params>'
        b'</methodCall>',
        b'<methodCall><methodName>status</methodName><params><param><value><string>&#0;&#xD800;&#x1F600;'
        b'</string></value></param></params></methodCall>',
        "<methodCall><methodName>view</methodName><params><param><value>SID</value></param><param><value>"
        "<struct><member><name>username</name><value>\u00e9\u4e2d\U0001f600</value></member></struct></value>"
        "</param></params></methodCall>".encode(),
        b'<methodCall><methodName>' + b'a' * 5000 + b'</methodName></methodCall>',
        b'<methodCall><methodName>view</methodName><params><param><value><struct>'
        + b''.join(b'<member><name>k%d</name><value><i4>%d</i4></value></member>' % (i, i) for i in range(200))
        + b'</struct></value></param></params></methodCall>',
    ]
    return seeds


def responses() -> list[bytes]:
    """Answers, for decodeResponse: what the four stacks' servers and ctd send."""
    out = [xmlrpc.client.dumps((canned_answer(m, ()),), methodresponse=True).encode()
           for m in ("login", "view", "kill", "system.listMethods", "system.methodSignature", "status", "logout")]
    out.append(xmlrpc.client.dumps(xmlrpc.client.Fault(4, "No such connection: 5."), methodresponse=True).encode())
    out.append(b'<?xml version="1.0"?><methodResponse><fault><value><struct><member><name>faultCode</name><value>'
               b'<i8>9223372036854775807</i8></value></member></struct></value></fault></methodResponse>')
    out.append(b'<methodResponse><params><param><value><double>123456789012345678901234567890.5</double></value>'
               b'</param></params></methodResponse>')
    out.append(b'<methodResponse><params><param><value><double>4.9e-324</double></value></param></params>'
               b'</methodResponse>')
    out.append(b'<methodResponse><params><param><value><nil/></value></param><param><value>2</value></param>'
               b'</params></methodResponse>')
    return out


# --- main ----------------------------------------------------------------------------------------------------------

def store(target: str, bodies: list[bytes]) -> int:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    new = 0
    for body in bodies:
        path = d / hashlib.sha1(body).hexdigest()
        if not path.exists():
            path.write_bytes(body)
            new += 1
    return new


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail unless every client ran")
    args = ap.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/RPC2"
    failed = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for name, run in (("python", lambda: python_client(url)), ("php", lambda: run_php(url, tmp)),
                          ("perl", lambda: run_perl(url, tmp)), ("xmlrpc-c", lambda: run_xmlrpc_c(url, tmp))):
            CURRENT[0] = name
            before = len(CAPTURED)
            try:
                run()
            except Exception as e:  # report, go on with the other clients
                detail = getattr(e, "stderr", "") or ""
                failed.append(name)
                print(f"capture: {name} failed: {e} {detail}".strip(), file=sys.stderr)
            print(f"capture: {name}: {len(CAPTURED) - before} requests")
    server.shutdown()

    requests = [b for _, b in CAPTURED]
    seeds = requests + hostile()
    n1 = store("RequestPathFuzz", seeds)
    n2 = store("XMLRPCDecoderFuzz", seeds + responses())
    print(f"capture: {len(requests)} requests recorded; new files: RequestPathFuzz {n1}, XMLRPCDecoderFuzz {n2}")
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
