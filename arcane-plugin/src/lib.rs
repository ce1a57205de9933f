//! Write an Arcane source plugin in Rust.
//!
//! A plugin is an executable the `plugin` kind of the `arcane` runner starts; it speaks the
//! protocol of `docs/plugins.md` (Arrow Flight over a Unix domain socket). This crate speaks it
//! for you: implement [`Plugin`] (the schema for a config, the batches after a position, and
//! optionally what to do once a position is committed) and call [`serve`] from `main`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use arcane_plugin::{BatchStream, Plugin, PluginError, serve};
//! use arrow_array::{Int64Array, RecordBatch};
//! use arrow_schema::{DataType, Field, Schema, SchemaRef};
//! use serde_json::Value;
//!
//! struct Count;
//!
//! #[async_trait::async_trait]
//! impl Plugin for Count {
//!     async fn schema(&self, _config: &Value) -> Result<SchemaRef, PluginError> {
//!         Ok(Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])))
//!     }
//!     async fn read(&self, config: Value, position: Option<Value>) -> Result<BatchStream, PluginError> {
//!         let schema = self.schema(&config).await?;
//!         let from = position.and_then(|p| p.as_i64()).unwrap_or(0);
//!         let batches = (from..10).map(move |n| {
//!             let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![n]))])
//!                 .map_err(|e| PluginError::permanent(e.to_string()))?;
//!             Ok((batch, Value::from(n + 1))) // the position after this batch
//!         });
//!         Ok(Box::pin(futures::stream::iter(batches)))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     serve(Count)
//! }
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_schema::SchemaRef;
use futures::stream::BoxStream;
use futures::{Stream, TryStreamExt};
use serde_json::Value;
use tokio::sync::Notify;
use tonic::{Request, Response, Status, Streaming};

/// The protocol version this crate speaks (the second field of the handshake line).
pub const PROTOCOL_VERSION: u32 = 1;

/// How long calls in flight may take to end after `shutdown`.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// The batches a plugin reads, each with the position after its last row (any JSON value).
pub type BatchStream = BoxStream<'static, Result<(RecordBatch, Value), PluginError>>;

/// An error a plugin reports to the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// Retrying cannot help (bad config, access denied): the run exits 1 (FATAL) with the
    /// message. Sent as the Flight status `InvalidArgument`.
    Permanent(String),
    /// Upstream is unavailable: the runner restarts the plugin with backoff from the last
    /// position it received, and exits 2 (RESTART) after its retry budget. Sent as
    /// `Unavailable`.
    Transient(String),
}

impl PluginError {
    /// A [`PluginError::Permanent`].
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    /// A [`PluginError::Transient`].
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient(message.into())
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Permanent(m) | Self::Transient(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PluginError {}

impl From<PluginError> for Status {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::Permanent(m) => Status::invalid_argument(m),
            PluginError::Transient(m) => Status::unavailable(m),
        }
    }
}

/// What a plugin does; [`serve`] speaks the protocol around it.
#[async_trait::async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// The schema of every batch [`read`](Self::read) returns for `config` (the spec's
    /// `source.config` object).
    async fn schema(&self, config: &Value) -> Result<SchemaRef, PluginError>;

    /// The batches after `position` (`None`: from the beginning), in order, each with the
    /// position after its last row. Resuming from a position must yield exactly the rows after
    /// it. Ending the stream ends the run (exit 0 once everything is committed). While
    /// waiting for data, send an empty batch with the current position at least every
    /// `readTimeout` of the spec (5m), or the runner counts the plugin as hung.
    async fn read(
        &self,
        config: Value,
        position: Option<Value>,
    ) -> Result<BatchStream, PluginError>;

    /// Everything up to `position` is committed by the sink: acknowledge it upstream, if the
    /// upstream system needs to know. Default: nothing.
    async fn commit(&self, position: Value) -> Result<(), PluginError> {
        let _ = position;
        Ok(())
    }
}

/// Serve `plugin` over a Unix socket until the runner sends `shutdown` (or closes the
/// connection by killing the process). Prints the handshake line on stdout; log to stderr
/// (the runner logs each line). Returns the process's exit code.
pub fn serve<P: Plugin>(plugin: P) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(serve_async(plugin));
    // The stdin watcher blocks in a read: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> std::process::ExitCode {
    let _ = writeln!(std::io::stderr(), "plugin failed: {message}");
    std::process::ExitCode::FAILURE
}

/// [`serve`] on the caller's Tokio runtime.
pub async fn serve_async<P: Plugin>(plugin: P) -> std::io::Result<()> {
    let dir = std::env::temp_dir();
    let socket = dir.join(format!("arcane-plugin-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)?;
    let _cleanup = RemoveOnDrop(socket.clone());
    let shutdown = Arc::new(Notify::new());
    let service = Service {
        plugin: Arc::new(plugin),
        shutdown: shutdown.clone(),
    };
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "ARCANE-PLUGIN|{PROTOCOL_VERSION}|unix|{}",
            socket.display()
        )?;
        stdout.flush()?;
    }
    // The runner holds the write end of stdin: EOF means it is gone (even after a SIGKILL).
    let socket_path = socket.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 4096];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        let _ = writeln!(
            std::io::stderr(),
            "arcane-plugin: the runner is gone (stdin closed); exiting"
        );
        let _ = std::fs::remove_file(&socket_path);
        std::process::exit(0);
    });
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| stream);
        Some((next, listener))
    });
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.notified().await;
        let _ = stop_tx.send(true);
    });
    let mut graceful = stop_rx.clone();
    let server = tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = graceful.wait_for(|stop| *stop).await;
        });
    tokio::select! {
        result = server => result.map_err(std::io::Error::other),
        // Calls in flight that do not end within the grace period are dropped.
        _ = async {
            let _ = stop_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Service<P> {
    plugin: Arc<P>,
    shutdown: Arc<Notify>,
}

fn config_of(bytes: &[u8], what: &str) -> Result<Value, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("{what} is not JSON: {e}")))
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unimplemented<T>(call: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{call} is not part of the Arcane plugin protocol"
    )))
}

#[async_trait::async_trait]
impl<P: Plugin> FlightService for Service<P> {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoExchangeStream = Boxed<FlightData>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let config = config_of(&request.get_ref().cmd, "the descriptor's cmd (config)")?;
        let schema = self.plugin.schema(&config).await?;
        let options = arrow_ipc_options();
        let result = SchemaAsIpc::new(&schema, &options)
            .try_into()
            .map_err(|e: arrow_schema::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = config_of(&request.get_ref().ticket, "the ticket")?;
        let config = ticket.get("config").cloned().unwrap_or(Value::Null);
        let position = ticket.get("position").cloned().filter(|p| !p.is_null());
        let schema = self.plugin.schema(&config).await?;
        let batches = self.plugin.read(config, position).await?;
        let mut first = true;
        let stream = batches
            .map_err(Status::from)
            .and_then(move |(batch, position)| {
                let schema = schema.clone();
                let send_schema = std::mem::replace(&mut first, false);
                async move { encode(schema, batch, &position, send_schema).await }
            })
            .map_ok(|messages| futures::stream::iter(messages.into_iter().map(Ok)))
            .try_flatten();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        match action.r#type.as_str() {
            "commit" => {
                let position = config_of(&action.body, "the commit action's body (position)")?;
                self.plugin.commit(position).await?;
            }
            "shutdown" => {
                let _ = writeln!(std::io::stderr(), "arcane-plugin: shutdown requested");
                self.shutdown.notify_one();
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action {other:?}; the protocol has commit and shutdown"
                )));
            }
        }
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unimplemented("Handshake")
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unimplemented("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unimplemented("PollFlightInfo")
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unimplemented("DoPut")
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unimplemented("DoExchange")
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = ["commit", "shutdown"].map(|t| {
            Ok(ActionType {
                r#type: t.to_string(),
                description: String::new(),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(actions))))
    }
}

fn arrow_ipc_options() -> arrow_ipc::writer::IpcWriteOptions {
    arrow_ipc::writer::IpcWriteOptions::default()
}

/// One batch as Flight messages (the schema first when `send_schema`), the position as the
/// `app_metadata` of the batch's (last) message.
async fn encode(
    schema: SchemaRef,
    batch: RecordBatch,
    position: &Value,
    send_schema: bool,
) -> Result<Vec<FlightData>, Status> {
    if batch.schema() != schema {
        return Err(Status::internal(format!(
            "a batch's schema {} differs from the plugin's schema {}",
            batch.schema(),
            schema
        )));
    }
    let metadata = serde_json::to_vec(position).map_err(|e| Status::internal(e.to_string()))?;
    let mut messages: Vec<FlightData> = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(usize::MAX)
        .build(futures::stream::iter([Ok(batch)]))
        .try_collect()
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    if !send_schema && !messages.is_empty() {
        messages.remove(0);
    }
    if let Some(last) = messages.last_mut() {
        last.app_metadata = metadata.into();
    }
    Ok(messages)
}
