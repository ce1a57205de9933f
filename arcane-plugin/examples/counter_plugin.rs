//! A Rust source plugin: rows `id` (int64) and `name` (utf8, `row-{id}`), `totalRows` in all
//! (config, default 1000) in batches of `batchRows` (default 100), resumable from a position
//! (the number of rows already read). The Rust twin of `examples/plugins/counter.py`.
//!
//! ```sh
//! cargo build -p arcane-plugin --example counter-plugin
//! arcane plugin check target/debug/examples/counter-plugin --config '{"totalRows": 500}'
//! ```

use std::sync::Arc;

use arcane_plugin::{BatchStream, Plugin, PluginError, serve};
use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde_json::Value;

struct Counter;

#[async_trait::async_trait]
impl Plugin for Counter {
    async fn schema(&self, _config: &Value) -> Result<SchemaRef, PluginError> {
        Ok(Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ])))
    }

    async fn read(
        &self,
        config: Value,
        position: Option<Value>,
    ) -> Result<BatchStream, PluginError> {
        let setting = |key, default| config.get(key).and_then(Value::as_i64).unwrap_or(default);
        let (total, size) = (setting("totalRows", 1000), setting("batchRows", 100).max(1));
        let schema = self.schema(&config).await?;
        let from = match position {
            None => 0,
            Some(p) => p.as_i64().ok_or_else(|| {
                PluginError::permanent(format!("position {p} is not a row count"))
            })?,
        };
        let batches = (from..total).step_by(size as usize).map(move |start| {
            let ids: Vec<i64> = (start..(start + size).min(total)).collect();
            let names: Vec<String> = ids.iter().map(|i| format!("row-{i}")).collect();
            let end = start + ids.len() as i64;
            let columns = vec![
                Arc::new(Int64Array::from(ids)) as _,
                Arc::new(StringArray::from(names)) as _,
            ];
            let batch = RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| PluginError::permanent(e.to_string()))?;
            Ok((batch, Value::from(end)))
        });
        Ok(Box::pin(futures::stream::iter(batches)))
    }
}

fn main() -> std::process::ExitCode {
    serve(Counter)
}
