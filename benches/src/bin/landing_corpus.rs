//! The input corpus of the landing benchmark (`benches/landing/run.sh`): deterministic files of
//! one data *shape* each (SplitMix64 with a fixed seed per shape; the same arguments give the
//! same bytes), plus the explicit schema in the syntax of the blob-landing source's `schema`
//! (`DIR/schema.json`) and what the script needs to run the other tools (`DIR/meta.json`).
//!
//! ```text
//! landing_corpus --shape numeric --mb 500 --files 10 --out DIR [--format ndjson|csv|ndjson-gz]
//! landing_corpus ceiling --schema DIR/schema.json OUT.parquet IN.ndjson...
//! ```
//!
//! Shapes (`--mb` is the uncompressed size, default 500; `--files` default 10):
//!
//! * `numeric`: 8 columns: two int64 (one small, one near 2^62), three full-precision float64,
//!   a bool, a string of 8 values and a 16-hex id (the shape of the issue: ~133 bytes a row);
//! * `strings`: the order events of `examples/data/generate.py` (10 columns, an ISO
//!   millisecond UTC timestamp, a nullable coupon; ~205 bytes a row);
//! * `highcard`: an int64 key and high-cardinality strings: uuid, email, URL, free text of
//!   20–200 characters (some non-ASCII);
//! * `nested`: structs and lists: `user {name, age, tags[]}`, `items [{sku, qty, price}]`,
//!   `meta {a, b}` (the schema uses Arrow's type syntax, `Struct(...)`/`List(...)`);
//! * `wide`: 120 columns (int64, float64, utf8, bool in turn), ~2.4 KB a row;
//! * `csv`: `numeric` as CSV with a header (`--format csv`);
//! * `gz`: `strings` as gzip-compressed NDJSON (`--format ndjson-gz`, through `gzip -1 -n`).
//!
//! `meta.json` holds `rows`, `bytes` (uncompressed), `stored_bytes` (on disk), `files`,
//! `format`, `suffix`, `compression` and, per column, the type for DuckDB (SQL), Polars and
//! pyarrow (Python expressions over `pl`/`pa`).
//!
//! `ceiling` is the one-thread ceiling the landing benchmark compares with: NDJSON decoded by
//! `arrow_json` with the schema of `schema.json` and written by a plain `ArrowWriter` (zstd(1))
//! to one local file, on one thread.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------------------------

/// SplitMix64 (as `arcane_test_support::rng`): the same seed gives the same sequence.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    /// A number in `0.0..1.0` (53 random bits).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.between(0, 100) < percent
    }

    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.between(0, of.len() as u64) as usize]
    }

    /// `len` characters of `alphabet`.
    fn word(&mut self, out: &mut String, alphabet: &[u8], len: usize) {
        for _ in 0..len {
            out.push(alphabet[self.between(0, alphabet.len() as u64) as usize] as char);
        }
    }
}

/// A float in the same range as its `{:?}` text: plain decimal with every significant digit
/// (`-84213.40118296134`), never an integer-looking `5` (`5.0`) and never an exponent (the
/// values stay within 1e-4..1e15).
fn float(out: &mut String, v: f64) {
    write!(out, "{v:?}").unwrap_or_default();
}

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const MIXED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of milliseconds since the epoch.
fn iso_ms(out: &mut String, ms: i64) {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    write!(
        out,
        "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z"
    )
    .unwrap_or_default();
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

/// One column: its name, the blob-landing schema type, nullability, and the types for
/// DuckDB (SQL), Polars and pyarrow (Python expressions).
#[derive(Debug, Clone)]
struct Column {
    name: String,
    arcane: String,
    nullable: bool,
    duckdb: String,
    polars: String,
    pyarrow: String,
}

fn col(name: &str, arcane: &str, nullable: bool) -> Column {
    let (duckdb, polars, pyarrow) = match arcane {
        "int32" => ("INTEGER", "pl.Int32", "pa.int32()"),
        "int64" => ("BIGINT", "pl.Int64", "pa.int64()"),
        "float64" => ("DOUBLE", "pl.Float64", "pa.float64()"),
        "utf8" => ("VARCHAR", "pl.Utf8", "pa.string()"),
        "bool" => ("BOOLEAN", "pl.Boolean", "pa.bool_()"),
        // Polars reads the text and converts it (see run.sh); DuckDB's TIMESTAMPTZ is UTC.
        "timestamp[ms, UTC]" => ("TIMESTAMPTZ", "pl.Utf8", "pa.timestamp('ms', tz='UTC')"),
        other => panic!("no tool types for {other}; give them with col_nested"),
    };
    Column {
        name: name.into(),
        arcane: arcane.into(),
        nullable,
        duckdb: duckdb.into(),
        polars: polars.into(),
        pyarrow: pyarrow.into(),
    }
}

fn col_nested(name: &str, arcane: &str, duckdb: &str, polars: &str, pyarrow: &str) -> Column {
    Column {
        name: name.into(),
        arcane: arcane.into(),
        nullable: true,
        duckdb: duckdb.into(),
        polars: polars.into(),
        pyarrow: pyarrow.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Numeric,
    Strings,
    Highcard,
    Nested,
    Wide,
}

impl Shape {
    fn seed(self) -> u64 {
        match self {
            Shape::Numeric => 0x6e75_6d65_7269_6301,
            Shape::Strings => 0x7374_7269_6e67_7302,
            Shape::Highcard => 0x6869_6768_6361_7203,
            Shape::Nested => 0x6e65_7374_6564_0004,
            Shape::Wide => 0x7769_6465_0000_0005,
        }
    }

    /// About the bytes of one NDJSON line (spreads the strings shape's timestamps over a day).
    fn row_bytes(self) -> u64 {
        match self {
            Shape::Numeric => 133,
            Shape::Strings => 205,
            Shape::Highcard => 330,
            Shape::Nested => 300,
            Shape::Wide => 2400,
        }
    }

    fn columns(self) -> Vec<Column> {
        match self {
            Shape::Numeric => vec![
                col("small", "int64", false),
                col("large", "int64", false),
                col("x", "float64", false),
                col("y", "float64", false),
                col("z", "float64", false),
                col("flag", "bool", false),
                col("category", "utf8", false),
                col("hex_id", "utf8", false),
            ],
            Shape::Strings => vec![
                col("order_id", "utf8", false),
                col("customer_id", "int64", true),
                col("event_time", "timestamp[ms, UTC]", false),
                col("status", "utf8", true),
                col("amount", "float64", true),
                col("currency", "utf8", true),
                col("items", "int32", true),
                col("country", "utf8", true),
                col("channel", "utf8", true),
                col("coupon", "utf8", true),
            ],
            Shape::Highcard => vec![
                col("key", "int64", false),
                col("uuid", "utf8", false),
                col("email", "utf8", true),
                col("url", "utf8", true),
                col("text", "utf8", true),
                col("session", "utf8", true),
            ],
            Shape::Nested => vec![
                col("id", "int64", false),
                col_nested(
                    "user",
                    r#"Struct("name": Utf8, "age": Int64, "tags": List(Utf8))"#,
                    r#"STRUCT("name" VARCHAR, age BIGINT, tags VARCHAR[])"#,
                    "pl.Struct({'name': pl.Utf8, 'age': pl.Int64, 'tags': pl.List(pl.Utf8)})",
                    "pa.struct([('name', pa.string()), ('age', pa.int64()), ('tags', pa.list_(pa.string()))])",
                ),
                col_nested(
                    "items",
                    r#"List(Struct("sku": Utf8, "qty": Int64, "price": Float64))"#,
                    "STRUCT(sku VARCHAR, qty BIGINT, price DOUBLE)[]",
                    "pl.List(pl.Struct({'sku': pl.Utf8, 'qty': pl.Int64, 'price': pl.Float64}))",
                    "pa.list_(pa.struct([('sku', pa.string()), ('qty', pa.int64()), ('price', pa.float64())]))",
                ),
                col_nested(
                    "meta",
                    r#"Struct("a": Boolean, "b": Utf8)"#,
                    "STRUCT(a BOOLEAN, b VARCHAR)",
                    "pl.Struct({'a': pl.Boolean, 'b': pl.Utf8})",
                    "pa.struct([('a', pa.bool_()), ('b', pa.string())])",
                ),
            ],
            Shape::Wide => (0..WIDE_COLUMNS)
                .map(|i| {
                    let t = ["int64", "float64", "utf8", "bool"][i % 4];
                    col(&format!("c{i:03}"), t, true)
                })
                .collect(),
        }
    }
}

const WIDE_COLUMNS: usize = 120;

const CATEGORIES: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];
const STATUSES: [&str; 7] = [
    "created",
    "paid",
    "packed",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
];
const STATUS_WEIGHTS: [u64; 7] = [30, 25, 15, 15, 10, 3, 2];
const COUNTRIES: [&str; 10] = ["DE", "NL", "FR", "SE", "NO", "DK", "PL", "ES", "IT", "GB"];
const CURRENCIES: [&str; 10] = [
    "EUR", "EUR", "EUR", "SEK", "NOK", "DKK", "PLN", "EUR", "EUR", "GBP",
];
const CHANNELS: [&str; 4] = ["web", "ios", "android", "store"];
const WORDS: [&str; 40] = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "order",
    "shipped",
    "late",
    "again",
    "please",
    "refund",
    "my",
    "parcel",
    "arrived",
    "damaged",
    "café",
    "naïve",
    "Zürich",
    "größe",
    "smørrebrød",
    "ok",
    "thanks",
    "support",
    "ticket",
    "still",
    "waiting",
    "for",
    "an",
    "answer",
    "since",
    "Monday",
    "and",
    "box",
    "was",
    "empty",
    "—",
    "€42",
];
const TLDS: [&str; 6] = ["com", "org", "net", "io", "de", "nl"];
const TAGS: [&str; 12] = [
    "vip",
    "new",
    "returning",
    "b2b",
    "newsletter",
    "mobile",
    "desktop",
    "eu",
    "us",
    "trial",
    "churn-risk",
    "beta",
];

/// Where a row's fields go: NDJSON (`{"k":v,...}`) or CSV (`v,v,...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    Json,
    Csv,
}

/// Writes one row's fields in `Syntax`. Strings written here never need escaping (no quotes,
/// backslashes, control characters; no commas in CSV shapes).
struct Row<'a> {
    out: &'a mut String,
    syntax: Syntax,
    first: bool,
}

impl<'a> Row<'a> {
    fn new(out: &'a mut String, syntax: Syntax) -> Self {
        if syntax == Syntax::Json {
            out.push('{');
        }
        Row {
            out,
            syntax,
            first: true,
        }
    }

    /// Start the field `name`; the caller writes the value's text.
    fn key(&mut self, name: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        if self.syntax == Syntax::Json {
            self.out.push('"');
            self.out.push_str(name);
            self.out.push_str("\":");
        }
        self.out
    }

    fn int(&mut self, name: &str, v: i64) {
        let out = self.key(name);
        write!(out, "{v}").unwrap_or_default();
    }

    fn float(&mut self, name: &str, v: f64) {
        float(self.key(name), v);
    }

    fn bool(&mut self, name: &str, v: bool) {
        self.key(name).push_str(if v { "true" } else { "false" });
    }

    /// A string (quoted in JSON; written as is in CSV).
    fn str_start(&mut self, name: &str) -> &mut String {
        let json = self.syntax == Syntax::Json;
        let out = self.key(name);
        if json {
            out.push('"');
        }
        out
    }

    fn str_end(&mut self) {
        if self.syntax == Syntax::Json {
            self.out.push('"');
        }
    }

    fn str(&mut self, name: &str, v: &str) {
        self.str_start(name).push_str(v);
        self.str_end();
    }

    /// A null (`null` in JSON, an empty field in CSV).
    fn null(&mut self, name: &str) {
        let json = self.syntax == Syntax::Json;
        let out = self.key(name);
        if json {
            out.push_str("null");
        }
    }

    fn end(self) {
        if self.syntax == Syntax::Json {
            self.out.push('}');
        }
        self.out.push('\n');
    }
}

/// The generator's state across rows and files.
struct Gen {
    shape: Shape,
    rng: Rng,
    row: u64,
    /// The strings shape's clock (ms since the epoch) and mean step.
    clock_ms: i64,
    step_ms: u64,
    scratch: String,
}

/// 2026-11-20T00:00:00Z, the first day of `examples/data/generate.py`.
const START_MS: i64 = 1_795_132_800_000;

impl Gen {
    fn new(shape: Shape, bytes_per_file: u64) -> Self {
        let rows_per_file = (bytes_per_file / shape.row_bytes()).max(1);
        Gen {
            shape,
            rng: Rng(shape.seed()),
            row: 0,
            clock_ms: START_MS,
            step_ms: (86_400_000 / rows_per_file).max(1),
            scratch: String::new(),
        }
    }

    /// Starts file `k` (the strings shape: one day a file).
    fn start_file(&mut self, k: u64) {
        self.clock_ms = START_MS + k as i64 * 86_400_000;
    }

    /// Appends one row to `out`.
    fn row(&mut self, out: &mut String, syntax: Syntax) {
        self.row += 1;
        let i = self.row;
        let rng = &mut self.rng;
        let mut r = Row::new(out, syntax);
        match self.shape {
            Shape::Numeric => {
                r.int("small", rng.between(0, 100_000) as i64);
                r.int("large", ((1u64 << 62) + (rng.next_u64() >> 4)) as i64);
                r.float("x", (rng.unit() - 0.5) * 2e6);
                r.float("y", 1000.0 + rng.unit() * 9000.0);
                // 1e-3 .. 1e3, log-uniform: many significant digits at every magnitude.
                r.float("z", 10f64.powf(rng.unit() * 6.0 - 3.0));
                r.bool("flag", rng.next_u64() & 1 == 1);
                r.str("category", rng.pick(&CATEGORIES));
                let hex = rng.next_u64();
                write!(r.str_start("hex_id"), "{hex:016x}").unwrap_or_default();
                r.str_end();
            }
            Shape::Strings => {
                write!(r.str_start("order_id"), "ord-{i:08}").unwrap_or_default();
                r.str_end();
                r.int("customer_id", rng.between(1, 50_001) as i64);
                self.clock_ms += rng.between(0, 2 * self.step_ms + 1) as i64;
                iso_ms(r.str_start("event_time"), self.clock_ms);
                r.str_end();
                let mut w = rng.between(0, 100);
                let mut status = 0;
                while w >= STATUS_WEIGHTS[status] {
                    w -= STATUS_WEIGHTS[status];
                    status += 1;
                }
                r.str("status", STATUSES[status]);
                let country = rng.between(0, 10) as usize;
                let items = rng.between(1, 7);
                let cents = items * rng.between(450, 12_001);
                write!(r.key("amount"), "{}.{:02}", cents / 100, cents % 100).unwrap_or_default();
                r.str("currency", CURRENCIES[country]);
                r.int("items", items as i64);
                r.str("country", COUNTRIES[country]);
                r.str("channel", rng.pick(&CHANNELS));
                match rng.between(0, 5) {
                    0..=2 => r.null("coupon"),
                    3 => r.str("coupon", "WELCOME10"),
                    _ => r.str("coupon", "BLACKFRIDAY"),
                }
            }
            Shape::Highcard => {
                r.int("key", i as i64 * 7919 + rng.between(0, 7919) as i64);
                let (a, b) = (rng.next_u64(), rng.next_u64());
                write!(
                    r.str_start("uuid"),
                    "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                    a >> 32,
                    (a >> 16) & 0xffff,
                    a & 0xfff,
                    0x8000 | ((b >> 48) & 0x3fff),
                    b & 0xffff_ffff_ffff
                )
                .unwrap_or_default();
                r.str_end();
                if rng.chance(5) {
                    r.null("email");
                } else {
                    let s = r.str_start("email");
                    let len = rng.between(4, 12) as usize;
                    rng.word(s, LOWER, len);
                    s.push('.');
                    let len = rng.between(3, 10) as usize;
                    rng.word(s, ALNUM, len);
                    write!(
                        s,
                        "{}@mail-{}.",
                        rng.between(0, 10_000),
                        rng.between(0, 5000)
                    )
                    .unwrap_or_default();
                    s.push_str(rng.pick(&TLDS));
                    r.str_end();
                }
                let s = r.str_start("url");
                write!(s, "https://shop-{}.example.", rng.between(0, 2000)).unwrap_or_default();
                s.push_str(rng.pick(&TLDS));
                for _ in 0..rng.between(1, 5) {
                    s.push('/');
                    let len = rng.between(3, 12) as usize;
                    rng.word(s, ALNUM, len);
                }
                write!(s, "?ref={:x}&page={}", rng.next_u64(), rng.between(1, 500))
                    .unwrap_or_default();
                r.str_end();
                if rng.chance(3) {
                    r.null("text");
                } else {
                    let target = rng.between(20, 201) as usize;
                    let s = r.str_start("text");
                    let start = s.len();
                    while s.len() - start < target {
                        if s.len() > start {
                            s.push(if rng.chance(10) { ',' } else { ' ' });
                            if s.as_bytes()[s.len() - 1] == b',' {
                                s.push(' ');
                            }
                        }
                        s.push_str(rng.pick(&WORDS));
                    }
                    r.str_end();
                }
                let s = r.str_start("session");
                rng.word(s, MIXED, 22);
                r.str_end();
            }
            Shape::Nested => {
                r.int("id", i as i64);
                // user
                let s = r.key("user");
                s.push_str("{\"name\":\"");
                let len = rng.between(3, 9) as usize;
                rng.word(s, LOWER, len);
                s.push(' ');
                let len = rng.between(4, 12) as usize;
                rng.word(s, LOWER, len);
                write!(s, "\",\"age\":{},\"tags\":[", rng.between(18, 90)).unwrap_or_default();
                for t in 0..rng.between(0, 5) {
                    if t > 0 {
                        s.push(',');
                    }
                    s.push('"');
                    s.push_str(rng.pick(&TAGS));
                    s.push('"');
                }
                s.push_str("]}");
                // items
                let s = r.key("items");
                s.push('[');
                for t in 0..rng.between(1, 6) {
                    if t > 0 {
                        s.push(',');
                    }
                    write!(
                        s,
                        "{{\"sku\":\"SKU-{:06}\",\"qty\":{},\"price\":",
                        rng.between(0, 1_000_000),
                        rng.between(1, 10)
                    )
                    .unwrap_or_default();
                    float(s, 0.5 + rng.unit() * 999.0);
                    s.push('}');
                }
                s.push(']');
                // meta
                let s = r.key("meta");
                let a = rng.next_u64() & 1 == 1;
                write!(s, "{{\"a\":{a},\"b\":").unwrap_or_default();
                if rng.chance(40) {
                    s.push_str("null");
                } else {
                    s.push('"');
                    let len = rng.between(4, 16) as usize;
                    rng.word(s, ALNUM, len);
                    s.push('"');
                }
                s.push('}');
            }
            Shape::Wide => {
                let name = &mut self.scratch;
                for c in 0..WIDE_COLUMNS {
                    name.clear();
                    write!(name, "c{c:03}").unwrap_or_default();
                    match c % 4 {
                        0 => r.int(name.as_str(), rng.between(0, 1_000_000_000) as i64),
                        1 => r.float(name.as_str(), rng.unit() * 1e4),
                        2 => {
                            let len = rng.between(8, 17) as usize;
                            let s = r.str_start(name.as_str());
                            rng.word(s, MIXED, len);
                            r.str_end();
                        }
                        _ => r.bool(name.as_str(), rng.next_u64() & 1 == 1),
                    }
                }
            }
        }
        r.end();
    }
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// A file being written: plain, or through `gzip -1 -n` (deterministic: no name, no time).
enum Sink {
    Plain(BufWriter<File>),
    Gzip(Child),
}

impl Sink {
    fn create(path: &Path, gzip: bool) -> BoxResult<Self> {
        let file = File::create(path)?;
        if !gzip {
            return Ok(Sink::Plain(BufWriter::with_capacity(1 << 20, file)));
        }
        let child = Command::new("gzip")
            .args(["-1", "-n", "-c"])
            .stdin(Stdio::piped())
            .stdout(file)
            .spawn()
            .map_err(|e| format!("gzip: {e}"))?;
        Ok(Sink::Gzip(child))
    }

    fn write(&mut self, bytes: &[u8]) -> BoxResult<()> {
        match self {
            Sink::Plain(w) => w.write_all(bytes)?,
            Sink::Gzip(child) => child
                .stdin
                .as_mut()
                .ok_or("gzip has no stdin")?
                .write_all(bytes)?,
        }
        Ok(())
    }

    fn finish(self) -> BoxResult<()> {
        match self {
            Sink::Plain(mut w) => w.flush()?,
            Sink::Gzip(mut child) => {
                drop(child.stdin.take());
                let status = child.wait()?;
                if !status.success() {
                    return Err(format!("gzip failed: {status}").into());
                }
            }
        }
        Ok(())
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn generate(args: &[String]) -> BoxResult<()> {
    const USAGE: &str = "usage: landing_corpus --shape numeric|strings|highcard|nested|wide|csv|gz \
                         [--mb 500] [--files 10] --out DIR [--format ndjson|csv|ndjson-gz]";
    let shape_name = arg(args, "--shape").ok_or(USAGE)?;
    let out = PathBuf::from(arg(args, "--out").ok_or(USAGE)?);
    let mb: f64 = arg(args, "--mb").map_or(Ok(500.0), |s| s.parse())?;
    let files: u64 = arg(args, "--files").map_or(Ok(10), |s| s.parse())?;
    if files == 0 || mb <= 0.0 {
        return Err("--files and --mb must be positive".into());
    }
    let (shape, default_format) = match shape_name.as_str() {
        "numeric" => (Shape::Numeric, "ndjson"),
        "strings" => (Shape::Strings, "ndjson"),
        "highcard" => (Shape::Highcard, "ndjson"),
        "nested" => (Shape::Nested, "ndjson"),
        "wide" => (Shape::Wide, "ndjson"),
        "csv" => (Shape::Numeric, "csv"),
        "gz" => (Shape::Strings, "ndjson-gz"),
        other => return Err(format!("unknown shape {other:?}; {USAGE}").into()),
    };
    let format = arg(args, "--format").unwrap_or_else(|| default_format.to_string());
    let (syntax, suffix, gzip) = match format.as_str() {
        "ndjson" => (Syntax::Json, ".ndjson", false),
        "csv" => (Syntax::Csv, ".csv", false),
        "ndjson-gz" => (Syntax::Json, ".ndjson.gz", true),
        other => return Err(format!("unknown format {other:?}; {USAGE}").into()),
    };
    if syntax == Syntax::Csv && shape == Shape::Nested {
        return Err("the nested shape has no CSV form".into());
    }
    let columns = shape.columns();
    // Every type must parse as the blob-landing source's schema will parse it.
    for c in &columns {
        arcane_core::schema::parse_type(&c.arcane)
            .map_err(|e| format!("column {}: {e}", c.name))?;
    }

    std::fs::create_dir_all(&out)?;
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::remove_file(path)?;
        }
    }
    let started = std::time::Instant::now();
    let target = (mb * 1e6) as u64;
    let per_file = target.div_ceil(files);
    let mut g = Gen::new(shape, per_file);
    let (mut bytes, mut stored) = (0u64, 0u64);
    let mut buf = String::with_capacity(1 << 21);
    for k in 0..files {
        let path = out.join(format!("part-{k:05}{suffix}"));
        let mut sink = Sink::create(&path, gzip)?;
        g.start_file(k);
        let mut file_bytes = 0u64;
        if syntax == Syntax::Csv {
            let header: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            buf.push_str(&header.join(","));
            buf.push('\n');
        }
        while file_bytes + buf.len() as u64 <= per_file {
            g.row(&mut buf, syntax);
            if buf.len() >= 1 << 20 {
                sink.write(buf.as_bytes())?;
                file_bytes += buf.len() as u64;
                buf.clear();
            }
        }
        sink.write(buf.as_bytes())?;
        file_bytes += buf.len() as u64;
        buf.clear();
        sink.finish()?;
        bytes += file_bytes;
        stored += std::fs::metadata(&path)?.len();
    }
    let rows = g.row;

    let fields: Vec<String> = columns
        .iter()
        .map(|c| {
            format!(
                "  {{\"name\": {}, \"type\": {}, \"nullable\": {}}}",
                json_str(&c.name),
                json_str(&c.arcane),
                c.nullable
            )
        })
        .collect();
    std::fs::write(
        out.join("schema.json"),
        format!("[\n{}\n]\n", fields.join(",\n")),
    )?;
    let tools: Vec<String> = columns
        .iter()
        .map(|c| {
            format!(
                "    {{\"name\": {}, \"arcane\": {}, \"nullable\": {}, \"duckdb\": {}, \"polars\": {}, \"pyarrow\": {}}}",
                json_str(&c.name),
                json_str(&c.arcane),
                c.nullable,
                json_str(&c.duckdb),
                json_str(&c.polars),
                json_str(&c.pyarrow)
            )
        })
        .collect();
    let meta = format!(
        "{{\n  \"shape\": {},\n  \"format\": {},\n  \"suffix\": {},\n  \"compression\": {},\n  \"rows\": {rows},\n  \"bytes\": {bytes},\n  \"stored_bytes\": {stored},\n  \"files\": {files},\n  \"seed\": {},\n  \"columns\": [\n{}\n  ]\n}}\n",
        json_str(&shape_name),
        json_str(if syntax == Syntax::Csv {
            "csv"
        } else {
            "ndjson"
        }),
        json_str(suffix),
        json_str(if gzip { "gzip" } else { "none" }),
        shape.seed(),
        tools.join(",\n")
    );
    std::fs::write(out.join("meta.json"), meta)?;
    println!(
        "shape={shape_name} format={format} rows={rows} bytes={bytes} stored_bytes={stored} files={files} secs={:.2} out={}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Ceiling
// ---------------------------------------------------------------------------------------------

/// The one-thread ceiling: `arrow_json` decode + `ArrowWriter`, schema from `schema.json`.
fn ceiling(args: &[String]) -> BoxResult<()> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    const USAGE: &str =
        "usage: landing_corpus ceiling --schema schema.json OUT.parquet IN.ndjson...";
    let (flag, rest) = args.split_first().ok_or(USAGE)?;
    let (schema_path, rest) = rest.split_first().ok_or(USAGE)?;
    if flag != "--schema" {
        return Err(USAGE.into());
    }
    let (out, inputs) = rest.split_first().ok_or(USAGE)?;
    let fields: Vec<arcane_core::schema::FieldConfig> =
        serde_json::from_slice(&std::fs::read(schema_path)?)?;
    let schema = arcane_core::schema::schema_from_fields(&fields, "schema")?;
    // `UTC` as the offset `+00:00`, as arcane hands it to the decoder (arrow parses named
    // zones only with its `chrono-tz` feature).
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                arrow_schema::DataType::Timestamp(unit, Some(tz))
                    if arcane_core::schema::is_utc(tz) =>
                {
                    f.as_ref()
                        .clone()
                        .with_data_type(arrow_schema::DataType::Timestamp(
                            *unit,
                            Some("+00:00".into()),
                        ))
                }
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ));
    let started = std::time::Instant::now();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .build();
    let mut writer = ArrowWriter::try_new(File::create(out)?, schema.clone(), Some(props))?;
    let mut rows = 0;
    for input in inputs {
        let reader = arrow_json::ReaderBuilder::new(schema.clone())
            .with_batch_size(8192)
            .build(std::io::BufReader::with_capacity(
                1 << 20,
                File::open(input)?,
            ))?;
        for batch in reader {
            let batch = batch?;
            rows += batch.num_rows();
            writer.write(&batch)?;
        }
    }
    writer.close()?;
    println!("rows={rows} secs={:.3}", started.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ceiling") => ceiling(&args[1..]),
        _ => generate(&args),
    }
}
