# Entry points; the scripts hold the logic (see README.md).
.PHONY: all build release test demo bench

all: build

build:
	cargo build

# Release binaries in target/release; dso-runc and dso relinked static (see the script).
release:
	scripts/release.sh

# The whole suite, as CI runs it (root: installs deps, runs the dockerd end-to-end tests).
test:
	scripts/test.sh

# The main job on a throwaway private dockerd (root).
demo:
	scripts/demo.sh

# Benchmarks against plain runc in the same run (release binaries): runtime cost, then rotation.
bench: release
	python3 bench/bench.py
	python3 bench/bench.py --accounting 300
	python3 bench/rotation.py
