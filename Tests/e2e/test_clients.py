"""Real XML-RPC clients other than Python's: PHP's xmlrpc extension and Perl's RPC::XML (docs/design.md: they disagree
about big integers, so ids, marks and addresses must reach them intact)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ctdtest import MAX_PAGE, conntrack_list, ct_fill, wait_for

PHP = r"""
$url = $argv[1];
function call($url, $method, $params) {
    $ctx = stream_context_create(['http' => [
        'method' => 'POST',
        'header' => "Content-Type: text/xml\r\n",
        'content' => xmlrpc_encode_request($method, $params),
    ]]);
    $reply = file_get_contents($url, false, $ctx);
    if ($reply === false) { fwrite(STDERR, "no reply to $method\n"); exit(2); }
    $value = xmlrpc_decode($reply);
    if (is_array($value) && xmlrpc_is_fault($value)) {
        fwrite(STDERR, "fault {$value['faultCode']}: {$value['faultString']}\n"); exit(3);
    }
    return $value;
}
$sid = call($url, 'login', ['admin', getenv('CTD_PASSWORD')]);
$page = call($url, 'view', [$sid, [], 'id', 'DESC', 0, (int)$argv[2]]);
echo json_encode(['sid' => $sid, 'page' => $page]);
"""

PERL = r"""
use strict; use warnings;
use RPC::XML; use RPC::XML::Client; use JSON::PP;
my ($url, $length) = @ARGV;
my $c = RPC::XML::Client->new($url);
sub call {
    my $r = $c->simple_request(@_);
    die "request $_[0] failed: $RPC::XML::ERROR\n" unless defined $r;
    die "fault $r->{faultCode}: $r->{faultString}\n" if ref $r eq 'HASH' && exists $r->{faultCode};
    return $r;
}
my $sid = call('login', 'admin', $ENV{CTD_PASSWORD});
my $page = call('view', $sid, {}, 'id', 'DESC', 0, $length);
my $victim = $page->{connections}[0]{id};
# The id as a plain Perl number: RPC::XML sends ids >= 2^31 as <i8>.
my $killed = call('kill', $sid, [0 + $victim]);
print JSON::PP->new->allow_blessed->convert_blessed->encode(
    {page => $page, victim => "$victim", killed => $killed});
"""


@pytest.fixture
def big_values():
    """Entries with addresses >= 128.0.0.0, marks >= 2^31; ids are random u32 (about half >= 2^31)."""
    ct_fill("create", 400, "--base", "192.168.0.0", "--marks", "4", "--mark-shift", "30")
    kernel = {k["id"]: k for k in conntrack_list()}
    assert len(kernel) == 400
    return kernel


def _nulls(value, path="page"):
    """Paths of every None in a decoded structure."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{path}[{i}]")]
    return []


def _check_page(page, kernel, python_page):
    conns = page["connections"]
    assert int(page["total"]) == 400 and len(conns) == MAX_PAGE  # Perl's JSON may quote numbers
    assert _nulls(page) == [], "NULL values"
    assert any(int(c["id"]) >= 1 << 31 for c in conns), "no id >= 2^31 on the page"
    assert any(int(c["mark"]) & 0xFFFFFFFF >= 1 << 31 for c in conns), "no mark >= 2^31 on the page"
    for c, py in zip(conns, python_page["connections"]):
        k = kernel[int(c["id"])]
        assert str(c["id"]) == py["id"]
        assert c["orig_src"] == k["src"] == "192.168.0.1"
        assert c["orig_dst"] == k["dst"] == "193.168.0.1"
        assert int(c["orig_port_src"]) == k["sport"] and int(c["orig_port_dst"]) == 53
        # <int> in two's complement: PHP and Perl read marks >= 2^31 as negative numbers.
        assert int(c["mark"]) & 0xFFFFFFFF == k["mark"]
        assert int(c["timeout"]) > 0 and c["l4proto"] == "udp"
        assert float(c["orig_bytes"]) == 0.0


def _python_page(c):
    rpc, sid = c.login()
    return rpc.view(sid, {}, "id", "DESC", 0, MAX_PAGE)


def test_php_viewOfBigIdsMarksAndAddresses_everyValueDecoded(ctd, big_values):
    c = ctd()
    py = _python_page(c)
    p = subprocess.run(["php", "-r", PHP, c.url, str(MAX_PAGE)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "CTD_PASSWORD": c.password})
    assert p.returncode == 0, f"php failed: {p.stderr}{p.stdout[:500]}"
    out = json.loads(p.stdout)
    assert isinstance(out["sid"], str) and len(out["sid"]) >= 16
    _check_page(out["page"], big_values, py)
    assert [x["id"] for x in out["page"]["connections"]] == [x["id"] for x in py["connections"]]


def test_perl_viewAndKillOfBigId_everyValueDecodedAndEntryKilled(ctd, big_values):
    c = ctd()
    py = _python_page(c)
    p = subprocess.run(["perl", "-e", PERL, c.url, str(MAX_PAGE)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "CTD_PASSWORD": c.password})
    assert p.returncode == 0, f"perl failed: {p.stderr}{p.stdout[:500]}"
    out = json.loads(p.stdout)
    _check_page(out["page"], big_values, py)
    victim = int(out["victim"])
    assert victim >= 1 << 31  # ordered by id DESC: the largest id
    assert int(out["killed"]["killed"]) == 1
    assert [str(x) for x in out["killed"]["killed_ids"]] == [str(victim)]
    assert victim not in {k["id"] for k in conntrack_list()}
    rpc, sid = c.login()
    wait_for(lambda: rpc.view(sid, {"id": str(victim)}, "", "ASC", 0, 1)["total"] == 0, timeout=1,
             what="the killed id gone from view")
    assert len(conntrack_list("-s", "192.168.0.1")) == 399


def test_python_viewOfBigIdsMarksAndAddresses_noOverflow(ctd, big_values):
    c = ctd()
    rpc, sid = c.login()
    seen = {}
    for start in range(0, 400, MAX_PAGE):
        page = rpc.view(sid, {}, "mark", "DESC", start, MAX_PAGE)
        assert _nulls(page) == []
        for conn in page["connections"]:
            assert isinstance(conn["id"], str) and isinstance(conn["mark"], int)
            seen[int(conn["id"])] = conn["mark"] & 0xFFFFFFFF
    assert seen == {i: k["mark"] for i, k in big_values.items()}
    assert max(seen.values()) == 3 << 30 and max(seen) >= 1 << 31
    big_id = max(seen)
    v = rpc.view(sid, {"id": str(big_id), "mark": str(seen[big_id])}, "", "ASC", 0, 10)
    assert v["total"] == 1 and v["connections"][0]["orig_src"] == "192.168.0.1"


PHP_INCIDENT = r"""
$url = $argv[1];
function call($url, $method, $params) {
    $ctx = stream_context_create(['http' => [
        'method' => 'POST', 'header' => "Content-Type: text/xml\r\n",
        'content' => xmlrpc_encode_request($method, $params),
    ]]);
    $value = xmlrpc_decode(file_get_contents($url, false, $ctx));
    if (is_array($value) && xmlrpc_is_fault($value)) {
        fwrite(STDERR, "fault {$value['faultCode']}: {$value['faultString']}\n"); exit(3);
    }
    return $value;
}
$sid = call($url, 'login', ['admin', getenv('CTD_PASSWORD')]);
$summary = call($url, 'summary', [$sid, ['orig_src' => '192.168.0.0/16'], 'mark', 'count', 10]);
$stats = call($url, 'stats', [$sid]);
$cursor = call($url, 'changes', [$sid, '', 0]);
$preview = call($url, 'kill_preview', [$sid, ['mark' => -1073741824, 'orig_port_src' => '1000-1099']]);
$killed = call($url, 'kill_matching', [$sid, $preview['token'], $preview['total']]);
echo json_encode(['summary' => $summary, 'stats_entries' => $stats['entries'], 'cursor' => $cursor['cursor'],
                  'preview_total' => $preview['total'], 'killed' => $killed['killed']]);
"""

PERL_INCIDENT = r"""
use strict; use warnings;
use RPC::XML; use RPC::XML::Client; use JSON::PP;
my ($url) = @ARGV;
my $c = RPC::XML::Client->new($url);
sub call {
    my $r = $c->simple_request(@_);
    die "request $_[0] failed: $RPC::XML::ERROR\n" unless defined $r;
    die "fault $r->{faultCode}: $r->{faultString}\n" if ref $r eq 'HASH' && exists $r->{faultCode};
    return $r;
}
my $sid = call('login', 'admin', $ENV{CTD_PASSWORD});
my $summary = call('summary', $sid, {orig_src => '192.168.0.0/16'}, 'orig_port_dst', 'count', 5);
my $preview = call('kill_preview', $sid, {host => '193.168.0.1', port => {min => 1100, max => 1199}});
my $killed = call('kill_matching', $sid, $preview->{token}, $preview->{total});
my $stats = call('stats', $sid);
print JSON::PP->new->allow_blessed->convert_blessed->encode(
    {summary => $summary, preview_total => $preview->{total}, killed => $killed->{killed},
     per_cpu => scalar @{$stats->{per_cpu}}});
"""


def test_php_andPerl_incidentProcedures_summaryStatsChangesAndKillByFilter(ctd, big_values):
    """The new procedures through PHP's and Perl's stacks: marks >= 2^31 sent as negative ints, a range as a
    string (PHP) and as a struct (Perl), and each kill by filter cross-checked with conntrack -L."""
    c = ctd()
    env = {**os.environ, "CTD_PASSWORD": c.password}
    by_mark = {}
    for k in big_values.values():
        by_mark.setdefault(k["mark"], []).append(k)
    p = subprocess.run(["php", "-r", PHP_INCIDENT, c.url], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, f"php failed: {p.stderr}{p.stdout[:500]}"
    out = json.loads(p.stdout)
    assert out["summary"]["total"]["count"] == 400
    # PHP reads <int> marks >= 2^31 as negative numbers: the group keys are the marks as unsigned text.
    assert {g["key"]: g["count"] for g in out["summary"]["groups"]} == {str(m): len(v) for m, v in by_mark.items()}
    assert out["stats_entries"] >= 400 and "." in out["cursor"]
    expected = [k for k in by_mark.get(0xC0000000, []) if 1000 <= k["sport"] <= 1099]
    assert out["preview_total"] == out["killed"] == len(expected)
    left = {k["id"] for k in conntrack_list()}
    assert not any(k["id"] in left for k in expected)

    p = subprocess.run(["perl", "-e", PERL_INCIDENT, c.url], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, f"perl failed: {p.stderr}{p.stdout[:500]}"
    out = json.loads(p.stdout)
    assert int(out["summary"]["total"]["count"]) == 400 - len(expected)
    in_range = [k for k in big_values.values() if 1100 <= k["sport"] <= 1199]
    assert int(out["preview_total"]) == int(out["killed"]) == len(in_range)
    assert int(out["per_cpu"]) >= 1
    assert len(conntrack_list("-s", "192.168.0.1")) == 400 - len(expected) - len(in_range)
