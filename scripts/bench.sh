#!/bin/sh
# `make bench`: performance figures against a real table in a private network namespace (bench/bench.py, then
# bench/distinct.py). nf_conntrack_max is global and read-only inside a namespace: it is raised here, outside,
# when the largest size needs it, and restored on exit.
set -eu
export CTD_BIN=${CTD_BIN:-.build/release}
export BENCH_SIZES="${BENCH_SIZES-10000 100000 250000}"
export BENCH_DISTINCT_SIZES="${BENCH_DISTINCT_SIZES-250000 1000000}"
largest=0
for n in $BENCH_SIZES $BENCH_DISTINCT_SIZES; do [ "$n" -gt "$largest" ] && largest=$n; done
old=$(sysctl -n net.netfilter.nf_conntrack_max)
need=$((largest + largest / 10 + 1000))
if [ "$need" -gt "$old" ]; then
    trap 'sysctl -qw net.netfilter.nf_conntrack_max="$old"' EXIT INT TERM
    sysctl -qw net.netfilter.nf_conntrack_max="$need"
fi
[ -n "$BENCH_SIZES" ] && unshare -n -- python3 bench/bench.py
[ -n "$BENCH_DISTINCT_SIZES" ] && unshare -n -- python3 bench/distinct.py
exit 0
