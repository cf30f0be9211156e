"""kill and change: only the entry with the exact id is touched, cross-checked with conntrack(8)."""

from __future__ import annotations

import pytest

from ctdtest import (MAX_PAGE, TCPPair, assert_fault, conntrack_count, conntrack_list, ct_delete, ct_find, ct_insert,
                     ids_of, signed32, wait_for)


def _missing_id(existing) -> int:
    """An id that no entry has."""
    taken = {e["id"] for e in conntrack_list()} | set(existing)
    for candidate in (1, 2, 3, 123456789, 4000000001):
        if candidate not in taken:
            return candidate
    raise AssertionError("unreachable")


def _view_ids(rpc, sid, filters=None) -> set[int]:
    return ids_of(rpc.view(sid, filters or {}, "", "ASC", 0, MAX_PAGE)["connections"])


def _insert_many(n, base_port=9000, src="10.5.0.1"):
    return [ct_insert("udp", src, "10.5.0.2", base_port + i, 53, timeout=300) for i in range(n)]


def _entries_with_small_and_big_ids():
    """Entries until at least one id is below 2^31 and one at or above (ids are random u32)."""
    small, big = [], []
    port = 12000
    while (len(small) < 2 or len(big) < 2) and port < 12200:
        e = ct_insert("udp", "10.6.0.1", "10.6.0.2", port, 53, timeout=300)
        (big if e["id"] >= 1 << 31 else small).append(e)
        port += 1
    assert len(small) >= 2 and len(big) >= 2
    return small, big


def test_kill_ofLoopbackTCPConnection_removesItFromKernelAndView(ctd):
    c = ctd()
    rpc, sid = c.login()
    with TCPPair("127.0.0.1", payload=1000) as pair:
        filters = {"orig_port_dst": pair.server_port, "orig_l4proto": "tcp"}
        conn = wait_for(lambda: rpc.view(sid, filters, "", "ASC", 0, 10)["connections"], timeout=2,
                        what="the loopback connection in view")[0]
        kernel = [k for k in conntrack_list("-p", "tcp") if k["dport"] == pair.server_port]
        assert [k["id"] for k in kernel] == [int(conn["id"])]
        result = rpc.kill(sid, [conn["id"]])
        assert result["killed"] == 1
        assert result["killed_ids"] == [conn["id"]]
        assert result["not_found"] == [] and result["failed"] == [] and result["ambiguous"] == []
        assert int(conn["id"]) not in {k["id"] for k in conntrack_list()}
        # (Immediately would be better: see test_view_rightAfterKillOrChange_showsTheResult.)
        wait_for(lambda: int(conn["id"]) not in _view_ids(rpc, sid, filters), timeout=1,
                 what="the killed id gone from view")
        assert rpc.view(sid, {"id": conn["id"]}, "", "ASC", 0, 10)["total"] == 0


def test_kill_ofThreeIdsInOneCall_removesExactlyThose(ctd):
    entries = _insert_many(5)
    c = ctd()
    rpc, sid = c.login()
    victims = [str(e["id"]) for e in entries[:3]]
    result = rpc.kill(sid, victims)
    assert result["killed"] == 3
    assert sorted(result["killed_ids"]) == sorted(victims)
    assert result["not_found"] == []
    left = {k["id"] for k in conntrack_list("-p", "udp")}
    assert left == {entries[3]["id"], entries[4]["id"]}
    wait_for(lambda: _view_ids(rpc, sid) == left, timeout=1, what="view == conntrack -L after kill")


def test_kill_ofMissingId_faultNoSuchConnectionAndNothingChanges(ctd):
    entries = _insert_many(3)
    c = ctd()
    rpc, sid = c.login()
    before = conntrack_count()
    missing = _missing_id([e["id"] for e in entries])
    assert_fault(4, rpc.kill, sid, [str(missing)], contains=str(missing))
    assert conntrack_count() == before
    assert_fault(4, rpc.kill, sid, str(missing))
    assert conntrack_count() == before
    assert _view_ids(rpc, sid) == {e["id"] for e in entries}


def test_kill_ofExistingAndMissingIds_reportsKilledAndNotFound(ctd):
    entries = _insert_many(2)
    c = ctd()
    rpc, sid = c.login()
    missing = _missing_id([e["id"] for e in entries])
    result = rpc.kill(sid, [str(entries[0]["id"]), str(missing)])
    assert result["killed"] == 1
    assert result["killed_ids"] == [str(entries[0]["id"])]
    assert result["not_found"] == [str(missing)]
    assert {k["id"] for k in conntrack_list("-p", "udp")} == {entries[1]["id"]}


def test_kill_idsAsStringIntAndNegativeInt_allAccepted(ctd):
    small, big = _entries_with_small_and_big_ids()
    c = ctd()
    rpc, sid = c.login()
    as_string = str(big[0]["id"])
    as_negative = signed32(big[1]["id"])
    assert as_negative < 0
    as_int = small[0]["id"]
    result = rpc.kill(sid, [as_string, as_negative, as_int])
    assert result["killed"] == 3
    assert sorted(result["killed_ids"]) == sorted(str(e["id"]) for e in (big[0], big[1], small[0]))
    left = {k["id"] for k in conntrack_list("-p", "udp")}
    assert big[0]["id"] not in left and big[1]["id"] not in left and small[0]["id"] not in left
    assert small[1]["id"] in left
    # A single id, not in an array, as a negative int too.
    if len(big) > 2:
        assert rpc.kill(sid, signed32(big[2]["id"]))["killed_ids"] == [str(big[2]["id"])]
    assert rpc.kill(sid, small[1]["id"])["killed_ids"] == [str(small[1]["id"])]


def test_kill_whenTupleReusedUnderNewID_leavesNewEntry(ctd):
    c = ctd()
    rpc, sid = c.login()
    tuple_ = ("udp", "10.7.0.1", "10.7.0.2", 5353, 53)
    old = ct_insert(*tuple_, timeout=300, mark=1)
    wait_for(lambda: old["id"] in _view_ids(rpc, sid), timeout=2, what="the first entry in view")
    ct_delete(*tuple_)
    # The id is a hash of the entry's address and tuple: a re-insert into the slab slot just freed gets the same
    # id again. Filler entries take the freed slot first.
    new = None
    for attempt in range(1, 6):
        for i in range(attempt * 4):
            ct_insert("udp", "10.7.1.1", "10.7.1.2", 20000 + attempt * 100 + i, 53, timeout=300)
        new = ct_insert(*tuple_, timeout=300, mark=2)
        if new["id"] != old["id"]:
            break
        ct_delete(*tuple_)
    assert new["id"] != old["id"], "the kernel gave the re-inserted tuple its old id every time"
    wait_for(lambda: _view_ids(rpc, sid, {"orig_src": "10.7.0.1"}) == {new["id"]}, timeout=2,
             what="only the new id in view")
    before = conntrack_count()
    assert_fault(4, rpc.kill, sid, [str(old["id"])])
    assert_fault(4, rpc.kill, sid, [signed32(old["id"])])
    still = ct_find(*tuple_)
    assert still is not None and still["id"] == new["id"] and still["mark"] == 2
    assert conntrack_count() == before
    # change of the old id must not touch the new entry either.
    assert_fault(4, rpc.change, sid, "mark", str(old["id"]), 99)
    assert ct_find(*tuple_)["mark"] == 2


def test_change_markAndTimeout_matchConntrackList(ctd):
    entries = _insert_many(3)
    c = ctd()
    rpc, sid = c.login()
    a, b, t = (str(e["id"]) for e in entries)
    after = rpc.change(sid, "mark", a, "4294967295")
    assert after["id"] == a and after["mark"] == -1  # <int>, two's complement
    after = rpc.change(sid, "mark", b, -1)
    assert after["id"] == b and after["mark"] == -1
    after = rpc.change(sid, "timeout", t, 5000)
    assert after["id"] == t and 4995 <= after["timeout"] <= 5000
    kernel = {k["id"]: k for k in conntrack_list("-p", "udp")}
    assert kernel[int(a)]["mark"] == 4294967295
    assert kernel[int(b)]["mark"] == 4294967295
    assert 4995 <= kernel[int(t)]["timeout"] <= 5000
    assert kernel[int(t)]["mark"] == 0
    # The view shows the new values too, and the ids did not change.
    wait_for(lambda: rpc.view(sid, {"mark": -1}, "", "ASC", 0, MAX_PAGE)["total"] == 2, timeout=1,
             what="the new marks in view")
    seen = {int(x["id"]): x for x in rpc.view(sid, {}, "", "ASC", 0, MAX_PAGE)["connections"]}
    assert set(seen) == set(kernel)
    assert seen[int(a)]["mark"] == -1 and seen[int(b)]["mark"] == -1
    assert 4990 <= seen[int(t)]["timeout"] <= 5000
    assert rpc.view(sid, {"mark": -1}, "", "ASC", 0, MAX_PAGE)["total"] == 2
    # Back to a small mark, by int id.
    assert rpc.change(sid, "mark", int(a) if int(a) < 1 << 31 else signed32(int(a)), 12)["mark"] == 12
    assert ct_find("udp", "10.5.0.1", "10.5.0.2", 9000, 53)["mark"] == 12


def test_change_withBadFieldValueOrId_faultsAndChangesNothing(ctd):
    entries = _insert_many(2)
    c = ctd()
    rpc, sid = c.login()
    e = str(entries[0]["id"])
    before = conntrack_list("-p", "udp")
    count = conntrack_count()

    def unchanged():
        assert conntrack_count() == count
        now = {k["id"]: (k["mark"], k["sport"]) for k in conntrack_list("-p", "udp")}
        assert now == {k["id"]: (k["mark"], k["sport"]) for k in before}

    assert_fault(-32602, rpc.change, sid, "foo", e, 1, contains="foo")
    unchanged()
    assert_fault(5, rpc.change, sid, "mark", e, str(2 ** 32))
    unchanged()
    assert_fault(-32602, rpc.change, sid, "mark", e, "not a number", contains="string")
    unchanged()
    assert_fault(-32602, rpc.change, sid, "mark", e, True)
    unchanged()
    assert_fault(5, rpc.change, sid, "mark", e, 3.5)  # a number, but not a whole one
    unchanged()
    assert_fault(-32602, rpc.change, sid, "timeout", e, "soon")
    unchanged()
    assert_fault(5, rpc.change, sid, "timeout", e, 0)
    unchanged()
    assert_fault(5, rpc.change, sid, "timeout", e, -5)
    unchanged()
    missing = _missing_id([k["id"] for k in before])
    assert_fault(4, rpc.change, sid, "mark", str(missing), 1, contains=str(missing))
    unchanged()
    assert_fault(4, rpc.change, sid, "timeout", str(missing), 100)
    unchanged()
    assert_fault(-32602, rpc.change, sid, "mark", "abc", 1)
    unchanged()
    assert_fault(-32602, rpc.change, sid, "mark", e)  # value missing
    unchanged()
    assert_fault(-32602, rpc.kill, sid, ["abc"])
    unchanged()
    assert_fault(-32602, rpc.kill, sid, [])
    unchanged()


def test_view_rightAfterKillOrChange_showsTheResult(ctd):
    entries = _insert_many(2)
    c = ctd()
    rpc, sid = c.login()
    assert _view_ids(rpc, sid) == {e["id"] for e in entries}
    victim, changed = str(entries[0]["id"]), str(entries[1]["id"])
    assert rpc.kill(sid, [victim])["killed_ids"] == [victim]
    assert rpc.change(sid, "mark", changed, 77)["mark"] == 77
    page = {x["id"]: x for x in rpc.view(sid, {}, "", "ASC", 0, MAX_PAGE)["connections"]}
    assert victim not in page, "the killed entry is still in view"
    assert page[changed]["mark"] == 77, "view shows the mark from before the change"
