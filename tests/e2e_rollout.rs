//! End to end: rotations reach the Pods. Workloads that use a rotated Secret are restarted once
//! (a new Deployment revision), and only they.

mod support;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use support::aws::Moto;
use support::workloads::*;
use support::{wait_for, Cluster, Operator, DEADLINE};

async fn setup() -> (Cluster, Moto, Operator) {
    let cluster = Cluster::start().await;
    let moto = Moto::start().await;
    let op = Operator::start(&cluster, &moto).await;
    (cluster, moto, op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_rotation_restarts_the_declared_targets_once() {
    let (c, moto, op) = setup().await;
    let v1 = moto.create_json("prod/db/credentials", &creds("one")).await;
    deployment_using(&c, "api", "db").await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1s", "data": {"allKeys": true},
                             "rollout": {"targets": [{"kind": "Deployment", "name": "api"}], "debounce": "1s"}})).await;
    c.wait_secret_value("db", "password", "one").await;
    wait_rollouts_recorded(&c, "db", &v1, 1).await;
    assert_eq!(
        state(&c, "Deployment", "api").await,
        (1, None),
        "the first sync restarts nothing"
    );

    let v2 = moto
        .rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    c.wait_secret_value("db", "password", "two").await;
    wait_for("revision 2", DEADLINE, || async {
        (revision(&c, "api").await.as_deref() == Some("2")).then_some(())
    })
    .await;
    assert_eq!(state(&c, "Deployment", "api").await, (2, Some(v2.clone())));
    wait_rollouts_recorded(&c, "db", &v2, 1).await;
    let st = c.managed().get("db").await.unwrap().status.unwrap();
    assert!(st.rollouts[0].rolled_out_at.is_some());
    assert!(c
        .events_for("db")
        .await
        .iter()
        .any(|(r, _)| r == "RolledOut"));
    assert!(
        c.events_for("api")
            .await
            .iter()
            .any(|(r, n)| r == "RolledOut" && n.contains(&v2)),
        "an Event on the workload too"
    );
    let metrics = op.metrics.render();
    assert!(
        metrics
            .contains(r#"managed_secrets_rollouts_total{kind="Deployment",result="triggered"} 1"#),
        "{metrics}"
    );
    // Refreshes that find the same version restart nothing.
    c.wait_attempts(&moto, "db", 3).await;
    assert_eq!(state(&c, "Deployment", "api").await.0, 2);
    assert_eq!(revision(&c, "api").await.as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_discovery_finds_every_reference_and_ignores_the_rest() {
    let (c, moto, _op) = setup().await;
    let v1 = moto.create_json("prod/db/credentials", &creds("one")).await;
    create_workload(&c, "Deployment", "by-env", container_env(json!([{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}])), json!({})).await;
    create_workload(&c, "Deployment", "by-envfrom", pod_spec(json!({"containers": [{"name": "app", "image": "busybox:1.36", "envFrom": [{"secretRef": {"name": "db"}}]}]})), json!({})).await;
    create_workload(
        &c,
        "Deployment",
        "by-volume",
        pod_spec(json!({"volumes": [{"name": "s", "secret": {"secretName": "db"}}]})),
        json!({}),
    )
    .await;
    create_workload(&c, "Deployment", "by-projected", pod_spec(json!({"volumes": [{"name": "s", "projected": {"sources": [{"secret": {"name": "db"}}]}}]})), json!({})).await;
    create_workload(
        &c,
        "Deployment",
        "by-annotation",
        pod_spec(json!({})),
        json!({"secret.reloader.stakater.com/reload": "db"}),
    )
    .await;
    create_workload(&c, "StatefulSet", "sts", container_env(json!([{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}])), json!({})).await;
    create_workload(
        &c,
        "DaemonSet",
        "ds",
        pod_spec(json!({"volumes": [{"name": "s", "secret": {"secretName": "db"}}]})),
        json!({}),
    )
    .await;
    create_workload(&c, "Deployment", "unrelated", pod_spec(json!({"containers": [{"name": "app", "image": "busybox:1.36", "envFrom": [{"secretRef": {"name": "other"}}]}]})), json!({})).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1s", "data": {"allKeys": true}, "rollout": {"auto": true, "debounce": "1s"}})).await;
    c.wait_secret_value("db", "password", "one").await;
    wait_rollouts_recorded(&c, "db", &v1, 7).await;
    let v2 = moto
        .rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    wait_rollouts_recorded(&c, "db", &v2, 7).await;
    for (kind, name) in [
        ("Deployment", "by-env"),
        ("Deployment", "by-envfrom"),
        ("Deployment", "by-volume"),
        ("Deployment", "by-projected"),
        ("Deployment", "by-annotation"),
        ("StatefulSet", "sts"),
        ("DaemonSet", "ds"),
    ] {
        assert_eq!(
            state(&c, kind, name).await,
            (2, Some(v2.clone())),
            "{kind}/{name} restarted once"
        );
    }
    assert_eq!(
        state(&c, "Deployment", "unrelated").await,
        (1, None),
        "a workload that does not use the Secret is left alone"
    );
    let st = c.managed().get("db").await.unwrap().status.unwrap();
    assert!(!st.rollouts.iter().any(|r| r.name == "unrelated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_downtime_roll_out_once_and_never_spuriously() {
    let (c, moto, mut op) = setup().await;
    let v1 = moto.create_json("prod/db/credentials", &creds("one")).await;
    deployment_using(&c, "api", "db").await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "2s", "data": {"allKeys": true}, "rollout": {"auto": true, "debounce": "1s"}})).await;
    wait_rollouts_recorded(&c, "db", &v1, 1).await;
    // An operator restart (a re-list of everything) restarts nothing.
    op.stop().await;
    let op2 = Operator::start(&c, &moto).await;
    wait_for("the new operator to reconcile", DEADLINE, || async {
        (op2.metrics.reconciles.completed.get() >= 1).then_some(())
    })
    .await;
    c.wait_attempts(&moto, "db", 1).await;
    assert_eq!(state(&c, "Deployment", "api").await, (1, None));
    // A rotation while the operator is down is rolled out once when it is back.
    let mut op2 = op2;
    op2.stop().await;
    let v2 = moto
        .rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    let op3 = Operator::start(&c, &moto).await;
    wait_rollouts_recorded(&c, "db", &v2, 1).await;
    assert_eq!(state(&c, "Deployment", "api").await, (2, Some(v2.clone())));
    c.wait_attempts(&moto, "db", 2).await;
    assert_eq!(state(&c, "Deployment", "api").await.0, 2, "exactly once");
    drop(op3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_in_the_debounce_window_make_one_rollout() {
    let (c, moto, _op) = setup().await;
    let db1 = moto.create_json("prod/db/credentials", &creds("one")).await;
    let api1 = moto
        .create_json("prod/api/key", &json!({"key": "k1"}))
        .await;
    create_workload(
        &c,
        "Deployment",
        "app",
        pod_spec(json!({"containers": [{"name": "app", "image": "busybox:1.36", "envFrom": [{"secretRef": {"name": "db"}}, {"secretRef": {"name": "api"}}]}]})),
        json!({}),
    )
    .await;
    for (name, id) in [("db", "prod/db/credentials"), ("api", "prod/api/key")] {
        c.create_ms(name, json!({"secretId": id, "refreshInterval": "1s", "data": {"allKeys": true}, "rollout": {"auto": true, "debounce": "4s"}})).await;
    }
    wait_rollouts_recorded(&c, "db", &db1, 1).await;
    wait_rollouts_recorded(&c, "api", &api1, 1).await;
    let db2 = moto
        .rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    let api2 = moto
        .rotate_like_lambda("prod/api/key", &json!({"key": "k2"}))
        .await;
    wait_rollouts_recorded(&c, "db", &db2, 1).await;
    wait_rollouts_recorded(&c, "api", &api2, 1).await;
    let (generation, annotation) = state(&c, "Deployment", "app").await;
    assert_eq!(generation, 2, "one rollout for both rotations");
    assert!(
        annotation.unwrap().starts_with("sha256:"),
        "a workload using several managed Secrets carries a hash of their versions"
    );
    wait_for("the Deployment controller", DEADLINE, || async {
        (revision(&c, "app").await.as_deref() == Some("2")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_target_is_reported_and_strategy_none_only_updates_the_secret() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("one")).await;
    create_workload(
        &c,
        "Deployment",
        "reader",
        pod_spec(json!({"volumes": [{"name": "s", "secret": {"secretName": "files"}}]})),
        json!({}),
    )
    .await;
    c.create_ms("ghosts", json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}, "rollout": {"targets": [{"kind": "Deployment", "name": "ghost"}]}})).await;
    c.create_ms("files", json!({"secretId": "prod/db/credentials", "refreshInterval": "1s", "data": {"allKeys": true}, "rollout": {"auto": true, "strategy": "None", "debounce": "1s"}})).await;
    let ms = c.wait_ready("ghosts", "True", "Synced").await;
    let st = wait_for("RolloutTargetMissing", DEADLINE, || async {
        let st = c.managed().get("ghosts").await.ok()?.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "RolloutTargetMissing" && c.status == "True")
            .then_some(st)
    })
    .await;
    drop(ms);
    assert!(st.rollouts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("Deployment ghost not found"));
    assert_eq!(
        c.secret_data("ghosts").await.unwrap()["password"],
        "one",
        "the sync still succeeds"
    );
    let v2 = moto
        .rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    c.wait_secret_value("files", "password", "two").await;
    wait_rollouts_recorded(&c, "files", &v2, 1).await;
    assert_eq!(
        state(&c, "Deployment", "reader").await,
        (1, None),
        "strategy None: the Secret changes, the Pods stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_rollouts_are_restarted_when_their_crd_exists() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject};
    let (c, moto, _op) = setup().await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    if crds
        .get_opt("rollouts.argoproj.io")
        .await
        .unwrap()
        .is_none()
    {
        // A minimal stand-in for Argo Rollouts' CRD (a real cluster with Argo keeps its own).
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "rollouts.argoproj.io"},
            "spec": {"group": "argoproj.io", "scope": "Namespaced", "names": {"plural": "rollouts", "singular": "rollout", "kind": "Rollout"},
                     "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                       "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                       "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}});
        crds.create(
            &PostParams::default(),
            &serde_json::from_value(crd).unwrap(),
        )
        .await
        .unwrap();
        c.wait_crd_established("rollouts.argoproj.io").await;
    }
    let ar = ApiResource {
        group: "argoproj.io".into(),
        version: "v1alpha1".into(),
        api_version: "argoproj.io/v1alpha1".into(),
        kind: "Rollout".into(),
        plural: "rollouts".into(),
    };
    let rollouts: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), &c.namespace, &ar);
    let ro: DynamicObject = serde_json::from_value(json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "canary"},
        "spec": {"selector": {"matchLabels": {"app": "canary"}}, "strategy": {"canary": {}},
                 "template": {"metadata": {"labels": {"app": "canary"}}, "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "envFrom": [{"secretRef": {"name": "db"}}]}]}}}}))
    .unwrap();
    rollouts.create(&PostParams::default(), &ro).await.unwrap();
    let listed = rollouts
        .list(&Default::default())
        .await
        .expect("Rollouts list");
    assert_eq!(listed.items.len(), 1);
    let v1 = moto.create_json("prod/db/credentials", &creds("one")).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1s", "data": {"allKeys": true}, "rollout": {"auto": true, "debounce": "1s"}})).await;
    wait_rollouts_recorded(&c, "db", &v1, 1).await;
    let v2 = moto
        .rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    wait_rollouts_recorded(&c, "db", &v2, 1).await;
    let got = rollouts.get("canary").await.unwrap();
    assert_eq!(
        got.data
            .pointer("/spec/template/metadata/annotations/managedsecrets.io~1secret-version")
            .and_then(Value::as_str),
        Some(v2.as_str())
    );
    assert_eq!(got.metadata.generation, Some(2));
    assert_eq!(
        c.managed()
            .get("db")
            .await
            .unwrap()
            .status
            .unwrap()
            .rollouts[0]
            .kind,
        managed_secrets::crd::WorkloadKind::Rollout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_created_later_is_recorded_at_once_not_at_the_next_refresh() {
    let (c, moto, _op) = setup().await;
    let v1 = moto.create_json("prod/db/credentials", &creds("one")).await;
    // An hour between refreshes: only the workload watch can bring the new target in.
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true},
                             "rollout": {"auto": true, "debounce": "1s"}})).await;
    c.wait_secret_value("db", "password", "one").await;
    c.wait_ready("db", "True", "Synced").await;
    deployment_using(&c, "late", "db").await;
    wait_rollouts_recorded(&c, "db", &v1, 1).await;
    let st = c.managed().get("db").await.unwrap().status.unwrap();
    assert_eq!(st.rollouts[0].name, "late");
    assert_eq!(
        state(&c, "Deployment", "late").await.1,
        None,
        "recorded, not restarted"
    );
}
