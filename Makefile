# librobustkafka — build, test, install.
#
#   make               build the shared and static library
#   make demo          run the main job (embedded mock cluster unless KAFKA_URL is set)
#   make check         every test: unit, mock cluster, sanitizers, real Kafka, fuzz
#   make check-tsan    the Check suites under ThreadSanitizer (build/tsan)
#   make check-fast    unit and mock-cluster suites only
#   make check-compat  build, check-fast and the TLS/SASL real-Kafka suite on Debian 13
#                      (librdkafka 2.8.0) in a cached chroot
#   make install PREFIX=/usr/local DESTDIR=
#
# Sources are found by wildcard: lib/*.c is the library, tests/test_*.c are
# Check suites (one runner each), examples/*.c and tools/*.c are programs.

PREFIX       ?= /usr/local
EXEC_PREFIX  ?= $(PREFIX)
LIBDIR       ?= $(EXEC_PREFIX)/lib
BINDIR       ?= $(EXEC_PREFIX)/bin
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR      ?=

CC     ?= cc
BUILD  ?= build
SAN    ?=
# Link-only flags of a sanitizer build (check-tsan pulls in lib/tsan_support.c).
SAN_LD ?=

# The version is read from the header, never repeated here.
VHDR    := include/robustkafka/common.h
VMAJOR  := $(shell sed -n 's/^\#define RBK_VERSION_MAJOR  *\([0-9][0-9]*\).*/\1/p' $(VHDR))
VMINOR  := $(shell sed -n 's/^\#define RBK_VERSION_MINOR  *\([0-9][0-9]*\).*/\1/p' $(VHDR))
VPATCH  := $(shell sed -n 's/^\#define RBK_VERSION_PATCH  *\([0-9][0-9]*\).*/\1/p' $(VHDR))
VERSION := $(VMAJOR).$(VMINOR).$(VPATCH)

LIBNAME  := librobustkafka
SONAME   := $(LIBNAME).so.$(VMAJOR)
SOFULL   := $(LIBNAME).so.$(VERSION)

# Every library we link; robustkafka.pc's Requires.private is generated from it.
PKGS      := rdkafka glib-2.0 openssl sqlite3
DEPS_OK   := $(BUILD)/.deps-ok
# Found by pkg-config on any system, the build needs nothing else; only when
# one is missing does INSTALL_DEPS run (Debian packages, or what to install).
PKG_CONFIG   ?= pkg-config
INSTALL_DEPS ?= scripts/install-deps

PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS   ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(WARN) -fPIC -fvisibility=hidden -D_GNU_SOURCE \
             -Iinclude -Ilib $(PKG_CFLAGS) $(SAN) $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lpthread -lm

LIB_SRCS  := $(sort $(wildcard lib/*.c))
LIB_OBJS  := $(patsubst lib/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS))
HEADERS   := include/robustkafka.h $(sort $(wildcard include/robustkafka/*.h))

SHLIB     := $(BUILD)/$(SOFULL)
STLIB     := $(BUILD)/$(LIBNAME).a

TEST_SRCS := $(sort $(wildcard tests/test_*.c))
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
TEST_SUPPORT := $(filter-out $(TEST_SRCS),$(sort $(wildcard tests/*.c)))
CHECK_CFLAGS = $(shell $(PKG_CONFIG) --cflags check 2>/dev/null)
CHECK_LIBS   = $(shell $(PKG_CONFIG) --libs check 2>/dev/null)

# Programs driven by the real-Kafka suites (tests/kafka/*.sh).
KAFKA_TEST_SRCS := $(sort $(wildcard tests/kafka/*.c))
KAFKA_TEST_BINS := $(patsubst tests/kafka/%.c,$(BUILD)/tests/kafka/%,$(KAFKA_TEST_SRCS))

EXAMPLE_SRCS := $(sort $(wildcard examples/*.c))
# The HTTP example needs libmicrohttpd (scripts/install-deps examples); it is
# built only when pkg-config finds it. The library itself opens no port.
MHD_OK := $(shell $(PKG_CONFIG) --exists libmicrohttpd 2>/dev/null && echo 1)
ifneq ($(MHD_OK),1)
EXAMPLE_SRCS := $(filter-out examples/metrics_server.c,$(EXAMPLE_SRCS))
endif
EXAMPLE_BINS := $(patsubst examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRCS))
TOOL_SRCS    := $(sort $(wildcard tools/*.c))
TOOL_BINS    := $(patsubst tools/%.c,$(BUILD)/bin/%,$(TOOL_SRCS))

.PHONY: all lib deps examples tools tests check check-fast check-unit check-asan check-tsan \
        check-valgrind check-kafka check-kafka-tls check-install check-symbols check-header check-layers check-deps \
        check-examples check-fuzz check-compat check-consumer fuzz demo bench docs install uninstall clean

all: lib tools

lib: $(SHLIB) $(STLIB)

# Nothing to do when pkg-config finds every library (any distribution);
# otherwise install-deps installs the missing Debian packages (or says
# exactly what is missing, when not root or not on Debian).
deps: $(DEPS_OK)
$(DEPS_OK): scripts/install-deps
	@mkdir -p $(@D)
	@if ! $(PKG_CONFIG) --exists $(PKGS) check 2>/dev/null; then \
	  echo "make: pkg-config does not find all of: $(PKGS) check; running $(INSTALL_DEPS) build" >&2; \
	  $(INSTALL_DEPS) build; \
	fi
	@touch $@

$(BUILD)/obj/%.o: lib/%.c $(HEADERS) $(wildcard lib/*.h) | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(SHLIB): $(LIB_OBJS)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined $(SAN) -o $@ $^ $(LDLIBS_ALL)
	ln -sf $(SOFULL) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/$(LIBNAME).so

$(STLIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

# Programs link the static archive so tests can reach internal (rbk__) symbols.
$(BUILD)/tests/%: tests/%.c $(TEST_SUPPORT) $(wildcard tests/*.h) $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -Itests -o $@ $< $(TEST_SUPPORT) $(SAN_LD) $(STLIB) $(CHECK_LIBS) $(LDLIBS_ALL)

# The quickstart suite compiles the example itself.
$(BUILD)/tests/test_quickstart: examples/quickstart.c

$(BUILD)/tests/kafka/%: tests/kafka/%.c $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(SAN_LD) $(STLIB) $(LDLIBS_ALL)

$(BUILD)/examples/%: examples/%.c $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(SAN_LD) $(STLIB) $(LDLIBS_ALL)

$(BUILD)/examples/metrics_server: examples/metrics_server.c $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(shell $(PKG_CONFIG) --cflags libmicrohttpd) -o $@ $< $(SAN_LD) \
	    $(STLIB) $(shell $(PKG_CONFIG) --libs libmicrohttpd) $(LDLIBS_ALL)

$(BUILD)/bin/%: tools/%.c $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(SAN_LD) $(STLIB) $(LDLIBS_ALL)

examples: $(EXAMPLE_BINS)
tools: $(TOOL_BINS)
tests: $(TEST_BINS)

# Regenerated on every run, so PREFIX/LIBDIR given on the command line always land in it.
$(BUILD)/robustkafka.pc: pkgconfig/robustkafka.pc.in $(VHDR) Makefile FORCE
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@REQUIRES_PRIVATE@|$(PKGS)|g' $< > $@

# ---------------------------------------------------------------- tests

# Unit and mock-cluster Check suites, each runner printing its own summary.
check-unit: $(TEST_BINS) $(TOOL_BINS) $(EXAMPLE_BINS)
	@scripts/run-tests $(BUILD) $(TEST_BINS)

# The consumer suites alone (check-compat runs them again under the other
# rebalance protocol: RBK_TEST_ASSIGNOR).
CONSUMER_TEST_BINS := $(filter $(BUILD)/tests/test_consumer% $(BUILD)/tests/test_quarantine $(BUILD)/tests/test_admin,$(TEST_BINS))
check-consumer: $(CONSUMER_TEST_BINS) $(TOOL_BINS)
	@scripts/run-tests $(BUILD) $(CONSUMER_TEST_BINS)

check-symbols: $(SHLIB)
	@scripts/check-symbols $(SHLIB)

check-header:
	@scripts/check-header

# Calls run down the layers; only the partition module writes partition state.
check-layers:
	@scripts/check-layers

check-install: lib $(BUILD)/robustkafka.pc
	@scripts/check-install

# The build asks install-deps only for what pkg-config does not find.
check-deps:
	@scripts/check-deps

check-fast: deps check-header check-symbols check-layers check-deps check-unit

check-asan:
	$(MAKE) BUILD=$(BUILD)/asan SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	        CFLAGS="-O1 -g" check-unit

# librdkafka and GLib are not instrumented: tests/tsan.supp lists their internal
# races only; scripts/run-tests sets TSAN_OPTIONS and fails a suite on any report.
check-tsan:
	RBK_TSAN=1 $(MAKE) BUILD=$(BUILD)/tsan SAN="-fsanitize=thread -fno-omit-frame-pointer" \
	        SAN_LD="-Wl,--undefined=thrd_create" CFLAGS="-O1 -g" check-unit

check-valgrind: $(TEST_BINS)
	@$(INSTALL_DEPS) test
	@RBK_VALGRIND=1 scripts/run-tests $(BUILD) $(TEST_BINS)

check-kafka: $(TOOL_BINS) $(EXAMPLE_BINS) $(TEST_BINS) $(KAFKA_TEST_BINS)
	@scripts/install-deps kafka
	@scripts/run-kafka-tests $(BUILD)

# The TLS/SASL/OAUTHBEARER suite alone, for check-compat's root (which carries
# its Java, kcat and openssl; make check-kafka installs them on this machine).
check-kafka-tls: $(KAFKA_TEST_BINS)
	@RBK_BUILD=$(BUILD) bash tests/kafka/tls.sh

check-examples: $(EXAMPLE_BINS) $(TOOL_BINS)
	@if [ -x scripts/run-example-tests ]; then scripts/run-example-tests $(BUILD); fi

check-fuzz:
	@if [ -x scripts/fuzz ]; then scripts/install-deps fuzz && scripts/fuzz short; fi

fuzz:
	@scripts/install-deps fuzz
	@scripts/fuzz long

# make $(RBK_COMPAT_TARGETS) (default: all check-fast) on a newer Debian, in a chroot
# made once with mmdebstrap and cached outside the repository (docs/testing.md).
check-compat:
	@scripts/check-compat run
	@echo "check-compat: the consumer suites again under eager assignment (range,roundrobin)"
	@RBK_TEST_ASSIGNOR=range,roundrobin RBK_COMPAT_TARGETS="check-consumer" scripts/check-compat run
	@echo "check-compat: the TLS/SASL/OAUTHBEARER suite against a real cluster (SCRAM-SHA-512 in full)"
	@scripts/check-compat kafka

# The test command: everything CI runs.
check: check-fast check-install check-asan check-tsan check-valgrind check-fuzz check-examples check-kafka
	@echo "make check: all suites passed"

# ---------------------------------------------------------------- demo, bench, docs

demo: lib tools $(BUILD)/examples/demo
	$(BUILD)/examples/demo

bench:
	@scripts/install-deps bench
	$(MAKE) CFLAGS="-O2 -g" $(BUILD)/bench/rbk-bench $(BUILD)/bench/mockcluster lib tools
	@scripts/run-bench $(BUILD)

$(BUILD)/bench/%: bench/%.c $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(STLIB) $(LDLIBS_ALL)

docs:
	@scripts/install-deps docs
	doxygen docs/Doxyfile

# ---------------------------------------------------------------- install

install: lib tools $(BUILD)/robustkafka.pc
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/robustkafka $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0755 $(SHLIB) $(DESTDIR)$(LIBDIR)/$(SOFULL)
	ln -sf $(SOFULL) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/$(LIBNAME).so
	install -m 0644 $(STLIB) $(DESTDIR)$(LIBDIR)/$(LIBNAME).a
	install -m 0644 include/robustkafka.h $(DESTDIR)$(INCLUDEDIR)/robustkafka.h
	install -m 0644 $(wildcard include/robustkafka/*.h) $(DESTDIR)$(INCLUDEDIR)/robustkafka/
	install -m 0644 $(BUILD)/robustkafka.pc $(DESTDIR)$(PKGCONFIGDIR)/robustkafka.pc
	$(if $(TOOL_BINS),install -d $(DESTDIR)$(BINDIR) && install -m 0755 $(TOOL_BINS) $(DESTDIR)$(BINDIR)/)

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(SOFULL) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	      $(DESTDIR)$(LIBDIR)/$(LIBNAME).so $(DESTDIR)$(LIBDIR)/$(LIBNAME).a \
	      $(DESTDIR)$(INCLUDEDIR)/robustkafka.h $(DESTDIR)$(PKGCONFIGDIR)/robustkafka.pc
	rm -f $(addprefix $(DESTDIR)$(INCLUDEDIR)/robustkafka/,$(notdir $(wildcard include/robustkafka/*.h)))
	-rmdir $(DESTDIR)$(INCLUDEDIR)/robustkafka 2>/dev/null
	$(if $(TOOL_BINS),rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(TOOL_BINS))))

clean:
	rm -rf $(BUILD)

.PHONY: FORCE
FORCE:
