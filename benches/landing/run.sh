#!/usr/bin/env bash
# Land ~1 GB of NDJSON order events into zstd(1) Parquet on the local file system with the
# `arcane` binary (blob-landing kind, backfill mode) and, in the same run, with DuckDB, Polars
# and pyarrow (installed here from PyPI) and the single-thread Rust ceiling (arrow-json decode
# + ArrowWriter, `ndjson_ceiling`). Prints wall time, input MB/s and peak RSS of each (median
# of ROUNDS runs) and the ratios to arcane.
#
#   benches/landing/run.sh            # ~1 GB, 3 rounds
#   GB=0.2 ROUNDS=1 benches/landing/run.sh
#   NO_BUILD=1 benches/landing/run.sh   # reuse the release binaries already built
#
# Work files go to ARCANE_BENCH_DIR (default /var/tmp/arcane-bench); the input is generated
# once by examples/data/generate.py (deterministic) and reused.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
work="${ARCANE_BENCH_DIR:-/var/tmp/arcane-bench}"
gb="${GB:-1}"
rounds="${ROUNDS:-3}"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$work"

log() { printf '[landing %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# --- Tools --------------------------------------------------------------------------------
if ! "$work/venv/bin/python" -c 'import duckdb, polars, pyarrow' 2>/dev/null; then
  log "installing duckdb, polars, pyarrow into $work/venv"
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet --disable-pip-version-check duckdb polars pyarrow
fi
py="$work/venv/bin/python"
if [ -z "${NO_BUILD:-}" ]; then
  log "building arcane and ndjson_ceiling (release)"
  cargo build --quiet --release -p arcane-cli --bin arcane -p arcane-benches --bin ndjson_ceiling
fi

# --- Input ----------------------------------------------------------------------------------
days=10
rows_per_day="$(python3 -c "print(int($gb * 1e9 / 205 / $days))")"
input="$work/ndjson-$rows_per_day"
if [ ! -f "$input/.done" ]; then
  log "generating $days files of $rows_per_day order events into $input"
  rm -rf "$input"
  python3 examples/data/generate.py --days "$days" --rows-per-day "$rows_per_day" --out "$input" >/dev/null
  touch "$input/.done"
fi
bytes="$(cat "$input"/*.ndjson | wc -c)"
rows="$((days * rows_per_day))"
log "input: $rows rows, $bytes bytes"

# --- Runners (each writes zstd(1) Parquet under $out) --------------------------------------
cat > "$work/spec.json" <<JSON
{
  "apiVersion": "streaming.sneaksanddata.com/v1",
  "kind": "BlobLandingStream",
  "metadata": {"name": "bench"},
  "spec": {
    "source": {
      "url": "$input/",
      "format": "ndjson",
      "suffix": ".ndjson",
      "schema": [
        {"name": "order_id", "type": "utf8", "nullable": false},
        {"name": "customer_id", "type": "int64"},
        {"name": "event_time", "type": "timestamp[ms, UTC]", "nullable": false},
        {"name": "status", "type": "utf8"},
        {"name": "amount", "type": "float64"},
        {"name": "currency", "type": "utf8"},
        {"name": "items", "type": "int32"},
        {"name": "country", "type": "utf8"},
        {"name": "channel", "type": "utf8"},
        {"name": "coupon", "type": "utf8"}
      ]
    },
    "sink": {
      "url": "OUT",
      "rolling": {"targetFileSize": 4294967296, "maxRowsPerFile": 1000000000},
      "backfillBehavior": "merge"
    },
    "rowsPerGroup": 65536
  }
}
JSON

cat > "$work/others.py" <<'PY'
import glob, sys
tool, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
files = sorted(glob.glob(src + "/*.ndjson"))
if tool == "duckdb":
    import duckdb
    con = duckdb.connect()
    con.execute("SET threads = 2")
    cols = ("{order_id: 'VARCHAR', customer_id: 'BIGINT', event_time: 'TIMESTAMPTZ', status: 'VARCHAR', "
            "amount: 'DOUBLE', currency: 'VARCHAR', items: 'INTEGER', country: 'VARCHAR', "
            "channel: 'VARCHAR', coupon: 'VARCHAR'}")
    con.execute(f"COPY (SELECT * FROM read_json({files!r}, format = 'newline_delimited', columns = {cols})) "
                f"TO '{out}/out.parquet' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)")
elif tool == "polars":
    import polars as pl
    schema = {"order_id": pl.Utf8, "customer_id": pl.Int64, "event_time": pl.Utf8, "status": pl.Utf8,
              "amount": pl.Float64, "currency": pl.Utf8, "items": pl.Int32, "country": pl.Utf8,
              "channel": pl.Utf8, "coupon": pl.Utf8}
    (pl.scan_ndjson(files, schema=schema)
       .with_columns(pl.col("event_time").str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", time_unit="ms", time_zone="UTC"))
       .sink_parquet(f"{out}/out.parquet", compression="zstd", compression_level=1))
elif tool == "pyarrow":
    import pyarrow as pa, pyarrow.json as pj, pyarrow.parquet as pq
    schema = pa.schema([("order_id", pa.string()), ("customer_id", pa.int64()),
                        ("event_time", pa.timestamp("ms", tz="UTC")), ("status", pa.string()),
                        ("amount", pa.float64()), ("currency", pa.string()), ("items", pa.int32()),
                        ("country", pa.string()), ("channel", pa.string()), ("coupon", pa.string())])
    opts = pj.ParseOptions(explicit_schema=schema)
    with pq.ParquetWriter(f"{out}/out.parquet", schema, compression="zstd", compression_level=1) as w:
        for f in files:
            w.write_table(pj.read_json(f, parse_options=opts))
else:
    raise SystemExit(f"unknown tool {tool}")
PY

run_one() { # tool out -> "wall_secs peak_rss_kib"
  local tool="$1" out="$2"
  rm -rf "$out"; mkdir -p "$out"
  case "$tool" in
    arcane)
      sed "s#\"OUT\"#\"$out\"#" "$work/spec.json" > "$work/spec-run.json"
      /usr/bin/time -f '%e %M' -o "$work/time" "$target/release/arcane" run --spec "$work/spec-run.json" \
        --backfill --metrics-addr off --termination-log off --log-format json >"$work/arcane.log" 2>&1 ;;
    ceiling)
      /usr/bin/time -f '%e %M' -o "$work/time" "$target/release/ndjson_ceiling" "$out/out.parquet" \
        "$input"/*.ndjson >/dev/null ;;
    *)
      /usr/bin/time -f '%e %M' -o "$work/time" "$py" "$work/others.py" "$tool" "$input" "$out" ;;
  esac
  cat "$work/time"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

tools=(arcane ceiling duckdb polars pyarrow)
declare -A wall rss
for tool in "${tools[@]}"; do
  walls=(); rsss=()
  for r in $(seq 1 "$rounds"); do
    read -r w m < <(run_one "$tool" "$work/out-$tool")
    walls+=("$w"); rsss+=("$m")
    log "$tool round $r: ${w}s, peak RSS $((m / 1024)) MiB"
  done
  wall[$tool]="$(printf '%s\n' "${walls[@]}" | median)"
  rss[$tool]="$(printf '%s\n' "${rsss[@]}" | median)"
done

# Every output holds every row.
"$py" - "$work" "$rows" "${tools[@]}" <<'PY'
import glob, sys
import pyarrow.parquet as pq
work, rows, tools = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for t in tools:
    files = [f for f in glob.glob(f"{work}/out-{t}/**/*.parquet", recursive=True) if "_dead_letters" not in f]
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    assert n == rows, f"{t}: {n} rows, expected {rows}"
print(f"all outputs hold {rows} rows", file=sys.stderr)
PY

printf '\ninput: %s rows, %.0f MB NDJSON, %s rounds (median), %s cores, %s\n\n' \
  "$rows" "$(echo "$bytes / 1000000" | bc -l)" "$rounds" "$(nproc)" "$(date +%F)"
printf '| tool | wall s | MB/s | peak RSS MiB | arcane speed × | arcane RSS ÷ |\n|---|---|---|---|---|---|\n'
for tool in "${tools[@]}"; do
  w="${wall[$tool]}"; m="${rss[$tool]}"
  printf '| %s | %.2f | %.0f | %.0f | %.2f | %.2f |\n' "$tool" "$w" \
    "$(echo "$bytes / 1000000 / $w" | bc -l)" "$(echo "$m / 1024" | bc -l)" \
    "$(echo "$w / ${wall[arcane]}" | bc -l)" "$(echo "$m / ${rss[arcane]}" | bc -l)"
done
