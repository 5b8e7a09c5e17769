#!/usr/bin/env bash
# The runtime bench's smoke run with dso-runc built for musl, as scripts/release.sh builds it
# where it can, beside the debug `dso` and dso-init: every row (runc, `docker run`, CRI)
# then goes through a musl dso-runc. Where the musl target or musl-gcc cannot be had, release
# builds use a glibc dso-runc (which the other smoke runs cover) and this says it was skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

musl=x86_64-unknown-linux-musl
if ! command -v musl-gcc >/dev/null ||
    ! rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
    echo "musl smoke: SKIPPED: no musl-gcc or no $musl target here (release dso-runc is glibc)"
    exit 0
fi
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --target "$musl" --bin dso-runc
target_dir=${CARGO_TARGET_DIR:-target}
bindir=$(mktemp -d /tmp/dso-musl-bin.XXXXXX)
trap 'rm -rf "$bindir"' EXIT
cp "$target_dir/debug/dso" "$target_dir/debug/dso-init" "$bindir/"
cp "$target_dir/$musl/debug/dso-runc" "$bindir/"
if readelf -l "$bindir/dso-runc" | grep -q "program interpreter" || grep -qa glibc "$bindir/dso-runc"; then
    echo "musl smoke: $bindir/dso-runc is not a static musl executable" >&2
    exit 1
fi
python3 bench/bench.py --smoke --bindir "$bindir"
