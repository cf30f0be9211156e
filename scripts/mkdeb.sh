#!/bin/sh
# `make deb`: ctd_<version>_<arch>.deb from a release build, staged with dpkg-deb (no debian/rules): the binary in
# /usr/bin, libCtdPluginAPI/libCtdSupport and the Swift runtime in /usr/lib/ctd, the plugins in /usr/lib/ctd/plugins,
# every RUNPATH set with patchelf so nothing needs LD_LIBRARY_PATH or the toolchain. See docs/packaging.md.
set -eu
BIN=${CTD_BIN:-.build/release}
OUT=${CTD_DEB_DIR:-.build-deb}
SWIFT_LIB=${SWIFT_RUNTIME_DIR:-$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")/lib/swift/linux}
VERSION=$("$BIN/ctd" --version)
ARCH=$(dpkg --print-architecture)
ST=$OUT/stage
rm -rf "$ST" && mkdir -p "$ST/DEBIAN"
umask 022
d() { install -d "$ST/$1"; }
d usr/bin; d usr/lib/ctd/plugins; d etc/ctd; d etc/pam.d; d lib/systemd/system; d usr/lib/sysctl.d
d usr/share/man/man8; d usr/share/man/man5; d usr/share/man/man7; d usr/share/doc/ctd
d usr/share/bash-completion/completions; d usr/share/zsh/vendor-completions; d usr/share/ctd

install -m 0755 "$BIN/ctd" "$ST/usr/bin/ctd"
install -m 0644 "$BIN/libCtdPluginAPI.so" "$BIN/libCtdSupport.so" "$ST/usr/lib/ctd/"
for p in AuthSHA AuthPAM UIDResolver AuditSQLite AuditSyslog; do install -m 0644 "$BIN/lib$p.so" "$ST/usr/lib/ctd/plugins/"; done
# The Swift runtime: every library the binary and the plugins resolve from the toolchain, and theirs in turn.
libs=$(for f in "$ST/usr/bin/ctd" "$ST"/usr/lib/ctd/*.so "$ST"/usr/lib/ctd/plugins/*.so; do
        LD_LIBRARY_PATH="$BIN:$SWIFT_LIB" ldd "$f"; done | awk -v d="$SWIFT_LIB/" 'index($3, d) == 1 {print $3}' | sort -u)
[ -n "$libs" ] || { echo "mkdeb: no Swift runtime library found under $SWIFT_LIB" >&2; exit 1; }
for l in $libs; do install -m 0644 "$l" "$ST/usr/lib/ctd/"; done
patchelf --set-rpath /usr/lib/ctd "$ST/usr/bin/ctd"
for l in "$ST"/usr/lib/ctd/*.so; do patchelf --set-rpath '$ORIGIN' "$l"; done
for l in "$ST"/usr/lib/ctd/plugins/*.so; do patchelf --set-rpath '$ORIGIN/..' "$l"; done
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$ST/usr/bin/ctd" \
    "$ST"/usr/lib/ctd/plugins/*.so "$ST"/usr/lib/ctd/*.so

# Configuration: conffiles. The plugins' samples sit beside ctd.toml, every key explained.
sed 's#@PREFIX@#/usr#g' ctd.sample.toml > "$ST/etc/ctd/ctd.toml"
install -m 0644 Plugins/*/*.sample.toml "$ST/etc/ctd/"
install -m 0644 Plugins/AuthPAM/pam.d/ctd "$ST/etc/pam.d/ctd"
sed 's#@BINDIR@#/usr/bin#g' dist/ctd.service > "$ST/lib/systemd/system/ctd.service"
chmod 0644 "$ST/lib/systemd/system/ctd.service"
install -m 0644 dist/sysctl-ctd.conf "$ST/usr/lib/sysctl.d/ctd.conf"
[ -d www ] && cp -r www "$ST/usr/share/ctd/www" && chmod -R u=rwX,go=rX "$ST/usr/share/ctd/www"
rmdir "$ST/usr/share/ctd" 2>/dev/null || true

# Man pages and completions (generated from the command definitions of the binary being packaged).
gzip -9n -c man/ctd.8 > "$ST/usr/share/man/man8/ctd.8.gz"
gzip -9n -c man/ctd.toml.5 > "$ST/usr/share/man/man5/ctd.toml.5.gz"
gzip -9n -c man/ctd-xmlrpc.7 > "$ST/usr/share/man/man7/ctd-xmlrpc.7.gz"
"$BIN/ctd" --generate-completion-script bash | sed '1{/^#!/d}' > "$ST/usr/share/bash-completion/completions/ctd"
"$BIN/ctd" --generate-completion-script zsh > "$ST/usr/share/zsh/vendor-completions/_ctd"
chmod 0644 "$ST/usr/share/bash-completion/completions/ctd" "$ST/usr/share/zsh/vendor-completions/_ctd"
install -m 0644 dist/debian/copyright "$ST/usr/share/doc/ctd/copyright"
DATE=$(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")
printf 'ctd (%s) bookworm; urgency=medium\n\n  * Release %s (see the git log).\n\n -- ctd maintainers <ctd@localhost>  %s\n' \
    "$VERSION" "$VERSION" "$DATE" | gzip -9n > "$ST/usr/share/doc/ctd/changelog.gz"

# Maintainer scripts, conffiles, Depends from dpkg-shlibdeps (the private libraries found in the staged tree).
for s in postinst postrm prerm; do sed '/^#DEBHELPER#$/d' "dist/debian/$s" > "$ST/DEBIAN/$s"; chmod 0755 "$ST/DEBIAN/$s"; done
(cd "$ST" && find etc -type f | sed 's#^#/#' | sort) > "$ST/DEBIAN/conffiles"
SH=$OUT/shlibdeps && rm -rf "$SH" && mkdir -p "$SH/debian"
printf 'Source: ctd\n\nPackage: ctd\nArchitecture: any\n' > "$SH/debian/control"
ABS=$(readlink -f "$ST")
DEPS=$(cd "$SH" && dpkg-shlibdeps -O --ignore-missing-info -l"$ABS/usr/lib/ctd" \
    "$ABS/usr/bin/ctd" "$ABS"/usr/lib/ctd/*.so "$ABS"/usr/lib/ctd/plugins/*.so 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
SIZE=$(du -sk --exclude=DEBIAN "$ST" | cut -f1)
cat > "$ST/DEBIAN/control" <<CTL
Package: ctd
Version: $VERSION
Architecture: $ARCH
Maintainer: ctd maintainers <ctd@localhost>
Installed-Size: $SIZE
Depends: $DEPS, passwd, conntrack
Recommends: nftables
Section: net
Priority: optional
Homepage: https://localhost/ctd
Description: ConnTrack Daemon: the kernel's conntrack table over XML-RPC
 ctd serves the netfilter connection-tracking table over XML-RPC (pyctd's API:
 login, view, kill, change, refresh, set_autorefresh, plus summary, stats,
 kill_matching, changes and audit_list), with plugins for password files
 (AuthSHA), PAM, user-id resolution and an SQLite audit trail. It carries the
 Swift runtime it was built with under /usr/lib/ctd.
CTL
(cd "$ST" && find . -path ./DEBIAN -prune -o -type f -print | sed 's#^\./##' | sort | xargs md5sum) > "$ST/DEBIAN/md5sums"
DEB=$OUT/ctd_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$ST" "$DEB" >/dev/null
cp "$DEB" "$OUT/ctd.deb"
echo "$DEB ($(du -h "$DEB" | cut -f1), Depends: $DEPS, passwd, conntrack)"
