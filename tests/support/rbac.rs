//! The operator's identity in the e2e tests: exactly what the chart grants. The chart is rendered
//! (`helm template`), its ServiceAccount and RBAC objects are applied, and the operator runs with a
//! TokenRequest token of that ServiceAccount, on the emulator and, unchanged, on a real cluster.
//! What the operator then did is read back from the emulator's audit (`/__admin/audit`) and kept
//! for `make test`'s check of the README's RBAC table against it (`scripts/check-rbac.py`).

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The chart's release name in the tests (so the ServiceAccount is `managed-secrets`).
pub const RELEASE: &str = "managed-secrets";
/// The leader Lease the chart grants (`<release>-leader`).
pub const LEASE: &str = "managed-secrets-leader";

fn helm() -> PathBuf {
    if let Ok(h) = std::env::var("HELM") {
        return PathBuf::from(h);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/helm");
    if local.exists() {
        local
    } else {
        PathBuf::from("helm")
    }
}

/// `helm template` of the chart into `namespace` with `--set` values: every document.
pub fn render(namespace: &str, set: &[String]) -> Vec<Value> {
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/managed-secrets");
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(&chart)
        .args(["--namespace", namespace]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running helm ({:?}; `make tools` installs it): {e}", helm()));
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| {
            let v: Value = serde::Deserialize::deserialize(d).ok()?;
            (!v.is_null()).then_some(v)
        })
        .collect()
}

/// The kinds of a render that make up the operator's identity.
pub fn identity_objects(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "Role"
                        | "RoleBinding"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                )
            )
        })
        .cloned()
        .collect()
}

async fn apply<K>(api: Api<K>, obj: &Value)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let name = obj["metadata"]["name"].as_str().unwrap();
    api.patch(
        name,
        &PatchParams::apply("e2e-tests").force(),
        &Patch::Apply(obj),
    )
    .await
    .unwrap_or_else(|e| panic!("applying the chart's {} {name}: {e}", obj["kind"]));
}

/// Applies the identity objects as the administrator; returns the cluster-scoped ones made
/// (kind, name), to remove from a real cluster afterwards.
pub async fn install(admin: &Client, objects: &[Value]) -> Vec<(String, String)> {
    let mut cluster_scoped = vec![];
    for o in objects {
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        let name = o["metadata"]["name"].as_str().unwrap().to_string();
        match o["kind"].as_str().unwrap() {
            "ServiceAccount" => {
                apply(Api::<ServiceAccount>::namespaced(admin.clone(), ns), o).await
            }
            "Role" => apply(Api::<Role>::namespaced(admin.clone(), ns), o).await,
            "RoleBinding" => apply(Api::<RoleBinding>::namespaced(admin.clone(), ns), o).await,
            "ClusterRole" => {
                apply(Api::<ClusterRole>::all(admin.clone()), o).await;
                cluster_scoped.push(("ClusterRole".to_string(), name));
            }
            "ClusterRoleBinding" => {
                apply(Api::<ClusterRoleBinding>::all(admin.clone()), o).await;
                cluster_scoped.push(("ClusterRoleBinding".to_string(), name));
            }
            _ => {}
        }
    }
    cluster_scoped
}

/// Removes cluster-scoped objects (a real cluster keeps them after the test namespace is gone).
pub async fn uninstall(admin: &Client, objects: &[(String, String)]) {
    for (kind, name) in objects {
        let _ = match kind.as_str() {
            "ClusterRole" => Api::<ClusterRole>::all(admin.clone())
                .delete(name, &Default::default())
                .await
                .map(|_| ()),
            _ => Api::<ClusterRoleBinding>::all(admin.clone())
                .delete(name, &Default::default())
                .await
                .map(|_| ()),
        };
    }
}

/// A token for the ServiceAccount, as the kubelet would mount it (API audience, one hour).
pub async fn token(admin: &Client, namespace: &str, service_account: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    api.create_token_request(service_account, &PostParams::default(), &req)
        .await
        .expect("a token for the operator's ServiceAccount")
        .status
        .expect("TokenRequest status")
        .token
}

/// Where the audits of the operator's requests are kept for `scripts/check-rbac.py`.
pub fn audit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rbac-observed")
}

/// Keeps what `user` did (the emulator's audit rows) in a file of its own.
pub fn keep_audit(user: &str, audit: &Value, test_namespace: &str, operator_namespace: &str) {
    let rows: Vec<Value> = audit["requests"]
        .as_array()
        .map(|a| a.iter().filter(|r| r["user"] == user).cloned().collect())
        .unwrap_or_default();
    if rows.is_empty() {
        return;
    }
    let dir = audit_dir();
    let _ = std::fs::create_dir_all(&dir);
    let body = serde_json::json!({"namespace": test_namespace, "operator_namespace": operator_namespace,
                                  "user": user, "requests": rows});
    let _ = std::fs::write(
        dir.join(format!("{operator_namespace}.json")),
        serde_json::to_vec_pretty(&body).unwrap(),
    );
}
