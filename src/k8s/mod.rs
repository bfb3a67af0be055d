//! The Kubernetes edge: every request the operator makes, behind small functions. The Secret
//! writer is `secret` (its first write, a create, is `create`); workload restarts `workloads`;
//! Events `recorder`; reads of what the operator may do `access`.

pub mod access;
pub mod client;
pub mod create;
pub mod hash_key;
pub mod recorder;
pub mod secret;
pub mod tokens;
pub mod workloads;

use crate::crd::ManagedSecret;
use kube::api::Api;

/// Removes our finalizer (a JSON patch that tests it is still where it was).
pub async fn remove_finalizer(
    api: &Api<ManagedSecret>,
    ms: &ManagedSecret,
) -> std::result::Result<(), kube::Error> {
    let fins = kube::ResourceExt::finalizers(ms);
    let Some(i) = fins.iter().position(|f| f == crate::crd::FINALIZER) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": crate::crd::FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")}
    ]))
    .map_err(kube::Error::SerdeError)?;
    api.patch::<ManagedSecret>(
        &kube::ResourceExt::name_any(ms),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Json(patch),
    )
    .await?;
    Ok(())
}
