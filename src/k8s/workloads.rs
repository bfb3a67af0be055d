//! Reading Deployments, StatefulSets and DaemonSets, and triggering a rollout by server-side
//! applying one pod-template annotation under our field manager (a normal, revertible rollout).

use crate::crd::{WorkloadKind, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::rollout::{Workload, VERSION_ANNOTATION};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;

fn to_workload<K: Resource + serde::Serialize>(kind: WorkloadKind, obj: &K) -> Workload {
    let v = serde_json::to_value(obj).unwrap_or_default();
    Workload {
        kind,
        name: obj.meta().name.clone().unwrap_or_default(),
        labels: obj.meta().labels.clone().unwrap_or_default(),
        annotations: obj.meta().annotations.clone().unwrap_or_default(),
        template: v.pointer("/spec/template").cloned().unwrap_or_default(),
    }
}

/// Every Deployment, StatefulSet and DaemonSet in the namespace.
pub async fn list(client: &Client, ns: &str) -> Result<Vec<Workload>> {
    let lp = ListParams::default();
    let mut out = vec![];
    for d in Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(Error::Kube)?
    {
        out.push(to_workload(WorkloadKind::Deployment, &d));
    }
    for s in Api::<StatefulSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(Error::Kube)?
    {
        out.push(to_workload(WorkloadKind::StatefulSet, &s));
    }
    for d in Api::<DaemonSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(Error::Kube)?
    {
        out.push(to_workload(WorkloadKind::DaemonSet, &d));
    }
    // Argo Rollouts, when its CRD is installed (404 otherwise).
    match Api::<DynamicObject>::namespaced_with(client.clone(), ns, &argo_rollout())
        .list(&lp)
        .await
    {
        Ok(list) => {
            for r in list {
                out.push(to_workload(WorkloadKind::Rollout, &r));
            }
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(Error::Kube(e)),
    }
    Ok(out)
}

fn argo_rollout() -> ApiResource {
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
