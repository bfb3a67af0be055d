//! End to end: the operator syncing AWS Secrets Manager (moto) into Kubernetes Secrets (the
//! emulator, or a real cluster with MANAGED_SECRETS_E2E_KUBECONFIG).

mod support;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::aws::Moto;
use support::{wait_for, Cluster, Operator, DEADLINE};

async fn setup() -> (Cluster, Moto, Operator) {
    let cluster = Cluster::start().await;
    let moto = Moto::start().await;
    let op = Operator::start(&cluster, &moto).await;
    (cluster, moto, op)
}

fn creds(password: &str) -> serde_json::Value {
    json!({"username": "dbadmin", "password": password, "host": "prod-db.cluster-abc123.us-east-1.rds.amazonaws.com", "port": 5432, "database": "myapp"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_keys_sync_then_a_lambda_rotation_reaches_the_secret_on_the_next_refresh() {
    let (c, moto, _op) = setup().await;
    let v1 = moto
        .create_json("prod/db/credentials", &creds("SuperSecure123"))
        .await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "2s", "data": {"allKeys": true}})).await;
    let d = c
        .wait_secret_value("db", "password", "SuperSecure123")
        .await;
    assert_eq!(d["port"], "5432");
    assert_eq!(d["username"], "dbadmin");
    let ms = c.wait_ready("db", "True", "Synced").await;
    let st = ms.status.unwrap();
    assert_eq!(st.synced_version_id.as_deref(), Some(v1.as_str()));
    assert_eq!(st.synced_version_stages, ["AWSCURRENT"]);
    assert_eq!(st.secret_name.as_deref(), Some("db"));
    assert!(st.data_hash.unwrap().starts_with("hmac-sha256:"));
    assert_eq!(st.observed_generation, Some(1));
    assert!(st.next_refresh_time.is_some() && st.last_sync_time.is_some());
    let secret = c.secrets().get("db").await.unwrap();
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].kind,
        "ManagedSecret"
    );
    // A first sync is no Event (the Ready condition says it); a new version is.
    assert!(!c.events_for("db").await.iter().any(|(r, _)| r == "Synced"));

    let v2 = moto
        .rotate_like_lambda("prod/db/credentials", &creds("Rotated456"))
        .await;
    c.wait_secret_value("db", "password", "Rotated456").await;
    let st = wait_for("status to show the new version", DEADLINE, || async {
        let st = c.managed().get("db").await.ok()?.status?;
        (st.synced_version_id.as_deref() == Some(v2.as_str())).then_some(st)
    })
    .await;
    assert!(st.synced_version_stages.contains(&"AWSCURRENT".to_string()));
    wait_for("the Synced Event of the new version", DEADLINE, || async {
        c.events_for("db")
            .await
            .into_iter()
            .find(|(r, note)| r == "Synced" && note.contains(v2.as_str()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_managed_secret_costs_a_secret_create_and_a_status_write() {
    let (c, moto, op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("pw")).await;
    // Someone's Secret `theirs`: a ManagedSecret that targets it fails to create it, reads it, and
    // is refused; nothing is written into it.
    c.secrets()
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "theirs"}, "stringData": {"password": "mine"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let counts = || async {
        (
            c.count("get", "secrets").await,
            c.count("create", "secrets").await,
            c.count("patch", "secrets").await,
            c.count("patch", "managedsecrets/status").await,
            c.count("create", "events").await,
        )
    };
    let before = counts().await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true}})).await;
    // Only the ManagedSecret is read until the counts are taken (the test's reads count too).
    c.wait_ready("db", "True", "Synced").await;
    if c.is_emulator() {
        // What follows the first sync has run: the reconcile its Secret's watch event brings.
        wait_for("the reconcile after the first sync", DEADLINE, || async {
            (op.metrics.reconciles.completed.get() >= 2).then_some(())
        })
        .await;
        let (gets, creates, patches, statuses, events) = before;
        let plus = |a: Option<u64>, n: u64| a.map(|a| a + n);
        // The floor: the Secret written (created: no read first) and the status written once.
        let (g, c2, p, st, e) = counts().await;
        assert_eq!(
            (g, c2, p, e),
            (gets, plus(creates, 1), patches, events),
            "(get, create, patch secrets; create events): no read, one create, a first sync is no Event"
        );
        // One status write; a second only when the reconcile that the Secret's watch event brings
        // runs on a cache that has not yet seen the first (seen once under a loaded make test).
        assert!(
            st == plus(statuses, 1) || st == plus(statuses, 2),
            "status writes: {st:?} after {statuses:?}"
        );
    }
    c.wait_secret_value("db", "password", "pw").await;
    let before = counts().await;
    c.create_ms("taken", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true}, "target": {"name": "theirs"}})).await;
    c.wait_ready("taken", "False", "SecretConflict").await;
    if c.is_emulator() {
        let after = counts().await;
        assert_eq!(
            after.0,
            before.0.map(|g| g + 1),
            "read after the create failed"
        );
        assert_eq!(
            after.1,
            before.1.map(|g| g + 1),
            "one create, refused (409)"
        );
        assert_eq!(after.2, before.2, "nothing written into it");
    }
    let theirs = c.secrets().get("theirs").await.unwrap();
    assert!(theirs.metadata.owner_references.is_none());
    assert_eq!(
        theirs.data.unwrap().keys().collect::<Vec<_>>(),
        ["password"]
    );
}

/// The Secret was created (a POST, owned by an update entry); later applies must still remove
/// what they stop writing, as server-side apply removes its own fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_labels_and_annotations_no_longer_mapped_leave_a_created_secret() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("pw")).await;
    c.create_ms(
        "db",
        json!({"secretId": "prod/db/credentials", "refreshInterval": "1h",
        "data": {"keys": [{"from": "username"}, {"from": "password"}]},
        "target": {"labels": {"team": "a"}, "annotations": {"note": "n"}}}),
    )
    .await;
    c.wait_secret_value("db", "password", "pw").await;
    c.wait_ready("db", "True", "Synced").await;
    let ours = |s: &Secret| -> Vec<String> {
        s.metadata
            .managed_fields
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| {
                m.manager
                    .as_deref()
                    .is_some_and(|n| n.starts_with("managed-secrets/"))
            })
            .map(|m| m.operation.unwrap_or_default())
            .collect()
    };
    let created = c.secrets().get("db").await.unwrap();
    assert_eq!(ours(&created), ["Update"], "created by a POST");
    // A label alone no longer mapped goes too (nothing else changes).
    c.patch_ms("db", json!({"spec": {"target": {"labels": null}}}))
        .await;
    wait_for("the unmapped label gone", DEADLINE, || async {
        let s = c.secrets().get("db").await.ok()?;
        (!s.metadata.labels?.contains_key("team")).then_some(())
    })
    .await;
    c.patch_ms(
        "db",
        json!({"spec": {"data": {"keys": [{"from": "username"}]}, "target": {"annotations": null}}}),
    )
    .await;
    let s = wait_for("the unmapped key gone", DEADLINE, || async {
        let s = c.secrets().get("db").await.ok()?;
        (!s.data.as_ref()?.contains_key("password")).then_some(s)
    })
    .await;
    // Ours from now on by apply alone: the create's entry was merged into the apply's.
    assert_eq!(ours(&s), ["Apply"]);
    assert_eq!(s.data.unwrap().keys().collect::<Vec<_>>(), ["username"]);
    let labels = s.metadata.labels.unwrap_or_default();
    assert!(!labels.contains_key("team"), "{labels:?}");
    let annotations = s.metadata.annotations.unwrap_or_default();
    assert!(!annotations.contains_key("note"), "{annotations:?}");
    // And a rotation still lands.
    let v2 = moto
        .rotate_like_lambda("prod/db/credentials", &creds("pw2"))
        .await;
    c.patch_ms(
        "db",
        json!({"metadata": {"annotations": {"managedsecrets.io/force-sync": "2026-12-02T10:00:00Z"}}}),
    )
    .await;
    wait_for("the new version written", DEADLINE, || async {
        let s = c.secrets().get("db").await.ok()?;
        (s.metadata
            .annotations?
            .get("managedsecrets.io/aws-version-id")?
            == &v2)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selected_keys_raw_values_binary_and_templates() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/api/nested", &json!({"credentials": {"password": "inner"}, "user": "u1", "host": "h", "port": 5432, "database": "app", "password": "p@ss/word"})).await;
    moto.create_string("prod/api/token", "plain-token-value")
        .await;
    moto.create_binary("prod/api/cert", &[0u8, 159, 146, 150])
        .await;
    c.create_ms("keys", json!({"secretId": "prod/api/nested", "data": {"keys": [{"from": "credentials.password", "to": "DB_PASSWORD"}, {"from": "user"}]}})).await;
    c.create_ms(
        "raw",
        json!({"secretId": "prod/api/token", "data": {"rawKey": "token"}}),
    )
    .await;
    c.create_ms(
        "bin",
        json!({"secretId": "prod/api/cert", "data": {"rawKey": "cert.der"}}),
    )
    .await;
    c.create_ms(
        "tpl",
        json!({"secretId": "prod/api/nested", "data": {"keys": [{"from": "user"}]},
               "templates": {"DATABASE_URL": "postgres://{{ user }}:{{ password | urlencode }}@{{ host }}:{{ port }}/{{ database }}"}}),
    )
    .await;
    let d = c.wait_secret_value("keys", "DB_PASSWORD", "inner").await;
    assert_eq!(d.keys().collect::<Vec<_>>(), ["DB_PASSWORD", "user"]);
    c.wait_secret_value("raw", "token", "plain-token-value")
        .await;
    let bin = wait_for("binary secret", DEADLINE, || async {
        c.secrets()
            .get_opt("bin")
            .await
            .ok()?
            .and_then(|s| s.data)?
            .get("cert.der")
            .cloned()
    })
    .await;
    assert_eq!(bin.0, vec![0u8, 159, 146, 150]);
    c.wait_secret_value(
        "tpl",
        "DATABASE_URL",
        "postgres://u1:p%40ss%2Fword@h:5432/app",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_type_is_written_with_its_required_keys() {
    let (c, moto, _op) = setup().await;
    moto.create_json(
        "prod/web/basic",
        &json!({"username": "admin", "password": "pw"}),
    )
    .await;
    moto.create_json(
        "prod/web/tls",
        &json!({"cert": "-----BEGIN CERTIFICATE-----", "key": "-----BEGIN PRIVATE KEY-----"}),
    )
    .await;
    moto.create_json(
        "prod/web/registry",
        &json!({"config": "{\"auths\":{\"registry.example.com\":{\"auth\":\"eDp5\"}}}"}),
    )
    .await;
    c.create_ms("basic", json!({"secretId": "prod/web/basic", "data": {"allKeys": true}, "target": {"type": "kubernetes.io/basic-auth"}})).await;
    c.create_ms("tls", json!({"secretId": "prod/web/tls", "data": {"keys": [{"from": "cert", "to": "tls.crt"}, {"from": "key", "to": "tls.key"}]}, "target": {"type": "kubernetes.io/tls", "name": "web-tls"}})).await;
    c.create_ms("registry", json!({"secretId": "prod/web/registry", "data": {"keys": [{"from": "config", "to": ".dockerconfigjson"}]}, "target": {"type": "kubernetes.io/dockerconfigjson"}})).await;
    // A .dockerconfigjson built from a username and a password with a template.
    c.create_ms("registry-tpl", json!({"secretId": "prod/web/basic", "data": {"keys": [{"from": "username"}]},
        "templates": {".dockerconfigjson": "{\"auths\":{\"registry.example.com\":{\"auth\":\"{{ (username ~ ':' ~ password) | b64encode }}\"}}}"},
        "target": {"type": "kubernetes.io/dockerconfigjson"}})).await;
    c.create_ms(
        "opaque",
        json!({"secretId": "prod/web/basic", "data": {"allKeys": true}}),
    )
    .await;
    for (name, ty) in [
        ("basic", "kubernetes.io/basic-auth"),
        ("web-tls", "kubernetes.io/tls"),
        ("registry", "kubernetes.io/dockerconfigjson"),
        ("registry-tpl", "kubernetes.io/dockerconfigjson"),
        ("opaque", "Opaque"),
    ] {
        let s = wait_for(&format!("Secret {name}"), DEADLINE, || async {
            c.secrets().get_opt(name).await.ok()?
        })
        .await;
        assert_eq!(s.type_.as_deref(), Some(ty), "{name}");
    }
    let tpl = c.secret_data("registry-tpl").await.unwrap();
    assert_eq!(
        tpl[".dockerconfigjson"],
        r#"{"auths":{"registry.example.com":{"auth":"YWRtaW46cHc="}}}"#
    );
    // A tls Secret without its keys is refused before anything is written.
    c.create_ms("bad-tls", json!({"secretId": "prod/web/basic", "data": {"allKeys": true}, "target": {"type": "kubernetes.io/tls"}})).await;
    let ms = c.wait_ready("bad-tls", "False", "InvalidSpec").await;
    assert!(ms.status.unwrap().conditions[0]
        .message
        .contains("tls.crt, tls.key"));
    assert!(c.secrets().get_opt("bad-tls").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_edited_managed_secret_is_repaired_within_seconds() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("orig"))
        .await;
    // A long refresh interval: only the watch on the Secret can bring the repair.
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true}})).await;
    c.wait_secret_value("db", "password", "orig").await;
    c.wait_ready("db", "True", "Synced").await;
    c.secrets()
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    c.wait_secret_value("db", "password", "orig").await;
    c.secrets()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "tampered"}})),
        )
        .await
        .unwrap();
    c.wait_secret_value("db", "password", "orig").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_policies_refuse_foreign_secrets_and_merge_only_our_keys() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("pw")).await;
    let foreign: Secret = serde_json::from_value(json!({"metadata": {"name": "app-config", "annotations": {"managedsecrets.io/allow-merge": "merge"}}, "stringData": {"LOG_LEVEL": "debug", "password": "theirs"}})).unwrap();
    c.secrets()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    c.create_ms("owner", json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}, "target": {"name": "app-config"}})).await;
    let ms = c.wait_ready("owner", "False", "SecretConflict").await;
    assert!(ms.status.unwrap().conditions[0]
        .message
        .contains("creationPolicy: Merge"));
    let d = c.secret_data("app-config").await.unwrap();
    assert_eq!(
        d["password"], "theirs",
        "a foreign Secret is never overwritten"
    );
    assert!(c
        .events_for("owner")
        .await
        .iter()
        .any(|(r, _)| r == "SecretConflict"));
    c.managed()
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();

    c.create_ms("merge", json!({"secretId": "prod/db/credentials", "data": {"keys": [{"from": "username", "to": "DB_USER"}]}, "target": {"name": "app-config", "creationPolicy": "Merge"}})).await;
    let d = c
        .wait_secret_value("app-config", "DB_USER", "dbadmin")
        .await;
    assert_eq!(d["LOG_LEVEL"], "debug");
    assert_eq!(d["password"], "theirs");
    let s = c.secrets().get("app-config").await.unwrap();
    assert!(
        s.metadata.owner_references.is_none(),
        "Merge does not take ownership"
    );

    c.create_ms("missing", json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}, "target": {"name": "nope", "creationPolicy": "Merge"}})).await;
    c.wait_ready("missing", "False", "TargetMissing").await;

    c.create_ms("orphan", json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}, "target": {"creationPolicy": "Orphan"}})).await;
    c.wait_secret_value("orphan", "password", "pw").await;
    assert!(c
        .secrets()
        .get("orphan")
        .await
        .unwrap()
        .metadata
        .owner_references
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_policies_delete_retain_and_give_back_merged_keys() {
    let (c, moto, op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("pw")).await;
    c.create_ms(
        "gone",
        json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}}),
    )
    .await;
    c.create_ms("kept", json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}, "target": {"deletionPolicy": "Retain"}})).await;
    let shared: Secret = serde_json::from_value(
        json!({"metadata": {"name": "shared", "annotations": {"managedsecrets.io/allow-merge": "merged"}}, "stringData": {"OTHER": "x"}}),
    )
    .unwrap();
    c.secrets()
        .create(&PostParams::default(), &shared)
        .await
        .unwrap();
    c.create_ms("merged", json!({"secretId": "prod/db/credentials", "data": {"keys": [{"from": "password"}]}, "target": {"name": "shared", "creationPolicy": "Merge"}})).await;
    c.wait_secret_value("gone", "password", "pw").await;
    c.wait_secret_value("kept", "password", "pw").await;
    c.wait_secret_value("shared", "password", "pw").await;
    for n in ["gone", "kept", "merged"] {
        c.managed()
            .delete(n, &DeleteParams::default())
            .await
            .unwrap();
    }
    for n in ["gone", "kept", "merged"] {
        c.wait_ms_gone(n).await;
    }
    c.wait_secret_gone("gone").await;
    let kept = c.secrets().get("kept").await.unwrap();
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "Retain drops the ownerReference"
    );
    assert_eq!(c.secret_data("kept").await.unwrap()["password"], "pw");
    let shared = wait_for(
        "our key removed from the merged Secret",
        DEADLINE,
        || async {
            let d = c.secret_data("shared").await?;
            (!d.contains_key("password")).then_some(d)
        },
    )
    .await;
    assert_eq!(shared["OTHER"], "x");
    // No ManagedSecret needs the value any more: the operator no longer holds it.
    wait_for("the cached value to be dropped", DEADLINE, || async {
        (op.metrics.cache.entries.get() == 0 && op.metrics.cache.bytes.get() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_and_mapping_errors_have_clear_reasons_and_never_cost_data() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("pw")).await;
    moto.create_string("prod/plain/text", "not json at all")
        .await;
    moto.create_json("prod/bad/keys", &json!({"bad key": "v"}))
        .await;
    moto.create_json("prod/big/value", &json!({"blob": "x".repeat(60_000)}))
        .await;
    for id in ["prod/denied/x", "prod/kms/x", "prod/throttled/x"] {
        moto.create_json(id, &creds("pw")).await;
    }
    // Faults stay until used: enough for every retry the SDK and the operator make in this test.
    moto.fault(
        "GetSecretValue",
        "prod/denied/x",
        "AccessDeniedException",
        1000,
    )
    .await;
    moto.fault("GetSecretValue", "prod/kms/x", "DecryptionFailure", 1000)
        .await;
    let templates: serde_json::Map<String, serde_json::Value> = (0..20)
        .map(|i| (format!("copy{i}"), json!("{{ blob }}")))
        .collect();
    let cases = [
        (
            "notfound",
            json!({"secretId": "prod/missing/x", "data": {"allKeys": true}}),
            "SecretNotFound",
        ),
        (
            "denied",
            json!({"secretId": "prod/denied/x", "data": {"allKeys": true}}),
            "AccessDenied",
        ),
        (
            "kms",
            json!({"secretId": "prod/kms/x", "data": {"allKeys": true}}),
            "DecryptionFailed",
        ),
        (
            "notjson",
            json!({"secretId": "prod/plain/text", "data": {"allKeys": true}}),
            "InvalidJSON",
        ),
        (
            "nokey",
            json!({"secretId": "prod/db/credentials", "data": {"keys": [{"from": "api_key"}]}}),
            "KeyNotFound",
        ),
        (
            "badkey",
            json!({"secretId": "prod/bad/keys", "data": {"allKeys": true}}),
            "InvalidKeyName",
        ),
        (
            "toobig",
            json!({"secretId": "prod/big/value", "data": {"keys": [{"from": "blob"}]}, "templates": templates}),
            "ValueTooLarge",
        ),
        (
            "pending",
            json!({"secretId": "prod/db/credentials", "versionStage": "AWSPENDING", "data": {"allKeys": true}}),
            "InvalidSpec",
        ),
        (
            "tooshort",
            json!({"secretId": "prod/db/credentials", "refreshInterval": "500ms", "data": {"allKeys": true}}),
            "InvalidSpec",
        ),
    ];
    for (name, spec, _) in &cases {
        c.create_ms(name, spec.clone()).await;
    }
    for (name, _, reason) in &cases {
        let ms = c.wait_ready(name, "False", reason).await;
        let st = ms.status.unwrap();
        let msg = &st.conditions[0].message;
        assert!(msg.contains("next attempt at"), "{name}: {msg}");
        assert!(
            !msg.contains("pw\"") && !msg.contains("not json at all"),
            "no values in messages: {msg}"
        );
        assert!(st.next_refresh_time.is_some());
        assert!(
            c.events_for(name).await.iter().any(|(r, _)| r == reason),
            "{name}: a Warning event with reason {reason}"
        );
        assert!(
            c.secrets().get_opt(name).await.unwrap().is_none(),
            "{name}: nothing written"
        );
    }
    let nokey = c.managed().get("nokey").await.unwrap().status.unwrap();
    assert!(nokey.conditions[0]
        .message
        .starts_with("KeyNotFound: api_key"));

    // A transient failure after a good sync keeps the Secret as it was.
    c.create_ms("throttled", json!({"secretId": "prod/throttled/x", "refreshInterval": "1s", "data": {"allKeys": true}, "target": {"name": "kept"}})).await;
    c.wait_secret_value("kept", "password", "pw").await;
    c.wait_ready("throttled", "True", "Synced").await;
    let before = c.secrets().get("kept").await.unwrap();
    moto.put_json("prod/throttled/x", &creds("new-but-unreachable"))
        .await;
    moto.fault(
        "DescribeSecret",
        "prod/throttled/x",
        "ThrottlingException",
        1000,
    )
    .await;
    moto.fault(
        "GetSecretValue",
        "prod/throttled/x",
        "ThrottlingException",
        1000,
    )
    .await;
    // The Secret is still good: Ready stays True; once AWS has not confirmed the value for longer
    // than the refresh interval, Stale says since when and which version the Secret keeps.
    let ms = c
        .wait_condition("throttled", "Stale", "True", "Throttled")
        .await;
    let st = ms.status.unwrap();
    let stale = st.conditions.iter().find(|c| c.type_ == "Stale").unwrap();
    assert!(
        stale.message.contains("the Secret keeps AWS version"),
        "{}",
        stale.message
    );
    assert!(st
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"));
    let after = c.secrets().get("kept").await.unwrap();
    assert_eq!(
        after.data, before.data,
        "a transient failure never blanks the Secret"
    );
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_that_find_nothing_new_write_nothing_and_reread_nothing() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("pw")).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1s", "data": {"allKeys": true}})).await;
    c.wait_secret_value("db", "password", "pw").await;
    c.wait_ready("db", "True", "Synced").await;
    let rv = c.secret_version("db").await;
    let writes = (
        c.count("patch", "secrets").await,
        c.count("create", "secrets").await,
        c.count("update", "secrets").await,
    );
    let gets = moto.calls("GetSecretValue").await;
    let describes = moto.calls("DescribeSecret").await;
    c.wait_attempts(&moto, "db", 3).await;
    assert_eq!(
        c.secrets()
            .get("db")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv,
        "no Secret write"
    );
    assert_eq!(
        (
            c.count("patch", "secrets").await,
            c.count("create", "secrets").await,
            c.count("update", "secrets").await
        ),
        writes,
        "no write request at all"
    );
    assert_eq!(
        moto.calls("GetSecretValue").await,
        gets,
        "the cache re-validated with DescribeSecret instead of re-reading"
    );
    assert!(moto.calls("DescribeSecret").await > describes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_writes_nothing() {
    let (c, moto, mut op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("pw")).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true}})).await;
    c.wait_secret_value("db", "password", "pw").await;
    c.wait_ready("db", "True", "Synced").await;
    op.stop().await;
    let secret_rv = c.secret_version("db").await;
    let ms_rv = c
        .managed()
        .get("db")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let writes = (
        c.count("patch", "secrets").await,
        c.count("patch", "managedsecrets/status").await,
    );
    let gets = moto.calls("GetSecretValue").await;
    let op2 = Operator::start(&c, &moto).await;
    // Once the new operator has finished a reconcile of the object, nothing must have been written.
    wait_for(
        "the new operator to finish a reconcile",
        DEADLINE,
        || async { (op2.metrics.reconciles.completed.get() >= 1).then_some(()) },
    )
    .await;
    assert_eq!(
        c.secrets()
            .get("db")
            .await
            .unwrap()
            .metadata
            .resource_version,
        secret_rv
    );
    assert_eq!(
        c.managed()
            .get("db")
            .await
            .unwrap()
            .metadata
            .resource_version,
        ms_rv,
        "no status write either"
    );
    assert_eq!(
        (
            c.count("patch", "secrets").await,
            c.count("patch", "managedsecrets/status").await
        ),
        writes
    );
    assert_eq!(
        moto.calls("GetSecretValue").await,
        gets,
        "nothing re-read before the refresh is due"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_sync_rereads_aws_at_once_bypassing_the_cache() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("old")).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true}})).await;
    c.wait_secret_value("db", "password", "old").await;
    c.wait_ready("db", "True", "Synced").await;
    let v2 = moto.put_json("prod/db/credentials", &creds("new")).await;
    c.patch_ms("db", json!({"metadata": {"annotations": {"managedsecrets.io/force-sync": "2026-11-26T10:00:00Z"}}})).await;
    c.wait_secret_value("db", "password", "new").await;
    let st = wait_for("status to record the forced sync", DEADLINE, || async {
        let st = c.managed().get("db").await.ok()?.status?;
        (st.last_force_sync.as_deref() == Some("2026-11-26T10:00:00Z")
            && st.synced_version_id.as_deref() == Some(v2.as_str()))
        .then_some(st)
    })
    .await;
    assert_eq!(st.failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_values_are_never_synced_until_the_rotation_finishes() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("current"))
        .await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1s", "data": {"allKeys": true}})).await;
    c.wait_secret_value("db", "password", "current").await;
    let pending = moto
        .put_pending("prod/db/credentials", &creds("pending"))
        .await;
    c.wait_attempts(&moto, "db", 2).await;
    assert_eq!(c.secret_data("db").await.unwrap()["password"], "current");
    moto.finish_rotation("prod/db/credentials", &pending).await;
    c.wait_secret_value("db", "password", "pending").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_api_failures_are_retried() {
    let (c, moto, op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("pw")).await;
    // Emulator only (on a real cluster the sync simply succeeds the first time): a 500, then
    // priority and fairness turning the status write away twice (429 with Retry-After).
    c.kube_fault("create", "secrets", 500, 1).await;
    c.kube_fault("patch", "managedsecrets/status", 429, 2).await;
    c.create_ms(
        "db",
        json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("db", "password", "pw").await;
    c.wait_ready("db", "True", "Synced").await;
    if c.is_emulator() {
        assert!(
            c.count("create", "secrets").await.unwrap() >= 2,
            "the failed create was retried"
        );
        assert_eq!(
            op.metrics.kube.throttled.get(),
            2,
            "each 429 slowed the client"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_force_sync_is_not_recorded_and_its_retry_still_bypasses_the_cache() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("old")).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true}})).await;
    c.wait_secret_value("db", "password", "old").await;
    c.wait_ready("db", "True", "Synced").await;
    let v2 = moto.put_json("prod/db/credentials", &creds("new")).await;
    // Every GetSecretValue attempt of the first forced sync is throttled (the SDK retries three times).
    moto.fault(
        "GetSecretValue",
        "prod/db/credentials",
        "ThrottlingException",
        3,
    )
    .await;
    c.patch_ms(
        "db",
        json!({"metadata": {"annotations": {"managedsecrets.io/force-sync": "1"}}}),
    )
    .await;
    let st = wait_for("the forced sync to fail", DEADLINE, || async {
        let st = c.managed().get("db").await.ok()?.status?;
        (st.failures >= 1).then_some(st)
    })
    .await;
    assert_eq!(st.last_force_sync, None, "a failed force-sync is not done");
    assert_eq!(c.secret_data("db").await.unwrap()["password"], "old");
    // The retry (after the back-off, with the cache still fresh for an hour) reads AWS again.
    c.wait_secret_value("db", "password", "new").await;
    let st = wait_for("the forced sync to be recorded", DEADLINE, || async {
        let st = c.managed().get("db").await.ok()?.status?;
        (st.last_force_sync.as_deref() == Some("1")).then_some(st)
    })
    .await;
    assert_eq!(st.synced_version_id.as_deref(), Some(v2.as_str()));
    assert_eq!(st.failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_outlive_their_managed_secret_and_a_renamed_target_releases_the_old_secret() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("pw")).await;
    // Orphan with the default deletionPolicy: the Secret stays when the ManagedSecret goes.
    c.create_ms("orphan", json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}, "target": {"creationPolicy": "Orphan"}})).await;
    c.wait_secret_value("orphan", "password", "pw").await;
    c.managed()
        .delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    c.wait_ms_gone("orphan").await;
    assert_eq!(c.secret_data("orphan").await.unwrap()["password"], "pw");

    // Owner: renaming the target deletes the old Secret (deletionPolicy Delete).
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}, "target": {"name": "first"}})).await;
    c.wait_secret_value("first", "password", "pw").await;
    c.wait_ready("db", "True", "Synced").await;
    c.patch_ms("db", json!({"spec": {"target": {"name": "second"}}}))
        .await;
    c.wait_secret_value("second", "password", "pw").await;
    c.wait_secret_gone("first").await;
    assert!(c
        .events_for("db")
        .await
        .iter()
        .any(|(r, _)| r == "Released"));

    // Merge: renaming gives our keys back to the first Secret and merges into the second.
    for name in ["shared-a", "shared-b"] {
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": name, "annotations": {"managedsecrets.io/allow-merge": "merge"}}, "stringData": {"OTHER": "theirs"}}),
        )
        .unwrap();
        c.secrets()
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }
    c.create_ms("merge", json!({"secretId": "prod/db/credentials", "data": {"keys": [{"from": "password", "to": "DB_PASSWORD"}]}, "target": {"name": "shared-a", "creationPolicy": "Merge"}})).await;
    c.wait_secret_value("shared-a", "DB_PASSWORD", "pw").await;
    c.wait_ready("merge", "True", "Synced").await;
    c.patch_ms("merge", json!({"spec": {"target": {"name": "shared-b"}}}))
        .await;
    c.wait_secret_value("shared-b", "DB_PASSWORD", "pw").await;
    let a = wait_for("our key removed from shared-a", DEADLINE, || async {
        let d = c.secret_data("shared-a").await?;
        (!d.contains_key("DB_PASSWORD")).then_some(d)
    })
    .await;
    assert_eq!(a["OTHER"], "theirs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_target_type_for_an_existing_secret_is_an_invalid_spec() {
    let (c, moto, _op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("pw")).await;
    c.create_ms(
        "db",
        json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("db", "password", "pw").await;
    c.wait_ready("db", "True", "Synced").await;
    let rv = c.secret_version("db").await;
    c.patch_ms(
        "db",
        json!({"spec": {"target": {"type": "kubernetes.io/basic-auth"}}}),
    )
    .await;
    let ms = c.wait_ready("db", "False", "InvalidSpec").await;
    let msg = &ms.status.unwrap().conditions[0].message;
    assert!(
        msg.contains("has type Opaque and a Secret's type cannot change"),
        "{msg}"
    );
    let s = c.secrets().get("db").await.unwrap();
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert_eq!(s.metadata.resource_version, rv, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writes_trigger_no_reconcile() {
    let (c, moto, op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("pw")).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true}})).await;
    c.wait_secret_value("db", "password", "pw").await;
    c.wait_ready("db", "True", "Synced").await;
    // Let the reconciles of the first sync (and of the Secret it wrote) settle.
    let settled = wait_for("reconciles to settle", DEADLINE, || async {
        let before = op.metrics.reconciles.completed.get();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        (op.metrics.reconciles.completed.get() == before).then_some(before)
    })
    .await;
    // Someone else writes the status (the operator's own writes look the same to a watch).
    c.managed()
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastAttemptTime": "2026-01-01T00:00:00Z"}})),
        )
        .await
        .unwrap();
    // A change that does need a reconcile, after it on the same watch.
    c.patch_ms(
        "db",
        json!({"metadata": {"annotations": {"managedsecrets.io/force-sync": "after-status"}}}),
    )
    .await;
    wait_for("the forced sync", DEADLINE, || async {
        let st = c.managed().get("db").await.ok()?.status?;
        (st.last_force_sync.as_deref() == Some("after-status")).then_some(())
    })
    .await;
    let after = wait_for("reconciles to settle again", DEADLINE, || async {
        let before = op.metrics.reconciles.completed.get();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        (op.metrics.reconciles.completed.get() == before && before > settled).then_some(before)
    })
    .await;
    assert_eq!(
        after,
        settled + 1,
        "only the force-sync reconciled: neither the status patch nor the operator's own status write did"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_finds_nothing_new_makes_no_kubernetes_request() {
    let (c, moto, _op) = setup().await;
    let v1 = moto.create_json("prod/db/credentials", &creds("pw")).await;
    support::workloads::deployment_using(&c, "api", "db").await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1s", "data": {"allKeys": true},
                             "rollout": {"auto": true, "debounce": "1s"}})).await;
    c.wait_secret_value("db", "password", "pw").await;
    support::workloads::wait_rollouts_recorded(&c, "db", &v1, 1).await;
    c.wait_ready("db", "True", "Synced").await;
    c.wait_attempts(&moto, "db", 1).await;
    let secret_rv = c.secret_version("db").await;
    let ms_rv = c
        .managed()
        .get("db")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let requests = [
        ("get", "secrets"),
        ("list", "secrets"),
        ("patch", "secrets"),
        ("create", "secrets"),
        ("patch", "managedsecrets/status"),
        ("list", "managedsecrets"),
        ("list", "deployments"),
        ("list", "statefulsets"),
        ("list", "daemonsets"),
        ("patch", "deployments"),
    ];
    let count = || async {
        let mut out = vec![];
        for (verb, res) in requests {
            out.push(c.count(verb, res).await);
        }
        out
    };
    let before = count().await;
    // Three refreshes: each checks AWS (DescribeSecret) and finds the same version.
    c.wait_attempts(&moto, "db", 3).await;
    assert_eq!(
        count().await,
        before,
        "no read, no list, no write: {requests:?}"
    );
    assert_eq!(
        c.secrets()
            .get("db")
            .await
            .unwrap()
            .metadata
            .resource_version,
        secret_rv
    );
    assert_eq!(
        c.managed()
            .get("db")
            .await
            .unwrap()
            .metadata
            .resource_version,
        ms_rv,
        "no status write for a refresh that found nothing new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_secrets_are_checked_by_list_secrets_sweeps_and_moved_values_read_in_batches() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    // Sweep once ten secrets of an identity and region are cached (production: 100).
    let _op = Operator::start_tuned(
        &c,
        &moto,
        |_| {},
        managed_secrets::source::cache::Limits {
            sweep_threshold: 10,
            ..Default::default()
        },
    )
    .await;
    for i in 0..12 {
        moto.create_json(&format!("prod/fleet/s{i:02}"), &creds("one"))
            .await;
        c.create_ms(
            &format!("ms{i:02}"),
            json!({"secretId": format!("prod/fleet/s{i:02}"), "refreshInterval": "2s", "data": {"allKeys": true}}),
        )
        .await;
    }
    for i in 0..12 {
        c.wait_secret_value(&format!("ms{i:02}"), "password", "one")
            .await;
    }
    // Sweeping: refreshes are answered by ListSecrets, not a DescribeSecret per secret.
    let lists = moto.calls("ListSecrets").await;
    wait_for("a sweep", DEADLINE, || async {
        (moto.calls("ListSecrets").await > lists).then_some(())
    })
    .await;
    let describes = moto.calls("DescribeSecret").await;
    let lists = moto.calls("ListSecrets").await;
    wait_for("another sweep", DEADLINE, || async {
        (moto.calls("ListSecrets").await > lists).then_some(())
    })
    .await;
    assert_eq!(
        moto.calls("DescribeSecret").await,
        describes,
        "no DescribeSecret while sweeps answer"
    );
    // Three rotations: one sweep sees them, one BatchGetSecretValue reads the three values.
    let gets = moto.calls("GetSecretValue").await;
    let batches = moto.calls("BatchGetSecretValue").await;
    for i in 0..3 {
        moto.rotate_like_lambda(&format!("prod/fleet/s{i:02}"), &creds("two"))
            .await;
    }
    for i in 0..3 {
        c.wait_secret_value(&format!("ms{i:02}"), "password", "two")
            .await;
    }
    assert!(moto.calls("BatchGetSecretValue").await > batches);
    assert_eq!(
        moto.calls("GetSecretValue").await,
        gets,
        "the moved values came in a batch, not one by one"
    );
    assert_eq!(c.secret_data("ms05").await.unwrap()["password"], "one");
}
