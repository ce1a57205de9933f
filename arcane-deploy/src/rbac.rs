//! RBAC for the stream Jobs: a ServiceAccount whose only permission is to read and annotate
//! Jobs in its namespace (the runner annotates its own Job on a schema mismatch).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The default name of the stream Jobs' ServiceAccount, Role and RoleBinding.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "arcane-stream";

/// The verbs the runner needs on its own Job: `get` to read it, `patch` to add the
/// `arcane.streaming.sneaksanddata.com/state: schema-mismatch` annotation.
pub const JOB_VERBS: [&str; 2] = ["get", "patch"];

/// ServiceAccount, Role and RoleBinding of the stream Jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Rbac {
    /// The Jobs' identity. `automountServiceAccountToken` stays on: the runner needs the token.
    pub service_account: ServiceAccount,
    /// `get` and `patch` on `batch/v1` `jobs` in the namespace, nothing else.
    pub role: Role,
    /// Binds the Role to the ServiceAccount.
    pub role_binding: RoleBinding,
}

/// RBAC objects in `namespace` for the ServiceAccount `service_account` (the Role and
/// RoleBinding share its name).
pub fn rbac(namespace: &str, service_account: &str) -> Rbac {
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "arcane".to_string()),
        (
            "app.kubernetes.io/part-of".to_string(),
            "arcane".to_string(),
        ),
    ]);
    let meta = || ObjectMeta {
        name: Some(service_account.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    Rbac {
        service_account: ServiceAccount {
            metadata: meta(),
            ..Default::default()
        },
        role: Role {
            metadata: meta(),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec!["batch".into()]),
                resources: Some(vec!["jobs".into()]),
                verbs: JOB_VERBS.iter().map(|v| v.to_string()).collect(),
                ..Default::default()
            }]),
        },
        role_binding: RoleBinding {
            metadata: meta(),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: service_account.to_string(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: service_account.to_string(),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            }]),
        },
    }
}
