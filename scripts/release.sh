#!/usr/bin/env bash
# Release binaries in target/release (`make release`, packaging/build-deb.sh).
#
# `dso-runc` runs on every runc call an engine makes, and `dso` once per create with secrets
# (dso-runc execs it): both are relinked as static-pie executables, so that neither call pays
# the dynamic loader (for the 16 MB `dso`: 4 libraries and ~28,000 relocations resolved at
# start; `perf stat` of its exec on a quiet machine: 1.00 ms CPU dynamic, 0.76 ms static;
# BENCHMARKS.md). Packed relative relocations (DT_RELR) make `dso` 0.8 MB smaller; they did
# not change its start-up time measurably. Cargo cannot ask for that per binary, hence the relink after the build.
# Static glibc resolves users, groups and host names through the `files` and `dns` sources of
# nsswitch.conf by itself; other sources (sss, ldap, systemd) are loaded from the glibc
# installed, which must be the one dso was built against (docs/install.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --bins "$@"
for bin in dso-runc dso; do
    cargo rustc --release --bin "$bin" "$@" -- \
        -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs
done
