//! Validating admission webhooks, called as a real API server calls them: a small HTTPS webhook
//! server runs in each test (its own CA, a certificate for 127.0.0.1 and `hook.ref.svc`) and is
//! registered through the API with a ValidatingWebhookConfiguration.

mod common;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const W: &str = "/apis/reference.test/v1/namespaces/ref/widgets";
const CM: &str = "/api/v1/namespaces/ref/configmaps";
const VWC: &str = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";

fn widget(name: &str, size: i64) -> Value {
    json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": size, "color": "red"}})
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

/// A CA and a serving certificate signed by it for 127.0.0.1, localhost and `hook.ref.svc`.
fn certificates() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "webhook-ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let names = ["127.0.0.1", "localhost", "hook.ref.svc"].map(String::from);
    let cert = rcgen::CertificateParams::new(names.to_vec())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca_cert.pem(), Arc::new(cfg))
}

/// The webhook: what it answers depends on the path it is called at; it keeps every review.
struct Webhook {
    addr: SocketAddr,
    ca_bundle: String,
    reviews: Arc<Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer at `path` to `review`: (HTTP code, body, delay).
fn answer(path: &str, review: &Value) -> (u16, String, Duration) {
    let uid = review["request"]["uid"].clone();
    let reply = |extra: Value| {
        let mut r = json!({"uid": uid, "allowed": true});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        let body =
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": r});
        (200, body.to_string(), Duration::ZERO)
    };
    let size = review["request"]["object"]["spec"]["size"]
        .as_i64()
        .unwrap_or(0);
    match path {
        "/deny" => {
            reply(json!({"allowed": false, "status": {"message": "widgets are closed today"}}))
        }
        "/forbid" => reply(
            json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "not yours"}}),
        ),
        "/silent" => reply(json!({"allowed": false})),
        "/warn" => reply(json!({"warnings": ["size is deprecated", "say \"please\""]})),
        "/big" if size > 10 => reply(
            json!({"allowed": false, "status": {"message": format!("size {size} is too big"), "code": 422, "reason": "Invalid"}}),
        ),
        "/wrong-uid" => reply(json!({"uid": "someone-else"})),
        "/error" => (500, "boom".into(), Duration::ZERO),
        "/slow" => (
            reply(json!({})).0,
            reply(json!({})).1,
            Duration::from_secs(3),
        ),
        "/slowish" => (
            reply(json!({})).0,
            reply(json!({})).1,
            Duration::from_millis(1500),
        ),
        _ => reply(json!({})),
    }
}

async fn handle(
    reviews: Arc<Mutex<Vec<(String, Value)>>>,
    req: axum::http::Request<axum::body::Body>,
) -> axum::http::Response<axum::body::Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap();
    let mut review: Value = serde_json::from_slice(&body).unwrap();
    review["query"] = json!(query);
    reviews.lock().unwrap().push((path.clone(), review.clone()));
    let (code, text, delay) = answer(&path, &review);
    tokio::time::sleep(delay).await;
    let ctype = if code == 200 {
        "application/json"
    } else {
        "text/plain"
    };
    axum::http::Response::builder()
        .status(code)
        .header("content-type", ctype)
        .body(axum::body::Body::from(text))
        .unwrap()
}

impl Webhook {
    async fn start() -> Webhook {
        let (ca_pem, tls) = certificates();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reviews: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let seen = reviews.clone();
        let app = axum::Router::new().fallback(move |req| handle(seen.clone(), req));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&ca_pem);
        Webhook {
            addr,
            ca_bundle,
            reviews,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// A webhook entry calling `path`, with `rules`, failing closed, and `extra` fields.
    fn entry(&self, name: &str, path: &str, rules: Value, extra: Value) -> Value {
        let mut h = json!({"name": name, "clientConfig": {"url": self.url(path), "caBundle": self.ca_bundle},
            "rules": rules, "sideEffects": "None", "admissionReviewVersions": ["v1"]});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    }

    fn reviews(&self) -> Vec<(String, Value)> {
        self.reviews.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.reviews.lock().unwrap().clear();
    }
}

/// The request of the first review the webhook got since the last call, which forgets them.
fn first_request(hook: &Webhook) -> Value {
    let first = hook.reviews()[0].1["request"].clone();
    hook.clear();
    first
}

fn rule(ops: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!([{"operations": ops, "apiGroups": groups, "apiVersions": ["*"], "resources": resources}])
}

fn widgets_rule() -> Value {
    rule(&["*"], &["reference.test"], &["widgets"])
}

/// Registers a ValidatingWebhookConfiguration with these webhooks.
async fn register(api: &Api, name: &str, webhooks: Vec<Value>) {
    let cfg = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name}, "webhooks": webhooks});
    let (c, v) = api.post(VWC, cfg).await;
    assert_eq!(c, 201, "{v}");
}

async fn setup() -> (Api, Webhook) {
    let api = start().await;
    api.create_widget_crd().await;
    (api, Webhook::start().await)
}

#[tokio::test]
async fn a_denial_refuses_the_write_with_the_webhooks_message_and_stores_nothing() {
    let (api, hook) = setup().await;
    register(
        &api,
        "deny",
        vec![hook.entry("deny.reference.test", "/deny", widgets_rule(), json!({}))],
    )
    .await;
    let (c, e) = api.post(W, widget("w1", 1)).await;
    assert_eq!(c, 400, "{e}");
    assert_eq!(
        e,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 400,
               "message": "admission webhook \"deny.reference.test\" denied the request: widgets are closed today"})
    );
    assert_eq!(api.get(&format!("{W}/w1")).await.0, 404);
    // Other kinds are not matched; the configuration is read at call time.
    assert_eq!(api.post(CM, configmap("c1")).await.0, 201);
    assert_eq!(api.delete(&format!("{VWC}/deny"), None).await.0, 200);
    assert_eq!(api.post(W, widget("w1", 1)).await.0, 201);
    // Without a message the denial says so.
    register(
        &api,
        "silent",
        vec![hook.entry(
            "silent.reference.test",
            "/silent",
            widgets_rule(),
            json!({}),
        )],
    )
    .await;
    let (c, e) = api.post(W, widget("w2", 1)).await;
    assert_eq!(c, 400);
    assert_eq!(
        e["message"],
        "admission webhook \"silent.reference.test\" denied the request without explanation"
    );
}

#[tokio::test]
async fn a_status_code_of_400_or_more_and_its_reason_pass_through() {
    let (api, hook) = setup().await;
    register(
        &api,
        "forbid",
        vec![hook.entry(
            "forbid.reference.test",
            "/forbid",
            widgets_rule(),
            json!({}),
        )],
    )
    .await;
    let (c, e) = api.post(W, widget("w1", 1)).await;
    assert_eq!(c, 403);
    assert_eq!(e["reason"], "Forbidden");
    assert_eq!(
        e["message"],
        "admission webhook \"forbid.reference.test\" denied the request: not yours"
    );
}

#[tokio::test]
async fn the_review_of_a_create_carries_the_caller_and_the_object_as_stored() {
    let (api, hook) = setup().await;
    register(
        &api,
        "watch",
        vec![hook.entry("watch.reference.test", "/allow", widgets_rule(), json!({}))],
    )
    .await;
    let admin = Some(kube_emulator::auth::ADMIN_TOKEN);
    let jane = [
        ("Impersonate-User", "jane"),
        ("Impersonate-Uid", "u-42"),
        ("Impersonate-Group", "system:masters"),
    ];
    let (c, w1) = api
        .send_as(
            admin,
            &jane,
            "POST",
            &format!("{W}?fieldManager=tester"),
            "application/json",
            Some(widget("w1", 1)),
        )
        .await;
    assert_eq!(c, 201, "{w1}");
    let reviews = hook.reviews();
    assert_eq!(reviews.len(), 1);
    let (path, r) = &reviews[0];
    assert_eq!(
        (path.as_str(), r["query"].as_str()),
        ("/allow", Some("timeout=10s"))
    );
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["kind"], "AdmissionReview");
    let req = &r["request"];
    assert_eq!(req["uid"].as_str().unwrap().len(), 36);
    assert_eq!(
        req["kind"],
        json!({"group": "reference.test", "version": "v1", "kind": "Widget"})
    );
    assert_eq!(
        req["resource"],
        json!({"group": "reference.test", "version": "v1", "resource": "widgets"})
    );
    assert_eq!(req["requestKind"], req["kind"]);
    assert_eq!(req["requestResource"], req["resource"]);
    assert_eq!(req.get("subResource"), None);
    assert_eq!(
        (req["name"].as_str(), req["namespace"].as_str()),
        (Some("w1"), Some("ref"))
    );
    assert_eq!(req["operation"], "CREATE");
    assert_eq!(
        req["userInfo"],
        json!({"username": "jane", "uid": "u-42", "groups": ["system:masters", "system:authenticated"]})
    );
    let obj = &req["object"];
    assert_eq!(
        obj["metadata"]["uid"], w1["metadata"]["uid"],
        "as it is stored"
    );
    assert_eq!(obj["metadata"]["generation"], 1);
    assert_eq!(obj["metadata"].get("resourceVersion"), None);
    assert_eq!(obj["spec"], json!({"size": 1, "color": "red"}));
    assert_eq!(req["oldObject"], Value::Null);
    assert_eq!(req["dryRun"], false);
    assert_eq!(
        req["options"],
        json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "tester"})
    );
}

#[tokio::test]
async fn updates_dry_runs_and_deletes_are_reviewed_with_old_objects_and_options() {
    let (api, hook) = setup().await;
    let (_, w1) = api.post(W, widget("w1", 1)).await;
    register(
        &api,
        "watch",
        vec![hook.entry("watch.reference.test", "/allow", widgets_rule(), json!({}))],
    )
    .await;
    let mut w = w1.clone();
    w["spec"]["size"] = json!(2);
    assert_eq!(api.put(&format!("{W}/w1"), w).await.0, 200);
    let req = first_request(&hook);
    assert_eq!(req["operation"], "UPDATE");
    assert_eq!(req["object"]["spec"]["size"], 2);
    assert_eq!(req["object"]["metadata"]["generation"], 2);
    assert_eq!(
        req["object"]["metadata"]["resourceVersion"],
        w1["metadata"]["resourceVersion"]
    );
    assert_eq!(req["oldObject"]["spec"]["size"], 1);
    assert_eq!(
        req["options"],
        json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"})
    );
    // A dry run reaches webhooks without side effects, marked as one, and stores nothing.
    let (c, dry) = api.post(&format!("{W}?dryRun=All"), widget("w2", 3)).await;
    assert_eq!(c, 201);
    assert_eq!(dry["metadata"]["name"], "w2");
    let req = first_request(&hook);
    assert_eq!(req["dryRun"], true);
    assert_eq!(req["options"]["dryRun"], json!(["All"]));
    assert_eq!(api.get(&format!("{W}/w2")).await.0, 404);
    let opts =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"});
    assert_eq!(api.delete(&format!("{W}/w1"), Some(opts)).await.0, 200);
    let req = first_request(&hook);
    assert_eq!(req["operation"], "DELETE");
    assert_eq!(req["object"], Value::Null);
    assert_eq!(req["oldObject"]["spec"]["size"], 2);
    assert_eq!(
        req["options"],
        json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Foreground"})
    );
}

#[tokio::test]
async fn a_request_the_schema_refuses_never_reaches_a_webhook() {
    let (api, hook) = setup().await;
    register(
        &api,
        "watch",
        vec![hook.entry("watch.reference.test", "/allow", widgets_rule(), json!({}))],
    )
    .await;
    let (c, e) = api.post(W, widget("w1", 0)).await;
    assert_eq!(c, 422, "{e}");
    assert!(hook.reviews().is_empty());
}

#[tokio::test]
async fn status_writes_match_only_a_rule_naming_the_subresource() {
    let (api, hook) = setup().await;
    assert_eq!(api.post(W, widget("w1", 1)).await.0, 201);
    register(
        &api,
        "deny",
        vec![hook.entry("deny.reference.test", "/deny", widgets_rule(), json!({}))],
    )
    .await;
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let merge = "application/merge-patch+json";
    let (c, e) = api
        .patch(&format!("{W}/w1/status"), merge, status.clone())
        .await;
    assert_eq!(c, 200, "{e}");
    assert!(hook.reviews().is_empty());
    let sub = rule(&["UPDATE"], &["reference.test"], &["widgets/status"]);
    register(
        &api,
        "deny-status",
        vec![hook.entry("status.reference.test", "/deny", sub, json!({}))],
    )
    .await;
    api.delete(&format!("{VWC}/deny"), None).await;
    let (c, _) = api.patch(&format!("{W}/w1/status"), merge, status).await;
    assert_eq!(c, 400);
    let req = hook.reviews()[0].1["request"].clone();
    assert_eq!(req["subResource"], "status");
    assert_eq!(req["requestSubResource"], "status");
    assert_eq!(
        api.post(W, widget("w2", 1)).await.0,
        201,
        "the main resource is not matched"
    );
}

#[tokio::test]
async fn rules_select_by_operation_group_resource_and_wildcards() {
    let (api, hook) = setup().await;
    let update_only = rule(&["UPDATE"], &["reference.test"], &["widgets"]);
    register(
        &api,
        "updates",
        vec![hook.entry("updates.reference.test", "/deny", update_only, json!({}))],
    )
    .await;
    let (c, _) = api.post(W, widget("w1", 1)).await;
    assert_eq!(c, 201, "an UPDATE-only rule does not see CREATE");
    let merge = "application/merge-patch+json";
    assert_eq!(
        api.patch(&format!("{W}/w1"), merge, json!({"spec": {"size": 2}}))
            .await
            .0,
        400
    );
    assert_eq!(api.delete(&format!("{W}/w1"), None).await.0, 200);
    let core = rule(&["CREATE"], &[""], &["configmaps"]);
    register(
        &api,
        "core",
        vec![hook.entry("core.reference.test", "/deny", core, json!({}))],
    )
    .await;
    assert_eq!(api.post(CM, configmap("c1")).await.0, 400);
    assert_eq!(api.post(W, widget("w2", 1)).await.0, 201, "another group");
    let all = json!([{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}]);
    register(
        &api,
        "all",
        vec![hook.entry("all.reference.test", "/deny", all, json!({}))],
    )
    .await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    assert_eq!(
        api.post("/api/v1/namespaces/ref/secrets", secret).await.0,
        400
    );
    // Writes to the configurations themselves are never sent to webhooks.
    for name in ["all", "core", "updates"] {
        assert_eq!(
            api.delete(&format!("{VWC}/{name}"), None).await.0,
            200,
            "{name}"
        );
    }
}

#[tokio::test]
async fn namespace_and_object_selectors_decide_which_writes_are_sent() {
    let (api, hook) = setup().await;
    assert_eq!(api.post(W, json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "old", "labels": {"guard": "on"}}, "spec": {"size": 1}})).await.0, 201);
    let by_ns = json!({"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}});
    register(
        &api,
        "prod",
        vec![hook.entry("prod.reference.test", "/deny", widgets_rule(), by_ns)],
    )
    .await;
    assert_eq!(
        api.post(W, widget("w1", 1)).await.0,
        201,
        "namespace ref has no env label"
    );
    let merge = "application/merge-patch+json";
    let labels = json!({"metadata": {"labels": {"env": "prod"}}});
    assert_eq!(
        api.patch("/api/v1/namespaces/ref", merge, labels).await.0,
        200
    );
    assert_eq!(
        api.post(W, widget("w2", 1)).await.0,
        400,
        "the namespace's labels as stored now"
    );
    api.delete(&format!("{VWC}/prod"), None).await;
    let by_obj = json!({"objectSelector": {"matchLabels": {"guard": "on"}}});
    register(
        &api,
        "guarded",
        vec![hook.entry("guarded.reference.test", "/deny", widgets_rule(), by_obj)],
    )
    .await;
    assert_eq!(
        api.post(W, widget("w3", 1)).await.0,
        201,
        "no label, not sent"
    );
    let mut labelled = widget("w4", 1);
    labelled["metadata"]["labels"] = json!({"guard": "on"});
    assert_eq!(api.post(W, labelled).await.0, 400);
    // An update that removes the label is still sent: the old object matches.
    let unlabel = json!({"metadata": {"labels": {"guard": null}}});
    assert_eq!(api.patch(&format!("{W}/old"), merge, unlabel).await.0, 400);
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_webhook_that_is_down_fails_closed_under_fail_and_open_under_ignore() {
    let (api, hook) = setup().await;
    let port = closed_port().await;
    let mut down = hook.entry("down.reference.test", "/allow", widgets_rule(), json!({}));
    down["clientConfig"]["url"] = json!(format!("https://127.0.0.1:{port}/allow"));
    register(&api, "down", vec![down.clone()]).await;
    let (c, e) = api.post(W, widget("w1", 1)).await;
    assert_eq!(c, 500);
    assert_eq!(e["reason"], "InternalError");
    let why = format!("failed calling webhook \"down.reference.test\": failed to call webhook: Post \"https://127.0.0.1:{port}/allow?timeout=10s\": dial tcp 127.0.0.1:{port}: connect: connection refused");
    assert_eq!(e["message"], format!("Internal error occurred: {why}"));
    assert_eq!(e["details"], json!({"causes": [{"message": why}]}));
    down["failurePolicy"] = json!("Ignore");
    let patch = json!({"webhooks": [down]});
    let (c, v) = api
        .patch(
            &format!("{VWC}/down"),
            "application/merge-patch+json",
            patch,
        )
        .await;
    assert_eq!(c, 200, "{v}");
    assert_eq!(api.post(W, widget("w1", 1)).await.0, 201);
}

#[tokio::test]
async fn a_slow_webhook_times_out_after_its_timeout_seconds() {
    let (api, hook) = setup().await;
    let slow = hook.entry(
        "slow.reference.test",
        "/slow",
        widgets_rule(),
        json!({"timeoutSeconds": 1}),
    );
    register(&api, "slow", vec![slow]).await;
    let started = Instant::now();
    let (c, e) = api.post(W, widget("w1", 1)).await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c, 500);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.starts_with("Internal error occurred: failed calling webhook \"slow.reference.test\": failed to call webhook: Post \"https://127.0.0.1:"), "{msg}");
    assert!(
        msg.ends_with("/slow?timeout=1s\": context deadline exceeded"),
        "{msg}"
    );
    let ignore = hook.entry(
        "slow.reference.test",
        "/slow",
        widgets_rule(),
        json!({"timeoutSeconds": 1, "failurePolicy": "Ignore"}),
    );
    let (c, _) = api
        .patch(
            &format!("{VWC}/slow"),
            "application/merge-patch+json",
            json!({"webhooks": [ignore]}),
        )
        .await;
    assert_eq!(c, 200);
    assert_eq!(api.post(W, widget("w1", 1)).await.0, 201);
}

#[tokio::test]
async fn tls_is_verified_against_exactly_the_ca_bundle() {
    let (api, hook) = setup().await;
    let other = Webhook::start().await;
    let mut wrong = hook.entry("tls.reference.test", "/allow", widgets_rule(), json!({}));
    wrong["clientConfig"]["caBundle"] = json!(other.ca_bundle);
    register(&api, "tls", vec![wrong.clone()]).await;
    let (c, e) = api.post(W, widget("w1", 1)).await;
    assert_eq!(c, 500);
    let msg = e["message"].as_str().unwrap();
    let url = format!("https://{}/allow?timeout=10s", hook.addr);
    let unknown = format!("Post \"{url}\": x509: certificate signed by unknown authority");
    assert!(msg.contains(&unknown), "{msg}");
    // No caBundle: the system roots, which do not know the webhook's CA either.
    wrong["clientConfig"]
        .as_object_mut()
        .unwrap()
        .remove("caBundle");
    let (c, _) = api
        .patch(
            &format!("{VWC}/tls"),
            "application/merge-patch+json",
            json!({"webhooks": [wrong]}),
        )
        .await;
    assert_eq!(c, 200);
    let (c, e) = api.post(W, widget("w1", 1)).await;
    assert_eq!(c, 500);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("x509: certificate signed by unknown authority"));
    // The name is verified: `localhost` and `hook.ref.svc` are in the certificate,
    // `other.ref.svc` (the name a Service `other` is called by) is not.
    let tls = |url: Option<String>, service: Option<Value>| {
        let mut h = hook.entry("tls.reference.test", "/allow", widgets_rule(), json!({}));
        h["clientConfig"] = json!({"url": url, "service": service, "caBundle": hook.ca_bundle});
        json!({"webhooks": [h]})
    };
    let merge = "application/merge-patch+json";
    let localhost = format!("https://localhost:{}/allow", hook.addr.port());
    assert_eq!(
        api.patch(&format!("{VWC}/tls"), merge, tls(Some(localhost), None))
            .await
            .0,
        200
    );
    assert_eq!(api.post(W, widget("w1", 1)).await.0, 201);
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other"},
        "spec": {"ports": [{"port": 443}]}});
    assert_eq!(
        api.post("/api/v1/namespaces/ref/services", svc).await.0,
        201
    );
    let eps = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "other"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": hook.addr.port()}]}]});
    assert_eq!(
        api.post("/api/v1/namespaces/ref/endpoints", eps).await.0,
        201
    );
    let other = json!({"namespace": "ref", "name": "other", "path": "/allow"});
    assert_eq!(
        api.patch(&format!("{VWC}/tls"), merge, tls(None, Some(other)))
            .await
            .0,
        200
    );
    let (c, e) = api.post(W, widget("w2", 1)).await;
    assert_eq!(c, 500);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(
            "Post \"https://other.ref.svc:443/allow?timeout=10s\": x509: certificate is valid for "
        ),
        "{msg}"
    );
    assert!(msg.ends_with(", not other.ref.svc"), "{msg}");
}

#[tokio::test]
async fn an_answer_for_another_uid_or_an_error_status_is_a_failed_call() {
    let (api, hook) = setup().await;
    register(
        &api,
        "uid",
        vec![hook.entry(
            "uid.reference.test",
            "/wrong-uid",
            widgets_rule(),
            json!({}),
        )],
    )
    .await;
    let (c, e) = api.post(W, widget("w1", 1)).await;
    assert_eq!(c, 500);
    let uid = hook.reviews()[0].1["request"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        e["message"],
        format!("Internal error occurred: failed calling webhook \"uid.reference.test\": received invalid webhook response: expected response.uid={uid:?}, got \"someone-else\"")
    );
    api.delete(&format!("{VWC}/uid"), None).await;
    register(
        &api,
        "error",
        vec![hook.entry("error.reference.test", "/error", widgets_rule(), json!({}))],
    )
    .await;
    let (c, e) = api.post(W, widget("w1", 1)).await;
    assert_eq!(c, 500);
    assert_eq!(
        e["message"],
        "Internal error occurred: failed calling webhook \"error.reference.test\": failed to call webhook: an error on the server (\"boom\") has prevented the request from succeeding"
    );
}

#[tokio::test]
async fn warnings_become_warning_headers() {
    let (api, hook) = setup().await;
    register(
        &api,
        "warn",
        vec![hook.entry("warn.reference.test", "/warn", widgets_rule(), json!({}))],
    )
    .await;
    let resp = api
        .http
        .post(api.url(W))
        .json(&widget("w1", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let warnings: Vec<&str> = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        warnings,
        [
            "299 - \"size is deprecated\"",
            "299 - \"say \\\"please\\\"\""
        ]
    );
}

#[tokio::test]
async fn a_service_client_config_reaches_the_webhook_through_its_endpoints() {
    let (api, hook) = setup().await;
    let mut entry = hook.entry("svc.reference.test", "/deny", widgets_rule(), json!({}));
    entry["clientConfig"] = json!({"service": {"namespace": "ref", "name": "hook", "path": "/deny"}, "caBundle": hook.ca_bundle});
    register(&api, "svc", vec![entry]).await;
    let (_, cfg) = api.get(&format!("{VWC}/svc")).await;
    assert_eq!(cfg["webhooks"][0]["clientConfig"]["service"]["port"], 443);
    let failed = |why: &str| {
        format!("Internal error occurred: failed calling webhook \"svc.reference.test\": failed to call webhook: Post \"https://hook.ref.svc:443/deny?timeout=10s\": {why}")
    };
    let (c, e) = api.post(W, widget("w1", 1)).await;
    assert_eq!(
        (c, e["message"].as_str().unwrap()),
        (500, failed("service \"hook\" not found").as_str())
    );
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook"},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": hook.addr.port()}]}});
    assert_eq!(
        api.post("/api/v1/namespaces/ref/services", svc).await.0,
        201
    );
    let (_, e) = api.post(W, widget("w1", 1)).await;
    assert_eq!(e["message"], failed("endpoints \"hook\" not found"));
    let eps = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "hook"}, "subsets": []});
    assert_eq!(
        api.post("/api/v1/namespaces/ref/endpoints", eps).await.0,
        201
    );
    let (_, e) = api.post(W, widget("w1", 1)).await;
    assert_eq!(
        e["message"],
        failed("no endpoints available for service \"hook\"")
    );
    let subsets = json!({"subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": hook.addr.port()}]}]});
    let merge = "application/merge-patch+json";
    assert_eq!(
        api.patch("/api/v1/namespaces/ref/endpoints/hook", merge, subsets)
            .await
            .0,
        200
    );
    let (c, e) = api.post(W, widget("w1", 1)).await;
    assert_eq!(c, 400, "{e}");
    assert_eq!(
        e["message"],
        "admission webhook \"svc.reference.test\" denied the request: widgets are closed today"
    );
    assert_eq!(hook.reviews().last().unwrap().0, "/deny");
}

#[tokio::test]
async fn webhook_configurations_are_validated_and_defaulted_as_the_api_server_does() {
    let (api, hook) = setup().await;
    let (_, disc) = api.get("/apis/admissionregistration.k8s.io/v1").await;
    assert_eq!(
        disc["resources"][0]["name"],
        "validatingwebhookconfigurations"
    );
    assert_eq!(disc["resources"][0]["namespaced"], false);
    let good = hook.entry("good.reference.test", "/allow", widgets_rule(), json!({}));
    let cases = [
        (json!({"sideEffects": null}), "webhooks[0].sideEffects", "Required value: must specify one of None, NoneOnDryRun"),
        (json!({"name": "two.segments"}), "webhooks[0].name", "Invalid value: \"two.segments\": should be a domain with at least three segments separated by dots"),
        (json!({"clientConfig": {"url": "https://a.example.com/", "service": {"namespace": "ref", "name": "hook"}}}), "webhooks[0].clientConfig", "Required value: exactly one of url or service is required"),
        (json!({"clientConfig": {"url": "http://a.example.com/"}}), "webhooks[0].clientConfig.url", "Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]"),
        (json!({"timeoutSeconds": 31}), "webhooks[0].timeoutSeconds", "Invalid value: 31: the timeout value must be between 1 and 30 seconds"),
    ];
    for (change, field, message) in cases {
        let mut h = good.clone();
        for (k, v) in change.as_object().unwrap() {
            match v {
                Value::Null => drop(h.as_object_mut().unwrap().remove(k)),
                v => h[k] = v.clone(),
            }
        }
        let cfg = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "bad"}, "webhooks": [h]});
        let (c, e) = api.post(VWC, cfg).await;
        assert_eq!(c, 422, "{field}: {e}");
        assert_eq!(e["reason"], "Invalid");
        assert_eq!(e["details"]["kind"], "ValidatingWebhookConfiguration");
        assert_eq!(e["details"]["group"], "admissionregistration.k8s.io");
        assert_eq!(
            e["details"]["causes"],
            json!([{"reason": e["details"]["causes"][0]["reason"], "message": message, "field": field}])
        );
        assert_eq!(e["message"], format!("ValidatingWebhookConfiguration.admissionregistration.k8s.io \"bad\" is invalid: {field}: {message}"));
    }
    register(&api, "good", vec![good.clone()]).await;
    let (_, cfg) = api.get(&format!("{VWC}/good")).await;
    let w = &cfg["webhooks"][0];
    assert_eq!(
        (
            &w["failurePolicy"],
            &w["matchPolicy"],
            &w["timeoutSeconds"],
            &w["rules"][0]["scope"]
        ),
        (
            &json!("Fail"),
            &json!("Equivalent"),
            &json!(10),
            &json!("*")
        )
    );
    assert_eq!(
        (&w["namespaceSelector"], &w["objectSelector"]),
        (&json!({}), &json!({}))
    );
    assert_eq!(cfg["metadata"]["generation"], 1);
    // A strategic merge patch merges webhooks by name.
    let second = hook.entry("second.reference.test", "/allow", widgets_rule(), json!({}));
    let smp = json!({"webhooks": [{"name": "good.reference.test", "timeoutSeconds": 5}, second]});
    let (c, cfg) = api
        .patch(
            &format!("{VWC}/good"),
            "application/strategic-merge-patch+json",
            smp,
        )
        .await;
    assert_eq!(c, 200, "{cfg}");
    let names: Vec<&str> = cfg["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["good.reference.test", "second.reference.test"]);
    assert_eq!(cfg["webhooks"][0]["timeoutSeconds"], 5);
    assert_eq!(cfg["metadata"]["generation"], 2);
}

#[tokio::test]
async fn server_side_apply_keys_webhooks_by_name() {
    let (api, hook) = setup().await;
    let applied = |name: &str| {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "shared"}, "webhooks": [hook.entry(name, "/allow", widgets_rule(), json!({}))]})
    };
    let path = |manager: &str| format!("{VWC}/shared?fieldManager={manager}");
    assert_eq!(
        api.apply(&path("team-a"), applied("a.reference.test"))
            .await
            .0,
        201
    );
    let (c, cfg) = api
        .apply(&path("team-b"), applied("b.reference.test"))
        .await;
    assert_eq!(c, 200, "{cfg}");
    let names: Vec<&str> = cfg["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.reference.test", "b.reference.test"]);
}

#[tokio::test]
async fn configurations_are_authorized_like_any_resource() {
    let (api, hook) = setup().await;
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}});
    api.post("/api/v1/namespaces/ref/serviceaccounts", sa).await;
    let (_, tr) = api
        .post(
            "/api/v1/namespaces/ref/serviceaccounts/app/token",
            json!({"spec": {}}),
        )
        .await;
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    let cfg = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "mine"}, "webhooks": [hook.entry("mine.reference.test", "/deny", widgets_rule(), json!({}))]});
    let (c, e) = api
        .send_as(
            Some(&token),
            &[],
            "POST",
            VWC,
            "application/json",
            Some(cfg),
        )
        .await;
    assert_eq!(c, 403);
    assert_eq!(
        e["message"],
        "validatingwebhookconfigurations.admissionregistration.k8s.io is forbidden: User \"system:serviceaccount:ref:app\" cannot create resource \"validatingwebhookconfigurations\" in API group \"admissionregistration.k8s.io\" at the cluster scope"
    );
}

#[tokio::test]
async fn patch_and_apply_are_admitted_with_the_merged_object() {
    let (api, hook) = setup().await;
    register(
        &api,
        "big",
        vec![hook.entry("big.reference.test", "/big", widgets_rule(), json!({}))],
    )
    .await;
    assert_eq!(api.post(W, widget("w1", 1)).await.0, 201);
    let denied = |size: i64| {
        format!(
            "admission webhook \"big.reference.test\" denied the request: size {size} is too big"
        )
    };
    let (c, e) = api
        .patch(
            &format!("{W}/w1"),
            "application/merge-patch+json",
            json!({"spec": {"size": 50}}),
        )
        .await;
    assert_eq!((c, e["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(e["message"], denied(50));
    let jp = json!([{"op": "replace", "path": "/spec/size", "value": 60}]);
    let (_, e) = api
        .patch(&format!("{W}/w1"), "application/json-patch+json", jp)
        .await;
    assert_eq!(e["message"], denied(60));
    let applied = json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 20}});
    let path = format!("{W}/w1?fieldManager=applier&force=true");
    let (c, e) = api.apply(&path, applied.clone()).await;
    assert_eq!(c, 422);
    assert_eq!(e["message"], denied(20));
    hook.clear();
    let mut small = applied;
    small["spec"]["size"] = json!(5);
    let (c, w) = api.apply(&path, small).await;
    assert_eq!(c, 200, "{w}");
    let req = hook.reviews()[0].1["request"].clone();
    assert_eq!(req["operation"], "UPDATE");
    assert_eq!(
        req["object"]["spec"],
        json!({"size": 5, "color": "red"}),
        "merged with what is stored"
    );
    assert_eq!(
        req["options"],
        json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "applier"})
    );
    // An apply that creates is a CREATE.
    hook.clear();
    let new = json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 30}});
    let (c, e) = api
        .apply(&format!("{W}/w2?fieldManager=applier"), new)
        .await;
    assert_eq!((c, e["message"].clone()), (422, json!(denied(30))));
    assert_eq!(hook.reviews()[0].1["request"]["operation"], "CREATE");
}

#[tokio::test]
async fn a_strategic_merge_patch_of_a_builtin_is_admitted_merged() {
    let (api, hook) = setup().await;
    let cm_rule = rule(&["UPDATE"], &[""], &["configmaps"]);
    register(
        &api,
        "cm",
        vec![hook.entry("cm.reference.test", "/allow", cm_rule, json!({}))],
    )
    .await;
    assert_eq!(api.post(CM, configmap("c1")).await.0, 201);
    let smp = json!({"data": {"k2": "v2"}});
    let ct = "application/strategic-merge-patch+json";
    assert_eq!(api.patch(&format!("{CM}/c1"), ct, smp).await.0, 200);
    assert_eq!(
        first_request(&hook)["object"]["data"],
        json!({"k": "v", "k2": "v2"})
    );
}

/// A widget labelled `slow: yes`, and a webhook that takes 1.5 s to allow `op` on such widgets.
async fn slow_webhook(api: &Api, hook: &Webhook, op: &str) -> Value {
    let mut guarded = widget("w1", 1);
    guarded["metadata"]["labels"] = json!({"slow": "yes"});
    let (c, w1) = api.post(W, guarded).await;
    assert_eq!(c, 201);
    let ops = rule(&[op], &["reference.test"], &["widgets"]);
    let extra = json!({"objectSelector": {"matchLabels": {"slow": "yes"}}, "timeoutSeconds": 5});
    register(
        api,
        "slow",
        vec![hook.entry("slow.reference.test", "/slowish", ops, extra)],
    )
    .await;
    w1
}

/// Whether the webhook has been called `n` times.
fn called(hook: &Webhook, n: usize) -> impl Fn() -> bool {
    let reviews = hook.reviews.clone();
    move || reviews.lock().unwrap().len() >= n
}

#[tokio::test]
async fn no_lock_is_held_during_a_call_and_a_stale_update_conflicts() {
    let (api, hook) = setup().await;
    let api = Arc::new(api);
    let w1 = slow_webhook(&api, &hook, "UPDATE").await;
    // An update naming the resourceVersion it read, held up by the webhook ...
    let mut update = w1.clone();
    update["spec"]["size"] = json!(2);
    let a = api.clone();
    let stale = tokio::spawn(async move { a.put(&format!("{W}/w1"), update).await });
    api.wait_until(called(&hook, 1)).await;
    // ... while other writes go on: the store is not locked.
    let started = Instant::now();
    assert_eq!(api.post(CM, configmap("meanwhile")).await.0, 201);
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let merge = "application/merge-patch+json";
    assert_eq!(
        api.patch(&format!("{W}/w1/status"), merge, status).await.0,
        200
    );
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    let (c, e) = stale.await.unwrap();
    assert_eq!(c, 409, "{e}");
    assert_eq!(e["reason"], "Conflict");
    assert_eq!(
        e["message"],
        "Operation cannot be fulfilled on widgets.reference.test \"w1\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[tokio::test]
async fn a_patch_that_loses_a_race_is_made_and_admitted_again_from_the_new_object() {
    let (api, hook) = setup().await;
    let api = Arc::new(api);
    slow_webhook(&api, &hook, "UPDATE").await;
    let merge = "application/merge-patch+json";
    let a = api.clone();
    let patch = tokio::spawn(async move {
        a.patch(&format!("{W}/w1"), merge, json!({"spec": {"size": 3}}))
            .await
    });
    api.wait_until(called(&hook, 1)).await;
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    assert_eq!(
        api.patch(&format!("{W}/w1/status"), merge, status).await.0,
        200
    );
    let (c, w) = patch.await.unwrap();
    assert_eq!(c, 200, "{w}");
    assert_eq!(w["spec"]["size"], 3);
    assert_eq!(w["status"]["conditions"][0]["status"], "False");
    assert_eq!(hook.reviews().len(), 2);
}

#[tokio::test]
async fn a_create_that_loses_a_race_meets_already_exists() {
    let (api, hook) = setup().await;
    let api = Arc::new(api);
    slow_webhook(&api, &hook, "CREATE").await;
    let mut first = widget("w2", 1);
    first["metadata"]["labels"] = json!({"slow": "yes"});
    let a = api.clone();
    let racing = tokio::spawn(async move { a.post(W, first).await });
    api.wait_until(called(&hook, 1)).await;
    assert_eq!(
        api.post(W, widget("w2", 2)).await.0,
        201,
        "not sent: no label"
    );
    let (c, e) = racing.await.unwrap();
    assert_eq!((c, e["reason"].as_str()), (409, Some("AlreadyExists")));
    assert_eq!(e["message"], "widgets.reference.test \"w2\" already exists");
}
