"""Merge a reliability run's cells into reliability/results.jsonl and render RELIABILITY.md.

    python3 reliability/render.py NEW.jsonl TRIALS ELAPSED_SECONDS NEXTEST_STATUS [FILTER]

Each cell of the new run replaces the same (kind, fault) cell of earlier runs; the table shows
the latest result of every cell with the command, date and duration of the run that made it.
"""

import datetime
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "reliability", "results.jsonl")
FAULTS = ["SIGKILL", "SIGTERM"]


def main() -> None:
    path, trials, elapsed, status = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    filt = sys.argv[5] if len(sys.argv) > 5 else ""
    command = f"scripts/reliability.sh {trials}" + (f" '{filt}'" if filt else "")
    stamp = (f"{datetime.date.today()}, `{command}` ({elapsed // 60} min {elapsed % 60} s "
             f"for the whole run, nextest exit {status})")
    new = [json.loads(line) for line in open(path) if line.strip()]
    for r in new:
        r["run"] = stamp
    old = []
    if os.path.exists(RESULTS):
        old = [json.loads(line) for line in open(RESULTS) if line.strip()]
    replaced = {(r["kind"], r["fault"]) for r in new}
    rows = [r for r in old if (r["kind"], r["fault"]) not in replaced] + new
    rows.sort(key=lambda r: (r["kind"], r["fault"]))
    with open(RESULTS, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n")
    with open(os.path.join(ROOT, "RELIABILITY.md"), "w") as out:
        out.write(render(rows))


def render(rows: list) -> str:
    cell = {(r["kind"], r["fault"]): r for r in rows}
    lines = [
        "# Reliability",
        "",
        "What Arcane loses when things break, measured. In every trial of a cell: fresh input with",
        "unique ids, the `arcane` binary stopped by the fault at seeded random moments and rerun until",
        "everything was committed, then the committed output compared with the input. **lost** /",
        "**dup** / **extra** count records over all trials; **bad exits** counts runs whose exit did",
        "not match the fault (SIGTERM: exit 0 with nothing uncommitted; SIGKILL: killed; with store",
        "faults a run may also end by itself with exit 2, never 1). The harness is",
        "`arcane-cli/tests/reliability.rs`; the test suite runs 2 trials per cell,",
        "`scripts/reliability.sh` the long version and writes this file.",
        "",
        "| kind | " + " | ".join(f"{f}: trials (runs) · lost/dup/extra · bad exits" for f in FAULTS) + " |",
        "|---|" + "---|" * len(FAULTS),
    ]
    for kind in sorted({r["kind"] for r in rows}):
        cells = []
        for fault in FAULTS:
            r = cell.get((kind, fault))
            cells.append("not run" if r is None else
                         f"{r['trials']} ({r['runs']}) · {r['lost']}/{r['duplicated']}/{r['extra']}"
                         f" · {r['badExits']}")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Store faults (the S3 and Azure rows): a proxy between the sink and the S3 server (moto) or",
        "the Azure Blob emulator (azurite) injects, on a seeded",
        "schedule, 503s and 500s, connections closed before and after a call was carried out, stalls",
        "past the client's 2 s timeout, truncated listings and reads, and more of them on part uploads,",
        "completions and the manifest's put (`test-support/src/http_faults.rs`); the sink retries",
        "under `sink.retry` (4 attempts in these trials).",
        "",
        "Connections cut (the NATS and RabbitMQ rows so named): the source reaches its broker through a",
        "TCP proxy that closes every connection once in the middle of each run",
        "(`test-support/src/proxy.rs`); the source reconnects under `source.retry` and the broker",
        "redelivers what was not acknowledged.",
        "",
        "Runs and seeds (`ARCANE_RELIABILITY_SEED=<seed>` with the cell's test name replays one). A",
        "run's nextest exit covers all of its cells: a run that failed in a cell which a later run",
        "replaced (after a fix) shows its failing exit on the cells it still holds.",
        "",
    ]
    for r in rows:
        lines.append(f"- {r['kind']}, {r['fault']}: seed {r['seed']}, {r['seconds']:.0f} s; {r['run']}")
    lines += [
        "",
        "MQTT is at least once by design (MQTT messages carry no id to recognise a redelivery): its",
        "cells allow duplicates after a SIGKILL, at most the unacknowledged window (`maxUnacked`) per",
        "kill, and count them; nothing may be lost.",
        "",
        "postgres-cdc: a table with 300 rows taken by the snapshot and 300 inserted in small",
        "transactions while the runs go on; every row exactly once.",
        "",
        "Not yet in the table: http-ingest (a push source: its SIGKILL test with retrying senders is",
        "`arcane-cli/tests/http_ingest.rs`); GCS (the",
        "`fake-gcs-server` emulator does not serve the XML API that `object_store`'s GCS client lists",
        "and uploads with: listing answers 404). A full local disk is shown by",
        "`arcane-cli/tests/disk_full.rs` (exit 1 with its remedy; the rerun completes exactly once)",
        "and a memory limit by `arcane-cli/tests/memory_limit.rs` (the kernel kills the run at 40 MiB;",
        "nothing partial is visible; the rerun with room enough completes exactly once).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
