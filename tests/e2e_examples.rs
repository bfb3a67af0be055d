//! Every manifest in examples/ applied to a cluster, so that none of them rots: each ManagedSecret
//! whose AWS secret has a sample value (examples/aws-values/<secretId>.json|.txt) becomes Ready with
//! exactly the keys `managed-secrets render` gives for that sample, its rollout targets are found,
//! and the others are refused by the access policy; each SecretAccessPolicy is Valid.
//! Namespaced objects go to the test's namespace; policies get the test's prefix (so a real
//! cluster's own policies are never touched).

mod support;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use managed_secrets::cmd::check::files;
use managed_secrets::crd::{ManagedSecret, SecretAccessPolicy};
use managed_secrets::render::SecretValue;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{aws::Moto, wait_for, Cluster, Operator, DEADLINE};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

/// secretId -> the sample value's text.
fn samples() -> BTreeMap<String, String> {
    let root = Path::new(EXAMPLES).join("aws-values");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let id = p.strip_prefix(&root).unwrap().with_extension("");
                out.insert(
                    id.to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn documents() -> Vec<(PathBuf, Value)> {
    let mut out = vec![];
    for f in files(&[PathBuf::from(EXAMPLES)]).unwrap() {
        let text = std::fs::read_to_string(&f).unwrap();
        for (_, doc) in managed_secrets::cmd::documents(&text) {
            // Kubernetes objects only (examples/events holds a CloudFormation template).
            let y: serde_yaml::Value = serde_yaml::from_str(&doc).unwrap();
            if y.get("kind").is_some() && y.get("apiVersion").is_some() {
                out.push((f.clone(), serde_json::to_value(y).unwrap()));
            }
        }
    }
    out
}

async fn apply(c: &Cluster, mut doc: Value) {
    let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            doc["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, doc["kind"].as_str().unwrap());
    let (ar, _) = kube::discovery::pinned_kind(&c.client, &gvk)
        .await
        .expect("the example's kind is served");
    doc["metadata"]["namespace"] = json!(c.namespace);
    let name = doc["metadata"]["name"].as_str().unwrap().to_string();
    let api: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), &c.namespace, &ar);
    api.patch(
        &name,
        &PatchParams::apply("e2e-examples").force(),
        &Patch::Apply(&doc),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_applies_and_does_what_it_says() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let samples = samples();
    for (id, value) in &samples {
        moto.create_string(id, value).await;
    }
    // The test's namespace may read exactly the secrets that have a sample value.
    let ids: Vec<&String> = samples.keys().collect();
    c.apply_policy(
        "examples",
        json!({"rules": [{"namespaces": [c.namespace], "secrets": ids}]}),
    )
    .await;
    let _op = Operator::start_enforcing(&c, &moto).await;

    let docs = documents();
    let mut managed = vec![];
    let mut policies = vec![];
    // Workloads, ServiceAccounts and Secrets first, as `kubectl apply -f` of one file would order
    // them; ManagedSecrets after.
    for (file, doc) in &docs {
        match doc["kind"].as_str().unwrap() {
            "Namespace" => {}
            "SecretAccessPolicy" => {
                let p: SecretAccessPolicy = serde_json::from_value(doc.clone()).unwrap();
                let name = c
                    .apply_policy(&p.metadata.name.clone().unwrap(), json!(p.spec))
                    .await;
                policies.push((file.clone(), name, p.spec.rules.len()));
            }
            "ManagedSecret" => managed.push((file.clone(), doc.clone())),
            _ => apply(&c, doc.clone()).await,
        }
    }
    assert!(
        managed.len() >= 12,
        "examples cover every mode: {}",
        managed.len()
    );
    assert!(policies.len() >= 4, "examples cover every policy shape");
    for (_, doc) in &managed {
        apply(&c, doc.clone()).await;
    }

    for (file, doc) in &managed {
        let ms: ManagedSecret = serde_json::from_value(doc.clone()).unwrap();
        let name = ms.metadata.name.clone().unwrap();
        let what = format!("{} ({name})", file.display());
        let Some(sample) = samples.get(&ms.spec.secret_id) else {
            c.wait_ready(&name, "False", "PolicyDenied").await;
            continue;
        };
        let ready = c.wait_ready(&name, "True", "Synced").await;
        // The Secret holds what the offline renderer says it would.
        let want = managed_secrets::cmd::preview::render(
            &ms,
            &SecretValue::String(sample.clone()),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{what}: render: {e}"));
        let got = c.secret_data(&ms.target_name()).await.unwrap();
        for (k, v) in &want.0 {
            assert_eq!(
                got.get(k).map(String::as_bytes),
                Some(v.as_slice()),
                "{what}: key {k}"
            );
        }
        let extra: Vec<&String> = got.keys().filter(|k| !want.0.contains_key(*k)).collect();
        if ms.spec.target.creation_policy == managed_secrets::crd::CreationPolicy::Merge {
            assert!(!extra.is_empty(), "{what}: the other owner's keys stay");
        } else {
            assert!(extra.is_empty(), "{what}: unexpected keys {extra:?}");
        }
        let synced_keys = ready.status.unwrap().synced_keys;
        if ms.spec.data.all_keys {
            // Names from the AWS value are shown as digests (they are not the spec's to tell).
            assert_eq!(synced_keys.len(), want.0.len(), "{what}: status.syncedKeys");
            assert!(
                synced_keys
                    .iter()
                    .all(|k| k.starts_with("hmac:") && !want.0.contains_key(k)),
                "{what}: status.syncedKeys {synced_keys:?}"
            );
        } else {
            assert_eq!(synced_keys, want.keys(), "{what}: status.syncedKeys");
        }
        // Rollout targets are found (recorded with the version they run).
        if ms.spec.rollout.is_some() {
            wait_for(
                &format!("{what}: rollout targets recorded"),
                DEADLINE,
                || async {
                    let ms = c.managed().get(&name).await.ok()?;
                    let r = ms.status?.rollouts;
                    (!r.is_empty() && r.iter().all(|r| r.version.is_some())).then_some(())
                },
            )
            .await;
        }
    }

    let api: Api<SecretAccessPolicy> = Api::all(c.client.clone());
    for (file, name, rules) in &policies {
        wait_for(
            &format!("{}: policy Valid", file.display()),
            DEADLINE,
            || async {
                let p = api.get(name).await.ok()?;
                let s = p.status?;
                (s.rules == *rules as u32
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Valid" && c.status == "True"))
                .then_some(())
            },
        )
        .await;
    }
}

#[test]
fn every_example_passes_check_and_every_sample_is_used() {
    let checker = managed_secrets::cmd::check::Checker::new(Duration::from_secs(10)).unwrap();
    let mut summary = managed_secrets::cmd::check::Summary::default();
    for f in files(&[PathBuf::from(EXAMPLES)]).unwrap() {
        let text = std::fs::read_to_string(&f).unwrap();
        checker.check_text(&f.display().to_string(), &text, &mut summary);
    }
    let findings: Vec<String> = summary.findings.iter().map(|f| f.to_string()).collect();
    assert_eq!(findings, Vec::<String>::new());
    let used: std::collections::BTreeSet<String> = documents()
        .into_iter()
        .filter(|(_, d)| d["kind"] == "ManagedSecret")
        .map(|(_, d)| d["spec"]["secretId"].as_str().unwrap().to_string())
        .collect();
    for id in samples().keys() {
        assert!(
            used.contains(id),
            "examples/aws-values/{id} is used by no example"
        );
    }
}

/// kstatus (what Flux's health checks and `kubectl wait` rely on), for a custom resource: InProgress
/// while `status.observedGeneration` lags `metadata.generation` or Ready is not True, Failed when
/// Stalled is True, Current otherwise.
fn kstatus(ms: &ManagedSecret) -> &'static str {
    let Some(s) = &ms.status else {
        return "InProgress";
    };
    if s.observed_generation != ms.metadata.generation {
        return "InProgress";
    }
    let cond = |t: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.as_str())
    };
    if cond("Stalled") == Some("True") {
        return "Failed";
    }
    if cond("Reconciling") == Some("True") || cond("Ready") != Some("True") {
        return "InProgress";
    }
    "Current"
}

fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| {
        let ok = std::process::Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            "kubectl".into()
        } else {
            format!("{}/.tools/bin/kubectl", env!("CARGO_MANIFEST_DIR"))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_and_kstatus_follow_ready_and_the_generation() {
    let c = Cluster::start().await;
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.write_kubeconfig(&kubeconfig);
    moto.create_string("prod/shop/config", &samples()["prod/shop/config"])
        .await;
    // kubectl wait starts before any operator runs, and returns once one has synced the object.
    let wait = |name: &str| {
        tokio::process::Command::new(kubectl())
            .env("KUBECONFIG", &kubeconfig)
            .args([
                "wait",
                "--for=condition=Ready",
                "--timeout=60s",
                "-n",
                &c.namespace,
            ])
            .arg(format!("managedsecret/{name}"))
            .output()
    };
    c.create_ms(
        "cfg",
        json!({"secretId": "prod/shop/config", "data": {"allKeys": true}}),
    )
    .await;
    assert_eq!(
        kstatus(&c.managed().get("cfg").await.unwrap()),
        "InProgress"
    );
    let waiting = tokio::spawn(wait("cfg"));
    let _op = Operator::start(&c, &moto).await;
    let out = waiting.await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "managedsecret.managedsecrets.io/cfg condition met"
    );
    assert_eq!(kstatus(&c.managed().get("cfg").await.unwrap()), "Current");
    // A new generation is InProgress until the operator has acted on it, then Current again.
    let patched = c
        .patch_ms("cfg", json!({"spec": {"refreshInterval": "2m"}}))
        .await;
    assert_eq!(patched.metadata.generation, Some(2));
    wait_for("kstatus Current at generation 2", DEADLINE, || async {
        let ms = c.managed().get("cfg").await.ok()?;
        (kstatus(&ms) == "Current" && ms.metadata.generation == Some(2)).then_some(())
    })
    .await;
    // A spec the operator refuses is not Current (Ready=False), and kubectl wait times out.
    c.patch_ms("cfg", json!({"spec": {"secretId": "prod/shop/missing"}}))
        .await;
    c.wait_ready("cfg", "False", "SecretNotFound").await;
    assert_eq!(
        kstatus(&c.managed().get("cfg").await.unwrap()),
        "InProgress"
    );
}
