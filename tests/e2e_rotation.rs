//! Rotation intelligence without events: a rotation scheduled inside the refresh interval reaches
//! the Secret soon after it finishes; `status.rotation` says what AWS's metadata says; and a
//! rotation that is stuck in AWSPENDING or overdue turns `RotationHealthy` False (an Event, the
//! metric) and clears when the rotation completes, while `Ready` stays True.

mod support;

use managed_secrets::metrics::ReasonLabels;
use managed_secrets::rotation::Thresholds;
use serde_json::{json, Value};
use std::time::Duration;
use support::aws::Moto;
use support::{wait_for, Cluster, Operator, DEADLINE};

fn creds(p: &str) -> Value {
    json!({"username": "app", "password": p})
}

fn unhealthy(op: &Operator, reason: &str) -> i64 {
    op.metrics
        .rotation
        .unhealthy
        .get_or_create(&ReasonLabels {
            reason: reason.into(),
        })
        .get()
}

/// With refreshInterval 1h and no event source, a rotation whose window is open (it ends, at
/// NextRotationDate, in a few seconds) is read within `rotation::SETTLE` (30 s) of the window's
/// end at the latest, not an hour later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_due_inside_the_refresh_interval_is_read_soon_after_without_any_event() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    moto.create_json("prod/db/credentials", &creds("one")).await;
    let due = chrono::Utc::now().timestamp() + 3;
    moto.schedule_rotation("prod/db/credentials", due).await;
    let _op = Operator::start(&c, &moto).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "1h", "data": {"allKeys": true}}))
        .await;
    c.wait_secret_value("db", "password", "one").await;
    let ms = c
        .wait_condition("db", "RotationHealthy", "True", "RotationOnSchedule")
        .await;
    let st = ms.status.unwrap();
    let rot = st.rotation.unwrap();
    assert!(rot.enabled);
    assert_eq!(
        rot.next_rotation_time.as_deref(),
        Some(
            managed_secrets::status::ts(chrono::DateTime::from_timestamp(due, 0).unwrap()).as_str()
        )
    );
    // Scheduled shortly after the rotation is due, not an hour on.
    let next = managed_secrets::status::parse_ts(st.next_refresh_time.as_deref()).unwrap();
    assert!(
        next.timestamp() <= due + 31,
        "next refresh {next} is after the rotation's {due} + 30s"
    );

    // AWS rotates on schedule (the rotation function's four steps).
    while chrono::Utc::now().timestamp() < due {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finished = std::time::Instant::now();
    moto.rotate_like_lambda("prod/db/credentials", &creds("two"))
        .await;
    // Within rotation::SETTLE (30s) of the window opening, plus a reconcile.
    wait_for("the rotated value", Duration::from_secs(45), || async {
        let d = c.secret_data("db").await?;
        (d.get("password").map(String::as_str) == Some("two")).then_some(())
    })
    .await;
    assert!(
        finished.elapsed() <= Duration::from_secs(40),
        "read {:?} after the rotation finished",
        finished.elapsed()
    );
    // The next rotation is in 30 days: the interval is the schedule again.
    let st = wait_for("the rotation recorded in status", DEADLINE, || async {
        let st = c.managed().get("db").await.ok()?.status?;
        st.rotation.as_ref()?.last_rotated_time.as_ref()?;
        Some(st)
    })
    .await;
    let next = managed_secrets::status::parse_ts(st.next_refresh_time.as_deref()).unwrap();
    assert!(next > chrono::Utc::now() + chrono::TimeDelta::minutes(50));
}

/// A rotation function whose finishSecret never runs leaves a version in AWSPENDING: after the
/// threshold, RotationHealthy=False (RotationStuck), a Warning Event and the metric; when the
/// rotation completes it clears. An overdue rotation (NextRotationDate long passed) likewise.
/// Ready stays True throughout: the synced value is still valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_and_overdue_rotations_turn_rotation_healthy_false_and_clear_when_it_completes() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    moto.create_json("prod/db/credentials", &creds("one")).await;
    moto.schedule_rotation(
        "prod/db/credentials",
        chrono::Utc::now().timestamp() + 30 * 86400,
    )
    .await;
    let op = Operator::start_with(&c, &moto, |s| {
        s.rotation = Thresholds {
            overdue_after: Duration::from_secs(2),
            stuck_after: Duration::from_secs(2),
        }
    })
    .await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "2s", "data": {"allKeys": true}}))
        .await;
    c.wait_condition("db", "RotationHealthy", "True", "RotationOnSchedule")
        .await;

    // createSecret ran; finishSecret never does.
    let pending = moto.put_pending("prod/db/credentials", &creds("two")).await;
    let ms = c
        .wait_condition("db", "RotationHealthy", "False", "RotationStuck")
        .await;
    let st = ms.status.unwrap();
    assert_eq!(
        st.rotation.unwrap().pending_version_id.as_deref(),
        Some(pending.as_str())
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "the synced value is still valid"
    );
    c.wait_secret_value("db", "password", "one").await;
    assert_eq!(unhealthy(&op, "RotationStuck"), 1);
    wait_for("the RotationStuck Event", DEADLINE, || async {
        c.events_for("db")
            .await
            .iter()
            .any(|(r, n)| r == "RotationStuck" && n.contains(&pending))
            .then_some(())
    })
    .await;

    // The rotation completes: healthy again, the new value synced.
    moto.finish_rotation("prod/db/credentials", &pending).await;
    c.wait_secret_value("db", "password", "two").await;
    c.wait_condition("db", "RotationHealthy", "True", "RotationOnSchedule")
        .await;
    assert_eq!(unhealthy(&op, "RotationStuck"), 0);

    // Overdue: the hour-long window closed a minute ago, and AWSCURRENT has not moved.
    moto.schedule_rotation("prod/db/credentials", chrono::Utc::now().timestamp() - 3660)
        .await;
    c.wait_condition("db", "RotationHealthy", "False", "RotationOverdue")
        .await;
    assert_eq!(unhealthy(&op, "RotationOverdue"), 1);
    moto.rotate_like_lambda("prod/db/credentials", &creds("three"))
        .await;
    c.wait_secret_value("db", "password", "three").await;
    c.wait_condition("db", "RotationHealthy", "True", "RotationOnSchedule")
        .await;
    assert_eq!(unhealthy(&op, "RotationOverdue"), 0);
}
