//! A `Service` in front of a stream that receives pushed data (the `http-ingest` kind): the
//! stream's Job is long-running, and senders reach its pod through this Service (and an Ingress
//! terminating TLS).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::job::{JOB_NAME_LABEL, LABEL_STREAM_ID, StreamInstance};

/// The port the Service exposes.
pub const SERVICE_PORT: i32 = 80;

/// The spec field holding the address a push stream listens on.
pub const PUSH_ADDRESS_FIELD: &str = "source.address";

/// The `Service` of a push stream: named after the stream, selecting the pods of its streaming
/// Job (`batch.kubernetes.io/job-name` = the stream id, as [`stream_job`](crate::stream_job)
/// names it), port 80 to the port of the stream's `spec.source.address`. `None` when the spec
/// has no such address (the stream does not listen).
///
/// `/readyz` on that port is 200 only while the stream accepts; during a restart the Service has
/// no ready endpoint and senders retry.
pub fn stream_service(stream: &StreamInstance) -> Result<Option<Service>> {
    let Some(address) = stream
        .spec
        .get("source")
        .and_then(|s| s.get("address"))
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    let port = address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| (1..=65_535).contains(p))
        .ok_or_else(|| Error::Options {
            field: "spec.source.address",
            message: format!(
                "{address:?} has no fixed port; a Service needs one (e.g. 0.0.0.0:8080)"
            ),
        })?;
    Ok(Some(Service {
        metadata: ObjectMeta {
            name: Some(stream.stream_id.clone()),
            namespace: Some(stream.namespace.clone()),
            labels: Some(BTreeMap::from([(
                LABEL_STREAM_ID.to_string(),
                stream.stream_id.clone(),
            )])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(
                JOB_NAME_LABEL.to_string(),
                stream.stream_id.clone(),
            )])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::Int(port)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(spec: Value) -> StreamInstance {
        StreamInstance {
            stream_id: "orders-push".into(),
            namespace: "streams".into(),
            spec,
            backfill_id: None,
        }
    }

    #[test]
    fn a_push_stream_gets_a_service_to_its_port() {
        let svc = stream_service(&stream(serde_json::json!({
            "source": {"address": "0.0.0.0:8080"}, "sink": {"url": "s3://lake/x"}
        })))
        .unwrap()
        .unwrap();
        let value = serde_json::to_value(&svc).unwrap();
        assert_eq!(value["kind"], "Service");
        assert_eq!(value["metadata"]["name"], "orders-push");
        assert_eq!(value["metadata"]["namespace"], "streams");
        assert_eq!(
            value["spec"],
            serde_json::json!({
                "selector": {"batch.kubernetes.io/job-name": "orders-push"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
            })
        );
        assert!(
            stream_service(&stream(serde_json::json!({"source": {}})))
                .unwrap()
                .is_none()
        );
        let err = stream_service(&stream(
            serde_json::json!({"source": {"address": "0.0.0.0:0"}}),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("no fixed port"), "{err}");
    }
}
