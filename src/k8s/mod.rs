//! Writing the target Secret: the pure decisions (is it ours, is it in sync, what must it hold)
//! and the server-side apply under one fixed field manager.

pub mod workloads;

use crate::crd::{
    CreationPolicy, DeletionPolicy, ManagedSecret, FIELD_MANAGER, MANAGED_BY_ANNOTATION,
    MANAGED_BY_LABEL,
};
use crate::error::{Error, Result};
use crate::render::{hash_data, SecretData};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Resource;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The Secret as we apply it (only the fields we own).
pub fn desired_secret(ms: &ManagedSecret, data: &SecretData, version_id: &str) -> Value {
    let t = &ms.spec.target;
    let mut labels = serde_json::Map::new();
    for (k, v) in &t.labels {
        labels.insert(k.clone(), json!(v));
    }
    labels.insert(MANAGED_BY_LABEL.into(), json!(FIELD_MANAGER));
    let mut annotations = serde_json::Map::new();
    for (k, v) in &t.annotations {
        annotations.insert(k.clone(), json!(v));
    }
    annotations.insert(
        MANAGED_BY_ANNOTATION.into(),
        json!(ms.metadata.name.clone().unwrap_or_default()),
    );
    annotations.insert("managedsecrets.io/aws-version-id".into(), json!(version_id));
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

/// Is an existing Secret ours to write under this policy?
pub fn check_target(ms: &ManagedSecret, current: Option<&Secret>) -> Result<()> {
    let name = ms.target_name();
    let policy = ms.spec.target.creation_policy;
    match (policy, current) {
        (CreationPolicy::Merge, None) => Err(Error::TargetMissing(name)),
        (CreationPolicy::Merge, Some(_)) => Ok(()),
        (_, None) => Ok(()),
        (_, Some(s)) => {
            let ours_by_annotation = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MANAGED_BY_ANNOTATION))
                .map(|v| Some(v) == ms.metadata.name.as_ref())
                .unwrap_or(false);
            let uid = ms.metadata.uid.clone().unwrap_or_default();
            let other_controller = s
                .metadata
                .owner_references
                .as_ref()
                .map(|refs| {
                    refs.iter()
                        .any(|r| r.controller == Some(true) && r.uid != uid)
                })
                .unwrap_or(false);
            if ours_by_annotation && !other_controller {
                Ok(())
            } else {
                Err(Error::SecretConflict(name))
            }
        }
    }
}

/// The `data` keys our field manager owns in a Secret (from its managedFields).
pub fn owned_keys(s: &Secret) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for mf in s.metadata.managed_fields.iter().flatten() {
        if mf.manager.as_deref() != Some(FIELD_MANAGER) || mf.operation.as_deref() != Some("Apply")
        {
            continue;
        }
        if let Some(data) = mf
            .fields_v1
            .as_ref()
            .and_then(|f| f.0.get("f:data"))
            .and_then(Value::as_object)
        {
            out.extend(
                data.keys()
                    .filter_map(|k| k.strip_prefix("f:").map(String::from)),
            );
        }
    }
    out
}

/// Whether `current` already holds everything `desired` says (so no write is needed).
pub fn in_sync(current: &Secret, desired: &Value) -> bool {
    let cur_data = current.data.clone().unwrap_or_default();
    let want = desired["data"].as_object().cloned().unwrap_or_default();
    for (k, v) in &want {
        let b = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .unwrap_or_default();
        if cur_data.get(k).map(|x| x.0.as_slice()) != Some(b.as_slice()) {
            return false;
        }
    }
    // Keys we wrote before and no longer want must go.
    if owned_keys(current).iter().any(|k| !want.contains_key(k)) {
        return false;
    }
    let sub = |want: &Value, cur: Option<&std::collections::BTreeMap<String, String>>| {
        want.as_object()
            .map(|m| {
                m.iter().all(|(k, v)| {
                    cur.and_then(|c| c.get(k))
                        .map(|x| Some(x.as_str()) == v.as_str())
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

/// Hash of the given keys as the Secret holds them now (to notice edits and deletions).
pub fn current_hash(current: &Secret, keys: &[String]) -> Option<String> {
    let data = current.data.as_ref()?;
    let mut items = vec![];
    for k in keys {
        items.push((k.as_str(), data.get(k)?.0.as_slice()));
    }
    items.sort();
    Some(hash_data(items.into_iter()))
}

/// Server-side apply of the desired Secret. Owner/Orphan take their fields back (force); Merge does
/// not, so a key owned by someone else is reported as a conflict rather than overwritten.
pub async fn apply_secret(
    api: &Api<Secret>,
    ms: &ManagedSecret,
    desired: &Value,
) -> Result<Secret> {
    let force = ms.spec.target.creation_policy != CreationPolicy::Merge;
    let mut pp = PatchParams::apply(FIELD_MANAGER);
    pp.force = force;
    match api
        .patch(&ms.target_name(), &pp, &Patch::Apply(desired))
        .await
    {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::SecretConflict(ms.target_name())),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Is `name` a valid Secret name (a DNS-1123 subdomain)?
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
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
    let mut named = ms.clone();
    named.spec.target.name = Some(name.to_string());
    let ours = check_target(&named, Some(&current)).is_ok();
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
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&empty),
            )
            .await
            .map_err(Error::Kube)?;
        }
        (DeletionPolicy::Delete, _) if ours => {
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

    #[test]
    fn a_foreign_secret_is_refused_unless_merging() {
        let foreign = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("db".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            check_target(&ms(CreationPolicy::Owner), Some(&foreign))
                .unwrap_err()
                .reason(),
            "SecretConflict"
        );
        assert_eq!(
            check_target(&ms(CreationPolicy::Orphan), Some(&foreign))
                .unwrap_err()
                .reason(),
            "SecretConflict"
        );
        assert!(check_target(&ms(CreationPolicy::Merge), Some(&foreign)).is_ok());
        assert_eq!(
            check_target(&ms(CreationPolicy::Merge), None)
                .unwrap_err()
                .reason(),
            "TargetMissing"
        );
        let ours = secret_from(&desired_secret(&ms(CreationPolicy::Owner), &data(), "v1"));
        assert!(check_target(&ms(CreationPolicy::Owner), Some(&ours)).is_ok());
        assert!(check_target(&ms(CreationPolicy::Owner), None).is_ok());
    }

    #[test]
    fn in_sync_compares_data_metadata_and_ownership() {
        let m = ms(CreationPolicy::Owner);
        let d = desired_secret(&m, &data(), "v1");
        let s = secret_from(&d);
        assert!(in_sync(&s, &d));
        let changed = desired_secret(
            &m,
            &SecretData(BTreeMap::from([("password".to_string(), b"y".to_vec())])),
            "v1",
        );
        assert!(!in_sync(&s, &changed));
        let new_version = desired_secret(&m, &data(), "v2");
        assert!(!in_sync(&s, &new_version));
        let mut no_owner = s.clone();
        no_owner.metadata.owner_references = None;
        assert!(!in_sync(&no_owner, &d));
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
    fn secret_names_and_type_changes() {
        for ok in ["db", "db-credentials", "a.b-c", "0x"] {
            assert!(valid_secret_name(ok), "{ok}");
        }
        for bad in ["", "Db", "-db", "db-", "a..b", "a_b", &"a".repeat(254)] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
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
        let s = secret_from(&desired_secret(&ms(CreationPolicy::Owner), &d, "v1"));
        assert_eq!(current_hash(&s, &d.keys()), Some(d.hash()));
        assert_eq!(current_hash(&s, &["missing".to_string()]), None);
    }
}
