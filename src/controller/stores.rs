//! The watch caches a reconcile reads instead of the API: per watched scope, the ManagedSecrets,
//! the Secrets they manage (label-selected, managedFields trimmed to ours), and the workloads
//! (Deployments, StatefulSets, DaemonSets, Argo Rollouts: metadata and pod template only). A
//! refresh that finds nothing new then makes no Kubernetes request at all.

use crate::crd::{
    ManagedSecret, WorkloadKind, ALLOW_MERGE_ANNOTATION, FIELD_MANAGER, MANAGED_BY_LABEL,
    OWNER_UID_ANNOTATION, VERSION_ID_ANNOTATION,
};
use crate::rollout::Workload;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use kube::api::DynamicObject;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::Resource;
use serde_json::Value;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

/// The workloads of one kind in a scope, as rollout decisions read them.
pub type WorkloadCache = super::compact::CompactCache<Workload>;

/// The caches of one scope (all namespaces, or one).
#[derive(Clone)]
pub struct ScopeStores {
    pub scope: Option<String>,
    pub managed: Store<ManagedSecret>,
    pub secrets: super::compact::SecretCache,
    pub deployments: WorkloadCache,
    pub statefulsets: WorkloadCache,
    pub daemonsets: WorkloadCache,
    /// Argo Rollouts (filled once their CRD is served).
    pub rollouts: WorkloadCache,
}

/// The writer of the ManagedSecrets cache, consumed by its watch (the other caches are written
/// through their clones).
pub struct ScopeWriters {
    pub managed: Writer<ManagedSecret>,
}

/// The caches of a scope and the writer of its ManagedSecrets cache.
pub fn scope(scope: Option<String>) -> (ScopeStores, ScopeWriters) {
    let (managed, mw) = reflector::store();
    (
        ScopeStores {
            scope,
            managed,
            secrets: Default::default(),
            deployments: Default::default(),
            statefulsets: Default::default(),
            daemonsets: Default::default(),
            rollouts: Default::default(),
        },
        ScopeWriters { managed: mw },
    )
}

impl ScopeStores {
    pub fn covers(&self, ns: &str) -> bool {
        self.scope.as_deref().map(|s| s == ns).unwrap_or(true)
    }
}

/// A ManagedSecret as the cache keeps it: without managedFields and without the copy of the
/// whole object that a client-side `kubectl apply` (and Argo CD's default sync) leaves in an
/// annotation; the operator reads neither.
pub fn trim_managed(ms: &mut ManagedSecret) {
    ms.metadata.managed_fields = None;
    if let Some(a) = ms.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A Secret as the cache keeps it, a small bounded record whoever wrote it and however large it is
/// (anyone may put the managed-by label on a Secret of theirs): name, namespace, uid,
/// resourceVersion, type; of labels and annotations only the operator's own and the keys its
/// field managers applied; of ownerReferences the controller reference to a ManagedSecret; of
/// managedFields only our managers' entries, cut to the data keys they own; and of data only the keys our managers own, each value replaced by its keyed digest
/// (`render::value_digest`): enough to tell whether it changed, never the value.
pub fn trim_secret(s: &mut Secret, hash_key: &[u8]) {
    let entries = our_entries(s);
    let owned = |path: &str| -> BTreeSet<String> {
        entries
            .iter()
            .flat_map(|m| field_names(m, path))
            .filter_map(|k| k.strip_prefix("f:").map(String::from))
            .collect()
    };
    let (data_keys, label_keys, annotation_keys) = (
        owned("/f:data"),
        owned("/f:metadata/f:labels"),
        owned("/f:metadata/f:annotations"),
    );
    let mut ours: Vec<ManagedFieldsEntry> = entries.iter().map(trimmed_entry).collect();
    ours.shrink_to_fit();
    crate::k8s::secret::digest_data(s, hash_key, |k| data_keys.contains(k));
    let md = &mut s.metadata;
    if let Some(l) = md.labels.as_mut() {
        l.retain(|k, _| k == MANAGED_BY_LABEL || label_keys.contains(k));
    }
    if let Some(a) = md.annotations.as_mut() {
        trim_annotations(a, &annotation_keys, hash_key);
    }
    if let Some(r) = md.owner_references.as_mut() {
        r.retain(|r| r.controller == Some(true) && r.kind == "ManagedSecret");
        r.truncate(1);
        // Of it, only its uid is read (whose it is).
        if let Some(first) = r.first_mut() {
            *first = super::compact::owner_ref(&first.uid);
        }
    }
    if md.owner_references.as_ref().is_some_and(Vec::is_empty) {
        md.owner_references = None;
    }
    md.managed_fields = (!ours.is_empty()).then_some(ours);
    md.finalizers = None;
    md.deletion_grace_period_seconds = None;
    md.creation_timestamp = None;
    md.generate_name = None;
    md.self_link = None;
    if let Some(t) = s.type_.as_mut() {
        if t.len() > 253 {
            *t = "<too long>".into();
        }
    }
}

/// The managedFields entries of our field managers (`managed-secrets/<uid>`), taken out of `s`.
fn our_entries(s: &mut Secret) -> Vec<ManagedFieldsEntry> {
    let prefix = format!("{FIELD_MANAGER}/");
    s.metadata
        .managed_fields
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.manager.as_deref().is_some_and(|n| n.starts_with(&prefix)))
        .collect()
}

/// The field names (`f:<key>`) an entry owns under a path of its fieldsV1.
fn field_names(m: &ManagedFieldsEntry, path: &str) -> Vec<String> {
    m.fields_v1
        .as_ref()
        .and_then(|f| f.0.pointer(path))
        .and_then(serde_json::Value::as_object)
        .map(|o| o.keys().filter(|k| k.starts_with("f:")).cloned().collect())
        .unwrap_or_default()
}

/// Kept of an entry: which data keys it owns, and which labels and annotations apart from the
/// operator's reserved ones (what in_sync and release read).
fn trimmed_entry(m: &ManagedFieldsEntry) -> ManagedFieldsEntry {
    let set = |path: &str, all: bool| -> serde_json::Map<String, serde_json::Value> {
        field_names(m, path)
            .into_iter()
            .filter(|k| all || !crate::crd::validate::reserved_key(k.trim_start_matches("f:")))
            .map(|k| (k, serde_json::json!({})))
            .collect()
    };
    let (labels, annotations) = (
        set("/f:metadata/f:labels", false),
        set("/f:metadata/f:annotations", false),
    );
    let mut fields = serde_json::json!({ "f:data": set("/f:data", true) });
    if !labels.is_empty() {
        fields["f:metadata"]["f:labels"] = labels.into();
    }
    if !annotations.is_empty() {
        fields["f:metadata"]["f:annotations"] = annotations.into();
    }
    ManagedFieldsEntry {
        manager: m.manager.clone(),
        operation: m.operation.clone(),
        fields_v1: Some(FieldsV1(fields)),
        ..Default::default()
    }
}

/// Of the annotations: the reserved ones the operator reads, and those our managers applied;
/// every value bounded.
fn trim_annotations(a: &mut BTreeMap<String, String>, ours: &BTreeSet<String>, hash_key: &[u8]) {
    a.retain(|k, _| {
        [
            OWNER_UID_ANNOTATION,
            VERSION_ID_ANNOTATION,
            ALLOW_MERGE_ANNOTATION,
        ]
        .contains(&k.as_str())
            || (!crate::crd::validate::reserved_key(k) && ours.contains(k))
    });
    for (k, v) in a.iter_mut() {
        if k == ALLOW_MERGE_ANNOTATION {
            // A list of ManagedSecret names, read as it is: one longer than any sensible list
            // opts nobody in.
            if v.len() > crate::k8s::secret::ALLOW_MERGE_MAX {
                v.clear();
            }
        } else if let std::borrow::Cow::Owned(d) =
            crate::k8s::secret::cached_annotation(v, hash_key)
        {
            *v = d;
        }
    }
}

/// Of a pod template, what rollouts read: its labels and annotations, and of its containers and
/// volumes only the parts that name Secrets (with the names the types require).
pub fn slim_template(t: &Value) -> Value {
    let only = |list: &Value, keep: &dyn Fn(&Value) -> bool| -> Value {
        Value::Array(
            list.as_array()
                .into_iter()
                .flatten()
                .filter(|v| keep(v))
                .cloned()
                .collect(),
        )
    };
    let container = |c: &Value| {
        let mut o = serde_json::Map::new();
        o.insert("name".into(), c["name"].clone());
        let env = only(&c["env"], &|e| e["valueFrom"]["secretKeyRef"].is_object());
        let env_from = only(&c["envFrom"], &|e| e["secretRef"].is_object());
        for (k, v) in [("env", env), ("envFrom", env_from)] {
            if v.as_array().is_some_and(|a| !a.is_empty()) {
                o.insert(k.into(), v);
            }
        }
        Value::Object(o)
    };
    let spec = &t["spec"];
    let mut out_spec = serde_json::Map::new();
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(cs) = spec[list].as_array() {
            out_spec.insert(list.into(), cs.iter().map(container).collect());
        }
    }
    out_spec
        .entry("containers")
        .or_insert_with(|| Value::Array(vec![]));
    let volumes = only(&spec["volumes"], &|v| {
        v["secret"].is_object() || v["projected"].is_object()
    });
    if volumes.as_array().is_some_and(|a| !a.is_empty()) {
        out_spec.insert("volumes".into(), volumes);
    }
    let mut meta = serde_json::Map::new();
    for k in ["labels", "annotations"] {
        if let Some(v) = t["metadata"].get(k) {
            meta.insert(k.into(), v.clone());
        }
    }
    serde_json::json!({"metadata": meta, "spec": out_spec})
}

/// A workload as the cache keeps it: metadata (no managedFields) and the slim pod template.
pub fn trim_workload<K: Resource + serde::Serialize + serde::de::DeserializeOwned>(w: &mut K) {
    w.meta_mut().managed_fields = None;
    if let Ok(mut v) = serde_json::to_value(&*w) {
        let template = v.pointer("/spec/template").map(slim_template);
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
    let template = o.data.pointer("/spec/template").map(slim_template);
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
        .map(|t| slim_template(t).to_string())
        .hash(&mut h);
    Some(h.finish())
}

pub fn to_workload<K: Resource + serde::Serialize>(kind: WorkloadKind, obj: &K) -> Workload {
    let v = serde_json::to_value(obj).unwrap_or_default();
    Workload::new(
        kind,
        obj.meta().name.clone().unwrap_or_default(),
        obj.meta().labels.clone().unwrap_or_default(),
        obj.meta().annotations.clone().unwrap_or_default(),
        v.pointer("/spec/template")
            .unwrap_or(&serde_json::Value::Null),
    )
}

/// Every workload of a namespace, from the caches.
pub fn workloads_in(scopes: &[ScopeStores], ns: &str) -> Vec<Workload> {
    let mut out = vec![];
    for s in scopes.iter().filter(|s| s.covers(ns)) {
        for cache in [&s.deployments, &s.statefulsets, &s.daemonsets, &s.rollouts] {
            out.extend(cache.in_namespace(ns).iter().map(|w| (**w).clone()));
        }
    }
    // In a stable order (the caches are hash maps).
    out.sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
    out
}

/// A managed Secret from the caches (None: not cached, which may mean it does not exist or is not
/// labelled as ours yet).
pub fn secret(scopes: &[ScopeStores], ns: &str, name: &str) -> Option<Secret> {
    scopes
        .iter()
        .filter(|s| s.covers(ns))
        .find_map(|s| s.secrets.secret(ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    #[test]
    fn cached_annotations_are_bounded_whoever_wrote_them() {
        let long = "v".repeat(300_000);
        let mut s: Secret = serde_json::from_value(json!({"metadata": {"name": "db",
            "annotations": {"managedsecrets.io/owner-uid": long, "managedsecrets.io/made-up": "x",
                "managedsecrets.io/allow-merge": "m,".repeat(3000), "note": "n".repeat(1000), "short": "s"},
            "managedFields": [{"manager": "managed-secrets/uid-1", "operation": "Apply",
                "fieldsV1": {"f:metadata": {"f:annotations": {"f:note": {}, "f:short": {}}}}}]}}))
        .unwrap();
        trim_secret(&mut s, b"k");
        let a = s.metadata.annotations.clone().unwrap();
        assert_eq!(
            a.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "managedsecrets.io/allow-merge",
                "managedsecrets.io/owner-uid",
                "note",
                "short"
            ]
        );
        assert_eq!(
            a["managedsecrets.io/allow-merge"], "",
            "too long: opts nobody in"
        );
        assert!(a["managedsecrets.io/owner-uid"].starts_with("hmac:"));
        assert_eq!(
            a["note"],
            crate::k8s::secret::cached_annotation(&"n".repeat(1000), b"k")
        );
        assert!(a["note"].len() < 64);
        assert_eq!(a["short"], "s");
    }

    #[test]
    fn cached_secrets_keep_what_our_managers_own_with_values_as_digests() {
        let mut s: Secret = serde_json::from_value(json!({"metadata": {"name": "db",
            "labels": {"app.kubernetes.io/managed-by": "managed-secrets", "a": "1", "theirs": "x"},
            "annotations": {"managedsecrets.io/owner-uid": "uid-1", "theirs": "y".repeat(100_000)},
            "finalizers": ["example.com/x"],
            "managedFields": [
            {"manager": "managed-secrets/uid-1", "operation": "Apply", "apiVersion": "v1",
             "time": "2026-11-29T10:00:00Z", "fieldsV1": {"f:data": {"f:password": {}}, "f:metadata": {"f:labels": {"f:a": {}, "f:app.kubernetes.io/managed-by": {}}, "f:annotations": {"f:managedsecrets.io/owner-uid": {}}}}},
            {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:data": {"f:other": {}}}}
        ]}, "data": {"password": "eA==", "other": "eQ=="}}))
        .unwrap();
        trim_secret(&mut s, b"k");
        let owned = crate::k8s::secret::owned_keys(&s, "managed-secrets/uid-1");
        let mf = s.metadata.managed_fields.clone().unwrap();
        assert_eq!(
            serde_json::to_value(&mf).unwrap(),
            json!([{"manager": "managed-secrets/uid-1", "operation": "Apply",
                    "fieldsV1": {"f:data": {"f:password": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}}]),
            "the data keys, labels and annotations it owns, the reserved ones apart"
        );
        assert_eq!(
            owned.into_iter().collect::<Vec<_>>(),
            vec!["password".to_string()]
        );
        let data = s.data.clone().unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            vec!["password"],
            "only our keys"
        );
        assert_eq!(data["password"].0, crate::render::value_digest(b"k", b"x"));
        assert_eq!(
            s.metadata
                .labels
                .clone()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            vec!["a", "app.kubernetes.io/managed-by"]
        );
        assert_eq!(
            s.metadata
                .annotations
                .clone()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            vec!["managedsecrets.io/owner-uid"]
        );
        assert!(s.metadata.finalizers.is_none());
    }

    #[test]
    fn a_large_foreign_secret_with_our_label_costs_a_small_constant() {
        let big = "eHh4".repeat(200_000);
        let mut data = serde_json::Map::new();
        for i in 0..1000 {
            data.insert(
                format!("k{i}"),
                json!(if i == 0 {
                    big.clone()
                } else {
                    "eA==".to_string()
                }),
            );
        }
        let mut s: Secret = serde_json::from_value(json!({"metadata": {"name": "planted", "namespace": "tenant",
            "labels": {"app.kubernetes.io/managed-by": "managed-secrets"},
            "annotations": {"a": "y".repeat(200_000)},
            "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:data": {"f:k0": {}}}}]},
            "data": data}))
        .unwrap();
        trim_secret(&mut s, b"k");
        let size = serde_json::to_vec(&s).unwrap().len();
        assert!(
            size < 300,
            "{size} bytes kept: {}",
            serde_json::to_string(&s).unwrap()
        );
        assert!(s.data.unwrap_or_default().is_empty());
    }

    #[test]
    fn cached_managed_secrets_drop_managed_fields_and_the_last_applied_copy() {
        let mut ms: ManagedSecret =
            serde_json::from_value(json!({"apiVersion": "managedsecrets.io/v1alpha1",
            "kind": "ManagedSecret", "metadata": {"name": "db", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                "managedsecrets.io/force-sync": "1"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"secretId": "team/db", "data": {"allKeys": true}}}))
            .unwrap();
        trim_managed(&mut ms);
        assert!(ms.metadata.managed_fields.is_none());
        assert_eq!(
            ms.metadata.annotations.unwrap().keys().collect::<Vec<_>>(),
            vec!["managedsecrets.io/force-sync"]
        );
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
            spec.template.spec.as_ref().unwrap().containers[0].image,
            None
        );
        assert_eq!(
            workload_relevant(&d),
            before,
            "the trimmed parts do not matter to rollouts"
        );
    }

    #[test]
    fn the_slim_template_keeps_what_names_secrets_and_the_template_metadata() {
        let t = json!({"metadata": {"labels": {"app": "api"}, "annotations": {"a": "1"}, "name": "x"},
            "spec": {"serviceAccountName": "sa",
              "containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "1"}},
                "env": [{"name": "A", "value": "plain"}, {"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}},
                        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "api"}}]}],
              "initContainers": [{"name": "i", "image": "j"}],
              "volumes": [{"name": "e", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "tls"}},
                          {"name": "p", "projected": {"sources": [{"secret": {"name": "x"}}]}}]}});
        let slim = slim_template(&t);
        assert_eq!(
            slim,
            json!({"metadata": {"labels": {"app": "api"}, "annotations": {"a": "1"}},
                "spec": {"containers": [{"name": "c",
                    "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}],
                    "envFrom": [{"secretRef": {"name": "api"}}]}],
                  "initContainers": [{"name": "i"}],
                  "volumes": [{"name": "s", "secret": {"secretName": "tls"}},
                              {"name": "p", "projected": {"sources": [{"secret": {"name": "x"}}]}}]}})
        );
        assert_eq!(
            crate::rollout::referenced_secrets(&slim),
            crate::rollout::referenced_secrets(&t)
        );
        assert_eq!(slim_template(&slim), slim, "slimming is idempotent");
    }
}
