//! End to end: a shared cluster. SecretAccessPolicies decide which namespace may read which AWS
//! secret (names, selectors, variables, regions), before any AWS call and live; secrets are read as
//! the identity a rule or a ManagedSecret names (a ServiceAccount's IRSA role through the
//! TokenRequest API and STS, or an assumed role with session tags), never served across
//! identities; and a ManagedSecret touches only the Secrets it owns or was let into.

mod support;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use serde_json::{json, Value};
use support::aws::Moto;
use support::{Cluster, Operator};

fn creds(password: &str) -> Value {
    json!({"username": "app", "password": password})
}

async fn enforcing() -> (Cluster, Moto, Operator) {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let op = Operator::start_enforcing(&c, &moto).await;
    (c, moto, op)
}

async fn message(c: &Cluster, name: &str) -> String {
    let ms = c.managed().get(name).await.unwrap();
    let st = ms.status.unwrap();
    st.conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_allow_and_deny_by_name_selector_variables_and_region_before_any_aws_call() {
    let (c, moto, op) = enforcing().await;
    let ns = c.namespace.clone();
    c.label_namespace(json!({"env": "dev", "e2e-ns": ns})).await;
    for id in [
        format!("dev/{ns}/db"),
        format!("prod/{ns}/db"),
        "shared/key".to_string(),
        "other-team/db".to_string(),
    ] {
        moto.create_json(&id, &creds("pw")).await;
    }
    let conventions = c
        .apply_policy(
            "conventions",
            json!({"rules": [{"namespaceSelector": {"matchLabels": {"e2e-ns": ns}}, "secrets": ["$(labels.env)/$(namespace)/*"]}]}),
        )
        .await;
    c.apply_policy(
        "shared",
        json!({"rules": [{"namespaces": [ns], "secrets": ["shared/*"], "regions": ["us-east-1"]}]}),
    )
    .await;
    let cases = [
        (
            "by-variables",
            json!({"secretId": format!("dev/{ns}/db"), "data": {"allKeys": true}}),
            true,
        ),
        (
            "other-env",
            json!({"secretId": format!("prod/{ns}/db"), "data": {"allKeys": true}}),
            false,
        ),
        (
            "by-name",
            json!({"secretId": "shared/key", "data": {"allKeys": true}}),
            true,
        ),
        (
            "wrong-region",
            json!({"secretId": "shared/key", "region": "eu-west-1", "data": {"allKeys": true}}),
            false,
        ),
        (
            "other-team",
            json!({"secretId": "other-team/db", "data": {"allKeys": true}}),
            false,
        ),
    ];
    for (name, spec, _) in &cases {
        c.create_ms(name, spec.clone()).await;
    }
    for (name, _, allowed) in &cases {
        if *allowed {
            c.wait_ready(name, "True", "Synced").await;
        } else {
            c.wait_ready(name, "False", "PolicyDenied").await;
            assert!(c.secrets().get_opt(name).await.unwrap().is_none());
            assert!(c
                .events_for(name)
                .await
                .iter()
                .any(|(r, _)| r == "PolicyDenied"));
        }
    }
    let m = message(&c, "other-team").await;
    assert!(
        m.contains(&format!(
            "no SecretAccessPolicy grants namespace {ns} the AWS secret other-team/db"
        )) && m.contains(&conventions),
        "{m}"
    );
    assert!(message(&c, "wrong-region").await.contains("(eu-west-1)"));
    // Denied means not asked: AWS never saw a request for these secrets.
    for id in [format!("prod/{ns}/db"), "other-team/db".to_string()] {
        for api in ["GetSecretValue", "DescribeSecret"] {
            assert_eq!(moto.calls_for(api, &id).await, 0, "{api} {id}");
        }
    }
    let regional: Vec<Value> = moto
        .requests()
        .await
        .into_iter()
        .filter(|r| r["region"] == "eu-west-1")
        .collect();
    assert!(regional.is_empty(), "{regional:?}");

    // A policy edit takes effect at once, without a restart.
    c.apply_policy(
        "conventions",
        json!({"rules": [{"namespaceSelector": {"matchLabels": {"e2e-ns": ns}}, "secrets": ["$(labels.env)/$(namespace)/*", "other-team/*"]}]}),
    )
    .await;
    c.wait_ready("other-team", "True", "Synced").await;
    c.wait_secret_value("other-team", "password", "pw").await;

    // A namespace label change re-evaluates its ManagedSecrets: env=prod grants prod/, not dev/.
    c.label_namespace(json!({"env": "prod"})).await;
    c.wait_ready("other-env", "True", "Synced").await;
    let ms = c.wait_ready("by-variables", "False", "PolicyDenied").await;
    // What was synced before stays as it was, and is no longer refreshed.
    let m = &ms.status.unwrap().conditions[0].message;
    assert!(m.contains("the Secret keeps AWS version"), "{m}");
    assert_eq!(
        c.secret_data("by-variables").await.unwrap()["password"],
        "pw"
    );
    let before = moto
        .calls_for("DescribeSecret", &format!("dev/{ns}/db"))
        .await
        + moto
            .calls_for("GetSecretValue", &format!("dev/{ns}/db"))
            .await;
    let reconciles = op.metrics.reconciles.completed.get();
    c.patch_ms(
        "by-variables",
        json!({"metadata": {"annotations": {"managedsecrets.io/force-sync": "1"}}}),
    )
    .await;
    support::wait_for("the forced reconcile", support::DEADLINE, || async {
        (op.metrics.reconciles.completed.get() > reconciles).then_some(())
    })
    .await;
    let after = moto
        .calls_for("DescribeSecret", &format!("dev/{ns}/db"))
        .await
        + moto
            .calls_for("GetSecretValue", &format!("dev/{ns}/db"))
            .await;
    assert_eq!(
        before, after,
        "a denied ManagedSecret makes no AWS call, forced or not"
    );
    // Deleting a policy takes its grants away too.
    c.delete_policy(&conventions).await;
    c.wait_ready("other-env", "False", "PolicyDenied").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_identity_reads_through_assume_role_with_web_identity() {
    let (c, moto, op) = enforcing().await;
    let ns = c.namespace.clone();
    let role = "arn:aws:iam::123456789012:role/payments-reader";
    c.service_account("reader", Some(role)).await;
    c.service_account("no-role", None).await;
    moto.create_json("payments/db", &creds("pw")).await;
    c.apply_policy(
        "irsa",
        json!({"rules": [{"namespaces": [ns], "secrets": ["payments/*"], "serviceAccountName": "reader"}]}),
    )
    .await;
    c.create_ms(
        "db",
        json!({"secretId": "payments/db", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("db", "password", "pw").await;
    let sts: Vec<Value> = moto
        .requests()
        .await
        .into_iter()
        .filter(|r| r["action"] == "AssumeRoleWithWebIdentity")
        .collect();
    assert_eq!(
        sts.len(),
        1,
        "one exchange, then cached credentials: {sts:?}"
    );
    assert_eq!(sts[0]["role_arn"], role);
    assert_eq!(sts[0]["token_aud"], json!(["sts.amazonaws.com"]));
    assert_eq!(
        sts[0]["token_sub"],
        format!("system:serviceaccount:{ns}:reader")
    );
    // The secret was read with the role's credentials, not the operator's.
    let reads: Vec<Value> = moto
        .requests()
        .await
        .into_iter()
        .filter(|r| r["action"] == "GetSecretValue" && r["secret_id"] == "payments/db")
        .collect();
    assert!(!reads.is_empty());
    assert!(
        reads.iter().all(|r| r["access_key"] != "testing"),
        "{reads:?}"
    );
    assert!(op.metrics.render().contains(
        r#"managed_secrets_sts_calls_total{api="AssumeRoleWithWebIdentity",outcome="ok"} 1"#
    ));
    // A ManagedSecret may not pick another identity than the rule's.
    c.create_ms("sneaky", json!({"secretId": "payments/db", "serviceAccountName": "no-role", "data": {"allKeys": true}}))
        .await;
    c.wait_ready("sneaky", "False", "PolicyDenied").await;
    // A ServiceAccount without a role is reported, not guessed.
    c.apply_policy(
        "own-sa",
        json!({"rules": [{"namespaces": [ns], "secrets": ["mine/*"]}]}),
    )
    .await;
    moto.create_json("mine/x", &creds("pw")).await;
    c.create_ms(
        "no-role",
        json!({"secretId": "mine/x", "serviceAccountName": "no-role", "data": {"allKeys": true}}),
    )
    .await;
    let ms = c.wait_ready("no-role", "False", "IdentityFailed").await;
    assert!(ms.status.unwrap().conditions[0]
        .message
        .contains("has no eks.amazonaws.com/role-arn annotation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_rule_assumes_the_role_with_session_tags_and_the_cache_never_crosses_identities() {
    let (c, moto, _op) = enforcing().await;
    let ns = c.namespace.clone();
    let role = "arn:aws:iam::111122223333:role/cross-account-reader";
    // The secret lives in the other account, where only the assumed role finds it.
    moto.client_as(role)
        .await
        .create_secret()
        .name("cross/db")
        .secret_string(creds("cross").to_string())
        .send()
        .await
        .expect("CreateSecret in the other account");
    moto.create_json("shared/db", &creds("shared")).await;
    c.service_account("reader", Some("arn:aws:iam::123456789012:role/reader"))
        .await;
    c.apply_policy(
        "cross",
        json!({"rules": [
            {"namespaces": [ns], "secrets": ["cross/*"], "roleArn": role, "externalId": "e2e-external"},
            {"namespaces": [ns], "secrets": ["shared/*"]}
        ]}),
    )
    .await;
    c.create_ms(
        "as-role",
        json!({"secretId": "cross/db", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("as-role", "password", "cross").await;
    let assumed: Vec<Value> = moto
        .requests()
        .await
        .into_iter()
        .filter(|r| r["action"] == "AssumeRole" && r["session_name"] != "e2e-setup")
        .collect();
    assert_eq!(assumed.len(), 1, "{assumed:?}");
    assert_eq!(assumed[0]["role_arn"], role);
    assert_eq!(assumed[0]["external_id"], "e2e-external");
    assert_eq!(
        assumed[0]["tags"],
        json!({"managedsecrets.io/namespace": ns, "managedsecrets.io/name": "as-role"})
    );
    // One AWS secret, two identities: the operator's, and a ServiceAccount's. The value one read
    // is never served to the other: each reads it with its own credentials.
    c.create_ms(
        "as-operator",
        json!({"secretId": "shared/db", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("as-operator", "password", "shared")
        .await;
    c.create_ms(
        "as-sa",
        json!({"secretId": "shared/db", "serviceAccountName": "reader", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("as-sa", "password", "shared").await;
    let keys: std::collections::BTreeSet<String> = moto
        .requests()
        .await
        .into_iter()
        .filter(|r| r["action"] == "GetSecretValue" && r["secret_id"] == "shared/db")
        .filter_map(|r| r["access_key"].as_str().map(String::from))
        .collect();
    assert_eq!(keys.len(), 2, "one read per identity: {keys:?}");
    assert!(keys.contains("testing"), "the operator's own: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_then_owner_cannot_take_over_and_foreign_or_protected_secrets_are_never_written() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let _op = Operator::start(&c, &moto).await;
    moto.create_json("prod/db", &creds("pw")).await;
    // Someone else's Secret that lets "m1" merge into it.
    let foreign: Secret = serde_json::from_value(json!({"metadata": {"name": "app", "annotations": {"managedsecrets.io/allow-merge": "m1"}}, "stringData": {"OWN": "theirs"}})).unwrap();
    c.secrets()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    c.create_ms("m1", json!({"secretId": "prod/db", "data": {"keys": [{"from": "password", "to": "DB_PASSWORD"}]}, "target": {"name": "app", "creationPolicy": "Merge"}}))
        .await;
    c.wait_secret_value("app", "DB_PASSWORD", "pw").await;
    let rv = c
        .secrets()
        .get("app")
        .await
        .unwrap()
        .metadata
        .resource_version;
    // Switching to Owner does not make the Secret ours.
    c.patch_ms(
        "m1",
        json!({"spec": {"target": {"creationPolicy": "Owner"}}}),
    )
    .await;
    let ms = c.wait_ready("m1", "False", "SecretConflict").await;
    assert!(ms.status.unwrap().conditions[0]
        .message
        .contains("exists and is not managed by this ManagedSecret"),);
    assert_eq!(
        c.secrets()
            .get("app")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv
    );
    // Deleting it (deletionPolicy Delete) does not delete someone else's Secret.
    c.managed().delete("m1", &Default::default()).await.unwrap();
    c.wait_ms_gone("m1").await;
    let d = c
        .secret_data("app")
        .await
        .expect("the foreign Secret survives");
    assert_eq!(d["OWN"], "theirs");

    // No merge without the Secret owner's opt-in.
    let closed: Secret =
        serde_json::from_value(json!({"metadata": {"name": "closed"}, "stringData": {"OWN": "x"}}))
            .unwrap();
    c.secrets()
        .create(&PostParams::default(), &closed)
        .await
        .unwrap();
    let rv = c
        .secrets()
        .get("closed")
        .await
        .unwrap()
        .metadata
        .resource_version;
    c.create_ms("m2", json!({"secretId": "prod/db", "data": {"keys": [{"from": "password"}]}, "target": {"name": "closed", "creationPolicy": "Merge"}}))
        .await;
    let ms = c.wait_ready("m2", "False", "SecretConflict").await;
    assert!(ms.status.unwrap().conditions[0]
        .message
        .contains("managedsecrets.io/allow-merge: m2"));
    assert_eq!(
        c.secrets()
            .get("closed")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv
    );

    // Never into a service-account token, even when it says yes.
    c.service_account("robot", None).await;
    let token: Secret =
        serde_json::from_value(json!({"metadata": {"name": "robot-token", "annotations": {
        "kubernetes.io/service-account.name": "robot", "managedsecrets.io/allow-merge": "m3"}},
        "type": "kubernetes.io/service-account-token"}))
        .unwrap();
    c.secrets()
        .create(&PostParams::default(), &token)
        .await
        .unwrap();
    c.create_ms("m3", json!({"secretId": "prod/db", "data": {"keys": [{"from": "password"}]}, "target": {"name": "robot-token", "creationPolicy": "Merge"}}))
        .await;
    let ms = c.wait_ready("m3", "False", "SecretConflict").await;
    assert!(ms.status.unwrap().conditions[0]
        .message
        .contains("never writes into"));
    let after = c.secrets().get("robot-token").await.unwrap();
    assert!(!after.data.unwrap_or_default().contains_key("password"));
    assert!(after.metadata.managed_fields.iter().flatten().all(|m| !m
        .manager
        .as_deref()
        .unwrap_or("")
        .starts_with("managed-secrets")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managed_secrets_on_one_secret_give_one_stable_conflict() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let op = Operator::start(&c, &moto).await;
    moto.create_json("prod/a", &creds("a")).await;
    moto.create_json("prod/b", &creds("b")).await;
    c.create_ms("first", json!({"secretId": "prod/a", "refreshInterval": "1s", "data": {"allKeys": true}, "target": {"name": "shared"}}))
        .await;
    c.wait_secret_value("shared", "password", "a").await;
    c.create_ms("second", json!({"secretId": "prod/b", "refreshInterval": "1s", "data": {"allKeys": true}, "target": {"name": "shared"}}))
        .await;
    let ms = c.wait_ready("second", "False", "SecretConflict").await;
    assert!(ms.status.unwrap().conditions[0]
        .message
        .contains("is managed by ManagedSecret first"),);
    let rv = c
        .secrets()
        .get("shared")
        .await
        .unwrap()
        .metadata
        .resource_version;
    c.wait_attempts(&moto, "first", 3).await;
    op.wait_failures("SecretConflict", 1).await;
    assert_eq!(
        c.secrets()
            .get("shared")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv,
        "no flapping: nothing rewrote the Secret"
    );
    assert_eq!(c.secret_data("shared").await.unwrap()["password"], "a");
    c.wait_ready("first", "True", "Synced").await;
    c.wait_ready("second", "False", "SecretConflict").await;

    // Two Merge ManagedSecrets writing one key into one opted-in Secret: the second is refused
    // by server-side apply itself, naming the first.
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "cfg", "annotations": {"managedsecrets.io/allow-merge": "m-a,m-b"}}, "stringData": {"OWN": "x"}})).unwrap();
    c.secrets()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
    c.create_ms("m-a", json!({"secretId": "prod/a", "data": {"keys": [{"from": "password", "to": "PASSWORD"}]}, "target": {"name": "cfg", "creationPolicy": "Merge"}}))
        .await;
    c.wait_secret_value("cfg", "PASSWORD", "a").await;
    c.create_ms("m-b", json!({"secretId": "prod/b", "data": {"keys": [{"from": "password", "to": "PASSWORD"}]}, "target": {"name": "cfg", "creationPolicy": "Merge"}}))
        .await;
    let ms = c.wait_ready("m-b", "False", "SecretConflict").await;
    assert!(ms.status.unwrap().conditions[0]
        .message
        .contains("ManagedSecret m-a"),);
    assert_eq!(c.secret_data("cfg").await.unwrap()["PASSWORD"], "a");
    // An empty rollout selector (every workload) and a pending-only versionId are refused.
    c.create_ms(
        "everything",
        json!({"secretId": "prod/a", "data": {"allKeys": true}, "rollout": {"selector": {}}}),
    )
    .await;
    c.wait_ready("everything", "False", "InvalidSpec").await;
    let pending = moto.put_pending("prod/a", &creds("pending")).await;
    c.create_ms(
        "pinned-pending",
        json!({"secretId": "prod/a", "versionId": pending, "data": {"allKeys": true}}),
    )
    .await;
    let ms = c.wait_ready("pinned-pending", "False", "InvalidSpec").await;
    assert!(ms.status.unwrap().conditions[0]
        .message
        .contains("only AWSPENDING"));
    assert!(c
        .secrets()
        .get_opt("pinned-pending")
        .await
        .unwrap()
        .is_none());
}

/// The chart's `watchNamespaces` mode: the operator gets a Role in each listed namespace and only
/// the cluster-scoped rows cluster-wide; policies, sync, rotation and rollout work with exactly
/// that, and the operator may not touch Secrets anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_listed_namespaces_the_chart_roles_are_enough_and_nothing_else_is_granted() {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    use support::workloads::{deployment_using, wait_rollouts_recorded};
    let c = Cluster::start_with_chart(|ns| vec![format!("watchNamespaces={{{ns}}}")]).await;
    assert!(
        c.identity.iter().any(|o| o["kind"] == "Role"
            && o["metadata"]["name"] == "managed-secrets"
            && o["metadata"]["namespace"] == c.namespace.as_str()),
        "a Role in the listed namespace"
    );
    let moto = Moto::start().await;
    let _op = Operator::start_enforcing(&c, &moto).await;
    let ns = c.namespace.clone();
    let id = format!("team/{ns}/db");
    let v1 = moto.create_json(&id, &creds("one")).await;
    c.apply_policy(
        "listed",
        json!({"rules": [{"namespaces": [ns], "secrets": ["team/$(namespace)/*"]}]}),
    )
    .await;
    deployment_using(&c, "api", "db").await;
    c.create_ms(
        "db",
        json!({"secretId": id, "refreshInterval": "1s", "data": {"allKeys": true},
               "rollout": {"targets": [{"kind": "Deployment", "name": "api"}], "debounce": "1s"}}),
    )
    .await;
    c.wait_secret_value("db", "password", "one").await;
    wait_rollouts_recorded(&c, "db", &v1, 1).await;
    let v2 = moto.rotate_like_lambda(&id, &creds("two")).await;
    c.wait_secret_value("db", "password", "two").await;
    wait_rollouts_recorded(&c, "db", &v2, 1).await;
    // The operator's own answer for a namespace it does not watch: no.
    let reviews: kube::Api<SelfSubjectAccessReview> = kube::Api::all(c.operator_client.clone());
    for (verb, namespace) in [("list", "default"), ("create", "default"), ("list", "")] {
        let r = reviews
            .create(
                &PostParams::default(),
                &SelfSubjectAccessReview {
                    spec: SelfSubjectAccessReviewSpec {
                        resource_attributes: Some(ResourceAttributes {
                            verb: Some(verb.into()),
                            resource: Some("secrets".into()),
                            namespace: Some(namespace.into()).filter(|n: &String| !n.is_empty()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(
            !r.status.unwrap().allowed,
            "{verb} secrets in {namespace:?} is not granted"
        );
    }
}
