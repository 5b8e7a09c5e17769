#!/usr/bin/env bash
# Runs the cargo-fuzz targets (docs/fuzzing.md). Not run in CI: CI replays what this leaves in
# fuzz/corpus/ and fuzz/regressions/ (tests/fuzz_regressions.rs).
#
#   scripts/fuzz.sh [target|all] [seconds]     default: all, 60 seconds per target
#
# For each target: fuzz for the given time (one target at a time, one job), minimize the corpus
# (`cargo fuzz cmin`), and copy every crash, timeout or leak libFuzzer wrote into
# fuzz/regressions/<target>/ (add it to git with the fix). Needs a nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`). Extra libFuzzer flags: FUZZ_FLAGS="-max_len=8192".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGETS=(argv refs config spec webhook local_store)
which=${1:-all}
seconds=${2:-60}
toolchain=${FUZZ_TOOLCHAIN:-+nightly}

if [[ $which == all ]]; then
    selected=("${TARGETS[@]}")
elif [[ " ${TARGETS[*]} " == *" $which "* ]]; then
    selected=("$which")
else
    echo "usage: $0 [all|${TARGETS[*]// /|}] [seconds]" >&2
    exit 2
fi
[[ $seconds =~ ^[0-9]+$ ]] || { echo "seconds must be a number: $seconds" >&2; exit 2; }

found=0
for t in "${selected[@]}"; do
    corpus=fuzz/corpus/$t
    artifacts=fuzz/artifacts/$t
    mkdir -p "$corpus" "$artifacts" "fuzz/regressions/$t"
    echo "==> $t: fuzzing for ${seconds}s"
    # A crash ends the run early with a non-zero status; keep going to minimize and collect.
    # shellcheck disable=SC2086
    cargo "$toolchain" fuzz run "$t" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 ${FUZZ_FLAGS:-} \
        || echo "==> $t: the fuzzer stopped with a finding (status $?)"
    # Edge coverage, greedy set cover: the smallest corpus that reaches every edge the whole
    # corpus reaches (hit-count buckets would keep ten times the files; the corpus is in git).
    echo "==> $t: minimizing the corpus"
    cargo "$toolchain" fuzz cmin "$t" "$corpus" -- -set_cover_merge=1 -use_counters=0 \
        -timeout=10 -rss_limit_mb=2048 \
        >"fuzz/artifacts/$t.cmin.log" 2>&1 || echo "==> $t: cmin failed, see fuzz/artifacts/$t.cmin.log"
    for f in "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/leak-* "$artifacts"/oom-*; do
        [[ -e $f ]] || continue
        if [[ -e fuzz/regressions/$t/$(basename "$f") ]]; then
            rm -f "$f" # the same input again: already a regression input
            continue
        fi
        mv "$f" "fuzz/regressions/$t/"
        echo "==> $t: finding $(basename "$f") moved to fuzz/regressions/$t/"
        found=$((found + 1))
    done
done

if ((found > 0)); then
    echo "==> $found finding(s): reproduce with cargo +nightly fuzz run <target> <file>, fix, commit the file"
    exit 1
fi
echo "==> no findings"
