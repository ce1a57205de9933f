//! `arcane show URL`: what a Parquet sink committed at a location.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use arcane_sinks::{
    ShardedBackfillProgress, committed_files, latest_manifest, live_files, read_committed_head,
    sharded_backfills,
};

use crate::Error;

/// Describe the dataset at `url`: current generation, committed files with rows and bytes,
/// the checkpoint its source resumes from, sharded backfills with each shard's progress, the
/// schema and the first `limit` rows.
pub(crate) async fn show(
    url: &str,
    options: &BTreeMap<String, String>,
    limit: usize,
) -> Result<String, Error> {
    let stream = |e: arcane_core::Error| Error::Stream(Box::new(e));
    let url = arcane_core::location::location_url(url, "URL").map_err(stream)?;
    let mut out = String::new();
    let sharded = sharded_backfills(&url, options).await.map_err(stream)?;
    let Some(manifest) = latest_manifest(&url, options).await.map_err(stream)? else {
        let _ = writeln!(
            out,
            "{url}: nothing committed (no manifests under _arcane/manifests)"
        );
        write_shards(&mut out, &sharded)?;
        return Ok(out);
    };
    let state = &manifest.state;
    let files = committed_files(&url, options).await.map_err(stream)?;
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let generation = if state.current_generation.is_empty() {
        "(root)"
    } else {
        state.current_generation.as_str()
    };
    let _ = writeln!(out, "dataset     {url}");
    let _ = writeln!(
        out,
        "generation  {generation}; last commit #{} at {} by stream {}",
        manifest.sequence, manifest.committed_at, manifest.stream_id
    );
    let _ = writeln!(
        out,
        "files       {} ({rows} rows, {bytes} bytes)",
        files.len()
    );
    for f in &files {
        let _ = writeln!(out, "  {}  {} rows  {} bytes", f.path, f.rows, f.bytes);
    }
    if let Some(cp) = &state.stream_checkpoint {
        let _ = writeln!(out, "resumes at  {}", serde_json::to_string(cp)?);
    }
    if let Some(b) = &state.backfill {
        let _ = writeln!(
            out,
            "backfill    {} ({:?}, {})",
            b.id,
            b.behavior,
            if b.completed {
                "completed"
            } else {
                "in progress"
            }
        );
    }
    write_shards(&mut out, &sharded)?;
    if limit > 0 && !files.is_empty() {
        let batches = read_committed_head(&url, options, limit)
            .await
            .map_err(stream)?;
        if let Some(first) = batches.first() {
            let _ = writeln!(out, "schema");
            for field in first.schema().fields() {
                let _ = writeln!(
                    out,
                    "  {}: {}{}",
                    field.name(),
                    field.data_type(),
                    if field.is_nullable() { "" } else { " not null" }
                );
            }
            let printable = batches
                .iter()
                .map(utc_as_offset)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| stream(e.into()))?;
            let table = arrow_cast::pretty::pretty_format_batches(&printable)
                .map_err(|e| stream(e.into()))?;
            let _ = writeln!(out, "first {limit} rows\n{table}");
        }
    }
    Ok(out)
}

/// Each sharded backfill: complete or not, and per shard its committed parts, rows and last
/// position.
fn write_shards(out: &mut String, sharded: &[ShardedBackfillProgress]) -> Result<(), Error> {
    for b in sharded {
        let done = b.progress.iter().filter(|s| s.done).count();
        let _ = writeln!(
            out,
            "sharded backfill {} ({} shards): {}",
            b.backfill_id,
            b.shards,
            if b.complete {
                "complete".to_string()
            } else {
                format!("in progress, {done} of {} shards done", b.shards)
            }
        );
        for s in &b.progress {
            let position = match &s.last_position {
                Some(cp) => serde_json::to_string(cp)?,
                None => "none".into(),
            };
            let _ = writeln!(
                out,
                "  shard {}  {}  {} parts  {} rows  last position {position}",
                s.index,
                if s.done { "done" } else { "running" },
                s.committed_parts,
                s.rows
            );
        }
    }
    Ok(())
}

/// The committed files of the current generation at `url`, one URL (or absolute local path)
/// per line.
pub(crate) async fn files(url: &str, options: &BTreeMap<String, String>) -> Result<String, Error> {
    let stream = |e: arcane_core::Error| Error::Stream(Box::new(e));
    let url = arcane_core::location::location_url(url, "URL").map_err(stream)?;
    let files = live_files(&url, options).await.map_err(stream)?;
    if files.is_empty() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{url}: the current generation has no committed files");
        }
    }
    Ok(files.iter().map(|f| format!("{f}\n")).collect())
}

/// Arrow formats named time zones only with `chrono-tz`; `UTC` columns are printed with the
/// equivalent offset `+00:00` (same instants).
fn utc_as_offset(
    batch: &arrow_array::RecordBatch,
) -> Result<arrow_array::RecordBatch, arrow_schema::ArrowError> {
    use arrow_schema::DataType;
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(unit, Some(tz))
                if matches!(tz.as_ref(), "UTC" | "utc" | "Z" | "Etc/UTC") =>
            {
                let data_type = DataType::Timestamp(*unit, Some("+00:00".into()));
                let data = column.to_data().into_builder().data_type(data_type.clone());
                columns.push(arrow_array::make_array(data.build()?));
                fields.push(field.as_ref().clone().with_data_type(data_type));
            }
            _ => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone());
            }
        }
    }
    arrow_array::RecordBatch::try_new(
        std::sync::Arc::new(arrow_schema::Schema::new(fields)),
        columns,
    )
}
