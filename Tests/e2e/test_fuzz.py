"""Random calls for a few seconds: every answer is a fault or a value, never a crash, a hang or internals, and a
table of entries with random-looking ids loses nothing to random ids."""
from __future__ import annotations

import random
import re
import time
import xmlrpc.client

from ctdtest import CTD_FILL, conntrack_count, run

METHODS = ["view", "kill", "change", "refresh", "set_autorefresh", "status", "system.multicall",
           "system.methodHelp", "system.methodSignature", "audit_list", "no.such.method"]
KEYS = ["mark", "id", "orig_src", "x", "state", "status", "timeout", "l3proto", "orig_port_dst", "zone"]
WORDS = ["mark", "timeout", "ASC", "DESC", "orig_src", "10.0.0.0/8", "::1", "tcp", "", "byte_rate"]


def random_value(rng: random.Random, sid: str, depth: int = 0):
    kind = rng.randrange(10 if depth < 3 else 6)
    if kind == 0:
        return rng.randint(-2**31, 2**31 - 1)
    if kind == 1:
        return rng.randint(-5, 5)
    if kind == 2:
        return "".join(chr(rng.randrange(32, 0x2fff)) for _ in range(rng.randrange(8)))
    if kind == 3:
        return rng.random() * 1e10
    if kind == 4:
        return rng.choice([True, False])
    if kind == 5:
        return None
    if kind == 6:
        return [random_value(rng, sid, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {rng.choice(KEYS): random_value(rng, sid, depth + 1) for _ in range(rng.randrange(3))}
    if kind == 8:
        return sid
    return rng.choice(WORDS)


def test_fuzz_whenRandomCallsAndCorruptedBodies_answersEveryOneAndKillsNothing(ctd):
    run([str(CTD_FILL), "create", "500"], timeout=60)
    before = conntrack_count()
    c = ctd()
    _, sid = c.login()
    rng = random.Random(20261125)
    outcomes: dict = {}
    deadline = time.monotonic() + 8
    calls = 0
    while time.monotonic() < deadline:
        method = rng.choice(METHODS)
        args = [sid] + [random_value(rng, sid) for _ in range(rng.randrange(6))]
        body = xmlrpc.client.dumps(tuple(args), method, allow_none=True).encode()
        if rng.random() < 0.1:  # corrupt a few bytes
            b = bytearray(body)
            for _ in range(3):
                b[rng.randrange(len(b))] = rng.randrange(256)
            body = bytes(b)
        status, answer = c.post(body)
        assert status == 200
        assert answer.startswith(b"<?xml") and b"</methodResponse>" in answer, answer[:200]
        assert b"Swift" not in answer and b"Fatal" not in answer and b".swift" not in answer, answer[:300]
        code = re.search(rb"<name>faultCode</name><value><int>(-?\d+)", answer)
        key = int(code.group(1)) if code else "value"
        outcomes[key] = outcomes.get(key, 0) + 1
        calls += 1
        assert c.proc.poll() is None, f"ctd died after {calls} calls"
    assert calls > 200, outcomes
    assert set(outcomes) - {"value"} <= {-32700, -32600, -32601, -32602, 2, 3, 4, 5, 8, 9}, outcomes
    # Random ids never matched one of the 500 random kernel ids closely enough to kill it.
    assert conntrack_count() >= before
    rpc, sid = c.login()
    assert rpc.view(sid, {"orig_dst": "11.0.0.1"}, "", "ASC", 0, 0)["total"] == 500
