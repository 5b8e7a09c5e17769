#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run): dependencies (when root), format, lint,
# build, and every test target (unit, real runc, end-to-end against private dockerds).
# Runs every step even after a failure and exits non-zero if any step failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

failed=()
summary=()

step() {
    local name=$1
    shift
    printf '\n==================== %s ====================\n' "$name"
    printf '$ %s\n' "$*"
    local start=$SECONDS
    if "$@"; then
        summary+=("ok      $name ($((SECONDS - start))s)")
    else
        local rc=$?
        summary+=("FAILED  $name ($((SECONDS - start))s, exit $rc)")
        failed+=("$name")
    fi
}

if [[ $(id -u) -eq 0 ]]; then
    step "install dependencies" scripts/install-deps.sh
else
    printf '\n(not root: skipping scripts/install-deps.sh; root-only tests will be skipped)\n'
fi
step "format" cargo fmt --all -- --check
step "SECURITY.md claims name real tests" python3 scripts/security-claims.py
step "no module cycle" python3 scripts/module-graph.py
step "clippy" cargo clippy --all-targets --all-features -- -D warnings
step "build" cargo build --all-features
# Every target with tests (the binaries have none; build.rs builds dso-init).
# Skipped tests (no root, daemon or tool here) pass as far as cargo knows: each one also writes
# a line to $DSO_SKIP_LOG (dso::test_support::skipped), and the report below counts them, and
# the ignored ones, by suite.
report_dir=$(mktemp -d)
trap 'rm -rf "$report_dir"' EXIT
export DSO_SKIP_LOG="$report_dir/skipped.tsv"
# Tests that need root and real engines are #[ignore]d (a plain `cargo test` lists them as
# ignored instead of passing them unrun); this suite runs them, all but the seed-corpus writer
# and the CRI benchmark (bench/bench.py runs that one).
run_tests() {
    cargo test --workspace --all-features --lib --tests --benches --examples --no-fail-fast -- --include-ignored \
        --skip write_seed_corpus --skip cri_bench_rounds 2>&1 | tee "$report_dir/cargo-test.log"
}
step "tests" run_tests
# The benchmarks are not pass/fail on their figures, but they must keep working: a short run of
# each with the debug binaries (root only: they run containers).
if [[ $(id -u) -eq 0 ]]; then
    step "bench smoke (runtime)" python3 bench/bench.py --smoke --bindir target/debug
    step "bench smoke (rotation)" python3 bench/rotation.py --smoke --bindir target/debug
    step "bench smoke (musl dso-runc)" scripts/musl-smoke.sh
fi

printf '\n==================== tests by suite: skipped and ignored ====================\n'
python3 scripts/test-report.py "$report_dir/cargo-test.log" "$DSO_SKIP_LOG"

printf '\n==================== summary ====================\n'
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    printf '\n%d step(s) failed: %s\n' "${#failed[@]}" "${failed[*]}"
    exit 1
fi
printf '\nall steps passed\n'
