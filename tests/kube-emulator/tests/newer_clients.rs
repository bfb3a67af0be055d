//! What newer clients (client-go 1.35, as in helm 4) send, answered as a real server does:
//! protobuf request bodies for built-in kinds, and streaming lists (`sendInitialEvents`).

use k8s_pb::api::core::v1::Secret;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions};
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use kube_emulator::{Emulator, Options};
use prost::Message;
use serde_json::Value;

mod common;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(u.encode_to_vec());
    out
}

async fn send(method: reqwest::Method, url: &str, body: Vec<u8>) -> (u16, Value) {
    let r = common::admin_client()
        .request(method, url)
        .header("content-type", PROTOBUF)
        .header("accept", format!("{PROTOBUF},application/json"))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn protobuf_creates_updates_and_deletes_of_secrets() {
    let emu = Emulator::start(Options::default()).await.unwrap();
    let base = format!("{}/api/v1/namespaces/default/secrets", emu.url());
    let mut s = Secret {
        metadata: Some(ObjectMeta {
            name: Some("release".into()),
            labels: [("owner".to_string(), "helm".to_string())].into(),
            ..Default::default()
        }),
        data: [("release".to_string(), vec![0u8, 1, 2, 255])].into(),
        r#type: Some("helm.sh/release.v1".into()),
        ..Default::default()
    };
    let (code, created) = send(
        reqwest::Method::POST,
        &base,
        envelope("v1", "Secret", s.encode_to_vec()),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["data"]["release"], "AAEC/w==");
    assert_eq!(created["type"], "helm.sh/release.v1");
    assert_eq!(created["metadata"]["labels"]["owner"], "helm");
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();

    // An update (PUT) with the resourceVersion it read.
    s.metadata.as_mut().unwrap().resource_version = created["metadata"]["resourceVersion"]
        .as_str()
        .map(String::from);
    s.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("status".into(), "deployed".into());
    let (code, updated) = send(
        reqwest::Method::PUT,
        &format!("{base}/release"),
        envelope("v1", "Secret", s.encode_to_vec()),
    )
    .await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["metadata"]["labels"]["status"], "deployed");

    // A delete whose precondition names another object is a conflict, as on a real server.
    let opts = |uid: &str| DeleteOptions {
        preconditions: Some(Preconditions {
            uid: Some(uid.into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let (code, status) = send(
        reqwest::Method::DELETE,
        &format!("{base}/release"),
        envelope(
            "meta.k8s.io/v1",
            "DeleteOptions",
            opts("other").encode_to_vec(),
        ),
    )
    .await;
    assert_eq!(code, 409, "{status}");
    let (code, _) = send(
        reqwest::Method::DELETE,
        &format!("{base}/release"),
        envelope(
            "meta.k8s.io/v1",
            "DeleteOptions",
            opts(&uid).encode_to_vec(),
        ),
    )
    .await;
    assert_eq!(code, 200);

    // A kind the emulator does not decode is refused with 415 (clients then use JSON).
    let (code, status) = send(
        reqwest::Method::POST,
        &base,
        envelope("apps/v1", "Deployment", vec![]),
    )
    .await;
    assert_eq!(code, 415);
    assert_eq!(status["reason"], "UnsupportedMediaType");
}

#[tokio::test]
async fn a_streaming_list_ends_its_initial_events_with_a_bookmark() {
    use futures::StreamExt;
    let emu = Emulator::start(Options::default()).await.unwrap();
    let http = common::admin_client();
    let base = format!("{}/api/v1/namespaces/default/configmaps", emu.url());
    for name in ["a", "b"] {
        let r = http
            .post(&base)
            .json(&serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let r = http
        .get(format!("{base}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=5"))
        .send()
        .await
        .unwrap();
    let mut lines = Vec::new();
    let mut stream = r.bytes_stream();
    let mut buf = Vec::new();
    while lines.len() < 3 {
        let chunk = stream.next().await.unwrap().unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            lines.push(serde_json::from_slice::<Value>(&line).unwrap());
        }
    }
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "ADDED", "BOOKMARK"]);
    let end = &lines[2]["object"]["metadata"];
    assert_eq!(end["annotations"]["k8s.io/initial-events-end"], "true");
    assert_eq!(
        end["resourceVersion"],
        lines[1]["object"]["metadata"]["resourceVersion"]
    );
}
