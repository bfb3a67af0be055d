//! Conformance with the transcripts recorded from a real Kubernetes 1.24 API server
//! (`reference/http/*.json`, copied from the project's shared kube-api-reference).
//!
//! Every exchange is replayed in order against one emulator. The status code must be equal; the
//! response body must contain every field of the recorded one with an equal value, after normalizing
//! what differs between runs (uids, timestamps, resourceVersions, managedFields) and leaving out the
//! few places where the emulator is documented to differ (`DEVIATIONS`).

mod common;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

fn reference_dir() -> std::path::PathBuf {
    // Where the sources are now (a test binary built elsewhere and reused must not look there).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .join("reference/http")
}

fn load(name: &str) -> Value {
    let p = reference_dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}")))
        .unwrap()
}

/// Paths (dotted, `*` for any list item) not compared, per exchange, with the reason.
const DEVIATIONS: &[(&str, &str, &str)] = &[
    // No Pods run in either; the emulator reports the rollout complete where the real server waits forever.
    (
        "after the controller: revision 1, status",
        "status",
        "simulated ready Pods",
    ),
    (
        "revision 2, generation 2, observedGeneration 2",
        "status",
        "simulated ready Pods",
    ),
    (
        "SSA of a pod-template annotation (how an operator triggers a rollout)",
        "status",
        "simulated ready Pods",
    ),
    (
        "strategic merge patch merges containers by name",
        "status",
        "simulated ready Pods",
    ),
    (
        "StatefulSet status after the controller",
        "status",
        "simulated ready Pods",
    ),
    // The pod-template-hash is a hash of Go's struct printing; the emulator hashes JSON instead.
    (
        "two ReplicaSets with pod-template-hash and revision annotations",
        "items",
        "hash-derived names; compared structurally below",
    ),
    (
        "ControllerRevisions (StatefulSet/DaemonSet history)",
        "items",
        "hash-derived names; compared structurally below",
    ),
    // Events written by the real controllers (ScalingReplicaSet, SuccessfulCreate) are not emulated.
    (
        "the same Event through core/v1",
        "items",
        "controller events; our own event compared below",
    ),
    // The version of the emulator is its own.
    (
        "SA: a non-resource URL it has (via system:discovery/system:public-info-viewer) -> 200",
        "gitVersion",
        "the emulator's own version",
    ),
    (
        "SA: a non-resource URL it has (via system:discovery/system:public-info-viewer) -> 200",
        "gitCommit",
        "the emulator's own version",
    ),
    (
        "SA: a non-resource URL it has (via system:discovery/system:public-info-viewer) -> 200",
        "buildDate",
        "the emulator's own version",
    ),
    (
        "SA: merge-patch the Deployment (deployments patch) -> 200",
        "status",
        "simulated ready Pods",
    ),
    // The root CA ConfigMap is published by kube-controller-manager in every namespace.
    (
        "watch without resourceVersion: synthetic ADDED for current objects first",
        "stream",
        "no kube-root-ca.crt",
    ),
];

fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                match k.as_str() {
                    "uid"
                    | "resourceVersion"
                    | "creationTimestamp"
                    | "managedFields"
                    | "lastTransitionTime"
                    | "lastUpdateTime"
                    | "time"
                    | "eventTime"
                    | "deletionTimestamp"
                    | "acquireTime"
                    | "renewTime"
                    | "continue"
                    | "expirationTimestamp" => {
                        out.insert(k.clone(), json!("<normalized>"));
                    }
                    _ => {
                        out.insert(k.clone(), normalize(x));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// Every field of `want` is in `got` with an equal value; returns the differing paths.
fn missing(want: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match g.get(k) {
                    Some(gv) => missing(wv, gv, &p, out),
                    None if wv.is_null() => {}
                    None => out.push(format!("{p}: missing (want {wv})")),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                out.push(format!("{path}: {} items, want {}", g.len(), w.len()));
                return;
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                missing(wv, gv, &format!("{path}[{i}]"), out);
            }
        }
        (w, g) if w == &json!("<normalized>") && !g.is_null() => {}
        (w, g) => {
            if w != g {
                out.push(format!("{path}: got {g}, want {w}"));
            }
        }
    }
}

fn without(v: &Value, key: &str) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove(key);
    }
    v
}

struct Replay {
    api: common::Api,
    /// Bearer tokens issued by TokenRequest exchanges, by ServiceAccount (`ns/name`).
    tokens: HashMap<String, String>,
    /// name -> uid of objects created so far (to fill `<uid>` in recorded request bodies).
    uids: HashMap<String, String>,
    /// recorded resourceVersion -> ours.
    rvs: HashMap<String, String>,
    failures: Vec<String>,
}

impl Replay {
    fn new(api: common::Api) -> Self {
        Replay {
            api,
            tokens: HashMap::new(),
            uids: HashMap::new(),
            rvs: HashMap::new(),
            failures: vec![],
        }
    }

    fn assert_no_differences(&self) {
        assert!(
            self.failures.is_empty(),
            "{} differences from the recorded server:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }

    fn learn(&mut self, want: &Value, got: &Value) {
        if let (Some(n), Some(u)) = (
            got.pointer("/metadata/name").and_then(Value::as_str),
            got.pointer("/metadata/uid").and_then(Value::as_str),
        ) {
            self.uids.insert(n.to_string(), u.to_string());
        }
        if let (Some(w), Some(g)) = (
            want.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str),
            got.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str),
        ) {
            self.rvs.insert(w.to_string(), g.to_string());
        }
    }

    fn fill(&self, body: &Value) -> Value {
        let mut b = body.clone();
        if let Some(refs) = b
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        {
            for r in refs {
                let owner = r["name"].as_str().unwrap_or("").to_string();
                if let Some(u) = self.uids.get(&owner) {
                    r["uid"] = json!(u);
                }
            }
        }
        if let Some(rv) = b
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from)
        {
            if let Some(ours) = self.rvs.get(&rv) {
                b["metadata"]["resourceVersion"] = json!(ours);
            }
        }
        let s = b
            .to_string()
            .replace("\"<timestamp>\"", &format!("\"{}\"", chrono_now()));
        serde_json::from_str(&s).unwrap()
    }

    async fn exchange(&mut self, file: &str, e: &Value) {
        let what = e["what"].as_str().unwrap();
        let req = &e["request"];
        let resp = &e["response"];
        let method = req["method"].as_str().unwrap();
        let path = req["path"].as_str().unwrap();
        let ctype = req["content_type"].as_str().unwrap_or("application/json");
        let body = match &req["body"] {
            Value::Null if what.contains("over 1 MiB") => Some(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "huge"}, "stringData": {"k": "x".repeat(1024 * 1024 + 1)}}),
            ),
            Value::Null => None,
            Value::String(s) => Some(self.fill(&serde_json::from_str::<Value>(s).unwrap())),
            b => Some(self.fill(b)),
        };
        let want_code = resp["status"].as_u64().unwrap() as u16;
        // Who the recorded client was: the administrator unless the exchange says otherwise.
        let auth = req["auth"].as_str().unwrap_or("admin (system:masters)");
        let headers: Vec<(String, String)> = req["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let token = match auth {
            a if a.starts_with("admin") => Some(kube_emulator::auth::ADMIN_TOKEN.to_string()),
            "none" => None,
            "invalid token" => Some("not-a-token-the-server-issued".to_string()),
            a => {
                let sa = a
                    .strip_prefix("ServiceAccount ")
                    .and_then(|r| r.strip_suffix(" token"))
                    .unwrap_or_else(|| panic!("{file}: {what}: unknown auth {a:?}"));
                Some(
                    self.tokens
                        .get(sa)
                        .cloned()
                        .unwrap_or_else(|| panic!("{file}: {what}: no token issued for {sa} yet")),
                )
            }
        };
        let (code, got) = if auth != "admin (system:masters)" || !headers.is_empty() {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            self.api
                .send_as(token.as_deref(), &h, method, path, ctype, body)
                .await
        } else if let Some(accept) = req["accept"].as_str() {
            let r = self
                .api
                .http
                .get(self.api.url(path))
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        } else {
            self.api.send(method, path, ctype, body).await
        };
        let label = format!("{file}: {what}");
        if code != want_code {
            self.failures
                .push(format!("{label}: status {code}, want {want_code}: {got}"));
            return;
        }
        let mut want = resp["body"].clone();
        self.learn(&want, &got);
        if let (Some(t), Some(ns), Some(name)) = (
            got.pointer("/status/token").and_then(Value::as_str),
            got.pointer("/metadata/namespace").and_then(Value::as_str),
            got.pointer("/metadata/name").and_then(Value::as_str),
        ) {
            self.tokens.insert(format!("{ns}/{name}"), t.to_string());
            // The token itself differs on every run.
            want["status"]["token"] = json!("<normalized>");
        }
        let mut got_n = normalize(&got);
        for (w, key, _) in DEVIATIONS {
            if *w == what {
                want = without(&want, key);
                got_n = without(&got_n, key);
            }
        }
        if want.is_null() {
            return;
        }
        let mut diffs = vec![];
        if want["kind"] == "Status" {
            for k in ["kind", "status", "reason", "code", "message"] {
                if want[k] != got[k] {
                    diffs.push(format!("{k}: got {}, want {}", got[k], want[k]));
                }
            }
            let fields = |v: &Value| {
                let mut f: Vec<String> = v
                    .pointer("/details/causes")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|c| format!("{}|{}", c["field"], c["reason"]))
                            .collect()
                    })
                    .unwrap_or_default();
                f.sort();
                f
            };
            if fields(&want) != fields(&got) {
                diffs.push(format!(
                    "causes: got {:?}, want {:?}",
                    fields(&got),
                    fields(&want)
                ));
            }
        } else {
            missing(&normalize(&want), &got_n, "", &mut diffs);
        }
        if !diffs.is_empty() {
            self.failures
                .push(format!("{label}:\n    {}", diffs.join("\n    ")));
        }
    }
}

fn chrono_now() -> String {
    // RFC 3339 with microseconds: valid for both Time and MicroTime fields.
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, dd) = civil(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[tokio::test]
async fn responses_match_the_recorded_kubernetes_1_24_server() {
    let api = common::start().await;
    let mut r = Replay::new(api);
    for file in [
        "02-crd-lifecycle.json",
        "03-objects-and-errors.json",
        "04-server-side-apply.json",
        "05-secrets-validation.json",
        "07-deletion.json",
        "08-workload-rollout.json",
        "09-events-and-leases.json",
    ] {
        let doc = load(file);
        for e in doc["exchanges"].as_array().unwrap() {
            let what = e["what"].as_str().unwrap();
            // Wait for the asynchronous controllers the recording waited for.
            if what.starts_with("CRD with status.conditions") {
                r.api.wait_for("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.reference.test", |v| v.pointer("/status/conditions/1").is_some()).await;
            }
            if what.starts_with("after the controller") {
                r.api
                    .wait_for("/apis/apps/v1/namespaces/ref/deployments/web", |v| {
                        v.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                            .is_some()
                    })
                    .await;
            }
            if what.starts_with("revision 2") {
                r.api
                    .wait_for("/apis/apps/v1/namespaces/ref/deployments/web", |v| {
                        v.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                            == Some(&json!("2"))
                    })
                    .await;
            }
            if what.starts_with("StatefulSet status") || what.starts_with("ControllerRevisions") {
                r.api
                    .wait_for("/apis/apps/v1/namespaces/ref/statefulsets/db", |v| {
                        v.pointer("/status/currentRevision").is_some()
                    })
                    .await;
                r.api
                    .wait_for("/apis/apps/v1/namespaces/ref/daemonsets/agent", |v| {
                        v.pointer("/status/observedGeneration").is_some()
                    })
                    .await;
            }
            if what.starts_with("dependent collected") {
                r.api
                    .wait_gone("/api/v1/namespaces/ref/secrets/owned")
                    .await;
            }
            r.exchange(file, e).await;
        }
    }
    // The structural checks for the exchanges whose names are hash-derived.
    let (_, rs) = r
        .api
        .get("/apis/apps/v1/namespaces/ref/replicasets?labelSelector=app%3Dweb")
        .await;
    let mut revs: Vec<String> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    revs.sort();
    if revs != ["1", "2"] && revs != ["1", "2", "3"] {
        r.failures.push(format!("ReplicaSet revisions: {revs:?}"));
    }
    let (_, crs) = r
        .api
        .get("/apis/apps/v1/namespaces/ref/controllerrevisions")
        .await;
    let owners: Vec<String> = crs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["metadata"]["ownerReferences"][0]["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    if !(owners.contains(&"StatefulSet".to_string()) && owners.contains(&"DaemonSet".to_string())) {
        r.failures
            .push(format!("ControllerRevision owners: {owners:?}"));
    }
    let (_, evs) = r.api.get("/api/v1/namespaces/ref/events").await;
    let ours = evs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["metadata"]["name"] == "w1.ev1")
        .cloned()
        .unwrap_or(Value::Null);
    let mut diffs = vec![];
    missing(
        &json!({"involvedObject": {"kind": "Widget", "name": "w1"}, "reason": "Synced", "message": "Secret updated", "reportingComponent": "managedsecrets.io/controller", "reportingInstance": "pod-1", "action": "Sync", "type": "Normal"}),
        &ours,
        "event",
        &mut diffs,
    );
    r.failures.extend(diffs);
    r.assert_no_differences();
}

#[tokio::test]
async fn watch_streams_match_the_recorded_shapes() {
    let api = common::start().await;
    let doc = load("06-watch.json");
    let ex = doc["exchanges"].as_array().unwrap();
    let cm = "/api/v1/namespaces/ref/configmaps";
    let (_, l) = api.get(cm).await;
    let from = l["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let recorded: Vec<&Value> = ex[0]["response"]["stream"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let wpath =
        format!("{cm}?watch=1&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=2");
    let watch = api.watch_lines(&wpath, 4, std::time::Duration::from_secs(4));
    // The watch starts from the list's resourceVersion, so it sees these writes whenever it connects.
    let writer = async {
        // The writes the recording made, derived from its events.
        for ev in recorded.iter().filter(|e| e["type"] != "BOOKMARK") {
            let mut o = ev["object"].clone();
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "managedFields",
            ] {
                o["metadata"].as_object_mut().unwrap().remove(k);
            }
            match ev["type"].as_str().unwrap() {
                "ADDED" => assert_eq!(api.post(cm, o).await.0, 201),
                "MODIFIED" => assert_eq!(
                    api.patch(
                        &format!("{cm}/cm1"),
                        "application/merge-patch+json",
                        json!({"data": o["data"]})
                    )
                    .await
                    .0,
                    200
                ),
                "DELETED" => assert_eq!(api.delete(&format!("{cm}/cm1"), None).await.0, 200),
                _ => {}
            }
        }
    };
    let (got, _) = tokio::join!(watch, writer);
    let kinds = |s: &[&Value]| {
        s.iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let got_refs: Vec<&Value> = got.iter().collect();
    assert_eq!(kinds(&got_refs)[..4], kinds(&recorded)[..4]);
    for (g, w) in got.iter().zip(&recorded).take(3) {
        let mut d = vec![];
        missing(
            &normalize(&w["object"]),
            &normalize(&g["object"]),
            "object",
            &mut d,
        );
        assert!(d.is_empty(), "{d:?}");
    }
    let mut d = vec![];
    missing(
        &normalize(&recorded[3]["object"]),
        &normalize(&got[3]["object"]),
        "bookmark",
        &mut d,
    );
    assert!(d.is_empty(), "{d:?}");
    // A selector that matches nothing: no lines.
    let none = api
        .watch_lines(
            &format!("{cm}?watch=1&labelSelector=app%3Dy&timeoutSeconds=1"),
            1,
            std::time::Duration::from_secs(3),
        )
        .await;
    assert_eq!(
        none.len(),
        ex[1]["response"]["stream"].as_array().unwrap().len()
    );
}

#[tokio::test]
async fn discovery_matches_the_recorded_server_for_the_emulated_kinds() {
    let api = common::start().await;
    let doc = load("01-discovery.json");
    let mut failures = vec![];
    for e in doc["exchanges"].as_array().unwrap() {
        let path = e["request"]["path"].as_str().unwrap();
        let want = &e["response"]["body"];
        if !(path.starts_with("/api/v1") || path.starts_with("/apis/"))
            || want["kind"] != "APIResourceList"
        {
            continue;
        }
        let (code, got) = api.get(path).await;
        assert_eq!(code, 200, "{path}");
        assert_eq!(got["groupVersion"], want["groupVersion"]);
        for g in got["resources"].as_array().unwrap() {
            let Some(w) = want["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["name"] == g["name"])
            else {
                continue;
            };
            for k in [
                "kind",
                "namespaced",
                "verbs",
                "shortNames",
                "categories",
                "group",
                "version",
            ] {
                let norm = |v: &Value| {
                    let mut v = v.clone();
                    if let Some(a) = v.as_array_mut() {
                        a.sort_by_key(|x| x.to_string());
                    }
                    v
                };
                if norm(&g[k]) != norm(&w[k]) {
                    failures.push(format!(
                        "{path} {}: {k} got {}, want {}",
                        g["name"], g[k], w[k]
                    ));
                }
            }
        }
    }
    let (_, v) = api.get("/version").await;
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("24"))
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Authentication and RBAC (`10-authorization.json`): every exchange, with the recorded client's
/// credentials (the administrator, the ServiceAccount's TokenRequest token, none, an invalid
/// one) and impersonation headers.
#[tokio::test]
async fn authorization_matches_the_recorded_rbac_server() {
    let api = common::start().await;
    // What the recording had before its first exchange: the namespace, a ConfigMap and a
    // Deployment (its generation 2, as recorded).
    let (c, _) = api
        .post(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "authz"}}),
        )
        .await;
    assert_eq!(c, 201);
    let (c, _) = api
        .post(
            "/api/v1/namespaces/authz/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "named"}}),
        )
        .await;
    assert_eq!(c, 201);
    let (c, v) = api
        .post(
            "/apis/apps/v1/namespaces/authz/deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
                            "template": {"metadata": {"labels": {"a": "b"}},
                                         "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        )
        .await;
    assert_eq!(c, 201, "{v}");
    let (c, v) = api
        .patch(
            "/apis/apps/v1/namespaces/authz/deployments/d",
            "application/merge-patch+json",
            json!({"spec": {"replicas": 1}}),
        )
        .await;
    assert_eq!(c, 200, "{v}");
    let mut r = Replay::new(api);
    let file = "10-authorization.json";
    let doc = load(file);
    for e in doc["exchanges"].as_array().unwrap() {
        r.exchange(file, e).await;
    }
    r.assert_no_differences();
}
