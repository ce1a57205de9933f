#!/usr/bin/env bash
# What a long-running http-ingest stream's many manifests cost: the kind commits about once a
# second, and the sink keeps every manifest under `_arcane/manifests/` (each holding the
# idempotency window twice). This script
#
#  1. runs the release `arcane` binary (http-ingest, local file system) for SECONDS_EACH seconds
#     under `http_ingest_load` (16 senders, batches of 100: the default window of 1 000 ids is
#     full), then stops it with SIGTERM;
#  2. for each N in COUNTS, copies that dataset and adds manifests up to N in all, each a copy
#     of the newest real one (same state and checkpoint, no files: the commit of a request whose
#     events were all duplicates looks like this), numbered on;
#  3. times, on each copy: `arcane show URL` (reads every manifest), `arcane show --files URL`
#     (the same, plus the visibility check), and a restart of the stream to its first
#     `/readyz` 200 (the sink's open lists the manifests and reads the newest).
#
#   benches/http_ingest/manifests.sh                      # COUNTS="1000 5000 20000"
#   COUNTS="100 2000" NO_BUILD=1 benches/http_ingest/manifests.sh
#
# Work files go to ARCANE_BENCH_DIR (default /var/tmp/arcane-bench-http).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
work="${ARCANE_BENCH_DIR:-/var/tmp/arcane-bench-http}"
target="${CARGO_TARGET_DIR:-$root/target}"
counts="${COUNTS:-1000 5000 20000}"
seconds="${SECONDS_EACH:-5}"
port="${PORT:-46012}"
mkdir -p "$work"
log() { printf '[manifests %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; }
trap cleanup EXIT

if [ -z "${NO_BUILD:-}" ]; then
  log "building arcane (http-ingest) and http_ingest_load (release)"
  cargo build --quiet --release -p arcane-cli --bin arcane --features http-ingest,s3 \
    -p arcane-benches --bin http_ingest_load
fi
bin="${ARCANE_BIN:-$target/release/arcane}"
load="${LOAD_BIN:-$target/release/http_ingest_load}"

spec() { # out-dir -> spec file
  cat > "$work/manifests-spec.json" <<JSON
{
  "apiVersion": "streaming.sneaksanddata.com/v1",
  "kind": "HttpIngestStream",
  "metadata": {"name": "bench-push"},
  "spec": {
    "source": {"address": "127.0.0.1:$port", "dataFormat": "json"},
    "sink": {"url": "$1"}
  }
}
JSON
}
start() { # out-dir; sets pid and ready (seconds until /readyz is 200)
  spec "$1"
  local t0
  t0="$(date +%s.%N)"
  "$bin" run --spec "$work/manifests-spec.json" --metrics-addr off --termination-log off \
    --log-format json >"$work/manifests-arcane.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { log "arcane exited; see $work/manifests-arcane.log"; exit 1; }
    sleep 0.01
  done
  ready="$(echo "$(date +%s.%N) - $t0" | bc -l)"
}
stop() {
  kill -TERM "$pid"
  wait "$pid" || { log "arcane did not exit 0 after SIGTERM"; exit 1; }
  pid=""
}
timed() { local t0; t0="$(date +%s.%N)"; "$@" >/dev/null; echo "$(date +%s.%N) - $t0" | bc -l; }

base="$work/manifests-base"
rm -rf "$base"
log "a real stream: $seconds s of 16 senders x 100 events"
start "$base"
"$load" --url "http://127.0.0.1:$port/events" --senders 16 --events 100 --seconds "$seconds" >&2
stop
real="$(ls "$base/_arcane/manifests" | wc -l)"
log "$real real manifests"

printf '\n%s, %s cores, load %s\n\n' "$(date +%F)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| manifests | manifest bytes (total) | `arcane show` s | `arcane show --files` s | restart to ready s |\n|---|---|---|---|---|\n'
for n in $counts; do
  copy="$work/manifests-$n"
  rm -rf "$copy"
  cp -r "$base" "$copy"
  python3 - "$copy/_arcane/manifests" "$n" <<'PY'
import json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
names = sorted(os.listdir(d))
newest = json.load(open(os.path.join(d, names[-1])))
for seq in range(newest["sequence"] + 1, n):
    m = dict(newest, sequence=seq, files=[], rows=0, bytes=0)
    with open(os.path.join(d, f"{seq:020}.json"), "w") as f:
        json.dump(m, f, indent=2)
PY
  bytes="$(du -sb "$copy/_arcane/manifests" | cut -f1)"
  show="$(timed "$bin" show "$copy" --limit 0)"
  files="$(timed "$bin" show --files "$copy")"
  start "$copy"
  stop
  printf '| %s | %s | %.2f | %.2f | %.2f |\n' "$n" "$bytes" "$show" "$files" "$ready"
done
