//! The `managed-secrets` binary as a process: `run` against the emulator and moto, its HTTP
//! endpoints, readiness that waits for every initial list (and a loud 403 when RBAC is missing),
//! bounded shutdown on SIGTERM, and no secret material in any output: logs at debug level, Events,
//! status, error messages and metrics (the canary test).

mod support;
use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// The operator binary running as a process, with its log in a file.
struct Proc {
    child: Child,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Proc {
    fn start(c: &Cluster, moto: &Moto, kubeconfig: &Path, dir: &Path, rust_log: &str) -> Proc {
        Self::start_with(c, moto, kubeconfig, dir, rust_log, "operator", &[])
    }

    fn start_with(
        c: &Cluster,
        moto: &Moto,
        kubeconfig: &Path,
        dir: &Path,
        rust_log: &str,
        name: &str,
        extra: &[&str],
    ) -> Proc {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_managed-secrets"))
            .args([
                "run",
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "json",
                "--namespace",
                &c.namespace,
                "--min-refresh-interval",
                "1s",
                "--shutdown-timeout",
                "5s",
                "--access-policy",
                "off",
                "--operator-namespace",
                &c.operator_namespace,
                // The chart's Lease (leaderElection.leaseName), the one its Role names.
                "--lease-name",
                support::rbac::LEASE,
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("AWS_ENDPOINT_URL", &moto.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
        }
    }

    /// (status code, body) of an endpoint, once the server answers.
    async fn get(&self, path: &str) -> (u16, String) {
        wait_for(&format!("{path} to answer"), DEADLINE, || async {
            let r = self
                .http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .ok()?;
            let code = r.status().as_u16();
            Some((code, r.text().await.ok()?))
        })
        .await
    }

    async fn wait_status(&self, path: &str, code: u16) -> String {
        wait_for(&format!("{path} to answer {code}"), DEADLINE, || async {
            let (c, body) = self.get(path).await;
            (c == code).then_some(body)
        })
        .await
    }

    /// A gauge or counter from /metrics.
    async fn metric(&self, name: &str) -> Option<f64> {
        let (_, m) = self.get("/metrics").await;
        m.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    async fn wait_leader(&self, want: bool) {
        let v = if want { 1.0 } else { 0.0 };
        wait_for(
            &format!("leader = {want}"),
            Duration::from_secs(40),
            || async { (self.metric("managed_secrets_leader").await == Some(v)).then_some(()) },
        )
        .await;
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// SIGTERM, then the exit status (panics if it takes longer than `within`).
    async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        wait_for("the operator to exit on SIGTERM", within, || {
            let s = self.child.try_wait().unwrap();
            async move { s }
        })
        .await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_health_and_metrics_syncs_and_stops_on_sigterm_without_logging_values() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.write_operator_kubeconfig(&kubeconfig);
    let secret_value = "Zq7-unique-secret-value-9x";
    moto.create_json(
        "prod/db/credentials",
        &json!({"username": "dbadmin", "password": secret_value}),
    )
    .await;
    let mut op = Proc::start(&c, &moto, &kubeconfig, dir.path(), "debug");
    assert_eq!(op.wait_status("/readyz", 200).await, "ready");
    assert_eq!(op.get("/healthz").await, (200, "ok".to_string()));

    c.create_ms(
        "db",
        json!({"secretId": "prod/db/credentials", "data": {"allKeys": true}}),
    )
    .await;
    c.wait_secret_value("db", "password", secret_value).await;
    c.wait_ready("db", "True", "Synced").await;
    let (_, metrics) = op.get("/metrics").await;
    for m in [
        "managed_secrets_syncs_total 1",
        "managed_secrets_managed_objects 1",
        "managed_secrets_reconcile_duration_seconds_count",
        r#"managed_secrets_aws_calls_total{api="GetSecretValue",outcome="ok"}"#,
        "managed_secrets_source_cache_entries 1",
    ] {
        assert!(metrics.contains(m), "{m} in\n{metrics}");
    }

    let status = op.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "graceful exit: {status:?}");
    let logs = op.logs();
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
    let encoded = base64::engine::general_purpose::STANDARD.encode(secret_value);
    assert!(
        !logs.contains(&encoded),
        "a base64 secret value reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rbac_for_secrets_it_is_not_ready_says_so_loudly_and_sigterm_still_stops_it() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.write_operator_kubeconfig(&kubeconfig);
    // The chart's RBAC without its rule on Secrets (a real authorizer, on the emulator as on a
    // real cluster); the hash key Role stays.
    c.revoke("secrets").await;
    let mut op = Proc::start(&c, &moto, &kubeconfig, dir.path(), "info");
    let revoked = ["get", "list", "watch", "create", "patch", "delete"];
    let missing: Vec<String> = revoked
        .iter()
        .map(|v| format!("{v} secrets in {}", c.namespace))
        .collect();
    let want = format!("missing RBAC permissions: {}", missing.join("; "));
    wait_for(
        "/readyz to name the missing permissions",
        DEADLINE,
        || async {
            let (code, text) = op.get("/readyz").await;
            (code == 503 && text == want).then_some(())
        },
    )
    .await;
    let (_, m) = op.get("/metrics").await;
    for v in revoked {
        let line = format!(
            "managed_secrets_permission_missing{{verb=\"{v}\",resource=\"secrets\",namespace=\"{}\",name=\"\"}} 1",
            c.namespace
        );
        assert!(m.contains(&line), "{line} in\n{m}");
    }
    let granted = format!(
        "managed_secrets_permission_missing{{verb=\"patch\",resource=\"managedsecrets/status.managedsecrets.io\",namespace=\"{}\",name=\"\"}} 0",
        c.namespace
    );
    assert!(m.contains(&granted), "{granted} in\n{m}");
    // The watch itself is refused by the authorizer too, and counted.
    wait_for("the watch's 403 to be counted", DEADLINE, || async {
        let (_, m) = op.get("/metrics").await;
        m.contains(r#"managed_secrets_watch_errors_total{resource="secrets",reason="Forbidden"}"#)
            .then_some(())
    })
    .await;
    assert_eq!(op.get("/healthz").await.0, 200, "alive, only not ready");
    let logs = op.logs();
    let loud: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["level"] == "ERROR" && l["resource"] == "secrets")
        .collect();
    let verbs: Vec<&str> = loud.iter().filter_map(|l| l["verb"].as_str()).collect();
    assert!(
        revoked.iter().all(|v| verbs.contains(v)),
        "an ERROR naming each missing verb on secrets in\n{logs}"
    );
    assert!(
        loud.iter().any(|l| l["message"]
            .as_str()
            .unwrap_or("")
            .contains("grant the operator's ServiceAccount list secrets in")),
        "{loud:?}"
    );
    let t = tokio::time::Instant::now();
    let status = op.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "SIGTERM ends it within the shutdown timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_fail_over_after_a_kill_and_hand_over_at_once_on_sigterm() {
    use support::workloads::{deployment_using, revision, wait_rollouts_recorded};
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.write_operator_kubeconfig(&kubeconfig);
    let v1 = moto
        .create_json("prod/db/credentials", &json!({"password": "one"}))
        .await;
    deployment_using(&c, "api", "db").await;
    let lease = |secs: &'static str| -> Vec<&'static str> {
        vec!["--lease-duration", secs, "--lease-grace", "1s"]
    };
    // A short lease for the first leader: its successor waits for it to expire after a kill.
    let mut a = Proc::start_with(
        &c,
        &moto,
        &kubeconfig,
        dir.path(),
        "info",
        "a",
        &lease("4s"),
    );
    a.wait_leader(true).await;
    // A long one for the others: only a release can hand over before it expires.
    let mut b = Proc::start_with(
        &c,
        &moto,
        &kubeconfig,
        dir.path(),
        "info",
        "b",
        &lease("60s"),
    );
    assert_eq!(
        b.wait_status("/readyz", 200).await,
        "ready",
        "a standby is ready"
    );
    b.wait_leader(false).await;
    c.create_ms("db", json!({"secretId": "prod/db/credentials", "refreshInterval": "2s", "data": {"allKeys": true},
                             "rollout": {"targets": [{"kind": "Deployment", "name": "api"}], "debounce": "1s"}})).await;
    c.wait_secret_value("db", "password", "one").await;
    wait_rollouts_recorded(&c, "db", &v1, 1).await;
    assert_eq!(
        b.metric("managed_secrets_reconciles_total").await,
        Some(0.0),
        "the standby reconciles nothing"
    );
    // kill -9 the leader: the standby takes over once the lease expires.
    a.kill();
    b.wait_leader(true).await;
    let writes = c.count("patch", "secrets").await;
    let v2 = moto
        .rotate_like_lambda("prod/db/credentials", &json!({"password": "two"}))
        .await;
    c.wait_secret_value("db", "password", "two").await;
    wait_rollouts_recorded(&c, "db", &v2, 1).await;
    assert_eq!(revision(&c, "api").await.as_deref(), Some("2"));
    c.wait_attempts(&moto, "db", 2).await;
    assert_eq!(
        revision(&c, "api").await.as_deref(),
        Some("2"),
        "no duplicate rollout"
    );
    if let (Some(before), Some(after)) = (writes, c.count("patch", "secrets").await) {
        assert!(
            after - before <= 2,
            "no Secret write storm: {} writes",
            after - before
        );
    }
    // SIGTERM the leader: it releases the lease, and a standby leads long before it would expire.
    let cc = Proc::start_with(
        &c,
        &moto,
        &kubeconfig,
        dir.path(),
        "info",
        "c",
        &lease("60s"),
    );
    cc.wait_status("/readyz", 200).await;
    cc.wait_leader(false).await;
    let status = b.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        b.logs().contains("released the leader Lease"),
        "{}",
        b.logs()
    );
    wait_for(
        "the standby to lead (well before a 60s lease expires)",
        DEADLINE,
        || async { (cc.metric("managed_secrets_leader").await == Some(1.0)).then_some(()) },
    )
    .await;
    let v3 = moto
        .rotate_like_lambda("prod/db/credentials", &json!({"password": "three"}))
        .await;
    c.wait_secret_value("db", "password", "three").await;
    wait_rollouts_recorded(&c, "db", &v3, 1).await;
    assert_eq!(revision(&c, "api").await.as_deref(), Some("3"));
}

const CANARY: &str = "Cnry7f3a9c-never-print-me";

/// Every place a secret value must never reach, gathered after a full run.
async fn outputs(c: &Cluster, op: &Proc) -> Vec<(String, String)> {
    let mut out = vec![("logs".to_string(), op.logs())];
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(c.client.clone(), &c.namespace);
    for e in events.list(&Default::default()).await.unwrap() {
        out.push((
            format!("event {}", e.metadata.name.clone().unwrap_or_default()),
            serde_json::to_string(&e).unwrap(),
        ));
    }
    for ms in c.managed().list(&Default::default()).await.unwrap() {
        out.push((
            format!("status of {}", ms.metadata.name.clone().unwrap_or_default()),
            serde_json::to_string(&ms.status).unwrap(),
        ));
    }
    out.push(("metrics".into(), op.get("/metrics").await.1));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_values_appear_in_no_log_event_status_error_or_metric() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.write_operator_kubeconfig(&kubeconfig);
    let v = |s: &str| format!("{CANARY}-{s}");
    let creds = |p: &str| json!({"username": v("user"), "password": v(p), "host": "db.local", "port": 5432, "nested": {"token": v("nested")}});
    moto.create_json("prod/canary/db", &creds("one")).await;
    moto.create_string("prod/canary/text", &v("plain-text-not-json"))
        .await;
    moto.create_binary("prod/canary/bin", v("binary").as_bytes())
        .await;
    moto.create_json(
        "prod/canary/badkey",
        &json!({ format!("bad key {}", v("key")): v("x") }),
    )
    .await;
    moto.create_json(
        "prod/canary/null",
        &json!({"password": null, "other": v("x")}),
    )
    .await;
    moto.create_json("prod/canary/big", &json!({"blob": v(&"x".repeat(50_000))}))
        .await;
    for id in [
        "prod/canary/denied",
        "prod/canary/kms",
        "prod/canary/throttled",
    ] {
        moto.create_json(id, &creds("one")).await;
    }
    moto.fault(
        "GetSecretValue",
        "prod/canary/denied",
        "AccessDeniedException",
        1000,
    )
    .await;
    moto.fault(
        "GetSecretValue",
        "prod/canary/kms",
        "DecryptionFailure",
        1000,
    )
    .await;
    // Logs at debug for the operator and everything under it (the HTTP and AWS stacks are capped).
    let op = Proc::start(
        &c,
        &moto,
        &kubeconfig,
        dir.path(),
        "debug,aws_smithy_runtime=trace,hyper=trace,kube_client=trace",
    );
    op.wait_status("/readyz", 200).await;
    let db = "prod/canary/db";
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "all-keys",
            json!({"secretId": db, "refreshInterval": "1s", "data": {"allKeys": true}}),
            "Synced",
        ),
        (
            "keys",
            json!({"secretId": db, "data": {"keys": [{"from": "nested.token", "to": "TOKEN"}, {"from": "password"}]}}),
            "Synced",
        ),
        (
            "raw",
            json!({"secretId": "prod/canary/text", "data": {"rawKey": "value"}}),
            "Synced",
        ),
        (
            "binary",
            json!({"secretId": "prod/canary/bin", "data": {"rawKey": "cert"}}),
            "Synced",
        ),
        (
            "templates",
            json!({"secretId": db, "data": {"keys": [{"from": "username"}]}, "templates": {
            "URL": "postgres://{{ username }}:{{ password | urlencode }}@{{ host }}:{{ port }}/app",
            "JSON": "{{ nested | tojson }}", "B64": "{{ password | b64encode }}", "UP": "{{ password | upper }}"}}),
            "Synced",
        ),
        (
            "basic-auth",
            json!({"secretId": db, "data": {"keys": [{"from": "username"}, {"from": "password"}]}, "target": {"type": "kubernetes.io/basic-auth"}}),
            "Synced",
        ),
        (
            "docker",
            json!({"secretId": db, "data": {"keys": [{"from": "username"}]}, "target": {"type": "kubernetes.io/dockerconfigjson"},
            "templates": {".dockerconfigjson": "{\"auths\":{\"r.example.com\":{\"auth\":\"{{ (username ~ ':' ~ password) | b64encode }}\"}}}"}}),
            "Synced",
        ),
        (
            "notfound",
            json!({"secretId": "prod/canary/missing", "data": {"allKeys": true}}),
            "SecretNotFound",
        ),
        (
            "denied",
            json!({"secretId": "prod/canary/denied", "data": {"allKeys": true}}),
            "AccessDenied",
        ),
        (
            "kms",
            json!({"secretId": "prod/canary/kms", "data": {"allKeys": true}}),
            "DecryptionFailed",
        ),
        (
            "notjson",
            json!({"secretId": "prod/canary/text", "data": {"allKeys": true}}),
            "InvalidJSON",
        ),
        (
            "nokey",
            json!({"secretId": db, "data": {"keys": [{"from": "api_key"}]}}),
            "KeyNotFound",
        ),
        (
            "tpl-nokey",
            json!({"secretId": db, "data": {"keys": [{"from": "username"}]}, "templates": {"T": format!("{} {{{{ missing }}}}", v("template-literal"))}}),
            "KeyNotFound",
        ),
        (
            "tpl-syntax",
            json!({"secretId": db, "data": {"keys": [{"from": "username"}]}, "templates": {"T": format!("{} {{{{ password | nosuchfilter }}}}", v("template-literal"))}}),
            "InvalidSpec",
        ),
        (
            "tpl-decode",
            json!({"secretId": db, "data": {"keys": [{"from": "username"}]}, "templates": {"T": "{{ password | b64decode }}"}}),
            "InvalidSpec",
        ),
        (
            "badkey",
            json!({"secretId": "prod/canary/badkey", "data": {"allKeys": true}}),
            "InvalidKeyName",
        ),
        (
            "null",
            json!({"secretId": "prod/canary/null", "data": {"allKeys": true}}),
            "NullValue",
        ),
        (
            "toobig",
            json!({"secretId": "prod/canary/big", "data": {"keys": [{"from": "blob"}]}, "templates": {"a": "{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}{{ blob }}"}}),
            "ValueTooLarge",
        ),
        (
            "typed",
            json!({"secretId": db, "data": {"keys": [{"from": "host"}]}, "target": {"type": "kubernetes.io/tls"}}),
            "InvalidSpec",
        ),
        (
            "throttled",
            json!({"secretId": "prod/canary/throttled", "refreshInterval": "1s", "data": {"allKeys": true}}),
            "Synced",
        ),
    ];
    for (name, spec, _) in &cases {
        c.create_ms(name, spec.clone()).await;
    }
    for (name, _, reason) in &cases {
        let status = if *reason == "Synced" { "True" } else { "False" };
        c.wait_ready(name, status, reason).await;
    }
    // A transient failure after a good sync, then a rotation.
    moto.fault(
        "DescribeSecret",
        "prod/canary/throttled",
        "ThrottlingException",
        1000,
    )
    .await;
    c.wait_condition("throttled", "Stale", "True", "Throttled")
        .await;
    moto.rotate_like_lambda(db, &creds("rotated")).await;
    c.wait_secret_value("all-keys", "password", &v("rotated"))
        .await;
    let forbidden = [
        CANARY.to_string(),
        base64::engine::general_purpose::STANDARD.encode(v("one")),
        base64::engine::general_purpose::STANDARD.encode(v("rotated")),
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", v("user"), v("one"))),
        "Cnry7f3a9c".to_string(),
    ];
    let all = outputs(&c, &op).await;
    assert!(
        all.len() > cases.len() + 2,
        "statuses, events, logs and metrics were read"
    );
    for (what, text) in &all {
        for f in &forbidden {
            assert!(!text.contains(f.as_str()), "{what} contains {f:?}:\n{text}");
        }
    }
}

#[test]
fn crdgen_prints_the_crd_and_bad_flags_exit_with_an_error_naming_them() {
    let out = Command::new(env!("CARGO_BIN_EXE_managed-secrets"))
        .arg("crdgen")
        .output()
        .unwrap();
    assert!(out.status.success());
    let docs: Vec<String> = managed_secrets::crd::all_crds()
        .into_iter()
        .map(|(_, y)| y)
        .collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), docs.join("---\n"));
    let out = Command::new(env!("CARGO_BIN_EXE_managed-secrets"))
        .args(["run", "--concurrency", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--concurrency"));
}

/// The flags the chart passes for the webhook, on a local port (the certificate also names
/// 127.0.0.1, which the configuration's URL calls).
fn webhook_flags(c: &Cluster, port: u16) -> Vec<String> {
    [
        "--webhook-addr",
        &format!("127.0.0.1:{port}"),
        "--webhook-service",
        "managed-secrets-webhook",
        "--webhook-configuration",
        &c.webhook_configuration(),
        "--webhook-cert-secret",
        support::WEBHOOK_CERT_SECRET,
        "--webhook-cert-hosts",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_its_webhook_and_a_restarted_replica_uses_the_stored_certificate() {
    use k8s_openapi::api::core::v1::Secret;
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.write_operator_kubeconfig(&kubeconfig);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(c.client.clone(), &c.operator_namespace);
    let serving = || async {
        let s = secrets
            .get_opt(support::WEBHOOK_CERT_SECRET)
            .await
            .unwrap()?;
        let crt = s.data?.get("tls.crt")?.0.clone();
        Some(crt)
    };
    let mut first_crt = None;
    for round in ["a", "b"] {
        let port = free_port();
        let flags = webhook_flags(&c, port);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut op = Proc::start_with(&c, &moto, &kubeconfig, dir.path(), "info", round, &flags);
        // Ready: the start-up RBAC check found the webhook's permissions too.
        assert_eq!(op.wait_status("/readyz", 200).await, "ready");
        c.install_webhook(format!("127.0.0.1:{port}").parse().unwrap(), "Fail")
            .await;
        // A spec the controller refuses is refused at apply time by the binary's webhook.
        let everything =
            json!({"secretId": "prod/db", "data": {"allKeys": true}, "rollout": {"selector": {}}});
        let refused = wait_for("the webhook to judge", DEADLINE, || async {
            let ms: managed_secrets::crd::ManagedSecret = serde_json::from_value(
                json!({"metadata": {"name": "everything"}, "spec": everything}),
            )
            .unwrap();
            match c.managed().create(&Default::default(), &ms).await {
                Err(kube::Error::Api(e)) if e.code == 422 => Some(e.message),
                _ => None,
            }
        })
        .await;
        assert!(refused.contains("rollout.selector"), "{refused}");
        let crt = serving().await.expect("the certificate Secret");
        match &first_crt {
            None => first_crt = Some(crt),
            // The second process served the certificate the first one stored.
            Some(first) => assert_eq!(&crt, first, "a restarted replica reuses it"),
        }
        assert!(
            op.metric("managed_secrets_admission_requests_total{kind=\"ManagedSecret\",result=\"invalid\"}")
                .await
                >= Some(1.0)
        );
        let status = op.terminate(Duration::from_secs(15)).await;
        assert!(status.success(), "{status:?}");
    }
}
