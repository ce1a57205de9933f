//! The runner's side of the plugin protocol: a Flight client over the plugin's Unix socket,
//! and what a plugin's Flight status means for the run.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use arcane_core::{Error, Result};
use arrow_flight::decode::FlightDataDecoder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightDescriptor, Ticket};
use arrow_schema::{Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

use super::process::source_name;

/// Flight status codes that mean "retrying cannot help": the run exits 1 (FATAL) with the
/// plugin's message. Every other code is transient (the plugin is restarted).
pub const PERMANENT_CODES: [Code; 5] = [
    Code::InvalidArgument,
    Code::FailedPrecondition,
    Code::PermissionDenied,
    Code::Unauthenticated,
    Code::Unimplemented,
];

/// A connected plugin.
#[derive(Debug, Clone)]
pub(crate) struct PluginClient {
    name: String,
    inner: FlightServiceClient<Channel>,
    timeout: Duration,
}

/// A failed call: permanent (exit 1) or worth a restart.
#[derive(Debug)]
pub(crate) enum CallError {
    Permanent(Error),
    Transient(String),
}

impl CallError {
    /// Classify a Flight status of `call`.
    pub(crate) fn from_status(name: &str, call: &str, status: &Status) -> Self {
        if PERMANENT_CODES.contains(&status.code()) {
            CallError::Permanent(Error::source_permanent(
                source_name(name),
                format!(
                    "{call} failed with {:?}: {}",
                    status.code(),
                    status.message()
                ),
            ))
        } else {
            CallError::Transient(format!(
                "{call} failed with {:?}: {}",
                status.code(),
                status.message()
            ))
        }
    }

    pub(crate) fn protocol(name: &str, message: impl Into<String>) -> Self {
        CallError::Permanent(Error::source_permanent(source_name(name), message))
    }
}

/// Connects to a Unix socket whatever the URI.
#[derive(Debug, Clone)]
struct UnixConnector(PathBuf);

impl tower_service::Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) })
    }
}

impl PluginClient {
    /// Connect to the plugin listening on `socket`; calls other than the `DoGet` stream time
    /// out after `timeout`.
    pub(crate) async fn connect(
        name: &str,
        socket: &Path,
        timeout: Duration,
    ) -> Result<Self, CallError> {
        let endpoint =
            Endpoint::from_static("http://arcane-plugin.invalid").connect_timeout(timeout);
        let channel = endpoint
            .connect_with_connector(UnixConnector(socket.to_path_buf()))
            .await
            .map_err(|e| {
                CallError::Transient(format!(
                    "cannot connect to its socket {}: {}",
                    socket.display(),
                    arcane_core::error::Report(&e)
                ))
            })?;
        Ok(Self {
            name: name.to_string(),
            inner: FlightServiceClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            timeout,
        })
    }

    async fn timed<T>(
        &self,
        call: &str,
        fut: impl Future<Output = std::result::Result<T, Status>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(CallError::Transient(format!(
                "{call} got no answer within {:?} (spec.source.requestTimeout)",
                self.timeout
            ))),
            Ok(Err(status)) => Err(CallError::from_status(&self.name, call, &status)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// `GetSchema` for `config`.
    pub(crate) async fn schema(&self, config: &serde_json::Value) -> Result<SchemaRef, CallError> {
        let cmd = serde_json::to_vec(config).unwrap_or_default();
        let mut inner = self.inner.clone();
        let result = self
            .timed(
                "GetSchema",
                inner.get_schema(FlightDescriptor::new_cmd(cmd)),
            )
            .await?
            .into_inner();
        let schema = Schema::try_from(&result).map_err(|e| {
            CallError::protocol(
                &self.name,
                format!("GetSchema answered with a schema that does not decode: {e}"),
            )
        })?;
        Ok(std::sync::Arc::new(schema))
    }

    /// `DoGet` with the ticket `{config, position, mode}`.
    pub(crate) async fn read(
        &self,
        ticket: &serde_json::Value,
    ) -> Result<FlightDataDecoder, CallError> {
        let ticket = serde_json::to_vec(ticket).unwrap_or_default();
        let mut inner = self.inner.clone();
        let response = self
            .timed("DoGet", inner.do_get(Ticket::new(ticket)))
            .await?
            .into_inner();
        Ok(FlightDataDecoder::new(
            response.map_err(arrow_flight::error::FlightError::from),
        ))
    }

    /// `DoAction(kind, body)`, its results drained.
    pub(crate) async fn action(&self, kind: &str, body: Vec<u8>) -> Result<(), CallError> {
        let mut inner = self.inner.clone();
        let call = format!("DoAction({kind})");
        let action = Action::new(kind.to_string(), body);
        self.timed(&call, async move {
            let mut results = inner.do_action(action).await?.into_inner();
            while results.next().await.transpose()?.is_some() {}
            Ok(())
        })
        .await
    }
}
