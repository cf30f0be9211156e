#!/bin/sh
# `make soak`: 100 concurrent clients, well-formed and hostile, for 60 s against a 250,000-entry table in a private
# network namespace (see bench/soak.py).
set -eu
export CTD_BIN=${CTD_BIN:-.build/release}
exec unshare -n -- python3 bench/soak.py
