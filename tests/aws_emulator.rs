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
