//! A hostile tenant, end to end: each test is an attack on a promise of the README's
//! "Multi-tenancy" section, made the way a ManagedSecret author (who may write ManagedSecrets in
//! their namespace, nothing more) can make it. Runs on the emulator and unchanged on a real cluster.

mod support;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use serde_json::json;
use support::aws::Moto;
use support::workloads::{create_workload, pod_spec, state};
use support::{wait_for, Cluster, Operator, DEADLINE};

fn creds(password: &str) -> serde_json::Value {
    json!({"username": "app", "password": password, "token": "from-aws"})
}

/// Finding 1: a Merge ManagedSecret that copies `managedsecrets.io/owner-uid: <its own UID>` into
/// someone else's opted-in Secret, then switches to Owner with deletionPolicy Delete, to
/// overwrite and then delete that Secret. The reserved annotation is refused, so the Secret never
/// carries it, the switch is a SecretConflict, and the delete leaves the Secret as its owner made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_owner_annotation_is_refused_and_merging_never_turns_into_owning() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let _op = Operator::start(&c, &moto).await;
    moto.create_json("team/extra", &creds("pw")).await;
    let theirs: Secret = serde_json::from_value(json!({"metadata": {"name": "shared-config",
        "annotations": {"managedsecrets.io/allow-merge": "extra"}}, "stringData": {"token": "theirs"}}))
    .unwrap();
    c.secrets()
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let ms = c
        .create_ms(
            "extra",
            json!({"secretId": "team/extra", "data": {"keys": [{"from": "password", "to": "EXTRA"}]},
               "target": {"name": "shared-config", "creationPolicy": "Merge"}}),
        )
        .await;
    c.wait_secret_value("shared-config", "EXTRA", "pw").await;
    let uid = ms.metadata.uid.unwrap();
    c.patch_ms(
        "extra",
        json!({"spec": {"target": {"annotations": {"managedsecrets.io/owner-uid": uid}}}}),
    )
    .await;
    let refused = c.wait_ready("extra", "False", "InvalidSpec").await;
    assert!(refused.status.unwrap().conditions[0]
        .message
        .contains("is reserved for the operator"));
    let s = c.secrets().get("shared-config").await.unwrap();
    assert!(
        !s.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("managedsecrets.io/owner-uid"),
        "the reserved annotation never reaches the Secret"
    );
    c.patch_ms(
        "extra",
        json!({"spec": {"data": {"keys": [{"from": "token", "to": "token"}]},
                        "target": {"creationPolicy": "Owner", "deletionPolicy": "Delete"}}}),
    )
    .await;
    c.wait_ready("extra", "False", "InvalidSpec").await;
    // Without the annotation in the spec, the switch itself is a conflict.
    c.patch_ms("extra", json!({"spec": {"target": {"annotations": null}}}))
        .await;
    c.wait_ready("extra", "False", "SecretConflict").await;
    assert_eq!(
        c.secret_data("shared-config").await.unwrap()["token"],
        "theirs",
        "the owner's key is not overwritten"
    );
    c.managed()
        .delete("extra", &Default::default())
        .await
        .unwrap();
    c.wait_ms_gone("extra").await;
    let left = c
        .secret_data("shared-config")
        .await
        .expect("the owner's Secret survives the ManagedSecret's deletion");
    assert_eq!(left["token"], "theirs");
}

/// Finding 4: a rollout selector that only excludes (`DoesNotExist` on a label nobody has)
/// would restart every workload in the namespace on every rotation. It is refused, and nothing
/// is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_that_matches_everything_is_refused_and_restarts_nothing() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let _op = Operator::start(&c, &moto).await;
    moto.create_json("team/db", &creds("one")).await;
    create_workload(
        &c,
        "Deployment",
        "bystander",
        pod_spec(json!({})),
        json!({}),
    )
    .await;
    let (generation, _) = state(&c, "Deployment", "bystander").await;
    c.create_ms(
        "greedy",
        json!({"secretId": "team/db", "refreshInterval": "1s", "data": {"allKeys": true},
               "rollout": {"selector": {"matchExpressions": [{"key": "nope", "operator": "DoesNotExist"}]}, "debounce": "1s"}}),
    )
    .await;
    let ms = c.wait_ready("greedy", "False", "InvalidSpec").await;
    let msg = &ms.status.unwrap().conditions[0].message;
    assert!(
        msg.contains("rollout.selector selects by no label"),
        "{msg}"
    );
    // A healthy neighbour on the same secret shows when the rotation has been seen.
    c.create_ms(
        "honest",
        json!({"secretId": "team/db", "refreshInterval": "1s", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("honest", "password", "one").await;
    moto.rotate_like_lambda("team/db", &creds("two")).await;
    c.wait_secret_value("honest", "password", "two").await;
    assert_eq!(
        state(&c, "Deployment", "bystander").await.0,
        generation,
        "not restarted"
    );
    assert!(c.secret_data("greedy").await.is_none(), "nothing synced");
}

/// Finding 10: an Opaque target named like Helm's release storage would break that release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_named_like_a_helm_release_is_refused() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let _op = Operator::start(&c, &moto).await;
    moto.create_json("team/db", &creds("one")).await;
    c.create_ms(
        "helm",
        json!({"secretId": "team/db", "data": {"allKeys": true},
               "target": {"name": "sh.helm.release.v1.app.v1", "creationPolicy": "Orphan"}}),
    )
    .await;
    c.wait_ready("helm", "False", "InvalidSpec").await;
    assert!(c.secret_data("sh.helm.release.v1.app.v1").await.is_none());
}

/// Finding 9: a denied tenant learns which policies concern its own namespace, never the names
/// of other tenants' policies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_names_no_other_tenants_policies() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let _op = Operator::start_enforcing(&c, &moto).await;
    let ns = c.namespace.clone();
    moto.create_json("other/db", &creds("one")).await;
    let others = c
        .apply_policy(
            "someone-elses",
            json!({"rules": [{"namespaces": ["payments-prod"], "secrets": ["payments/*"]}]}),
        )
        .await;
    let mine = c
        .apply_policy(
            "mine",
            json!({"rules": [{"namespaces": [ns], "secrets": ["team/*"]}]}),
        )
        .await;
    c.create_ms(
        "probe",
        json!({"secretId": "other/db", "data": {"allKeys": true}}),
    )
    .await;
    let ms = c.wait_ready("probe", "False", "PolicyDenied").await;
    let msg = &ms.status.unwrap().conditions[0].message;
    assert!(msg.contains(&mine), "{msg}");
    assert!(!msg.contains(&others), "{msg}");
}

/// Finding 6: once a policy stops granting a secret, AWS is asked nothing more about it: no
/// sweep-driven batch read, no DescribeSecret or GetSecretValue, even when it rotates. The
/// Secret synced before is kept as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_no_longer_granted_is_no_longer_read_by_sweeps_or_batches() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let _op = Operator::start_tuned(
        &c,
        &moto,
        |s| s.access_policy = managed_secrets::controller::AccessPolicy::Enforce,
        managed_secrets::source::cache::Limits {
            sweep_threshold: 3,
            ..Default::default()
        },
    )
    .await;
    let ns = c.namespace.clone();
    c.apply_policy(
        "fleet",
        json!({"rules": [{"namespaces": [ns], "secrets": ["team/*"]}]}),
    )
    .await;
    for i in 0..5 {
        moto.create_json(&format!("team/s{i}"), &creds("one")).await;
        c.create_ms(
            &format!("ms{i}"),
            json!({"secretId": format!("team/s{i}"), "refreshInterval": "2s", "data": {"allKeys": true}}),
        )
        .await;
    }
    for i in 0..5 {
        c.wait_secret_value(&format!("ms{i}"), "password", "one")
            .await;
    }
    // team/s0 is granted no more.
    c.apply_policy(
        "fleet",
        json!({"rules": [{"namespaces": [ns], "secrets": ["team/s1", "team/s2", "team/s3", "team/s4"]}]}),
    )
    .await;
    c.wait_ready("ms0", "False", "PolicyDenied").await;
    moto.rotate_like_lambda("team/s0", &creds("two")).await;
    // (after the rotation's own DescribeSecret)
    let before = moto.reads_of("team/s0").await;
    moto.rotate_like_lambda("team/s1", &creds("two")).await;
    // A sweep saw team/s1 move and read it: sweeps run, and would have seen team/s0 too.
    c.wait_secret_value("ms1", "password", "two").await;
    let lists = moto.calls("ListSecrets").await;
    support::wait_for("two more sweeps", support::DEADLINE, || async {
        (moto.calls("ListSecrets").await >= lists + 2).then_some(())
    })
    .await;
    assert_eq!(
        moto.reads_of("team/s0").await,
        before,
        "AWS is not asked about a denied secret"
    );
    assert_eq!(c.secret_data("ms0").await.unwrap()["password"], "one");
}

/// Finding 5: who may read ManagedSecrets and Events (but not Secrets) does not learn the field
/// names of an AWS value synced with allKeys (some secrets use a credential as a key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_keys_names_reach_neither_status_nor_events() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let _op = Operator::start(&c, &moto).await;
    let key = "ghp_CredentialUsedAsAKey";
    moto.create_json("team/keys", &json!({ key: "1", "user": "app" }))
        .await;
    c.create_ms(
        "keys",
        json!({"secretId": "team/keys", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("keys", key, "1").await;
    let ms = c.wait_ready("keys", "True", "Synced").await;
    let status = serde_json::to_string(&ms.status).unwrap();
    assert!(!status.contains(key), "{status}");
    assert!(!status.contains("\"user\""), "{status}");
    assert_eq!(ms.status.unwrap().synced_keys.len(), 2);
    // The operator still notices an edit of the Secret and repairs it; the repair's Event (a
    // first sync has none) names no key either.
    c.secrets()
        .patch(
            "keys",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"stringData": {key: "tampered"}})),
        )
        .await
        .unwrap();
    c.wait_secret_value("keys", key, "1").await;
    let events = wait_for("the repair's Synced Event", DEADLINE, || async {
        let events = c.events_for("keys").await;
        events.iter().any(|(r, _)| r == "Synced").then_some(events)
    })
    .await;
    assert!(
        events.iter().all(|(_, note)| !note.contains(key)),
        "{events:?}"
    );
}

/// Finding 3 (a tenant's share of the API budget): a ManagedSecret that keeps failing the same
/// way costs no Kubernetes request after the first (no status write, no Event), and its retries
/// back off from the refresh interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_that_repeats_unchanged_costs_no_request() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let op = Operator::start_enforcing(&c, &moto).await;
    moto.create_json("team/db", &creds("one")).await;
    c.create_ms(
        "denied",
        json!({"secretId": "team/db", "refreshInterval": "1s", "data": {"allKeys": true}}),
    )
    .await;
    let ms = c.wait_ready("denied", "False", "PolicyDenied").await;
    let status_patches = c.count("patch", "managedsecrets/status").await;
    let event_writes = (
        c.count("create", "events").await,
        c.count("patch", "events").await,
    );
    op.wait_failures("PolicyDenied", 2).await;
    assert_eq!(
        c.managed()
            .get("denied")
            .await
            .unwrap()
            .metadata
            .resource_version,
        ms.metadata.resource_version,
        "no status write for the same failure"
    );
    assert_eq!(
        c.count("patch", "managedsecrets/status").await,
        status_patches
    );
    assert_eq!(
        (
            c.count("create", "events").await,
            c.count("patch", "events").await
        ),
        event_writes,
        "no Event for the same failure"
    );
    let counts = c.event_counts("denied").await;
    assert_eq!(counts, vec![("PolicyDenied".to_string(), 1)]);
}

/// Finding 3, found by the noisy-neighbour bench: a ManagedSecret whose AWS secret is missing
/// read its (absent) target Secret from the API on every attempt, 1,000 of them 14 requests a
/// second at rest. The target is read only once AWS has answered (before a write); a failing
/// attempt reads nothing from the Kubernetes API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_managed_secret_reads_nothing_from_the_kubernetes_api() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let op = Operator::start(&c, &moto).await;
    c.create_ms(
        "missing",
        json!({"secretId": "team/missing", "refreshInterval": "1s", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_ready("missing", "False", "SecretNotFound").await;
    let reads = c.count("get", "secrets").await;
    op.wait_failures("SecretNotFound", 2).await;
    assert_eq!(c.count("get", "secrets").await, reads, "no GET per attempt");
    // Once the secret exists, the first sync reads the target (absent) and creates it.
    moto.create_json("team/missing", &creds("now")).await;
    c.wait_secret_value("missing", "password", "now").await;
}

fn claimed_by(ms: &managed_secrets::crd::ManagedSecret) -> Option<String> {
    ms.status.as_ref().and_then(|s| s.claimed_by.clone())
}

/// Finding 11: two installations watching the same namespace (a second chart release during a
/// migration) whose AWS endpoints hold different values under the same name. The second finds the
/// object claimed by the first, whose Lease is renewed: it leaves it alone (no Secret write, no
/// AWS read, the first's status untouched) and says so in the Contested condition and an Event
/// naming the first. When the first stops (its Lease released, and free for twice its
/// duration), the second takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_installation_leaves_claimed_objects_alone_and_takes_over_when_the_first_is_gone()
{
    let c = Cluster::start().await;
    let (first_aws, second_aws) = (Moto::start().await, Moto::start().await);
    first_aws.create_json("team/db", &creds("first")).await;
    second_aws.create_json("team/db", &creds("second")).await;
    let mut first = Operator::start(&c, &first_aws).await;
    c.create_ms(
        "db",
        json!({"secretId": "team/db", "refreshInterval": "2s", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("db", "password", "first").await;
    let ms = c.wait_ready("db", "True", "Synced").await;
    let first_name = format!("{}/{}", c.operator_namespace, support::rbac::LEASE);
    assert_eq!(claimed_by(&ms).as_deref(), Some(first_name.as_str()));

    let other = c.another_installation().await;
    let second_name = format!("{}/{}", other.namespace, support::rbac::LEASE);
    let mut second = Operator::start_as(&c, &other, &second_aws).await;
    let ms = c
        .wait_condition("db", "Contested", "True", "ClaimedByAnotherInstallation")
        .await;
    let contested = ms
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Contested")
        .unwrap()
        .message
        .clone();
    assert!(
        contested.starts_with(&format!(
            "installation {first_name} syncs this ManagedSecret (its Lease {first_name} is renewed); installation {second_name} also watches it and leaves it alone"
        )),
        "{contested}"
    );
    let rv = c.secret_version("db").await;
    // Several refreshes of both: the Secret keeps the first's value, untouched, and the first's
    // status (Ready, its claim) stays beside the second's note.
    // Three refreshes of the first (2 s each); the second looks as often (its recheck is the
    // refresh interval).
    let looks = || first.metrics.reconciles.completed.get();
    let before = looks();
    support::wait_for(
        "three refreshes of the first installation",
        std::time::Duration::from_secs(60),
        || async { (looks() >= before + 3).then_some(()) },
    )
    .await;
    let s = c.secrets().get("db").await.unwrap();
    assert_eq!(s.metadata.resource_version, rv, "nobody rewrote the Secret");
    assert_eq!(c.secret_data("db").await.unwrap()["password"], "first");
    let ms = c.managed().get("db").await.unwrap();
    assert_eq!(claimed_by(&ms).as_deref(), Some(first_name.as_str()));
    let st = ms.status.unwrap();
    assert!(st
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"));
    assert!(st.conditions.iter().any(|c| c.type_ == "Contested"));
    assert_eq!(
        second_aws.reads_of("team/db").await,
        0,
        "the second read nothing"
    );
    let events = c.events_for("db").await;
    let notes: Vec<_> = events
        .iter()
        .filter(|(r, _)| r == "ClaimedByAnotherInstallation")
        .collect();
    assert_eq!(notes.len(), 1, "one Event, not one per look: {events:?}");
    assert_eq!(notes[0].1, contested);
    assert_eq!(second.metrics.claims.contested.get(), 1);

    // The first goes (uninstalled: its Lease released). A released Lease may be a replica
    // restarting, so the second waits until it has stayed free for twice its duration (15 s),
    // then takes over.
    first.stop().await;
    support::wait_for(
        "the second installation to take over",
        std::time::Duration::from_secs(90),
        || async {
            let d = c.secret_data("db").await?;
            (d.get("password").map(String::as_str) == Some("second")).then_some(())
        },
    )
    .await;
    c.wait_no_condition("db", "Contested").await;
    // The Secret is written before the status that claims the object: wait for that too.
    support::wait_for(
        "the second installation's claim",
        support::DEADLINE,
        || async {
            let ms = c.managed().get("db").await.ok()?;
            (claimed_by(&ms).as_deref() == Some(second_name.as_str())).then_some(())
        },
    )
    .await;
    assert!(c
        .events_for("db")
        .await
        .iter()
        .any(|(r, n)| r == "TakenOver" && n.contains(&first_name)));
    assert_eq!(second.metrics.claims.contested.get(), 0);
    assert_eq!(second.metrics.claims.taken_over.get(), 1);
    second.stop().await;
}
