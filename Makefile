# Entry points; the scripts hold the logic (see README.md).
.PHONY: all build release test demo bench

all: build

build:
	cargo build

# Release binaries in target/release. dso-runc runs on every runc call Docker makes, so it is
# relinked as a static executable (no dynamic loader on each call: ~0.4 ms less per call,
# measured by make bench); cargo cannot ask for that per binary, hence the second step.
release:
	cargo build --release
	cargo rustc --release --bin dso-runc -- -C target-feature=+crt-static

# The whole suite, as CI runs it (root: installs deps, runs the dockerd end-to-end tests).
test:
	scripts/test.sh

# The main job on a throwaway private dockerd (root).
demo:
	scripts/demo.sh

# Benchmarks against plain runc in the same run (release binaries): runtime cost, then rotation.
bench: release
	python3 bench/bench.py
	python3 bench/rotation.py
