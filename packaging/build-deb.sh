#!/usr/bin/env bash
# Builds the .deb with cargo-deb: generates the man pages and shell completions from the
# built `dso` (into packaging/generated/), then packages the binaries.
#
#   packaging/build-deb.sh            release build, target/debian/dso_<version>-1_<arch>.deb
#   packaging/build-deb.sh --dev      package the debug binaries already built (tests; quick)
#
# Needs cargo-deb (scripts/install-deps.sh installs it). Extra arguments go to cargo deb.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=release
if [[ ${1:-} == --dev ]]; then
    profile=dev
    shift
fi
target_dir=${CARGO_TARGET_DIR:-target}
out_dir=$target_dir/$([[ $profile == dev ]] && echo debug || echo release)

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: cargo-deb is missing: run scripts/install-deps.sh (cargo install cargo-deb --locked)" >&2
    exit 1
fi

deb_args=()
if [[ $profile == release ]]; then
    # Built here (static relinks), not by cargo deb, which would link them dynamically again.
    scripts/release.sh
    deb_args+=(--no-build)
else
    # The debug binaries must exist already (cargo build / cargo test make them).
    for b in dso dso-runc dso-init; do
        if [[ ! -x $out_dir/$b ]]; then
            echo "build-deb: $out_dir/$b is missing: run cargo build first" >&2
            exit 1
        fi
    done
    # Debug info would make a 100+ MB package; stripping keeps it small and quick to compress.
    deb_args+=(--no-build --profile dev --strip --no-separate-debug-symbols --fast)
fi

gen=packaging/generated
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions"
"$out_dir/dso" man --dir "$gen/man"
"$out_dir/dso" completions bash >"$gen/completions/dso"
"$out_dir/dso" completions zsh >"$gen/completions/_dso"
"$out_dir/dso" completions fish >"$gen/completions/dso.fish"

cargo deb "${deb_args[@]}" "$@"
