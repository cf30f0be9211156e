#!/usr/bin/env python3
"""package-test's client: the installed ctd in its namespace, checked against conntrack -L."""
import os, subprocess, sys, time, xmlrpc.client

URL = "http://127.0.0.1:4040/RPC2"
pid = int(os.environ["CTD_PID"])


def table():
    out = subprocess.run(["conntrack", "-L", "-p", "tcp", "--dport", "443"], capture_output=True, text=True).stdout
    return sorted(l.split("src=")[1].split()[0] for l in out.splitlines() if "src=" in l)


deadline = time.monotonic() + 120
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("ctd exited before listening")
    try:
        xmlrpc.client.ServerProxy(URL).system.listMethods()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("ctd did not listen within 120 s")
        time.sleep(0.2)
s = xmlrpc.client.ServerProxy(URL)
sid = s.login("admin", os.environ["CTD_PASSWORD"])
try:
    s.login("admin", "wrong")
    sys.exit("a wrong password logged in")
except xmlrpc.client.Fault as f:
    assert f.faultCode == 1, f
page = s.view(sid, {"orig_port_dst": 443}, "orig_src", "ASC", 0, 100)
rows = page["connections"]
srcs = sorted(r["orig_src"] for r in rows)
assert srcs == table() == ["192.0.2.1", "192.0.2.2", "192.0.2.3"], (srcs, table())
victim = next(r for r in rows if r["orig_src"] == "192.0.2.2")
res = s.kill(sid, [victim["id"]])
assert res["killed"] == 1, res
assert table() == ["192.0.2.1", "192.0.2.3"], table()
names = sorted(p["name"] for p in s.status(sid)["plugins"])
assert "AuthSHA" in names and "AuditSQLite" in names, names
kills = [r for r in s.audit_list(sid, {"action": "kill"}, 10)]
assert kills, "no kill in the audit trail"
# The shipped ctd.toml serves Prometheus metrics on 127.0.0.1:4041: the mirror's count follows the kill.
import urllib.request
deadline = time.monotonic() + 60
while True:
    text = urllib.request.urlopen("http://127.0.0.1:4041/metrics", timeout=20).read().decode()
    if "\nctd_mirror_entries 2.0\n" in text or time.monotonic() > deadline:
        break
    time.sleep(0.2)
assert "\nctd_mirror_entries 2.0\n" in text and "ctd_conntrack_entries_limit" in text, text[:2000]
print("package client: login, view, kill (cross-checked with conntrack -L), plugins", names, "audit ok, metrics ok")
