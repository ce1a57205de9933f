//! The smallest complete custom source, as the guide (`docs/writing-a-source.md`) builds it:
//! a "table" kept as a JSON-lines file that only grows (an export, an append-only log), read
//! after a cursor (the line number), hosted as its own stream kind `jsonl-table`.
//!
//! Everything else comes from the library: [`CursorPollingSource`] polls, ends a backfill,
//! resumes after the committed cursor and skips what a checkpoint covers; `arcane_cli` gives
//! the spec (`source`, `sink`, grouping), the Parquet sink, the runner, and the `spec-schema`,
//! `crd` and `manifests` commands.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Duration;

use arcane_cli::SourceKind;
use arcane_sources::prelude::*;

/// Settings of the `jsonl-table` source (`spec.source`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonLinesConfig {
    /// The file: one JSON object per line, `{"id": 1, "name": "a", "amount": 1.5}`.
    pub path: PathBuf,
    /// Seconds between polls in streaming mode. Default 5.
    #[serde(default = "default_poll_seconds")]
    pub poll_interval_seconds: u64,
}

fn default_poll_seconds() -> u64 {
    5
}

/// The rows' schema.
pub fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
    ]))
}

/// Reads the lines after a cursor (the number of the last line read, from 1).
#[derive(Debug)]
pub struct JsonLinesTable {
    path: PathBuf,
}

impl JsonLinesTable {
    /// The table in `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl BlockingCursor for JsonLinesTable {
    type Cursor = u64;

    fn read_after(&mut self, after: Option<&u64>, limit: usize) -> Result<CursorPage<u64>> {
        let origin = self.path.display().to_string();
        let file = std::fs::File::open(&self.path)
            .map_err(|e| Error::config("spec.source.path", format!("cannot open {origin}: {e}")))?;
        let (mut ids, mut names, mut amounts, mut letters) = (vec![], vec![], vec![], vec![]);
        let mut last = None;
        let skip = after.copied().unwrap_or(0);
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let number = n as u64 + 1;
            if number <= skip {
                continue;
            }
            if ids.len() + letters.len() == limit {
                break;
            }
            let line = line.map_err(|e| {
                Error::source_transient("jsonl-table", format!("{origin} line {number}"), e)
            })?;
            last = Some(number);
            match parse_line(&line) {
                Ok((id, name, amount)) => {
                    ids.push(id);
                    names.push(name);
                    amounts.push(amount);
                }
                Err(reason) => letters.push(
                    DeadLetter::new(&origin, format!("line {number}"), reason).with_payload(line),
                ),
            }
        }
        let batch = RecordBatch::try_new(
            table_schema(),
            vec![
                Arc::new(Int64Array::from(ids)) as ArrayRef,
                Arc::new(StringArray::from(names)),
                Arc::new(Float64Array::from(amounts)),
            ],
        )
        .map_err(|e| Error::fatal(format!("building the batch of {origin}: {e}")))?;
        Ok(CursorPage::new(batch, last).with_dead_letters(letters))
    }

    fn schema(&self) -> Option<SchemaRef> {
        Some(table_schema())
    }
}

/// One line as `(id, name, amount)`, or why it does not fit.
fn parse_line(line: &str) -> std::result::Result<(i64, Option<String>, Option<f64>), String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let id = value
        .get("id")
        .and_then(serde_json::Value::as_i64)
        .ok_or("\"id\" is missing or not an integer")?;
    let name = match value.get("name") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(format!("\"name\" is not a string: {other}")),
    };
    let amount = match value.get("amount") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or(format!("\"amount\" is not a number: {v}"))?,
        ),
    };
    Ok((id, name, amount))
}

/// The `jsonl-table` stream kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLinesKind;

#[async_trait]
impl SourceKind for JsonLinesKind {
    type Config = JsonLinesConfig;

    fn name(&self) -> &'static str {
        "jsonl-table"
    }

    fn description(&self) -> &'static str {
        "rows appended to a JSON-lines file, read after the last committed line"
    }

    async fn source(&self, _ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        if config.poll_interval_seconds == 0 {
            return Err(Error::config(
                "spec.source.pollIntervalSeconds",
                "must be at least 1",
            ));
        }
        Ok(Box::new(
            CursorPollingSource::blocking("jsonl-table", JsonLinesTable::new(config.path))
                .with_poll_interval(Duration::from_secs(config.poll_interval_seconds)),
        ))
    }
}
