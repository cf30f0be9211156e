#!/usr/bin/env python3
"""Fails when a public declaration of a module has no doc comment.

Reads the symbol graph `swift symbolgraph-extract` wrote (the input DocC builds its pages from). Members the
compiler synthesizes (Hashable's hashValue and hash(into:) of enums) carry no source location and are skipped.
Usage: check_api_docs.py MODULE.symbols.json
"""
import json
import sys

graph = json.load(open(sys.argv[1]))
undocumented = []
for symbol in graph["symbols"]:
    if symbol.get("accessLevel") not in ("public", "open") or "location" not in symbol:
        continue
    comment = symbol.get("docComment", {}).get("lines", [])
    if not any(line.get("text", "").strip() for line in comment):
        loc = symbol["location"]
        where = loc["uri"].rsplit("/", 1)[-1] + ":" + str(loc["position"]["line"] + 1)
        undocumented.append(f"{where}: {symbol['kind']['displayName'].lower()} {'.'.join(symbol['pathComponents'])}")
module = graph["module"]["name"]
public = sum(1 for s in graph["symbols"] if s.get("accessLevel") in ("public", "open") and "location" in s)
if public == 0:
    print(f"{module}: the symbol graph lists no public declaration with a source location; is the module built?",
          file=sys.stderr)
    sys.exit(1)
if undocumented:
    print(f"{module}: {len(undocumented)} of {public} public declarations have no doc comment:", file=sys.stderr)
    for line in undocumented:
        print("  " + line, file=sys.stderr)
    sys.exit(1)
print(f"{module}: all {public} public declarations are documented")
