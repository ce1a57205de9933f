//! [`PostgresCdcSourceConfig`]: the serde/JSON Schema form of the source's settings.

use std::time::Duration;

use arcane_core::{Error, Result, RetryConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default rows per snapshot chunk and per change batch (`batchRows`).
pub const DEFAULT_BATCH_ROWS: usize = 10_000;
/// Default of `pollInterval`: how often rows read are handed on and the gauges refreshed.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of the postgres-cdc source: one table, snapshot then logical decoding.
///
/// ```json
/// {
///   "connection": "host=127.0.0.1 port=5432 user=postgres dbname=test",
///   "table": "public.orders",
///   "slot": "arcane_orders",
///   "publication": "arcane_orders"
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresCdcSourceConfig {
    /// libpq-style connection string, as key/value pairs
    /// (`host=127.0.0.1 port=5432 user=cdc dbname=app`) or a URL
    /// (`postgresql://cdc@db:5432/app`). The user needs the `REPLICATION` attribute (or
    /// superuser) and `SELECT` on the table. Put the password in `passwordEnv`, not here.
    pub connection: String,
    /// Name of an environment variable holding the password (e.g. filled from a Kubernetes
    /// secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The captured table, `schema.table` or `table` (schema `public`). The snapshot pages by
    /// its primary key, else a unique index on NOT NULL columns (any supported types,
    /// composite too), else by `ctid` block ranges; capturing updates and deletes needs a
    /// replica identity (a primary key, `REPLICA IDENTITY USING INDEX` or `FULL`; a table
    /// without a key needs `FULL`) unless `insertOnly` is set.
    pub table: String,
    /// Replication slot name (letters, digits, `_`). One slot per stream: the slot keeps WAL
    /// until this stream has committed it, so drop the slot when the stream is deleted.
    pub slot: String,
    /// Publication name; the publication must include `table`.
    pub publication: String,
    /// Create the slot when it does not exist (default true); else a missing slot is an error.
    #[serde(default = "default_true")]
    pub create_slot: bool,
    /// Create the publication (`FOR TABLE table`) when it does not exist (default true).
    #[serde(default = "default_true")]
    pub create_publication: bool,
    /// Capture inserts only (default false). Needed for a table PostgreSQL cannot publish
    /// updates and deletes of: one with `REPLICA IDENTITY NOTHING`, or `DEFAULT` without a
    /// primary key. The publication is then created `WITH (publish = 'insert, truncate')`, so the
    /// application's own `UPDATE` and `DELETE` keep working, and the stream carries the
    /// snapshot and the inserts (`_op` `r` and `c`) but no updates or deletes. Without it such a
    /// table is refused before anything is created, with the `ALTER TABLE ... REPLICA
    /// IDENTITY FULL` (or `USING INDEX`) that makes it capturable.
    #[serde(default)]
    pub insert_only: bool,
    /// Take a consistent snapshot of the table's rows before streaming its changes (default
    /// true). Without it the stream starts at the slot's position.
    #[serde(default = "default_true")]
    pub snapshot: bool,
    /// Rows per snapshot chunk (keyset pagination on the key, or about this many rows of
    /// `ctid` blocks for a table without one) and at most this many
    /// rows per change batch. Default 10000. Making `rowsPerGroup` a multiple of it keeps
    /// group cuts on chunk boundaries (see the module docs on resuming a snapshot).
    #[serde(default = "default_batch_rows")]
    #[schemars(range(min = 1))]
    pub batch_rows: usize,
    /// How often the change stream hands on the rows read so far (a partial batch, or only
    /// the position when the table had no change) and refreshes the lag and retained-WAL
    /// gauges, e.g. `"1s"`, `"500ms"`. Changes arrive as they commit; this bounds how long a
    /// read change waits before it is grouped.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub poll_interval: Duration,
    /// How connecting and reading are retried after a transient failure (lost or refused
    /// connection, server restarting): attempts, delays and jitter. Every retry is logged at
    /// WARN with its cause; the budget starts afresh once the stream made progress; when it is
    /// spent the stream exits with code 2 (RESTART) and resumes from its last commit.
    /// Authentication, permission and missing-table errors are not retried (exit code 1).
    #[serde(default)]
    pub retry: RetryConfig,
    /// Log a WARN (at most once a minute) while the slot retains more than this many bytes of
    /// WAL (server position minus the slot's `restart_lsn`); the gauge
    /// `arcane.source.postgres.slot_retained_wal_bytes` carries the figure. Default 1 GiB;
    /// 0 turns the warning off.
    #[serde(default = "default_retained_wal_warning_bytes")]
    pub retained_wal_warning_bytes: u64,
    /// Write a heartbeat into the WAL of the captured database this often while streaming
    /// (`pg_logical_emit_message(false, 'arcane.heartbeat', '')`, a few bytes that no table
    /// receives), e.g. `"1m"`. Only needed when the database itself takes no writes at all
    /// while other databases of the cluster do: the slot's position then still moves and
    /// retains no WAL. Off by default. The user needs EXECUTE on `pg_logical_emit_message`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub heartbeat_interval: Option<Duration>,
    /// How long the server may leave the source waiting before the connection counts as lost
    /// (transient: reconnected under `retry`), e.g. `"45s"`: connecting, a snapshot page's
    /// next rows, the change stream (which asks the server for a keepalive every third of
    /// it, at most every 10 s), and the stream's periodic queries. Default 45s. A query
    /// that may rightly take long (creating the slot waits for running transactions) is not
    /// bounded by it.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
}

/// Default of `idleTimeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}

/// Default of `retainedWalWarningBytes`: 1 GiB.
pub const DEFAULT_RETAINED_WAL_WARNING_BYTES: u64 = 1 << 30;

fn default_retained_wal_warning_bytes() -> u64 {
    DEFAULT_RETAINED_WAL_WARNING_BYTES
}

fn default_true() -> bool {
    true
}
fn default_batch_rows() -> usize {
    DEFAULT_BATCH_ROWS
}
fn default_poll_interval() -> Duration {
    DEFAULT_POLL_INTERVAL
}

/// Validated settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) config: PostgresCdcSourceConfig,
}

/// The `application_name` of a stream's sessions unless the connection string sets one.
pub(crate) fn stream_application_name(slot: &str) -> String {
    format!("arcane postgres-cdc {slot}")
}

fn identifier_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PostgresCdcSourceConfig {
    /// A config with defaults for the optional fields.
    pub fn new(
        connection: impl Into<String>,
        table: impl Into<String>,
        slot: impl Into<String>,
        publication: impl Into<String>,
    ) -> Self {
        Self {
            connection: connection.into(),
            password_env: None,
            table: table.into(),
            slot: slot.into(),
            publication: publication.into(),
            create_slot: true,
            create_publication: true,
            insert_only: false,
            snapshot: true,
            batch_rows: DEFAULT_BATCH_ROWS,
            poll_interval: DEFAULT_POLL_INTERVAL,
            retry: RetryConfig::default(),
            retained_wal_warning_bytes: DEFAULT_RETAINED_WAL_WARNING_BYTES,
            heartbeat_interval: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// Check the settings; errors name `{prefix}.<field>`.
    pub(crate) fn validate(&self, prefix: &str) -> Result<Settings> {
        let field = |f: &str| format!("{prefix}.{f}");
        let mut pg: tokio_postgres::Config = self.connection.parse().map_err(|e| {
            Error::config(
                field("connection"),
                format!("cannot be parsed ({e}); use `host=H port=P user=U dbname=D` or `postgresql://U@H:P/D`"),
            )
        })?;
        if let Some(var) = &self.password_env {
            let pw = std::env::var(var).map_err(|_| {
                Error::config(
                    field("passwordEnv"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            pg.password(pw);
        }
        let (schema, table) = match self.table.split_once('.') {
            Some((s, t)) => (s.to_string(), t.to_string()),
            None => ("public".to_string(), self.table.clone()),
        };
        if !identifier_ok(&schema) || !identifier_ok(&table) {
            return Err(Error::config(
                field("table"),
                format!(
                    "{:?} is not a plain lower-case identifier (`schema.table` of a-z, 0-9, _)",
                    self.table
                ),
            ));
        }
        for (name, value) in [("slot", &self.slot), ("publication", &self.publication)] {
            if !identifier_ok(value) {
                return Err(Error::config(
                    field(name),
                    format!("{value:?} must be 1-63 characters of a-z, 0-9 and _"),
                ));
            }
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(Error::config(
                field("idleTimeout"),
                "must be at least 1s (e.g. \"45s\")",
            ));
        }
        if self.heartbeat_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::config(
                field("heartbeatInterval"),
                "must be longer than 0 (e.g. \"1m\"); leave it out for no heartbeat",
            ));
        }
        if self.batch_rows == 0 {
            return Err(Error::config(field("batchRows"), "must be at least 1"));
        }
        self.retry.validate(&field("retry"))?;
        // Name the stream's sessions, so that `retire` can tell a running stream.
        let application_name = pg
            .get_application_name()
            .map_or_else(|| stream_application_name(&self.slot), str::to_string);
        pg.application_name(&application_name);
        Ok(Settings {
            pg,
            schema,
            table,
            config: self.clone(),
        })
    }
}
