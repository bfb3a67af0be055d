//! The Secret writer: the pure decisions (is it ours, is it in sync, what must it hold) and the
//! server-side apply under one fixed field manager; giving a Secret back (release).

use crate::crd::validate::reserved_key;
use crate::crd::{
    CreationPolicy, DeletionPolicy, ManagedSecret, ALLOW_MERGE_ANNOTATION, FIELD_MANAGER,
    MANAGED_BY_LABEL, OWNER_UID_ANNOTATION, VERSION_ID_ANNOTATION,
};
use crate::error::{Error, Result};
use crate::render::{hash_data, SecretData};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Resource;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The field manager a ManagedSecret writes its Secret with: one per ManagedSecret (by UID), so
/// that server-side apply itself notices two ManagedSecrets writing the same keys.
pub fn field_manager(ms: &ManagedSecret) -> String {
    format!(
        "{FIELD_MANAGER}/{}",
        ms.metadata.uid.clone().unwrap_or_default()
    )
}

/// The UID a field manager of ours names (`managed-secrets/<uid>`).
pub fn manager_uid(manager: &str) -> Option<&str> {
    manager
        .strip_prefix(FIELD_MANAGER)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|u| !u.is_empty())
}

/// Secret types that are never written into, whatever a policy or annotation says: they carry
/// credentials of the cluster itself or of Helm releases.
pub const PROTECTED_TYPES: &[&str] = &[
    "kubernetes.io/service-account-token",
    "bootstrap.kubernetes.io/token",
    "helm.sh/release.v1",
];

/// The Secret as we apply it (only the fields we own).
pub fn desired_secret(ms: &ManagedSecret, data: &SecretData, version_id: &str) -> Value {
    let t = &ms.spec.target;
    let mut labels = serde_json::Map::new();
    for (k, v) in t.labels.iter().filter(|(k, _)| !reserved_key(k)) {
        labels.insert(k.clone(), json!(v));
    }
    labels.insert(MANAGED_BY_LABEL.into(), json!(FIELD_MANAGER));
    let mut annotations = serde_json::Map::new();
    for (k, v) in t.annotations.iter().filter(|(k, _)| !reserved_key(k)) {
        annotations.insert(k.clone(), json!(v));
    }
    if t.creation_policy != CreationPolicy::Merge {
        // Ownership by UID, written only by the modes that own the whole Secret.
        annotations.insert(
            OWNER_UID_ANNOTATION.into(),
            json!(ms.metadata.uid.clone().unwrap_or_default()),
        );
        annotations.insert(VERSION_ID_ANNOTATION.into(), json!(version_id));
    }
    let encoded: serde_json::Map<String, Value> = data
        .0
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    let mut s = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ms.target_name(), "namespace": ms.metadata.namespace.clone().unwrap_or_default(), "labels": labels, "annotations": annotations},
        "data": encoded,
    });
    if t.creation_policy != CreationPolicy::Merge {
        s["type"] = json!(t.type_.as_str());
    }
    if t.creation_policy == CreationPolicy::Owner {
        if let Some(oref) = ms.controller_owner_ref(&()) {
            s["metadata"]["ownerReferences"] = json!([oref]);
        }
    }
    s
}

fn annotation<'a>(s: &'a Secret, key: &str) -> Option<&'a str> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The UID of the ManagedSecret that owns a Secret (its owner annotation, or a controller
/// ownerReference to a ManagedSecret).
pub fn owner_uid(s: &Secret) -> Option<String> {
    annotation(s, OWNER_UID_ANNOTATION)
        .map(String::from)
        .or_else(|| {
            s.metadata
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true) && r.kind == "ManagedSecret")
                .map(|r| r.uid.clone())
        })
}

/// Is an existing Secret ours to write under this policy? `owner_name` names the ManagedSecret
/// that owns it, when the caller knows (for the message).
pub fn check_target(
    ms: &ManagedSecret,
    current: Option<&Secret>,
    owner_name: Option<&str>,
) -> Result<()> {
    let name = ms.target_name();
    let uid = ms.metadata.uid.clone().unwrap_or_default();
    let me = ms.metadata.name.clone().unwrap_or_default();
    let policy = ms.spec.target.creation_policy;
    let Some(s) = current else {
        return match policy {
            CreationPolicy::Merge => Err(Error::TargetMissing(name)),
            _ => Ok(()),
        };
    };
    if let Some(t) = s.type_.as_deref().filter(|t| PROTECTED_TYPES.contains(t)) {
        return Err(Error::SecretConflict(format!(
            "Secret {name} is of type {t}, which managed-secrets never writes into"
        )));
    }
    let owner = owner_uid(s);
    let other_owner = owner.as_deref().filter(|o| *o != uid);
    let someone = |o: &str| match owner_name {
        Some(n) => format!("ManagedSecret {n}"),
        // (The uid is the Secret's text, anyone's to write: cut, never whole.)
        None => format!(
            "another ManagedSecret (uid {})",
            o.chars().take(64).collect::<String>()
        ),
    };
    if let Some(o) = other_owner {
        return Err(Error::SecretConflict(format!(
            "Secret {name} is managed by {}; two ManagedSecrets cannot own one Secret",
            someone(o)
        )));
    }
    let other_controller = s
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid != uid);
    match policy {
        CreationPolicy::Merge => {
            let allowed = annotation(s, ALLOW_MERGE_ANNOTATION)
                .map(|v| v.split(',').any(|n| n.trim() == me))
                .unwrap_or(false);
            if allowed {
                Ok(())
            } else {
                Err(Error::SecretConflict(format!(
                    "Secret {name} does not let this ManagedSecret merge into it: its owner must annotate it {ALLOW_MERGE_ANNOTATION}: {me}"
                )))
            }
        }
        _ if owner.as_deref() == Some(uid.as_str()) && !other_controller => Ok(()),
        _ => Err(Error::SecretConflict(format!(
            "Secret {name} exists and is not managed by this ManagedSecret; to add keys to it, set target.creationPolicy: Merge and have its owner annotate it {ALLOW_MERGE_ANNOTATION}: {me}"
        ))),
    }
}

/// Longest `managedsecrets.io/allow-merge` list the operator reads (a longer one opts nobody in).
pub const ALLOW_MERGE_MAX: usize = 4096;

/// Longest annotation value the Secret cache keeps as it is; a longer one is kept as its keyed
/// digest (`cached_annotation`), so a cached record stays small whoever wrote the Secret.
pub const CACHED_ANNOTATION_MAX: usize = 256;

/// An annotation value as the Secret cache keeps it: itself when short, else `hmac:` and its
/// keyed digest (compared with what the operator would write the same way).
pub fn cached_annotation<'a>(value: &'a str, hash_key: &[u8]) -> std::borrow::Cow<'a, str> {
    if value.len() <= CACHED_ANNOTATION_MAX {
        std::borrow::Cow::Borrowed(value)
    } else {
        std::borrow::Cow::Owned(format!(
            "hmac:{}",
            hex::encode(crate::render::value_digest(hash_key, value.as_bytes()))
        ))
    }
}

/// The `data` keys this ManagedSecret's field manager owns in a Secret (from its managedFields:
/// its applies, and the create that made the Secret, see `create`).
pub fn owned_keys(s: &Secret, manager: &str) -> BTreeSet<String> {
    owned_at(s, manager, "/f:data")
}

/// The names (`f:<name>`) this field manager owns under a path of the Secret's fieldsV1.
fn owned_at(s: &Secret, manager: &str, path: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for mf in s.metadata.managed_fields.iter().flatten() {
        if mf.manager.as_deref() != Some(manager)
            || !matches!(mf.operation.as_deref(), Some("Apply" | "Update"))
        {
            continue;
        }
        if let Some(names) = mf
            .fields_v1
            .as_ref()
            .and_then(|f| f.0.pointer(path))
            .and_then(Value::as_object)
        {
            out.extend(
                names
                    .keys()
                    .filter_map(|k| k.strip_prefix("f:").map(String::from)),
            );
        }
    }
    out
}

/// Replaces each value of `s.data` that `keep` keeps by its digest (`render::value_digest`) and
/// drops the others, as the operator's cache keeps Secrets.
pub fn digest_data(s: &mut Secret, hash_key: &[u8], keep: impl Fn(&str) -> bool) {
    if let Some(data) = s.data.as_mut() {
        data.retain(|k, _| keep(k));
        for v in data.values_mut() {
            let d = crate::render::value_digest(hash_key, &v.0);
            v.0.iter_mut().for_each(|b| *b = 0);
            v.0 = d;
        }
    }
    s.string_data = None;
}

/// Whether `current` (as the cache keeps it: values as digests, see `stores::trim_secret`)
/// already holds everything `desired` says (so no write is needed).
pub fn in_sync(current: &Secret, desired: &Value, manager: &str, hash_key: &[u8]) -> bool {
    let cur_data = current.data.clone().unwrap_or_default();
    let want = desired["data"].as_object().cloned().unwrap_or_default();
    for (k, v) in &want {
        let b = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .unwrap_or_default();
        let digest = crate::render::value_digest(hash_key, &b);
        if cur_data.get(k).map(|x| x.0.as_slice()) != Some(digest.as_slice()) {
            return false;
        }
    }
    // Keys, labels and annotations we wrote before and no longer want must go (the cache keeps
    // which labels and annotations we own apart from the reserved ones, which `desired` has
    // whenever they are due).
    let stale = |path: &str, want: &Value| {
        owned_at(current, manager, path)
            .iter()
            .any(|k| want.get(k).is_none())
    };
    if stale("/f:data", &desired["data"])
        || stale("/f:metadata/f:labels", &desired["metadata"]["labels"])
        || stale(
            "/f:metadata/f:annotations",
            &desired["metadata"]["annotations"],
        )
    {
        return false;
    }
    let sub = |want: &Value, cur: Option<&std::collections::BTreeMap<String, String>>| {
        want.as_object()
            .map(|m| {
                m.iter().all(|(k, v)| {
                    cur.and_then(|c| c.get(k))
                        .map(|x| {
                            v.as_str()
                                .map(|v| cached_annotation(v, hash_key))
                                .as_deref()
                                == Some(x.as_str())
                        })
                        .unwrap_or(false)
                })
            })
            .unwrap_or(true)
    };
    if !sub(
        &desired["metadata"]["labels"],
        current.metadata.labels.as_ref(),
    ) || !sub(
        &desired["metadata"]["annotations"],
        current.metadata.annotations.as_ref(),
    ) {
        return false;
    }
    if let Some(t) = desired["type"].as_str() {
        if current.type_.as_deref().unwrap_or("Opaque") != t {
            return false;
        }
    }
    if let Some(refs) = desired["metadata"]["ownerReferences"].as_array() {
        let have: Vec<String> = current
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|r| r.uid.clone())
            .collect();
        if !refs
            .iter()
            .all(|r| have.iter().any(|h| Some(h.as_str()) == r["uid"].as_str()))
        {
            return false;
        }
    }
    true
}

/// Hash of the given keys as the Secret holds them now (to notice edits and deletions), from the
/// cached Secret, whose values are digests (see `stores::trim_secret`). A key listed by its
/// digest (`hmac:…`, see `render::key_digest`) is found among the Secret's keys.
pub fn current_hash(current: &Secret, keys: &[String], hash_key: &[u8]) -> Option<String> {
    let data = current.data.as_ref()?;
    // Each of the Secret's key names digested once (not once per listed key: allKeys can list
    // as many keys as the AWS value has fields).
    let by_digest: std::collections::HashMap<String, &String> =
        if keys.iter().any(|k| k.starts_with("hmac:")) {
            data.keys()
                .map(|n| (crate::render::key_digest(hash_key, n), n))
                .collect()
        } else {
            Default::default()
        };
    let mut items = vec![];
    for k in keys {
        let name = match k.strip_prefix("hmac:") {
            Some(_) => *by_digest.get(k)?,
            None => k,
        };
        items.push((name.as_str(), data.get(name)?.0.as_slice()));
    }
    items.sort();
    Some(hash_data(hash_key, items.into_iter()))
}

/// Server-side apply of the desired Secret under this ManagedSecret's field manager. Owner/Orphan
/// take their fields back (force); Merge does not, so a key owned by someone else (another
/// ManagedSecret included) is reported as a conflict rather than overwritten. A conflict names the
/// managers the API server reported.
pub async fn apply_secret(
    api: &Api<Secret>,
    ms: &ManagedSecret,
    desired: &Value,
) -> Result<Secret> {
    let force = ms.spec.target.creation_policy != CreationPolicy::Merge;
    let mut pp = PatchParams::apply(&field_manager(ms));
    pp.force = force;
    match api
        .patch(&ms.target_name(), &pp, &Patch::Apply(desired))
        .await
    {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::SecretConflict(format!(
            "Secret {} has keys another writer owns ({}); Merge never overwrites them",
            ms.target_name(),
            conflicting_managers(&e.message).join(", ")
        ))),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// The UIDs in the `managed-secrets/<uid>` field managers a text names.
pub fn our_managers_in(text: &str) -> Vec<String> {
    text.split(&format!("{FIELD_MANAGER}/"))
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|u| !u.is_empty())
        .collect()
}

/// The managers a server-side apply conflict names (`conflict with "NAME"`).
pub fn conflicting_managers(message: &str) -> Vec<String> {
    let mut out: Vec<String> = message
        .split("conflict with \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(String::from)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The deletion policy in effect: the spec's, or by default Retain for `Orphan` (an orphaned
/// Secret outlives its ManagedSecret) and Delete otherwise.
pub fn deletion_policy(ms: &ManagedSecret) -> DeletionPolicy {
    match (
        ms.spec.target.deletion_policy,
        ms.spec.target.creation_policy,
    ) {
        (Some(p), _) => p,
        (None, CreationPolicy::Orphan) => DeletionPolicy::Retain,
        (None, _) => DeletionPolicy::Delete,
    }
}

/// Does deleting this ManagedSecret need the operator? Only to give back merged keys (Merge with
/// Delete), to drop an ownerReference (Owner with Retain) or to delete a Secret nothing else would
/// (Orphan with Delete). Otherwise the garbage collector (Owner with Delete) or nothing (the
/// Secret stays) does it, and no finalizer holds the deletion.
pub fn needs_finalizer(ms: &ManagedSecret) -> bool {
    !matches!(
        (ms.spec.target.creation_policy, deletion_policy(ms)),
        (CreationPolicy::Owner, DeletionPolicy::Delete)
            | (CreationPolicy::Orphan, DeletionPolicy::Retain)
            | (CreationPolicy::Merge, DeletionPolicy::Retain)
    )
}

/// A Secret's type cannot change: an existing Secret of ours with another type is reported
/// instead of being retried forever against the API server's refusal.
pub fn check_type_change(ms: &ManagedSecret, current: Option<&Secret>) -> Result<()> {
    let t = &ms.spec.target;
    let Some(cur) = current else { return Ok(()) };
    if t.creation_policy == CreationPolicy::Merge {
        return Ok(());
    }
    let have = cur.type_.as_deref().unwrap_or("Opaque");
    if have != t.type_.as_str() {
        let have: String = have.chars().take(100).collect();
        return Err(Error::InvalidSpec(format!(
            "Secret {} has type {have} and a Secret's type cannot change: set target.type back to {have}, or delete the Secret so that it is created again as {}",
            ms.target_name(),
            t.type_.as_str()
        )));
    }
    Ok(())
}

/// Gives a Secret back when the ManagedSecret goes (or stops targeting it): per deletionPolicy
/// and creationPolicy. A Secret that is not ours is left alone.
pub async fn release_secret(api: &Api<Secret>, ms: &ManagedSecret, name: &str) -> Result<()> {
    let Some(current) = api.get_opt(name).await.map_err(Error::Kube)? else {
        return Ok(());
    };
    let uid_owned = owner_uid(&current).as_deref() == ms.metadata.uid.as_deref();
    let uid = ms.metadata.uid.clone().unwrap_or_default();
    match (deletion_policy(ms), ms.spec.target.creation_policy) {
        (DeletionPolicy::Retain, _) => {
            // Keep the Secret: drop our ownerReference so the garbage collector leaves it.
            let refs: Vec<_> = current
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.uid != uid)
                .collect();
            if refs.len()
                != current
                    .metadata
                    .owner_references
                    .as_ref()
                    .map(Vec::len)
                    .unwrap_or(0)
            {
                let patch = json!({"metadata": {"ownerReferences": if refs.is_empty() { Value::Null } else { json!(refs) }}});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(Error::Kube)?;
            }
        }
        (DeletionPolicy::Delete, CreationPolicy::Merge) => {
            // Give back only our keys: applying an empty config removes the fields we own.
            let empty = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ms.metadata.namespace}});
            api.patch(
                name,
                &PatchParams::apply(&field_manager(ms)),
                &Patch::Apply(&empty),
            )
            .await
            .map_err(Error::Kube)?;
        }
        (DeletionPolicy::Delete, _) if uid_owned => {
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: current.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(Error::Kube(e)),
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ManagedSecretSpec;
    use std::collections::BTreeMap;

    fn ms(policy: CreationPolicy) -> ManagedSecret {
        let mut spec: ManagedSecretSpec = serde_json::from_value(
            json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}}),
        )
        .unwrap();
        spec.target.creation_policy = policy;
        let mut m = ManagedSecret::new("db", spec);
        m.metadata.namespace = Some("app".into());
        m.metadata.uid = Some("uid-1".into());
        m
    }

    fn data() -> SecretData {
        SecretData(BTreeMap::from([("password".to_string(), b"x".to_vec())]))
    }

    fn secret_from(v: &Value) -> Secret {
        serde_json::from_value(v.clone()).unwrap()
    }

    #[test]
    fn desired_secret_owns_by_policy() {
        let d = desired_secret(&ms(CreationPolicy::Owner), &data(), "v1");
        assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(d["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(d["type"], "Opaque");
        assert_eq!(d["data"]["password"], "eA==");
        let d = desired_secret(&ms(CreationPolicy::Orphan), &data(), "v1");
        assert!(d["metadata"].get("ownerReferences").is_none());
        let d = desired_secret(&ms(CreationPolicy::Merge), &data(), "v1");
        assert!(
            d.get("type").is_none(),
            "Merge leaves the type to the Secret's owner"
        );
    }

    fn secret(v: Value) -> Secret {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ownership_is_by_uid_and_merge_needs_an_opt_in() {
        let foreign = secret(json!({"metadata": {"name": "db"}}));
        for p in [CreationPolicy::Owner, CreationPolicy::Orphan] {
            assert_eq!(
                check_target(&ms(p), Some(&foreign), None).unwrap_err().to_string(),
                "SecretConflict: Secret db exists and is not managed by this ManagedSecret; to add keys to it, set target.creationPolicy: Merge and have its owner annotate it managedsecrets.io/allow-merge: db"
            );
        }
        // Merge only into a Secret that lets this ManagedSecret in.
        assert_eq!(
            check_target(&ms(CreationPolicy::Merge), Some(&foreign), None).unwrap_err().to_string(),
            "SecretConflict: Secret db does not let this ManagedSecret merge into it: its owner must annotate it managedsecrets.io/allow-merge: db"
        );
        let opted_in = secret(
            json!({"metadata": {"name": "db", "annotations": {ALLOW_MERGE_ANNOTATION: "other, db"}}}),
        );
        assert!(check_target(&ms(CreationPolicy::Merge), Some(&opted_in), None).is_ok());
        assert_eq!(
            check_target(&ms(CreationPolicy::Merge), None, None)
                .unwrap_err()
                .reason(),
            "TargetMissing"
        );
        // A Secret merged into never becomes ours: the old name annotation means nothing.
        let merged = secret(
            json!({"metadata": {"name": "db", "annotations": {"managedsecrets.io/managed-secret": "db", ALLOW_MERGE_ANNOTATION: "db"}}}),
        );
        assert!(check_target(&ms(CreationPolicy::Owner), Some(&merged), None).is_err());
        let ours = secret_from(&desired_secret(&ms(CreationPolicy::Owner), &data(), "v1"));
        assert!(check_target(&ms(CreationPolicy::Owner), Some(&ours), None).is_ok());
        let orphan = secret_from(&desired_secret(&ms(CreationPolicy::Orphan), &data(), "v1"));
        assert!(check_target(&ms(CreationPolicy::Orphan), Some(&orphan), None).is_ok());
        assert!(check_target(&ms(CreationPolicy::Owner), None, None).is_ok());
        // Another ManagedSecret of the same name (recreated: a new UID) is not the owner.
        let mut twin = ms(CreationPolicy::Owner);
        twin.metadata.uid = Some("uid-2".into());
        assert_eq!(
            check_target(&twin, Some(&ours), Some("db")).unwrap_err().to_string(),
            "SecretConflict: Secret db is managed by ManagedSecret db; two ManagedSecrets cannot own one Secret"
        );
        assert!(
            check_target(&ms(CreationPolicy::Merge), Some(&ours), None).is_err(),
            "no merging into an owned Secret"
        );
    }

    #[test]
    fn protected_secret_types_are_never_written() {
        for t in PROTECTED_TYPES {
            let s = secret(
                json!({"metadata": {"name": "db", "annotations": {ALLOW_MERGE_ANNOTATION: "db"}}, "type": t}),
            );
            for p in [
                CreationPolicy::Owner,
                CreationPolicy::Merge,
                CreationPolicy::Orphan,
            ] {
                assert!(
                    check_target(&ms(p), Some(&s), None)
                        .unwrap_err()
                        .to_string()
                        .contains("never writes into"),
                    "{t}"
                );
            }
        }
    }

    #[test]
    fn merge_writes_no_ownership_and_each_managed_secret_has_its_field_manager() {
        let d = desired_secret(&ms(CreationPolicy::Merge), &data(), "v1");
        assert!(d["metadata"]["annotations"]
            .get(OWNER_UID_ANNOTATION)
            .is_none());
        assert!(d["metadata"]["annotations"]
            .get(VERSION_ID_ANNOTATION)
            .is_none());
        let d = desired_secret(&ms(CreationPolicy::Orphan), &data(), "v1");
        assert_eq!(d["metadata"]["annotations"][OWNER_UID_ANNOTATION], "uid-1");
        assert_eq!(
            field_manager(&ms(CreationPolicy::Owner)),
            "managed-secrets/uid-1"
        );
        assert_eq!(manager_uid("managed-secrets/uid-1"), Some("uid-1"));
        assert_eq!(manager_uid("kubectl"), None);
        assert_eq!(
            our_managers_in("keys another writer owns (kubectl, managed-secrets/ab-12)"),
            vec!["ab-12".to_string()]
        );
        assert_eq!(
            conflicting_managers("Apply failed with 2 conflicts: conflict with \"managed-secrets/a\": .data.x\nconflict with \"kubectl\": .data.y"),
            vec!["kubectl".to_string(), "managed-secrets/a".to_string()]
        );
    }

    #[test]
    fn in_sync_compares_data_metadata_and_ownership() {
        let m = ms(CreationPolicy::Owner);
        let d = desired_secret(&m, &data(), "v1");
        let mut s = secret_from(&d);
        digest_data(&mut s, b"k", |_| true);
        let fm = field_manager(&m);
        assert!(in_sync(&s, &d, &fm, b"k"));
        assert!(!in_sync(&s, &d, &fm, b"another key"));
        let changed = desired_secret(
            &m,
            &SecretData(BTreeMap::from([("password".to_string(), b"y".to_vec())])),
            "v1",
        );
        assert!(!in_sync(&s, &changed, &fm, b"k"));
        let new_version = desired_secret(&m, &data(), "v2");
        assert!(!in_sync(&s, &new_version, &fm, b"k"));
        let mut no_owner = s.clone();
        no_owner.metadata.owner_references = None;
        assert!(!in_sync(&no_owner, &d, &fm, b"k"));
        // A label, annotation or key this manager owns and no longer writes must go; one another
        // manager owns is not ours to remove.
        let owning = |fields: Value, manager: &str| {
            let mut o = s.clone();
            o.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("team".into(), "a".into());
            o.metadata.managed_fields = Some(vec![serde_json::from_value(json!({
                "manager": manager, "operation": "Update", "fieldsV1": fields}))
            .unwrap()]);
            o
        };
        let label = json!({"f:metadata": {"f:labels": {"f:team": {}}}});
        assert!(!in_sync(&owning(label.clone(), &fm), &d, &fm, b"k"));
        assert!(in_sync(
            &owning(label, "managed-secrets/other"),
            &d,
            &fm,
            b"k"
        ));
        let annotation = json!({"f:metadata": {"f:annotations": {"f:note": {}}}});
        assert!(!in_sync(&owning(annotation, &fm), &d, &fm, b"k"));
        let key = json!({"f:data": {"f:gone": {}}});
        assert!(!in_sync(&owning(key, &fm), &d, &fm, b"k"));
        // A long annotation value is cached as its digest, and compared the same way.
        let mut long = m.clone();
        long.spec
            .target
            .annotations
            .insert("note".into(), "n".repeat(1000));
        let want = desired_secret(&long, &data(), "v1");
        let mut cached = s.clone();
        cached
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                "note".into(),
                cached_annotation(&"n".repeat(1000), b"k").into(),
            );
        assert!(in_sync(&cached, &want, &fm, b"k"));
        assert!(!in_sync(&s, &want, &fm, b"k"));
    }

    #[test]
    fn orphaned_secrets_are_retained_by_default() {
        let mut m = ms(CreationPolicy::Orphan);
        assert_eq!(deletion_policy(&m), DeletionPolicy::Retain);
        m.spec.target.deletion_policy = Some(DeletionPolicy::Delete);
        assert_eq!(deletion_policy(&m), DeletionPolicy::Delete);
        assert_eq!(
            deletion_policy(&ms(CreationPolicy::Owner)),
            DeletionPolicy::Delete
        );
        assert_eq!(
            deletion_policy(&ms(CreationPolicy::Merge)),
            DeletionPolicy::Delete
        );
    }

    #[test]
    fn a_finalizer_only_where_deletion_needs_the_operator() {
        let with = |c, d: Option<DeletionPolicy>| {
            let mut m = ms(c);
            m.spec.target.deletion_policy = d;
            needs_finalizer(&m)
        };
        assert!(
            !with(CreationPolicy::Owner, None),
            "the garbage collector deletes it"
        );
        assert!(
            with(CreationPolicy::Owner, Some(DeletionPolicy::Retain)),
            "drop the ownerReference"
        );
        assert!(
            with(CreationPolicy::Merge, None),
            "give back the merged keys"
        );
        assert!(!with(CreationPolicy::Merge, Some(DeletionPolicy::Retain)));
        assert!(!with(CreationPolicy::Orphan, None), "an orphan stays");
        assert!(with(CreationPolicy::Orphan, Some(DeletionPolicy::Delete)));
    }

    #[test]
    fn type_changes_are_refused() {
        let m = ms(CreationPolicy::Owner);
        let mut s = secret_from(&desired_secret(&m, &data(), "v1"));
        assert!(check_type_change(&m, Some(&s)).is_ok());
        s.type_ = Some("kubernetes.io/tls".into());
        assert_eq!(
            check_type_change(&m, Some(&s)).unwrap_err().to_string(),
            "invalid spec: Secret db has type kubernetes.io/tls and a Secret's type cannot change: set target.type back to kubernetes.io/tls, or delete the Secret so that it is created again as Opaque"
        );
        assert!(check_type_change(&ms(CreationPolicy::Merge), Some(&s)).is_ok());
    }

    #[test]
    fn current_hash_matches_the_rendered_hash() {
        let d = data();
        let mut s = secret_from(&desired_secret(&ms(CreationPolicy::Owner), &d, "v1"));
        digest_data(&mut s, b"k", |_| true);
        assert_eq!(current_hash(&s, &d.keys(), b"k"), Some(d.hash(b"k")));
        assert_eq!(current_hash(&s, &["missing".to_string()], b"k"), None);
        // Keys listed by digest are found by it (and only with the same installation key).
        let digests: Vec<String> = d
            .keys()
            .iter()
            .map(|k| crate::render::key_digest(b"k", k))
            .collect();
        assert!(digests
            .iter()
            .all(|x| x.starts_with("hmac:") && x.len() == 21));
        assert_eq!(current_hash(&s, &digests, b"k"), Some(d.hash(b"k")));
        assert_eq!(current_hash(&s, &digests, b"other"), None);
    }
}
