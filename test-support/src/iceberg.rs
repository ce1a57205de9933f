//! Reading an Iceberg table back with an independent reader: pyiceberg's `SqlCatalog` on the
//! machine's PostgreSQL (`ARCANE_TEST_POSTGRES_URI`, default
//! `postgresql://postgres@127.0.0.1:5432/test`), run in a subprocess (`ARCANE_TEST_PYTHON`, a
//! Python with `pyiceberg[sql-postgres]`; `scripts/test.sh` installs it). Each test uses its
//! own catalog name ([`TestCatalog`]), whose rows are deleted when it is dropped, even when the
//! test fails.

use std::collections::BTreeMap;

use serde_json::Value;

/// The PostgreSQL database the tests use as the catalog (SQLAlchemy URI for pyiceberg).
pub fn postgres_uri() -> String {
    std::env::var("ARCANE_TEST_POSTGRES_URI")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".into())
}

/// A catalog name unique to one test in the shared database; its rows in
/// `iceberg_tables` and `iceberg_namespace_properties` are deleted on drop.
#[derive(Debug)]
pub struct TestCatalog {
    /// The catalog name (`catalogName` of the spec, pyiceberg's catalog name).
    pub name: String,
    /// The database URI (`postgresql://…`).
    pub uri: String,
}

impl TestCatalog {
    /// A new catalog name, `arcane_test_{uuid}`.
    pub fn new() -> Self {
        Self {
            name: format!("arcane_test_{}", uuid::Uuid::new_v4().simple()),
            uri: postgres_uri(),
        }
    }

    /// The spec's `tableFormat.iceberg` for `namespace.table` in this catalog.
    pub fn table_format(&self, namespace: &str, table: &str) -> Value {
        serde_json::json!({"iceberg": {
            "catalog": {"sql": {"uri": self.uri}},
            "catalogName": self.name,
            "namespace": namespace,
            "table": table,
        }})
    }

    /// Run `code` in the test Python with `catalog` (pyiceberg's `SqlCatalog` on this
    /// catalog) defined and `args` in `sys.argv[1..]` (another engine writing the table); its
    /// stdout.
    pub fn run_python(&self, code: &str, args: &[&str]) -> String {
        crate::python::run_ok(
            &format!(
                "import json, sys, os\nfrom pyiceberg.catalog.sql import SqlCatalog\ncatalog = SqlCatalog(os.environ['ARCANE_CATALOG_NAME'], uri=os.environ['ARCANE_CATALOG_URI'])\n{code}"
            ),
            args,
            &[
                ("ARCANE_CATALOG_NAME", &self.name),
                ("ARCANE_CATALOG_URI", &sqlalchemy_uri(&self.uri)),
            ],
        )
    }

    /// Read `namespace.table` with pyiceberg.
    pub fn read(&self, namespace: &str, table: &str) -> IcebergRead {
        self.try_read(namespace, table)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`read`](Self::read), with the reader's error as `Err`.
    pub fn try_read(&self, namespace: &str, table: &str) -> Result<IcebergRead, String> {
        self.try_read_with(namespace, table, &BTreeMap::new())
    }

    /// [`read`](Self::read) with pyiceberg catalog `properties` (e.g. `s3.endpoint`).
    pub fn read_with(
        &self,
        namespace: &str,
        table: &str,
        properties: &BTreeMap<String, String>,
    ) -> IcebergRead {
        self.try_read_with(namespace, table, properties)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The pyiceberg properties of the S3 server's store `options` (`aws_*` keys).
    pub fn s3_properties(options: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        [
            ("aws_endpoint", "s3.endpoint"),
            ("aws_access_key_id", "s3.access-key-id"),
            ("aws_secret_access_key", "s3.secret-access-key"),
            ("aws_region", "s3.region"),
        ]
        .into_iter()
        .filter_map(|(ours, theirs)| options.get(ours).map(|v| (theirs.to_string(), v.clone())))
        .collect()
    }

    fn try_read_with(
        &self,
        namespace: &str,
        table: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<IcebergRead, String> {
        let mut properties = properties.clone();
        properties.insert("uri".into(), sqlalchemy_uri(&self.uri));
        pyiceberg_read("sql", &self.name, namespace, table, &properties)
    }
}

/// Read `namespace.table` with pyiceberg's catalog of `kind` (`sql`: `SqlCatalog`, `rest`:
/// `RestCatalog`) named `name` with `properties` (`uri`, `credential`, `warehouse`, …).
pub fn pyiceberg_read(
    kind: &str,
    name: &str,
    namespace: &str,
    table: &str,
    properties: &BTreeMap<String, String>,
) -> Result<IcebergRead, String> {
    {
        let out = crate::python::run(
            READ,
            &[
                kind,
                name,
                &format!("{namespace}.{table}"),
                &serde_json::to_string(properties).map_err(|e| e.to_string())?,
            ],
            &[],
        )
        .map_err(|e| format!("cannot run python: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pyiceberg could not read {namespace}.{table}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("reader output is not JSON: {e}"))?;
        let array = |k: &str| v[k].as_array().cloned().unwrap_or_default();
        Ok(IcebergRead {
            rows: array("rows")
                .into_iter()
                .filter_map(|r| r.as_object().cloned())
                .collect(),
            columns: array("columns")
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
            snapshots: array("snapshots"),
            properties: v["properties"].as_object().cloned().unwrap_or_default(),
            field_ids: array("field_ids")
                .iter()
                .filter_map(Value::as_i64)
                .collect(),
            schemas: v["schemas"].as_u64().unwrap_or(0) as usize,
            files: v["files"].as_u64().unwrap_or(0) as usize,
        })
    }
}

impl Default for TestCatalog {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCatalog {
    fn drop(&mut self) {
        let _ = crate::python::run(CLEAN, &[&sqlalchemy_uri(&self.uri), &self.name], &[]);
    }
}

fn sqlalchemy_uri(uri: &str) -> String {
    match uri.split_once("://") {
        Some(("postgresql" | "postgres", rest)) => format!("postgresql+psycopg2://{rest}"),
        _ => uri.to_string(),
    }
}

/// What pyiceberg saw.
#[derive(Debug, Clone)]
pub struct IcebergRead {
    /// Every row of `scan().to_arrow()`, as JSON objects (timestamps as strings).
    pub rows: Vec<serde_json::Map<String, Value>>,
    /// The table's column names, in order.
    pub columns: Vec<String>,
    /// The snapshots of `main`, oldest first: `{id, parent, summary}`.
    pub snapshots: Vec<Value>,
    /// The table properties.
    pub properties: serde_json::Map<String, Value>,
    /// The current schema's top-level field ids, in column order.
    pub field_ids: Vec<i64>,
    /// The number of schemas in the metadata.
    pub schemas: usize,
    /// The data files of the current snapshot.
    pub files: usize,
}

impl IcebergRead {
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

    /// The `arcane.sequence` of each snapshot of `main`, oldest first, that `stream` wrote.
    pub fn sequences(&self, stream: &str) -> Vec<u64> {
        self.snapshots
            .iter()
            .filter(|s| s["summary"]["arcane.stream-id"] == stream)
            .map(|s| {
                s["summary"]["arcane.sequence"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("a sequence")
            })
            .collect()
    }
}

const READ: &str = r#"
import json, sys
kind, name, ident, props = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
if kind == "rest":
    from pyiceberg.catalog.rest import RestCatalog
    catalog = RestCatalog(name, **props)
else:
    from pyiceberg.catalog.sql import SqlCatalog
    catalog = SqlCatalog(name, **props)
t = catalog.load_table(ident)
arrow = t.scan().to_arrow()
chain = []
s = t.current_snapshot()
while s is not None:
    summary = dict(s.summary.additional_properties)
    summary["operation"] = str(s.summary.operation.value)
    chain.append({"id": s.snapshot_id, "parent": s.parent_snapshot_id, "summary": summary})
    s = t.snapshot_by_id(s.parent_snapshot_id) if s.parent_snapshot_id is not None else None
chain.reverse()
files = len(list(t.scan().plan_files()))
print(json.dumps({
    "rows": arrow.to_pylist(),
    "columns": arrow.column_names,
    "snapshots": chain,
    "properties": dict(t.properties),
    "field_ids": [f.field_id for f in t.schema().fields],
    "schemas": len(t.metadata.schemas),
    "files": files,
}, default=str))
"#;

const CLEAN: &str = r#"
import sys
import sqlalchemy
engine = sqlalchemy.create_engine(sys.argv[1])
for table in ("iceberg_tables", "iceberg_namespace_properties"):
    try:
        with engine.begin() as c:
            c.execute(sqlalchemy.text(f"DELETE FROM {table} WHERE catalog_name = :n"), {"n": sys.argv[2]})
    except Exception:
        pass
"#;
