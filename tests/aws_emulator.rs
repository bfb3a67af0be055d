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
