#!/usr/bin/env bash
# Release binaries in target/release (`make release`, packaging/build-deb.sh).
#
# `dso-runc` runs on every runc call an engine makes, and `dso` once per create with secrets
# (dso-runc execs it). Neither pays a dynamic loader:
# - `dso` is relinked as a static-pie glibc executable (for the 20 MB `dso`, dynamic linking
#   meant 4 libraries and ~28,000 relocations resolved at start: 1.00 ms CPU, static 0.76 ms;
#   BENCHMARKS.md). Static glibc resolves users, groups and host names through the `files` and
#   `dns` sources of nsswitch.conf by itself; other sources (sss, ldap, systemd) are loaded from
#   the glibc installed, which must be the one dso was built against (docs/install.md).
# - `dso-runc` is built for musl (static-pie) when this machine can: static glibc's start-up
#   alone costs 0.46 ms of CPU per exec on a VM, where each of its `cpuid` instructions traps to
#   the hypervisor, musl's 0.10-0.15 ms (BENCHMARKS.md). dso-runc looks up no user, group or
#   host, so musl's lack of NSS modules does not matter to it; musl's allocator, which hands
#   freed memory back to the kernel at once, it does not use (a bump arena: runtime/arena.rs).
#   It needs Rust's x86_64-unknown-linux-musl target (rustup) and musl-gcc (Debian's musl-tools,
#   for the C in ring, which Cargo builds for the whole library); without them dso-runc is
#   static-pie glibc, as `dso`, and this script says so (DSO_RELEASE_GLIBC_ONLY=1 asks for that).
# Packed relative relocations (DT_RELR) make `dso` 0.8 MB smaller. Cargo cannot ask for a
# static link or a target per binary, hence the relinks after the build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

relr=(-C link-arg=-Wl,-z,pack-relative-relocs)
target_dir=${CARGO_TARGET_DIR:-target}
# A musl dso-runc copied here by an earlier run is not Cargo's: gone, Cargo links its own again.
rm -f "$target_dir/release/dso-runc"
cargo build --release --bins "$@"
for bin in dso-runc dso; do
    cargo rustc --release --bin "$bin" "$@" -- -C target-feature=+crt-static "${relr[@]}"
done

musl=x86_64-unknown-linux-musl
if [[ ${DSO_RELEASE_GLIBC_ONLY:-} != 1 && $(uname -m) == x86_64 ]] &&
    command -v musl-gcc >/dev/null &&
    { rustup target list --installed 2>/dev/null | grep -qx "$musl" ||
        rustup target add "$musl" >/dev/null 2>&1; }; then
    CC_x86_64_unknown_linux_musl=musl-gcc \
        cargo rustc --release --target "$musl" --bin dso-runc "$@" -- "${relr[@]}"
    # Replace, not overwrite in place: an engine may be running the old one.
    cp "$target_dir/$musl/release/dso-runc" "$target_dir/release/.dso-runc.musl"
    mv -f "$target_dir/release/.dso-runc.musl" "$target_dir/release/dso-runc"
    echo "release: dso-runc built for $musl"
else
    echo "release: dso-runc is static glibc (DSO_RELEASE_GLIBC_ONLY=1, no musl-gcc or no $musl target);" \
        "its start-up costs about 0.3 ms more per runc call on a VM (BENCHMARKS.md)" >&2
fi
