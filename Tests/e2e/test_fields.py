"""The fields people expect (issue 9, sections 2 and 3): start and age, ct labels and the helper in view's rows,
and the `label`, `helper` and `age` filters, against the real table of this private namespace, cross-checked with
conntrack -L (-o xml,ktimestamp for the start times, -o labels for the labels, -o extended for the helper).

conntrack(8) reads label names from /etc/xtables/connlabel.conf only, so it runs here in a private mount namespace
with a tmpfs over /etc holding that file; ctd reads the same names from the file its [conntrack] connlabel_file
names. The kernel gives an entry room for labels only when some rule in the namespace uses ct labels: a chain that
no packet traverses, with `ct label set`, takes care of that."""

from __future__ import annotations

import contextlib
import socket
import time
import xml.etree.ElementTree as ET

import pytest

from ctdtest import assert_fault, conntrack_list, ct_insert, run, view_all, wait_for

LABELS = {0: "web", 1: "vpn", 5: "quarantine", 100: "audit"}
CONNLABEL_CONF = "# bit name\n" + "".join(f"{bit} {name}\n" for bit, name in LABELS.items())
HIDE = ["127.0.0.0/8", "::1/128"]


def _sysctl(name: str, value: int):
    run(["sysctl", "-qw", f"net.netfilter.{name}={value}"])
    assert open(f"/proc/sys/net/netfilter/{name}").read().strip() == str(value)


@pytest.fixture
def timestamps():
    """nf_conntrack_timestamp=1 in this namespace for one test (it is per namespace); back to 0 after."""
    _sysctl("nf_conntrack_timestamp", 1)
    yield
    _sysctl("nf_conntrack_timestamp", 0)


@pytest.fixture
def labels_enabled(tmp_path):
    """A connlabel.conf for ctd, and a rule using ct labels so that new entries can carry them."""
    conf = tmp_path / "connlabel.conf"
    conf.write_text(CONNLABEL_CONF)
    run(["nft", "-f", "-"], input="table inet ctdfields {\n chain labels {\n  ct label set 127\n }\n}\n")
    yield conf
    run(["nft", "delete", "table", "inet", "ctdfields"], check=False)


def conntrack_with_labels(conf, *args) -> str:
    """Runs conntrack with `conf` as /etc/xtables/connlabel.conf (in a private mount namespace)."""
    script = ('mount -t tmpfs ctdfields /etc && mkdir /etc/xtables && cat > /etc/xtables/connlabel.conf && '
              'exec conntrack "$@"')
    return run(["unshare", "-m", "sh", "-c", script, "conntrack", *args], input=conf.read_text()).stdout


def kernel_labels(conf) -> dict[int, set[str]]:
    """id -> the label names conntrack -L -o labels shows."""
    out = {}
    for line in conntrack_with_labels(conf, "-L", "-o", "id,labels").splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok and not tok.startswith("["))
        if "id" in fields:
            out[int(fields["id"])] = set(fields["labels"].split(",")) if "labels" in fields else set()
    return out


def kernel_starts() -> dict[int, float]:
    """id -> start time in epoch seconds, from conntrack -L -o xml,ktimestamp (nanoseconds)."""
    p = run(["conntrack", "-L", "-o", "xml,ktimestamp"], check=False)
    out = {}
    if not p.stdout.strip():
        return out
    for flow in ET.fromstring(p.stdout).iter("flow"):
        meta = flow.find("meta[@direction='independent']")
        start = meta.find("timestamp/start")
        if start is not None:
            out[int(meta.find("id").text)] = int(start.text) / 1e9
    return out


def rows(rpc, sid, filters=None, order_by="", order_dir="ASC"):
    return view_all(rpc, sid, filters or {}, order_by, order_dir)


def by_id(connections) -> dict[int, dict]:
    return {int(c["id"]): c for c in connections}


def _insert(n: int, prefix: str, **kw) -> list[dict]:
    return [ct_insert("udp", f"{prefix}.{i}", f"{prefix}.200", 4000 + i, 53, timeout=600, **kw)
            for i in range(1, n + 1)]


def test_start_and_age_matchTheKernelsTimestamps(ctd, timestamps):
    c = ctd(hide=HIDE, counter_interval=0.5)
    rpc, sid = c.login()
    entries = _insert(3, "10.95.0")
    ids = {e["id"] for e in entries}
    first = wait_for(lambda: by_id(rows(rpc, sid, {"orig_src": "10.95.0.0/24"})), timeout=10,
                     done=lambda r: set(r) == ids, what="the three entries in view")
    kernel = kernel_starts()
    now = time.time()
    for i in ids:
        # Seen through the NEW event: the kernel sends no start time there, ctd's estimate is within a second.
        assert abs(first[i]["start"] - kernel[i]) < 1.0, (first[i], kernel[i])
        assert abs(first[i]["age"] - (now - kernel[i])) <= 2
        assert isinstance(first[i]["age"], int) and first[i]["age"] >= 0
    # The counter dumps (every 0.5 s while someone views) bring the kernel's exact start.
    exact = wait_for(lambda: by_id(rows(rpc, sid, {"orig_src": "10.95.0.0/24"})), timeout=10,
                     done=lambda r: all(abs(r[i]["start"] - kernel[i]) < 1e-3 for i in ids),
                     what="the kernel's start times in view")
    assert all(exact[i]["age"] == pytest.approx(time.time() - kernel[i], abs=2) for i in ids)
    v = rpc.view(sid, {}, "", "ASC", 0, 1)
    assert v["timestamps"] is True and "nf_conntrack_timestamp" not in v.get("note", "")


def test_start_whenCtdStartsAfterTheEntries_comesFromTheDump(ctd, timestamps):
    entries = _insert(2, "10.95.1")
    kernel = kernel_starts()
    c = ctd(hide=HIDE)
    rpc, sid = c.login()
    got = by_id(rows(rpc, sid, {"orig_src": "10.95.1.0/24"}))
    assert set(got) == {e["id"] for e in entries}
    for i, row in got.items():
        assert row["start"] == pytest.approx(kernel[i], abs=1e-3)


def test_timestampsOff_isSaidInTheAnswer_andRowsHaveNoStart(ctd):
    _sysctl("nf_conntrack_timestamp", 0)
    e = ct_insert("udp", "10.95.2.1", "10.95.2.2", 1, 53, timeout=600)
    c = ctd(hide=HIDE)
    rpc, sid = c.login()
    v = wait_for(lambda: rpc.view(sid, {"id": str(e["id"])}, "", "ASC", 0, 10), done=lambda v: v["total"] == 1)
    assert v["timestamps"] is False
    assert "sysctl -w net.netfilter.nf_conntrack_timestamp=1" in v["note"]
    row = v["connections"][0]
    assert "start" not in row and "age" not in row
    assert row["labels"] == [] and row["helper"] == ""
    assert "nf_conntrack_timestamp is 0" in c.stderr()
    # An age filter matches nothing when no start is known; ordering by age still works.
    assert rpc.view(sid, {"age": {"min": 0}}, "", "ASC", 0, 10)["total"] == 0
    assert rpc.view(sid, {}, "age", "DESC", 0, 10)["total"] >= 1


def test_labels_setWithConntrack_showByName_andFilter(ctd, labels_enabled):
    conf = labels_enabled
    c = ctd(hide=HIDE, connlabel_file=conf)
    rpc, sid = c.login()
    entries = _insert(6, "10.96.0")
    ids = [e["id"] for e in entries]
    wait_for(lambda: rpc.view(sid, {"orig_src": "10.96.0.0/24"}, "", "ASC", 0, 0)["total"], done=lambda t: t == 6)
    wanted = {1: ["web"], 2: ["vpn", "quarantine"], 3: ["audit"], 4: ["web", "audit"]}
    for i, names in wanted.items():
        for name in names:
            conntrack_with_labels(conf, "-U", "-p", "udp", "-s", f"10.96.0.{i}", "--label-add", name)
    kernel = kernel_labels(conf)
    assert {i: kernel[ids[i - 1]] for i in wanted} == {i: set(n) for i, n in wanted.items()}

    def shown():
        return {int(r["id"]): set(r["labels"]) for r in rows(rpc, sid, {"orig_src": "10.96.0.0/24"})}
    wait_for(shown, done=lambda s: all(s[i] == kernel[i] for i in ids), what="the labels in view")
    # Removing the last label shows as no labels (the kernel's UPDATE carries none).
    conntrack_with_labels(conf, "-U", "-p", "udp", "-s", "10.96.0.3", "--label-del", "audit")
    wait_for(shown, done=lambda s: s[ids[2]] == set(), what="label removal in view")
    kernel = kernel_labels(conf)

    def expect(pred):
        return {i for i in ids if pred(kernel[i])}
    for flt, pred in [
        ("web", lambda s: "web" in s),
        (["vpn", "audit"], lambda s: "vpn" in s or "audit" in s),
        (5, lambda s: "quarantine" in s),
        ("100", lambda s: "audit" in s),
        (127, lambda s: False),
    ]:
        got = {int(r["id"]) for r in rows(rpc, sid, {"label": flt, "orig_src": "10.96.0.0/24"})}
        assert got == expect(pred), flt
    f = assert_fault(-32602, rpc.view, sid, {"label": "nosuch"})
    assert "web, vpn, quarantine, audit" in f.faultString


def test_labels_withoutConnlabelFile_areBitNumbers(ctd, labels_enabled, tmp_path):
    conf = labels_enabled
    c = ctd(hide=HIDE, connlabel_file=tmp_path / "missing.conf")
    rpc, sid = c.login()
    e = ct_insert("udp", "10.96.1.1", "10.96.1.2", 1, 53, timeout=600)
    conntrack_with_labels(conf, "-U", "-p", "udp", "-s", "10.96.1.1", "--label-add", "audit")
    conntrack_with_labels(conf, "-U", "-p", "udp", "-s", "10.96.1.1", "--label-add", "vpn")
    v = wait_for(lambda: rpc.view(sid, {"label": 100}, "", "ASC", 0, 10),
                 done=lambda v: v["total"] == 1 and v["connections"][0]["labels"] == ["1", "100"])
    assert int(v["connections"][0]["id"]) == e["id"]
    assert rpc.view(sid, {"label": ["1", 2]}, "", "ASC", 0, 10)["total"] == 1
    f = assert_fault(-32602, rpc.view, sid, {"label": "vpn"})
    assert "bit numbers" in f.faultString


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_helper_attachedByNft_showsAndFilters(ctd):
    port = _free_port()
    rules = (
        "table inet ctdhelper {\n"
        ' ct helper ftp-standard { type "ftp" protocol tcp; }\n'
        " chain out {\n  type filter hook output priority 0; policy accept;\n"
        f'  tcp dport {port} ct helper set "ftp-standard"\n }}\n}}\n'
    )
    run(["nft", "-f", "-"], input=rules)
    try:
        c = ctd()
        rpc, sid = c.login()
        other = ct_insert("tcp", "10.97.0.1", "10.97.0.2", 1000, 21, timeout=600, state="ESTABLISHED")
        with contextlib.closing(socket.socket()) as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(1)
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            server, _ = listener.accept()
            with client, server:
                server.sendall(b"220 ctd test\r\n")
                assert client.recv(100).startswith(b"220")
                kernel = [e for e in conntrack_list("-p", "tcp", "--dport", str(port))]
                assert len(kernel) == 1 and kernel[0].get("helper") == "ftp", kernel
                helped = kernel[0]["id"]
                got = wait_for(lambda: rows(rpc, sid, {"helper": "ftp"}), done=lambda r: len(r) == 1,
                               what="the ftp connection in view")
                assert int(got[0]["id"]) == helped and got[0]["helper"] == "ftp"
                unhelped = {int(r["id"]) for r in rows(rpc, sid, {"helper": ""})}
                everyone = {e["id"] for e in conntrack_list() if e.get("helper") is None
                            and c.port not in (e["sport"], e["dport"])}
                assert other["id"] in unhelped and helped not in unhelped
                assert unhelped == everyone
                assert rows(rpc, sid, {"helper": ["sip", "tftp"]}) == []
                assert {int(r["id"]) for r in rows(rpc, sid, {"helper": ["ftp", ""]})} == everyone | {helped}
    finally:
        run(["nft", "delete", "table", "inet", "ctdhelper"], check=False)


def test_ageFilterAndOrder_crossCheckedWithTheKernelsStartTimes(ctd, timestamps):
    c = ctd(hide=HIDE, counter_interval=0.5)
    rpc, sid = c.login()
    old = {e["id"] for e in _insert(3, "10.98.0")}
    # Wait (polling the kernel's clock, not sleeping a fixed time) until the first entries are 3 s old.
    wait_for(lambda: min(time.time() - kernel_starts()[i] for i in old), timeout=10, done=lambda a: a >= 3.2,
             what="the first entries to be 3 s old")
    new = {e["id"] for e in _insert(3, "10.98.1")}
    mine = old | new
    wait_for(lambda: rpc.view(sid, {"orig_src": ["10.98.0.0/24", "10.98.1.0/24"]}, "", "ASC", 0, 0)["total"],
             done=lambda t: t == 6)
    kernel = kernel_starts()
    now = time.time()
    assert all(now - kernel[i] >= 3 for i in old) and all(now - kernel[i] < 2.5 for i in new)
    scope = {"orig_src": ["10.98.0.0/24", "10.98.1.0/24"]}
    assert {int(r["id"]) for r in rows(rpc, sid, {**scope, "age": {"min": 3}})} == old
    assert {int(r["id"]) for r in rows(rpc, sid, {**scope, "age": "0-2"})} == new
    assert {int(r["id"]) for r in rows(rpc, sid, {**scope, "age": {"max": 1000}})} == mine
    # Oldest first: the kernel's order of start times (ties broken by id).
    by_age = [int(r["id"]) for r in rows(rpc, sid, scope, "age", "DESC")]
    assert set(by_age[:3]) == old and set(by_age[3:]) == new
    by_start = [int(r["id"]) for r in rows(rpc, sid, scope, "start", "ASC")]
    assert set(by_start[:3]) == old
    exact = wait_for(lambda: by_id(rows(rpc, sid, scope)), timeout=10,
                     done=lambda r: all(abs(r[i]["start"] - kernel[i]) < 1e-3 for i in mine))
    assert [int(r["id"]) for r in rows(rpc, sid, scope, "start", "ASC")] == sorted(mine, key=lambda i: (kernel[i], i))
    assert all(exact[i]["age"] >= 3 for i in old)
    assert_fault(-32602, rpc.view, sid, {"age": "9-3"}, contains="larger than its max")
