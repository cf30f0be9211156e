# ctd: make run (serve this machine's table on 127.0.0.1), make test (everything, real kernel, real clients).
PREFIX ?= /usr/local
SWIFT ?= swift
CONFIG ?= debug
BIN := .build/$(CONFIG)
PYTHON ?= python3

# Debian packages the build, the tests and the daemon need.
DEB_PACKAGES := libnetfilter-conntrack-dev libnfnetlink-dev conntrack nftables iproute2 \
	libpam0g-dev libpam-wrapper libnss-wrapper pamtester libsqlite3-dev sqlite3 libssl-dev libcrypt-dev libxml2-dev \
	pkg-config openssl whois apache2-utils php8.2-cli php8.2-xmlrpc librpc-xml-perl libxmlrpc-core-c3-dev wrk procps gcc
SVC_PACKAGES := libsystemd-dev
# The web console's browser suite (Tests/e2e/test_web_console.py): headless Chromium driven by Selenium.
WEB_TEST_PACKAGES := chromium chromium-driver

.PHONY: web-e2e bench-web
.PHONY: all deps build release run demo test unit docs integration e2e bench soak install clean fmt lint \
	fuzz fuzz-build fuzz-replay

all: build

deps:
	@missing=$$(for p in $(DEB_PACKAGES) $(SVC_PACKAGES) $(WEB_TEST_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@$(PYTHON) -c 'import pytest' 2>/dev/null || $(PYTHON) -m pip install -q pytest
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
web-e2e: build
	unshare -n -- $(PYTHON) -m pytest -x -q -p no:cacheprovider Tests/e2e/test_web_console.py

# The web console's figures (docs/web-console.md): first paint at 250,000 entries, JS heap after live updates.
bench-web: build
	unshare -n -- $(PYTHON) bench/web_console.py

test: unit docs integration e2e fuzz-replay

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

bench: deps
	$(MAKE) build CONFIG=release
	CTD_BIN=.build/release scripts/bench.sh

# 100 concurrent clients (logins good and bad, views, kills of their own entries, multicalls, malformed bodies, slow
# and non-reading clients) for 60 s against a 250,000-entry table; appends its table to docs/benchmark.md.
soak: deps
	$(MAKE) build CONFIG=release
	CTD_BIN=.build/release scripts/soak.sh

install: release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/ctd/plugins $(DESTDIR)$(PREFIX)/share/ctd \
		$(DESTDIR)/etc/ctd $(DESTDIR)/lib/systemd/system
	install -m 0755 .build/release/ctd $(DESTDIR)$(PREFIX)/bin/ctd
	install -m 0644 .build/release/libCtdPluginAPI.so $(DESTDIR)$(PREFIX)/lib/ctd/
	for p in .build/release/libAuth*.so .build/release/libUIDResolver.so .build/release/libAuditSQLite.so; do \
		[ -f "$$p" ] && install -m 0644 "$$p" $(DESTDIR)$(PREFIX)/lib/ctd/plugins/ || true; done
	install -m 0644 ctd.sample.toml Plugins/*/*.sample.toml $(DESTDIR)$(PREFIX)/share/ctd/
	install -d $(DESTDIR)$(PREFIX)/share/ctd/www/js $(DESTDIR)$(PREFIX)/share/ctd/www/css
	install -m 0644 www/index.html $(DESTDIR)$(PREFIX)/share/ctd/www/
	install -m 0644 www/js/*.js $(DESTDIR)$(PREFIX)/share/ctd/www/js/
	install -m 0644 www/css/*.css $(DESTDIR)$(PREFIX)/share/ctd/www/css/
	install -d $(DESTDIR)$(PREFIX)/share/ctd/pam.d && install -m 0644 Plugins/AuthPAM/pam.d/ctd $(DESTDIR)$(PREFIX)/share/ctd/pam.d/ctd
	[ -f $(DESTDIR)/etc/ctd/ctd.toml ] || sed 's#@PREFIX@#$(PREFIX)#g' ctd.sample.toml > $(DESTDIR)/etc/ctd/ctd.toml
	sed 's#@PREFIX@#$(PREFIX)#g' dist/ctd.service > $(DESTDIR)/lib/systemd/system/ctd.service

clean:
	rm -rf .build .build-fuzz run

fmt:
	$(SWIFT) format -i -r Sources Plugins Tests

lint:
	$(SWIFT) format lint -r Sources Plugins Tests
