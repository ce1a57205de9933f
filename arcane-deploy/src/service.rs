//! A `Service` and an `Ingress` in front of a stream that receives pushed data (the
//! `http-ingest` kind): the stream's Job is long-running, and senders reach its pod through the
//! Service, from outside the cluster through the Ingress (which terminates TLS: the stream
//! speaks plain HTTP).
//!
//! The Helm chart's `pushEndpoints` value renders the same objects (`deploy/chart/templates/
//! push-endpoints.yaml`; `arcane-cli/tests/chart.rs` checks that they equal these).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::job::{JOB_NAME_LABEL, LABEL_STREAM_ID, StreamInstance};

/// The port the Service exposes.
pub const SERVICE_PORT: i32 = 80;

/// The name of the Service's port (what the Ingress's backend points at).
pub const SERVICE_PORT_NAME: &str = "http";

/// The spec field holding the address a push stream listens on.
pub const PUSH_ADDRESS_FIELD: &str = "source.address";

/// The Ingress in front of a push stream's Service: a host (and path prefix) routed to it, TLS
/// terminated with a certificate Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressOptions {
    /// The host name senders use (`events.example.com`); required.
    pub host: String,
    /// The path prefix routed to the stream (default `/`).
    pub path: String,
    /// `ingressClassName`; `None` uses the cluster's default class.
    pub class_name: Option<String>,
    /// The Secret (`kubernetes.io/tls`) with the host's certificate; `None` serves plain HTTP,
    /// which exposes bearer tokens and event data: set it for anything outside a test cluster.
    pub tls_secret_name: Option<String>,
    /// Annotations of the Ingress (controller settings, e.g. a body-size limit above the
    /// stream's `maxBodyBytes`).
    pub annotations: BTreeMap<String, String>,
}

impl IngressOptions {
    /// An Ingress for `host`, path `/`, the default class, no TLS.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            path: "/".into(),
            class_name: None,
            tls_secret_name: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Terminate TLS with the certificate in `secret`.
    pub fn with_tls_secret(mut self, secret: impl Into<String>) -> Self {
        self.tls_secret_name = Some(secret.into());
        self
    }

    /// Use the ingress class `class`.
    pub fn with_class_name(mut self, class: impl Into<String>) -> Self {
        self.class_name = Some(class.into());
        self
    }
}

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
                name: Some(SERVICE_PORT_NAME.into()),
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

/// The `Ingress` routing `opts.host` (and the prefix `opts.path`) to the Service
/// [`stream_service`] generates for `stream` (same name, port [`SERVICE_PORT_NAME`]), with TLS
/// when `opts.tls_secret_name` is set.
pub fn stream_ingress(stream: &StreamInstance, opts: &IngressOptions) -> Result<Ingress> {
    let host = opts.host.trim();
    if host.is_empty() || host.contains(['/', ':', ' ']) {
        return Err(Error::Options {
            field: "ingress.host",
            message: format!(
                "{:?} is not a host name; expected e.g. events.example.com",
                opts.host
            ),
        });
    }
    if !opts.path.starts_with('/') {
        return Err(Error::Options {
            field: "ingress.path",
            message: format!("{:?} must start with /", opts.path),
        });
    }
    Ok(Ingress {
        metadata: ObjectMeta {
            name: Some(stream.stream_id.clone()),
            namespace: Some(stream.namespace.clone()),
            labels: Some(BTreeMap::from([(
                LABEL_STREAM_ID.to_string(),
                stream.stream_id.clone(),
            )])),
            annotations: (!opts.annotations.is_empty()).then(|| opts.annotations.clone()),
            ..Default::default()
        },
        spec: Some(IngressSpec {
            ingress_class_name: opts.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(host.to_string()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(opts.path.clone()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: stream.stream_id.clone(),
                                port: Some(ServiceBackendPort {
                                    name: Some(SERVICE_PORT_NAME.into()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            tls: opts.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![host.to_string()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    })
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

    #[test]
    fn an_ingress_routes_its_host_to_the_service_with_tls() {
        let stream = stream(serde_json::json!({"source": {"address": "0.0.0.0:8080"}}));
        let opts = IngressOptions::new("events.example.com")
            .with_tls_secret("events-tls")
            .with_class_name("nginx");
        let value = serde_json::to_value(stream_ingress(&stream, &opts).unwrap()).unwrap();
        assert_eq!(value["kind"], "Ingress");
        assert_eq!(value["metadata"]["name"], "orders-push");
        assert_eq!(
            value["spec"],
            serde_json::json!({
                "ingressClassName": "nginx",
                "rules": [{"host": "events.example.com", "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "orders-push", "port": {"name": "http"}}}
                }]}}],
                "tls": [{"hosts": ["events.example.com"], "secretName": "events-tls"}]
            })
        );
        let plain = serde_json::to_value(
            stream_ingress(&stream, &IngressOptions::new("events.example.com")).unwrap(),
        )
        .unwrap();
        assert!(plain["spec"].get("tls").is_none(), "{plain}");
        assert!(plain["spec"].get("ingressClassName").is_none(), "{plain}");
        let err =
            stream_ingress(&stream, &IngressOptions::new("https://x.example.com")).unwrap_err();
        assert!(err.to_string().contains("not a host name"), "{err}");
    }
}
