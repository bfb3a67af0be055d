//! Workloads for the rollout tests: create Deployments/StatefulSets/DaemonSets, read their
//! rollout state, wait for rollout records.

use super::{Cluster, DEADLINE};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

pub fn creds(password: &str) -> Value {
    json!({"username": "app", "password": password})
}

pub fn pod_spec(uses: Value) -> Value {
    json!({"containers": [{"name": "app", "image": "busybox:1.36"}]})
        .as_object()
        .cloned()
        .map(|mut m| {
            if let Some(u) = uses.as_object() {
                for (k, v) in u {
                    m.insert(k.clone(), v.clone());
                }
            }
            Value::Object(m)
        })
        .unwrap()
}

pub fn container_env(env: Value) -> Value {
    json!({"containers": [{"name": "app", "image": "busybox:1.36", "env": env}]})
}

pub async fn create_workload(c: &Cluster, kind: &str, name: &str, spec: Value, annotations: Value) {
    let body = json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "annotations": annotations, "labels": {"app": name}},
        "spec": {"selector": {"matchLabels": {"app": name}}, "serviceName": name,
                 "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}
    });
    match kind {
        "Deployment" => {
            let mut b = body;
            b["spec"].as_object_mut().unwrap().remove("serviceName");
            Api::<Deployment>::namespaced(c.client.clone(), &c.namespace)
                .create(&PostParams::default(), &serde_json::from_value(b).unwrap())
                .await
                .map(|_| ())
                .unwrap()
        }
        "StatefulSet" => Api::<StatefulSet>::namespaced(c.client.clone(), &c.namespace)
            .create(
                &PostParams::default(),
                &serde_json::from_value(body).unwrap(),
            )
            .await
            .map(|_| ())
            .unwrap(),
        _ => {
            let mut b = body;
            b["spec"].as_object_mut().unwrap().remove("serviceName");
            Api::<DaemonSet>::namespaced(c.client.clone(), &c.namespace)
                .create(&PostParams::default(), &serde_json::from_value(b).unwrap())
                .await
                .map(|_| ())
                .unwrap()
        }
    }
}

/// (generation, template annotation) of a workload.
pub async fn state(c: &Cluster, kind: &str, name: &str) -> (i64, Option<String>) {
    let v: Value = match kind {
        "Deployment" => serde_json::to_value(
            Api::<Deployment>::namespaced(c.client.clone(), &c.namespace)
                .get(name)
                .await
                .unwrap(),
        )
        .unwrap(),
        "StatefulSet" => serde_json::to_value(
            Api::<StatefulSet>::namespaced(c.client.clone(), &c.namespace)
                .get(name)
                .await
                .unwrap(),
        )
        .unwrap(),
        _ => serde_json::to_value(
            Api::<DaemonSet>::namespaced(c.client.clone(), &c.namespace)
                .get(name)
                .await
                .unwrap(),
        )
        .unwrap(),
    };
    (
        v["metadata"]["generation"].as_i64().unwrap_or(0),
        v.pointer("/spec/template/metadata/annotations/managedsecrets.io~1secret-version")
            .and_then(Value::as_str)
            .map(String::from),
    )
}

/// The version annotation of each ReplicaSet's pod template of Deployment `name` (selected by its
/// `app` label), one entry per ReplicaSet.
pub async fn replica_set_versions(c: &Cluster, name: &str) -> Vec<Option<String>> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    let list = Api::<ReplicaSet>::namespaced(c.client.clone(), &c.namespace)
        .list(&kube::api::ListParams::default().labels(&format!("app={name}")))
        .await
        .unwrap();
    list.items
        .into_iter()
        .map(|rs| {
            rs.spec?
                .template?
                .metadata?
                .annotations?
                .get("managedsecrets.io/secret-version")
                .cloned()
        })
        .collect()
}

pub async fn revision(c: &Cluster, name: &str) -> Option<String> {
    let d = Api::<Deployment>::namespaced(c.client.clone(), &c.namespace)
        .get(name)
        .await
        .ok()?;
    d.metadata
        .annotations?
        .get("deployment.kubernetes.io/revision")
        .cloned()
}

pub async fn wait_rollouts_recorded(c: &Cluster, ms: &str, version: &str, n: usize) {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let st = c.managed().get(ms).await.ok().and_then(|m| m.status);
        if let Some(st) = &st {
            if st
                .rollouts
                .iter()
                .filter(|r| r.version.as_deref() == Some(version))
                .count()
                >= n
                && st.rollout_pending_since.is_none()
            {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{ms}: no {n} rollout records at {version}; status: {st:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A Deployment `name` whose pods read Secret `secret` through envFrom.
pub async fn deployment_using(c: &Cluster, name: &str, secret: &str) {
    create_workload(
        c,
        "Deployment",
        name,
        pod_spec(json!({"containers": [{"name": "app", "image": "busybox:1.36", "envFrom": [{"secretRef": {"name": secret}}]}]})),
        json!({}),
    )
    .await;
}
