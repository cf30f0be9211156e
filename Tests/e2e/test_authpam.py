"""AuthPAM end to end: the built ctd with `--mod-auth AuthPAM`, the real libpam running a pam_matrix stack from a
directory the test writes (`confdir`), Unix groups faked with nss_wrapper (LD_PRELOAD), real XML-RPC clients.

Nothing of the system's PAM or NSS configuration is touched. Needs the Debian packages libpam-wrapper and
libnss-wrapper (`make deps`).

The last tests run the stock pam_unix instead: ctd starts in a private mount namespace (`unshare -m`) where the
test's passwd, shadow and group files are bind-mounted over /etc/passwd, /etc/shadow and /etc/group, so pam_unix,
as root, reads real shadow entries (hashes made by `openssl passwd -6`) without a change to the host's files.
"""

from __future__ import annotations

import glob
import os
import secrets
import shlex
import signal
import subprocess
import threading
import time
import xmlrpc.client
from pathlib import Path

import pytest

from ctdtest import (BIN_DIR, CTD, LISTEN_RE, MAX_PAGE, Ctd, assert_fault, ct_find, ct_insert, fault_of, toml_str,
                     wait_for)


def _find_library(pattern: str, package: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/*/{pattern}") + glob.glob(f"/usr/lib/{pattern}"))
    if not found:
        pytest.fail(f"{pattern} not found: install the Debian package {package} (make deps)", pytrace=False)
    return found[0]


PAM_MATRIX = _find_library("pam_wrapper/pam_matrix.so", "libpam-wrapper")
NSS_WRAPPER = _find_library("libnss_wrapper.so", "libnss-wrapper")

# user -> (Unix groups besides the user's own, or None: not in NSS at all)
OPERATOR, VIEWER, ADMIN, NO_ROLE, REFUSED = "olivia", "victor", "ada", "nora", "rex"
PARALLEL_USERS = [f"load{i}" for i in range(8)]
GROUPS = {
    OPERATOR: ["ctd-operators"],
    VIEWER: ["ctd-viewers"],
    ADMIN: ["ctd-admins", "ctd-viewers"],
    NO_ROLE: [],
    REFUSED: ["ctd-operators"],
    **{u: ["ctd-viewers"] for u in PARALLEL_USERS},
}
PASSWORDS = {user: "pw-" + secrets.token_hex(8) for user in GROUPS}


def _write_fixture_files(d: Path, service: str) -> dict[str, str]:
    """pam_matrix's password database for `service`, the PAM services, and nss_wrapper's passwd and group files;
    returns the environment ctd needs."""
    d.mkdir(parents=True, exist_ok=True)
    passdb = d / "passdb"
    # pam_matrix: user:password:service. Its account step lets a user in only on the service of the user's line:
    # rex's line names another service, so pam_acct_mgmt refuses him after a correct password.
    passdb.write_text("".join(f"{u}:{pw}:{'elsewhere' if u == REFUSED else service}\n" for u, pw in PASSWORDS.items()))
    pamd = d / "pam.d"
    pamd.mkdir(exist_ok=True)
    matrix = [f"auth required {PAM_MATRIX} passdb={passdb}", f"account required {PAM_MATRIX} passdb={passdb}"]
    (pamd / "ctd").write_text("\n".join(matrix) + "\n")
    # Like pam_unix's 2 s after a wrong password, but shorter; Linux-PAM randomises it to 0.5-1.5x.
    (pamd / "ctd-slow").write_text("\n".join(["auth optional pam_faildelay.so delay=1000000", *matrix]) + "\n")

    users = list(GROUPS)
    passwd = ["root:x:0:0:root:/root:/bin/sh"]
    group = ["root:x:0:"]
    for i, u in enumerate(users):
        passwd.append(f"{u}:x:{2000 + i}:{2000 + i}:{u}:/nonexistent:/usr/sbin/nologin")
        group.append(f"{u}:x:{2000 + i}:")
    for gid, name in enumerate(["ctd-viewers", "ctd-operators", "ctd-admins"], start=3000):
        group.append(f"{name}:x:{gid}:{','.join(u for u in users if name in GROUPS[u])}")
    (d / "passwd").write_text("\n".join(passwd) + "\n")
    (d / "group").write_text("\n".join(group) + "\n")
    return {"LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_PASSWD": str(d / "passwd"), "NSS_WRAPPER_GROUP": str(d / "group")}


def _start(workdir: Path, *, service: str, worker_threads: int = 0, system_files: bool = False,
           plugins: tuple[str, ...] = (), extra_config: str = "", max_concurrent_logins: int = 16,
           service_user: list[str] | None = None) -> Ctd:
    """Starts `ctd serve --port 0 --mod-auth AuthPAM --config CFG --show-all` with nss_wrapper preloaded, or with
    `system_files`, in a mount namespace where the test's passwd/shadow/group files are the system's (pam_unix)."""
    if not (BIN_DIR / "libAuthPAM.so").is_file():
        pytest.fail(f"{BIN_DIR / 'libAuthPAM.so'} is missing: run `swift build` first (or set CTD_BIN)",
                    pytrace=False)
    if system_files:
        env, wrap = dict(os.environ), _write_unix_files(workdir, service)
        if service_user is not None:
            # As systemd's User=ctd with AmbientCapabilities=CAP_NET_ADMIN runs it: an unprivileged user keeping only
            # CAP_NET_ADMIN, its supplementary groups as given. /etc/shadow is root:shadow 0640, as on Debian.
            with open(workdir / "passwd", "a") as f:
                f.write("ctdsvc:x:3900:3900:ctd:/nonexistent:/usr/sbin/nologin\n")
            with open(workdir / "group", "a") as f:
                f.write("shadow:x:42:\nctdsvc:x:3900:\n")
            os.chown(workdir / "shadow", 0, 42)
            (workdir / "shadow").chmod(0o640)
            wrap = [*wrap, "setpriv", "--reuid=3900", "--regid=3900", *service_user, "--inh-caps=+net_admin",
                    "--ambient-caps=+net_admin", "--"]
    else:
        env, wrap = dict(os.environ, **_write_fixture_files(workdir, service)), []
    cfg = workdir / "ctd.toml"
    cfg.write_text(
        f'[server]\nlisten = "127.0.0.1"\nworker_threads = {worker_threads}\n\n'
        # These tests fail logins from 127.0.0.1 on purpose, many at once: the throttle is off here, and 16 logins
        # may be checked at once (the default of 4 refuses the rest with fault 11: tested below).
        '[sessions]\nlogin_failure_limit = 0\nlogin_failure_limit_per_source = 0\nlogin_failure_limit_per_user = 0\n'
        f'max_concurrent_logins = {max_concurrent_logins}\n\n'
        '[log]\nlevel = "info"\n\n'
        "[plugin.AuthPAM]\n"
        f"service = {toml_str(service)}\n"
        f"confdir = {toml_str(str(workdir / 'pam.d'))}\n"
        'viewer_groups = ["ctd-viewers"]\n'
        'operator_groups = ["ctd-operators"]\n'
        'admin_groups = ["ctd-admins"]\n' + extra_config)
    out_path, err_path = workdir / "ctd.stdout", workdir / "ctd.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [*wrap, str(CTD), "serve", "--port", "0", "--mod-auth", "AuthPAM", "--config", str(cfg), "--show-all",
             *[arg for p in plugins for arg in ("--plugin", p)]],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 30
    while True:
        m = LISTEN_RE.search(out_path.read_text(errors="replace"))
        if m:
            break
        if proc.poll() is not None:
            raise AssertionError(f"ctd exited with {proc.returncode} before listening\n--- stderr ---\n"
                                 f"{err_path.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"ctd did not listen within 30 s\n--- stderr ---\n{err_path.read_text()}")
        time.sleep(0.02)
    return Ctd(proc=proc, port=int(m.group(2)), scheme="http", workdir=workdir, config_path=cfg,
               password_file=workdir / "passdb", password="", stderr_path=err_path)


# pam_unix users: (shadow fields after the hash: lastchg, min, max, warn, inactive, expire), Unix groups, password.
# Days are since 1970-01-01: lastchg 0 means "must change the password now"; expire 1 is 1970-01-02.
UNIX_USERS = {
    "uma": {"hash_prefix": "", "fields": "19000:0:99999:7::", "groups": ["ctd-operators"]},
    "ulla": {"hash_prefix": "!", "fields": "19000:0:99999:7::", "groups": ["ctd-operators"]},  # locked
    "uwe": {"hash_prefix": "", "fields": "19000:0:99999:7::1", "groups": ["ctd-operators"]},  # account expired
    "udo": {"hash_prefix": "", "fields": "0:0:99999:7::", "groups": ["ctd-operators"]},  # must change password
}
UNIX_PASSWORDS = {u: "pw-" + secrets.token_hex(8) for u in UNIX_USERS}


def _write_unix_files(d: Path, service: str) -> list[str]:
    """passwd, shadow and group for pam_unix and a PAM service using it; returns the command prefix that runs ctd
    with those files bind-mounted over the system's in a new mount namespace."""
    d.mkdir(parents=True, exist_ok=True)
    passwd = ["root:x:0:0:root:/root:/bin/sh"]
    shadow = ["root:*:19000:0:99999:7:::"]
    group = ["root:x:0:"]
    for i, (user, spec) in enumerate(UNIX_USERS.items()):
        digest = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=UNIX_PASSWORDS[user] + "\n",
                                capture_output=True, text=True, check=True).stdout.strip()
        passwd.append(f"{user}:x:{3000 + i}:{3000 + i}:{user}:/nonexistent:/usr/sbin/nologin")
        shadow.append(f"{user}:{spec['hash_prefix']}{digest}:{spec['fields']}:")
        group.append(f"{user}:x:{3000 + i}:")
    for gid, name in enumerate(["ctd-viewers", "ctd-operators", "ctd-admins"], start=4000):
        group.append(f"{name}:x:{gid}:{','.join(u for u, spec in UNIX_USERS.items() if name in spec['groups'])}")
    for name, lines, mode in (("passwd", passwd, 0o644), ("shadow", shadow, 0o600), ("group", group, 0o644)):
        (d / name).write_text("\n".join(lines) + "\n")
        (d / name).chmod(mode)
    pamd = d / "pam.d"
    pamd.mkdir(exist_ok=True)
    # nodelay: pam_unix's 2 s after a failure would only slow the test; the delay has its own test above.
    (pamd / service).write_text("auth required pam_unix.so nodelay\naccount required pam_unix.so\n")
    binds = " && ".join(f"mount --bind {shlex.quote(str(d / name))} /etc/{name}" for name in ("passwd", "shadow", "group"))
    return ["unshare", "-m", "--", "sh", "-c", f'{binds} && exec "$0" "$@"']


def _stop(c: Ctd, request):
    rc = c.stop()
    failed = request.session.testsfailed > 0
    if rc != 0 or failed:
        print(f"--- stderr of ctd pid {c.proc.pid} ---\n{c.stderr()[-8000:]}")
    assert rc == 0, f"ctd (pid {c.proc.pid}) exited with {rc} after SIGTERM, expected 0"


@pytest.fixture(scope="module")
def pam_ctd(request, tmp_path_factory, private_netns):
    """One daemon on PAM service `ctd` (pam_matrix, fast), shared by the module's tests."""
    c = _start(tmp_path_factory.mktemp("authpam"), service="ctd")
    yield c
    _stop(c, request)


def _login(c: Ctd, user: str, password: str | None = None):
    return c.login(user, PASSWORDS[user] if password is None else password)


def test_login_asOperatorGroupMember_canViewAndKill(pam_ctd):
    entry = ct_insert("udp", "10.77.0.1", "10.77.0.2", 4000, 53, timeout=120)
    rpc, sid = _login(pam_ctd, OPERATOR)
    wait_for(lambda: str(entry["id"]) in {c["id"] for c in rpc.view(sid, {}, "", "ASC", 0, MAX_PAGE)["connections"]},
             what="the entry in view")
    assert rpc.kill(sid, [str(entry["id"])])["killed_ids"] == [str(entry["id"])]
    assert ct_find("udp", "10.77.0.1", "10.77.0.2", 4000, 53) is None


def test_login_asViewerGroupMember_canViewButKillIsFault3(pam_ctd):
    entry = ct_insert("udp", "10.77.0.1", "10.77.0.2", 4001, 53, timeout=120)
    rpc, sid = _login(pam_ctd, VIEWER)
    wait_for(lambda: rpc.view(sid, {}, "", "ASC", 0, MAX_PAGE)["total"] >= 1, what="the entry in view")
    assert_fault(3, rpc.kill, sid, [str(entry["id"])])
    assert ct_find("udp", "10.77.0.1", "10.77.0.2", 4001, 53) is not None


def test_login_asAdminGroupMember_getsTheHighestRole(pam_ctd):
    entry = ct_insert("udp", "10.77.0.1", "10.77.0.2", 4002, 53, timeout=120)
    rpc, sid = _login(pam_ctd, ADMIN)
    assert rpc.kill(sid, [str(entry["id"])])["killed_ids"] == [str(entry["id"])]
    wait_for(lambda: "login ada (admin)" in pam_ctd.stderr(), what="the admin login in the log")


def test_login_failures_allGiveTheSameFault1(pam_ctd):
    rpc = pam_ctd.proxy()
    faults = {
        "wrong password": fault_of(rpc.login, VIEWER, PASSWORDS[VIEWER] + "x"),
        "unknown user": fault_of(rpc.login, "nosuchuser", PASSWORDS[VIEWER]),
        "account refused": fault_of(rpc.login, REFUSED, PASSWORDS[REFUSED]),
        "no role granted": fault_of(rpc.login, NO_ROLE, PASSWORDS[NO_ROLE]),
        "empty password": fault_of(rpc.login, VIEWER, ""),
    }
    for why, f in faults.items():
        assert f.faultCode == 1, f"{why}: fault {f.faultCode} {f.faultString}"
    assert len({f.faultString for f in faults.values()}) == 1, "the client must not learn why a login failed"
    log = wait_for(pam_ctd.stderr, done=lambda s: "no role granted" in s, what="the failures in the log")
    assert "account refused (pam_acct_mgmt: Permission denied)" in log
    assert "wrong password or unknown user" in log


def test_login_withBadArguments_isRefusedWithoutReachingPAM(pam_ctd):
    rpc = pam_ctd.proxy()
    assert_fault(1, rpc.login, "", "x")
    assert_fault(1, rpc.login, "a" * 257, "x")
    assert_fault(1, rpc.login, "bad\nname", "x")
    assert_fault(-32602, rpc.login, VIEWER)


def test_status_showsAuthPAMHealthy(pam_ctd):
    rpc, sid = _login(pam_ctd, VIEWER)
    plugins = {p["id"]: p for p in rpc.status(sid)["plugins"]}
    assert plugins["auth.pam"]["name"] == "AuthPAM"
    assert plugins["auth.pam"]["health"] == "ok"


def test_parallelLogins_whileOtherClientsAreServed(pam_ctd):
    """8 threads log in and fail to log in as fast as they can; a logged-in client keeps getting its views."""
    viewer, sid = _login(pam_ctd, VIEWER)
    stop = threading.Event()
    errors: list[str] = []
    counts = [0] * len(PARALLEL_USERS)

    def hammer(i: int, user: str):
        rpc = pam_ctd.proxy()
        try:
            while not stop.is_set():
                s = rpc.login(user, PASSWORDS[user])
                assert isinstance(s, str) and len(s) >= 16
                rpc.logout(s)
                f = fault_of(rpc.login, user, PASSWORDS[PARALLEL_USERS[(i + 1) % len(PARALLEL_USERS)]])
                assert f.faultCode == 1, f"fault {f.faultCode} {f.faultString}"
                counts[i] += 2
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{user}: {e!r}")

    threads = [threading.Thread(target=hammer, args=(i, u)) for i, u in enumerate(PARALLEL_USERS)]
    for t in threads:
        t.start()
    latencies = []
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            assert viewer.view(sid, {}, "", "ASC", 0, 10)["start"] == 0
            latencies.append(time.monotonic() - t0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert all(n > 0 for n in counts), f"some login threads never finished a round: {counts}"
    assert len(latencies) >= 10 and max(latencies) < 2.0, \
        f"{len(latencies)} views, slowest {max(latencies):.3f} s, while {sum(counts)} logins ran"


def test_slowFailedLogins_runInParallel_andOtherClientsAreServed(request, tmp_path):
    """Service ctd-slow adds pam_faildelay (1 s, randomised 0.5-1.5 s) to every failed login, as pam_unix does:
    8 of them at once must take about one delay, not eight, and must not stall a logged-in client.

    The daemon gets 16 worker threads: with the default (one per core, at least 2) two sleeping logins would
    occupy every worker and stall all other clients, which is the host's concern, not the plugin's."""
    c = _start(tmp_path / "slow", service="ctd-slow", worker_threads=16)
    try:
        viewer, sid = _login(c, VIEWER)  # a good password is not delayed
        results: list = [None] * 8
        view_latencies: list[float] = []

        def fail(i: int):
            t0 = time.monotonic()
            f = fault_of(c.proxy().login, PARALLEL_USERS[i], "wrong")
            results[i] = (f.faultCode, time.monotonic() - t0)

        threads = [threading.Thread(target=fail, args=(i,)) for i in range(8)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.2)
        while any(t.is_alive() for t in threads):
            v0 = time.monotonic()
            viewer.view(sid, {}, "", "ASC", 0, 10)
            view_latencies.append(time.monotonic() - v0)
            time.sleep(0.05)
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        assert [code for code, _ in results] == [1] * 8
        assert min(d for _, d in results) >= 0.4, f"the fail delay did not apply: {results}"
        # Serialised, 8 logins would take at least 8 x 0.5 s.
        assert elapsed < 3.0, f"8 parallel failed logins took {elapsed:.2f} s: {results}"
        assert view_latencies and max(view_latencies) < 0.5, f"views during the slow logins: {view_latencies}"
    finally:
        _stop(c, request)


def test_slowFailedLogins_beyondMaxConcurrentLogins_areRefusedAtOnce_andViewsFlow(request, tmp_path):
    """pam_faildelay holds each failed login about a second: with max_concurrent_logins = 2, of 8 wrong logins at
    once the ones that find no room get fault 11 without waiting, and a logged-in client keeps getting views while
    the two admitted ones sleep."""
    c = _start(tmp_path / "capped", service="ctd-slow", worker_threads=16, max_concurrent_logins=2)
    try:
        viewer, sid = _login(c, VIEWER)
        codes: list = [None] * 8
        started = threading.Barrier(9)

        def fail(i: int):
            started.wait()
            codes[i] = fault_of(c.proxy().login, PARALLEL_USERS[i], "wrong").faultCode

        threads = [threading.Thread(target=fail, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        started.wait()
        views_while_logins_ran = 0
        while any(t.is_alive() for t in threads):
            assert viewer.view(sid, {}, "", "ASC", 0, 10)["start"] == 0
            if any(t.is_alive() for t in threads):
                views_while_logins_ran += 1
        for t in threads:
            t.join()
        assert set(codes) <= {1, 11} and codes.count(11) >= 1, codes
        assert codes.count(1) >= 2, codes
        assert views_while_logins_ran >= 1
        assert "logins in progress" in c.stderr()
    finally:
        _stop(c, request)


def test_daemonLog_neverContainsPasswords(pam_ctd):
    _login(pam_ctd, OPERATOR)
    fault_of(pam_ctd.proxy().login, OPERATOR, PASSWORDS[VIEWER])
    log = wait_for(pam_ctd.stderr, done=lambda s: "login olivia (operator)" in s, what="olivia's login in the log")
    for user, password in PASSWORDS.items():
        assert password not in log, f"{user}'s password is in the daemon log"


def test_pamUnix_asTheServiceUser_readsShadowOnlyWithSupplementaryGroupShadow(request, private_netns):
    """The unit runs ctd as User=ctd; pam_unix then reads /etc/shadow (root:shadow 0640) only when the unit adds
    SupplementaryGroups=shadow (docs/packaging.md). Without the group no login can be checked (fault -32603, PAM's
    "cannot retrieve authentication info" in the log); with it, the login works."""
    import shutil
    import tempfile
    for groups, works in ((["--clear-groups"], False), (["--groups=42"], True)):
        # A directory the service user can read (pytest's own tmp directories are root's, mode 0700).
        d = Path(tempfile.mkdtemp(prefix="ctd-shadow-"))
        d.chmod(0o755)
        try:
            c = _start(d, service="ctd-unix", system_files=True, service_user=groups)
            try:
                status = Path(f"/proc/{c.proc.pid}/status").read_text()
                assert "\nUid:\t3900\t3900\t3900\t3900\n" in status, status
                assert any(l.startswith("Groups:") and ("42" in l.split()) == works for l in status.splitlines())
                rpc = c.proxy()
                if works:
                    sid = rpc.login("uma", UNIX_PASSWORDS["uma"])
                    assert rpc.view(sid, {}, "", "ASC", 0, 1)["total"] >= 0
                else:
                    with pytest.raises(xmlrpc.client.Fault) as fault:
                        rpc.login("uma", UNIX_PASSWORDS["uma"])
                    # Not the client's fault: an internal error to the client, PAM's reason in the log.
                    assert fault.value.faultCode == -32603
                    wait_for(lambda: "cannot retrieve authentication info" in c.stderr(),
                             what="pam_unix's reason in the log")
            finally:
                _stop(c, request)
        finally:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def unix_ctd(request, tmp_path_factory, private_netns):
    """One daemon on PAM service `ctd-unix` (stock pam_unix on the test's shadow file)."""
    c = _start(tmp_path_factory.mktemp("authpam-unix"), service="ctd-unix", system_files=True)
    yield c
    _stop(c, request)


def test_pamUnix_goodPassword_logsInWithTheRoleOfItsEtcGroup(unix_ctd):
    entry = ct_insert("udp", "10.77.1.1", "10.77.1.2", 4100, 53, timeout=120)
    rpc, sid = unix_ctd.login("uma", UNIX_PASSWORDS["uma"])
    assert rpc.kill(sid, [str(entry["id"])])["killed_ids"] == [str(entry["id"])]
    assert ct_find("udp", "10.77.1.1", "10.77.1.2", 4100, 53) is None
    wait_for(lambda: "login uma (operator)" in unix_ctd.stderr(), what="uma's login in the log")


def test_pamUnix_refusals_areFault1WithPAMsReasonInTheLogOnly(unix_ctd):
    rpc = unix_ctd.proxy()
    faults = {
        "wrong password": fault_of(rpc.login, "uma", UNIX_PASSWORDS["uma"] + "x"),
        "unknown user": fault_of(rpc.login, "nobody-here", "x"),
        "locked account": fault_of(rpc.login, "ulla", UNIX_PASSWORDS["ulla"]),
        "expired account": fault_of(rpc.login, "uwe", UNIX_PASSWORDS["uwe"]),
        "password must change": fault_of(rpc.login, "udo", UNIX_PASSWORDS["udo"]),
    }
    for why, f in faults.items():
        assert f.faultCode == 1, f"{why}: fault {f.faultCode} {f.faultString}"
    assert len({f.faultString for f in faults.values()}) == 1, "the client must not learn why a login failed"
    log = wait_for(unix_ctd.stderr, done=lambda s: "login failed for udo" in s, what="udo's refusal in the log")
    assert "login failed for ulla from 127.0.0.1: wrong password or unknown user" in log
    # pam_unix's account step: an expired account, a password that must be changed first.
    assert "login failed for uwe from 127.0.0.1: account refused (pam_acct_mgmt:" in log
    assert "login failed for udo from 127.0.0.1: account refused (pam_acct_mgmt:" in log
    for user, password in UNIX_PASSWORDS.items():
        assert password not in log, f"{user}'s password is in the daemon log"


def test_pamUnix_hostFilesAreUntouched(unix_ctd):
    """The bind mounts live in ctd's mount namespace only."""
    assert "uma:" not in Path("/etc/passwd").read_text()


def test_issueDoneCriterion_unixLoginSeesUserNamesKillsAndFindsTheKillInTheAuditTrail(request, tmp_path):
    """`ctd serve --mod-auth AuthPAM --plugin UIDResolver --plugin AuditSQLite`: a Unix account logs in from Python
    (pam_unix on the test's shadow file), sees user names on connections whose mark carries a uid (NSS on the test's
    passwd file), kills one, and `ctd audit list` shows that kill."""
    db = tmp_path / "audit" / "audit.db"
    c = _start(tmp_path / "done", service="ctd-unix", system_files=True, plugins=("UIDResolver", "AuditSQLite"),
               extra_config=f"\n[plugin.UIDResolver]\nmask = 0xFFFF\n\n[plugin.AuditSQLite]\ndatabase = {toml_str(str(db))}\n")
    try:
        uma_uid = 3000 + list(UNIX_USERS).index("uma")
        mine = ct_insert("tcp", "10.78.0.1", "10.78.0.2", 40000, 443, timeout=300, mark=(7 << 16) | uma_uid,
                         state="ESTABLISHED")
        other = ct_insert("tcp", "10.78.0.1", "10.78.0.2", 40001, 443, timeout=300, mark=4242, state="ESTABLISHED")
        rpc, sid = c.login("uma", UNIX_PASSWORDS["uma"])
        page = wait_for(lambda: rpc.view(sid, {"orig_dst": "10.78.0.2"}, "orig_port_src", "ASC", 0, 10),
                        done=lambda v: v["total"] == 2, what="both entries in view")
        rows = {r["id"]: r for r in page["connections"]}
        assert (rows[str(mine["id"])]["uid"], rows[str(mine["id"])]["username"]) == (uma_uid, "uma")
        assert (rows[str(other["id"])]["uid"], rows[str(other["id"])]["username"]) == (4242, "")
        assert [r["id"] for r in rpc.view(sid, {"username": "uma"}, "", "ASC", 0, 10)["connections"]] == [str(mine["id"])]

        assert rpc.kill(sid, [str(mine["id"])])["killed_ids"] == [str(mine["id"])]
        assert ct_find("tcp", "10.78.0.1", "10.78.0.2", 40000, 443) is None
        assert ct_find("tcp", "10.78.0.1", "10.78.0.2", 40001, 443) is not None

        listed = subprocess.run([str(CTD), "audit", "list", "--db", str(db), "--action", "kill"],
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert f"id {mine['id']} tcp 10.78.0.1:40000 > 10.78.0.2:443" in listed.stdout, listed.stdout
        assert "uma" in listed.stdout and "succeeded" in listed.stdout
    finally:
        _stop(c, request)

