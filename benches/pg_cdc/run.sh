#!/usr/bin/env bash
# PostgreSQL CDC throughput of the `arcane` binary (postgres-cdc kind) into local Parquet,
# against the machine's PostgreSQL (needs wal_level=logical; scripts/test.sh sets it):
#
#  1. snapshot: ROWS rows loaded into a fresh table, read by `arcane run --backfill` (slot +
#     consistent snapshot, keyset-paged by primary key, one binary COPY per page) → rows/s and
#     MB/s of the table, the whole process run (and its CPU seconds);
#  2. change stream: CHANGES inserts in transactions of TX_ROWS rows, written while arcane is
#     stopped, then `arcane run` (streaming) from the backfill's committed position until the
#     slot's confirmed_flush_lsn reaches the WAL position after the last commit (the slot is
#     advanced only after the sink committed) → rows/s, process start included;
#  3. reference, same run, same table: `\copy (SELECT * FROM t) TO /dev/null` (text) and
#     `COPY t TO STDOUT (FORMAT binary)` through psql.
#
#   benches/pg_cdc/run.sh                       # 1M rows, 200k changes
#   ROWS=200000 CHANGES=50000 benches/pg_cdc/run.sh
#   ROWS=2000000 CHANGES=100000 ROUNDS=5 benches/pg_cdc/run.sh   # medians of 5 snapshot rounds
#
# Connection: PGCONN (default host=127.0.0.1 port=5432 user=postgres dbname=test). Work files
# go to ARCANE_BENCH_DIR (default /var/tmp/arcane-bench-pg). The table, slot and publication
# are dropped at the end, also on failure.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
rows="${ROWS:-1000000}"
changes="${CHANGES:-200000}"
tx_rows="${TX_ROWS:-50000}"
batch_rows="${BATCH_ROWS:-50000}"
# SINK_WRITER: the sink's `writer` settings as JSON, e.g. '{"encodeThreads": 1}' (default {}).
conn="${PGCONN:-host=127.0.0.1 port=5432 user=postgres dbname=test}"
work="${ARCANE_BENCH_DIR:-/var/tmp/arcane-bench-pg}"
target="${CARGO_TARGET_DIR:-$root/target}"
name="bench_cdc_$$"
mkdir -p "$work"

log() { printf '[pg_cdc %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
sql() { psql "$conn" -v ON_ERROR_STOP=1 -qAtc "$1"; }
now() { date +%s.%N; }
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$name';
         DROP PUBLICATION IF EXISTS $name; DROP TABLE IF EXISTS $name;" >/dev/null 2>&1 && return
    sleep 1
  done
  log "could not drop $name: drop its slot by hand"
}
trap cleanup EXIT

if [ -n "${ARCANE_BIN:-}" ]; then
  bin="$ARCANE_BIN"  # e.g. a debug binary, to check the harness itself
else
  log "building arcane (release)"
  cargo build --quiet --release -p arcane-cli --bin arcane --features postgres-cdc
  bin="$target/release/arcane"
fi

log "loading $rows rows into $name"
sql "CREATE TABLE $name (id int8 PRIMARY KEY, customer_id int4 NOT NULL, amount numeric(12,2),
       status text, note text, created_at timestamptz NOT NULL, score float8, paid bool);
     INSERT INTO $name SELECT g, g % 100000, (g % 100000) / 100.0, (ARRAY['new','paid','shipped'])[1 + g % 3],
       'order note ' || md5(g::text), timestamptz '2026-01-01' + g * interval '1 second',
       g / 7.0::float8, g % 2 = 0
     FROM generate_series(1, $rows) g;
"
sql "VACUUM ANALYZE $name"
table_mb="$(sql "SELECT pg_table_size('$name') / 1e6")"

out="$work/out"
rm -rf "$out"
cat > "$work/spec.json" <<JSON
{
  "apiVersion": "streaming.sneaksanddata.com/v1",
  "kind": "PostgresCdcStream",
  "metadata": {"name": "bench-cdc"},
  "spec": {
    "source": {"connection": "$conn", "table": "$name", "slot": "$name", "publication": "$name",
               "batchRows": $batch_rows, "pollInterval": "100ms"},
    "sink": {"url": "file://$out", "rolling": {"targetFileSize": 4294967296, "maxRowsPerFile": 1000000000, "maxFileAge": "1s"},
             "writer": ${SINK_WRITER:-{\}}},
    "rowsPerGroup": $((batch_rows * 4)),
    "groupingIntervalSeconds": 1
  }
}
JSON

# --- 1. snapshot, and 3. the reference, ROUNDS times alternating ---------------------------
# Each round: a fresh slot and output, arcane's backfill, then the two COPYs of the same table.
# The medians are reported (this host's speed varies between runs), with every round's figures.
rounds="${ROUNDS:-1}"
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
: >"$work/rounds"
for round in $(seq 1 "$rounds"); do
  if [ "$round" -gt 1 ]; then
    sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$name'" >/dev/null
    rm -rf "$out"
  fi
  log "snapshot: arcane run --backfill (round $round of $rounds)"
  t0="$(now)"
  /usr/bin/time -f '%U %S' -o "$work/snapshot.cpu" \
    "$bin" run --spec "$work/spec.json" --metrics-addr off --termination-log off --log-format json \
    --backfill >"$work/snapshot.log" 2>&1
  t1="$(now)"
  cpu="$(awk '{printf "%.2f", $1 + $2}' "$work/snapshot.cpu")"
  snap="$(echo "$t1 - $t0" | bc -l)"
  t0="$(now)"; psql "$conn" -qc "\\copy (SELECT * FROM $name) TO /dev/null"; t1="$(now)"
  text="$(echo "$t1 - $t0" | bc -l)"
  t0="$(now)"; psql "$conn" -qc "COPY $name TO STDOUT (FORMAT binary)" >/dev/null; t1="$(now)"
  bin_s="$(echo "$t1 - $t0" | bc -l)"
  printf '%s %s %s %s\n' "$snap" "$cpu" "$text" "$bin_s" >>"$work/rounds"
  log "round $round: arcane $(printf %.2f "$snap") s ($cpu CPU s), text COPY $(printf %.2f "$text") s, binary COPY $(printf %.2f "$bin_s") s"
done
snap_s="$(awk '{print $1}' "$work/rounds" | median)"
snap_cpu="$(awk '{print $2}' "$work/rounds" | median)"
copy_text_s="$(awk '{print $3}' "$work/rounds" | median)"
copy_bin_s="$(awk '{print $4}' "$work/rounds" | median)"

# --- 2. change stream ------------------------------------------------------------------------
log "writing $changes inserts in transactions of $tx_rows rows"
t0="$(now)"
start="$((rows + 1))"
while [ "$start" -le "$((rows + changes))" ]; do
  end="$((start + tx_rows - 1))"; [ "$end" -gt "$((rows + changes))" ] && end="$((rows + changes))"
  sql "INSERT INTO $name SELECT g, g % 100000, (g % 100000) / 100.0, 'new', 'order note ' || md5(g::text),
         timestamptz '2026-01-01' + g * interval '1 second', g / 7.0::float8, g % 2 = 0
         FROM generate_series($start, $end) g;"
  start="$((end + 1))"
done
insert_s="$(echo "$(now) - $t0" | bc -l)"
target_lsn="$(sql "SELECT pg_current_wal_lsn()")"
log "change stream: arcane run (streaming) until the slot reaches $target_lsn"
t0="$(now)"
# Not through the function: `$!` must be arcane's own PID, which the SIGTERM below goes to.
"$bin" run --spec "$work/spec.json" --metrics-addr off --termination-log off --log-format json \
  >"$work/stream.log" 2>&1 &
pid=$!
until [ "$(sql "SELECT confirmed_flush_lsn >= '$target_lsn' FROM pg_replication_slots WHERE slot_name = '$name'")" = t ]; do
  kill -0 "$pid" 2>/dev/null || { log "arcane exited early; see $work/stream.log"; exit 1; }
  sleep 0.1
done
t1="$(now)"
# CPU seconds (user + system) of arcane and of the walsender streaming to it, before they exit.
ticks="$(getconf CLK_TCK)"
cpu_of() {
  if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then
    awk -v t="$ticks" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"
  else
    echo '— (no walsender: changes read by SQL)'
  fi
}
stream_cpu="$(cpu_of "$pid")"
walsender_cpu="$(cpu_of "$(sql "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$name'")")"
kill -TERM "$pid"; wait "$pid" || true; pid=
stream_s="$(echo "$t1 - $t0" | bc -l)"

shown="$("$bin" show "file://$out" --limit 0 2>/dev/null | sed -n 's/.*files *\([0-9]*\) (\([0-9]*\) rows.*/\2/p' | head -1)"
log "committed rows: ${shown:-?} (expected $((rows + changes)))"
[ "${shown:-0}" = "$((rows + changes))" ] || { log "row count mismatch"; exit 1; }

printf '\n%s rows snapshot, %s inserts in transactions of %s, batchRows %s, %s cores, load %s, %s\n\n' \
  "$rows" "$changes" "$tx_rows" "$batch_rows" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(date +%F)"
printf '| measurement | rows | wall s | rows/s | MB/s of the table (%.0f MB) |\n|---|---|---|---|---|\n' "$table_mb"
row() {
  printf '| %s | %s | %.2f | %.0f | %s |\n' "$1" "$2" "$3" "$(echo "$2 / $3" | bc -l)" \
    "$([ -n "${4:-}" ] && printf '%.0f' "$(echo "$table_mb / $3" | bc -l)" || echo '—')"
}
row "arcane snapshot (backfill) → Parquet" "$rows" "$snap_s" table
row 'psql `\copy (SELECT * FROM t) TO /dev/null` (text)' "$rows" "$copy_text_s" table
row 'psql `COPY t TO STDOUT (FORMAT binary)` > /dev/null' "$rows" "$copy_bin_s" table
row "arcane change stream (inserts) → Parquet" "$changes" "$stream_s"
row "the inserts themselves (one psql session, INSERT … SELECT)" "$changes" "$insert_s"
printf '\nCPU seconds (user + system): arcane snapshot %s; change stream: arcane %s, walsender %s\n' \
  "$snap_cpu" "$stream_cpu" "$walsender_cpu"
printf '\nsnapshot rounds: %s (medians above)\n\n| round | arcane s | arcane CPU s | text COPY s | binary COPY s | arcane / text | arcane / binary |\n|---|---|---|---|---|---|---|\n' "$rounds"
awk '{printf "| %d | %.2f | %.2f | %.2f | %.2f | %.2f× | %.2f× |\n", NR, $1, $2, $3, $4, $3 / $1, $4 / $1}' "$work/rounds"
printf '| median | %.2f | %.2f | %.2f | %.2f | %.2f× | %.2f× |\n' "$snap_s" "$snap_cpu" "$copy_text_s" "$copy_bin_s" \
  "$(echo "$copy_text_s / $snap_s" | bc -l)" "$(echo "$copy_bin_s / $snap_s" | bc -l)"
