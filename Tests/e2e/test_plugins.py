"""Plugins built out of tree and loaded with dlopen: Examples/ExampleHook vetoes kill and change for real, and the
loader refuses what is not a plugin (no entry symbol), a plugin of another ABI version, and a plugin in the wrong
role, naming the plugin and the problem; a refused authenticator fails closed."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ctdtest import (BIN_DIR, CTD, REPO, assert_fault, conntrack_list, ct_fill, ct_find, ct_insert, make_password_file,
                     view_all, wait_for)

EXAMPLE = REPO / "Examples" / "ExampleHook"
API_PACKAGE = REPO / "Sources" / "CtdPluginAPI"
ABI_VERSION = int(re.search(r"ctdPluginABIVersion: UInt32 = (\d+)",
                            (API_PACKAGE / "API" / "Plugin.swift").read_text()).group(1))

WRONG_ABI_MANIFEST = """\
// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "WrongABI",
    products: [
        .library(name: "WrongABI", type: .dynamic, targets: ["WrongABI"]),
        .library(name: "FailingRecorder", type: .dynamic, targets: ["FailingRecorder"]),
    ],
    dependencies: [.package(path: "{api}")],
    targets: [
        .target(name: "WrongABI", dependencies: [.product(name: "CtdPluginAPI", package: "CtdPluginAPI")]),
        .target(name: "FailingRecorder", dependencies: [.product(name: "CtdPluginAPI", package: "CtdPluginAPI")]),
    ]
)
"""

WRONG_ABI_SOURCE = """\
import CtdPluginAPI

public final class WrongABIHook: ActionHook {
    public let metadata = PluginMetadata(
        id: "hook.wrong_abi", name: "WrongABI", version: "0.0.1", abiVersion: 999, roles: [.actionHook],
        summary: "Claims an ABI version that no ctd has.")
    public let failureStopsAction = false
    public init() {}
    public func configure(_ configuration: PluginConfiguration, context: PluginContext) throws {}
    public func before(_ event: ActionEvent) throws -> (decision: HookDecision, token: Int64) { (.allow, 0) }
    public func after(_ event: ActionEvent, token: Int64, outcome: ActionOutcome) throws {}
}

@_cdecl("ctd_plugin_create")
public func ctdPluginCreate() -> UnsafeMutableRawPointer? { CtdPluginExport.export(WrongABIHook()) }
"""

# A hook that must record every action (failureStopsAction, like AuditSQLite) and fails on the second batch of
# more than one action it is asked about: the second part of a bulk kill (a disk that fills in the middle).
FAILING_RECORDER_SOURCE = """\
import CtdPluginAPI
import Synchronization

public final class FailingRecorder: ActionHook {
    public let metadata = PluginMetadata(
        id: "hook.failing_recorder", name: "FailingRecorder", version: "0.0.1", roles: [.actionHook],
        summary: "Records nothing and fails on its second batch (a test plugin).")
    public let failureStopsAction = true
    private let batches = Mutex(0)
    public init() {}
    public func configure(_ configuration: PluginConfiguration, context: PluginContext) throws {}
    public func before(_ event: ActionEvent) throws -> (decision: HookDecision, token: Int64) { (.allow, 1) }
    public func after(_ event: ActionEvent, token: Int64, outcome: ActionOutcome) throws {}
    public func before(batch events: [ActionEvent]) throws -> [(decision: HookDecision, token: Int64)] {
        if events.count > 1, batches.withLock({ n in n += 1; return n }) == 2 {
            throw PluginError("the disk is full")
        }
        return events.map { _ in (HookDecision.allow, 1) }
    }
}

@_cdecl("ctd_plugin_create")
public func ctdPluginCreate() -> UnsafeMutableRawPointer? { CtdPluginExport.export(FailingRecorder()) }
"""

NO_ENTRY_SOURCE = "int ctd_plugin_version_without_entry(void) { return 1; }\n"


@dataclass
class PluginDir:
    path: Path
    password_file: Path
    example_so: Path


def _swift_build(package: Path, scratch: Path) -> subprocess.Popen:
    return subprocess.Popen(["swift", "build", "--package-path", str(package), "--scratch-path", str(scratch)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)


def _finish(build: subprocess.Popen, what: str):
    out, _ = build.communicate(timeout=900)
    assert build.returncode == 0, f"building {what} failed:\n{out[-6000:]}"


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> PluginDir:
    """A plugin directory laid out like an installation's lib/ctd/plugins: AuthSHA, the out-of-tree ExampleHook,
    and three broken plugins. libCtdPluginAPI.so is not in it: the host has loaded it already."""
    base = tmp_path_factory.mktemp("plugins")
    variant = base / "WrongABI"
    (variant / "Sources" / "WrongABI").mkdir(parents=True)
    (variant / "Package.swift").write_text(WRONG_ABI_MANIFEST.replace("{api}", str(API_PACKAGE)))
    (variant / "Sources" / "WrongABI" / "WrongABI.swift").write_text(WRONG_ABI_SOURCE)
    (variant / "Sources" / "FailingRecorder").mkdir(parents=True)
    (variant / "Sources" / "FailingRecorder" / "FailingRecorder.swift").write_text(FAILING_RECORDER_SOURCE)
    # Both packages build at once (2 cores); the example keeps its own .build, never the repository's.
    example_build = _swift_build(EXAMPLE, EXAMPLE / ".build")
    variant_build = _swift_build(variant, variant / ".build")
    _finish(example_build, "Examples/ExampleHook")
    _finish(variant_build, "the WrongABI variant")

    d = base / "lib"
    d.mkdir()
    example_so = EXAMPLE / ".build" / "debug" / "libExampleHook.so"
    shutil.copy2(example_so, d / "libExampleHook.so")
    shutil.copy2(variant / ".build" / "debug" / "libWrongABI.so", d / "libWrongABI.so")
    shutil.copy2(variant / ".build" / "debug" / "libFailingRecorder.so", d / "libFailingRecorder.so")
    shutil.copy2(BIN_DIR / "libAuthSHA.so", d / "libAuthSHA.so")
    # An authenticator under another name, to be passed where a resolver or hook belongs.
    (d / "libAuthAlias.so").symlink_to(d / "libAuthSHA.so")
    c_source = base / "noentry.c"
    c_source.write_text(NO_ENTRY_SOURCE)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(d / "libNoEntry.so"), str(c_source)], check=True)

    password_file = base / "passwd"
    make_password_file(password_file, "admin", "pw-plugins")
    return PluginDir(path=d, password_file=password_file, example_so=example_so)


def _hook_ctd(ctd, plugin_dir: PluginDir, ports="[22]"):
    return ctd(args=["--plugin-dir", str(plugin_dir.path), "--plugin", "ExampleHook"],
               extra=f"\n[plugin.ExampleHook]\nprotected_ports = {ports}\n")


def _serve_refused(plugin_dir: PluginDir, *args: str) -> str:
    """Runs `ctd serve` with these plugin options; it must exit non-zero without ever listening. Returns its
    output (stdout + stderr)."""
    cmd = [str(CTD), "serve", "--listen", "127.0.0.1", "--port", "0", "--plugin-dir", str(plugin_dir.path),
           "--password-file", str(plugin_dir.password_file), *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{cmd} kept running: the plugin was not refused\n{e.stdout}\n{e.stderr}")
    out = p.stdout + p.stderr
    assert p.returncode != 0, f"{args} was accepted:\n{out}"
    assert "listening on" not in out, out
    return out


def _plugins_list(plugin_dir: PluginDir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CTD), "plugins", "list", "--plugin-dir", str(plugin_dir.path), "--password-file",
         str(plugin_dir.password_file), *args], capture_output=True, text=True, timeout=30)


# ---------------------------------------------------------------------------------------------------------------
# The out-of-tree example


def test_exampleHook_builtOutOfTree_sharesTheHostsAPILibrary(ctd, plugin_dir):
    dynamic = subprocess.run(["readelf", "-d", str(plugin_dir.example_so)], capture_output=True, text=True,
                             check=True).stdout
    assert "[libCtdPluginAPI.so]" in dynamic, "the example must link the API library, not embed a copy"
    runpath = re.search(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*)\]", dynamic)
    assert runpath and "$ORIGIN" in runpath.group(1).split(":"), dynamic
    # $ORIGIN is the plugin directory, which has no libCtdPluginAPI.so: the dynamic linker reuses the copy the
    # host loaded (same name), so there is one API image and `as? ActionHook` works across the dlopen.
    assert not (plugin_dir.path / "libCtdPluginAPI.so").exists()
    c = _hook_ctd(ctd, plugin_dir)
    maps = Path(f"/proc/{c.proc.pid}/maps").read_text().splitlines()
    api_images = {line.split()[-1] for line in maps if line.endswith("/libCtdPluginAPI.so")}
    assert api_images == {str((BIN_DIR / "libCtdPluginAPI.so").resolve())}, api_images
    assert any(line.endswith(str(plugin_dir.path / "libExampleHook.so")) for line in maps)
    rpc, sid = c.login()
    plugins = {p["id"]: p for p in rpc.status(sid)["plugins"]}
    assert plugins["hook.protect_ports"]["name"] == "ExampleHook"
    assert plugins["hook.protect_ports"]["roles"] == ["action_hook"]
    assert plugins["hook.protect_ports"]["health"] == "ok"


def test_exampleHook_killAndChangeOfProtectedPort_faultVetoedAndEntryStays(ctd, plugin_dir):
    ssh = ct_insert("tcp", "10.88.0.1", "10.88.0.2", 40022, 22, state="ESTABLISHED", mark=5, timeout=300)
    web = ct_insert("tcp", "10.88.0.1", "10.88.0.2", 40080, 80, state="ESTABLISHED", timeout=300)
    web2 = ct_insert("tcp", "10.88.0.1", "10.88.0.2", 40081, 80, state="ESTABLISHED", timeout=300)
    dns = ct_insert("udp", "10.88.0.1", "10.88.0.3", 5000, 53, timeout=300)
    c = _hook_ctd(ctd, plugin_dir, ports="[22, 2222]")
    rpc, sid = c.login()

    f = assert_fault(7, rpc.kill, sid, [str(ssh["id"])], contains="port 22")
    assert "ExampleHook" in f.faultString
    assert ct_find("tcp", "10.88.0.1", "10.88.0.2", 40022, 22) is not None, "a vetoed kill removed the entry"
    assert_fault(7, rpc.change, sid, "mark", str(ssh["id"]), 9, contains="port 22")
    assert ct_find("tcp", "10.88.0.1", "10.88.0.2", 40022, 22)["mark"] == 5, "a vetoed change changed the mark"

    result = rpc.kill(sid, [str(web["id"])])
    assert result["killed"] == 1 and result["killed_ids"] == [str(web["id"])]
    assert web["id"] not in {e["id"] for e in conntrack_list()}

    # One call for both: the unprotected entry goes, the protected one is reported as failed and stays.
    result = rpc.kill(sid, [str(ssh["id"]), str(web2["id"])])
    assert result["killed_ids"] == [str(web2["id"])]
    assert [x["id"] for x in result["failed"]] == [str(ssh["id"])]
    assert "port 22" in result["failed"][0]["reason"]
    assert {e["id"] for e in conntrack_list()} >= {ssh["id"]}
    assert web2["id"] not in {e["id"] for e in conntrack_list()}
    changed = rpc.change(sid, "mark", str(dns["id"]), 9)
    assert changed["mark"] == 9 and ct_find("udp", "10.88.0.1", "10.88.0.3", 5000, 53)["mark"] == 9


def test_bulkKill_recorderFailsOnTheSecondPart_firstPartKilledTheRestReportedAndKept(ctd, plugin_dir):
    # A kill of 2,000 ids is asked of the hooks in two parts (70 %, then the rest) so that the kernel deletes the
    # first while the second is recorded. The recorder fails on the second: the first part, recorded, is killed;
    # the rest is reported failed with the reason and stays in the kernel table and in `view`.
    ct_fill("create", 2000, "--base", "10.66.0.0", "--timeout", 600)
    c = ctd(args=["--plugin-dir", str(plugin_dir.path), "--plugin", "FailingRecorder"])
    rpc, sid = c.login()
    entries = wait_for(lambda: view_all(rpc, sid, {"orig_dst": "11.66.0.1"}), timeout=30,
                       done=lambda e: len(e) == 2000, what="the 2,000 entries in view")
    ids = [str(e["id"]) for e in entries]
    result = rpc.kill(sid, ids)
    assert result["killed"] == 1400, result["killed"]
    assert result["killed_ids"] == ids[:1400]
    assert [f["id"] for f in result["failed"]] == ids[1400:]
    assert all("FailingRecorder could not record the action" in f["reason"] for f in result["failed"])
    kernel = {str(e["id"]) for e in conntrack_list("-d", "11.66.0.1")}
    assert kernel == set(ids[1400:]), "the kernel table is not exactly the part that was not recorded"
    assert {str(e["id"]) for e in view_all(rpc, sid, {"orig_dst": "11.66.0.1"})} == kernel
    # A later kill of the rest is the recorder's third batch: it records, and the rest goes.
    assert rpc.kill(sid, ids[1400:])["killed"] == 600
    assert conntrack_list("-d", "11.66.0.1") == []


def test_exampleHook_badConfiguration_refusedNamingTheKey(plugin_dir, tmp_path):
    cfg = tmp_path / "ctd.toml"
    cfg.write_text(f'[plugin.AuthSHA]\npassword_file = "{plugin_dir.password_file}"\n\n'
                   "[plugin.ExampleHook]\nprotected_ports = [22, 70000]\n")
    out = _serve_refused(plugin_dir, "--config", str(cfg), "--plugin", "ExampleHook")
    assert "ExampleHook" in out and "'protected_ports'" in out, out


def test_pluginsList_withExampleHookAndItsSampleConfig_listsItsMetadataAndHealth(plugin_dir, tmp_path):
    cfg = tmp_path / "ctd.toml"
    cfg.write_text(f'[plugin.AuthSHA]\npassword_file = "{plugin_dir.password_file}"\n\n'
                   + (EXAMPLE / "examplehook.sample.toml").read_text())
    p = _plugins_list(plugin_dir, "--config", str(cfg), "--plugin", "ExampleHook")
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in p.stdout.splitlines() if "\t" in line}
    assert rows["ExampleHook"] == ["ExampleHook", "hook.protect_ports", "1.0.0", f"abi {ABI_VERSION}", "action_hook",
                                   "ok", str(plugin_dir.path / "libExampleHook.so")]
    assert rows["AuthSHA"][1] == "auth.sha" and rows["AuthSHA"][5] == "ok"


# ---------------------------------------------------------------------------------------------------------------
# What the loader refuses


def test_loader_sharedObjectWithoutEntrySymbol_refused(plugin_dir):
    out = _serve_refused(plugin_dir, "--plugin", "NoEntry")
    assert "plugin NoEntry" in out and "ctd_plugin_create" in out, out
    out = _serve_refused(plugin_dir, "--mod-auth", "NoEntry")
    assert "plugin NoEntry" in out and "ctd_plugin_create" in out, out


def test_loader_wrongABIVersion_refusedNamingBothVersions(plugin_dir):
    out = _serve_refused(plugin_dir, "--plugin", "WrongABI")
    assert "plugin WrongABI" in out, out
    assert "version 999" in out and f"version {ABI_VERSION}" in out, out
    listed = _plugins_list(plugin_dir, "--plugin", "WrongABI")
    assert listed.returncode != 0 and "version 999" in listed.stdout + listed.stderr


def test_loader_authenticatorAsPlugin_refused(plugin_dir):
    out = _serve_refused(plugin_dir, "--plugin", "AuthAlias")
    assert "plugin AuthAlias" in out and "authenticator" in out and "--mod-auth" in out, out


def test_loader_hookAsAuthenticator_failsClosed(plugin_dir):
    out = _serve_refused(plugin_dir, "--mod-auth", "ExampleHook")
    assert "plugin ExampleHook" in out and "authenticator" in out, out


def test_loader_missingPlugin_refusedNamingTheDirectory(plugin_dir):
    out = _serve_refused(plugin_dir, "--plugin", "NoSuchPlugin")
    assert "libNoSuchPlugin.so" in out and str(plugin_dir.path) in out, out
