#!/usr/bin/env bash
# Fuzz Arcane's parsers of outside input with cargo-fuzz (libFuzzer, nightly Rust).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    (default: 300 s, every target)
#
# Each target runs alone (one process, one thread: the machine is shared) for the given time,
# starting from its committed seeds (fuzz/corpus/<target>/, read only); what it discovers goes
# to a scratch corpus ($FUZZ_WORK_DIR, default /var/tmp/arcane-fuzz), never into the repository.
# A crash leaves its input in fuzz/artifacts/<target>/ and the script exits 1 at the end; turn
# it into a fix plus a regression test, and add the (minimized: `cargo +nightly fuzz tmin`)
# input to the committed corpus, which tests/fuzz_corpus.rs replays on stable.
#
# Environment: FUZZ_SANITIZER (none, address; default none: the crates forbid unsafe code and
# the fuzzer runs about twice as fast without ASan), FUZZ_WORK_DIR, FUZZ_ARGS (extra libFuzzer
# flags). Debug assertions (overflow checks) are on.
set -euo pipefail

secs=${1:-300}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
work=${FUZZ_WORK_DIR:-/var/tmp/arcane-fuzz}
sanitizer=${FUZZ_SANITIZER:-none}

if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# The workspace's lock file: the differential targets compare Arcane's readers with the
# arrow-json and arrow-csv versions Arcane is built with, not whatever is newest (arrow-csv
# 60.2 infers non-ASCII values as strings, 60.1 lets its patterns judge them).
cp "$root/Cargo.lock" Cargo.lock

# All targets at once: they share every dependency.
cargo +nightly fuzz build -s "$sanitizer" -a >&2

failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t"
    log="$work/$t.log"
    echo "== $t: ${secs}s" >&2
    status=ok
    # shellcheck disable=SC2086
    cargo +nightly fuzz run -s "$sanitizer" -a "$t" "$work/corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        ${FUZZ_ARGS:-} >"$log" 2>&1 || status=CRASH
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*$' || true)
    ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*$' || true)
    corp=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' <<<"$last" | cut -d' ' -f2 || true)
    seeds=$(find "corpus/$t" -type f | wc -l)
    if [ "$status" != ok ]; then
        failed=1
        status="CRASH: $(grep -o 'Test unit written to .*' "$log" | tail -n 1 | sed 's/Test unit written to //')"
    fi
    summary+=("$(printf '%-16s %6ss %12s %8s %8s %12s %6s  %s' "$t" "$secs" "${runs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$seeds" "$status")")
done

printf '%-16s %7s %12s %8s %8s %12s %6s  %s\n' target time runs cov features corpus seeds result
printf '%s\n' "${summary[@]}"
echo "logs and scratch corpora: $work" >&2
exit "$failed"
