# A thin wrapper over CMake.  `make demo` and `make test` do all set-up.
BUILD      ?= build
TEST_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CONFIG     ?= etc/plugboard.cfg
BENCH_BUILD ?= build-bench
PEERS      ?= 0

.PHONY: all deps test-deps build demo run check test install clean \
        bench bench-quick bench-build

all: build

deps:
	@bash scripts/install-deps

test-deps:
	@bash scripts/install-deps --test

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPLUGBOARD_TESTS=OFF >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# Build, start the host on the default config, send it real Stripe sample
# webhooks (signed, plus a forged and a duplicate one), show what reached
# each destination, stop the host.
demo: build
	@/usr/bin/python3 scripts/demo.py --binary $(BUILD)/plugboard --config $(CONFIG)

# Start the host in the foreground on $(CONFIG); Ctrl-C stops it.
run: build
	@STRIPE_WEBHOOK_SECRET=$${STRIPE_WEBHOOK_SECRET:-whsec_plugboard_demo_only} \
	    $(BUILD)/plugboard run -c $(CONFIG)

check: build
	@STRIPE_WEBHOOK_SECRET=$${STRIPE_WEBHOOK_SECRET:-whsec_plugboard_demo_only} \
	    $(BUILD)/plugboard check -c $(CONFIG)

# Everything under AddressSanitizer and UndefinedBehaviorSanitizer.
test: test-deps
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPLUGBOARD_SANITIZE=ON >/dev/null
	@cmake --build $(TEST_BUILD) -j$(JOBS)
	@cd $(TEST_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure -j$(JOBS)

# Install the binary, the bundled connectors (into $(PREFIX)/lib/plugboard/
# plugins, the host's default plugin directory), the connector SDK (headers,
# libplugboard-sdk.a, libplugboard-harness.a, plugboard-sdk.pc, the CMake
# package for find_package(plugboard)) and its docs.  DESTDIR stages it.
PREFIX     ?= /usr/local
install: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPLUGBOARD_TESTS=OFF \
	    -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)
	@DESTDIR=$(DESTDIR) cmake --install $(BUILD)

# Benchmarks in a Release (non-sanitized) build: a table on stdout and
# bench/results.json.  PEERS=1 also installs and measures Node-RED.
bench-build:
	@PEERS=$(PEERS) bash scripts/install-deps --bench
	@cmake -S . -B $(BENCH_BUILD) -DCMAKE_BUILD_TYPE=Release \
	    -DPLUGBOARD_SANITIZE=OFF -DPLUGBOARD_TESTS=OFF -DPLUGBOARD_BENCH=ON >/dev/null
	@cmake --build $(BENCH_BUILD) -j$(JOBS) >$(BENCH_BUILD)/build.log 2>&1 || \
	    { cat $(BENCH_BUILD)/build.log; exit 1; }

bench: bench-build
	@/usr/bin/python3 bench/run.py --build $(BENCH_BUILD) $(if $(filter 1,$(PEERS)),--peers)

bench-quick: bench-build
	@/usr/bin/python3 bench/run.py --build $(BENCH_BUILD) --quick $(if $(filter 1,$(PEERS)),--peers)

clean:
	rm -rf $(BUILD) $(TEST_BUILD) $(BENCH_BUILD)
