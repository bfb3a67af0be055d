//! The `managed-secrets` binary as a process: `run` against the emulator and moto, its HTTP
//! endpoints, graceful shutdown on SIGTERM, and no secret value in its logs even at debug level.

mod support;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::aws::Moto;
use support::{wait_for, Cluster, DEADLINE};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_health_and_metrics_syncs_and_stops_on_sigterm_without_logging_values() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.write_kubeconfig(&kubeconfig);
    let log = dir.path().join("operator.log");
    let port = free_port();
    let secret_value = "Zq7-unique-secret-value-9x";
    moto.create_json(
        "prod/db/credentials",
        &json!({"username": "dbadmin", "password": secret_value}),
    )
    .await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_managed-secrets"))
        .args([
            "run",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
            "--namespace",
            &c.namespace,
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_for("/readyz", DEADLINE, || async {
        (http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()?
            .status()
            == 200)
            .then_some(())
    })
    .await;
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    c.create_ms(
        "db",
        json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("db", "password", secret_value).await;
    c.wait_ready("db", "True", "Synced").await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for m in [
        "managed_secrets_syncs_total 1",
        "managed_secrets_managed_objects 1",
        "managed_secrets_reconcile_duration_seconds_count",
        r#"managed_secrets_aws_calls_total{api="GetSecretValue",outcome="ok"}"#,
    ] {
        assert!(metrics.contains(m), "{m} in\n{metrics}");
    }

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_for(
        "the operator to exit on SIGTERM",
        Duration::from_secs(15),
        || {
            let s = child.try_wait().unwrap();
            async move { s }
        },
    )
    .await;
    assert!(status.success(), "graceful exit: {status:?}");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("Secret written"), "the sync was logged");
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "--log-format json writes JSON lines"
    );
    assert!(
        !logs.contains(secret_value),
        "a secret value reached the logs"
    );
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(secret_value)
    };
    assert!(
        !logs.contains(&encoded),
        "a base64 secret value reached the logs"
    );
}

#[test]
fn crdgen_prints_the_crd_and_bad_flags_exit_with_an_error_naming_them() {
    let out = Command::new(env!("CARGO_BIN_EXE_managed-secrets"))
        .arg("crdgen")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        managed_secrets::crd::crd_yaml()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_managed-secrets"))
        .args(["run", "--concurrency", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--concurrency"));
}
