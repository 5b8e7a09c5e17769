# Entry points; the scripts hold the logic (see README.md).
.PHONY: all build test demo bench

all: build

build:
	cargo build

# The whole suite, as CI runs it (root: installs deps, runs the dockerd end-to-end tests).
test:
	scripts/test.sh

# The main job on a throwaway private dockerd (root).
demo:
	scripts/demo.sh

# Benchmarks: scripts/bench.sh if present, else bench/bench.py (on release binaries).
bench:
	@if [ -x scripts/bench.sh ]; then \
		scripts/bench.sh; \
	elif [ -f bench/bench.py ]; then \
		cargo build --release && python3 bench/bench.py; \
	else \
		echo "no benchmark yet (scripts/bench.sh or bench/bench.py)"; \
	fi
