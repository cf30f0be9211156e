"""End-to-end suite of ctd: the real kernel table of a private network namespace, the built daemon, real clients.

Run as root inside a fresh network namespace (`make e2e` does `unshare -n -- python3 -m pytest ... Tests/e2e`).
The suite fails, never skips, when that is not the case.
"""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

import ctdtest
from ctdtest import CTD, CTD_FILL, conntrack_flush, run, start_ctd

NFT_RULES = textwrap.dedent("""\
    table inet ctdtest {
        chain output {
            type filter hook output priority 0; policy accept;
            ct state new,established accept
        }
        chain input {
            type filter hook input priority 0; policy accept;
            ct state new,established accept
        }
    }
""")


@pytest.fixture(scope="session", autouse=True)
def private_netns():
    """Verifies root + a private network namespace, then prepares it: lo up, a ct rule, accounting on."""
    if os.geteuid() != 0:
        pytest.fail("the e2e suite must run as root (it changes the conntrack table); run `make e2e`", pytrace=False)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()
    names = [line.split(":")[1].strip().split("@")[0] for line in links if line.strip()]
    if names != ["lo"]:
        pytest.fail(
            "the e2e suite must run in a private network namespace with only `lo` (found links: "
            f"{', '.join(names)}); run it as `unshare -n -- python3 -m pytest Tests/e2e` (make e2e) so that it "
            "never touches this machine's conntrack table", pytrace=False)
    for path in (CTD, CTD_FILL):
        if not path.is_file():
            pytest.fail(f"{path} is missing: run `swift build` first (or set CTD_BIN)", pytrace=False)
    run(["ip", "link", "set", "lo", "up"])
    subprocess.run(["nft", "delete", "table", "inet", "ctdtest"], capture_output=True)
    run(["nft", "-f", "-"], input=NFT_RULES)
    run(["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"])
    assert open("/proc/sys/net/netfilter/nf_conntrack_acct").read().strip() == "1"
    yield


@pytest.fixture(autouse=True)
def flushed_table(private_netns):
    """Every test starts with an empty conntrack table."""
    conntrack_flush()
    yield


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class CtdFactory:
    """Starts ctd processes for one test (or module); stops them all by pid at the end and checks their exit."""

    def __init__(self, base_dir):
        self.base_dir = base_dir
        self.instances: list[ctdtest.Ctd] = []

    def __call__(self, **options) -> ctdtest.Ctd:
        d = self.base_dir / f"ctd{len(self.instances)}"
        c = start_ctd(d, **options)
        self.instances.append(c)
        return c

    def finish(self, failed: bool):
        problems = []
        for c in self.instances:
            rc = c.stop()
            if rc != 0:
                problems.append(f"ctd (pid {c.proc.pid}) exited with {rc} after SIGTERM, expected 0\n"
                                f"--- stderr ---\n{c.stderr()[-8000:]}")
            elif failed:
                print(f"--- stderr of ctd pid {c.proc.pid} ---\n{c.stderr()[-8000:]}")
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def ctd(request, tmp_path):
    """A factory: `ctd(**options)` starts a daemon (see ctdtest.start_ctd for the options) and returns a Ctd."""
    factory = CtdFactory(tmp_path)
    yield factory
    rep = getattr(request.node, "rep_call", None)
    factory.finish(failed=rep is not None and rep.failed)


@pytest.fixture(scope="module")
def module_ctd(request, tmp_path_factory, private_netns):
    """The same factory, shared by the tests of one module (for state that must outlive one test)."""
    factory = CtdFactory(tmp_path_factory.mktemp(request.module.__name__))
    yield factory
    factory.finish(failed=request.session.testsfailed > 0)
