# tidegate — one non-recursive Makefile.
#
# Two builds of the same sources live side by side:
#   $(B)/rel   optimised (-O2), what `make`, `make demo` and `make bench` use
#   $(B)/asan  -O1 -g with AddressSanitizer + UndefinedBehaviorSanitizer, what the
#              unit tests and the sanitizer pass of the integration tests use
# Sources are found by wildcard, so a new module or a new tests/unit/test_*.c needs no
# Makefile edit. User CFLAGS/LDFLAGS are kept and appended.

#
# Cross-building: `make ARCH=arm64` (any Debian architecture name) builds with Debian's
# cross compiler (<triplet>-gcc) against the multiarch -dev packages, into build/<arch>/
# unless B says otherwise; `make deb` / `make deb ARCH=arm64` build the .deb packages
# (packaging/deb/build-deb.sh). packaging/install-deps.sh --arm64 installs what that needs.

HOST_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
ARCH     ?= $(HOST_ARCH)
TRIPLET  := $(shell dpkg-architecture -a$(ARCH) -qDEB_HOST_MULTIARCH 2>/dev/null)
PKG_CONFIG ?= pkg-config
ifneq ($(ARCH),$(HOST_ARCH))
B        ?= build/$(ARCH)
CC       := $(TRIPLET)-gcc
# only the target architecture's .pc files (their include paths are the shared /usr/include)
PKG_CONFIG := PKG_CONFIG_LIBDIR=/usr/lib/$(TRIPLET)/pkgconfig:/usr/share/pkgconfig pkg-config
endif
B        ?= build
PREFIX   ?= /usr/local
SYSCONFDIR ?= /etc
# the package puts units where Debian 12's systemd looks first; /usr/local keeps its own
UNITDIR  ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
PYTHON   ?= /usr/bin/python3
NPROC    ?= $(shell nproc 2>/dev/null || echo 2)
PKGS     := libmosquitto jansson sqlite3 libpcre2-8 libcurl zlib libmicrohttpd openssl libsystemd
# The version's one home: the top entry of the Debian changelog (`tidegate version`).
VERSION  := $(shell head -n1 packaging/debian/changelog | cut -d' ' -f2 | tr -d '()')

PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
# libcurl is not linked: the HTTP sinks load it when they open (gateway/sinks/curl_dl.h).
# --as-needed: each program records only the libraries it calls (device_sim needs no SQLite).
PKG_LIBS   := -Wl,--as-needed $(shell $(PKG_CONFIG) --libs $(filter-out libcurl,$(PKGS)) 2>/dev/null) -lpthread -lm

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter -Wformat=2 -Wno-format-truncation
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -fPIC $(WARN) -Igateway -MMD -MP $(PKG_CFLAGS) \
               -DTIDEGATE_VERSION='"$(VERSION)"'
REL_CFLAGS  := $(BASE_CFLAGS) -O2 -g $(CFLAGS)
ASAN_CFLAGS := $(BASE_CFLAGS) -O1 -g -fno-omit-frame-pointer \
               -fsanitize=address,undefined -fno-sanitize-recover=undefined $(CFLAGS)
ASAN_LDFLAGS := -fsanitize=address,undefined $(LDFLAGS)

# ---- sources -------------------------------------------------------------------------
GW_MAIN  := gateway/main.c
# The stage folders of the daemon, in the order a message meets them (README, Layout).
GW_STAGES := $(addprefix gateway/,core mqtt registry edge rules alerts store sinks shadow ops)
GW_SRCS  := $(filter-out $(GW_MAIN),$(wildcard gateway/*.c $(addsuffix /*.c,$(GW_STAGES))))
AUTH_SRCS := $(wildcard gateway/auth/*.c)
SIM_SRCS := $(wildcard device_sim/*.c)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
TOOL_SRCS := $(wildcard tests/tools/*.c)

obj = $(patsubst %.c,$(1)/obj/%.o,$(2))

REL_GW_OBJS  := $(call obj,$(B)/rel,$(GW_SRCS))
ASAN_GW_OBJS := $(call obj,$(B)/asan,$(GW_SRCS))

REL_BINS  := $(B)/rel/tidegate $(if $(SIM_SRCS),$(B)/rel/device_sim) $(if $(AUTH_SRCS),$(B)/rel/tidegate_auth.so)
ASAN_BINS := $(B)/asan/tidegate $(if $(SIM_SRCS),$(B)/asan/device_sim) $(if $(AUTH_SRCS),$(B)/asan/tidegate_auth.so)
UNIT_BINS := $(patsubst tests/unit/%.c,$(B)/asan/tests/%,$(UNIT_SRCS))
# The same tests without sanitizers: what a cross build runs under qemu-user.
UNIT_REL_BINS := $(patsubst tests/unit/%.c,$(B)/rel/tests/%,$(UNIT_SRCS))
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(B)/asan/fuzz/%,$(FUZZ_SRCS))
# Test drivers (tests/tools/*.c), one program each, in both builds.
TOOL_BINS := $(patsubst tests/tools/%.c,$(B)/rel/tools/%,$(TOOL_SRCS)) \
             $(patsubst tests/tools/%.c,$(B)/asan/tools/%,$(TOOL_SRCS))

.PHONY: all asan deps certs demo check check-layout unit integration integration-asan fuzz-replay \
        bench bench-quick bench-fleet chaos clean valgrind install format deb unit-bins-rel check-packaging check-arm64 footprint

all: $(REL_BINS)
asan: $(ASAN_BINS) $(UNIT_BINS) $(FUZZ_BINS)

# ---- compile rules -------------------------------------------------------------------
$(B)/rel/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC  $<"; $(CC) $(REL_CFLAGS) -c $< -o $@

$(B)/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC  $< (asan)"; $(CC) $(ASAN_CFLAGS) -c $< -o $@

$(B)/rel/libtidegate.a: $(REL_GW_OBJS)
	@rm -f $@; $(AR) rcs $@ $^
$(B)/asan/libtidegate.a: $(ASAN_GW_OBJS)
	@rm -f $@; $(AR) rcs $@ $^

$(B)/rel/tidegate: $(call obj,$(B)/rel,$(GW_MAIN)) $(B)/rel/libtidegate.a
	$(CC) -o $@ $^ $(PKG_LIBS) $(LDFLAGS)
$(B)/asan/tidegate: $(call obj,$(B)/asan,$(GW_MAIN)) $(B)/asan/libtidegate.a
	$(CC) -o $@ $^ $(PKG_LIBS) $(ASAN_LDFLAGS)

$(B)/rel/device_sim: $(call obj,$(B)/rel,$(SIM_SRCS)) $(B)/rel/libtidegate.a
	$(CC) -o $@ $^ $(PKG_LIBS) $(LDFLAGS)
$(B)/asan/device_sim: $(call obj,$(B)/asan,$(SIM_SRCS)) $(B)/asan/libtidegate.a
	$(CC) -o $@ $^ $(PKG_LIBS) $(ASAN_LDFLAGS)

# The broker plugin is loaded by mosquitto itself, so even the "asan" copy is built
# without sanitizers (the broker binary is not instrumented).
$(B)/rel/tidegate_auth.so $(B)/asan/tidegate_auth.so: $(AUTH_SRCS) $(wildcard gateway/auth/*.h gateway/registry/registry.[ch] gateway/registry/registry_sql.h)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -shared -o $@ $(AUTH_SRCS) $(wildcard gateway/registry/registry.c) $(PKG_LIBS) $(LDFLAGS)

# the version is compiled into main.c only; a new changelog entry rebuilds it
$(call obj,$(B)/rel,$(GW_MAIN)) $(call obj,$(B)/asan,$(GW_MAIN)): packaging/debian/changelog

$(B)/rel/tests/%: $(B)/rel/obj/tests/unit/%.o $(B)/rel/libtidegate.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(PKG_LIBS) -lcmocka $(LDFLAGS)

$(B)/asan/tests/%: $(B)/asan/obj/tests/unit/%.o $(B)/asan/libtidegate.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(PKG_LIBS) -lcmocka $(ASAN_LDFLAGS)

# Fuzz targets: built as plain programs that replay corpus files (tests/fuzz/local_main.c);
# with clang and FUZZ=1 they link against libFuzzer instead.
$(B)/asan/fuzz/%: $(B)/asan/obj/tests/fuzz/%.o $(B)/asan/obj/tests/fuzz/local_main.o $(B)/asan/libtidegate.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(PKG_LIBS) $(ASAN_LDFLAGS)

# The same fuzz targets built with clang against libFuzzer (and ASan/UBSan), for the fuzz
# budget of `make chaos` (tests/chaos/chaos.py --fuzz): a third copy of the library, compiled
# with coverage instrumentation.
FUZZ_CC ?= clang
LIBFUZZER_CFLAGS := $(BASE_CFLAGS) -Wno-unknown-warning-option -O1 -g -fno-omit-frame-pointer -DFUZZ \
                    -fsanitize=fuzzer-no-link,address,undefined $(CFLAGS)
LIBFUZZER_BINS := $(patsubst tests/fuzz/%.c,$(B)/libfuzzer/%,$(FUZZ_SRCS))
$(B)/libfuzzer/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC  $< (libFuzzer)"; $(FUZZ_CC) $(LIBFUZZER_CFLAGS) -c $< -o $@
.PRECIOUS: $(B)/libfuzzer/obj/%.o
$(B)/libfuzzer/libtidegate.a: $(call obj,$(B)/libfuzzer,$(GW_SRCS))
	@rm -f $@; $(AR) rcs $@ $^
$(B)/libfuzzer/fuzz_%: $(B)/libfuzzer/obj/tests/fuzz/fuzz_%.o $(B)/libfuzzer/libtidegate.a
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(PKG_LIBS)

$(B)/rel/tools/%: $(B)/rel/obj/tests/tools/%.o $(B)/rel/libtidegate.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(PKG_LIBS) $(LDFLAGS)
$(B)/asan/tools/%: $(B)/asan/obj/tests/tools/%.o $(B)/asan/libtidegate.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(PKG_LIBS) $(ASAN_LDFLAGS)
# Benchmark programs: each tests/bench/bench_*.c becomes $(B)/rel/bench_* (optimised build,
# linked against libtidegate.a); tests/bench/run.sh runs them.
BENCH_SRCS := $(wildcard tests/bench/bench_*.c)
BENCH_BINS := $(patsubst tests/bench/%.c,$(B)/rel/%,$(BENCH_SRCS))
$(B)/rel/bench_%: $(B)/rel/obj/tests/bench/bench_%.o $(B)/rel/libtidegate.a
	$(CC) -o $@ $^ $(PKG_LIBS) $(LDFLAGS)

-include $(shell find $(B) -name '*.d' -type f 2>/dev/null)

# ---- the two commands ----------------------------------------------------------------
deps:
	@packaging/install-deps.sh

certs: deps
	@certs/make-certs.sh certs/out

demo: deps all certs
	@B=$(B) packaging/demo.sh

# The builds run in parallel (every core: the rel and asan objects are independent); the
# tests run one suite after another, never beside each other (they time real servers).
check: deps
	$(MAKE) --no-print-directory check-layout
	$(MAKE) --no-print-directory -j$(NPROC) all asan $(TOOL_BINS) $(B)/rel/bench_sub $(B)/rel/bench_fleet
	$(MAKE) --no-print-directory -j1 unit fuzz-replay integration
	$(MAKE) --no-print-directory check-packaging

# Includes follow the data path one way (the stage order is written down in the script).
check-layout:
	@$(PYTHON) tests/layout/check_includes.py && echo "layout: includes follow the stage order"

unit: $(UNIT_BINS)
	@tests/run-unit.sh $(UNIT_BINS)

fuzz-replay: $(FUZZ_BINS)
	@tests/run-fuzz-replay.sh $(B)/asan/fuzz

# Integration tests run against the optimised build, then again (a quicker subset marked
# `asan` is not needed: the whole suite) against the sanitizer build.
# bench_sub and bench_fleet: the regression guard and the fleet benchmark's smoke run
# (tests/integration/test_bench_guard.py, test_bench_fleet.py) keep the harness alive
integration: $(REL_BINS) $(ASAN_BINS) $(TOOL_BINS) $(B)/rel/bench_sub $(B)/rel/bench_fleet
	@tests/integration/npm-peers.sh
	@tests/browser/install.sh
	TIDEGATE_BUILD=$(abspath $(B)/rel) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration
	TIDEGATE_BUILD=$(abspath $(B)/asan) TIDEGATE_SANITIZED=1 $(PYTHON) -m pytest -q -p no:cacheprovider -m "not slow and not chaos" tests/integration

valgrind: $(B)/rel/tidegate
	@tests/run-valgrind.sh $(B)/rel

bench: deps all $(BENCH_BINS)
	@B=$(B) tests/bench/run.sh
	@B=$(B) tests/bench/run-fleet.sh

# The fleet rows (issue 19): 10,000 mTLS connections, a 100,000-thing registry, 1,000 rules,
# edge state at 10k and 100k things (FLEET_SCALE=reduced|smoke for less; tests/bench/fleet.py)
bench-fleet: deps all $(BENCH_BINS)
	@B=$(B) tests/bench/run-fleet.sh

bench-quick: deps all $(BENCH_BINS)
	@BENCH_QUICK=1 B=$(B) tests/bench/run.sh

# Chaos (issue 20): the whole stack under load through a seeded schedule of faults, every
# sink read back (DuckDB, boto3), then each libFuzzer target for FUZZ_BUDGET_S seconds
# (a crashing input is kept in tests/fuzz/corpus/<target>/). Writes bench/results/chaos.md
# and chaos.json. About 15 minutes; CHAOS_SEED repeats a run. The short version of the
# schedule runs in `make integration` (tests/integration/test_chaos.py).
CHAOS_SEED ?= 20
FUZZ_BUDGET_S ?= 60
chaos: deps all $(LIBFUZZER_BINS)
	@tests/integration/npm-peers.sh
	TIDEGATE_BUILD=$(abspath $(B)/rel) $(PYTHON) -m pytest -q -p no:cacheprovider -m chaos tests/integration
	TIDEGATE_BUILD=$(abspath $(B)/rel) $(PYTHON) tests/chaos/chaos.py --seed $(CHAOS_SEED) \
	  --fuzz $(abspath $(B)/libfuzzer) --fuzz-budget $(FUZZ_BUDGET_S) --out bench/results/chaos

# What the Debian package installs, from the same recipe (packaging/deb/build-deb.sh runs
# it with PREFIX=/usr into its staging tree). Configuration files already present are
# kept: an operator's edits win over a re-install.
BINDIR  := $(PREFIX)/bin
PLUGDIR := $(PREFIX)/lib/$(TRIPLET)/tidegate
DATADIR := $(PREFIX)/share/tidegate
DOCDIR  := $(PREFIX)/share/doc/tidegate
MANDIR  := $(PREFIX)/share/man
ETCDIR  := $(DESTDIR)$(SYSCONFDIR)
install_conf = [ -e "$(2)" ] || install -D -m 0644 "$(1)" "$(2)"
install: all
	install -D -m 0755 $(B)/rel/tidegate $(DESTDIR)$(BINDIR)/tidegate
	install -D -m 0755 $(B)/rel/device_sim $(DESTDIR)$(BINDIR)/tidegate-device-sim
	install -D -m 0644 $(B)/rel/tidegate_auth.so $(DESTDIR)$(PLUGDIR)/tidegate_auth.so
	@set -e; $(call install_conf,packaging/etc/tidegate.conf,$(ETCDIR)/tidegate/tidegate.conf); \
	for f in rules/*.json rules/schemas/*.json rules/aggregates/*.json; do \
	  $(call install_conf,$$f,$(ETCDIR)/tidegate/$$f); done; \
	$(call install_conf,packaging/mosquitto/conf.d/tidegate.conf,$(ETCDIR)/mosquitto/conf.d/tidegate.conf); \
	[ -e $(ETCDIR)/tidegate/mosquitto.acl ] || { mkdir -p $(ETCDIR)/tidegate; \
	  sed '/@EXTRA@/d' packaging/mosquitto/acl.in > $(ETCDIR)/tidegate/mosquitto.acl; }
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' packaging/systemd/tidegate.service.in \
	  > $(DESTDIR)$(UNITDIR)/tidegate.service
	install -D -m 0644 packaging/systemd/mosquitto-tidegate.conf $(DESTDIR)$(UNITDIR)/mosquitto.service.d/tidegate.conf
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DOCDIR)/examples/rules $(DESTDIR)$(DOCDIR)/examples/policies \
	  $(DESTDIR)$(DATADIR)/certs
	for m in packaging/man/*.1; do gzip -9n < $$m > $(DESTDIR)$(MANDIR)/man1/$$(basename $$m).gz; done
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 rules/examples/*.json $(DESTDIR)$(DOCDIR)/examples/rules/
	install -m 0644 packaging/mosquitto/policies/*.json $(DESTDIR)$(DOCDIR)/examples/policies/
	install -m 0755 certs/make-certs.sh certs/issue-device.sh certs/revoke.sh $(DESTDIR)$(DATADIR)/certs/
	install -m 0644 certs/lib.sh $(DESTDIR)$(DATADIR)/certs/
	install -d $(DESTDIR)$(DATADIR)/www
	install -m 0644 gateway/ops/www/* $(DESTDIR)$(DATADIR)/www/

# ---- Debian packages -----------------------------------------------------------------
# `make deb` -> build/tidegate_<version>_<host arch>.deb; `make deb ARCH=arm64` cross-builds.
deb:
	@packaging/install-deps.sh --packaging $(if $(filter $(HOST_ARCH),$(ARCH)),,--$(ARCH))
	@packaging/deb/build-deb.sh $(ARCH)

unit-bins-rel: $(UNIT_REL_BINS)

# The package tests (tests/packaging): both .debs, lintian, a clean Debian 12 root
# (mmdebstrap, cached under /var/cache/tidegate-test), the arm64 unit tests under
# qemu-user and an arm64 end-to-end smoke. Part of `make check`.
check-packaging:
	@packaging/install-deps.sh --packaging --arm64
	@packaging/deb/build-deb.sh $(HOST_ARCH)
	@packaging/deb/build-deb.sh arm64 --tests
	TIDEGATE_BUILD=$(abspath $(B)/rel) $(PYTHON) -m pytest -q -p no:cacheprovider tests/packaging

# The README's footprint table: package and binary sizes, idle RSS (arm64 under qemu).
footprint:
	@packaging/install-deps.sh --packaging --arm64
	@packaging/deb/build-deb.sh $(HOST_ARCH)
	@packaging/deb/build-deb.sh arm64
	@$(PYTHON) tests/packaging/footprint.py

# The longer arm64 pass: integration tests with the arm64 daemon under qemu-user (the
# host's mosquitto and device_sim); the unit tests under qemu are in check-packaging.
ARM64_SUITES := test_first_slice test_edge test_rules_live test_systemd_notify test_durability
check-arm64: all
	@packaging/install-deps.sh --packaging --arm64
	@packaging/deb/build-deb.sh arm64
	TIDEGATE_BUILD=$(abspath build/deb/arm64/rel) TIDEGATE_SIM_BUILD=$(abspath $(B)/rel) \
	  TIDEGATE_EXEC_WRAPPER="qemu-aarch64-static -L /" $(PYTHON) -m pytest -q -p no:cacheprovider \
	  -m "not slow" $(patsubst %,tests/integration/%.py,$(ARM64_SUITES))

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(B)
