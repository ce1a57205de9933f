//! The SQL catalog on PostgreSQL, compatible with pyiceberg's `SqlCatalog` and Iceberg Java's
//! `JdbcCatalog`: table `iceberg_tables(catalog_name, table_namespace, table_name,
//! metadata_location, previous_metadata_location, iceberg_type)` and
//! `iceberg_namespace_properties(catalog_name, namespace, property_key, property_value)`.
//!
//! A commit is a compare-and-swap of the table's `metadata_location`: `UPDATE … SET
//! metadata_location = new, previous_metadata_location = old WHERE … AND metadata_location =
//! old`. One row updated: committed. None: another writer committed first. No answer (the
//! connection broke): the outcome is read back from the row, never guessed.

use std::time::Duration;

use arcane_core::retry::RetryConfig;
use arcane_core::{Error, Result, Retry};
use tokio_postgres::{Client, NoTls};

use crate::parquet::config::SqlCatalogConfig;

/// How long one catalog statement may take before its outcome counts as unknown.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The catalog tables exactly as pyiceberg's `SqlCatalog` creates them (SQLAlchemy's
/// `String(n)` is `VARCHAR(n)`), so either can create them and both can use them.
const CREATE_TABLES: &str = "CREATE TABLE IF NOT EXISTS iceberg_tables (
    catalog_name VARCHAR(255) NOT NULL,
    table_namespace VARCHAR(255) NOT NULL,
    table_name VARCHAR(255) NOT NULL,
    metadata_location VARCHAR(1000),
    previous_metadata_location VARCHAR(1000),
    iceberg_type VARCHAR(5),
    PRIMARY KEY (catalog_name, table_namespace, table_name)
)";
const CREATE_NAMESPACE_PROPERTIES: &str =
    "CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
    catalog_name VARCHAR(255) NOT NULL,
    namespace VARCHAR(255) NOT NULL,
    property_key VARCHAR(255) NOT NULL,
    property_value VARCHAR(1000) NOT NULL,
    PRIMARY KEY (catalog_name, namespace, property_key)
)";

/// What a compare-and-swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The table points at the new metadata.
    Committed,
    /// Another writer changed the table first; it now points at this location.
    Lost(Option<String>),
}

/// A connection to the SQL catalog, for one table.
pub struct SqlCatalog {
    config: tokio_postgres::Config,
    client: Option<Client>,
    catalog_name: String,
    namespace: String,
    table: String,
    /// The catalog's URI without password, for messages.
    display: String,
    sink: String,
    retry: RetryConfig,
    /// Whether `iceberg_tables` has pyiceberg's `iceberg_type` column (its "v1" schema).
    typed: bool,
}

impl std::fmt::Debug for SqlCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlCatalog")
            .field("uri", &self.display)
            .field("table", &self.identifier())
            .finish_non_exhaustive()
    }
}

/// Parse the catalog URI (`postgresql://user@host:port/db`; a SQLAlchemy driver suffix such
/// as `postgresql+psycopg2://` is accepted, so pyiceberg's URI can be reused), with the
/// password from `passwordEnv`.
pub fn parse_config(c: &SqlCatalogConfig, field: &str) -> Result<(tokio_postgres::Config, String)> {
    let uri = c.uri.trim();
    let normalized = match uri.split_once("://") {
        Some((scheme, rest))
            if scheme.starts_with("postgresql+") || scheme.starts_with("postgres+") =>
        {
            format!("postgresql://{rest}")
        }
        Some((scheme, _)) if scheme == "postgresql" || scheme == "postgres" => uri.to_string(),
        _ => {
            return Err(Error::config(
                format!("{field}.uri"),
                format!(
                    "\"{}\" is not a PostgreSQL URI; use postgresql://user@host:5432/database (the SQL catalog supports PostgreSQL)",
                    redact(uri)
                ),
            ));
        }
    };
    let mut config: tokio_postgres::Config = normalized.parse().map_err(|e| {
        Error::config(
            format!("{field}.uri"),
            format!("\"{}\" is not a valid PostgreSQL URI: {e}", redact(uri)),
        )
    })?;
    if let Some(var) = &c.password_env {
        let password = std::env::var(var).map_err(|_| {
            Error::config(
                format!("{field}.passwordEnv"),
                format!("environment variable {var} is not set; set it to the catalog user's password (e.g. from a Kubernetes secret)"),
            )
        })?;
        config.password(password);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok((config, redact(uri)))
}

/// `uri` without a password.
fn redact(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => uri.to_string(),
    }
}

fn transient(e: &Error) -> bool {
    e.exit_code() == arcane_core::ExitCode::Restart
}

/// Whether a PostgreSQL error is worth retrying: no answer, a broken connection, or a
/// server-side condition that passes (not authentication, a missing database, bad SQL or a
/// missing privilege).
fn classify(e: &tokio_postgres::Error) -> Retry {
    match e.code().map(|c| c.code()) {
        Some(code)
            if code.starts_with("28") // invalid authorization
                || code.starts_with("3D") // invalid catalog (database) name
                || code.starts_with("42") // syntax error or access rule violation
                || code.starts_with("0A") =>
        {
            Retry::Permanent
        }
        _ => Retry::Transient,
    }
}

impl SqlCatalog {
    /// A catalog for `namespace.table` in catalog `catalog_name` (no I/O yet).
    pub fn new(
        config: tokio_postgres::Config,
        display: String,
        catalog_name: String,
        namespace: String,
        table: String,
        sink: String,
        retry: RetryConfig,
    ) -> Self {
        Self {
            config,
            client: None,
            catalog_name,
            namespace,
            table,
            display,
            sink,
            retry,
            typed: true,
        }
    }

    /// `catalog.namespace.table`, for messages.
    pub fn identifier(&self) -> String {
        format!("{}.{}.{}", self.catalog_name, self.namespace, self.table)
    }

    fn err(&self, what: &str, e: tokio_postgres::Error) -> Error {
        let retry = classify(&e);
        let hint = match retry {
            Retry::Permanent => {
                "check sink.tableFormat.iceberg.catalog (URI, user, password, database) and the user's privileges"
            }
            _ => "the stream restarts and retries",
        };
        let cause = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        Error::sink(
            self.sink.clone(),
            format!(
                "Iceberg SQL catalog {}: {what}: {cause}; {hint}",
                self.display
            ),
            retry,
            Some(Box::new(e)),
        )
    }

    fn timeout_err(&self, what: &str) -> Error {
        Error::sink(
            self.sink.clone(),
            format!(
                "Iceberg SQL catalog {}: {what}: no answer within {STATEMENT_TIMEOUT:?}; the stream restarts and retries",
                self.display
            ),
            Retry::Transient,
            None,
        )
    }

    async fn connect_once(&self) -> Result<Client> {
        let (client, connection) =
            tokio::time::timeout(STATEMENT_TIMEOUT, self.config.connect(NoTls))
                .await
                .map_err(|_| self.timeout_err("cannot connect"))?
                .map_err(|e| self.err("cannot connect", e))?;
        let sink = self.sink.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(sink = %sink, error = %e, "iceberg catalog connection closed");
            }
        });
        Ok(client)
    }

    /// The connection, opened (with the sink's retry policy, each attempt logged) when there
    /// is none or the last one broke.
    async fn client(&mut self) -> Result<&Client> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut delay = self.retry.initial_delay;
            let mut attempt = 1;
            let client = loop {
                match self.connect_once().await {
                    Ok(c) => break c,
                    Err(e) if transient(&e) && attempt < self.retry.max_attempts.max(1) => {
                        tracing::warn!(catalog = %self.display, attempt, error = %e, retry_in = ?delay, "cannot connect to the Iceberg catalog; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(self.retry.max_delay);
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            };
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| Error::fatal("the Iceberg catalog connection vanished"))
    }

    /// Create the catalog tables when missing (as pyiceberg does) and learn their columns.
    pub async fn init(&mut self) -> Result<()> {
        for ddl in [CREATE_TABLES, CREATE_NAMESPACE_PROPERTIES] {
            let client = self.client().await?;
            match tokio::time::timeout(STATEMENT_TIMEOUT, client.batch_execute(ddl)).await {
                Err(_) => return Err(self.timeout_err("cannot create the catalog tables")),
                Ok(Ok(())) => {}
                // Two writers creating the table at once: one wins, the other's insert into
                // pg_type conflicts; the table exists either way.
                Ok(Err(e)) if matches!(e.code().map(|c| c.code()), Some("23505" | "42P07")) => {}
                Ok(Err(e)) => return Err(self.err("cannot create the catalog tables", e)),
            }
        }
        let client = self.client().await?;
        let row = tokio::time::timeout(
            STATEMENT_TIMEOUT,
            client.query_opt(
                "SELECT 1 FROM information_schema.columns WHERE table_name = 'iceberg_tables' AND column_name = 'iceberg_type' AND table_schema = ANY (current_schemas(false))",
                &[],
            ),
        )
        .await
        .map_err(|_| self.timeout_err("cannot read the catalog tables' columns"))?
        .map_err(|e| self.err("cannot read the catalog tables' columns", e))?;
        self.typed = row.is_some();
        Ok(())
    }

    /// The table's current metadata location; `None` when the catalog has no such table.
    pub async fn load(&mut self) -> Result<Option<String>> {
        let (c, n, t) = (
            self.catalog_name.clone(),
            self.namespace.clone(),
            self.table.clone(),
        );
        let typed = self.typed;
        let client = self.client().await?;
        let sql = if typed {
            "SELECT metadata_location, iceberg_type FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3"
        } else {
            "SELECT metadata_location, NULL::varchar FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3"
        };
        let row = tokio::time::timeout(STATEMENT_TIMEOUT, client.query_opt(sql, &[&c, &n, &t]))
            .await
            .map_err(|_| self.timeout_err("cannot read the table's row"))?
            .map_err(|e| self.err("cannot read the table's row", e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let kind: Option<String> = row.get(1);
        if kind.as_deref().is_some_and(|k| k != "TABLE") {
            return Err(Error::config(
                "sink.tableFormat.iceberg.table",
                format!(
                    "{} is a {} in the catalog, not a table; choose another table name",
                    self.identifier(),
                    kind.unwrap_or_default()
                ),
            ));
        }
        let location: Option<String> = row.get(0);
        location.map(Some).ok_or_else(|| {
            Error::sink(
                self.sink.clone(),
                format!(
                    "the catalog row of {} has no metadata_location; drop the row or choose another table name",
                    self.identifier()
                ),
                Retry::Permanent,
                None,
            )
        })
    }

    /// Register the table at `metadata_location` (and its namespace) unless it exists;
    /// whether this call created it.
    pub async fn create(&mut self, metadata_location: &str) -> Result<bool> {
        let (c, n, t) = (
            self.catalog_name.clone(),
            self.namespace.clone(),
            self.table.clone(),
        );
        let typed = self.typed;
        let client = self.client().await?;
        let ns = tokio::time::timeout(
            STATEMENT_TIMEOUT,
            client.execute(
                "INSERT INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value)
                 SELECT $1::varchar, $2::varchar, 'exists', 'true'
                 WHERE NOT EXISTS (SELECT 1 FROM iceberg_namespace_properties WHERE catalog_name = $1::varchar AND namespace = $2::varchar)
                   AND NOT EXISTS (SELECT 1 FROM iceberg_tables WHERE catalog_name = $1::varchar AND table_namespace = $2::varchar)
                 ON CONFLICT DO NOTHING",
                &[&c, &n],
            ),
        )
        .await;
        match ns {
            Err(_) => return Err(self.timeout_err("cannot create the namespace")),
            Ok(Err(e)) => return Err(self.err("cannot create the namespace", e)),
            Ok(Ok(_)) => {}
        }
        let client = self.client().await?;
        let sql = if typed {
            "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type) VALUES ($1, $2, $3, $4, NULL, 'TABLE') ON CONFLICT DO NOTHING"
        } else {
            "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location) VALUES ($1, $2, $3, $4, NULL) ON CONFLICT DO NOTHING"
        };
        let location = metadata_location.to_string();
        match tokio::time::timeout(
            STATEMENT_TIMEOUT,
            client.execute(sql, &[&c, &n, &t, &location]),
        )
        .await
        {
            Ok(Ok(n)) => Ok(n == 1),
            Ok(Err(e)) if e.as_db_error().is_some() => {
                Err(self.err("cannot create the table's row", e))
            }
            // No answer (a timeout, a broken connection): whether the row is ours is read
            // back on a new connection.
            Err(_) | Ok(Err(_)) => {
                self.client = None;
                Ok(self.load().await?.as_deref() == Some(metadata_location))
            }
        }
    }

    /// Point the table at `new` if it still points at `old`.
    ///
    /// When the statement gets no answer (timeout, broken connection) the outcome is unknown:
    /// the row is read again on a new connection; pointing at `new` means committed,
    /// at `old` means not applied (the swap is sent again), anything else means lost.
    pub async fn swap(&mut self, old: &str, new: &str) -> Result<Swap> {
        let (c, n, t) = (
            self.catalog_name.clone(),
            self.namespace.clone(),
            self.table.clone(),
        );
        let (old_s, new_s) = (old.to_string(), new.to_string());
        let mut unknown = 0;
        loop {
            let client = self.client().await?;
            let outcome = tokio::time::timeout(
                STATEMENT_TIMEOUT,
                client.execute(
                    "UPDATE iceberg_tables SET metadata_location = $4, previous_metadata_location = $5
                     WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3 AND metadata_location = $5",
                    &[&c, &n, &t, &new_s, &old_s],
                ),
            )
            .await;
            let why = match outcome {
                Ok(Ok(1)) => return Ok(Swap::Committed),
                Ok(Ok(_)) => {
                    // A statement of an earlier attempt whose answer was lost may have applied
                    // the swap since: the row then points at `new`.
                    let current = self.load().await?;
                    if current.as_deref() == Some(new) {
                        return Ok(Swap::Committed);
                    }
                    return Ok(Swap::Lost(current));
                }
                Ok(Err(e)) if e.as_db_error().is_some() => {
                    return Err(self.err("cannot commit the new table metadata", e));
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {STATEMENT_TIMEOUT:?}"),
            };
            // Unknown outcome: read it back on a fresh connection.
            unknown += 1;
            tracing::warn!(catalog = %self.display, table = %self.identifier(), error = %why, attempt = unknown, "the outcome of an Iceberg commit is unknown; reading the catalog back");
            self.client = None;
            let current = match self.load().await {
                Ok(current) => current,
                Err(e) if transient(&e) && unknown < self.retry.max_attempts.max(2) => {
                    tokio::time::sleep(self.retry.initial_delay).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match current.as_deref() {
                Some(l) if l == new => return Ok(Swap::Committed),
                Some(l) if l == old && unknown < self.retry.max_attempts.max(2) => continue,
                Some(l) if l == old => {
                    return Err(Error::sink(
                        self.sink.clone(),
                        format!(
                            "Iceberg SQL catalog {}: the commit of {} got no answer {unknown} times ({why}); the table is unchanged; the stream restarts and retries",
                            self.display,
                            self.identifier()
                        ),
                        Retry::Transient,
                        None,
                    ));
                }
                _ => return Ok(Swap::Lost(current)),
            }
        }
    }
}
