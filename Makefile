# A thin wrapper over CMake and CTest, so that a fresh Debian 12 machine needs two
# commands: `make run` and `make test`. Everything real lives in CMakeLists.txt.

BUILD_DIR   ?= build
ASAN_DIR    ?= build-asan
TSAN_DIR    ?= build-tsan
FUZZ_DIR    ?= build-fuzz
FUZZ_SECONDS ?= 30
JOBS        ?= $(shell nproc)
RUN_DIR     ?= $(CURDIR)/run
CTEST_ARGS  ?=

# Build and test dependencies, all from Debian's archive.
PACKAGES := cmake ninja-build g++ pkg-config libevent-dev libssl-dev libmilter-dev \
            libtoml11-dev libhiredis-dev libgtest-dev libbenchmark-dev python3 \
            libc-ares-dev libcurl4-openssl-dev nlohmann-json3-dev postfix swaks curl \
            dnsmasq-base iproute2 openssl redis-server

# The .deb (make deb) and its test: sd_notify, the man pages, dpkg-shlibdeps, lintian,
# systemd-analyze verify.
PACKAGES += libsystemd-dev scdoc dpkg-dev lintian systemd
# Sendmail's integration test runs Debian's sendmail-bin unpacked (it conflicts with
# postfix): m4 builds its .cf, its shared libraries come from here, and saslpasswd2
# (sasl2-bin) writes the sasldb its AUTH checks.
PACKAGES += m4 libwrap0 liblockfile1 libdb5.3 libldap-2.5-0 libnsl2 libsasl2-2 \
            libsasl2-modules libsasl2-modules-db sasl2-bin

# A locale with a decimal comma, for the test that JSON numbers ignore the locale.
PACKAGES += locales
TEST_LOCALE := de_DE.UTF-8

FUZZ_PACKAGES := clang libclang-rt-14-dev

.PHONY: all build run test test-asan test-tsan fuzz deps fuzz-deps test-locale clean deb

all: build

deps:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing missing packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make: run as root, or install them with: sudo apt-get install$$missing" >&2; exit 1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# Generated once (as root); without it the locale test skips, which CI counts as a failure.
test-locale: deps
	@if ! locale -a 2>/dev/null | grep -qix 'de_DE.utf8'; then \
	  if [ "$$(id -u)" = 0 ]; then echo "make: generating the $(TEST_LOCALE) locale for the tests"; \
	    localedef -i de_DE -f UTF-8 $(TEST_LOCALE); \
	  else echo "make: no $(TEST_LOCALE) locale (as root: localedef -i de_DE -f UTF-8 $(TEST_LOCALE))"; fi; \
	fi

fuzz-deps:
	@$(MAKE) --no-print-directory deps PACKAGES="$(FUZZ_PACKAGES)"

# Configured for the .deb's layout (/usr/sbin, /usr/lib/<multiarch>, /etc): `make deb`
# packages this same build, and `make run`/`make test` do not care where it would install.
$(BUILD_DIR)/build.ninja:
	cmake -G Ninja -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr

build: deps $(BUILD_DIR)/build.ninja
	@grep -qx 'CMAKE_INSTALL_PREFIX:PATH=/usr' $(BUILD_DIR)/CMakeCache.txt || \
	  cmake -S . -B $(BUILD_DIR) -DCMAKE_INSTALL_PREFIX=/usr
	cmake --build $(BUILD_DIR) -j $(JOBS)

# The .deb, from the Release build above (cpack installs it into a staging folder):
# $(BUILD_DIR)/zetian-milter_<version>-1_<arch>.deb. integration.deb tests it.
deb: build
	cd $(BUILD_DIR) && cpack -G DEB

run: build
	@mkdir -p $(RUN_DIR)/state
	@echo "zetian-milter: listening on inet:8891@127.0.0.1, health socket $(RUN_DIR)/health.sock"
	@echo "Register it with Postfix by adding these two lines to /etc/postfix/main.cf:"
	@echo "    smtpd_milters = inet:127.0.0.1:8891"
	@echo "    milter_default_action = accept"
	@echo "then: postfix reload.   Status: $(BUILD_DIR)/milter/zetianctl -s $(RUN_DIR)/health.sock status"
	@echo "Stop with Ctrl-C."
	exec $(BUILD_DIR)/milter/zetian-milter \
	  --set health.socket=$(RUN_DIR)/health.sock \
	  --set node.state_dir=$(RUN_DIR)/state \
	  --set log.target=stderr

# Under CI=true a skipped test fails the run (tests/run_ctest.sh).
test: build test-locale
	tests/run_ctest.sh $(BUILD_DIR) -j $(JOBS) $(CTEST_ARGS)

# The ASan and fuzz builds use Clang with line tables only (-g1): they compile in about
# half the CPU time of GCC with full debug information, which is most of CI's time
# (docs/BENCHMARKS.md, "CI time"), and the reports still name file and line. The
# shipped build (build/) stays GCC. A folder configured earlier with another compiler
# is started afresh, since CMake cannot switch the compiler of a build folder.
CLANG_CMAKE = CC=clang CXX=clang++ cmake -G Ninja -S .
define fresh_for_clang
	@if [ -f $(1)/CMakeCache.txt ] && ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang++' $(1)/CMakeCache.txt; then \
	  echo "make: $(1) was configured with another compiler; removing it to configure it with Clang"; rm -rf $(1); fi
endef

# ASan+UBSan build running the unit and integration tests. It is the Debug build
# (assert() live, -O1 to keep the suite quick): every other build defines NDEBUG.
test-asan: deps fuzz-deps test-locale
	$(call fresh_for_clang,$(ASAN_DIR))
	$(CLANG_CMAKE) -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g1 -O1" \
	  -DCMAKE_C_FLAGS_DEBUG="-g1 -O1" -DZETIAN_SANITIZE=address -DZETIAN_BENCH=OFF
	cmake --build $(ASAN_DIR) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  tests/run_ctest.sh $(ASAN_DIR) -j $(JOBS) -L 'unit|integration' $(CTEST_ARGS)

# TSan build running the unit tests (threads: the store, the mailbox, the loop). GCC,
# with line tables only: Clang's TSan runtime is a static archive whose operator new
# collides with the allocation-counting tests' own (tests/unit/cluster/allocation_counter.h).
test-tsan: deps test-locale
	cmake -G Ninja -S . -B $(TSAN_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
	  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DZETIAN_SANITIZE=thread -DZETIAN_BENCH=OFF
	cmake --build $(TSAN_DIR) -j $(JOBS)
	TSAN_OPTIONS=halt_on_error=1 tests/run_ctest.sh $(TSAN_DIR) -j $(JOBS) -L unit $(CTEST_ARGS)

# libFuzzer (clang) builds of the fuzz targets: replay the seeds, then fuzz each
# target for FUZZ_SECONDS. Longer campaigns: tests/fuzz/README.md.
fuzz: deps fuzz-deps
	$(call fresh_for_clang,$(FUZZ_DIR))
	$(CLANG_CMAKE) -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
	  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DZETIAN_BENCH=OFF -DZETIAN_FUZZ=ON -DZETIAN_FUZZ_SECONDS=$(FUZZ_SECONDS)
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz_targets
	tests/run_ctest.sh $(FUZZ_DIR) -j $(JOBS) -L fuzz $(CTEST_ARGS)

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(TSAN_DIR) $(FUZZ_DIR)
