//! Watch caches that keep a compact record of each object instead of the object. The managed
//! Secrets: each Secret the watch delivers is trimmed
//! (`stores::trim_secret`) and kept as a `SlimSecret` of boxed strings and small lists instead of
//! the Kubernetes type, whose maps allocate a B-tree node each and whose managedFields hold a JSON
//! tree (together about 3.5 KiB per Secret; this is about a sixth of it). A reconcile reads the
//! trimmed Secret back (`secret`), identical to what the trim made. Workloads are kept as the
//! `rollout::Workload` the rollout decisions read (a trimmed Deployment was over 5 KiB).

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::ByteString;
use kube::runtime::watcher;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

type Pairs = Box<[(Box<str>, Box<str>)]>;
/// Data keys and their values' digests.
type Digests = Box<[(Box<str>, Box<[u8]>)]>;

/// A trimmed Secret, as compact as its parts allow.
#[derive(Debug, Clone, PartialEq)]
pub struct SlimSecret {
    name: Box<str>,
    namespace: Box<str>,
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    generation: Option<i64>,
    deletion: Option<Box<Time>>,
    type_: Option<Box<str>>,
    immutable: Option<bool>,
    labels: Option<Pairs>,
    annotations: Option<Pairs>,
    owners: Option<Box<[OwnerReference]>>,
    /// Our managers' entries: manager, operation, the data keys it owns.
    managers: Option<Box<[Manager]>>,
    data: Option<Digests>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Manager {
    manager: Option<Box<str>>,
    operation: Option<Box<str>>,
    data_keys: Box<[Box<str>]>,
    /// The labels and annotations it owns, the operator's reserved ones apart (usually none:
    /// an empty list allocates nothing).
    label_keys: Box<[Box<str>]>,
    annotation_keys: Box<[Box<str>]>,
}

/// The `f:` names under a path of a fieldsV1 tree.
fn names_at(f: &Option<FieldsV1>, path: &str) -> Box<[Box<str>]> {
    f.as_ref()
        .and_then(|f| f.0.pointer(path))
        .and_then(serde_json::Value::as_object)
        .map(|o| o.keys().map(|k| k.as_str().into()).collect())
        .unwrap_or_default()
}

fn names_json(keys: &[Box<str>]) -> serde_json::Value {
    keys.iter()
        .map(|k| (k.to_string(), serde_json::json!({})))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn pairs(m: &Option<BTreeMap<String, String>>) -> Option<Pairs> {
    m.as_ref().map(|m| {
        m.iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect()
    })
}

fn map(p: &Option<Pairs>) -> Option<BTreeMap<String, String>> {
    p.as_ref().map(|p| {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

fn boxed(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().map(Box::from)
}

impl SlimSecret {
    /// From a Secret as `stores::trim_secret` leaves it (what else it holds is not kept).
    pub fn new(s: &Secret) -> SlimSecret {
        let md = &s.metadata;
        let managers = md.managed_fields.as_ref().map(|entries| {
            entries
                .iter()
                .map(|m| Manager {
                    manager: boxed(&m.manager),
                    operation: boxed(&m.operation),
                    data_keys: names_at(&m.fields_v1, "/f:data"),
                    label_keys: names_at(&m.fields_v1, "/f:metadata/f:labels"),
                    annotation_keys: names_at(&m.fields_v1, "/f:metadata/f:annotations"),
                })
                .collect()
        });
        SlimSecret {
            name: md.name.as_deref().unwrap_or_default().into(),
            namespace: md.namespace.as_deref().unwrap_or_default().into(),
            uid: boxed(&md.uid),
            resource_version: boxed(&md.resource_version),
            generation: md.generation,
            deletion: md.deletion_timestamp.clone().map(Box::new),
            type_: boxed(&s.type_),
            immutable: s.immutable,
            labels: pairs(&md.labels),
            annotations: pairs(&md.annotations),
            owners: md.owner_references.as_ref().map(|o| o.clone().into()),
            managers,
            data: s.data.as_ref().map(|d| {
                d.iter()
                    .map(|(k, v)| (k.as_str().into(), v.0.clone().into()))
                    .collect()
            }),
        }
    }

    /// The trimmed Secret again.
    pub fn to_secret(&self) -> Secret {
        let managed_fields = self.managers.as_ref().map(|ms| {
            ms.iter()
                .map(|m| {
                    let mut fields = serde_json::json!({ "f:data": names_json(&m.data_keys) });
                    if !m.label_keys.is_empty() {
                        fields["f:metadata"]["f:labels"] = names_json(&m.label_keys);
                    }
                    if !m.annotation_keys.is_empty() {
                        fields["f:metadata"]["f:annotations"] = names_json(&m.annotation_keys);
                    }
                    ManagedFieldsEntry {
                        manager: m.manager.as_deref().map(String::from),
                        operation: m.operation.as_deref().map(String::from),
                        fields_v1: Some(FieldsV1(fields)),
                        ..Default::default()
                    }
                })
                .collect()
        });
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.to_string()),
                namespace: Some(self.namespace.to_string()),
                uid: self.uid.as_deref().map(String::from),
                resource_version: self.resource_version.as_deref().map(String::from),
                generation: self.generation,
                deletion_timestamp: self.deletion.as_deref().cloned(),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                owner_references: self.owners.as_ref().map(|o| o.to_vec()),
                managed_fields,
                ..Default::default()
            },
            type_: self.type_.as_deref().map(String::from),
            immutable: self.immutable,
            data: self.data.as_ref().map(|d| {
                d.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect()
            }),
            string_data: None,
        }
    }
}

type Key = (Box<str>, Box<str>);

fn key_of<K: kube::Resource>(o: &K) -> Key {
    (
        o.meta().namespace.as_deref().unwrap_or_default().into(),
        o.meta().name.as_deref().unwrap_or_default().into(),
    )
}

struct Inner<T> {
    live: HashMap<Key, Arc<T>>,
    /// A re-list in progress: what it has listed so far (swapped in when it is done).
    relisting: Option<HashMap<Key, Arc<T>>>,
}

/// A watch cache of one kind in one scope that keeps a compact record `T` of each object instead
/// of the object (a `SlimSecret`, a `rollout::Workload`). Cloning shares it.
pub struct CompactCache<T>(Arc<RwLock<Inner<T>>>);

impl<T> Clone for CompactCache<T> {
    fn clone(&self) -> Self {
        CompactCache(self.0.clone())
    }
}

impl<T> Default for CompactCache<T> {
    fn default() -> Self {
        CompactCache(Arc::new(RwLock::new(Inner {
            live: HashMap::new(),
            relisting: None,
        })))
    }
}

/// The managed Secrets of a scope.
pub type SecretCache = CompactCache<SlimSecret>;

impl<T> CompactCache<T> {
    /// Applies a watch event, each object kept as `record` makes it, as kube's reflector does: a
    /// re-list replaces the whole cache once it is complete.
    pub fn apply<K: kube::Resource>(&self, ev: &watcher::Event<K>, record: impl Fn(&K) -> T) {
        let mut c = self.0.write().unwrap_or_else(|e| e.into_inner());
        match ev {
            watcher::Event::Apply(o) => {
                c.live.insert(key_of(o), Arc::new(record(o)));
            }
            watcher::Event::Delete(o) => {
                c.live.remove(&key_of(o));
            }
            watcher::Event::Init => c.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                c.relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(key_of(o), Arc::new(record(o)));
            }
            watcher::Event::InitDone => {
                if let Some(mut fresh) = c.relisting.take() {
                    fresh.shrink_to_fit();
                    c.live = fresh;
                }
            }
        }
    }

    /// The record of `ns/name`, if cached.
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<T>> {
        let c = self.0.read().unwrap_or_else(|e| e.into_inner());
        c.live.get(&(Box::from(ns), Box::from(name))).cloned()
    }

    /// Every record in `ns`.
    pub fn in_namespace(&self, ns: &str) -> Vec<Arc<T>> {
        let c = self.0.read().unwrap_or_else(|e| e.into_inner());
        c.live
            .iter()
            .filter(|((n, _), _)| &**n == ns)
            .map(|(_, v)| v.clone())
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).live.len()
    }
}

impl SecretCache {
    /// Keeps a Secret as trimmed (`stores::trim_secret`).
    pub fn apply_secret(&self, ev: &watcher::Event<Secret>) {
        self.apply(ev, SlimSecret::new);
    }

    /// The trimmed Secret `ns/name`, if cached.
    pub fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
        self.get(ns, name).map(|s| s.to_secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trimmed(v: serde_json::Value) -> Secret {
        let mut s: Secret = serde_json::from_value(v).unwrap();
        crate::controller::stores::trim_secret(&mut s, b"k");
        s
    }

    #[test]
    fn a_cached_secret_reads_back_exactly_as_trimmed() {
        let cases = [
            json!({"metadata": {"name": "db", "namespace": "team", "uid": "u", "resourceVersion": "7",
                "labels": {"app.kubernetes.io/managed-by": "managed-secrets", "a": "1"},
                "annotations": {"managedsecrets.io/owner-uid": "uid-1", "managedsecrets.io/aws-version-id": "v1", "theirs": "y"},
                "ownerReferences": [{"apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret", "name": "db",
                    "uid": "uid-1", "controller": true, "blockOwnerDeletion": true}],
                "managedFields": [
                    {"manager": "managed-secrets/uid-1", "operation": "Apply", "apiVersion": "v1",
                     "fieldsV1": {"f:data": {"f:password": {}, "f:username": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}},
                    {"manager": "managed-secrets/uid-2", "operation": "Apply", "fieldsV1": {"f:metadata": {}}},
                    {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:data": {"f:other": {}}}}]},
                "type": "Opaque", "data": {"password": "eA==", "username": "eQ==", "other": "eg=="}}),
            json!({"metadata": {"name": "bare", "namespace": "team"}}),
            json!({"metadata": {"name": "gone", "namespace": "team", "deletionTimestamp": "2026-12-01T10:00:00Z",
                "generation": 2}, "immutable": true, "data": {}}),
        ];
        for c in cases {
            let s = trimmed(c);
            assert_eq!(SlimSecret::new(&s).to_secret(), s);
        }
    }

    #[test]
    fn the_cache_follows_the_watch_and_a_relist_replaces_it_whole() {
        let s = |name: &str, rv: &str| {
            trimmed(json!({"metadata": {"name": name, "namespace": "team", "resourceVersion": rv}}))
        };
        let c = SecretCache::default();
        c.apply_secret(&watcher::Event::Apply(s("a", "1")));
        c.apply_secret(&watcher::Event::Apply(s("b", "1")));
        c.apply_secret(&watcher::Event::Apply(s("a", "2")));
        assert_eq!(
            c.secret("team", "a")
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("2")
        );
        assert_eq!(c.in_namespace("team").len(), 2);
        c.apply_secret(&watcher::Event::Delete(s("b", "3")));
        assert!(c.secret("team", "b").is_none());
        assert!(c.secret("other", "a").is_none());
        // A re-list: the old contents answer until it is done, then only what it listed.
        c.apply_secret(&watcher::Event::Init);
        c.apply_secret(&watcher::Event::InitApply(s("c", "5")));
        assert!(c.secret("team", "a").is_some());
        assert!(c.secret("team", "c").is_none());
        c.apply_secret(&watcher::Event::InitDone);
        assert!(c.secret("team", "a").is_none());
        assert!(c.secret("team", "c").is_some());
        assert_eq!(c.len(), 1);
    }
}
