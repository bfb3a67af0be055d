//! End to end: the validating admission webhook. The chart's ValidatingWebhookConfiguration
//! (calling the in-process operator by `clientConfig.url`; on a real cluster set
//! `MANAGED_SECRETS_E2E_WEBHOOK_HOST` to an address of this machine the API server reaches) refuses at apply time what the controller would refuse later, with the controller's
//! message; an unavailable webhook under `failurePolicy: Ignore` blocks nothing and the controller
//! still refuses; the operator's own CA and serving certificate rotate without a failed request.

mod support;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use managed_secrets::admission::certs::Lifetimes;
use managed_secrets::crd::{ManagedSecret, SecretAccessPolicy};
use managed_secrets::metrics::AdmissionLabels;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::aws::Moto;
use support::{wait_for, Cluster, Operator, DEADLINE, WEBHOOK_CERT_SECRET};

const DENIED: &str = "admission webhook \"managedsecrets.managedsecrets.io\" denied the request: ";

fn ms(name: &str, spec: Value) -> ManagedSecret {
    serde_json::from_value(json!({
        "apiVersion": "managedsecrets.io/v1alpha1",
        "kind": "ManagedSecret",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn granted(ns: &str) -> Value {
    json!({"secretId": format!("dev/{ns}/db"), "data": {"allKeys": true}})
}

fn denied(ns: &str) -> Value {
    json!({"secretId": format!("prod/{ns}/db"), "data": {"allKeys": true}})
}

/// Creates a ManagedSecret (a dry run when asked); the API error when it is refused.
async fn create(
    c: &Cluster,
    name: &str,
    spec: Value,
    dry_run: bool,
) -> Result<(), kube::core::Status> {
    let pp = PostParams {
        dry_run,
        ..Default::default()
    };
    match c.managed().create(&pp, &ms(name, spec)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(*e),
        Err(e) => panic!("creating {name}: {e}"),
    }
}

/// A cluster where namespace label env=dev grants `dev/<namespace>/*`, the operator enforcing
/// policies and serving its webhook, the chart's configuration installed with `failure_policy`,
/// and the webhook answering.
async fn admitting(failure_policy: &str, lifetimes: Lifetimes) -> (Cluster, Moto, Operator) {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let ns = c.namespace.clone();
    c.label_namespace(json!({"env": "dev"})).await;
    moto.create_json(&format!("dev/{ns}/db"), &json!({"password": "pw"}))
        .await;
    c.apply_policy(
        "conventions",
        json!({"rules": [{"namespaceSelector": {"matchLabels": {"env": "dev"}}, "secrets": ["$(labels.env)/$(namespace)/*"]}]}),
    )
    .await;
    let op = Operator::start_admitting(&c, &moto, lifetimes).await;
    c.install_webhook(op.webhook.expect("webhook address"), failure_policy)
        .await;
    answering(&c).await;
    (c, moto, op)
}

/// Waits until the webhook judges: the caBundle is published and the caches are filled (a dry run
/// of a denied reference is refused by the webhook, not by a failed call).
async fn answering(c: &Cluster) {
    wait_for("the webhook to answer", DEADLINE, || async {
        match create(c, "probe", denied(&c.namespace), true).await {
            Err(e) if e.code == 403 => Some(()),
            _ => None,
        }
    })
    .await;
}

fn count(op: &Operator, kind: &str, result: &str) -> u64 {
    op.metrics
        .admission
        .requests
        .get_or_create(&AdmissionLabels {
            kind: kind.into(),
            result: result.into(),
        })
        .get()
}

fn kubectl() -> String {
    std::env::var("KUBECTL")
        .unwrap_or_else(|_| format!("{}/.tools/bin/kubectl", env!("CARGO_MANIFEST_DIR")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_reference_is_refused_at_apply_with_the_policy_denied_message_and_a_granted_one_is_admitted(
) {
    let (c, _moto, op) = admitting("Fail", Lifetimes::default()).await;
    let ns = c.namespace.clone();
    create(&c, "granted", granted(&ns), false)
        .await
        .expect("a granted reference is admitted");
    c.wait_ready("granted", "True", "Synced").await;
    let e = create(&c, "denied", denied(&ns), false).await.unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"), "{e:?}");
    assert!(
        e.message.starts_with(&format!("{DENIED}PolicyDenied: ")),
        "{}",
        e.message
    );
    assert!(
        e.message.contains(&format!("prod/{ns}/db")),
        "{}",
        e.message
    );
    assert!(
        c.managed().get_opt("denied").await.unwrap().is_none(),
        "nothing was stored"
    );
    // kubectl apply is refused with that message.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.write_kubeconfig(&kubeconfig);
    let manifest = dir.path().join("denied.yaml");
    let mut doc = serde_json::to_value(ms("denied", denied(&ns))).unwrap();
    doc["metadata"]["namespace"] = json!(ns);
    std::fs::write(&manifest, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let out = tokio::process::Command::new(kubectl())
        .env("KUBECONFIG", &kubeconfig)
        .args(["apply", "-f"])
        .arg(&manifest)
        .output()
        .await
        .expect("kubectl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&e.message), "{stderr}");
    // The metrics count the answers by kind and result.
    assert!(count(&op, "ManagedSecret", "denied") >= 3);
    assert!(count(&op, "ManagedSecret", "allowed") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_and_a_malformed_policy_are_refused_naming_the_field() {
    let (c, _moto, op) = admitting("Fail", Lifetimes::default()).await;
    let ns = c.namespace.clone();
    // A selector that would match every workload in the namespace.
    let mut everything = granted(&ns);
    everything["rollout"] = json!({"selector": {}});
    let e = create(&c, "everything", everything, false)
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{e:?}");
    assert!(e.message.starts_with(DENIED), "{}", e.message);
    assert!(e.message.contains("rollout.selector"), "{}", e.message);
    // An update that makes a spec invalid is refused; one that leaves the spec alone is not.
    create(&c, "app", granted(&ns), false).await.unwrap();
    let e = c
        .managed()
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rollout": {"selector": {}}}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(a) if a.code == 422 && a.message.contains("rollout.selector")),
        "{e}"
    );
    c.managed()
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .expect("a metadata-only change is not judged");
    // A policy with a malformed rule, named by its index.
    let api: Api<SecretAccessPolicy> = Api::all(c.client.clone());
    let name = format!("{ns}-malformed");
    let policy: SecretAccessPolicy = serde_json::from_value(json!({
        "apiVersion": "managedsecrets.io/v1alpha1",
        "kind": "SecretAccessPolicy",
        "metadata": {"name": name, "labels": {"e2e-namespace": ns}},
        "spec": {"rules": [
            {"namespaces": [ns], "secrets": ["dev/*"]},
            {"namespaces": [ns], "secrets": ["$(nonsense)/*"]},
        ]},
    }))
    .unwrap();
    let e = api
        .create(&PostParams::default(), &policy)
        .await
        .unwrap_err();
    let kube::Error::Api(e) = e else {
        panic!("{e}")
    };
    assert_eq!(e.code, 422, "{e:?}");
    assert!(
        e.message.starts_with(
            "admission webhook \"secretaccesspolicies.managedsecrets.io\" denied the request: spec.rules[1]: "
        ),
        "{}",
        e.message
    );
    assert!(e.message.contains("$(nonsense)"), "{}", e.message);
    assert!(count(&op, "ManagedSecret", "invalid") >= 2);
    assert!(count(&op, "SecretAccessPolicy", "invalid") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_webhook_down_and_failure_policy_ignore_the_apply_succeeds_and_the_controller_still_refuses(
) {
    let (c, _moto, mut op) = admitting("Ignore", Lifetimes::default()).await;
    let ns = c.namespace.clone();
    let refused = create(&c, "denied", denied(&ns), false).await.unwrap_err();
    let message = refused
        .message
        .strip_prefix(DENIED)
        .expect("the webhook's denial")
        .to_string();
    op.stop_webhook();
    create(&c, "denied", denied(&ns), false)
        .await
        .expect("an unavailable webhook blocks nothing under Ignore");
    let ms = c.wait_ready("denied", "False", "PolicyDenied").await;
    let ready = ms
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    // The webhook said what the condition says (which adds when the next attempt is).
    assert!(
        ready.message == message
            || ready
                .message
                .starts_with(&format!("{message}; next attempt at ")),
        "{} / {message}",
        ready.message
    );
    assert!(c.secret_data("denied").await.is_none());
    // Under Fail, the same outage refuses the write.
    c.webhook_failure_policy("Fail").await;
    let e = create(&c, "other", denied(&ns), false).await.unwrap_err();
    assert_eq!(e.code, 500, "{e:?}");
    assert!(
        e.message
            .contains("failed calling webhook \"managedsecrets.managedsecrets.io\""),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotation_keeps_admission_working() {
    // Short lifetimes: the serving certificate is renewed every ~14 s, the CA every ~27 s.
    let lifetimes = Lifetimes {
        ca: Duration::from_secs(40),
        serving: Duration::from_secs(20),
    };
    let (c, moto, op) = admitting("Fail", lifetimes).await;
    // A second replica, a standby that never leads, keeps the same Secret and configuration,
    // and from now on the API server calls it: it judges from its own caches.
    let standby = Operator::start_admitting_standby(&c, &moto, lifetimes).await;
    c.install_webhook(standby.webhook.expect("standby webhook"), "Fail")
        .await;
    answering(&c).await;
    let ns = c.namespace.clone();
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), &c.operator_namespace);
    let key = |s: &Secret, k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let first_ca = |s: &Secret| {
        let bundle = key(s, "ca.crt");
        bundle
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let (mut servings, mut cas) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    let (mut answered, mut failed) = (0u32, vec![]);
    let started = Instant::now();
    let mut damaged = false;
    while started.elapsed() < Duration::from_secs(35) {
        if !damaged && started.elapsed() > Duration::from_secs(5) {
            // Someone breaks the stored CA key: the Secret is made again, the old CA kept
            // trusted for the replicas still serving a certificate it signed.
            let patch = json!({"data": {"ca.key": "YnJva2Vu"}});
            secrets
                .patch(
                    WEBHOOK_CERT_SECRET,
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
                .unwrap();
            damaged = true;
        }
        match create(&c, "probe", granted(&ns), true).await {
            Ok(()) => answered += 1,
            Err(e) => failed.push(e.message),
        }
        let s = secrets.get(WEBHOOK_CERT_SECRET).await.unwrap();
        servings.insert(key(&s, "tls.crt"));
        cas.insert(first_ca(&s));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed.is_empty(), "{} failed: {:?}", failed.len(), failed);
    assert!(answered >= 50, "{answered}");
    assert!(
        servings.len() >= 3,
        "the serving certificate was renewed: {} seen",
        servings.len()
    );
    assert!(cas.len() >= 2, "the CA was renewed: {} seen", cas.len());
    // The broken Secret was made whole again.
    let s = secrets.get(WEBHOOK_CERT_SECRET).await.unwrap();
    let stored = managed_secrets::admission::certs::Material {
        ca_bundle: key(&s, "ca.crt"),
        ca_key: key(&s, "ca.key"),
        tls_crt: key(&s, "tls.crt"),
        tls_key: key(&s, "tls.key"),
    };
    assert!(managed_secrets::admission::certs::parse(&stored).is_ok());
    // Still judging after the rotations.
    let e = create(&c, "probe", denied(&ns), true).await.unwrap_err();
    assert_eq!(e.code, 403);
    assert!(count(&standby, "ManagedSecret", "allowed") >= u64::from(answered));
    assert!(count(&standby, "ManagedSecret", "denied") >= 1);
    drop(op);
}
