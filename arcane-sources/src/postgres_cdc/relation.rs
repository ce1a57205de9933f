//! Schema changes: a `pgoutput` Relation message checked against the output schema.

use arcane_core::Error;
use tokio_postgres::Client;

use super::client::WorkResult;
use super::pgoutput::RelColumn;
use std::collections::HashMap;

use super::rows::{OutCol, RowsBuilder, fetch_type_meta, table_info};
use super::types::{SUPPORTED_TYPES, TypeMeta, resolve_type};
use super::worker::Worker;

/// The output columns after a Relation message, and which output column each relation column
/// fills: known columns keep their place, new ones are appended (nullable). A retyped or
/// unsupported column is a schema mismatch described by the message returned.
fn widen(
    columns: &[OutCol],
    rel: &[RelColumn],
    types: &HashMap<u32, TypeMeta>,
) -> Result<(Vec<OutCol>, Vec<Option<usize>>), String> {
    let mut columns = columns.to_vec();
    let mut mapping = Vec::with_capacity(rel.len());
    for c in rel {
        let Some(dt) = resolve_type(c.type_oid, c.typmod, types) else {
            return Err(format!(
                "column {:?} now has a type (oid {}) this source does not support; supported: {SUPPORTED_TYPES}",
                c.name, c.type_oid
            ));
        };
        match columns.iter().position(|o| o.name == c.name) {
            Some(i) if columns[i].data_type != dt => {
                return Err(format!(
                    "column {:?} changed type from {} to {dt}; backfill the stream",
                    c.name, columns[i].data_type
                ));
            }
            Some(i) => mapping.push(Some(i)),
            None => {
                columns.push(OutCol {
                    name: c.name.clone(),
                    data_type: dt,
                });
                mapping.push(Some(columns.len() - 1));
            }
        }
    }
    Ok((columns, mapping))
}

impl Worker {
    /// A Relation message for the captured table: check it against the output schema.
    /// Returns whether the schema changed (widened).
    pub(super) async fn apply_relation(
        &mut self,
        client: &Client,
        rel: &[RelColumn],
    ) -> WorkResult<bool> {
        let location = format!("postgres table {}", self.qualified);
        // Enum, domain and array types (a new column's) are looked up in the catalog.
        let oids: Vec<u32> = rel.iter().map(|c| c.type_oid).collect();
        fetch_type_meta(client, oids, &mut self.table.types).await?;
        let (columns, mapping) =
            widen(&self.table.columns, rel, &self.table.types).map_err(|message| {
                Error::SchemaMismatch {
                    location: location.clone(),
                    message,
                }
            })?;
        if let Some(gone) = self.dropped_column(client, &columns, rel).await? {
            return Err(Error::SchemaMismatch {
                location,
                message: format!("column {gone:?} was dropped or renamed; backfill the stream"),
            }
            .into());
        }
        self.mapping = mapping;
        if columns == self.table.columns {
            return Ok(false);
        }
        for new in &columns[self.table.columns.len()..] {
            tracing::info!(source = %self.name, column = %new.name, data_type = %new.data_type, "new column; the output schema widens (nullable)");
        }
        // Rows of the old shape go out first.
        if self.rows.len() > 0 {
            self.send().await?;
        }
        self.table.columns = columns;
        self.rows = RowsBuilder::new(&self.table.columns);
        Ok(true)
    }

    /// An output column the relation lacks is either from a change made before the column
    /// was added (it is still in the catalog) or dropped/renamed (incompatible): the name of
    /// the first one no longer in the catalog.
    async fn dropped_column(
        &self,
        client: &Client,
        columns: &[OutCol],
        rel: &[RelColumn],
    ) -> WorkResult<Option<String>> {
        let missing: Vec<&OutCol> = columns
            .iter()
            .filter(|o| !rel.iter().any(|c| c.name == o.name))
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        let now = table_info(
            client,
            &self.name,
            &self.settings.schema,
            &self.settings.table,
        )
        .await?;
        Ok(missing
            .iter()
            .find(|m| !now.columns.iter().any(|c| c.name == m.name))
            .map(|m| m.name.clone()))
    }
}
