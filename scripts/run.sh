#!/bin/sh
# `make run`: serve this machine's real conntrack table on 127.0.0.1 with AuthSHA and a first admin account.
# State lives in ./run (config, password file); the generated password is printed once, when the account is made.
set -eu
BIN=${CTD_BIN:-.build/debug}
DIR=${CTD_RUN_DIR:-run}
PORT=${CTD_PORT:-4040}
mkdir -p "$DIR"
chmod 700 "$DIR"
if [ "$(id -u)" != 0 ]; then
    echo "ctd needs root (CAP_NET_ADMIN) to read the conntrack table: run 'sudo make run'" >&2
    exit 1
fi
modprobe nf_conntrack 2>/dev/null || true
if [ ! -f "$DIR/passwd" ]; then
    PASSWORD=$(openssl rand -base64 18 | tr -d '/+=' | cut -c1-20)
    printf '%s\n' "$PASSWORD" | "$BIN/ctd" passwd add admin --file "$DIR/passwd" --stdin >/dev/null
    echo "================================================================"
    echo " First start: created user 'admin' with password: $PASSWORD"
    echo " (shown once; change it with: $BIN/ctd passwd add admin --file $DIR/passwd)"
    echo "================================================================"
fi
if [ ! -f "$DIR/ctd.toml" ]; then
    sed -e "s#^port = 4040#port = $PORT#" \
        -e "s#^password_file = .*#password_file = \"$(pwd)/$DIR/passwd\"#" ctd.sample.toml > "$DIR/ctd.toml"
fi
cat <<MSG
ctd serves http://127.0.0.1:$PORT/RPC2 (Ctrl-C stops it). From another terminal:
  python3 -c 'import xmlrpc.client as x; s=x.ServerProxy("http://127.0.0.1:$PORT/RPC2"); sid=s.login("admin", input("password: ")); print(s.view(sid, {}, "orig_port_dst", "ASC", 0, 20))'
Loopback connections and ctd's own clients are hidden by default ([conntrack] hide in $DIR/ctd.toml).
Nothing moving on an idle machine? 'make demo' runs ctd in a private namespace with live traffic.
MSG
exec "$BIN/ctd" serve --config "$DIR/ctd.toml" --plugin-dir "$BIN"
