#!/usr/bin/env bash
# The reliability table: for every kind in arcane-cli/tests/reliability.rs and every fault
# class (SIGKILL, SIGTERM at seeded random moments, rerun until done), TRIALS trials per cell,
# each comparing the committed output with the input (lost, duplicated, extra) and checking
# every exit code. Writes RELIABILITY.md at the repository root.
#
#   scripts/reliability.sh            # 100 trials per cell (about half an hour on 2 cores)
#   scripts/reliability.sh 5          # the short version
#
# Needs what scripts/test.sh sets up (the machine's NATS and RabbitMQ; PostgreSQL later);
# run it after scripts/test.sh has installed the tools once. A failing cell prints its seed:
# ARCANE_RELIABILITY_SEED=<seed> replays that cell's schedule.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
trials="${1:-100}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
started=$(date +%s)
status=0
ARCANE_RELIABILITY_TRIALS="$trials" ARCANE_RELIABILITY_OUT="$out" \
  cargo nextest run --workspace --all-features -E 'binary(reliability)' --no-fail-fast \
  --test-threads 2 || status=$?
elapsed=$(( $(date +%s) - started ))
python3 - "$out" "$trials" "$elapsed" "$status" >RELIABILITY.md <<'EOF'
import json, sys, datetime, platform, os
path, trials, elapsed, status = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(l) for l in open(path) if l.strip()]
kinds = sorted({r["kind"] for r in rows})
faults = ["SIGKILL", "SIGTERM"]
cell = {(r["kind"], r["fault"]): r for r in rows}
print("# Reliability\n")
print("What Arcane loses when things break, measured. Each cell: trials run; in every trial, fresh")
print("input with unique ids, the `arcane` binary stopped by the fault at seeded random moments and")
print("rerun until everything was committed, then the committed output compared with the input.")
print("**lost** / **dup** / **extra** count records over all trials; **bad exits** counts runs whose")
print("exit did not match the fault (SIGTERM must exit 0 with nothing uncommitted).\n")
print(f"Produced by `scripts/reliability.sh {trials}` on {datetime.date.today()} ({os.cpu_count()} cores), "
      f"in {elapsed // 60} min {elapsed % 60} s; nextest exit status {status}.\n")
print("| kind | " + " | ".join(f"{f}: trials (runs) · lost/dup/extra · bad exits" for f in faults) + " |")
print("|---|" + "---|" * len(faults))
for k in kinds:
    cells = []
    for f in faults:
        r = cell.get((k, f))
        cells.append("not run" if r is None else
                     f"{r['trials']} ({r['runs']}) · {r['lost']}/{r['duplicated']}/{r['extra']} · {r['badExits']}")
    print(f"| {k} | " + " | ".join(cells) + " |")
print("\nSeeds (`ARCANE_RELIABILITY_SEED=<seed> cargo nextest run --workspace --all-features -E 'binary(reliability) & test(/<cell>/)'` replays one):\n")
for r in rows:
    print(f"- {r['kind']} {r['fault']}: {r['seed']} ({r['seconds']:.0f} s)")
print("\nNot yet in the table: postgres-cdc, mqtt (at least once by design: duplicates after a")
print("crash are bounded by the unacknowledged window, see arcane-cli/tests/brokers.rs), S3/Azure/GCS")
print("sinks under store faults, disk-full and memory-limit faults.")
EOF
cat RELIABILITY.md
exit "$status"
