//! Protobuf request bodies, as client-go's typed clients send them for built-in kinds (helm's
//! release storage creates and updates its Secrets this way). A real API server accepts protobuf
//! for every built-in kind; the emulator decodes the kinds clients are seen to send (Secret and
//! ConfigMap, the two helm storage drivers, and the DeleteOptions of their deletes) into the JSON
//! object the rest of the server handles.
//! Other kinds are refused with 415, as the server does for a media type it does not accept, and
//! responses are always JSON (clients list JSON after protobuf in their Accept header).

use base64::Engine;
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use prost::Message;
use serde_json::{json, Map, Value};

/// The four bytes before every protobuf-encoded Kubernetes object.
const MAGIC: &[u8] = b"k8s\0";

/// The JSON object a protobuf request body stands for; `Err` names what cannot be decoded.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the protobuf body lacks the k8s envelope")?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(rest)
        .map_err(|e| format!("the protobuf envelope does not decode: {e}"))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let b64 = |v: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(v));
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => {
            let s = k8s_pb::api::core::v1::Secret::decode(raw.as_slice())
                .map_err(|e| format!("the Secret does not decode: {e}"))?;
            let mut o = json!({"metadata": meta(s.metadata.unwrap_or_default())});
            if !s.data.is_empty() {
                o["data"] = s.data.iter().map(|(k, v)| (k.clone(), b64(v))).collect::<Map<_, _>>().into();
            }
            if !s.string_data.is_empty() {
                o["stringData"] = json!(s.string_data);
            }
            if let Some(t) = s.r#type {
                o["type"] = json!(t);
            }
            if let Some(i) = s.immutable {
                o["immutable"] = json!(i);
            }
            o
        }
        ("v1", "ConfigMap") => {
            let c = k8s_pb::api::core::v1::ConfigMap::decode(raw.as_slice())
                .map_err(|e| format!("the ConfigMap does not decode: {e}"))?;
            let mut o = json!({"metadata": meta(c.metadata.unwrap_or_default())});
            if !c.data.is_empty() {
                o["data"] = json!(c.data);
            }
            if !c.binary_data.is_empty() {
                o["binaryData"] = c.binary_data.iter().map(|(k, v)| (k.clone(), b64(v))).collect::<Map<_, _>>().into();
            }
            if let Some(i) = c.immutable {
                o["immutable"] = json!(i);
            }
            o
        }
        (_, "DeleteOptions") => {
            let d = k8s_pb::apimachinery::pkg::apis::meta::v1::DeleteOptions::decode(raw.as_slice())
                .map_err(|e| format!("the DeleteOptions do not decode: {e}"))?;
            let mut o = json!({});
            if let Some(g) = d.grace_period_seconds {
                o["gracePeriodSeconds"] = json!(g);
            }
            if let Some(p) = d.preconditions {
                let mut pre = json!({});
                if let Some(u) = p.uid {
                    pre["uid"] = json!(u);
                }
                if let Some(r) = p.resource_version {
                    pre["resourceVersion"] = json!(r);
                }
                o["preconditions"] = pre;
            }
            if let Some(b) = d.orphan_dependents {
                o["orphanDependents"] = json!(b);
            }
            if let Some(p) = d.propagation_policy {
                o["propagationPolicy"] = json!(p);
            }
            if !d.dry_run.is_empty() {
                o["dryRun"] = json!(d.dry_run);
            }
            o
        }
        ("authorization.k8s.io/v1", _) => review(&kind, raw.as_slice())?,
        _ => return Err(format!("protobuf bodies are accepted for v1 Secret, ConfigMap, DeleteOptions and the access reviews only (got {api_version} {kind})")),
    };
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

/// The access reviews kubectl sends (`kubectl auth can-i`): their specs as JSON.
fn review(kind: &str, raw: &[u8]) -> Result<Value, String> {
    use k8s_pb::api::authorization::v1 as az;
    let attrs = |r: Option<az::ResourceAttributes>, n: Option<az::NonResourceAttributes>| {
        let mut spec = Map::new();
        if let Some(r) = r {
            let mut a = Map::new();
            for (k, v) in [
                ("namespace", r.namespace),
                ("verb", r.verb),
                ("group", r.group),
                ("version", r.version),
                ("resource", r.resource),
                ("subresource", r.subresource),
                ("name", r.name),
            ] {
                if let Some(v) = v.filter(|v| !v.is_empty()) {
                    a.insert(k.into(), json!(v));
                }
            }
            spec.insert("resourceAttributes".into(), Value::Object(a));
        }
        if let Some(n) = n {
            spec.insert(
                "nonResourceAttributes".into(),
                json!({"path": n.path.unwrap_or_default(), "verb": n.verb.unwrap_or_default()}),
            );
        }
        spec
    };
    let bad = |e: prost::DecodeError| format!("the {kind} does not decode: {e}");
    let (metadata, spec) = match kind {
        "SelfSubjectAccessReview" => {
            let r = az::SelfSubjectAccessReview::decode(raw).map_err(bad)?;
            let s = r.spec.unwrap_or_default();
            (
                r.metadata,
                attrs(s.resource_attributes, s.non_resource_attributes),
            )
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let (metadata, s) = if kind == "SubjectAccessReview" {
                let r = az::SubjectAccessReview::decode(raw).map_err(bad)?;
                (r.metadata, r.spec.unwrap_or_default())
            } else {
                let r = az::LocalSubjectAccessReview::decode(raw).map_err(bad)?;
                (r.metadata, r.spec.unwrap_or_default())
            };
            let mut spec = attrs(s.resource_attributes, s.non_resource_attributes);
            if let Some(u) = s.user {
                spec.insert("user".into(), json!(u));
            }
            if !s.groups.is_empty() {
                spec.insert("groups".into(), json!(s.groups));
            }
            if let Some(u) = s.uid {
                spec.insert("uid".into(), json!(u));
            }
            (metadata, spec)
        }
        "SelfSubjectRulesReview" => {
            let r = az::SelfSubjectRulesReview::decode(raw).map_err(bad)?;
            let mut spec = Map::new();
            if let Some(ns) = r.spec.and_then(|s| s.namespace) {
                spec.insert("namespace".into(), json!(ns));
            }
            (r.metadata, spec)
        }
        other => {
            return Err(format!(
                "no protobuf decoder for authorization.k8s.io/v1 {other}"
            ))
        }
    };
    Ok(json!({"metadata": meta(metadata.unwrap_or_default()), "spec": spec}))
}

/// The writable part of ObjectMeta (what a client may send; the rest is the server's).
fn meta(m: ObjectMeta) -> Value {
    let mut o = Map::new();
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_string(), v);
    };
    if let Some(v) = m.name {
        put("name", json!(v));
    }
    if let Some(v) = m.generate_name {
        put("generateName", json!(v));
    }
    if let Some(v) = m.namespace {
        put("namespace", json!(v));
    }
    if let Some(v) = m.uid.filter(|u| !u.is_empty()) {
        put("uid", json!(v));
    }
    if let Some(v) = m.resource_version.filter(|r| !r.is_empty()) {
        put("resourceVersion", json!(v));
    }
    if !m.labels.is_empty() {
        put("labels", json!(m.labels));
    }
    if !m.annotations.is_empty() {
        put("annotations", json!(m.annotations));
    }
    if !m.finalizers.is_empty() {
        put("finalizers", json!(m.finalizers));
    }
    if !m.owner_references.is_empty() {
        let refs: Vec<Value> = m
            .owner_references
            .into_iter()
            .map(|r| {
                let mut o = json!({"apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid});
                if let Some(c) = r.controller {
                    o["controller"] = json!(c);
                }
                if let Some(b) = r.block_owner_deletion {
                    o["blockOwnerDeletion"] = json!(b);
                }
                o
            })
            .collect();
        put("ownerReferences", json!(refs));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::core::v1::Secret;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};

    /// A body as client-go encodes it.
    pub fn encode(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn a_secret_decodes_to_the_json_the_server_sees() {
        let s = Secret {
            metadata: Some(ObjectMeta {
                name: Some("sh.helm.release.v1.ms.v1".into()),
                namespace: Some("ms".into()),
                labels: [("owner".to_string(), "helm".to_string())].into(),
                ..Default::default()
            }),
            data: [("release".to_string(), b"H4sI\0\xff".to_vec())].into(),
            r#type: Some("helm.sh/release.v1".into()),
            ..Default::default()
        };
        let v = decode(&encode("v1", "Secret", s.encode_to_vec())).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "sh.helm.release.v1.ms.v1", "namespace": "ms", "labels": {"owner": "helm"}},
                   "data": {"release": "SDRzSQD/"}, "type": "helm.sh/release.v1"})
        );
    }

    #[test]
    fn delete_options_decode() {
        use k8s_pb::apimachinery::pkg::apis::meta::v1::{DeleteOptions, Preconditions};
        let d = DeleteOptions {
            propagation_policy: Some("Background".into()),
            preconditions: Some(Preconditions {
                uid: Some("u-1".into()),
                resource_version: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            decode(&encode(
                "meta.k8s.io/v1",
                "DeleteOptions",
                d.encode_to_vec()
            ))
            .unwrap(),
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions", "propagationPolicy": "Background", "preconditions": {"uid": "u-1"}})
        );
    }

    #[test]
    fn other_kinds_and_bad_bodies_are_refused() {
        assert!(decode(&encode("apps/v1", "Deployment", vec![]))
            .unwrap_err()
            .contains("Secret, ConfigMap, DeleteOptions and the access reviews only"));
        assert!(decode(b"{}").unwrap_err().contains("envelope"));
        assert!(decode(b"k8s\0\xff\xff").is_err());
    }
}
