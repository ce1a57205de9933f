//! Reading a Delta Lake table back with an independent reader: the Python `deltalake`
//! package (delta-rs), run in a subprocess (`ARCANE_TEST_PYTHON`, a Python with `deltalake`
//! installed; `scripts/test.sh` installs it).

use std::collections::BTreeMap;

use serde_json::Value;

/// What the independent reader saw.
#[derive(Debug, Clone)]
pub struct DeltaRead {
    /// The table's version.
    pub version: u64,
    /// Every row of `to_pyarrow_table()`, as JSON objects (timestamps as strings).
    pub rows: Vec<serde_json::Map<String, Value>>,
    /// The table's column names, in order.
    pub columns: Vec<String>,
    /// `transaction_version(app_id)`: the last `txn.version` of the stream.
    pub txn: Option<u64>,
    /// The number of files the table has.
    pub files: usize,
}

impl DeltaRead {
    /// The `id` column, sorted.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .rows
            .iter()
            .map(|r| r["id"].as_i64().expect("an integer id"))
            .collect();
        ids.sort_unstable();
        ids
    }
}

const SCRIPT: &str = r#"
import json, sys
from deltalake import DeltaTable
uri, options, app_id = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
dt = DeltaTable(uri, storage_options=options or None)
t = dt.to_pyarrow_table()
rows = t.to_pylist()
print(json.dumps({
    "version": dt.version(),
    "columns": t.column_names,
    "rows": rows,
    "txn": dt.transaction_version(app_id),
    "files": len(dt.file_uris()),
}, default=str))
"#;

pub use crate::python::python;

/// Read the Delta table at `url` (`file:///…`, `s3://…`) with `deltalake`, passing the
/// sink's object-store `options` (delta-rs takes the same keys).
pub fn read_delta(url: &str, options: &BTreeMap<String, String>, app_id: &str) -> DeltaRead {
    try_read_delta(url, options, app_id).unwrap_or_else(|e| panic!("{e}"))
}

/// [`read_delta`], with the reader's error as `Err`.
pub fn try_read_delta(
    url: &str,
    options: &BTreeMap<String, String>,
    app_id: &str,
) -> Result<DeltaRead, String> {
    let out = crate::python::run(
        SCRIPT,
        &[
            url,
            &serde_json::to_string(options).expect("options"),
            app_id,
        ],
        &[],
    )
    .expect("run python");
    if !out.status.success() {
        return Err(format!(
            "deltalake could not read {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("reader output is JSON");
    Ok(DeltaRead {
        version: v["version"].as_u64().expect("version"),
        rows: v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r.as_object().expect("row").clone())
            .collect(),
        columns: v["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c.as_str().expect("name").to_string())
            .collect(),
        txn: v["txn"].as_u64(),
        files: v["files"].as_u64().expect("files") as usize,
    })
}

/// Run `code` in the test Python with `deltalake` imported as `deltalake` and `DeltaTable`
/// (for a second writer: OPTIMIZE, a checkpoint); its stdout.
pub fn run_python(code: &str, args: &[&str]) -> String {
    crate::python::run_ok(
        &format!("import json, sys\nimport deltalake\nfrom deltalake import DeltaTable\n{code}"),
        args,
        &[],
    )
}
