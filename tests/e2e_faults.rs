//! End to end: faults, with nothing lost. AWS unreachable or throttling, the Kubernetes API
//! answering 409/429/500/503 and dropping every watch, the operator killed mid-rotation, and
//! hostile ManagedSecrets next to healthy ones. Faults the emulator injects are skipped on a real
//! cluster (the assertions that follow hold either way).

mod support;
use serde_json::{json, Value};
use std::time::Duration;
use support::aws::Moto;
use support::workloads::*;
use support::{wait_for, Cluster, Operator};

async fn setup() -> (Cluster, Moto, Operator) {
    let cluster = Cluster::start().await;
    let moto = Moto::start().await;
    let op = Operator::start(&cluster, &moto).await;
    (cluster, moto, op)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn secret_rv(c: &Cluster, name: &str) -> Option<String> {
    c.secrets()
        .get(name)
        .await
        .unwrap()
        .metadata
        .resource_version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_unreachable_keeps_the_secret_stale_appears_then_clears() {
    let (c, moto, op) = setup().await;
    let v1 = moto
        .create_json("prod/db/credentials", &creds("before"))
        .await;
    c.create_ms(
        "db",
        json!({"secretId": "prod/db/credentials", "refreshInterval": "2s", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("db", "password", "before").await;
    c.wait_ready("db", "True", "Synced").await;
    let rv = secret_rv(&c, "db").await;

    moto.pause().await;
    let ms = c
        .wait_condition("db", "Stale", "True", "AwsUnavailable")
        .await;
    let st = ms.status.unwrap();
    let stale = st.conditions.iter().find(|c| c.type_ == "Stale").unwrap();
    assert!(
        stale
            .message
            .contains(&format!("the Secret keeps AWS version {v1}")),
        "{}",
        stale.message
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "the Secret is still good: Ready stays True"
    );
    // Another attempt without AWS (it reaches no AWS endpoint and, being the same failure,
    // writes nothing: the operator's failure counter shows it).
    op.wait_failures("AwsUnavailable", 1).await;
    let m = op.metrics.render();
    assert_eq!(
        metric(&m, "managed_secrets_stale_objects"),
        Some(1.0),
        "{m}"
    );
    assert!(metric(&m, "managed_secrets_oldest_value_age_seconds").unwrap() >= 2.0);
    assert_eq!(secret_rv(&c, "db").await, rv, "the Secret was not touched");
    assert_eq!(c.secret_data("db").await.unwrap()["password"], "before");

    moto.resume().await;
    moto.rotate_like_lambda("prod/db/credentials", &creds("after"))
        .await;
    wait_for("Stale to clear", Duration::from_secs(60), || async {
        let ms = c.managed().get("db").await.ok()?;
        let st = ms.status?;
        (!st.conditions.iter().any(|c| c.type_ == "Stale")).then_some(())
    })
    .await;
    c.wait_secret_value("db", "password", "after").await;
    let m = op.metrics.render();
    assert_eq!(metric(&m, "managed_secrets_stale_objects"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_backs_off_without_a_hot_loop_and_recovers() {
    let (c, moto, op) = setup().await;
    moto.create_json("prod/db/credentials", &creds("one")).await;
    c.create_ms(
        "db",
        json!({"secretId": "prod/db/credentials", "refreshInterval": "1s", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("db", "password", "one").await;
    c.wait_ready("db", "True", "Synced").await;
    let seen = moto.requests().await.len();
    let describes = moto.calls("DescribeSecret").await;
    // Six throttled answers: the SDK retries each call, the operator backs off between attempts.
    moto.fault(
        "DescribeSecret",
        "prod/db/credentials",
        "ThrottlingException",
        6,
    )
    .await;
    op.wait_failures("Throttled", 2).await;
    // The calls' own times: the SDK's retries of one attempt come within seconds; between the
    // operator's attempts it waits 5s, then 10s (+ jitter), not the 1s refresh.
    let times: Vec<f64> = moto.requests().await[seen..]
        .iter()
        .filter(|r| r["action"] == "DescribeSecret" && r["secret_id"] == "prod/db/credentials")
        .filter_map(|r| r["time"].as_f64())
        .collect();
    let longest = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0_f64, f64::max);
    assert!(
        longest >= 4.5,
        "the operator waits between attempts, not the 1s refresh: calls at {times:?}"
    );
    c.wait_condition("db", "Stale", "True", "Throttled").await;
    // Repeated failures are one Event, never an Event each.
    let events: Vec<i32> = c
        .event_counts("db")
        .await
        .into_iter()
        .filter(|(r, _)| r == "Throttled")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(events.len(), 1, "one Throttled Event: {events:?}");
    wait_for(
        "recovery after the throttling",
        Duration::from_secs(60),
        || async {
            let st = c.managed().get("db").await.ok()?.status?;
            (st.failures == 0 && !st.conditions.iter().any(|c| c.type_ == "Stale")).then_some(())
        },
    )
    .await;
    let calls = moto.calls("DescribeSecret").await - describes;
    assert!(
        calls <= 12,
        "{calls} DescribeSecret calls: the six throttled ones and a few good ones, no hot loop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_errors_and_dropped_watches_lose_nothing_and_roll_out_once() {
    let (c, moto, op) = setup().await;
    let v1 = moto.create_json("prod/db/credentials", &creds("one")).await;
    deployment_using(&c, "api", "db").await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1s", "data": {"allKeys": true},
                             "rollout": {"targets": [{"kind": "Deployment", "name": "api"}], "debounce": "1s"}})).await;
    c.wait_secret_value("db", "password", "one").await;
    wait_rollouts_recorded(&c, "db", &v1, 1).await;
    // Conflicts on every write the operator makes, a burst of server errors, throttling, then
    // every watch dropped and the history expired (re-watches answer 410 Gone).
    for (verb, res, code, n) in [
        ("patch", "secrets", 409, 2),
        ("patch", "managedsecrets/status", 409, 2),
        ("get", "secrets", 500, 3),
        ("list", "deployments", 503, 2),
        ("patch", "secrets", 429, 1),
        ("patch", "deployments", 500, 1),
    ] {
        c.kube_fault(verb, res, code, n).await;
    }
    c.close_watches().await;
    c.expire_history().await;
    let v2 = moto
        .rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    c.wait_secret_value("db", "password", "two").await;
    wait_rollouts_recorded(&c, "db", &v2, 1).await;
    assert_eq!(revision(&c, "api").await.as_deref(), Some("2"));
    c.close_watches().await;
    c.wait_attempts(&moto, "db", 3).await;
    assert_eq!(
        revision(&c, "api").await.as_deref(),
        Some("2"),
        "exactly one rollout"
    );
    assert_eq!(state(&c, "Deployment", "api").await, (2, Some(v2)));
    assert!(op.running() && op.health.live().ok, "no crash");
    c.wait_ready("db", "True", "Synced").await;
    if c.is_emulator() {
        assert!(
            c.count("patch", "secrets").await.unwrap() >= 4,
            "the refused writes were retried"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_secret_write_and_before_the_rollout_the_rollout_happens_once() {
    let (c, moto, mut op) = setup().await;
    let v1 = moto.create_json("prod/db/credentials", &creds("one")).await;
    deployment_using(&c, "api", "db").await;
    // A long debounce: the rollout waits after the Secret write, and the operator dies in between.
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1s", "data": {"allKeys": true},
                             "rollout": {"targets": [{"kind": "Deployment", "name": "api"}], "debounce": "4s"}})).await;
    wait_rollouts_recorded(&c, "db", &v1, 1).await;
    let v2 = moto
        .rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    c.wait_secret_value("db", "password", "two").await;
    op.kill();
    assert_eq!(
        revision(&c, "api").await.as_deref(),
        Some("1"),
        "not rolled yet"
    );
    let mut op = Operator::start(&c, &moto).await;
    wait_rollouts_recorded(&c, "db", &v2, 1).await;
    c.wait_attempts(&moto, "db", 2).await;
    assert_eq!(revision(&c, "api").await.as_deref(), Some("2"), "once");

    // Killed while the rollout patch itself is in flight (the emulator holds it for 3s).
    let v3 = if c.is_emulator() {
        c.patch_ms("db", json!({"spec": {"rollout": {"debounce": "0s"}}}))
            .await;
        c.wait_attempts(&moto, "db", 1).await;
        c.kube_latency("patch", "deployments", 3000, 1).await;
        let v3 = moto
            .rotate_like_lambda("prod/db/credentials", &creds("three"))
            .await;
        c.wait_secret_value("db", "password", "three").await;
        op.kill();
        op = Operator::start(&c, &moto).await;
        wait_rollouts_recorded(&c, "db", &v3, 1).await;
        // Outlive the held patch, then look again.
        tokio::time::sleep(Duration::from_secs(4)).await;
        c.wait_attempts(&moto, "db", 2).await;
        assert_eq!(revision(&c, "api").await.as_deref(), Some("3"), "once");
        Some(v3)
    } else {
        None
    };
    assert!(op.running());
    let want = v3.unwrap_or(v2);
    assert_eq!(state(&c, "Deployment", "api").await.1, Some(want));
}

/// The generated CRD without its bounds: what an operator upgraded before its CRD meets.
fn unbounded(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in [
                "pattern",
                "maxLength",
                "minLength",
                "maxProperties",
                "maxItems",
            ] {
                m.remove(k);
            }
            for x in m.values_mut() {
                unbounded(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(unbounded),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_object_next_to_twenty_healthy_ones_stops_nothing() {
    let (c, moto, op) = setup().await;
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/managedsecrets.io_managedsecrets.yaml"
    ))
    .unwrap();
    let mut crd: Value = serde_yaml::from_str(&yaml).unwrap();
    unbounded(&mut crd);
    c.apply_crd(&crd).await;
    for i in 0..5 {
        moto.create_json(&format!("prod/app/s{i}"), &creds("one"))
            .await;
    }
    moto.create_json(
        "prod/hostile/big",
        &json!({"x": "y".repeat(40_000), "l": (0..3000).collect::<Vec<_>>(), "username": "u"}),
    )
    .await;
    let doubling = format!(
        "{{% set a = x %}}{}{{{{ a }}}}",
        "{% set a = a ~ a %}".repeat(40)
    );
    let many_templates: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("k{i}"), json!("{{ username }}")))
        .collect();
    let many_labels: serde_json::Map<String, Value> =
        (0..40).map(|i| (format!("l{i}"), json!("v"))).collect();
    let big = "prod/hostile/big";
    let hostile = [
        (
            "huge-interval",
            json!({"secretId": big, "refreshInterval": "4294967295h", "data": {"allKeys": true}}),
            "InvalidSpec",
        ),
        (
            "far-interval",
            json!({"secretId": big, "refreshInterval": "99999999h", "data": {"allKeys": true}}),
            "InvalidSpec",
        ),
        (
            "huge-debounce",
            json!({"secretId": big, "data": {"keys": [{"from": "username"}]}, "rollout": {"auto": true, "debounce": "4294967295h"}}),
            "InvalidSpec",
        ),
        (
            "empty-target",
            json!({"secretId": big, "data": {"keys": [{"from": "username"}]}, "target": {"name": ""}}),
            "InvalidSpec",
        ),
        (
            "loop-bomb",
            json!({"secretId": big, "data": {"keys": [{"from": "username"}]}, "templates": {"t": "{% for a in l %}{% for b in l %}{{ b }}{% endfor %}{% endfor %}"}}),
            "InvalidSpec",
        ),
        (
            "doubling",
            json!({"secretId": big, "data": {"keys": [{"from": "username"}]}, "templates": {"t": doubling}}),
            "InvalidSpec",
        ),
        (
            "placeholders",
            json!({"secretId": big, "data": {"keys": [{"from": "username"}]}, "templates": {"t": "{{ x }}".repeat(2_000)}}),
            "ValueTooLarge",
        ),
        (
            "include",
            json!({"secretId": big, "data": {"keys": [{"from": "username"}]}, "templates": {"t": "{% include 'other' %}"}}),
            "InvalidSpec",
        ),
        (
            "duplicates",
            json!({"secretId": big, "data": {"keys": [{"from": "username", "to": "u"}, {"from": "x", "to": "u"}]}}),
            "InvalidSpec",
        ),
        (
            "bad-raw-key",
            json!({"secretId": big, "data": {"rawKey": "bad key"}}),
            "InvalidKeyName",
        ),
        (
            "many-templates",
            json!({"secretId": big, "data": {"keys": [{"from": "username"}]}, "templates": many_templates}),
            "InvalidSpec",
        ),
        (
            "many-labels",
            json!({"secretId": big, "data": {"keys": [{"from": "username"}]}, "target": {"labels": many_labels}}),
            "InvalidSpec",
        ),
    ];
    for (name, spec, _) in &hostile {
        c.create_ms(name, spec.clone()).await;
    }
    for i in 0..20 {
        c.create_ms(
            &format!("ok-{i}"),
            json!({"secretId": format!("prod/app/s{}", i % 5), "refreshInterval": "1s", "data": {"allKeys": true}}),
        )
        .await;
    }
    for i in 0..20 {
        c.wait_secret_value(&format!("ok-{i}"), "password", "one")
            .await;
    }
    for (name, _, reason) in &hostile {
        let ms = c.wait_ready(name, "False", reason).await;
        let msg = &ms.status.unwrap().conditions[0].message;
        assert!(!msg.contains(&"y".repeat(100)), "{name}: {msg}");
    }
    // A spec that cannot be acted on waits for a change (or the default refresh): no tight loop.
    let st = c
        .managed()
        .get("far-interval")
        .await
        .unwrap()
        .status
        .unwrap();
    let at =
        |t: &Option<String>| chrono::DateTime::parse_from_rfc3339(t.as_deref().unwrap()).unwrap();
    assert!(
        at(&st.next_refresh_time) - at(&st.last_attempt_time) >= chrono::Duration::minutes(5),
        "{st:?}"
    );
    for i in 0..5 {
        moto.rotate_like_lambda(&format!("prod/app/s{i}"), &creds("two"))
            .await;
    }
    for i in 0..20 {
        c.wait_secret_value(&format!("ok-{i}"), "password", "two")
            .await;
    }
    assert!(
        op.running() && op.health.live().ok,
        "the operator never stopped"
    );
    // A spec that can no longer be acted on never blocks its deletion.
    c.managed()
        .delete("empty-target", &Default::default())
        .await
        .unwrap();
    c.wait_ms_gone("empty-target").await;
    c.install_crd().await;
}
