//! Watch caches that keep a compact record of each object instead of the object. The managed
//! Secrets: each Secret the watch delivers is trimmed
//! (`stores::trim_secret`) and kept as a `SlimSecret` of boxed strings and small lists instead of
//! the Kubernetes type, whose maps allocate a B-tree node each and whose managedFields hold a JSON
//! tree (together about 3.5 KiB per Secret; this is about a sixth of it). A reconcile reads the
//! trimmed Secret back (`secret`), identical to what the trim made. Workloads are kept as the
//! `rollout::Workload` the rollout decisions read (a trimmed Deployment was over 5 KiB).

use crate::crd::{
    ALLOW_MERGE_ANNOTATION, FIELD_MANAGER, MANAGED_BY_LABEL, OWNER_UID_ANNOTATION,
    VERSION_ID_ANNOTATION,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::ByteString;
use kube::runtime::watcher;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// A string the cache keeps, in as few bytes as its form allows: the well-known keys and values
/// (the operator's label and annotation keys, operations, Secret types) and the forms that are
/// everywhere in it (uids, our field managers' names, resourceVersions) without an allocation.
/// Each reads back exactly as given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Text {
    Known(&'static str),
    /// A UUID in its canonical form (lowercase, hyphenated).
    Uuid([u8; 16]),
    /// `managed-secrets/<uuid>`: one of our field managers.
    Ours([u8; 16]),
    /// A decimal number with no leading zero.
    Num(u64),
    Own(Box<str>),
}

const KNOWN: &[&str] = &[
    MANAGED_BY_LABEL,
    FIELD_MANAGER,
    OWNER_UID_ANNOTATION,
    VERSION_ID_ANNOTATION,
    ALLOW_MERGE_ANNOTATION,
    "Apply",
    "Update",
    "Opaque",
    "kubernetes.io/tls",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
];

/// The 16 bytes of a canonical UUID (`8-4-4-4-12` lowercase hex digits).
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let digits: Vec<u8> = b.iter().copied().filter(|c| *c != b'-').collect();
    if digits.len() != 32
        || !digits
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(&digits, &mut out).ok()?;
    Some(out)
}

fn uuid_text(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Text {
    fn new(s: &str) -> Text {
        if let Some(k) = KNOWN.iter().find(|k| **k == s) {
            return Text::Known(k);
        }
        if let Some(u) = uuid_bytes(s) {
            return Text::Uuid(u);
        }
        if let Some(u) = s
            .strip_prefix(FIELD_MANAGER)
            .and_then(|r| r.strip_prefix('/'))
            .and_then(uuid_bytes)
        {
            return Text::Ours(u);
        }
        match s.parse::<u64>() {
            Ok(n) if n.to_string() == s => Text::Num(n),
            _ => Text::Own(s.into()),
        }
    }

    fn text(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self {
            Text::Known(s) => Cow::Borrowed(s),
            Text::Uuid(u) => Cow::Owned(uuid_text(u)),
            Text::Ours(u) => Cow::Owned(format!("{FIELD_MANAGER}/{}", uuid_text(u))),
            Text::Num(n) => Cow::Owned(n.to_string()),
            Text::Own(s) => Cow::Borrowed(s),
        }
    }

    fn string(&self) -> String {
        self.text().into_owned()
    }
}

type Pairs = Box<[(Text, Text)]>;
/// Data keys and their values' digests (`render::value_digest`, 16 bytes).
type Digests = Box<[(Box<str>, [u8; DIGEST])]>;
const DIGEST: usize = 16;

/// A trimmed Secret, as compact as its parts allow. Its namespace and name are the cache's key.
#[derive(Debug, Clone, PartialEq)]
pub struct SlimSecret {
    uid: Option<Text>,
    resource_version: Option<Text>,
    generation: Option<i64>,
    deletion: Option<Box<Time>>,
    type_: Option<Text>,
    immutable: Option<bool>,
    labels: Option<Pairs>,
    annotations: Option<Pairs>,
    /// The uid of its controller reference to a ManagedSecret (all the trim keeps of one).
    owner: Option<Text>,
    /// Our managers' entries: manager, operation, what it owns.
    managers: Option<Box<[Manager]>>,
    data: Option<Digests>,
    /// More than `MAX_CACHED_KEYS` keys to keep: nothing kept but this mark, and the Secret is
    /// read from the API when a reconcile needs it (`SecretCache::secret` answers `None`).
    oversized: bool,
}

/// Most keys (data keys, labels and annotations, and the names our managers own) a cached record
/// keeps. Anyone can write managedFields that name one of our managers on a Secret of theirs and
/// make it "own" every key; above this, the record keeps nothing, so its size stays bounded
/// whoever wrote the Secret. A legitimate Secret with more keys (allKeys over a very wide AWS
/// value) is read from the API when a reconcile needs it.
pub const MAX_CACHED_KEYS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Manager {
    manager: Option<Text>,
    operation: Option<Text>,
    /// The `f:` names of the data keys it owns; `None`: exactly the record's data keys (the usual
    /// case, one manager), kept once.
    data_keys: Option<Box<[Box<str>]>>,
    /// The labels and annotations it owns, the operator's reserved ones apart (usually none:
    /// an empty list allocates nothing).
    label_keys: Box<[Box<str>]>,
    annotation_keys: Box<[Box<str>]>,
}

impl Manager {
    /// How many names it keeps.
    fn len(&self) -> usize {
        self.data_keys.as_ref().map_or(0, |k| k.len())
            + self.label_keys.len()
            + self.annotation_keys.len()
    }
}

/// The `f:` names under a path of a fieldsV1 tree.
fn names_at(f: &Option<FieldsV1>, path: &str) -> Box<[Box<str>]> {
    f.as_ref()
        .and_then(|f| f.0.pointer(path))
        .and_then(serde_json::Value::as_object)
        .map(|o| o.keys().map(|k| k.as_str().into()).collect())
        .unwrap_or_default()
}

fn names_json<'a>(keys: impl Iterator<Item = &'a str>) -> serde_json::Value {
    keys.map(|k| (k.to_string(), serde_json::json!({})))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn pairs(m: &Option<BTreeMap<String, String>>) -> Option<Pairs> {
    m.as_ref().map(|m| {
        m.iter()
            .map(|(k, v)| (Text::new(k), Text::new(v)))
            .collect()
    })
}

fn map(p: &Option<Pairs>) -> Option<BTreeMap<String, String>> {
    p.as_ref()
        .map(|p| p.iter().map(|(k, v)| (k.string(), v.string())).collect())
}

/// A value digest as kept (a value of another length, which a trimmed Secret never holds, is
/// cut or padded: it then differs from every digest, and the next sync rewrites the Secret).
fn digest(v: &[u8]) -> [u8; DIGEST] {
    let mut d = [0u8; DIGEST];
    let n = v.len().min(DIGEST);
    d[..n].copy_from_slice(&v[..n]);
    d
}

/// The controller reference to a ManagedSecret as the trim keeps it (`stores::trim_secret`):
/// its uid, nothing the operator does not read.
pub fn owner_ref(uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "managedsecrets.io/v1alpha1".into(),
        kind: "ManagedSecret".into(),
        name: String::new(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

impl SlimSecret {
    /// From a Secret as `stores::trim_secret` leaves it (what else it holds is not kept).
    pub fn new(s: &Secret) -> SlimSecret {
        let md = &s.metadata;
        let data_len = s.data.as_ref().map_or(0, BTreeMap::len);
        let held = |k: &str| {
            k.strip_prefix("f:")
                .is_some_and(|k| s.data.as_ref().is_some_and(|d| d.contains_key(k)))
        };
        let managers = md.managed_fields.as_ref().map(|entries| {
            entries
                .iter()
                .map(|m| {
                    let keys = names_at(&m.fields_v1, "/f:data");
                    // (Keys are unique: as many, all held, is the same set.)
                    let all = keys.len() == data_len && keys.iter().all(|k| held(k));
                    Manager {
                        manager: m.manager.as_deref().map(Text::new),
                        operation: m.operation.as_deref().map(Text::new),
                        data_keys: (!all).then_some(keys),
                        label_keys: names_at(&m.fields_v1, "/f:metadata/f:labels"),
                        annotation_keys: names_at(&m.fields_v1, "/f:metadata/f:annotations"),
                    }
                })
                .collect()
        });
        let keys = s.data.as_ref().map_or(0, BTreeMap::len)
            + md.labels.as_ref().map_or(0, BTreeMap::len)
            + md.annotations.as_ref().map_or(0, BTreeMap::len)
            + managers.iter().flatten().map(Manager::len).sum::<usize>();
        if keys > MAX_CACHED_KEYS {
            return SlimSecret {
                uid: md.uid.as_deref().map(Text::new),
                resource_version: md.resource_version.as_deref().map(Text::new),
                generation: None,
                deletion: None,
                type_: None,
                immutable: None,
                labels: None,
                annotations: None,
                owner: None,
                managers: None,
                data: None,
                oversized: true,
            };
        }
        SlimSecret {
            oversized: false,
            uid: md.uid.as_deref().map(Text::new),
            resource_version: md.resource_version.as_deref().map(Text::new),
            generation: md.generation,
            deletion: md.deletion_timestamp.clone().map(Box::new),
            type_: s.type_.as_deref().map(Text::new),
            immutable: s.immutable,
            labels: pairs(&md.labels),
            annotations: pairs(&md.annotations),
            owner: md
                .owner_references
                .as_ref()
                .and_then(|o| o.first())
                .map(|r| Text::new(&r.uid)),
            managers,
            data: s.data.as_ref().map(|d| {
                d.iter()
                    .map(|(k, v)| (k.as_str().into(), digest(&v.0)))
                    .collect()
            }),
        }
    }

    /// The trimmed Secret `namespace/name` again.
    pub fn to_secret(&self, namespace: &str, name: &str) -> Secret {
        let data_names = || {
            self.data
                .iter()
                .flatten()
                .map(|(k, _)| format!("f:{k}"))
                .collect::<Vec<_>>()
        };
        let managed_fields = self.managers.as_ref().map(|ms| {
            ms.iter()
                .map(|m| {
                    let data = match &m.data_keys {
                        Some(keys) => names_json(keys.iter().map(|k| &**k)),
                        None => names_json(data_names().iter().map(String::as_str)),
                    };
                    let mut fields = serde_json::json!({ "f:data": data });
                    if !m.label_keys.is_empty() {
                        fields["f:metadata"]["f:labels"] =
                            names_json(m.label_keys.iter().map(|k| &**k));
                    }
                    if !m.annotation_keys.is_empty() {
                        fields["f:metadata"]["f:annotations"] =
                            names_json(m.annotation_keys.iter().map(|k| &**k));
                    }
                    ManagedFieldsEntry {
                        manager: m.manager.as_ref().map(Text::string),
                        operation: m.operation.as_ref().map(Text::string),
                        fields_v1: Some(FieldsV1(fields)),
                        ..Default::default()
                    }
                })
                .collect()
        });
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: self.uid.as_ref().map(Text::string),
                resource_version: self.resource_version.as_ref().map(Text::string),
                generation: self.generation,
                deletion_timestamp: self.deletion.as_deref().cloned(),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                owner_references: self.owner.as_ref().map(|u| vec![owner_ref(&u.text())]),
                managed_fields,
                ..Default::default()
            },
            type_: self.type_.as_ref().map(Text::string),
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

/// Records by namespace (each namespace's name kept once), then by name.
type Records<T> = HashMap<Arc<str>, HashMap<Box<str>, Arc<T>>>;

fn ns_name<K: kube::Resource>(o: &K) -> (&str, &str) {
    (
        o.meta().namespace.as_deref().unwrap_or_default(),
        o.meta().name.as_deref().unwrap_or_default(),
    )
}

fn insert<T>(records: &mut Records<T>, ns: &str, name: &str, record: T) {
    match records.get_mut(ns) {
        Some(names) => {
            names.insert(name.into(), Arc::new(record));
        }
        None => {
            records.insert(ns.into(), HashMap::from([(name.into(), Arc::new(record))]));
        }
    }
}

struct Inner<T> {
    live: Records<T>,
    /// A re-list in progress: what it has listed so far (swapped in when it is done).
    relisting: Option<Records<T>>,
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
                let (ns, name) = ns_name(o);
                insert(&mut c.live, ns, name, record(o));
            }
            watcher::Event::Delete(o) => {
                let (ns, name) = ns_name(o);
                if let Some(names) = c.live.get_mut(ns) {
                    names.remove(name);
                    if names.is_empty() {
                        c.live.remove(ns);
                    }
                }
            }
            watcher::Event::Init => c.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let (ns, name) = ns_name(o);
                insert(
                    c.relisting.get_or_insert_with(HashMap::new),
                    ns,
                    name,
                    record(o),
                );
            }
            watcher::Event::InitDone => {
                if let Some(mut fresh) = c.relisting.take() {
                    fresh.values_mut().for_each(HashMap::shrink_to_fit);
                    fresh.shrink_to_fit();
                    c.live = fresh;
                }
            }
        }
    }

    /// The record of `ns/name`, if cached.
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<T>> {
        let c = self.0.read().unwrap_or_else(|e| e.into_inner());
        c.live.get(ns)?.get(name).cloned()
    }

    /// Every record in `ns`.
    pub fn in_namespace(&self, ns: &str) -> Vec<Arc<T>> {
        let c = self.0.read().unwrap_or_else(|e| e.into_inner());
        c.live
            .get(ns)
            .map(|names| names.values().cloned().collect())
            .unwrap_or_default()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let c = self.0.read().unwrap_or_else(|e| e.into_inner());
        c.live.values().map(HashMap::len).sum()
    }
}

impl SecretCache {
    /// Keeps a Secret as trimmed (`stores::trim_secret`).
    pub fn apply_secret(&self, ev: &watcher::Event<Secret>) {
        self.apply(ev, SlimSecret::new);
    }

    /// The trimmed Secret `ns/name`, if cached.
    pub fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
        self.get(ns, name)
            .filter(|s| !s.oversized)
            .map(|s| s.to_secret(ns, name))
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
    fn texts_read_back_exactly_in_whatever_form_they_are_kept() {
        let u = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let cases = [
            (MANAGED_BY_LABEL.to_string(), "Known"),
            ("Apply".into(), "Known"),
            (u.into(), "Uuid"),
            (u.to_uppercase(), "Own"),
            (format!("{u}x"), "Own"),
            (u.replace('-', "_"), "Own"),
            (format!("managed-secrets/{u}"), "Ours"),
            ("managed-secrets/x".into(), "Own"),
            ("123456".into(), "Num"),
            ("0".into(), "Num"),
            ("007".into(), "Own"),
            ("18446744073709551616".into(), "Own"),
            ("".into(), "Own"),
            ("ünïcode".into(), "Own"),
        ];
        for (s, form) in cases {
            let t = Text::new(&s);
            assert_eq!(t.text(), s, "{s}");
            assert!(format!("{t:?}").starts_with(form), "{s}: {t:?}");
        }
        assert_eq!(std::mem::size_of::<Text>(), 24);
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
                "deletionGracePeriodSeconds": 0, "finalizers": ["x"], "generation": 2}, "immutable": true, "data": {}}),
            // Crafted: several controller references, empty lists, a reserved annotation it does
            // not read, a long value, a manager of ours without data.
            json!({"metadata": {"name": "odd", "namespace": "team",
                "labels": {}, "annotations": {"managedsecrets.io/other": "x", "managedsecrets.io/owner-uid": "u".repeat(10_000)},
                "ownerReferences": [
                    {"apiVersion": "x/v9", "kind": "ManagedSecret", "name": "a", "uid": "u1", "controller": true},
                    {"apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret", "name": "b", "uid": "u2", "controller": true}],
                "managedFields": [{"manager": "managed-secrets/x", "operation": "Update", "fieldsV1": {}}]},
                "data": {"k": "eA=="}}),
        ];
        for c in cases {
            let s = trimmed(c);
            let (ns, name) = (
                s.metadata.namespace.clone().unwrap(),
                s.metadata.name.clone().unwrap(),
            );
            assert_eq!(SlimSecret::new(&s).to_secret(&ns, &name), s);
        }
    }

    #[test]
    fn a_secret_that_names_too_many_keys_is_kept_as_a_mark_and_read_from_the_api() {
        // Anyone's Secret, with managedFields naming one of our managers as owning every key.
        let wide = |n: usize| {
            let data: serde_json::Map<String, serde_json::Value> =
                (0..n).map(|i| (format!("k{i}"), json!("eA=="))).collect();
            let owned: serde_json::Map<String, serde_json::Value> =
                (0..n).map(|i| (format!("f:k{i}"), json!({}))).collect();
            trimmed(
                json!({"metadata": {"name": "wide", "namespace": "team", "uid": "u",
                "resourceVersion": "9", "managedFields": [{"manager": "managed-secrets/forged",
                "operation": "Update", "fieldsV1": {"f:data": owned}}]}, "data": data}),
            )
        };
        let n = MAX_CACHED_KEYS + 1;
        let s = wide(n);
        assert_eq!(s.data.as_ref().map(BTreeMap::len), Some(n));
        let slim = SlimSecret::new(&s);
        assert!(slim.oversized);
        assert!(slim.data.is_none() && slim.managers.is_none());
        let c = SecretCache::default();
        c.apply_secret(&watcher::Event::Apply(s));
        assert!(
            c.secret("team", "wide").is_none(),
            "read from the API instead"
        );
        // Up to the limit it is kept as usual (the manager's keys are the data's: kept once).
        let at = wide(MAX_CACHED_KEYS);
        assert_eq!(SlimSecret::new(&at).to_secret("team", "wide"), at);
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
