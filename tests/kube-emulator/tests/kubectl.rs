//! The emulator driven by the real kubectl binary: the commands of the recorded kubectl flows.

mod common;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// kubectl from $KUBECTL, the PATH, or the copy unpacked by scripts/setup-tools.sh.
fn kubectl_bin() -> PathBuf {
    if let Ok(k) = std::env::var("KUBECTL") {
        return k.into();
    }
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        return "kubectl".into();
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/kubectl");
    assert!(
        local.exists(),
        "kubectl not found: run scripts/setup-tools.sh or set KUBECTL"
    );
    local
}

struct K {
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl K {
    fn new(api: &common::Api) -> K {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.emu.write_kubeconfig(&kubeconfig).unwrap();
        K {
            kubeconfig,
            _dir: dir,
        }
    }
    /// Runs kubectl (off the async runtime) and returns (success, stdout, stderr).
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(String::from);
        let kc = self.kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = Command::new(kubectl_bin())
                .args(&args)
                .env("KUBECONFIG", &kc)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("kubectl runs");
            if let Some(s) = stdin {
                child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
            } else {
                drop(child.stdin.take());
            }
            let out = child.wait_with_output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .unwrap()
    }
    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.run(args, stdin).await;
        assert!(ok, "kubectl {args:?} failed: {err}\n{out}");
        out
    }
}

const CRD_YAML: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.reference.test}
spec:
  group: reference.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, required: [size], properties: {size: {type: integer, minimum: 1}}}
          status: {type: object, properties: {conditions: {type: array, items: {type: object, properties: {type: {type: string}, status: {type: string}}}}}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_patch_label_wait_delete_on_a_crd() {
    let api = common::start().await;
    let k = K::new(&api);
    assert!(k
        .ok(&["apply", "-f", "-"], Some(CRD_YAML))
        .await
        .contains("created"));
    k.ok(
        &[
            "wait",
            "--for=condition=Established",
            "crd/widgets.reference.test",
            "--timeout=10s",
        ],
        None,
    )
    .await;
    let w = "apiVersion: reference.test/v1\nkind: Widget\nmetadata: {name: w1, namespace: ref}\nspec: {size: 3}\n";
    assert!(k
        .ok(&["apply", "-f", "-"], Some(w))
        .await
        .contains("w1 created"));
    assert!(k
        .ok(
            &["apply", "-f", "-"],
            Some(&w.replace("size: 3", "size: 4"))
        )
        .await
        .contains("w1 configured"));
    assert!(k
        .ok(
            &["apply", "-f", "-"],
            Some(&w.replace("size: 3", "size: 4"))
        )
        .await
        .contains("w1 unchanged"));
    let w8 = w.replace("w1", "w8");
    assert!(k
        .ok(&["apply", "--server-side", "-f", "-"], Some(&w8))
        .await
        .contains("serverside-applied"));
    let (ok, _, err) = k
        .run(
            &["apply", "-f", "-"],
            Some(&w.replace("w1", "bad").replace("size: 3", "size: 0")),
        )
        .await;
    assert!(
        !ok && err.contains("spec.size"),
        "schema errors reach kubectl: {err}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &k.ok(&["get", "widget", "w1", "-n", "ref", "-o", "json"], None)
            .await,
    )
    .unwrap();
    assert_eq!(json["spec"]["size"], 4);
    assert_eq!(json["metadata"]["generation"], 2);
    k.ok(
        &[
            "patch",
            "widget",
            "w1",
            "-n",
            "ref",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
        ],
        None,
    )
    .await;
    k.ok(&["label", "widget", "w1", "-n", "ref", "team=a"], None)
        .await;
    k.ok(
        &[
            "wait",
            "--for=condition=Ready",
            "widget/w1",
            "-n",
            "ref",
            "--timeout=10s",
        ],
        None,
    )
    .await;
    let table = k
        .ok(&["get", "wd", "-n", "ref", "--show-labels"], None)
        .await;
    let row = table.lines().find(|l| l.starts_with("w1")).unwrap();
    assert!(
        row.contains(" 4 ") && row.contains("True") && row.contains("team=a"),
        "printer columns in kubectl get: {table}"
    );
    assert!(k.ok(&["api-resources"], None).await.contains("widgets"));
    assert!(k
        .ok(&["delete", "widget", "w8", "-n", "ref"], None)
        .await
        .contains("deleted"));
    let (ok, _, err) = k.run(&["get", "widget", "w8", "-n", "ref"], None).await;
    assert!(!ok && err.contains("NotFound"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_restart_history_and_status_of_a_deployment() {
    let api = common::start().await;
    let k = K::new(&api);
    let dep = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: ref}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: web, image: nginx, envFrom: [{secretRef: {name: s1}}]}\n";
    k.ok(&["apply", "-f", "-"], Some(dep)).await;
    k.ok(
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "ref",
            "--timeout=10s",
        ],
        None,
    )
    .await;
    assert!(k
        .ok(&["rollout", "restart", "deployment/web", "-n", "ref"], None)
        .await
        .contains("restarted"));
    k.ok(
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "ref",
            "--timeout=10s",
        ],
        None,
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let hist = k
            .ok(&["rollout", "history", "deployment/web", "-n", "ref"], None)
            .await;
        if hist.lines().any(|l| l.trim_start().starts_with('2')) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no revision 2 in: {hist}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Client-side apply of a built-in kind merges containers strategically.
    k.ok(
        &["apply", "-f", "-"],
        Some(&dep.replace("image: nginx", "image: nginx:1.27")),
    )
    .await;
    let img = k.ok(&["get", "deploy", "web", "-n", "ref", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.metadata.annotations}"], None).await;
    assert!(
        img.starts_with("nginx:1.27") && img.contains("kubectl.kubernetes.io/restartedAt"),
        "{img}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_sees_changes() {
    let api = common::start().await;
    let k = K::new(&api);
    k.ok(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1, namespace: ref}\ndata: {a: '1'}\n")).await;
    let watch = k.run(
        &[
            "get",
            "configmaps",
            "-n",
            "ref",
            "-w",
            "--request-timeout=3s",
        ],
        None,
    );
    let change =
        async {
            // Change things once kubectl's watch is open (the emulator counts the watch request).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let watching =
                    api.emu.state.admin.lock().unwrap().counters.iter().any(
                        |((verb, res, _), n)| verb == "watch" && res == "configmaps" && *n > 0,
                    );
                if watching {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "kubectl never opened its watch"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            k.ok(&["label", "configmap", "c1", "-n", "ref", "seen=yes"], None)
                .await;
            k.ok(
                &["apply", "-f", "-"],
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c2, namespace: ref}\n"),
            )
            .await;
        };
    let ((_, out, _), _) = tokio::join!(watch, change);
    assert!(
        out.lines().filter(|l| l.starts_with("c1")).count() >= 2,
        "initial row and the change: {out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("c2")),
        "new object in the watch: {out}"
    );
}

/// `kubectl auth can-i` (SelfSubjectAccessReview, with impersonation for `--as`) and
/// `kubectl auth can-i --list` (SelfSubjectRulesReview) answer from the RBAC objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_answers_from_rbac() {
    let api = common::start().await;
    let k = K::new(&api);
    k.ok(
        &["apply", "-f", "-"],
        Some(
            r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: op, namespace: ref}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: op, namespace: ref}
rules:
- {apiGroups: [""], resources: [secrets], verbs: [get, patch]}
- {apiGroups: [apps], resources: [deployments/status], verbs: [patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: op, namespace: ref}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: op}
subjects: [{kind: ServiceAccount, name: op, namespace: ref}]
"#,
        ),
    )
    .await;
    let sa = "system:serviceaccount:ref:op";
    let can = |args: Vec<&'static str>| {
        let k = &k;
        async move {
            let mut a = vec!["auth", "can-i"];
            a.extend(args);
            let (_, out, _) = k.run(&a, None).await;
            out.trim().to_string()
        }
    };
    assert_eq!(
        can(vec!["create", "secrets", "-n", "ref"]).await,
        "yes",
        "admin"
    );
    assert_eq!(
        can(vec!["patch", "secrets", "-n", "ref", "--as", sa]).await,
        "yes"
    );
    assert_eq!(
        can(vec!["create", "secrets", "-n", "ref", "--as", sa]).await,
        "no"
    );
    assert_eq!(
        can(vec!["patch", "secrets", "-n", "default", "--as", sa]).await,
        "no",
        "a Role grants in its own namespace only"
    );
    assert_eq!(
        can(vec![
            "patch",
            "deployments",
            "--subresource",
            "status",
            "-n",
            "ref",
            "--as",
            sa
        ])
        .await,
        "yes"
    );
    assert_eq!(
        can(vec!["patch", "deployments", "-n", "ref", "--as", sa]).await,
        "no"
    );
    let list = k
        .ok(&["auth", "can-i", "--list", "-n", "ref", "--as", sa], None)
        .await;
    assert!(
        list.lines()
            .any(|l| l.starts_with("secrets ") && l.contains("[get patch]")),
        "{list}"
    );
}
