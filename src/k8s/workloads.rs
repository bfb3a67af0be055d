//! Triggering a rollout by server-side applying one pod-template annotation under our field
//! manager (a normal, revertible rollout). The workloads themselves come from the watch caches.

use crate::crd::{WorkloadKind, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::rollout::VERSION_ANNOTATION;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;

pub fn argo_rollout() -> ApiResource {
    ApiResource {
        group: "argoproj.io".into(),
        version: "v1alpha1".into(),
        api_version: "argoproj.io/v1alpha1".into(),
        kind: "Rollout".into(),
        plural: "rollouts".into(),
    }
}

/// Sets the version annotation on the pod template (a rollout when it changes).
pub async fn set_version_annotation(
    client: &Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    value: &str,
) -> Result<k8s_openapi::api::core::v1::ObjectReference> {
    let api_version = if kind == WorkloadKind::Rollout {
        "argoproj.io/v1alpha1"
    } else {
        "apps/v1"
    };
    let body = json!({
        "apiVersion": api_version,
        "kind": kind.as_str(),
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"annotations": {VERSION_ANNOTATION: value}}}}
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let r = match kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(name, &pp, &Patch::Apply(&body))
            .await
            .map(|o| o.object_ref(&())),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(name, &pp, &Patch::Apply(&body))
            .await
            .map(|o| o.object_ref(&())),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .patch(name, &pp, &Patch::Apply(&body))
            .await
            .map(|o| o.object_ref(&())),
        WorkloadKind::Rollout => {
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &argo_rollout())
                .patch(name, &pp, &Patch::Apply(&body))
                .await
                .map(|o| o.object_ref(&argo_rollout()))
        }
    };
    r.map_err(Error::Kube)
}
