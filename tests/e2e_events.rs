//! Event-driven refresh: Secrets Manager events, as an EventBridge rule delivers them to SQS (moto
//! serves the queue), reach the Secret and its workloads at once while refreshInterval is an hour;
//! events are hints (duplicates, junk and other secrets' events are dropped without harm), a
//! failing queue leaves polling in charge, and a message is only deleted once handled.

mod support;

use managed_secrets::controller::notifications::NotificationSettings;
use managed_secrets::metrics::{ReasonLabels, TypeLabels};
use managed_secrets::notifications::queue::SqsQueue;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::aws::Moto;
use support::workloads::{deployment_using, revision, wait_rollouts_recorded};
use support::{wait_for, Cluster, Operator, DEADLINE};

/// An EventBridge event for a CloudTrail-recorded Secrets Manager call.
fn event(name: &str, secret_id: &str, arn: &str) -> String {
    json!({
        "version": "0", "id": format!("ev-{}", rand::random::<u32>()),
        "detail-type": "AWS API Call via CloudTrail", "source": "aws.secretsmanager",
        "account": "123456789012", "time": "2026-11-29T10:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": name, "awsRegion": "us-east-1",
                   "requestParameters": {"secretId": secret_id, "versionStage": "AWSCURRENT"},
                   "responseElements": {"arn": arn}}
    })
    .to_string()
}

async fn operator(c: &Cluster, moto: &Moto, queue: &str, visibility: Duration) -> Operator {
    let q = SqsQueue::new(&moto.sdk_config(), queue, Duration::from_secs(1));
    let es = NotificationSettings {
        queue: Arc::new(q),
        wait: Duration::from_secs(1),
        visibility,
        backstop: Duration::from_secs(3600),
    };
    Operator::start_with(c, moto, move |s| s.notifications = Some(es)).await
}

fn dropped(op: &Operator, reason: &str) -> u64 {
    op.metrics
        .events
        .dropped
        .get_or_create(&ReasonLabels {
            reason: reason.into(),
        })
        .get()
}

/// A sample's value in the operator's /metrics text.
fn sample(op: &Operator, name: &str) -> f64 {
    op.metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A Lambda-style rotation of prod/db/credentials to password `password`, then the event that
/// EventBridge sends for its last step; the new version.
async fn rotate_and_announce(moto: &Moto, queue: &str, arn: &str, password: &str) -> String {
    let v = moto
        .rotate_like_lambda("prod/db/credentials", &creds(password))
        .await;
    moto.send_message(
        queue,
        &event("UpdateSecretVersionStage", "prod/db/credentials", arn),
    )
    .await;
    v
}

async fn drained(moto: &Moto, queue: &str) {
    wait_for("every message handled and deleted", DEADLINE, || async {
        (moto.queue_depth(queue).await == 0).then_some(())
    })
    .await;
}

/// The cluster, AWS and the event queue of a test.
async fn ground() -> (Cluster, Moto, String) {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let queue = moto.create_queue("events").await;
    (c, moto, queue)
}

/// prod/db/credentials (password `one`) and a Deployment `api` that reads Secret `db`; the
/// version and the secret's ARN.
async fn rolling_db(c: &Cluster, moto: &Moto) -> (String, String) {
    let v1 = moto.create_json("prod/db/credentials", &creds("one")).await;
    let arn = moto.arn_of("prod/db/credentials").await;
    deployment_using(c, "api", "db").await;
    (v1, arn)
}

/// ManagedSecret `db`: refreshed hourly (events carry rotations), rolling out `api`.
async fn create_rolling_ms(c: &Cluster) {
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true},
                             "rollout": {"targets": [{"kind": "Deployment", "name": "api"}], "debounce": "1s"}})).await;
}

fn creds(p: &str) -> Value {
    json!({"username": "app", "password": p})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_event_syncs_and_rolls_out_at_once_and_a_duplicate_does_nothing() {
    let (c, moto, queue) = ground().await;
    let (v1, arn) = rolling_db(&c, &moto).await;
    let op = operator(&c, &moto, &queue, Duration::from_secs(30)).await;
    create_rolling_ms(&c).await;
    c.wait_secret_value("db", "password", "one").await;
    wait_rollouts_recorded(&c, "db", &v1, 1).await;

    // The Lambda's finishSecret step, then its event: the Secret follows long before an hour.
    let v2 = rotate_and_announce(&moto, &queue, &arn, "two").await;
    c.wait_secret_value("db", "password", "two").await;
    wait_rollouts_recorded(&c, "db", &v2, 1).await;
    assert_eq!(revision(&c, "api").await.as_deref(), Some("2"));
    drained(&moto, &queue).await;
    assert_eq!(
        op.metrics
            .events
            .received
            .get_or_create(&TypeLabels {
                r#type: "UpdateSecretVersionStage".into()
            })
            .get(),
        1
    );
    assert_eq!(
        sample(&op, "managed_secrets_event_sync_seconds_count"),
        1.0,
        "the event's latency was measured"
    );

    // The same event again (EventBridge delivers at least once): nothing new, no second rollout.
    moto.send_message(
        &queue,
        &event("UpdateSecretVersionStage", "prod/db/credentials", &arn),
    )
    .await;
    drained(&moto, &queue).await;
    assert_eq!(dropped(&op, "duplicate"), 1);
    assert_eq!(
        revision(&c, "api").await.as_deref(),
        Some("2"),
        "no second rollout"
    );
    assert_eq!(op.metrics.events.source_up.get(), 1);
    assert!(op
        .health
        .ready()
        .text
        .contains("; events: receiving from http://"));
}

/// Secrets Manager's own event, as EventBridge delivers it: `label` moved to `version`.
fn label_updated(name: &str, arn: &str, label: &str, version: &str) -> String {
    json!({
        "version": "0", "id": format!("ev-{}", rand::random::<u32>()),
        "detail-type": "Secret Label Updated", "source": "aws.secretsmanager",
        "account": "123456789012", "time": "2026-12-01T10:00:00Z", "region": "us-east-1",
        "resources": [arn],
        "detail": {"name": name, "labelUpdated": label, "versionId": version}
    })
    .to_string()
}

fn received(op: &Operator, name: &str) -> u64 {
    op.metrics
        .events
        .received
        .get_or_create(&TypeLabels {
            r#type: name.into(),
        })
        .get()
}

/// The event a new user gets with no CloudTrail trail: Secrets Manager's `Secret Label Updated`,
/// sent by the test ground as EventBridge sends it when the rotation's finishSecret moves
/// AWSCURRENT. With refreshInterval 1h the Secret follows at once and the workload rolls out once;
/// the same event again, and one for AWSPREVIOUS, change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_label_event_syncs_and_rolls_out_once_with_an_hourly_refresh() {
    let (c, moto, queue) = ground().await;
    moto.route_label_events_to(&queue, false).await;
    let (v1, arn) = rolling_db(&c, &moto).await;
    let op = operator(&c, &moto, &queue, Duration::from_secs(30)).await;
    create_rolling_ms(&c).await;
    c.wait_secret_value("db", "password", "one").await;
    wait_rollouts_recorded(&c, "db", &v1, 1).await;

    // A Lambda-style rotation; AWS announces the AWSCURRENT move by itself.
    let v2 = moto
        .rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    c.wait_secret_value("db", "password", "two").await;
    wait_rollouts_recorded(&c, "db", &v2, 1).await;
    assert_eq!(revision(&c, "api").await.as_deref(), Some("2"));
    drained(&moto, &queue).await;
    assert_eq!(received(&op, "Secret Label Updated"), 1);
    assert_eq!(sample(&op, "managed_secrets_event_sync_seconds_count"), 1.0);

    // Delivered twice (EventBridge delivers at least once), and a label nobody reads.
    let calls = moto.calls("DescribeSecret").await;
    moto.send_message(
        &queue,
        &label_updated("prod/db/credentials", &arn, "AWSCURRENT", &v2),
    )
    .await;
    moto.send_message(
        &queue,
        &label_updated("prod/db/credentials", &arn, "AWSPREVIOUS", &v1),
    )
    .await;
    drained(&moto, &queue).await;
    assert_eq!(dropped(&op, "duplicate"), 1);
    assert_eq!(dropped(&op, "irrelevant"), 1);
    assert_eq!(
        moto.calls("DescribeSecret").await,
        calls + 1,
        "one confirmation for the duplicate, none for AWSPREVIOUS"
    );
    assert_eq!(
        revision(&c, "api").await.as_deref(),
        Some("2"),
        "no second rollout"
    );
}

/// The same through SNS (a rule that targets a topic the queue subscribes to); a label event for
/// a secret no ManagedSecret reads, and one for a custom label nobody reads, cost no AWS call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sns_wrapped_label_event_syncs_and_unmanaged_ones_cost_nothing() {
    let (c, moto, queue) = ground().await;
    moto.route_label_events_to(&queue, true).await;
    moto.create_json("prod/db/credentials", &creds("one")).await;
    moto.create_json("prod/other/secret", &creds("x")).await;
    let arn = moto.arn_of("prod/db/credentials").await;
    let op = operator(&c, &moto, &queue, Duration::from_secs(30)).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true}}))
        .await;
    c.wait_secret_value("db", "password", "one").await;
    moto.rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    c.wait_secret_value("db", "password", "two").await;
    drained(&moto, &queue).await;
    assert_eq!(received(&op, "Secret Label Updated"), 1);

    let calls = moto.calls("DescribeSecret").await;
    // Someone updates another secret (PutSecretValue moves its AWSCURRENT).
    moto.put_json("prod/other/secret", &creds("y")).await;
    moto.send_message(
        &queue,
        &label_updated("prod/db/credentials", &arn, "blue", "v-blue"),
    )
    .await;
    drained(&moto, &queue).await;
    assert_eq!(dropped(&op, "unmanaged"), 2);
    assert_eq!(
        moto.calls("DescribeSecret").await,
        calls,
        "no AWS call for an event nobody needs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_reads_and_other_secrets_events_are_dropped_without_harm() {
    let (c, moto, queue) = ground().await;
    moto.create_json("prod/db/credentials", &creds("one")).await;
    moto.create_json("prod/other/secret", &creds("x")).await;
    let other_arn = moto.arn_of("prod/other/secret").await;
    let op = operator(&c, &moto, &queue, Duration::from_secs(30)).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true}}))
        .await;
    c.wait_secret_value("db", "password", "one").await;
    let calls = moto.calls("DescribeSecret").await;
    for body in [
        "not json at all".to_string(),
        json!({"source": "aws.s3", "detail": {}}).to_string(),
        event("GetSecretValue", "prod/db/credentials", ""),
        event("PutSecretValue", "prod/other/secret", &other_arn),
    ] {
        moto.send_message(&queue, &body).await;
    }
    drained(&moto, &queue).await;
    assert_eq!(dropped(&op, "malformed"), 2);
    assert_eq!(dropped(&op, "irrelevant"), 1);
    assert_eq!(dropped(&op, "unmanaged"), 1);
    assert_eq!(
        moto.calls("DescribeSecret").await,
        calls,
        "no AWS call for an event nobody needs"
    );
    let ms = c.managed().get("db").await.unwrap();
    assert_eq!(ms.status.unwrap().failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_queue_fails_polling_carries_on_and_the_metrics_say_so() {
    let (c, moto, queue) = ground().await;
    moto.create_json("prod/db/credentials", &creds("one")).await;
    let op = operator(&c, &moto, &queue, Duration::from_secs(30)).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "2s", "data": {"allKeys": true}}))
        .await;
    c.wait_secret_value("db", "password", "one").await;
    wait_for("the event source up", DEADLINE, || async {
        (op.metrics.events.source_up.get() == 1).then_some(())
    })
    .await;
    // The queue goes away: receiving fails, and refreshes fall back to the spec's 2s.
    moto.sqs()
        .delete_queue()
        .queue_url(&queue)
        .send()
        .await
        .unwrap();
    wait_for("the event source reported down", DEADLINE, || async {
        (op.metrics.events.source_up.get() == 0 && op.metrics.events.queue_errors.get() > 0)
            .then_some(())
    })
    .await;
    let ready = op.health.ready();
    assert!(ready.ok, "the operator stays ready: polling carries on");
    assert!(
        ready
            .text
            .contains("; events: degraded (SQS ReceiveMessage"),
        "{}",
        ready.text
    );
    moto.rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    c.wait_secret_value("db", "password", "two").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_before_deleting_the_message_applies_the_rotation_once_after_redelivery()
{
    let (c, moto, queue) = ground().await;
    let (v1, arn) = rolling_db(&c, &moto).await;
    let visibility = Duration::from_secs(3);
    let mut first = operator(&c, &moto, &queue, visibility).await;
    create_rolling_ms(&c).await;
    wait_rollouts_recorded(&c, "db", &v1, 1).await;
    // Secret writes become slow, so the operator is killed after receiving the event and before
    // its sync (and so the message's deletion) completes.
    let (generation_before, _) = support::workloads::state(&c, "Deployment", "api").await;
    let slow = c.kube_latency("patch", "secrets", 3000, 5).await;
    let v2 = rotate_and_announce(&moto, &queue, &arn, "two").await;
    wait_for("the event received", DEADLINE, || async {
        (first
            .metrics
            .events
            .received
            .get_or_create(&TypeLabels {
                r#type: "UpdateSecretVersionStage".into(),
            })
            .get()
            == 1)
            .then_some(())
    })
    .await;
    first.kill();
    if slow {
        assert_eq!(
            moto.queue_depth(&queue).await,
            1,
            "not deleted: it comes back"
        );
    }
    c.clear_faults().await;
    // A new operator (a restarted pod, or the standby) gets the message again and applies it.
    let second = operator(&c, &moto, &queue, visibility).await;
    c.wait_secret_value("db", "password", "two").await;
    wait_rollouts_recorded(&c, "db", &v2, 1).await;
    drained(&moto, &queue).await;
    // Exactly one restart for the rotated version, in terms that hold on a real Deployment
    // controller too: one pod-template change since the rotation, one ReplicaSet with that
    // template, one RolledOut Event (not a revision number, which a real controller may count
    // differently).
    let (generation, annotation) = support::workloads::state(&c, "Deployment", "api").await;
    let events = c.events_for("db").await;
    assert_eq!(annotation.as_deref(), Some(v2.as_str()));
    assert_eq!(
        generation,
        generation_before + 1,
        "one template change (events {events:?})"
    );
    assert_eq!(
        support::workloads::replica_set_versions(&c, "api")
            .await
            .iter()
            .filter(|v| v.as_deref() == Some(v2.as_str()))
            .count(),
        1
    );
    assert_eq!(
        c.event_counts("db")
            .await
            .iter()
            .filter(|(r, _)| r == "RolledOut")
            .map(|(_, n)| n)
            .sum::<i32>(),
        1,
        "one RolledOut Event: {events:?}"
    );
    assert!(
        sample(&second, "managed_secrets_event_sync_seconds_count")
            + dropped(&second, "duplicate") as f64
            >= 1.0
    );
}

/// Red team, finding 7: an event that arrives while the namespace labels are still being listed
/// is not decided against empty labels (where a `DoesNotExist` rule would grant): AWS sees no
/// request for the denied secret, then or after the event comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_before_the_policies_are_listed_waits_and_reads_nothing_denied() {
    let (c, moto, queue) = ground().await;
    moto.create_json("prod/db/credentials", &creds("one")).await;
    let arn = moto.arn_of("prod/db/credentials").await;
    // (The test's own DescribeSecret for the ARN is the last read before the operator's.)
    let before = moto.reads_of("prod/db/credentials").await;
    c.label_namespace(json!({"frozen": "true"})).await;
    c.apply_policy(
        "unfrozen",
        json!({"rules": [{"namespaceSelector": {"matchExpressions": [{"key": "frozen", "operator": "DoesNotExist"}]},
                          "secrets": ["prod/*"]}]}),
    )
    .await;
    create_rolling_ms(&c).await;
    moto.send_message(
        &queue,
        &event("UpdateSecretVersionStage", "prod/db/credentials", &arn),
    )
    .await;
    // The operator's first list of namespaces is slow (emulator only), so the event comes first.
    c.kube_latency_cluster("list", "namespaces", 3000, 1).await;
    let q = SqsQueue::new(&moto.sdk_config(), &queue, Duration::from_secs(1));
    let es = NotificationSettings {
        queue: Arc::new(q),
        wait: Duration::from_secs(1),
        visibility: Duration::from_secs(2),
        backstop: Duration::from_secs(3600),
    };
    let op = Operator::start_with(&c, &moto, move |s| {
        s.notifications = Some(es);
        s.access_policy = managed_secrets::controller::AccessPolicy::Enforce;
    })
    .await;
    wait_for("the event received", DEADLINE, || async {
        (op.metrics
            .events
            .received
            .get_or_create(&TypeLabels {
                r#type: "UpdateSecretVersionStage".into(),
            })
            .get()
            >= 1)
            .then_some(())
    })
    .await;
    c.wait_ready("db", "False", "PolicyDenied").await;
    drained(&moto, &queue).await;
    assert_eq!(
        moto.reads_of("prod/db/credentials").await,
        before,
        "AWS never sees a request for a denied secret"
    );
    assert!(c.secret_data("db").await.is_none());
}
