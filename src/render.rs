//! Pure: from an AWS secret value and a ManagedSecret spec to the keys and bytes the Kubernetes
//! Secret must hold. No I/O; every error names the key or setting at fault, never a value.

use crate::crd::{DataMapping, ManagedSecretSpec};
use crate::error::{Error, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Kubernetes' limit on a Secret's total data size.
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// A secret value as AWS returned it. Its `Debug` never shows the contents.
#[derive(Clone, PartialEq)]
pub enum SecretValue {
    String(String),
    Binary(Vec<u8>),
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretValue::String(s) => {
                write!(f, "SecretValue::String(<redacted, {} bytes>)", s.len())
            }
            SecretValue::Binary(b) => {
                write!(f, "SecretValue::Binary(<redacted, {} bytes>)", b.len())
            }
        }
    }
}

/// The rendered Secret data. Its `Debug` shows key names and sizes only.
#[derive(Clone, PartialEq, Default)]
pub struct SecretData(pub BTreeMap<String, Vec<u8>>);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{k}=<{} bytes>", v.len()))
            .collect();
        write!(f, "SecretData[{}]", keys.join(", "))
    }
}

impl SecretData {
    pub fn keys(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
    /// SHA-256 over keys and values, for status and change detection (the data itself is never stored).
    pub fn hash(&self) -> String {
        hash_data(self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }
}

pub fn hash_data<'a>(items: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (k, v) in items {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Checks the mapping is one of the three modes; the message says what to change.
pub fn validate_mapping(spec: &ManagedSecretSpec) -> Result<()> {
    let DataMapping {
        all_keys,
        keys,
        raw_key,
    } = &spec.data;
    let modes =
        usize::from(*all_keys) + usize::from(!keys.is_empty()) + usize::from(raw_key.is_some());
    if modes != 1 {
        return Err(Error::InvalidSpec(format!(
            "spec.data must set exactly one of allKeys: true, keys, or rawKey (found {modes})"
        )));
    }
    if raw_key.is_some() && !spec.templates.is_empty() {
        return Err(Error::InvalidSpec(
            "spec.templates need a JSON value; they cannot be combined with data.rawKey".into(),
        ));
    }
    for tpl in spec.templates.values() {
        Template::parse(tpl)?;
    }
    Ok(())
}

fn scalar_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    }
}

fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    // An exact top-level key wins (keys may contain dots); otherwise dots go into nested objects.
    if let Some(v) = root.get(path) {
        return Some(v);
    }
    let mut cur = root;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

fn parse_json(secret_id: &str, value: &SecretValue) -> Result<Value> {
    let text = match value {
        SecretValue::String(s) => s.as_str(),
        SecretValue::Binary(_) => {
            return Err(Error::InvalidJson {
                secret: secret_id.into(),
                detail: "the secret is binary".into(),
            })
        }
    };
    let v: Value = serde_json::from_str(text).map_err(|e| Error::InvalidJson {
        secret: secret_id.into(),
        // serde_json's message carries the position only, never the text.
        detail: format!("parse error at line {} column {}", e.line(), e.column()),
    })?;
    if !v.is_object() {
        return Err(Error::InvalidJson {
            secret: secret_id.into(),
            detail: "the top level is not an object".into(),
        });
    }
    Ok(v)
}

pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// Renders the Secret data for `spec` from `value`.
pub fn render(spec: &ManagedSecretSpec, value: &SecretValue) -> Result<SecretData> {
    validate_mapping(spec)?;
    let mut out = BTreeMap::new();
    let mut json = None;
    if spec.data.all_keys {
        let v = parse_json(&spec.secret_id, value)?;
        for (k, x) in v.as_object().expect("object") {
            out.insert(k.clone(), scalar_bytes(x));
        }
        json = Some(v);
    } else if !spec.data.keys.is_empty() {
        let v = parse_json(&spec.secret_id, value)?;
        for m in &spec.data.keys {
            let found = lookup(&v, &m.from).ok_or_else(|| Error::KeyNotFound(m.from.clone()))?;
            let to =
                m.to.clone()
                    .unwrap_or_else(|| m.from.rsplit('.').next().unwrap_or(&m.from).to_string());
            out.insert(to, scalar_bytes(found));
        }
        json = Some(v);
    } else if let Some(k) = &spec.data.raw_key {
        let bytes = match value {
            SecretValue::String(s) => s.as_bytes().to_vec(),
            SecretValue::Binary(b) => b.clone(),
        };
        out.insert(k.clone(), bytes);
    }
    if !spec.templates.is_empty() {
        let v = match json {
            Some(v) => v,
            None => parse_json(&spec.secret_id, value)?,
        };
        for (k, tpl) in &spec.templates {
            out.insert(k.clone(), Template::parse(tpl)?.render(&v)?.into_bytes());
        }
    }
    for k in out.keys() {
        if !valid_key(k) {
            return Err(Error::InvalidKeyName(k.clone()));
        }
    }
    let total: usize = out.values().map(Vec::len).sum();
    if total > MAX_SECRET_BYTES {
        return Err(Error::ValueTooLarge(total));
    }
    let missing: Vec<&str> = spec
        .target
        .type_
        .required_keys()
        .iter()
        .copied()
        .filter(|k| !out.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(Error::InvalidSpec(format!(
            "a Secret of type {} needs the keys {}; map them with data.keys",
            spec.target.type_.as_str(),
            missing.join(", ")
        )));
    }
    if spec.target.type_ == crate::crd::SecretType::DockerConfigJson {
        let ok = out
            .get(".dockerconfigjson")
            .map(|b| serde_json::from_slice::<Value>(b).is_ok())
            .unwrap_or(false);
        if !ok {
            return Err(Error::InvalidSpec(
                "the .dockerconfigjson key must hold JSON".into(),
            ));
        }
    }
    Ok(SecretData(out))
}

/// A tiny template: literal text with `{{ path }}` placeholders, each optionally piped through one
/// filter: `urlencode` (percent-encoding for URLs) or `base64`. No logic, no functions, no loops.
#[derive(Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    Field {
        path: String,
        filter: Option<Filter>,
    },
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Filter {
    UrlEncode,
    Base64,
}

impl Template {
    pub fn parse(src: &str) -> Result<Template> {
        let mut parts = vec![];
        let mut rest = src;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                Error::InvalidSpec(format!("template {src:?}: '{{{{' without '}}}}'"))
            })?;
            let inner = after[..end].trim();
            let (path, filter) = match inner.split_once('|') {
                Some((p, f)) => {
                    let filter = match f.trim() {
                        "urlencode" => Filter::UrlEncode,
                        "base64" => Filter::Base64,
                        other => {
                            return Err(Error::InvalidSpec(format!(
                            "template {src:?}: unknown filter {other:?} (use urlencode or base64)"
                        )))
                        }
                    };
                    (p.trim(), Some(filter))
                }
                None => (inner, None),
            };
            let path = path.strip_prefix('.').unwrap_or(path);
            if path.is_empty()
                || !path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(Error::InvalidSpec(format!(
                    "template {src:?}: {inner:?} is not a field path"
                )));
            }
            parts.push(Part::Field {
                path: path.to_string(),
                filter,
            });
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(Error::InvalidSpec(format!(
                "template {src:?}: '}}}}' without '{{{{'"
            )));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    pub fn render(&self, v: &Value) -> Result<String> {
        use base64::Engine;
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, filter } => {
                    let found = lookup(v, path).ok_or_else(|| Error::KeyNotFound(path.clone()))?;
                    let s = String::from_utf8_lossy(&scalar_bytes(found)).into_owned();
                    match filter {
                        None => out.push_str(&s),
                        Some(Filter::UrlEncode) => out.push_str(
                            &percent_encoding::utf8_percent_encode(
                                &s,
                                percent_encoding::NON_ALPHANUMERIC,
                            )
                            .to_string(),
                        ),
                        Some(Filter::Base64) => out.push_str(
                            &base64::engine::general_purpose::STANDARD.encode(s.as_bytes()),
                        ),
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{KeyMapping, SecretType, Target};

    fn spec(data: DataMapping) -> ManagedSecretSpec {
        ManagedSecretSpec {
            secret_id: "prod/db/credentials".into(),
            region: None,
            version_stage: None,
            version_id: None,
            refresh_interval: None,
            data,
            templates: BTreeMap::new(),
            target: Target::default(),
            rollout: None,
        }
    }
    fn creds() -> SecretValue {
        SecretValue::String(r#"{"username":"dbadmin","password":"p@ss/w:rd","host":"db.local","port":5432,"database":"myapp","credentials":{"password":"nested"},"tags":["a"]}"#.into())
    }
    fn s(d: &SecretData, k: &str) -> String {
        String::from_utf8(d.0[k].clone()).unwrap()
    }

    #[test]
    fn all_keys_maps_each_top_level_field_and_nested_values_as_json() {
        let d = render(
            &spec(DataMapping {
                all_keys: true,
                ..Default::default()
            }),
            &creds(),
        )
        .unwrap();
        assert_eq!(
            d.keys(),
            [
                "credentials",
                "database",
                "host",
                "password",
                "port",
                "tags",
                "username"
            ]
        );
        assert_eq!(s(&d, "port"), "5432");
        assert_eq!(s(&d, "credentials"), r#"{"password":"nested"}"#);
        assert_eq!(s(&d, "tags"), r#"["a"]"#);
    }

    #[test]
    fn selected_keys_follow_dotted_paths_and_rename() {
        let m = DataMapping {
            keys: vec![
                KeyMapping {
                    from: "password".into(),
                    to: Some("DB_PASSWORD".into()),
                },
                KeyMapping {
                    from: "credentials.password".into(),
                    to: None,
                },
            ],
            ..Default::default()
        };
        let d = render(&spec(m), &creds()).unwrap();
        assert_eq!(d.keys(), ["DB_PASSWORD", "password"]);
        assert_eq!(s(&d, "password"), "nested");
    }

    #[test]
    fn raw_strings_and_binary_go_to_one_key() {
        let m = DataMapping {
            raw_key: Some("token".into()),
            ..Default::default()
        };
        assert_eq!(
            render(&spec(m.clone()), &SecretValue::String("plain".into()))
                .unwrap()
                .0["token"],
            b"plain"
        );
        assert_eq!(
            render(&spec(m), &SecretValue::Binary(vec![0, 255]))
                .unwrap()
                .0["token"],
            vec![0, 255]
        );
    }

    #[test]
    fn templates_render_fields_with_filters() {
        let mut sp = spec(DataMapping {
            keys: vec![KeyMapping {
                from: "username".into(),
                to: None,
            }],
            ..Default::default()
        });
        sp.templates.insert(
            "DATABASE_URL".into(),
            "postgres://{{ username }}:{{ password | urlencode }}@{{ host }}:{{ port }}/{{ .database }}".into(),
        );
        let d = render(&sp, &creds()).unwrap();
        assert_eq!(
            s(&d, "DATABASE_URL"),
            "postgres://dbadmin:p%40ss%2Fw%3Ard@db.local:5432/myapp"
        );
        assert!(Template::parse("{{ a | upper }}").is_err());
        assert!(Template::parse("{{ a ").is_err());
        assert!(Template::parse("{{ a b }}").is_err());
        assert_eq!(
            Template::parse("x{{ a | base64 }}y")
                .unwrap()
                .render(&serde_json::json!({"a": "hi"}))
                .unwrap(),
            "xaGk=y"
        );
    }

    #[test]
    fn errors_name_the_problem_not_the_value() {
        let m = DataMapping {
            keys: vec![KeyMapping {
                from: "missing".into(),
                to: None,
            }],
            ..Default::default()
        };
        let e = render(&spec(m), &creds()).unwrap_err();
        assert_eq!(e.reason(), "KeyNotFound");
        assert_eq!(e.to_string(), "KeyNotFound: missing");
        let e = render(
            &spec(DataMapping {
                all_keys: true,
                ..Default::default()
            }),
            &SecretValue::String("hunter2-not-json".into()),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "InvalidJSON");
        assert!(!e.to_string().contains("hunter2"));
        let e = render(
            &spec(DataMapping {
                all_keys: true,
                ..Default::default()
            }),
            &SecretValue::String(r#"{"bad key":"x"}"#.into()),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "InvalidKeyName");
        let big = SecretValue::String("x".repeat(MAX_SECRET_BYTES + 1));
        let e = render(
            &spec(DataMapping {
                raw_key: Some("k".into()),
                ..Default::default()
            }),
            &big,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "ValueTooLarge");
        let e = render(&spec(DataMapping::default()), &creds()).unwrap_err();
        assert_eq!(e.reason(), "InvalidSpec");
        let e = render(
            &spec(DataMapping {
                all_keys: true,
                raw_key: Some("k".into()),
                ..Default::default()
            }),
            &creds(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "InvalidSpec");
    }

    #[test]
    fn typed_secrets_need_their_keys() {
        let mut sp = spec(DataMapping {
            all_keys: true,
            ..Default::default()
        });
        sp.target.type_ = SecretType::Tls;
        assert_eq!(render(&sp, &creds()).unwrap_err().reason(), "InvalidSpec");
        let tls = SecretValue::String(r#"{"tls.crt":"C","tls.key":"K"}"#.into());
        assert_eq!(render(&sp, &tls).unwrap().keys(), ["tls.crt", "tls.key"]);
        sp.target.type_ = SecretType::DockerConfigJson;
        let dc = SecretValue::String(r#"{".dockerconfigjson":"{\"auths\":{}}"}"#.into());
        assert!(render(&sp, &dc).is_ok());
    }

    #[test]
    fn debug_output_redacts_values_and_hash_changes_with_data() {
        let v = creds();
        assert!(!format!("{v:?}").contains("dbadmin"));
        let d = render(
            &spec(DataMapping {
                all_keys: true,
                ..Default::default()
            }),
            &v,
        )
        .unwrap();
        let dbg = format!("{d:?}");
        assert!(dbg.contains("username=<7 bytes>") && !dbg.contains("dbadmin"));
        let mut d2 = d.clone();
        d2.0.insert("username".into(), b"other".to_vec());
        assert_ne!(d.hash(), d2.hash());
        assert_eq!(d.hash(), d.clone().hash());
    }
}
