//! Creating a target Secret with one request, and making what that request wrote server-side
//! apply's own.
//!
//! A new ManagedSecret's Secret is created with a POST, not read first: a create never writes
//! into a Secret that exists (409), so nothing is risked by not looking, and a new object costs
//! one Secret write. What a create writes is owned by the field manager's `Update` entry, which
//! server-side apply treats as another manager: it would keep every key, label and annotation
//! the create wrote even after our applies stop naming them. So before the first apply to such a
//! Secret, its `Update` entry is merged into the `Apply` entry (one read and one JSON patch that
//! tests the resourceVersion), once in the Secret's life.

use super::secret::field_manager;
use crate::crd::ManagedSecret;
use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

/// Creates the desired Secret under this ManagedSecret's field manager. `false`: a Secret of
/// that name exists (nothing was written; the caller reads it and decides as for any other).
pub async fn create_secret(api: &Api<Secret>, ms: &ManagedSecret, desired: &Value) -> Result<bool> {
    // (The parse error is not echoed: it could quote a fragment of the data.)
    let secret: Secret = serde_json::from_value(desired.clone())
        .map_err(|_| Error::Internal("the desired Secret does not parse as a Secret".into()))?;
    let pp = PostParams {
        field_manager: Some(field_manager(ms)),
        ..Default::default()
    };
    match api.create(&pp, &secret).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => Ok(false),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Whether this manager holds fields of the Secret through an `Update` entry (it created it).
pub fn created_by(s: &Secret, manager: &str) -> bool {
    s.metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| is_update_of(m, manager))
}

fn is_update_of(m: &ManagedFieldsEntry, manager: &str) -> bool {
    m.manager.as_deref() == Some(manager)
        && m.operation.as_deref() == Some("Update")
        && m.subresource.as_deref().unwrap_or("").is_empty()
}

/// The managedFields with this manager's `Update` entries merged into its `Apply` entry (one
/// made if it has none); `None` when it has no `Update` entry.
pub fn adopted(entries: &[ManagedFieldsEntry], manager: &str) -> Option<Vec<ManagedFieldsEntry>> {
    let (updates, mut rest): (Vec<_>, Vec<_>) = entries
        .iter()
        .cloned()
        .partition(|m| is_update_of(m, manager));
    let first = updates.first()?;
    let apply = match rest.iter().position(|m| {
        m.manager.as_deref() == Some(manager)
            && m.operation.as_deref() == Some("Apply")
            && m.subresource.as_deref().unwrap_or("").is_empty()
    }) {
        Some(i) => i,
        None => {
            rest.push(ManagedFieldsEntry {
                manager: Some(manager.to_string()),
                operation: Some("Apply".into()),
                api_version: first.api_version.clone(),
                fields_type: Some("FieldsV1".into()),
                time: first.time.clone(),
                fields_v1: Some(FieldsV1(json!({}))),
                subresource: None,
            });
            rest.len() - 1
        }
    };
    let mut fields = rest[apply]
        .fields_v1
        .take()
        .map(|f| f.0)
        .unwrap_or_else(|| json!({}));
    for u in &updates {
        if let Some(f) = &u.fields_v1 {
            union(&mut fields, &f.0);
        }
    }
    rest[apply].fields_v1 = Some(FieldsV1(fields));
    Some(rest)
}

/// `into` ∪ `from`, for fieldsV1 trees (objects all the way down).
fn union(into: &mut Value, from: &Value) {
    let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) else {
        return;
    };
    for (k, v) in b {
        match a.get_mut(k) {
            Some(x) => union(x, v),
            None => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Makes what this ManagedSecret's create wrote into the Secret `current` its apply's own (see
/// the module docs). A Secret gone or replaced since (another uid), or written in between (the
/// patch's test fails), is a conflict: retried soon, with the Secret read again.
pub async fn adopt_created_fields(
    api: &Api<Secret>,
    ms: &ManagedSecret,
    current: &Secret,
) -> Result<()> {
    let name = ms.target_name();
    let s = match api.get_opt(&name).await.map_err(Error::Kube)? {
        Some(s) if s.metadata.uid == current.metadata.uid => s,
        _ => return Err(conflict(&name, "was deleted or replaced")),
    };
    let entries = s.metadata.managed_fields.unwrap_or_default();
    let Some(new) = adopted(&entries, &field_manager(ms)) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": s.metadata.resource_version},
        {"op": "replace", "path": "/metadata/managedFields", "value": new},
    ]))
    .map_err(|e| Error::Internal(format!("managedFields patch: {e}")))?;
    match api
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => Ok(()),
        // The test failed: written since it was read.
        Err(kube::Error::Api(e)) if e.code == 422 => Err(conflict(&name, "changed while adopted")),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// A 409 Conflict (transient: the object is retried soon and reads the Secret again).
pub fn conflict(name: &str, what: &str) -> Error {
    let s =
        kube::core::Status::failure(&format!("Secret {name} {what}"), "Conflict").with_code(409);
    Error::Kube(kube::Error::Api(Box::new(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(manager: &str, op: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(op.into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    const ME: &str = "managed-secrets/uid-1";

    #[test]
    fn a_created_secret_is_adopted_into_an_apply_entry() {
        let other = entry("kubectl-edit", "Update", json!({"f:data": {"f:x": {}}}));
        let created = entry(
            ME,
            "Update",
            json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}, "f:type": {}}),
        );
        let got = adopted(&[other.clone(), created], ME).unwrap();
        assert_eq!(
            got,
            vec![
                other,
                entry(
                    ME,
                    "Apply",
                    json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}, "f:type": {}})
                )
            ]
        );
    }

    #[test]
    fn an_existing_apply_entry_gains_the_created_fields() {
        let apply = entry(ME, "Apply", json!({"f:data": {"f:a": {}}}));
        let created = entry(
            ME,
            "Update",
            json!({"f:data": {"f:b": {}}, "f:metadata": {"f:labels": {"f:l": {}}}}),
        );
        let status = ManagedFieldsEntry {
            subresource: Some("status".into()),
            ..entry(ME, "Update", json!({"f:x": {}}))
        };
        let got = adopted(&[apply, created, status.clone()], ME).unwrap();
        assert_eq!(
            got,
            vec![
                entry(
                    ME,
                    "Apply",
                    json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:l": {}}}})
                ),
                status
            ]
        );
    }

    #[test]
    fn nothing_to_adopt_without_an_update_entry_of_ours() {
        let entries = [
            entry(ME, "Apply", json!({"f:data": {"f:a": {}}})),
            entry(
                "managed-secrets/uid-2",
                "Update",
                json!({"f:data": {"f:b": {}}}),
            ),
        ];
        assert_eq!(adopted(&entries, ME), None);
        let s = Secret {
            metadata: kube::api::ObjectMeta {
                managed_fields: Some(entries.to_vec()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!created_by(&s, ME));
        assert!(created_by(&s, "managed-secrets/uid-2"));
    }
}
