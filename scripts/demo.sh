#!/bin/sh
# `make demo`: ctd in a private network namespace with live loopback traffic (connections opening, closing,
# marked), and a small terminal frontend polling `view` and `summary` that, every 10 s, changes a mark, kills a
# connection, or kills every connection to one port through kill_preview + kill_matching. Runs for DEMO_SECONDS (default 60), then cleans up.
set -eu
BIN=${CTD_BIN:-.build/debug}
if [ "${CTD_DEMO_INNER:-}" != 1 ]; then
    exec unshare -n env CTD_DEMO_INNER=1 CTD_BIN="$BIN" "$0" "$@"
fi
SECONDS_TOTAL=${DEMO_SECONDS:-60}
WORK=$(mktemp -d /tmp/ctd-demo.XXXXXX)
ip link set lo up
nft -f - <<NFT
table inet ctddemo {
    chain out {
        type filter hook output priority 0;
        # The marks first: an accept ends the chain, so rules after it never run.
        tcp dport 9001 ct mark set 1000
        tcp dport 9002 ct mark set 1001
        ct state new,established accept
    }
}
NFT
sysctl -qw net.netfilter.nf_conntrack_acct=1
PASSWORD=$(openssl rand -hex 12)
printf '%s\n' "$PASSWORD" | "$BIN/ctd" passwd add demo --file "$WORK/passwd" --stdin >/dev/null
# The demo account is an operator: the frontend also changes a mark, kills a connection and kills by filter.
cat > "$WORK/ctd.toml" <<TOML
[server]
listen = "127.0.0.1"
port = 4040
[conntrack]
hide = ["192.0.2.0/24"]
[plugins]
directory = "$BIN"
[plugin.AuthSHA]
password_file = "$WORK/passwd"
default_roles = ["operator"]
[log]
level = "warning"
TOML
"$BIN/ctd" serve --config "$WORK/ctd.toml" > "$WORK/ctd.out" 2> "$WORK/ctd.err" &
CTD=$!
python3 scripts/demo_traffic.py "$SECONDS_TOTAL" &
TRAFFIC=$!
cleanup() { kill "$TRAFFIC" "$CTD" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
sleep 1
CTD_DEMO_ACTIONS=1 CTD_PASSWORD="$PASSWORD" python3 scripts/watch.py http://127.0.0.1:4040/RPC2 demo "$SECONDS_TOTAL"
