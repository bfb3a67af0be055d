//! The watch caches a reconcile reads instead of the API: per watched scope, the ManagedSecrets,
//! the Secrets they manage (label-selected, managedFields trimmed to ours), and the workloads
//! (Deployments, StatefulSets, DaemonSets, Argo Rollouts: metadata and pod template only). A
//! refresh that finds nothing new then makes no Kubernetes request at all.

use crate::crd::{ManagedSecret, WorkloadKind, FIELD_MANAGER};
use crate::rollout::Workload;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::DynamicObject;
use kube::runtime::reflector::{self, store::Writer, ObjectRef, Store};
use kube::Resource;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The caches of one scope (all namespaces, or one).
#[derive(Clone)]
pub struct ScopeStores {
    pub scope: Option<String>,
    pub managed: Store<ManagedSecret>,
    pub secrets: Store<Secret>,
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
    pub daemonsets: Store<DaemonSet>,
    pub rollouts: Store<DynamicObject>,
}

/// Their writers, consumed by the watches.
pub struct ScopeWriters {
    pub managed: Writer<ManagedSecret>,
    pub secrets: Writer<Secret>,
    pub deployments: Writer<Deployment>,
    pub statefulsets: Writer<StatefulSet>,
    pub daemonsets: Writer<DaemonSet>,
}

/// The caches of a scope, their writers, and the writer of the Argo Rollouts cache (whose watch
/// starts once the CRD is served).
pub fn scope(scope: Option<String>) -> (ScopeStores, ScopeWriters, Writer<DynamicObject>) {
    let (managed, mw) = reflector::store();
    let (secrets, sw) = reflector::store();
    let (deployments, dw) = reflector::store();
    let (statefulsets, stw) = reflector::store();
    let (daemonsets, dsw) = reflector::store();
    let rw = Writer::new(crate::k8s::workloads::argo_rollout());
    let rollouts = rw.as_reader();
    (
        ScopeStores {
            scope,
            managed,
            secrets,
            deployments,
            statefulsets,
            daemonsets,
            rollouts,
        },
        ScopeWriters {
            managed: mw,
            secrets: sw,
            deployments: dw,
            statefulsets: stw,
            daemonsets: dsw,
        },
        rw,
    )
}

impl ScopeStores {
    pub fn covers(&self, ns: &str) -> bool {
        self.scope.as_deref().map(|s| s == ns).unwrap_or(true)
    }
}

/// A Secret as the cache keeps it: managedFields only of our managers (they say which keys we
/// wrote); everything else of metadata and the data as they are.
pub fn trim_secret(s: &mut Secret) {
    if let Some(mf) = s.metadata.managed_fields.as_mut() {
        mf.retain(|m| {
            m.manager
                .as_deref()
                .is_some_and(|n| n.starts_with(&format!("{FIELD_MANAGER}/")))
        });
    }
}

/// A workload as the cache keeps it: metadata (no managedFields) and the pod template.
pub fn trim_workload<K: Resource + serde::Serialize + serde::de::DeserializeOwned>(w: &mut K) {
    w.meta_mut().managed_fields = None;
    if let Ok(mut v) = serde_json::to_value(&*w) {
        let template = v.pointer("/spec/template").cloned();
        if let Some(o) = v.as_object_mut() {
            o.remove("status");
            o.insert(
                "spec".into(),
                serde_json::json!({"template": template.unwrap_or_default(), "selector": {}}),
            );
        }
        if let Ok(back) = serde_json::from_value(v) {
            *w = back;
        }
    }
}

/// An Argo Rollout as the cache keeps it: metadata (no managedFields) and the pod template.
pub fn trim_dynamic(o: &mut DynamicObject) {
    o.metadata.managed_fields = None;
    let template = o.data.pointer("/spec/template").cloned();
    if let Some(m) = o.data.as_object_mut() {
        m.remove("status");
        m.insert(
            "spec".into(),
            serde_json::json!({"template": template.unwrap_or_default()}),
        );
    }
}

/// The part of a workload whose change can matter to a rollout (labels, annotations, template).
pub fn workload_relevant<K: Resource + serde::Serialize>(w: &K) -> Option<u64> {
    let v = serde_json::to_value(w).ok()?;
    let mut h = DefaultHasher::new();
    w.meta().labels.hash(&mut h);
    w.meta().annotations.hash(&mut h);
    v.pointer("/spec/template")
        .map(|t| t.to_string())
        .hash(&mut h);
    Some(h.finish())
}

pub fn to_workload<K: Resource + serde::Serialize>(kind: WorkloadKind, obj: &K) -> Workload {
    let v = serde_json::to_value(obj).unwrap_or_default();
    Workload {
        kind,
        name: obj.meta().name.clone().unwrap_or_default(),
        labels: obj.meta().labels.clone().unwrap_or_default(),
        annotations: obj.meta().annotations.clone().unwrap_or_default(),
        template: v.pointer("/spec/template").cloned().unwrap_or_default(),
    }
}

fn in_ns<'a, K: Resource + 'a>(
    objs: Vec<Arc<K>>,
    ns: &'a str,
) -> impl Iterator<Item = Arc<K>> + 'a {
    objs.into_iter()
        .filter(move |o| o.meta().namespace.as_deref() == Some(ns))
}

/// Every workload of a namespace, from the caches.
pub fn workloads_in(scopes: &[ScopeStores], ns: &str) -> Vec<Workload> {
    let mut out = vec![];
    for s in scopes.iter().filter(|s| s.covers(ns)) {
        out.extend(
            in_ns(s.deployments.state(), ns)
                .map(|d| to_workload(WorkloadKind::Deployment, d.as_ref())),
        );
        out.extend(
            in_ns(s.statefulsets.state(), ns)
                .map(|d| to_workload(WorkloadKind::StatefulSet, d.as_ref())),
        );
        out.extend(
            in_ns(s.daemonsets.state(), ns)
                .map(|d| to_workload(WorkloadKind::DaemonSet, d.as_ref())),
        );
        out.extend(
            in_ns(s.rollouts.state(), ns).map(|d| to_workload(WorkloadKind::Rollout, d.as_ref())),
        );
    }
    out
}

/// A managed Secret from the caches (None: not cached, which may mean it does not exist or is not
/// labelled as ours yet).
pub fn secret(scopes: &[ScopeStores], ns: &str, name: &str) -> Option<Arc<Secret>> {
    scopes
        .iter()
        .filter(|s| s.covers(ns))
        .find_map(|s| s.secrets.get(&ObjectRef::new(name).within(ns)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cached_secrets_keep_only_our_managed_fields() {
        let mut s: Secret = serde_json::from_value(json!({"metadata": {"name": "db", "managedFields": [
            {"manager": "managed-secrets/uid-1", "operation": "Apply", "fieldsV1": {"f:data": {"f:password": {}}}},
            {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:data": {"f:other": {}}}}
        ]}, "data": {"password": "eA=="}}))
        .unwrap();
        trim_secret(&mut s);
        let mf = s.metadata.managed_fields.unwrap();
        assert_eq!(mf.len(), 1);
        assert_eq!(mf[0].manager.as_deref(), Some("managed-secrets/uid-1"));
        assert!(s.data.unwrap().contains_key("password"));
    }

    #[test]
    fn cached_workloads_keep_metadata_and_the_pod_template_only() {
        let mut d: Deployment = serde_json::from_value(json!({"metadata": {"name": "api", "labels": {"a": "b"}, "managedFields": [{"manager": "x"}]},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}}, "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"replicas": 3}})).unwrap();
        let before = workload_relevant(&d);
        trim_workload(&mut d);
        assert!(d.metadata.managed_fields.is_none());
        assert!(d.status.is_none());
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, None);
        assert_eq!(spec.template.spec.as_ref().unwrap().containers[0].name, "c");
        assert_eq!(
            workload_relevant(&d),
            before,
            "the trimmed parts do not matter to rollouts"
        );
    }
}
