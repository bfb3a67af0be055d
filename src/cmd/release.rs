//! `managed-secrets release-finalizers`: for a cluster whose operator is gone (uninstalled, or
//! scaled to zero for good). ManagedSecrets that carry the cleanup finalizer (Merge key removal,
//! Retain) would otherwise hang in Terminating, and their namespaces with them. For each one this
//! does what the operator's cleanup does, needing only the Kubernetes API (no AWS): the Secret is
//! given back per the deletion policy, then the finalizer is removed.

use crate::crd::{ManagedSecret, FINALIZER};
use crate::k8s;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

/// Which ManagedSecrets to release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only those being deleted (stuck in Terminating).
    Terminating,
    /// Every one with the finalizer (before uninstalling the operator for good).
    All,
}

/// Whether `ms` is released under `scope`. Pure.
pub fn selected(ms: &ManagedSecret, scope: Scope) -> bool {
    ms.finalizers().iter().any(|f| f == FINALIZER)
        && (scope == Scope::All || ms.metadata.deletion_timestamp.is_some())
}

/// Releases what `scope` selects in `namespace` (or everywhere); returns one line per object.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    scope: Scope,
    dry_run: bool,
) -> anyhow::Result<Vec<String>> {
    let api: Api<ManagedSecret> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut out = Vec::new();
    for ms in api.list(&ListParams::default()).await?.items {
        if !selected(&ms, scope) {
            continue;
        }
        let ns = ms.namespace().unwrap_or_default();
        let what = format!("{ns}/{}", ms.name_any());
        if dry_run {
            out.push(format!(
                "{what}: would give its Secret back ({:?}) and remove the finalizer",
                k8s::secret::deletion_policy(&ms)
            ));
            continue;
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let mut names = vec![ms.target_name()];
        if let Some(old) = ms.status.as_ref().and_then(|s| s.secret_name.clone()) {
            if !names.contains(&old) {
                names.push(old);
            }
        }
        for name in names
            .iter()
            .filter(|n| crate::crd::validate::valid_secret_name(n))
        {
            k8s::secret::release_secret(&secrets, &ms, name)
                .await
                .map_err(|e| anyhow::anyhow!("{what}: Secret {name} could not be released: {e}"))?;
        }
        let namespaced: Api<ManagedSecret> = Api::namespaced(client.clone(), &ns);
        k8s::remove_finalizer(&namespaced, &ms)
            .await
            .map_err(|e| anyhow::anyhow!("{what}: the finalizer could not be removed: {e}"))?;
        out.push(format!(
            "{what}: Secret given back ({:?}), finalizer removed",
            k8s::secret::deletion_policy(&ms)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(finalizer: bool, deleting: bool) -> ManagedSecret {
        let mut m: ManagedSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "a", "namespace": "n"},
            "spec": {"secretId": "prod/a/b"}
        }))
        .unwrap();
        if finalizer {
            m.metadata.finalizers = Some(vec!["other/x".into(), FINALIZER.into()]);
        }
        if deleting {
            m.metadata.deletion_timestamp = Some(crate::status::time(chrono::Utc::now()));
        }
        m
    }

    #[test]
    fn selects_by_finalizer_and_scope() {
        assert!(selected(&ms(true, true), Scope::Terminating));
        assert!(!selected(&ms(true, false), Scope::Terminating));
        assert!(selected(&ms(true, false), Scope::All));
        assert!(!selected(&ms(false, true), Scope::All));
        assert!(!selected(&ms(false, true), Scope::Terminating));
    }
}
