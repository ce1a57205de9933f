//! Connecting to PostgreSQL and classifying its errors.

use std::ops::Deref;

use arcane_core::Error;
use tokio_postgres::{Client, NoTls};
use tokio_util::task::AbortOnDropHandle;

use super::config::Settings;
use super::replication::ReplError;
use crate::runtime::Closed;

/// A client and the task driving its connection: dropping it closes the socket at once, even
/// with a query in flight (a dropped [`Client`] alone leaves the connection waiting for the
/// answers to its pending queries).
#[derive(Debug)]
pub(super) struct PgConn {
    client: Client,
    _connection: AbortOnDropHandle<()>,
}

impl Deref for PgConn {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// An error inside the worker: from PostgreSQL (maybe transient), already typed, or the
/// stream was dropped.
#[derive(Debug)]
pub(super) enum WorkError {
    Pg(tokio_postgres::Error),
    Typed(Error),
    Closed,
    /// The server did not answer within `idleTimeout`.
    TimedOut(std::time::Duration),
    /// From a connection of the protocol transport (the snapshot's `COPY` connection).
    Wire(ReplError),
}

impl From<ReplError> for WorkError {
    fn from(e: ReplError) -> Self {
        WorkError::Wire(e)
    }
}

impl From<Closed> for WorkError {
    fn from(_: Closed) -> Self {
        WorkError::Closed
    }
}

impl From<tokio_postgres::Error> for WorkError {
    fn from(e: tokio_postgres::Error) -> Self {
        WorkError::Pg(e)
    }
}
impl From<Error> for WorkError {
    fn from(e: Error) -> Self {
        WorkError::Typed(e)
    }
}

impl WorkError {
    /// The typed error, saying `what` failed.
    pub(super) fn into_error(self, name: &str, what: &str) -> Error {
        match self {
            WorkError::Pg(e) => pg_err(name, what, e),
            WorkError::Typed(e) => e,
            WorkError::Wire(e) => e.into_error(name, None, what),
            WorkError::Closed => Error::fatal(format!("source {name}: {what}: {Closed}")),
            WorkError::TimedOut(limit) => Error::source_transient(
                name,
                format!(
                    "{what}: the server did not answer within {}s (spec.source.idleTimeout); the connection counts as lost",
                    limit.as_secs_f64()
                ),
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            ),
        }
    }
}

/// `work`, or [`WorkError::TimedOut`] when it takes longer than `limit`.
pub(super) async fn within<T>(
    limit: std::time::Duration,
    work: impl std::future::Future<Output = WorkResult<T>>,
) -> WorkResult<T> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(WorkError::TimedOut(limit)))
}

pub(super) type WorkResult<T> = std::result::Result<T, WorkError>;

/// Connection lost or refused, server restarting or out of connections: worth retrying.
pub(super) fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => transient_code(code.code()),
        // No SQLSTATE: an I/O or protocol error on the connection.
        None => true,
    }
}

/// Connection exception, server shutting down / starting, insufficient resources.
pub(super) fn transient_code(code: &str) -> bool {
    ["08", "57P", "53"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// What to fix, for the errors a retry cannot help with.
fn remedy(e: &tokio_postgres::Error) -> Option<&'static str> {
    remedy_for_code(e.code()?.code())
}

/// What to fix for an error of SQLSTATE `code`, when a retry cannot help.
pub(super) fn remedy_for_code(code: &str) -> Option<&'static str> {
    Some(match code {
        "28000" | "28P01" => {
            "check the user in spec.source.connection and the password in the variable named by spec.source.passwordEnv (and pg_hba.conf)"
        }
        "3D000" => "fix dbname in spec.source.connection",
        "42501" => {
            "the user needs the REPLICATION attribute (ALTER ROLE ... REPLICATION) and SELECT on the table (GRANT SELECT ON ... TO ...), or must own the table to create its publication"
        }
        "42P01" => "create the table or fix spec.source.table",
        "55000" => {
            "logical decoding needs wal_level = logical in postgresql.conf (and a server restart)"
        }
        _ => return None,
    })
}

/// "object in use" (55006): a replication slot held by another backend.
pub(super) fn is_object_in_use(e: &tokio_postgres::Error) -> bool {
    e.code().map(|c| c.code()) == Some("55006")
}

pub(super) fn slot_busy(e: &WorkError) -> bool {
    matches!(e, WorkError::Pg(pg) if is_object_in_use(pg))
}

/// Connect and set the session up for text-format values the row builders parse.
pub(super) async fn connect(settings: &Settings) -> WorkResult<PgConn> {
    within(settings.config.idle_timeout, connect_now(settings)).await
}

async fn connect_now(settings: &Settings) -> WorkResult<PgConn> {
    let (client, connection) = settings.pg.connect(NoTls).await?;
    let connection = AbortOnDropHandle::new(tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    }));
    client
        .batch_execute(
            "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET extra_float_digits = 3; \
             SET bytea_output = hex; SET IntervalStyle = postgres",
        )
        .await?;
    Ok(PgConn {
        client,
        _connection: connection,
    })
}

/// A PostgreSQL error as a source error: transient or permanent (see [`is_transient`]), saying
/// `what` failed and, for a permanent one, what to fix; the PostgreSQL error is its cause.
pub(super) fn pg_err(name: &str, what: &str, e: tokio_postgres::Error) -> Error {
    let mut message = format!(
        "{what}: {}",
        e.as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string())
    );
    if let Some(remedy) = remedy(&e) {
        message = format!("{message}; {remedy}");
    }
    if is_transient(&e) {
        Error::source_transient(name, message, e)
    } else {
        Error::Source {
            source_name: name.to_string(),
            message,
            retry: arcane_core::Retry::Permanent,
            source: Some(Box::new(e)),
        }
    }
}

pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
