//! The offline subcommands (`check`, `render`) and `release-finalizers`, run as the binary.

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use managed_secrets::crd::{FINALIZER, OWNER_UID_ANNOTATION};
use serde_json::json;
use std::process::{Command, Output};
use support::{wait_for, Cluster, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_managed-secrets");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .current_dir(ROOT)
        .args(args)
        .output()
        .unwrap();
    (
        status.code(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

#[test]
fn check_passes_every_example_and_fails_a_broken_file_with_file_and_line() {
    let (code, out, err) = run(&["check", "-f", "examples"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, "");
    assert!(
        err.contains("problem(s)") && err.ends_with(": 0 problem(s)\n"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: managedsecrets.io/v1alpha1\nkind: ManagedSecret\nmetadata:\n  name: db\nspec:\n  secretId: prod/db/credentials\n  refreshIntervall: 5m\n  data:\n    allKeys: true\n    rawKey: everything\n",
    )
    .unwrap();
    let (code, out, err) = run(&[
        "check",
        "-f",
        bad.to_str().unwrap(),
        "-f",
        "examples/mapping",
    ]);
    assert_eq!(code, Some(1), "{out}{err}");
    let file = bad.display().to_string();
    assert_eq!(
        out,
        format!("{file}:11: spec.refreshIntervall: unknown field (the API server would drop it silently)\n")
    );
    assert!(err.contains("checked 5 ManagedSecret(s)"), "{err}");
    // Fixed, the next finding (the controller's own check) shows.
    std::fs::write(
        &bad,
        std::fs::read_to_string(&bad)
            .unwrap()
            .replace("refreshIntervall", "refreshInterval"),
    )
    .unwrap();
    let (code, out, _) = run(&["check", "-f", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        out.starts_with(&format!(
            "{file}:9: invalid spec: spec.data must set exactly one of allKeys: true, keys, or rawKey"
        )),
        "{out}"
    );
    let (code, _, err) = run(&["check", "-f", "no/such/file.yaml"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("1 problem(s)"), "{err}");
}

/// `check --policies`: the access decision offline, with the namespace labels given; a denied
/// reference fails CI with the PolicyDenied message, at its secretId line.
#[test]
fn check_with_policies_grants_by_label_and_refuses_a_denied_reference() {
    let base = [
        "check",
        "-f",
        "examples/db-credentials.yaml",
        "--policies",
        "examples/access-policy.yaml",
        "--default-region",
        "us-east-1",
    ];
    let (code, out, err) = run(&[&base[..], &["--namespace-labels", "db=env=prod"]].concat());
    assert_eq!(code, Some(0), "{out}{err}");
    // Without the label the naming convention grants nothing.
    let (code, out, _) = run(&[&base[..], &["--namespace-labels", "db="]].concat());
    assert_eq!(code, Some(1));
    assert_eq!(
        out,
        "examples/db-credentials.yaml:9: PolicyDenied: no SecretAccessPolicy grants namespace db the AWS secret prod/db/credentials (us-east-1); policies for this namespace: none; nothing is read from AWS until a SecretAccessPolicy grants it\n"
    );
    // Another team's secret, with the label: still denied.
    let (code, out, _) = run(&[
        "check",
        "-f",
        "examples/denied.yaml",
        "--policies",
        "examples/access-policy.yaml",
        "--namespace-labels",
        "db=env=prod",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        out.starts_with("examples/denied.yaml:")
            && out.contains("PolicyDenied: no SecretAccessPolicy grants namespace db the AWS secret prod/payments/api-key")
            && out.contains("policies for this namespace: naming-convention"),
        "{out}"
    );
    // A malformed label list is a usage error.
    let (code, _, err) = run(&[&base[..], &["--namespace-labels", "db"]].concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("is not namespace=key=value"), "{err}");
}

#[test]
fn render_prints_keys_redacted_unless_asked() {
    let args = [
        "render",
        "-f",
        "examples/mapping/templates.yaml",
        "--value-file",
        "examples/aws-values/prod/shop/db.json",
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "Secret shop-db-url (type Opaque) from AWS secret prod/shop/db: 3 keys\n  DATABASE_URL: <redacted, 87 bytes>\n  PGPASSFILE_LINE: <redacted, 54 bytes>\n  password: <redacted, 22 bytes>\n"
    );
    let mut shown = args.to_vec();
    shown.push("--show-values");
    let (code, out, _) = run(&shown);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("  DATABASE_URL: \"postgres://shop:S3cret%2Fwith%2Bchars%26more@shop-db.internal:5432/shop?sslmode=require\"\n"),
        "{out}"
    );
    // A value that lacks a field the mapping needs: the field is named, no value is echoed.
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("v.json");
    std::fs::write(&sample, r#"{"username": "u-canary-42", "host": "h"}"#).unwrap();
    let (code, out, err) = run(&[
        "render",
        "-f",
        "examples/mapping/templates.yaml",
        "--value-file",
        sample.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(err.starts_with("error: KeyNotFound: "), "{err}");
    assert!(err.contains("password"), "{err}");
    assert!(!err.contains("u-canary-42"), "{err}");
    // A file with several ManagedSecrets needs --name.
    let (code, _, err) = run(&[
        "render",
        "-f",
        "examples/db-credentials.yaml",
        "--value-file",
        "examples/aws-values/prod/db/credentials.json",
        "--name",
        "nope",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("holds no ManagedSecret named nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_finalizers_frees_a_terminating_managed_secret_without_the_operator() {
    let c = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.write_kubeconfig(&kubeconfig);
    // What the operator left behind: a Retain ManagedSecret with its finalizer, and its Secret.
    let ms: managed_secrets::crd::ManagedSecret = serde_json::from_value(json!({
        "apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": "kept", "finalizers": [FINALIZER]},
        "spec": {"secretId": "prod/db/credentials", "data": {"allKeys": true}, "target": {"deletionPolicy": "Retain"}}
    }))
    .unwrap();
    let ms = c
        .managed()
        .create(&PostParams::default(), &ms)
        .await
        .unwrap();
    let uid = ms.metadata.uid.clone().unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "kept", "annotations": {OWNER_UID_ANNOTATION: uid},
                     "ownerReferences": [{"apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret", "name": "kept", "uid": uid, "controller": true}]},
        "stringData": {"password": "x"}
    }))
    .unwrap();
    c.secrets()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    c.managed()
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();

    let release = |extra: &'static [&'static str]| {
        let mut cmd = Command::new(BIN);
        cmd.env("KUBECONFIG", &kubeconfig)
            .args(["release-finalizers", "-n", &c.namespace])
            .args(extra);
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let (code, out) = release(&["--dry-run"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        format!(
            "{}/kept: would give its Secret back (Retain) and remove the finalizer\n",
            c.namespace
        )
    );
    assert!(
        c.managed().get("kept").await.is_ok(),
        "a dry run changes nothing"
    );

    let (code, out) = release(&[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        format!(
            "{}/kept: Secret given back (Retain), finalizer removed\n",
            c.namespace
        )
    );
    c.wait_ms_gone("kept").await;
    // Retain: the Secret stays, without our ownerReference (the garbage collector leaves it).
    let s = wait_for("the Secret released", DEADLINE, || async {
        let s = c.secrets().get("kept").await.ok()?;
        s.metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty())
            .then_some(s)
    })
    .await;
    assert_eq!(s.data.unwrap().len(), 1);
    let (code, out) = release(&["--all"]);
    assert_eq!(code, Some(0));
    assert_eq!(out, "no ManagedSecret to release\n");
    let _: Api<Secret> = c.secrets();
}
