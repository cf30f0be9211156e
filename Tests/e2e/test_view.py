"""view: the table as conntrack(8) shows it, filters, ordering, paging, parameter errors, real loopback traffic."""

from __future__ import annotations

import ipaddress
import time

import pytest

from ctdtest import (MAX_PAGE, TCPPair, assert_fault, conntrack_list, ct_fill, ct_insert, ids_of, signed32, view_all,
                     wait_for, without_ctd_clients)


def _by_id(connections):
    return {int(c["id"]): c for c in connections}


def _assert_same_entry(v: dict, k: dict):
    """A view struct v equals the conntrack -L entry k."""
    assert v["id"] == str(k["id"])
    assert v["l3proto"] == k["l3proto"]
    assert v["l3proto_num"] == k["l3proto_num"]
    assert v["l4proto"] == k["proto"]
    assert v["l4proto_num"] == k["protonum"]
    assert v["orig_src"] == k["orig_src"] and v["orig_dst"] == k["orig_dst"]
    assert v["repl_src"] == k["repl_src"] and v["repl_dst"] == k["repl_dst"]
    if k["protonum"] in (1, 58):
        assert v["icmp_type"] == k["orig_icmp_type"]
        assert v["icmp_code"] == k["orig_icmp_code"]
        assert v["icmp_id"] == k["orig_icmp_id"]
    else:
        assert v["orig_port_src"] == k["orig_sport"] and v["orig_port_dst"] == k["orig_dport"]
        assert v["repl_port_src"] == k["repl_sport"] and v["repl_port_dst"] == k["repl_dport"]
    assert v["mark"] & 0xFFFFFFFF == k["mark"]  # <int>, two's complement
    assert v["orig_l4proto"] == v["l4proto_num"]
    if v["l3proto"] == "ipv4":
        assert v["orig_ipv4_src"] & 0xFFFFFFFF == int(ipaddress.IPv4Address(v["orig_src"]))
        assert v["orig_ipv4_dst"] & 0xFFFFFFFF == int(ipaddress.IPv4Address(v["orig_dst"]))
    else:
        assert "orig_ipv4_src" not in v
    assert v["state"] == k["state"]
    assert v["zone"] == k["zone"]
    assert abs(v["timeout"] - k["timeout"]) <= 3, (v["timeout"], k["timeout"])
    assert ("ASSURED" in v["status_flags"]) == ("ASSURED" in k["flags"])


@pytest.fixture
def six_entries():
    """Six entries covering families, protocols, marks, states and status flags."""
    e = {
        "a": ct_insert("udp", "10.1.0.1", "10.1.0.2", 1000, 2000, mark=4294967295, timeout=100),
        "b": ct_insert("tcp", "fd00::1", "fd00::2", 1, 2, state="ESTABLISHED", status="ASSURED", mark=7,
                       timeout=200),
        "c": ct_insert("icmp", "10.1.0.1", "10.1.0.3", icmp_type=8, icmp_code=0, icmp_id=77, timeout=30),
        "d": ct_insert("udp", "192.168.5.5", "10.2.0.1", 3000, 53, mark=7, timeout=150),
        "e": ct_insert("tcp", "10.1.0.9", "10.2.0.2", 4000, 80, state="SYN_SENT", status="SEEN_REPLY,ASSURED",
                       timeout=120),
        "f": ct_insert("udp", "fd00:1::5", "fd00:2::1", 5000, 53, timeout=100),
    }
    return e


def test_view_ofInsertedEntries_matchesConntrackListExactly(ctd, six_entries):
    c = ctd()
    rpc, sid = c.login()
    v = rpc.view(sid, {}, "", "ASC", 0, MAX_PAGE)
    kernel = without_ctd_clients(conntrack_list(), c)
    assert v["total"] == len(kernel) == 6
    assert v["length"] == 6 and v["start"] == 0
    assert v["accounting"] is True and v["autorefresh"] is True
    assert isinstance(v["generation"], str) and int(v["generation"]) >= 1
    assert abs(v["time"] - time.time()) < 5
    got = _by_id(v["connections"])
    assert set(got) == {k["id"] for k in kernel}
    for k in kernel:
        _assert_same_entry(got[k["id"]], k)
    for conn in v["connections"]:
        assert isinstance(conn["id"], str) and isinstance(conn["mark"], int)
    a = got[six_entries["a"]["id"]]
    assert a["mark"] == -1 and a["l4proto"] == "udp" and a["state"] == ""
    b = got[six_entries["b"]["id"]]
    assert b["state"] == "ESTABLISHED" and b["l3proto"] == "ipv6" and b["orig_src"] == "fd00::1"
    assert "ASSURED" in b["status_flags"]
    icmp = got[six_entries["c"]["id"]]
    assert (icmp["icmp_type"], icmp["icmp_code"], icmp["icmp_id"]) == (8, 0, 77)
    assert 25 <= icmp["timeout"] <= 30


def test_view_ofEntriesInsertedWhileRunning_matchesConntrackList(ctd):
    c = ctd()
    rpc, sid = c.login()
    assert rpc.view(sid, {}, "", "ASC", 0, MAX_PAGE)["total"] == 0
    u = ct_insert("udp", "10.9.0.1", "10.9.0.2", 1111, 2222, mark=3000000000, timeout=300)
    t = ct_insert("tcp", "fd00::9", "fd00::a", 33, 44, state="ESTABLISHED", timeout=400)

    def both():
        v = rpc.view(sid, {}, "", "ASC", 0, MAX_PAGE)
        return _by_id(v["connections"]) if v["total"] == 2 else None

    got = wait_for(both, timeout=2, what="2 entries")
    for k in without_ctd_clients(conntrack_list(), c):
        _assert_same_entry(got[k["id"]], k)
    assert got[u["id"]]["mark"] & 0xFFFFFFFF == 3000000000
    assert got[t["id"]]["state"] == "ESTABLISHED"


def test_view_filters_selectTheMatchingEntries(ctd, six_entries):
    c = ctd()
    rpc, sid = c.login()
    ids = {name: e["id"] for name, e in six_entries.items()}

    def check(filters, names):
        v = rpc.view(sid, filters, "", "ASC", 0, MAX_PAGE)
        want = {ids[n] for n in names}
        assert ids_of(v["connections"]) == want, f"filters {filters!r}"
        assert v["total"] == len(want), f"total for {filters!r}"

    check({"orig_src": "10.1.0.0/24"}, "ace")
    check({"orig_src": "fd00::/64"}, "b")
    check({"orig_src": "fd00::/16"}, "bf")
    check({"orig_src": "fd00:1::5"}, "f")
    check({"orig_dst": "10.2.0.0/16"}, "de")
    check({"orig_ipv4_src": int(ipaddress.ip_address("10.1.0.1"))}, "ac")
    check({"orig_ipv4_src": "192.168.5.5"}, "d")
    check({"orig_ipv4_src": signed32(int(ipaddress.ip_address("192.168.5.5")))}, "d")  # >= 128.0.0.0 as i4
    check({"orig_port_dst": 53}, "df")
    check({"orig_port_dst": "2000"}, "a")
    check({"orig_l4proto": "udp"}, "adf")
    check({"orig_l4proto": 17}, "adf")
    check({"orig_l4proto": "tcp"}, "be")
    check({"orig_l4proto": 6}, "be")
    check({"orig_l4proto": "icmp"}, "c")
    check({"mark": "4294967295"}, "a")
    check({"mark": -1}, "a")
    check({"mark": 7}, "bd")
    check({"mark": [7, "4294967295"]}, "abd")
    check({"state": "ESTABLISHED"}, "b")
    check({"state": "SYN_SENT"}, "e")
    check({"status": "ASSURED"}, "be")
    check({"status": ["ASSURED", "SEEN_REPLY"]}, "e")
    check({"status": ["CONFIRMED"]}, "abcdef")
    check({"l3proto": "ipv6"}, "bf")
    check({"l3proto": 2}, "acde")
    check({"l3proto": "ipv4", "orig_l4proto": "udp"}, "ad")
    check({"orig_src": "10.0.0.0/8", "mark": 0}, "ce")
    for name, e in six_entries.items():
        check({"id": str(e["id"])}, name)


def test_view_filterById_acceptsStringAndTwosComplementInt(ctd):
    # Insert until there is one id below 2^31 and one at or above (ids are random u32).
    small = big = None
    for port in range(7000, 7100):
        e = ct_insert("udp", "10.3.0.1", "10.3.0.2", port, 53)
        if e["id"] >= 1 << 31:
            big = big or e
        else:
            small = small or e
        if small and big:
            break
    assert small and big, "could not get ids on both sides of 2^31"
    c = ctd()
    rpc, sid = c.login()
    for value in (str(big["id"]), signed32(big["id"]), hex(big["id"])):
        v = rpc.view(sid, {"id": value}, "", "ASC", 0, 10)
        assert v["total"] == 1 and v["connections"][0]["id"] == str(big["id"]), value
        assert v["connections"][0]["orig_port_src"] == big["sport"]
    for value in (str(small["id"]), small["id"]):
        v = rpc.view(sid, {"id": value}, "", "ASC", 0, 10)
        assert v["total"] == 1 and v["connections"][0]["id"] == str(small["id"]), value
    v = rpc.view(sid, {"id": [str(small["id"]), signed32(big["id"])]}, "", "ASC", 0, 10)
    assert ids_of(v["connections"]) == {small["id"], big["id"]}


def test_view_unknownFilterOrderOrDirection_faultNamesTheKey(ctd, six_entries):
    c = ctd()
    rpc, sid = c.login()
    assert_fault(-32602, rpc.view, sid, {"nosuchfield": 1}, "", "ASC", 0, 10, contains="nosuchfield")
    assert_fault(-32602, rpc.view, sid, {}, "bogus_order", "ASC", 0, 10, contains="bogus_order")
    assert_fault(-32602, rpc.view, sid, {}, "", "SIDEWAYS", 0, 10, contains="SIDEWAYS")
    assert_fault(-32602, rpc.view, sid, {"state": "DANCING"}, "", "ASC", 0, 10, contains="DANCING")
    assert_fault(-32602, rpc.view, sid, {"orig_src": "10.0.0.300"}, "", "ASC", 0, 10, contains="orig_src")
    assert_fault(-32602, rpc.view, sid, {"orig_port_dst": 70000}, "", "ASC", 0, 10, contains="orig_port_dst")
    assert_fault(-32602, rpc.view, sid, "not a struct", "", "ASC", 0, 10, contains="filters")
    # The table was not disturbed by the bad calls.
    assert rpc.view(sid, {}, "", "ASC", 0, 10)["total"] == 6


def test_view_emptyFilters_acceptedAsStructAndAsArray(ctd, six_entries):
    c = ctd()
    rpc, sid = c.login()
    as_struct = rpc.view(sid, {}, "", "ASC", 0, MAX_PAGE)
    as_array = rpc.view(sid, [], "", "ASC", 0, MAX_PAGE)  # what PHP sends for an empty array
    assert as_struct["total"] == as_array["total"] == 6
    assert [x["id"] for x in as_struct["connections"]] == [x["id"] for x in as_array["connections"]]
    only_session = rpc.view(sid)
    assert only_session["total"] == 6 and len(only_session["connections"]) == 6
    assert ids_of(only_session["connections"]) == {e["id"] for e in six_entries.values()}


def test_view_orderByOrigPortSrc_pagesMatchSortedConntrackList(ctd):
    ct_fill("create", 2000, "--base", "10.30.0.0", "--sport-base", "20000")
    kernel = conntrack_list()
    assert len(kernel) == 2000
    asc = [k["id"] for k in sorted(kernel, key=lambda k: k["sport"])]
    c = ctd()
    rpc, sid = c.login()
    pages = []
    for start in range(0, 2000, MAX_PAGE):
        v = rpc.view(sid, {}, "orig_port_src", "ASC", start, MAX_PAGE)
        assert v["total"] == 2000 and v["start"] == start and v["length"] == min(MAX_PAGE, 2000 - start)
        pages += [int(x["id"]) for x in v["connections"]]
    assert pages == asc
    desc_page = rpc.view(sid, {}, "orig_port_src", "DESC", 1000, 100)
    assert [int(x["id"]) for x in desc_page["connections"]] == asc[::-1][1000:1100]
    ports = [x["orig_port_src"] for x in desc_page["connections"]]
    assert ports == list(range(20999, 20899, -1))
    # A page that runs past the end is short; a start past the end is empty.
    tail = rpc.view(sid, {}, "orig_port_src", "asc", 1950, 100)
    assert [int(x["id"]) for x in tail["connections"]] == asc[1950:] and tail["length"] == 50
    empty = rpc.view(sid, {}, "orig_port_src", "ASC", 5000, 100)
    assert empty["total"] == 2000 and empty["connections"] == []
    # Paging with a filter: total is the filtered count, pages are the filtered sorted list.
    odd = [k["id"] for k in sorted(kernel, key=lambda k: k["sport"]) if k["mark"] == 3]
    v = rpc.view(sid, {"mark": 3}, "orig_port_src", "ASC", 0, MAX_PAGE)
    assert v["total"] == len(odd) == 125
    assert [int(x["id"]) for x in v["connections"]] == odd
    v = rpc.view(sid, {"mark": 3, "orig_src": "10.30.0.1"}, "orig_port_src", "DESC", 100, 10)
    assert v["total"] == 125 and [int(x["id"]) for x in v["connections"]] == odd[::-1][100:110]


def test_view_lengthOverMaximumIsServedAsTheMaximum_negativeStartOrLengthIsAFault(ctd):
    for i in range(3):
        ct_insert("udp", f"10.4.0.{i + 1}", "10.4.0.9", 1, 2)
    c = ctd(max_page_length=2)
    rpc, sid = c.login()
    assert rpc.view(sid, {}, "", "ASC", 0, 2)["total"] == 3
    # As pyctd did: any length is accepted; the answer's length says how many rows were served.
    v = rpc.view(sid, {}, "", "ASC", 0, 10_000)
    assert v["length"] == 2 and len(v["connections"]) == 2
    assert_fault(-32602, rpc.view, sid, {}, "", "ASC", -1, 10, contains="start")
    assert_fault(-32602, rpc.view, sid, {}, "", "ASC", 0, -1, contains="length")
    zero = rpc.view(sid, {}, "", "ASC", 0, 0)
    assert zero["total"] == 3 and zero["connections"] == []


def test_view_ofLoopbackTCP_showsEstablishedWithCounters(ctd):
    c = ctd()
    rpc, sid = c.login()
    with TCPPair("127.0.0.1", payload=20000) as pair:
        def established():
            v = rpc.view(sid, {"orig_port_dst": pair.server_port, "orig_l4proto": "tcp"}, "", "ASC", 0, 10)
            if v["total"] != 1:
                return None
            conn = v["connections"][0]
            if conn["state"] == "ESTABLISHED" and conn["orig_bytes"] > 0 and conn["repl_bytes"] > 0:
                return conn
            return None

        # Counters are refreshed every 2 s (counter_interval) while someone views.
        conn = wait_for(established, timeout=3.5, interval=0.2, what="ESTABLISHED with counters")
        kernel = [k for k in conntrack_list("-p", "tcp") if k["dport"] == pair.server_port]
        assert len(kernel) == 1
        k = kernel[0]
        assert conn["id"] == str(k["id"])
        assert conn["orig_src"] == "127.0.0.1" and conn["orig_port_src"] == pair.client_port
        assert conn["l4proto"] == "tcp" and "ASSURED" in conn["status_flags"]
        assert 20000 < conn["orig_bytes"] <= k["orig_bytes"]
        assert 10000 < conn["repl_bytes"] <= k["repl_bytes"]
        assert conn["orig_packets"] >= 3 and conn["repl_packets"] >= 2
        # ctd's own client connection is tracked by the kernel but hidden (hide_own_connections).
        assert any(k["dport"] == c.port for k in conntrack_list("-p", "tcp"))
        assert rpc.view(sid, {"orig_port_dst": c.port}, "", "ASC", 0, 10)["total"] == 0
