# A thin wrapper over CMake.  `make demo` and `make test` do all set-up.
BUILD      ?= build
TEST_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CONFIG     ?= etc/plugboard.cfg

.PHONY: all deps test-deps build demo run check test clean

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
	@$(BUILD)/plugboard check -c $(CONFIG)

# Everything under AddressSanitizer and UndefinedBehaviorSanitizer.
test: test-deps
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPLUGBOARD_SANITIZE=ON >/dev/null
	@cmake --build $(TEST_BUILD) -j$(JOBS)
	@cd $(TEST_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure -j$(JOBS)

clean:
	rm -rf $(BUILD) $(TEST_BUILD)
