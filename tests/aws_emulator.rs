//! The AWS test ground: moto through the launcher behaves like real Secrets Manager where the
//! operator depends on it, driven by the real aws-sdk-secretsmanager.

mod support;
use serde_json::json;
use support::aws::Moto;

#[tokio::test]
async fn after_a_lambda_style_rotation_the_default_read_returns_the_new_awscurrent() {
    let moto = Moto::start().await;
    let v1 = moto
        .create_json("prod/db/credentials", &json!({"password": "one"}))
        .await;
    let pending = moto
        .put_pending("prod/db/credentials", &json!({"password": "two"}))
        .await;
    // Before finishSecret, AWSCURRENT is still v1.
    let cur = moto
        .client
        .get_secret_value()
        .secret_id("prod/db/credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(cur.version_id(), Some(v1.as_str()));
    moto.finish_rotation("prod/db/credentials", &pending).await;
    // Real AWS: GetSecretValue without VersionStage returns the new AWSCURRENT (moto alone returns v1).
    let cur = moto
        .client
        .get_secret_value()
        .secret_id("prod/db/credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(cur.version_id(), Some(pending.as_str()));
    assert_eq!(cur.secret_string(), Some(r#"{"password":"two"}"#));
    let batch = moto
        .client
        .batch_get_secret_value()
        .secret_id_list("prod/db/credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(
        batch.secret_values()[0].version_id(),
        Some(pending.as_str())
    );
    // DescribeSecret shows AWSPREVIOUS on the old version.
    assert_eq!(
        moto.version_with_stage("prod/db/credentials", "AWSPREVIOUS")
            .await
            .as_deref(),
        Some(v1.as_str())
    );
    assert_eq!(
        moto.version_with_stage("prod/db/credentials", "AWSCURRENT")
            .await
            .as_deref(),
        Some(pending.as_str())
    );
}

#[tokio::test]
async fn injected_faults_reach_the_sdk_as_real_aws_errors_and_calls_are_counted() {
    use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
    let moto = Moto::start().await;
    moto.create_string("dev/api/key", "k").await;
    // The SDK retries throttling up to 3 attempts (standard mode), as against real AWS.
    moto.fault("GetSecretValue", "dev/api/key", "ThrottlingException", 3)
        .await;
    let err = moto
        .client
        .get_secret_value()
        .secret_id("dev/api/key")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"));
    assert!(
        moto.client
            .get_secret_value()
            .secret_id("dev/api/key")
            .send()
            .await
            .is_ok(),
        "only the next calls fail"
    );
    assert_eq!(moto.calls("GetSecretValue").await, 4);
    let missing = moto
        .client
        .get_secret_value()
        .secret_id("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("ResourceNotFoundException"));
}

#[tokio::test]
async fn list_secrets_and_batch_reads_see_a_lambda_rotation_like_real_aws() {
    let moto = Moto::start().await;
    for i in 0..25 {
        moto.create_json(&format!("prod/app/s{i:02}"), &json!({"password": "one"}))
            .await;
    }
    let pending = moto
        .rotate_like_lambda("prod/app/s07", &json!({"password": "two"}))
        .await;
    // ListSecrets pages (as the operator's sweeps read them) carry each secret's versions.
    let mut listed = vec![];
    let mut token = None;
    loop {
        let page = moto
            .client
            .list_secrets()
            .max_results(10)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        listed.extend(page.secret_list().to_vec());
        token = page.next_token().map(String::from);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(listed.len(), 25, "every page");
    let s07 = listed
        .iter()
        .find(|s| s.name() == Some("prod/app/s07"))
        .unwrap();
    let current: Vec<&String> = s07
        .secret_versions_to_stages()
        .unwrap()
        .iter()
        .filter(|(_, st)| st.iter().any(|s| s == "AWSCURRENT"))
        .map(|(v, _)| v)
        .collect();
    assert_eq!(current, vec![&pending], "AWSCURRENT moved in the listing");
    // BatchGetSecretValue by name and by ARN returns the new AWSCURRENT.
    let arn = s07.arn().unwrap().to_string();
    let got = moto
        .client
        .batch_get_secret_value()
        .secret_id_list(arn)
        .secret_id_list("prod/app/s08")
        .send()
        .await
        .unwrap();
    let by_name = |n: &str| {
        got.secret_values()
            .iter()
            .find(|v| v.name() == Some(n))
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("prod/app/s07").version_id(), Some(pending.as_str()));
    assert_eq!(
        by_name("prod/app/s07").secret_string(),
        Some(r#"{"password":"two"}"#)
    );
    assert_eq!(
        by_name("prod/app/s08").secret_string(),
        Some(r#"{"password":"one"}"#)
    );
}

/// Secrets Manager's own `Secret Label Updated` event reaches an SQS queue as an EventBridge rule
/// delivers it (also SNS-wrapped), for a moved label but never AWSPENDING or AWSPREVIOUS; a
/// finished rotation records LastRotatedDate and schedules the next one.
#[tokio::test]
async fn label_moves_are_delivered_as_eventbridge_events_and_rotations_are_recorded() {
    let moto = Moto::start().await;
    let queue = moto.create_queue("events").await;
    moto.route_label_events_to(&queue, false).await;
    moto.route_label_events_to(&queue, true).await;
    moto.create_json("prod/db/credentials", &json!({"password": "one"}))
        .await;
    let arn = moto.arn_of("prod/db/credentials").await;
    let soon = chrono::Utc::now().timestamp() + 600;
    moto.schedule_rotation("prod/db/credentials", soon).await;
    let describe = || async {
        moto.client
            .describe_secret()
            .secret_id("prod/db/credentials")
            .send()
            .await
            .unwrap()
    };
    let d = describe().await;
    assert_eq!(d.rotation_enabled(), Some(true));
    assert_eq!(d.next_rotation_date().map(|t| t.secs()), Some(soon));
    // createSecret: AWSPENDING moves, and AWS says nothing of it.
    let pending = moto
        .put_pending("prod/db/credentials", &json!({"password": "two"}))
        .await;
    assert_eq!(moto.queue_depth(&queue).await, 0);
    let before = chrono::Utc::now().timestamp();
    moto.finish_rotation("prod/db/credentials", &pending).await;
    let got = moto
        .sqs()
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let bodies: Vec<serde_json::Value> = got
        .messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    assert_eq!(bodies.len(), 2, "one event per rule: {bodies:?}");
    let direct = bodies
        .iter()
        .find(|b| b["source"] == "aws.secretsmanager")
        .expect("the event as EventBridge delivers it");
    assert_eq!(direct["detail-type"], "Secret Label Updated");
    assert_eq!(direct["resources"], json!([arn]));
    assert_eq!(
        direct["detail"],
        json!({"name": "prod/db/credentials", "labelUpdated": "AWSCURRENT", "versionId": pending})
    );
    let wrapped = bodies
        .iter()
        .find(|b| b["Type"] == "Notification")
        .expect("the event in an SNS notification");
    let inner: serde_json::Value =
        serde_json::from_str(wrapped["Message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["detail"], direct["detail"]);
    // AWS recorded the rotation and scheduled the next one (30 days on).
    let d = describe().await;
    let last = d.last_rotated_date().map(|t| t.secs()).unwrap();
    assert!(last >= before, "LastRotatedDate {last} is the finish");
    let due = last + 30 * 86400;
    assert_eq!(
        d.next_rotation_date().map(|t| t.secs()),
        Some(due - due % 86400 + 86399),
        "on or before the end of the UTC day 30 days on"
    );
}
