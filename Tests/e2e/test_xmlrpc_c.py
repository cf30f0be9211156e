"""The real xmlrpc-c C client library (Debian: libxmlrpc-core-c3-dev, compiled here with gcc).

docs/design.md: xmlrpc-c 1.33 rejects a response over 512 KiB (fault -509), an `<i4>` above 2^31-1 (-503) and nesting over
64 levels. A full page (length = max_page_length) of the widest entries must reach it whole, with every member of
the documented type, and a kill by an id >= 2^31 sent as a string must delete exactly that entry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xmlrpc.client
from pathlib import Path

import pytest

from ctdtest import MAX_PAGE, assert_human_fault, conntrack_list, ct_fill, run, wait_for

CLIENT_SRC = Path(__file__).with_name("xmlrpc_c_client.c")
# The shared libraries of libxmlrpc-core-c3 carry their own dependencies (curl, expat-like parser, util); linking
# these three is enough. `xmlrpc-c-config client --libs` adds -lcurl, which needs libcurl's -dev package too.
LIBS = ["-lxmlrpc_client", "-lxmlrpc", "-lxmlrpc_util"]

XML_SIZE_LIMIT = 512 * 1024  # xmlrpc-c's default XMLRPC_XML_SIZE_LIMIT_DEFAULT
NESTING_LIMIT = 64

BULK = 2000  # IPv6 entries below the page (ports 10000..11999), so that total > the page and ids vary
MARK_MAX = 4294967295
ZONE_MAX = 65535
TIMEOUT = 2000000  # seconds: 7 digits (the kernel caps timeout * HZ at INT_MAX jiffies)
WIDE_DST6 = "fedc:ba98:7654:3210:fedc:ba98:7654:3210"
WIDE_DST4 = "223.255.255.254"
DPORT = 54321

# The bits of enum ip_conntrack_status (linux/netfilter/nf_conntrack_common.h) by the names ctd reports.
STATUS_BITS = {"EXPECTED": 0, "SEEN_REPLY": 1, "ASSURED": 2, "CONFIRMED": 3, "SRC_NAT": 4, "DST_NAT": 5,
               "SEQ_ADJUST": 6, "SRC_NAT_DONE": 7, "DST_NAT_DONE": 8, "DYING": 9, "FIXED_TIMEOUT": 10,
               "TEMPLATE": 11, "UNTRACKED": 12, "HELPER": 13, "OFFLOAD": 14, "HW_OFFLOAD": 15}


@pytest.fixture(scope="module")
def xmlrpc_c_client(tmp_path_factory):
    """Compiles xmlrpc_c_client.c; fails (never skips) when that is impossible."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is missing: apt-get install gcc libxmlrpc-core-c3-dev", pytrace=False)
    exe = tmp_path_factory.mktemp("xmlrpc_c") / "xmlrpc_c_client"
    p = subprocess.run([gcc, "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O1", "-o", str(exe),
                        str(CLIENT_SRC), *LIBS], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        pytest.fail(f"cannot compile {CLIENT_SRC.name} against xmlrpc-c (apt-get install libxmlrpc-core-c3-dev):\n"
                    f"{p.stderr}", pytrace=False)
    return exe


def run_client(exe: Path, c, length: int, *extra: str):
    """Runs the C client against ctd c (password on stdin); returns (CompletedProcess, last stdout line as JSON)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # libcurl honours *_proxy
    p = subprocess.run([str(exe), c.url, "admin", str(length), *extra], input=c.password + "\n",
                       capture_output=True, text=True, timeout=30, env=env)
    lines = p.stdout.strip().splitlines()
    out = None
    if lines:
        try:
            out = json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    return p, out


def _insert(src: str, dst: str, sport: int):
    run(["conntrack", "-I", "-p", "udp", "-s", src, "-d", dst, "--sport", str(sport), "--dport", str(DPORT),
         "-t", str(TIMEOUT), "-u", "SEEN_REPLY,ASSURED", "-m", str(MARK_MAX), "-w", str(ZONE_MAX)])


def _delete(src: str, dst: str, sport: int):
    run(["conntrack", "-D", "-p", "udp", "-s", src, "-d", dst, "--sport", str(sport), "--dport", str(DPORT),
         "-w", str(ZONE_MAX)])


def _slot(j: int, attempt: int) -> tuple[str, str, int]:
    """Entry j of the page (sport 65535 - j), try `attempt`: full-width addresses; every 15th one is IPv4."""
    sport = 65535 - j
    if j % 15 == 7:
        return f"203.{100 + attempt}.{100 + j}.254", WIDE_DST4, sport
    return f"fd12:3456:789a:bcde:f012:3456:{0x8000 + attempt:04x}:{0x8000 + j:04x}", WIDE_DST6, sport


@pytest.fixture
def widest_page():
    """MAX_PAGE entries on top of `orig_port_src DESC`, each as wide as XML-RPC makes it: ids >= 2^31 (an entry that
    got a smaller random id is deleted and created again with another address), full-width IPv6 addresses (and a
    few IPv4 ones >= 128.0.0.0), 5-digit ports, mark 4294967295, zone 65535, a 7-digit timeout, three status flags.
    Below them BULK IPv6 entries from ctd-fill. Returns the page's entries as conntrack -L shows them, in page order
    (the ports are distinct, so the order is known)."""
    slots: dict[int, int] = {j: 0 for j in range(MAX_PAGE)}  # slot -> attempt; the slots still to settle
    kept: dict[int, dict] = {}
    for _ in range(60):  # about half the ids are >= 2^31: a handful of rounds suffice
        for j, attempt in slots.items():
            _insert(*_slot(j, attempt))
        by_tuple = {(e["src"], e["sport"]): e for e in conntrack_list("-p", "udp", "--dport", str(DPORT))}
        retry = {}
        for j, attempt in slots.items():
            src, dst, sport = _slot(j, attempt)
            e = by_tuple[(src, sport)]
            if e["id"] >= 1 << 31:
                kept[j] = e
            else:
                _delete(src, dst, sport)
                retry[j] = attempt + 1
        slots = retry
        if not slots:
            break
    assert not slots, f"{len(slots)} entries never got an id >= 2^31"
    ct_fill("create", BULK, "--family", "6", "--base", "fd12:3456:789a:bcde:f012:3456:789a:bcde",
            "--sport-base", "10000", "--marks", "4", "--mark-shift", "30", "--timeout", str(TIMEOUT))
    page = [kept[j] for j in range(MAX_PAGE)]
    assert all(e["mark"] == MARK_MAX and e["zone"] == ZONE_MAX for e in page)
    return page


def _check_against_kernel(conn: dict, k: dict):
    """One connection as the C client read it against the same entry in `conntrack -L -o extended,id`."""
    assert conn["id"] == str(k["id"])
    assert conn["l3proto"] == k["l3proto"] and conn["l3proto_num"] == k["l3proto_num"]
    assert conn["l4proto"] == k["proto"] == "udp" and conn["l4proto_num"] == k["protonum"] == 17
    assert (conn["orig_src"], conn["orig_dst"]) == (k["orig_src"], k["orig_dst"])
    assert (conn["repl_src"], conn["repl_dst"]) == (k["repl_src"], k["repl_dst"])
    assert (conn["orig_port_src"], conn["orig_port_dst"]) == (k["orig_sport"], k["orig_dport"])
    assert (conn["repl_port_src"], conn["repl_port_dst"]) == (k["repl_sport"], k["repl_dport"])
    assert int(conn["mark"]) & 0xFFFFFFFF == k["mark"] == MARK_MAX  # <int>, two's complement
    assert conn["zone"] == k["zone"] == ZONE_MAX
    assert abs(conn["timeout"] - k["timeout"]) <= 10 and conn["timeout"] > TIMEOUT - 60
    assert conn["state"] == k["state"] == ""
    flags = set(conn["status_flags"])
    assert {"SEEN_REPLY", "ASSURED", "CONFIRMED"} <= flags, conn["status_flags"]
    assert ("ASSURED" in flags) == ("ASSURED" in k["flags"]) and "UNREPLIED" not in k["flags"]
    assert conn["status"] == sum(1 << STATUS_BITS[f] for f in flags), (conn["status"], conn["status_flags"])
    for d in ("orig", "repl"):
        assert isinstance(conn[f"{d}_bytes"], float) and isinstance(conn[f"{d}_packets"], float)
        assert conn[f"{d}_bytes"] == float(k[f"{d}_bytes"]) and conn[f"{d}_packets"] == float(k[f"{d}_packets"])
    assert isinstance(conn["byte_rate"], float) and conn["byte_rate"] == 0.0


def test_xmlrpc_c_fullPageOfWidestEntriesAndKillByBigId_everyMemberTypedAndEntryKilled(
        ctd, xmlrpc_c_client, widest_page):
    c = ctd()
    rpc, sid = c.login()
    total = MAX_PAGE + BULK
    wait_for(lambda: rpc.view(sid, {}, "", "ASC", 0, 0)["total"], done=lambda t: t == total,
             what=f"ctd's mirror to hold the {total} entries")
    python_page = rpc.view(sid, {}, "orig_port_src", "DESC", 0, MAX_PAGE)
    assert [int(x["id"]) for x in python_page["connections"]] == [e["id"] for e in widest_page]
    # The same call's raw size, for the failure messages: it must stay below xmlrpc-c's limit.
    status, raw = c.post(xmlrpc.client.dumps((sid, {}, "orig_port_src", "DESC", 0, MAX_PAGE), "view").encode())
    assert status == 200
    assert len(raw) < XML_SIZE_LIMIT, f"a full page of the widest entries is {len(raw)} bytes"

    p, out = run_client(xmlrpc_c_client, c, MAX_PAGE)
    assert p.returncode == 0 and out is not None, (
        f"xmlrpc-c client exited {p.returncode} (response of the same view: {len(raw)} bytes)\n"
        f"stderr: {p.stderr}\nstdout: {p.stdout[-2000:]}")
    assert (out["xml_size_limit"], out["nesting_limit"]) == (XML_SIZE_LIMIT, NESTING_LIMIT), \
        "xmlrpc-c's limits are not the defaults: the test would prove nothing"
    assert out["session_length"] >= 16
    assert out["total"] == total and out["start"] == 0 and out["length"] == MAX_PAGE
    assert out["count"] == MAX_PAGE
    assert out["ipv6"] == sum(1 for e in widest_page if e["l3proto"] == "ipv6") > MAX_PAGE // 2
    assert out["ids"] == [str(e["id"]) for e in widest_page]
    assert all(int(i) >= 1 << 31 for i in out["ids"])
    assert out["autorefresh"] is True and out["accounting"] is True and isinstance(out["time"], float)

    first = widest_page[0]
    assert out["first_id"] == str(first["id"]) and int(out["first_id"]) >= 1 << 31
    assert out["first"]["orig_port_src"] == 65535 and out["first"]["l3proto"] == "ipv6"
    assert len(out["first"]["orig_src"]) == len(out["first"]["orig_dst"]) == 39  # no :: compression possible
    _check_against_kernel(out["first"], first)

    assert out["killed"] == 1, out
    assert out["killed_ids"] == [str(first["id"])]
    assert out["not_found"] == [] and out["ambiguous"] == [] and out["failed"] == []
    assert out["logout"] is True
    remaining = {e["id"] for e in conntrack_list()}
    assert first["id"] not in remaining
    assert {e["id"] for e in widest_page[1:]} <= remaining
    assert len(conntrack_list("-p", "udp")) == total - 1


def test_xmlrpc_c_viewOneLongerThanMaxPage_isServedAsTheMaximum(ctd, xmlrpc_c_client):
    """pyctd accepted any length: one over the maximum gets the maximum, which stays below xmlrpc-c's limit."""
    ct_fill("create", MAX_PAGE + 50, "--family", "6", "--base", "fd12:3456:789a:bcde:f012:3456:789a:bcde")
    c = ctd()
    p, out = run_client(xmlrpc_c_client, c, MAX_PAGE + 1)
    assert p.returncode == 0, f"exit {p.returncode}\nstderr: {p.stderr}\nstdout: {p.stdout[-2000:]}"
    assert out is not None and out["length"] == MAX_PAGE, p.stdout[-2000:]
