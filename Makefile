# keepmq - the two commands README promises, and their parts.
#   make run    install what is missing, build, run the broker (etc/keepmq.conf)
#   make test   install what is missing, build, run every test; one summary line
# Everything builds out of tree: build/ (release), build-asan/ (sanitizers),
# build-fuzz/ (clang + libFuzzer).

JOBS ?= $(shell nproc)
BUILD ?= build
CONF ?= etc/keepmq.conf

.PHONY: all build run test deps test-deps unit integration fuzz docs bench clean

all: build

deps:
	@scripts/install-deps.sh build

test-deps:
	@scripts/install-deps.sh test

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

run: build
	./$(BUILD)/keepmq -c $(CONF)

test: test-deps
	@scripts/run-tests.sh

# Regenerates docs/configuration.md from the configuration tables.
docs: build
	./$(BUILD)/keepmq --config-doc > docs/configuration.md

bench: build test-deps
	bench/run.sh

clean:
	rm -rf build build-asan build-fuzz build-*/
