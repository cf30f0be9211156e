#!/bin/sh
# `make package-test`: the .deb installed with apt into a fresh debootstrap'ed Debian 12 root (no Swift toolchain),
# its ctd run from that root in a private network namespace against real conntrack entries, then purged.
# See docs/packaging.md. Needs root and Debian's registry (debootstrap, apt-get).
set -eu
DEB=${CTD_DEB:-.build-deb/ctd.deb}
WORK=$(pwd)/.build-pkgtest
ROOT=$WORK/root
NS=ctdpkg$$
CTD=
T0=$(date +%s)
cleanup() {
    [ -n "$CTD" ] && kill "$CTD" 2>/dev/null && wait "$CTD" 2>/dev/null || true
    for m in "$ROOT/dev" "$ROOT/proc"; do mountpoint -q "$m" && umount -l "$m" || true; done
    ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, chroot, ip netns)"
[ -f "$DEB" ] || fail "no package at $DEB (make deb)"
rm -rf "$ROOT" && mkdir -p "$WORK"
debootstrap --variant=minbase bookworm "$ROOT" http://deb.debian.org/debian > "$WORK/debootstrap.log" 2>&1 \
    || fail "debootstrap (see $WORK/debootstrap.log)"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
# Depends first (they stay after the purge; Recommends are not installed, so every new file is ctd's), then a snapshot of the root's files, then ctd.
DEPS=$(dpkg-deb -f "$DEB" Depends | sed 's/([^)]*)//g; s/,/ /g')
in_root apt-get update -qq >/dev/null
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends man-db $DEPS > "$WORK/apt.log" 2>&1 \
    || fail "apt-get install of the Depends (see $WORK/apt.log)"
snapshot() { (cd "$ROOT" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./var/lib/dpkg -o -path ./var/log \
    -o -path ./var/cache -o -path ./var/lib/apt -o -path ./tmp -o -path ./var/lib/man-db -o -path ./etc/ld.so.cache \) -prune \
    -o -print | grep -v -x -e './etc/passwd-' -e './etc/group-' -e './etc/shadow-' -e './etc/gshadow-' | sort); }
snapshot > "$WORK/before.txt"
cp "$DEB" "$ROOT/tmp/ctd.deb"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends /tmp/ctd.deb > "$WORK/install.log" 2>&1 \
    || fail "apt-get install ctd.deb (see $WORK/install.log)"
grep -q "no account yet" "$WORK/install.log" || fail "postinst did not tell how to create the first admin"
# No toolchain: the runtime comes from /usr/lib/ctd only.
[ ! -e "$ROOT/opt/swift" ] || fail "a Swift toolchain is in the root"
n=$(cd "$ROOT" && find . -xdev -name 'libswiftCore.so*' -not -path './usr/lib/ctd/*' | wc -l)
[ "$n" = 0 ] || fail "libswiftCore outside /usr/lib/ctd"
in_root ldd /usr/bin/ctd | grep -q 'not found' && fail "unresolved libraries: $(in_root ldd /usr/bin/ctd | grep 'not found')"
in_root ldd /usr/bin/ctd | grep -q '/usr/lib/ctd/libswiftCore.so' || fail "ctd does not load /usr/lib/ctd/libswiftCore.so"
getent_user=$(in_root getent passwd ctd) || fail "no ctd user"
[ "$(in_root stat -c '%U %a' /var/lib/ctd)" = "ctd 750" ] || fail "/var/lib/ctd not ctd 0750"
[ "$(in_root stat -c '%U %a' /etc/ctd/passwd)" = "ctd 600" ] || fail "/etc/ctd/passwd not ctd 0600"
V=$(in_root ctd --version) || fail "ctd --version"
[ "$V" = "$(dpkg-deb -f "$DEB" Version)" ] || fail "ctd --version says $V"
in_root man ctd 2>/dev/null | grep -q "ConnTrack Daemon" || fail "man ctd does not render"
in_root man 5 ctd.toml 2>/dev/null | grep -q "max_connections" || fail "man 5 ctd.toml does not render"
in_root man 7 ctd-xmlrpc 2>/dev/null | grep -q "kill_matching" || fail "man 7 ctd-xmlrpc does not render"
[ -s "$ROOT/usr/share/bash-completion/completions/ctd" ] && [ -s "$ROOT/usr/share/zsh/vendor-completions/_ctd" ] \
    || fail "completions missing"
# The first admin, password through stdin; the installed config works at once.
PW=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$PW" | in_root ctd passwd add admin --file /etc/ctd/passwd --stdin >/dev/null || fail "ctd passwd add"
in_root ctd plugins list > "$WORK/plugins.txt" 2>&1 || fail "ctd plugins list: $(cat "$WORK/plugins.txt")"
grep -q AuthSHA "$WORK/plugins.txt" || fail "AuthSHA not listed"
# A private namespace with real entries; ctd from the root, under PR_SET_MDWE (what MemoryDenyWriteExecute= does).
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
for i in 1 2 3; do
    ip netns exec "$NS" conntrack -I -p tcp -s 192.0.2.$i -d 198.51.100.7 --sport 4000$i --dport 443 \
        --state ESTABLISHED -u ASSURED -t 600 >/dev/null 2>&1 || fail "conntrack -I"
done
ip netns exec "$NS" python3 scripts/mdwe_exec.py chroot "$ROOT" /usr/bin/ctd serve --config /etc/ctd/ctd.toml \
    --plugin AuditSQLite > "$WORK/ctd.log" 2>&1 &
CTD=$!
ip netns exec "$NS" env CTD_PASSWORD="$PW" CTD_PID="$CTD" python3 scripts/package_client.py "$WORK/ctd.log" \
    || fail "client checks (log: $(tail -5 "$WORK/ctd.log"))"
kill "$CTD"; wait "$CTD" 2>/dev/null || true; CTD=
ip netns del "$NS"
grep -q "/usr/lib/ctd/plugins" "$WORK/ctd.log" "$WORK/plugins.txt" || fail "plugins not loaded from /usr/lib/ctd/plugins"
# Purge leaves nothing of ctd behind.
in_root dpkg --purge ctd > "$WORK/purge.log" 2>&1 || fail "dpkg --purge ctd"
snapshot > "$WORK/after.txt"
if ! diff -u "$WORK/before.txt" "$WORK/after.txt" > "$WORK/purge.diff"; then
    fail "files left after purge: $(grep '^[-+]\./' "$WORK/purge.diff" | head -20)"
fi
in_root getent passwd ctd >/dev/null && fail "user ctd left after purge"
# The unit: systemd-analyze (systemd is not PID 1 here; offline checks of the file as installed).
S=$(systemd-analyze security --offline=yes "$(pwd)/.build-deb/stage/lib/systemd/system/ctd.service" 2>&1 \
    | sed -n 's/.*Overall exposure level for ctd.service: \([0-9.]*\).*/\1/p')
[ -n "$S" ] || fail "systemd-analyze security gave no score"
awk -v s="$S" 'BEGIN { exit !(s <= 2.5) }' || fail "systemd-analyze security: $S > 2.5"
echo "package-test: OK in $(( $(date +%s) - T0 )) s; systemd-analyze security $S; $(du -h "$DEB" | cut -f1) package"
