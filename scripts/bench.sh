#!/bin/sh
# `make bench`: performance figures against a real table in a private network namespace (see bench/bench.py).
set -eu
export CTD_BIN=${CTD_BIN:-.build/release}
exec unshare -n -- python3 bench/bench.py
