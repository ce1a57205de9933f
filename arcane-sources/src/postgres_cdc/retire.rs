//! [`retire`]: drop a retired stream's replication slot and publication.

use arcane_core::{Error, Result};

use super::client::{connect, pg_err, quote_ident};
use super::config::PostgresCdcSourceConfig;

/// Drop the stream's replication slot (which otherwise keeps WAL on the server forever) and,
/// unless `createPublication` is false (the publication is then managed outside the stream),
/// its publication. Idempotent: what does not exist is reported and skipped. Returns one line
/// per object saying what was done.
///
/// A slot in use (a stream still running) is not dropped: the error names the process.
/// Errors name `{prefix}.<field>` for the settings.
pub async fn retire(config: &PostgresCdcSourceConfig, prefix: &str) -> Result<Vec<String>> {
    let settings = config.validate(prefix)?;
    let name = format!("postgres-cdc retire (slot {})", config.slot);
    let client = connect(&settings)
        .await
        .map_err(|e| e.into_error(&name, "connecting"))?;
    let mut report = Vec::new();
    let running = client
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
             AND pid <> pg_backend_pid() LIMIT 1",
            &[&settings.pg.get_application_name().unwrap_or_default()],
        )
        .await
        .map_err(|e| pg_err(&name, "looking for the running stream", e))?;
    if let Some(row) = running {
        return Err(Error::config(
            format!("{prefix}.slot"),
            format!(
                "the stream is still running (server process {} is connected as it); stop the stream, then retire it",
                row.get::<_, i32>(0)
            ),
        ));
    }
    let slot = client
        .query_opt(
            "SELECT active_pid, database::text, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await
        .map_err(|e| pg_err(&name, "reading replication slots", e))?;
    match slot {
        None => report.push(format!(
            "replication slot {} does not exist; nothing to drop",
            config.slot
        )),
        Some(row) => {
            if let Some(pid) = row.get::<_, Option<i32>>(0) {
                return Err(Error::config(
                    format!("{prefix}.slot"),
                    format!(
                        "replication slot {} is in use by server process {pid} (is the stream still running?); stop the stream, then retire it",
                        config.slot
                    ),
                ));
            }
            let retained = row.get::<_, Option<i64>>(2).unwrap_or(0);
            client
                .execute("SELECT pg_drop_replication_slot($1)", &[&config.slot])
                .await
                .map_err(|e| pg_err(&name, "dropping the replication slot", e))?;
            report.push(format!(
                "dropped replication slot {} (it retained {retained} bytes of WAL)",
                config.slot
            ));
        }
    }
    if !config.create_publication {
        report.push(format!(
            "left publication {} in place (createPublication: false: it is managed outside the stream)",
            config.publication
        ));
        return Ok(report);
    }
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&config.publication],
        )
        .await
        .map_err(|e| pg_err(&name, "reading publications", e))?
        .is_some();
    if exists {
        client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                quote_ident(&config.publication)
            ))
            .await
            .map_err(|e| pg_err(&name, "dropping the publication", e))?;
        report.push(format!("dropped publication {}", config.publication));
    } else {
        report.push(format!(
            "publication {} does not exist; nothing to drop",
            config.publication
        ));
    }
    Ok(report)
}
