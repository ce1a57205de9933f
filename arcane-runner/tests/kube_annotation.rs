//! The schema-mismatch Job annotation against a local stand-in for the Kubernetes API.

mod support;

use std::time::Duration;

use arcane_runner::kube_job::annotate_job;
use arcane_runner::{Error, KubeSettings};
use support::kube_stand_in;

const TOKEN: &str = "test-token-7f3a9c";

fn settings(url: String, dir: &std::path::Path) -> KubeSettings {
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    KubeSettings {
        annotation_key: "arcane.streaming.sneaksanddata.com/state".into(),
        namespace: Some("streams".into()),
        job_name: Some("orders-7d9f".into()),
        api_url: Some(url),
        token_file,
        ca_file: dir.join("ca.crt"),
    }
}

#[tokio::test]
async fn patches_the_own_job_with_a_merge_patch_and_the_service_account_token() {
    let (addr, requests) = kube_stand_in(200);
    let dir = tempfile::tempdir().unwrap();
    annotate_job(
        &settings(format!("http://{addr}"), dir.path()),
        "schema-mismatch",
    )
    .await
    .unwrap();
    let req = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(req.method, "PATCH");
    assert_eq!(
        req.path,
        "/apis/batch/v1/namespaces/streams/jobs/orders-7d9f"
    );
    assert_eq!(
        req.header("content-type"),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"metadata": {"annotations": {"arcane.streaming.sneaksanddata.com/state": "schema-mismatch"}}})
    );
    assert!(requests.try_recv().is_err(), "exactly one request");
}

#[tokio::test]
async fn a_refused_patch_is_an_annotation_error_with_the_status_and_what_to_do() {
    let (addr, requests) = kube_stand_in(403);
    let dir = tempfile::tempdir().unwrap();
    let err = annotate_job(
        &settings(format!("http://{addr}"), dir.path()),
        "schema-mismatch",
    )
    .await
    .unwrap_err();
    let req = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(req.method, "PATCH");
    match &err {
        Error::Annotation {
            namespace,
            job,
            status,
            reason,
            ..
        } => {
            assert_eq!(
                (namespace.as_str(), job.as_str()),
                ("streams", "orders-7d9f")
            );
            assert_eq!(*status, Some(403));
            assert!(reason.contains("cannot patch resource"), "{reason}");
            assert!(
                reason.contains("grant the pod's service account `patch` on `jobs`"),
                "{reason}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        !err.to_string().contains(TOKEN),
        "the token must never appear: {err}"
    );
}

#[tokio::test]
async fn missing_downward_api_values_and_token_are_named() {
    let (addr, _requests) = kube_stand_in(200);
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(format!("http://{addr}"), dir.path());
    s.job_name = None;
    let err = annotate_job(&s, "schema-mismatch").await.unwrap_err();
    assert!(
        err.to_string().contains("ARCANE_JOB_NAME is not set"),
        "{err}"
    );

    let mut s = settings(format!("http://{addr}"), dir.path());
    s.namespace = None;
    let err = annotate_job(&s, "schema-mismatch").await.unwrap_err();
    assert!(
        err.to_string().contains("POD_NAMESPACE is not set"),
        "{err}"
    );
    // The service account's namespace file next to the token is the fallback.
    std::fs::write(dir.path().join("namespace"), "streams\n").unwrap();
    annotate_job(&s, "schema-mismatch").await.unwrap();

    let mut s = settings(format!("http://{addr}"), dir.path());
    s.token_file = dir.path().join("absent");
    let err = annotate_job(&s, "schema-mismatch").await.unwrap_err();
    assert!(err.to_string().contains("ARCANE_KUBE_TOKEN_FILE"), "{err}");

    // https needs the CA bundle.
    let s = settings(format!("https://{addr}"), dir.path());
    let err = annotate_job(&s, "schema-mismatch").await.unwrap_err();
    assert!(err.to_string().contains("ARCANE_KUBE_CA_FILE"), "{err}");
}

#[tokio::test]
async fn an_unreachable_api_is_an_error() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let err = annotate_job(
        &settings(format!("http://127.0.0.1:{port}"), dir.path()),
        "schema-mismatch",
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("request to the Kubernetes API failed"),
        "{err}"
    );
}
