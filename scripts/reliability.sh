#!/usr/bin/env bash
# The reliability table: for every kind in arcane-cli/tests/reliability.rs and every fault
# class (SIGKILL, SIGTERM at seeded random moments, rerun until done; store faults, source
# faults, malformed input), TRIALS trials per cell, each comparing the committed output (and
# dead letters) with the input (lost, duplicated, extra) and checking every exit code; and the
# one-trial disk-full and memory-limit tests (arcane-cli/tests/disk_full.rs, memory_limit.rs;
# they need root).
#
#   scripts/reliability.sh                 # 100 trials per cell
#   scripts/reliability.sh 5               # the short version
#   scripts/reliability.sh 100 s3          # only the cells whose test name matches
#
# Each cell's result replaces that cell's line in reliability/results.jsonl (committed), and
# RELIABILITY.md is rendered from all of them with the command, date and duration of the run.
# Needs what scripts/test.sh sets up (run it once first): the machine's NATS and RabbitMQ, and
# the S3 server, whose endpoint must be in ARCANE_TEST_S3_ENDPOINT. A failing cell prints its
# seed: ARCANE_RELIABILITY_SEED=<seed> replays that cell's schedule.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
trials="${1:-100}"
filter="${2:-}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
started=$(date +%s)
status=0
ARCANE_RELIABILITY_TRIALS="$trials" ARCANE_RELIABILITY_OUT="$out" \
  cargo nextest run --workspace --all-features \
  -E "(binary(reliability) | binary(disk_full) | binary(memory_limit))${filter:+ & test(/$filter/)}" \
  --no-fail-fast --test-threads 2 ||
  status=$?
elapsed=$(($(date +%s) - started))
python3 reliability/render.py "$out" "$trials" "$elapsed" "$status" "$filter"
cat RELIABILITY.md
exit "$status"
