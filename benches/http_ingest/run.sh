#!/usr/bin/env bash
# Acknowledgement throughput and latency of the `http-ingest` kind: the release `arcane` binary
# serves HTTP on 127.0.0.1 and lands CloudEvents into zstd Parquet; `http_ingest_load`
# (benches/src/bin/http_ingest_load.rs) sends from SENDERS concurrent senders for SECONDS each,
# single events (structured mode) and batches of 100 (batch mode), and records every request's
# latency from send to its 200 (which the endpoint answers only once the events are in a
# committed file). After each run arcane is stopped with SIGTERM (it must exit 0) and the
# committed row count (`arcane show`) must equal the events the client got a 200 for.
#
#   benches/http_ingest/run.sh                         # local file system, 1/16/64 senders, 20 s each
#   SENDERS="1 16" BATCHES="1 100" SECONDS_EACH=10 benches/http_ingest/run.sh
#   SINK=s3 benches/http_ingest/run.sh                 # to moto S3 (needs a binary with the s3 feature)
#   NO_BUILD=1 benches/http_ingest/run.sh              # reuse the release binaries already built
#
# Settings: INTERVAL (groupingIntervalSeconds, default 1: the kind's default), ROWS_PER_GROUP
# (default 10000), PORT (default 46012), MOTO_PORT (default 46010), PAYLOAD_BYTES (default 100:
# a `payload` string in each event's data). Work files go to ARCANE_BENCH_DIR (default
# /var/tmp/arcane-bench-http).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
work="${ARCANE_BENCH_DIR:-/var/tmp/arcane-bench-http}"
target="${CARGO_TARGET_DIR:-$root/target}"
senders_list="${SENDERS:-1 16 64}"
batches_list="${BATCHES:-1 100}"
seconds="${SECONDS_EACH:-20}"
interval="${INTERVAL:-1}"
rows_per_group="${ROWS_PER_GROUP:-10000}"
port="${PORT:-46012}"
sink="${SINK:-file}"
moto_port="${MOTO_PORT:-46010}"
payload_bytes="${PAYLOAD_BYTES:-100}"
py="${ARCANE_TEST_PYTHON:-/var/tmp/arcane-ci-tools/venv/bin/python}"
mkdir -p "$work"

log() { printf '[http_ingest %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
pid=""
moto_pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null && wait "$moto_pid" 2>/dev/null || true
}
trap cleanup EXIT

features="http-ingest"
[ "$sink" = s3 ] && features="http-ingest,s3"
if [ -z "${NO_BUILD:-}" ]; then
  log "building arcane ($features) and http_ingest_load (release)"
  cargo build --quiet --release -p arcane-cli --bin arcane --features "$features" \
    -p arcane-benches --bin http_ingest_load
fi
bin="${ARCANE_BIN:-$target/release/arcane}"
load="${LOAD_BIN:-$target/release/http_ingest_load}"

storage_options="{}"
show_options=()
if [ "$sink" = s3 ]; then
  log "starting moto on 127.0.0.1:$moto_port"
  "$(dirname "$py")/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
  moto_pid=$!
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$moto_port/" >/dev/null && break; sleep 0.2; done
  curl -sf -X PUT "http://127.0.0.1:$moto_port/bench" >/dev/null
  storage_options="{\"aws_endpoint\": \"http://127.0.0.1:$moto_port\", \"aws_allow_http\": \"true\",
    \"aws_access_key_id\": \"testing\", \"aws_secret_access_key\": \"testing\", \"aws_region\": \"us-east-1\"}"
  for kv in aws_endpoint=http://127.0.0.1:$moto_port aws_allow_http=true aws_access_key_id=testing \
    aws_secret_access_key=testing aws_region=us-east-1; do
    show_options+=(--storage-option "$kv")
  done
fi

run_case() { # senders events-per-request -> one result line on stdout
  local senders="$1" events="$2" out
  if [ "$sink" = s3 ]; then
    out="s3://bench/run-$senders-$events-$$"
  else
    out="$work/out-$senders-$events"
    rm -rf "$out"
  fi
  cat > "$work/spec.json" <<JSON
{
  "apiVersion": "streaming.sneaksanddata.com/v1",
  "kind": "HttpIngestStream",
  "metadata": {"name": "bench-push"},
  "spec": {
    "source": {
      "address": "127.0.0.1:$port",
      "schema": [
        {"name": "sender", "type": "int64", "nullable": false},
        {"name": "n", "type": "int64", "nullable": false},
        {"name": "payload", "type": "utf8"}
      ],
      "maxEventsPerRequest": 1000
    },
    "sink": {"url": "$out", "storageOptions": $storage_options},
    "rowsPerGroup": $rows_per_group,
    "groupingIntervalSeconds": $interval
  }
}
JSON
  "$bin" run --spec "$work/spec.json" --metrics-addr off \
    --termination-log off --log-format json >"$work/arcane.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local line
  line="$("$load" --url "http://127.0.0.1:$port/events" --senders "$senders" --events "$events" \
    --seconds "$seconds" --payload-bytes "$payload_bytes" --label "$sink")"
  local rss_kib
  rss_kib="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")"
  kill -TERM "$pid"
  local code=0
  wait "$pid" || code=$?
  pid=""
  if [ "$code" != 0 ]; then
    log "arcane exited $code after SIGTERM; log: $work/arcane.log"
    tail -5 "$work/arcane.log" >&2
    exit 1
  fi
  local committed acked files
  committed="$("$bin" show "$out" --limit 0 "${show_options[@]}" | sed -n 's/^files *\([0-9]*\) (\([0-9]*\) rows.*/\2/p')"
  files="$("$bin" show "$out" --limit 0 "${show_options[@]}" | sed -n 's/^files *\([0-9]*\) (.*/\1/p')"
  acked="$(sed -n 's/.* events_acked=\([0-9]*\) .*/\1/p' <<<"$line")"
  if [ "$committed" != "$acked" ]; then
    log "committed $committed rows, but $acked events were acknowledged: $line"
    exit 1
  fi
  echo "$line committed_rows=$committed files=$files arcane_peak_rss_mib=$(( rss_kib / 1024 ))"
}

log "sink $sink, groupingIntervalSeconds $interval, rowsPerGroup $rows_per_group, $seconds s per case"
results=()
for events in $batches_list; do
  for senders in $senders_list; do
    line="$(run_case "$senders" "$events")"
    log "$line"
    results+=("$line")
  done
done

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
printf '\nsink %s, groupingIntervalSeconds %s, rowsPerGroup %s, %s s per case, %s cores, load %s, %s\n\n' \
  "$sink" "$interval" "$rows_per_group" "$seconds" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(date +%F)"
printf '| events/request | senders | events acked | events/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx | files | arcane peak RSS MiB |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
for line in "${results[@]}"; do
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
    "$(field events_per_request "$line")" "$(field senders "$line")" "$(field events_acked "$line")" \
    "$(field events_s "$line")" "$(field p50_ms "$line")" "$(field p90_ms "$line")" \
    "$(field p99_ms "$line")" "$(field max_ms "$line")" \
    "$(( $(field refused "$line") + $(field errors "$line") ))" "$(field files "$line")" \
    "$(field arcane_peak_rss_mib "$line")"
done
