#!/usr/bin/env python3
"""Helpers of benches/landing/run.sh (run with the bench venv's python: duckdb, polars, pyarrow).

    tools.py spec MODE INPUT SINK_URL       the arcane spec (JSON) for the corpus INPUT
    tools.py run TOOL MODE INPUT OUT        land INPUT with duckdb | polars | pyarrow into OUT
    tools.py count OUT                      "ROWS DEAD_LETTER_ROWS" of the Parquet under OUT
    tools.py clear OUT                      empty OUT (a directory or an s3:// prefix)
    tools.py upload INPUT URL               copy the corpus INPUT to the s3:// prefix URL
    tools.py setup-duckdb                   install DuckDB's httpfs extension (S3 mode)
    tools.py report TSV RUN SHAPE MODE      the Markdown table of one shape and schema mode

MODE is `explicit` (every tool is given the corpus's schema: INPUT/meta.json) or `infer` (every
tool infers it). INPUT is the local corpus directory (meta.json, schema.json, part-*); with
S3_ENDPOINT (http://127.0.0.1:PORT) and S3_INPUT (s3://bucket/prefix/) set, the data files are
read from S3_INPUT instead, and OUT may be an s3:// URL.
"""
import glob
import json
import os
import sys

ENDPOINT = os.environ.get("S3_ENDPOINT", "")
S3_INPUT = os.environ.get("S3_INPUT", "")
KEY, SECRET, REGION = "testing", "testing", "us-east-1"
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.3fZ"


def meta(src):
    with open(os.path.join(src, "meta.json"), encoding="utf-8") as f:
        return json.load(f)


def s3fs():
    import pyarrow.fs as pafs

    host = ENDPOINT.split("://", 1)[1]
    return pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, region=REGION,
                             endpoint_override=host, scheme="http", allow_bucket_creation=True)


def s3_path(url):
    """s3://bucket/key -> bucket/key (pyarrow's form)."""
    return url[len("s3://"):].rstrip("/")


def polars_storage_options():
    return {"aws_access_key_id": KEY, "aws_secret_access_key": SECRET, "aws_region": REGION,
            "aws_endpoint_url": ENDPOINT, "aws_allow_http": "true"}


def inputs(src, m):
    """The data files: local paths, or s3:// URLs under S3_INPUT."""
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(src, "part-*" + m["suffix"])))
    if S3_INPUT:
        return [S3_INPUT.rstrip("/") + "/" + n for n in names]
    return [os.path.join(src, n) for n in names]


# --- arcane --------------------------------------------------------------------------------

def spec(mode, src, sink_url):
    m = meta(src)
    source = {"url": S3_INPUT or (os.path.abspath(src) + "/"), "format": m["format"], "suffix": m["suffix"],
              "compression": "gzip" if m["compression"] == "gzip" else "none"}
    if mode == "explicit":
        with open(os.path.join(src, "schema.json"), encoding="utf-8") as f:
            source["schema"] = json.load(f)
    if m["format"] == "csv":
        source["csv"] = {"header": True, "delimiter": ","}
    sink = {"url": sink_url,
            "rolling": {"targetFileSize": 4294967296, "maxRowsPerFile": 1000000000},
            "backfillBehavior": "merge"}
    if ENDPOINT:
        options = {"aws_endpoint": ENDPOINT, "aws_allow_http": "true", "aws_access_key_id": KEY,
                   "aws_secret_access_key": SECRET, "aws_region": REGION}
        if S3_INPUT:
            source["storageOptions"] = options
        if sink_url.startswith("s3://"):
            sink["storageOptions"] = options
    doc = {"apiVersion": "streaming.sneaksanddata.com/v1", "kind": "BlobLandingStream",
           "metadata": {"name": "bench"},
           "spec": {"source": source, "sink": sink, "rowsPerGroup": 65536}}
    print(json.dumps(doc, indent=2))


# --- the other tools -------------------------------------------------------------------------

def run_duckdb(mode, src, out, m, files):
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    if ENDPOINT:
        con.execute("LOAD httpfs")
        host = ENDPOINT.split("://", 1)[1]
        con.execute(f"CREATE SECRET (TYPE s3, KEY_ID '{KEY}', SECRET '{SECRET}', REGION '{REGION}', "
                    f"ENDPOINT '{host}', USE_SSL false, URL_STYLE 'path')")
    args = ""
    if mode == "explicit":
        cols = ", ".join(f"{c['name']!r}: {c['duckdb']!r}" for c in m["columns"])
        args = f", columns = {{{cols}}}"
    if m["format"] == "csv":
        read = f"read_csv({files!r}, header = true{args})"
    else:
        read = f"read_json({files!r}, format = 'newline_delimited'{args})"
    target = out.rstrip("/") + "/out.parquet"
    con.execute(f"COPY (SELECT * FROM {read}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)")


def run_polars(mode, src, out, m, files):
    import polars as pl

    opts = {"storage_options": polars_storage_options()} if ENDPOINT else {}
    schema = None
    if mode == "explicit":
        schema = {c["name"]: eval(c["polars"], {"pl": pl}) for c in m["columns"]}  # noqa: S307 (our meta.json)
    if m["format"] == "csv":
        lf = pl.scan_csv(files, schema=schema, **opts) if schema else pl.scan_csv(files, **opts)
    else:
        lf = pl.scan_ndjson(files, schema=schema, **opts) if schema else pl.scan_ndjson(files, **opts)
    if mode == "explicit":
        ts = [c["name"] for c in m["columns"] if c["arcane"].lower().startswith("timestamp")]
        if ts:
            lf = lf.with_columns([pl.col(c).str.to_datetime(TS_FORMAT, time_unit="ms", time_zone="UTC") for c in ts])
    lf.sink_parquet(out.rstrip("/") + "/out.parquet", compression="zstd", compression_level=1, **opts)


def run_pyarrow(mode, src, out, m, files):
    import pyarrow as pa
    import pyarrow.csv as pc
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    fs = s3fs() if ENDPOINT else None
    schema = None
    if mode == "explicit":
        schema = pa.schema([pa.field(c["name"], eval(c["pyarrow"], {"pa": pa}), c["nullable"])  # noqa: S307
                            for c in m["columns"]])

    def read(f):
        # compression="detect" (the default): .gz is decompressed
        stream = fs.open_input_stream(s3_path(f)) if fs else pa.input_stream(f)
        if m["format"] == "csv":
            conv = pc.ConvertOptions(column_types=schema) if schema else pc.ConvertOptions()
            return pc.read_csv(stream, convert_options=conv)
        parse = pj.ParseOptions(explicit_schema=schema) if schema else pj.ParseOptions()
        return pj.read_json(stream, parse_options=parse)

    target = out.rstrip("/") + "/out.parquet"
    writer = None
    try:
        for f in files:
            t = read(f)
            if writer is None:
                schema = schema or t.schema
                where = s3_path(target) if fs else target
                writer = pq.ParquetWriter(where, schema, filesystem=fs, compression="zstd", compression_level=1)
            if t.schema != schema:
                t = t.cast(schema)  # inferred per file; the first file's schema wins
            writer.write_table(t)
    finally:
        if writer is not None:
            writer.close()


def run(tool, mode, src, out):
    m = meta(src)
    files = inputs(src, m)
    {"duckdb": run_duckdb, "polars": run_polars, "pyarrow": run_pyarrow}[tool](mode, src, out, m, files)


# --- checks and S3 ---------------------------------------------------------------------------

def parquet_files(out):
    """(path, filesystem) of every Parquet file under OUT."""
    import pyarrow.fs as pafs

    if out.startswith("s3://"):
        fs = s3fs()
        infos = fs.get_file_info(pafs.FileSelector(s3_path(out), recursive=True, allow_not_found=True))
        return [(i.path, fs) for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")], fs
    return [(p, None) for p in glob.glob(f"{out}/**/*.parquet", recursive=True)], None


def count(out):
    import pyarrow.parquet as pq

    rows = dead = 0
    files, _ = parquet_files(out)
    for path, fs in files:
        if fs is not None:
            with fs.open_input_file(path) as f:
                n = pq.ParquetFile(f).metadata.num_rows
        else:
            n = pq.ParquetFile(path).metadata.num_rows
        if "_dead_letters" in path:
            dead += n
        else:
            rows += n
    print(rows, dead)


def clear(out):
    if out.startswith("s3://"):
        fs = s3fs()
        import pyarrow.fs as pafs

        if fs.get_file_info(s3_path(out)).type != pafs.FileType.NotFound:
            fs.delete_dir_contents(s3_path(out), missing_dir_ok=True)
    else:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out, exist_ok=True)


def upload(src, url):
    import pyarrow.fs as pafs

    fs = s3fs()
    bucket = s3_path(url).split("/", 1)[0]
    fs.create_dir(bucket)
    clear(url)
    m = meta(src)
    for p in sorted(glob.glob(os.path.join(src, "part-*" + m["suffix"]))):
        pafs.copy_files(p, s3_path(url) + "/" + os.path.basename(p), destination_filesystem=fs)


def setup_duckdb():
    import duckdb

    duckdb.connect().execute("INSTALL httpfs")


# --- report ----------------------------------------------------------------------------------

def report(tsv, run_id, shape, mode):
    """The Markdown table of one shape and schema mode of run RUN (rows of results.tsv)."""
    rows = []
    with open(tsv, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            r = dict(zip(header, line.rstrip("\n").split("\t")))
            if r["run"] == run_id and r["shape"] == shape and r["schema"] == mode:
                rows.append(r)
    if not rows:
        return
    r0 = rows[0]
    mb = int(r0["input_bytes"]) / 1e6
    gz = r0["compression"] == "gzip"
    print(f"\n### {shape}, schema {mode}{', S3 (moto)' if r0['store'] == 's3' else ''}\n")
    print(f"{r0['rows']} rows, {r0['files']} {r0['format']}{' gzip' if gz else ''} files, {mb:.0f} MB"
          f"{' uncompressed (' + format(int(r0['stored_bytes']) / 1e6, '.0f') + ' MB gzip; MB/s counts uncompressed bytes)' if gz else ''}"
          f", median of {r0['rounds']} round(s)\n")
    arc = next((r for r in rows if r["tool"] == "arcane" and r["status"] == "ok"), None)
    print("| tool | wall s | MB/s | peak RSS MiB | CPU s | arcane speed × | RSS ÷ | rows | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["status"] != "ok":
            print(f"| {r['tool']} | n/a | n/a | n/a | n/a | n/a | n/a | {r['rows_out'] or 'n/a'} | {r['status']}: {r['note']} |")
            continue
        w, m = float(r["wall_s"]), float(r["rss_kib"]) / 1024
        sp = f"{w / float(arc['wall_s']):.2f}" if arc else "n/a"
        rs = f"{float(r['rss_kib']) / float(arc['rss_kib']):.2f}" if arc else "n/a"
        print(f"| {r['tool']} | {w:.2f} | {mb / w:.0f} | {m:.0f} | {r['cpu_s']} | {sp} | {rs} | {r['rows_out']} | {r['note']} |")
    others = [r for r in rows if r["tool"] in ("duckdb", "polars") and r["status"] == "ok"]
    if arc and others:
        fastest = min(others, key=lambda r: float(r["wall_s"]))
        smallest = min(others, key=lambda r: float(r["rss_kib"]))
        print(f"\n**{shape} / {mode}:** arcane vs fastest of DuckDB/Polars ({fastest['tool']}): "
              f"{float(fastest['wall_s']) / float(arc['wall_s']):.2f}× (its wall ÷ arcane's); "
              f"smaller peak RSS of the two ({smallest['tool']}) ÷ arcane's: "
              f"{float(smallest['rss_kib']) / float(arc['rss_kib']):.2f} "
              f"(arcane {float(arc['rss_kib']) / 1024:.0f} MiB); CPU (user + system) of "
              f"{fastest['tool']} ÷ arcane's: {float(fastest['cpu_s']) / float(arc['cpu_s']):.2f}.")
    elif not arc:
        ran = any(r["tool"] == "arcane" for r in rows)
        print(f"\n**{shape} / {mode}:** {'arcane FAILED' if ran else 'arcane did not run'}: no ratios.")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "spec":
        spec(*args)
    elif cmd == "run":
        run(*args)
    elif cmd == "count":
        count(*args)
    elif cmd == "clear":
        clear(*args)
    elif cmd == "upload":
        upload(*args)
    elif cmd == "setup-duckdb":
        setup_duckdb()
    elif cmd == "report":
        report(*args)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
