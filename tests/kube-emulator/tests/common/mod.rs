//! Helpers for the emulator's own tests: an emulator per test and a small HTTP client.
#![allow(dead_code)]

use futures::StreamExt;
use kube_emulator::{Emulator, Options};
use serde_json::Value;
use std::time::Duration;

pub struct Api {
    pub emu: Emulator,
    /// Sends the administrator's token with every request.
    pub http: reqwest::Client,
    /// Sends no credentials of its own (send_as adds them).
    plain: reqwest::Client,
}

pub async fn start() -> Api {
    start_with(Options {
        bookmark_interval: Duration::from_millis(300),
        ..Options::default()
    })
    .await
}

pub async fn start_with(opts: Options) -> Api {
    let emu = Emulator::start(opts).await.expect("emulator starts");
    let api = Api {
        emu,
        http: admin_client(),
        plain: reqwest::Client::new(),
    };
    api.send("POST", "/api/v1/namespaces", "application/json", Some(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ref"}}))).await;
    api
}

pub const WIDGET_CRD: &str = r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.reference.test"}, "spec": {"group": "reference.test", "scope": "Namespaced", "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]}, "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}, "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}, {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}, {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}], "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "required": ["size"], "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 100}, "color": {"type": "string", "enum": ["red", "blue"]}, "code": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}, "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}, "status": {"type": "object", "properties": {"conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"], "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}, "reason": {"type": "string"}}}}}}}}}}]}}"#;

/// An HTTP client that authenticates as the administrator (the kubeconfig's token).
pub fn admin_client() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        "authorization",
        format!("Bearer {}", kube_emulator::auth::ADMIN_TOKEN)
            .parse()
            .unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

/// A kube client configuration for the emulator, as the administrator.
pub fn admin_config(emu: &Emulator) -> kube::Config {
    let mut cfg = kube::Config::new(emu.url().parse().unwrap());
    cfg.auth_info.token = Some(kube_emulator::auth::ADMIN_TOKEN.to_string().into());
    cfg
}

impl Api {
    /// A request with the given bearer token (none: anonymous) and extra headers.
    pub async fn send_as(
        &self,
        token: Option<&str>,
        headers: &[(&str, &str)],
        method: &str,
        path: &str,
        ctype: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .plain
            .request(m, self.url(path))
            .header("content-type", ctype)
            .header("user-agent", "emulator-tests/1.0");
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        let resp = rb.send().await.expect("request");
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.emu.url(), path)
    }

    /// A request as the administrator.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        ctype: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.send_as(
            Some(kube_emulator::auth::ADMIN_TOKEN),
            &[],
            method,
            path,
            ctype,
            body,
        )
        .await
    }

    /// A GET with the given bearer token and extra headers.
    pub async fn get_as(
        &self,
        token: Option<&str>,
        headers: &[(&str, &str)],
        path: &str,
    ) -> (u16, Value) {
        self.send_as(token, headers, "GET", path, "application/json", None)
            .await
    }
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, "application/json", None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send("POST", path, "application/json", Some(body))
            .await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send("PUT", path, "application/json", Some(body)).await
    }
    pub async fn patch(&self, path: &str, ctype: &str, body: Value) -> (u16, Value) {
        self.send("PATCH", path, ctype, Some(body)).await
    }
    pub async fn apply(&self, path: &str, body: Value) -> (u16, Value) {
        self.send("PATCH", path, "application/apply-patch+yaml", Some(body))
            .await
    }
    pub async fn delete(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send("DELETE", path, "application/json", body).await
    }

    pub async fn create_widget_crd(&self) {
        let (c, _) = self
            .post(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                serde_json::from_str(WIDGET_CRD).unwrap(),
            )
            .await;
        assert_eq!(c, 201);
    }

    /// Reads watch lines until `n` events arrived or `within` passed.
    pub async fn watch_lines(&self, path: &str, n: usize, within: Duration) -> Vec<Value> {
        let resp = self.http.get(self.url(path)).send().await.expect("watch");
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        let mut out = vec![];
        let deadline = tokio::time::Instant::now() + within;
        while out.len() < n {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    buf.extend_from_slice(&chunk);
                    while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                            out.push(v);
                        }
                    }
                }
                _ => break,
            }
        }
        out
    }

    /// Polls until `f` holds on the object at `path`.
    pub async fn wait_for(&self, path: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (c, v) = self.get(path).await;
            if c == 200 && f(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met on {path}: last {v}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls a local condition with a deadline.
    pub async fn wait_until(&self, f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not reached"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_gone(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.get(path).await.0 == 404 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} still exists"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
