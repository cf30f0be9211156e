# ctd: make run (serve this machine's table on 127.0.0.1), make test (everything, real kernel, real clients).
PREFIX ?= /usr/local
SWIFT ?= swift
CONFIG ?= debug
BIN := .build/$(CONFIG)
PYTHON ?= python3

# Debian packages: what building needs (make deps), what testing needs on top (make test-deps), what the package
# test and man page lint need. One variable a line, so that each suite adds its own.
BUILD_PACKAGES := libnetfilter-conntrack-dev libnfnetlink-dev libpam0g-dev libsqlite3-dev libssl-dev libcrypt-dev \
	libxml2-dev libsystemd-dev libxmlrpc-core-c3-dev pkg-config gcc
TEST_PACKAGES := conntrack nftables iproute2 libpam-wrapper libnss-wrapper pamtester sqlite3 openssl whois \
	apache2-utils php8.2-cli php8.2-xmlrpc librpc-xml-perl wrk procps
# The web console's browser suite (Tests/e2e/test_web_console.py): headless Chromium driven by Selenium.
WEB_TEST_PACKAGES := chromium chromium-driver
# AuditSyslog's collector suite (Tests/e2e/test_audit_syslog.py): a real rsyslogd with its OpenSSL stream driver.
SYSLOG_TEST_PACKAGES := rsyslog rsyslog-openssl
PACKAGE_TEST_PACKAGES := dpkg-dev patchelf lintian mandoc debootstrap
# The metrics suite (Tests/e2e/test_metrics.py): a real Prometheus server scrapes ctd (prometheus_client from PyPI parses).
METRICS_TEST_PACKAGES := prometheus
DEB_PACKAGES := $(BUILD_PACKAGES) $(TEST_PACKAGES) $(WEB_TEST_PACKAGES) $(PACKAGE_TEST_PACKAGES) $(SYSLOG_TEST_PACKAGES)
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc

.PHONY: web-e2e bench-web bench-metrics syslog-e2e bench-syslog
.PHONY: all deps build release run demo test unit docs integration e2e bench soak install clean fmt lint \
	fuzz fuzz-build fuzz-replay test-deps deb package-test man-lint uninstall

all: build

# apt-get install of the missing ones among $(1).
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

deps:
	$(call apt_install,$(BUILD_PACKAGES))

test-deps: deps
	$(call apt_install,$(TEST_PACKAGES) $(WEB_TEST_PACKAGES) $(PACKAGE_TEST_PACKAGES) $(METRICS_TEST_PACKAGES) \
		$(SYSLOG_TEST_PACKAGES))
	@$(PYTHON) -c 'import pytest' 2>/dev/null || $(PYTHON) -m pip install -q pytest
	@$(PYTHON) -c 'import prometheus_client' 2>/dev/null || $(PYTHON) -m pip install -q prometheus-client
	@$(PYTHON) -c 'import selenium' 2>/dev/null || $(PYTHON) -m pip install -q selenium

build: deps
	$(SWIFT) build -c $(CONFIG)

release:
	$(MAKE) build CONFIG=release

run: build
	CTD_BIN=$(BIN) scripts/run.sh

demo: build
	CTD_BIN=$(BIN) scripts/demo.sh

unit: build
	$(SWIFT) test -c $(CONFIG) --skip KernelIntegration

# The plugin API's DocC documentation (.build/docs/CtdPluginAPI, static HTML); fails when a public declaration has
# no doc comment.
docs: build
	rm -rf .build/symbolgraph .build/docs && mkdir -p .build/symbolgraph .build/docs
	$(SWIFT) symbolgraph-extract -module-name CtdPluginAPI -I $(BIN)/Modules -target $$(uname -m)-unknown-linux-gnu \
		-minimum-access-level public -output-dir .build/symbolgraph
	$(PYTHON) scripts/check_api_docs.py .build/symbolgraph/CtdPluginAPI.symbols.json
	docc convert Sources/CtdPluginAPI/API/CtdPluginAPI.docc --additional-symbol-graph-dir .build/symbolgraph \
		--fallback-display-name CtdPluginAPI --fallback-bundle-identifier org.ctd.CtdPluginAPI \
		--output-path .build/docs/CtdPluginAPI --transform-for-static-hosting --warnings-as-errors

# Swift tests against the real kernel table, in a private network namespace.
integration: build
	$(SWIFT) build -c $(CONFIG) --build-tests
	unshare -n -- env CTD_KERNEL_TESTS=1 $(SWIFT) test -c $(CONFIG) --skip-build --filter KernelIntegration

# End-to-end and integration suites run inside a private network namespace (unshare -n): the real kernel table,
# the built ctd with its dlopen'ed plugins, real XML-RPC clients. They fail, never skip, if that is impossible.
e2e: build
	unshare -n -- $(PYTHON) -m pytest -x -q -p no:cacheprovider Tests/e2e

# The web console alone, in headless Chromium (also part of e2e).
web-e2e: test-deps build
	unshare -n -- $(PYTHON) -m pytest -x -q -p no:cacheprovider Tests/e2e/test_web_console.py

# AuditSyslog alone against a real rsyslog (also part of e2e): unit tests of its formatter and queue, then the
# collector suite.
syslog-e2e: test-deps build
	$(SWIFT) build -c $(CONFIG) --build-tests
	$(SWIFT) test -c $(CONFIG) --skip-build --filter AuditSyslogTests
	unshare -n -- $(PYTHON) -m pytest -x -q -p no:cacheprovider Tests/e2e/test_audit_syslog.py

# AuditSyslog's figures (docs/audit.md): the cost of forwarding on a 10,000-id audited kill and the rate rsyslog
# receives events at, each beside its reference from the same run.
bench-syslog: test-deps
	$(MAKE) build CONFIG=release
	CTD_BIN=.build/release unshare -n -- $(PYTHON) bench/audit_syslog.py

# The web console's figures (docs/web-console.md): first paint at 250,000 entries, JS heap after live updates.
bench-web: test-deps build
	unshare -n -- $(PYTHON) bench/web_console.py

test: test-deps unit docs integration e2e fuzz-replay man-lint package-test

# libFuzzer targets (Fuzz/README.md), built with the toolchain's own libFuzzer runtime (-sanitize=fuzzer) in a
# scratch path of their own. The targets exist only when CTD_FUZZ=1, so a plain `swift build` never sees them.
# RequestPathFuzz reaches kill and change, which talk to the kernel: it runs inside `unshare -n`, where the table is
# empty and nothing of the host's can be deleted. New inputs go to .build-fuzz/corpus, crashes to Fuzz/crashes/.
FUZZ_SECONDS ?= 60
# Mutation runs use a release build (about 10x the executions of a debug one); the replay in `make test` uses a
# debug build, which compiles in a fraction of the time and runs the corpus in seconds.
FUZZ_CONFIG ?= release
FUZZ_REPLAY_CONFIG ?= debug
FUZZ_SCRATCH := .build-fuzz
FUZZ_TARGETS := XMLRPCDecoderFuzz RequestPathFuzz
FUZZ_ENV := LSAN_OPTIONS=suppressions=$(CURDIR)/Fuzz/lsan.supp
FUZZ_FLAGS := -timeout=5 -rss_limit_mb=2048 -print_final_stats=1
FUZZ_NS_XMLRPCDecoderFuzz :=
FUZZ_NS_RequestPathFuzz := unshare -n --

fuzz-build: deps
	for t in $(FUZZ_TARGETS); do \
		CTD_FUZZ=1 $(SWIFT) build -c $(FUZZ_CONFIG) --scratch-path $(FUZZ_SCRATCH) --sanitize=fuzzer --product $$t \
			|| exit 1; \
	done

fuzz: fuzz-build
	mkdir -p Fuzz/crashes
	for t in $(FUZZ_TARGETS); do mkdir -p $(FUZZ_SCRATCH)/corpus/$$t; done
	$(FUZZ_NS_XMLRPCDecoderFuzz) env $(FUZZ_ENV) $(FUZZ_SCRATCH)/$(FUZZ_CONFIG)/XMLRPCDecoderFuzz $(FUZZ_FLAGS) \
		-max_total_time=$(FUZZ_SECONDS) -artifact_prefix=Fuzz/crashes/XMLRPCDecoderFuzz- \
		$(FUZZ_SCRATCH)/corpus/XMLRPCDecoderFuzz Fuzz/corpus/XMLRPCDecoderFuzz
	$(FUZZ_NS_RequestPathFuzz) env $(FUZZ_ENV) $(FUZZ_SCRATCH)/$(FUZZ_CONFIG)/RequestPathFuzz $(FUZZ_FLAGS) \
		-max_total_time=$(FUZZ_SECONDS) -artifact_prefix=Fuzz/crashes/RequestPathFuzz- \
		$(FUZZ_SCRATCH)/corpus/RequestPathFuzz Fuzz/corpus/RequestPathFuzz

# The corpus kept in the repo, each input run once, no mutation (part of `make test`).
fuzz-replay:
	$(MAKE) fuzz-build FUZZ_CONFIG=$(FUZZ_REPLAY_CONFIG)
	$(FUZZ_NS_XMLRPCDecoderFuzz) env $(FUZZ_ENV) $(FUZZ_SCRATCH)/$(FUZZ_REPLAY_CONFIG)/XMLRPCDecoderFuzz $(FUZZ_FLAGS) \
		-runs=0 Fuzz/corpus/XMLRPCDecoderFuzz
	$(FUZZ_NS_RequestPathFuzz) env $(FUZZ_ENV) $(FUZZ_SCRATCH)/$(FUZZ_REPLAY_CONFIG)/RequestPathFuzz $(FUZZ_FLAGS) \
		-runs=0 Fuzz/corpus/RequestPathFuzz

# The cost of a Prometheus scrape beside conntrack -L, conntrack -C and the stats call (docs/metrics.md).
bench-metrics: test-deps
	$(MAKE) build CONFIG=release
	unshare -n -- env CTD_BIN=.build/release $(PYTHON) bench/metrics.py

bench: test-deps
	$(MAKE) build CONFIG=release
	CTD_BIN=.build/release scripts/bench.sh

# 100 concurrent clients (logins good and bad, views, kills of their own entries, multicalls, malformed bodies, slow
# and non-reading clients) for 60 s against a 250,000-entry table; appends its table to docs/benchmark.md.
soak: test-deps
	$(MAKE) build CONFIG=release
	CTD_BIN=.build/release scripts/soak.sh

# Installs the release build only (nothing from apt). The Swift runtime is not copied: a machine without the
# toolchain wants the Debian package (make deb).
install:
	@[ -x .build/release/ctd ] || { echo "make release first (make install builds nothing)"; exit 1; }
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/ctd/plugins $(DESTDIR)$(PREFIX)/share/ctd \
		$(DESTDIR)$(SYSCONFDIR)/ctd $(DESTDIR)$(SYSTEMDUNITDIR)
	install -m 0755 .build/release/ctd $(DESTDIR)$(PREFIX)/bin/ctd
	install -m 0644 .build/release/libCtdPluginAPI.so .build/release/libCtdSupport.so $(DESTDIR)$(PREFIX)/lib/ctd/
	for p in AuthSHA AuthPAM UIDResolver AuditSQLite AuditSyslog; do \
		install -m 0644 .build/release/lib$$p.so $(DESTDIR)$(PREFIX)/lib/ctd/plugins/ || exit 1; done
	install -m 0644 ctd.sample.toml Plugins/*/*.sample.toml $(DESTDIR)$(PREFIX)/share/ctd/
	install -d $(DESTDIR)$(PREFIX)/share/ctd/www/js $(DESTDIR)$(PREFIX)/share/ctd/www/css
	install -m 0644 www/index.html $(DESTDIR)$(PREFIX)/share/ctd/www/
	install -m 0644 www/js/*.js $(DESTDIR)$(PREFIX)/share/ctd/www/js/
	install -m 0644 www/css/*.css $(DESTDIR)$(PREFIX)/share/ctd/www/css/
	install -d $(DESTDIR)$(PREFIX)/share/ctd/pam.d && install -m 0644 Plugins/AuthPAM/pam.d/ctd $(DESTDIR)$(PREFIX)/share/ctd/pam.d/ctd
	install -d $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7
	install -m 0644 man/ctd.8 $(DESTDIR)$(PREFIX)/share/man/man8/ && install -m 0644 man/ctd.toml.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 0644 man/ctd-xmlrpc.7 $(DESTDIR)$(PREFIX)/share/man/man7/
	[ -f $(DESTDIR)$(SYSCONFDIR)/ctd/ctd.toml ] || sed 's#@PREFIX@#$(PREFIX)#g' ctd.sample.toml > $(DESTDIR)$(SYSCONFDIR)/ctd/ctd.toml
	[ -f $(DESTDIR)$(SYSCONFDIR)/ctd/passwd ] || install -m 0600 /dev/null $(DESTDIR)$(SYSCONFDIR)/ctd/passwd
	sed 's#@BINDIR@#$(PREFIX)/bin#g' dist/ctd.service > $(DESTDIR)$(SYSTEMDUNITDIR)/ctd.service

# Removes what install put there, except the configuration and the password file in $(SYSCONFDIR)/ctd.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/ctd $(DESTDIR)$(SYSTEMDUNITDIR)/ctd.service
	rm -f $(DESTDIR)$(PREFIX)/share/man/man8/ctd.8 $(DESTDIR)$(PREFIX)/share/man/man5/ctd.toml.5 $(DESTDIR)$(PREFIX)/share/man/man7/ctd-xmlrpc.7
	rm -rf $(DESTDIR)$(PREFIX)/lib/ctd $(DESTDIR)$(PREFIX)/share/ctd

# ctd_<version>_<arch>.deb in .build-deb (docs/packaging.md).
deb: release
	$(MAKE) test-deps
	scripts/mkdeb.sh

# The .deb in a fresh debootstrap'ed Debian 12 root, run in a private namespace, then purged (docs/packaging.md).
package-test: deb
	scripts/package_test.sh

man-lint:
	mandoc -T lint -W warning man/ctd.8 man/ctd.toml.5 man/ctd-xmlrpc.7

clean:
	rm -rf .build .build-fuzz run

fmt:
	$(SWIFT) format -i -r Sources Plugins Tests

lint:
	$(SWIFT) format lint -r Sources Plugins Tests
