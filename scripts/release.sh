#!/usr/bin/env bash
# Release binaries in target/release (`make release`, packaging/build-deb.sh).
#
# `dso-runc` runs on every runc call an engine makes, and `dso` once per create with secrets
# (dso-runc execs it): both are relinked as static-pie executables with packed relative
# relocations (DT_RELR), so that neither call pays the dynamic loader (≈ 0.7 ms CPU for the
# 16 MB `dso`: 4 libraries, ~28,000 relocations resolved eagerly; measured by `make bench`,
# BENCHMARKS.md). Cargo cannot ask for that per binary, hence the relink after the build.
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
