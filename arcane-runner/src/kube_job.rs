//! Annotating the stream's own Job after a schema mismatch, so the operator backfills it.
//!
//! The Job template must give the container (the Arcane chart's templates do):
//!
//! ```yaml
//! env:
//!   - name: POD_NAMESPACE
//!     valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
//!   - name: ARCANE_JOB_NAME
//!     valueFrom: { fieldRef: { fieldPath: "metadata.labels['batch.kubernetes.io/job-name']" } }
//! ```
//!
//! and its service account needs `patch` on `jobs` (group `batch`) in the namespace.
//!
//! The Kubernetes client is the `kube` feature of this crate (on by default; the `arcane`
//! binary enables it with `--features kube` or `--features full`). Built without it,
//! [`annotate_job`] always fails with an error saying so, and the runner exits FATAL.

#[cfg(feature = "kube")]
use std::path::Path;
use std::time::Duration;

#[cfg(feature = "kube")]
use k8s_openapi::api::batch::v1::Job;
#[cfg(feature = "kube")]
use kube::api::{Api, Patch, PatchParams};
#[cfg(feature = "kube")]
use serde_json::json;

use crate::config::KubeSettings;
#[cfg(feature = "kube")]
use crate::config::{
    ENV_JOB_NAME, ENV_KUBE_API_URL, ENV_KUBE_CA_FILE, ENV_KUBE_TOKEN_FILE, ENV_POD_NAMESPACE,
};
use crate::error::Error;

/// How long annotating may take in total (it runs during the pod's termination).
pub const ANNOTATE_TIMEOUT: Duration = Duration::from_secs(15);

/// Built without the `kube` feature: the Job cannot be patched, so this always returns
/// [`Error::Annotation`] saying the binary was built without the Kubernetes client (the
/// runner then exits FATAL, as for any annotation failure).
#[cfg(not(feature = "kube"))]
pub async fn annotate_job(settings: &KubeSettings, value: &str) -> Result<(), Error> {
    let _ = value;
    Err(Error::Annotation {
        namespace: settings.namespace.clone().unwrap_or_else(|| "?".into()),
        job: settings.job_name.clone().unwrap_or_else(|| "?".into()),
        key: settings.annotation_key.clone(),
        status: None,
        reason:
            "this binary was built without the `kube` feature (no Kubernetes client), so it cannot \
         patch the stream's Job; rebuild with `--features kube` (the `arcane` binary: \
         `--features full`) or run the image built from the Dockerfile"
                .to_string(),
    })
}

/// Merge-patch `{"metadata":{"annotations":{KEY: value}}}` onto the Job named by `settings`
/// (`PATCH /apis/batch/v1/namespaces/{ns}/jobs/{name}`), authenticated with the service
/// account's token. The token is never logged.
#[cfg(feature = "kube")]
pub async fn annotate_job(settings: &KubeSettings, value: &str) -> Result<(), Error> {
    let namespace = settings
        .namespace
        .clone()
        .or_else(|| namespace_from_service_account(&settings.token_file));
    let fail = |status: Option<u16>, reason: String| Error::Annotation {
        namespace: namespace.clone().unwrap_or_else(|| "?".into()),
        job: settings.job_name.clone().unwrap_or_else(|| "?".into()),
        key: settings.annotation_key.clone(),
        status,
        reason,
    };
    let Some(ns) = namespace.clone() else {
        return Err(fail(
            None,
            format!(
                "{ENV_POD_NAMESPACE} is not set; set it from the downward API (fieldPath metadata.namespace)"
            ),
        ));
    };
    let Some(job) = settings.job_name.clone() else {
        return Err(fail(
            None,
            format!(
                "{ENV_JOB_NAME} is not set; set it from the downward API (fieldPath metadata.labels['batch.kubernetes.io/job-name'])"
            ),
        ));
    };
    let config = client_config(settings, &ns).map_err(|reason| fail(None, reason))?;
    let client = kube::Client::try_from(config)
        .map_err(|e| fail(None, format!("cannot create the Kubernetes client: {e}")))?;
    let jobs: Api<Job> = Api::namespaced(client, &ns);
    let patch = json!({"metadata": {"annotations": {settings.annotation_key.as_str(): value}}});
    let params = PatchParams::default();
    let patch = Patch::Merge(&patch);
    let request = jobs.patch(&job, &params, &patch);
    match tokio::time::timeout(ANNOTATE_TIMEOUT, request).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(status))) => {
            let code = status.code;
            let hint = match code {
                401 => "the service-account token was rejected",
                403 => {
                    "grant the pod's service account `patch` on `jobs` (apiGroup batch) in this namespace"
                }
                404 => "the Job does not exist; check ARCANE_JOB_NAME and POD_NAMESPACE",
                _ => "check the Kubernetes API server",
            };
            Err(fail(
                Some(code),
                format!(
                    "the Kubernetes API answered {code} {}: {}; {hint}",
                    status.reason, status.message
                ),
            ))
        }
        Ok(Err(e)) => {
            let text = e.to_string();
            let hint = if text.contains("bearer token") {
                format!("; {ENV_KUBE_TOKEN_FILE} must hold only the token (no trailing newline)")
            } else {
                String::new()
            };
            Err(fail(
                None,
                format!("request to the Kubernetes API failed: {text}{hint}"),
            ))
        }
        Err(_) => Err(fail(
            None,
            format!("the Kubernetes API did not answer within {ANNOTATE_TIMEOUT:?}"),
        )),
    }
}

#[cfg(feature = "kube")]
fn namespace_from_service_account(token_file: &Path) -> Option<String> {
    let file = token_file.parent()?.join("namespace");
    let ns = std::fs::read_to_string(file).ok()?;
    let ns = ns.trim();
    (!ns.is_empty()).then(|| ns.to_string())
}

/// The in-cluster client configuration, with the URL, token and CA overridable.
#[cfg(feature = "kube")]
fn client_config(settings: &KubeSettings, namespace: &str) -> Result<kube::Config, String> {
    let url = match &settings.api_url {
        Some(url) => url.clone(),
        None => {
            let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                format!("not running in Kubernetes: KUBERNETES_SERVICE_HOST is not set; set {ENV_KUBE_API_URL} to the API server's URL")
            })?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            if host.contains(':') {
                format!("https://[{host}]:{port}")
            } else {
                format!("https://{host}:{port}")
            }
        }
    };
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{ENV_KUBE_API_URL}: invalid URL {url:?} ({e})"))?;
    if !settings.token_file.is_file() {
        return Err(format!(
            "service-account token file {} does not exist ({ENV_KUBE_TOKEN_FILE}); mount the service account token (automountServiceAccountToken)",
            settings.token_file.display()
        ));
    }
    let https = uri.scheme_str() == Some("https");
    let mut config = kube::Config::new(uri);
    config.default_namespace = namespace.to_string();
    config.auth_info.token_file = Some(settings.token_file.display().to_string());
    if https {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(&settings.ca_file)
            .map_err(|e| {
                format!(
                    "cannot read the Kubernetes CA bundle {} ({ENV_KUBE_CA_FILE}): {e}",
                    settings.ca_file.display()
                )
            })?
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| {
                format!(
                    "invalid PEM in the Kubernetes CA bundle {} ({ENV_KUBE_CA_FILE}): {e}",
                    settings.ca_file.display()
                )
            })?;
        config.root_cert = Some(certs);
        config.root_cert_file = Some(settings.ca_file.clone());
    }
    Ok(config)
}

#[cfg(all(test, not(feature = "kube")))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_kube_the_annotation_fails_saying_how_to_build_it() {
        let settings = KubeSettings {
            annotation_key: "arcane.streaming.sneaksanddata.com/state".into(),
            namespace: Some("streams".into()),
            job_name: Some("orders-7d9f".into()),
            api_url: None,
            token_file: "/nonexistent/token".into(),
            ca_file: "/nonexistent/ca.crt".into(),
        };
        let err = annotate_job(&settings, "schema-mismatch")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("streams"), "{text}");
        assert!(text.contains("orders-7d9f"), "{text}");
        assert!(text.contains("without the `kube` feature"), "{text}");
        assert!(text.contains("--features full"), "{text}");
    }
}
