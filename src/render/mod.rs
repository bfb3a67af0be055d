//! Pure: from an AWS secret value and a ManagedSecret spec to the keys and bytes the Kubernetes
//! Secret must hold. No I/O; every error names the key or setting at fault (or, for what came from
//! AWS, a position and a length), never a value.

pub mod template;

use crate::crd::{DataMapping, ManagedSecretSpec, SecretType};
use crate::error::{Error, Result};
use serde_json::Value;
use sha2::Sha256;
use std::collections::BTreeMap;
use template::Templates;

/// Kubernetes' limit on a Secret's total data size.
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// A secret value as AWS returned it. Its `Debug` never shows the contents.
#[derive(Clone, PartialEq)]
pub enum SecretValue {
    String(String),
    Binary(Vec<u8>),
}

impl SecretValue {
    pub fn len(&self) -> usize {
        match self {
            SecretValue::String(s) => s.len(),
            SecretValue::Binary(b) => b.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The plaintext is overwritten when the last holder lets go of it.
impl Drop for SecretValue {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match self {
            SecretValue::String(s) => s.zeroize(),
            SecretValue::Binary(b) => b.zeroize(),
        }
    }
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

impl Drop for SecretData {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for v in self.0.values_mut() {
            v.zeroize();
        }
    }
}

impl SecretData {
    pub fn keys(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
    /// HMAC-SHA256 over the keys and the values' digests ([`value_digest`]) with the
    /// installation's key, for status and change detection: the data itself is never stored,
    /// without the key a guess cannot be tested, and the operator's cache, which keeps digests
    /// instead of values, can compute it again.
    pub fn hash(&self, key: &[u8]) -> String {
        let digests: Vec<(&str, Vec<u8>)> = self
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), value_digest(key, v)))
            .collect();
        hash_data(key, digests.iter().map(|(k, d)| (*k, d.as_slice())))
    }
}

/// What the operator keeps of a Secret value it wrote: 16 bytes of HMAC-SHA256 with the
/// installation's key (enough to tell whether the value changed; the value cannot be had back).
pub fn value_digest(key: &[u8], value: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut h = hmac::Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| hmac::Hmac::<Sha256>::new_from_slice(&[0u8; 32]).expect("fixed key"));
    h.update(b"value\0");
    h.update(value);
    h.finalize().into_bytes()[..16].to_vec()
}

/// What status.syncedKeys shows for a key whose name came from the AWS value (allKeys): an
/// HMAC of the name with the installation's key, `hmac:<16 hex>`, so that whoever may read
/// ManagedSecrets (but not Secrets) does not learn the value's field names, while the operator
/// can still find the key among a Secret's.
pub fn key_digest(key: &[u8], name: &str) -> String {
    let h = hash_data(key, std::iter::once(("syncedKey", name.as_bytes())));
    let hex = h.trim_start_matches("hmac-sha256:");
    format!("hmac:{}", &hex[..16.min(hex.len())])
}

pub fn hash_data<'a>(key: &[u8], items: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    use hmac::Mac;
    let mut h = hmac::Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| hmac::Hmac::<Sha256>::new_from_slice(&[0u8; 32]).expect("fixed key"));
    for (k, v) in items {
        h.update(&(k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update(&(v.len() as u64).to_be_bytes());
        h.update(v);
    }
    format!("hmac-sha256:{}", hex::encode(h.finalize().into_bytes()))
}

/// AWS Secrets Manager stores at most this many bytes in a secret value; anything larger did not
/// come from AWS and is refused before it is parsed.
pub const MAX_AWS_VALUE_BYTES: usize = 65_536;

/// A spec's mapping, checked and with its templates compiled: built once per spec change.
#[derive(Debug)]
pub struct Mapping {
    secret_id: String,
    mode: Mode,
    templates: Templates,
    type_: SecretType,
}

#[derive(Debug)]
enum Mode {
    AllKeys,
    /// (from, to) pairs.
    Keys(Vec<(String, String)>),
    Raw(String),
}

/// Checks the mapping of a spec; the message says what to change.
pub fn validate_mapping(spec: &ManagedSecretSpec) -> Result<()> {
    Mapping::compile(spec).map(|_| ())
}

/// Renders the Secret data for `spec` from `value` (compiling the mapping on the way).
pub fn render(spec: &ManagedSecretSpec, value: &SecretValue) -> Result<SecretData> {
    Mapping::compile(spec)?.render(value)
}

impl Mapping {
    pub fn compile(spec: &ManagedSecretSpec) -> Result<Mapping> {
        let DataMapping {
            all_keys,
            keys,
            raw_key,
        } = &spec.data;
        let modes =
            usize::from(*all_keys) + usize::from(!keys.is_empty()) + usize::from(raw_key.is_some());
        // Templates alone may build every key (a .dockerconfigjson, say).
        if modes > 1 || (modes == 0 && spec.templates.is_empty()) {
            return Err(Error::InvalidSpec(format!(
                "spec.data must set exactly one of allKeys: true, keys, or rawKey, or be left out when templates build every key (found {modes})"
            )));
        }
        if raw_key.is_some() && !spec.templates.is_empty() {
            return Err(Error::InvalidSpec(
                "spec.templates need a JSON value; they cannot be combined with data.rawKey".into(),
            ));
        }
        let mode = if *all_keys {
            Mode::AllKeys
        } else if let Some(k) = raw_key {
            if !valid_key(k) {
                return Err(Error::InvalidKeyName(format!("data.rawKey {k:?}")));
            }
            Mode::Raw(k.clone())
        } else {
            let mut pairs: Vec<(String, String)> = vec![];
            for (i, m) in keys.iter().enumerate() {
                let to = m
                    .to
                    .clone()
                    .unwrap_or_else(|| m.from.rsplit('.').next().unwrap_or(&m.from).to_string());
                if !valid_key(&to) {
                    return Err(Error::InvalidKeyName(format!(
                        "data.keys[{i}] target {to:?}"
                    )));
                }
                if let Some(j) = pairs.iter().position(|(_, t)| *t == to) {
                    return Err(Error::InvalidSpec(format!(
                        "data.keys[{j}] and data.keys[{i}] both write the key {to:?}; give one of them another `to`"
                    )));
                }
                pairs.push((m.from.clone(), to));
            }
            Mode::Keys(pairs)
        };
        for k in spec.templates.keys() {
            if !valid_key(k) {
                return Err(Error::InvalidKeyName(format!("templates key {k:?}")));
            }
            let clash = match &mode {
                Mode::Keys(pairs) => pairs.iter().any(|(_, t)| t == k),
                Mode::Raw(r) => r == k,
                Mode::AllKeys => false,
            };
            if clash {
                return Err(Error::InvalidSpec(format!(
                    "templates key {k:?} is also written by spec.data; rename one of them"
                )));
            }
        }
        Ok(Mapping {
            secret_id: spec.secret_id.clone(),
            mode,
            templates: Templates::compile(spec.templates.iter())?,
            type_: spec.target.type_,
        })
    }

    /// The keys and bytes the Secret must hold for `value`.
    pub fn render(&self, value: &SecretValue) -> Result<SecretData> {
        let size = value.len();
        if size > MAX_AWS_VALUE_BYTES {
            return Err(Error::ValueTooLarge(format!(
                "the AWS value is {size} bytes; AWS Secrets Manager values are at most {MAX_AWS_VALUE_BYTES}"
            )));
        }
        let mut out = BTreeMap::new();
        let mut json = None;
        match &self.mode {
            Mode::AllKeys => {
                let v = parse_json(&self.secret_id, value)?;
                // Sorted, so that a position in a message does not depend on the JSON map's order.
                let mut fields: Vec<(&String, &Value)> =
                    v.as_object().into_iter().flatten().collect();
                fields.sort_by(|a, b| a.0.cmp(b.0));
                for (i, (k, x)) in fields.into_iter().enumerate() {
                    let what = || {
                        format!(
                            "top-level field #{} of the AWS value ({} bytes)",
                            i + 1,
                            k.len()
                        )
                    };
                    if !valid_key(k) {
                        return Err(Error::InvalidKeyName(what()));
                    }
                    if x.is_null() {
                        return Err(Error::NullValue(what()));
                    }
                    if self.templates.keys().iter().any(|t| t == k) {
                        return Err(Error::InvalidSpec(format!(
                            "templates key {k:?} would replace the AWS value's field of the same name (allKeys); rename the template key"
                        )));
                    }
                    out.insert(k.clone(), scalar_bytes(x));
                }
                json = Some(v);
            }
            Mode::Keys(pairs) => {
                let v = parse_json(&self.secret_id, value)?;
                for (i, (from, to)) in pairs.iter().enumerate() {
                    let found = lookup(&v, from).ok_or_else(|| Error::KeyNotFound(from.clone()))?;
                    if found.is_null() {
                        return Err(Error::NullValue(format!("data.keys[{i}] ({from})")));
                    }
                    out.insert(to.clone(), scalar_bytes(found));
                }
                json = Some(v);
            }
            Mode::Raw(k) => {
                let bytes = match value {
                    SecretValue::String(s) => s.as_bytes().to_vec(),
                    SecretValue::Binary(b) => b.clone(),
                };
                out.insert(k.clone(), bytes);
            }
        }
        let used: usize = out.values().map(Vec::len).sum();
        if used > MAX_SECRET_BYTES {
            return Err(too_large(used));
        }
        if !self.templates.is_empty() {
            let v = match json {
                Some(v) => v,
                None => parse_json(&self.secret_id, value)?,
            };
            self.templates
                .render_into(&v, MAX_SECRET_BYTES - used, |k, bytes| {
                    out.insert(k.to_string(), bytes);
                    Ok(())
                })?;
        }
        check_type(self.type_, &out)?;
        Ok(SecretData(out))
    }
}

fn too_large(n: usize) -> Error {
    Error::ValueTooLarge(format!(
        "the Secret would hold {n} bytes, over the Kubernetes limit of {MAX_SECRET_BYTES}"
    ))
}

/// The keys and shapes the API server (and the programs reading them) expect of a typed Secret.
pub fn check_type(type_: SecretType, data: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    let missing: Vec<&str> = type_
        .required_keys()
        .iter()
        .copied()
        .filter(|k| !data.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(Error::InvalidSpec(format!(
            "a Secret of type {} needs the keys {}; map them with data.keys or templates",
            type_.as_str(),
            missing.join(", ")
        )));
    }
    match type_ {
        SecretType::BasicAuth
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            Err(Error::InvalidSpec(
                "a Secret of type kubernetes.io/basic-auth needs a username or a password key"
                    .into(),
            ))
        }
        SecretType::DockerConfigJson => {
            let ok = data
                .get(".dockerconfigjson")
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .map(|v| v.is_object())
                .unwrap_or(false);
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidSpec(
                    "the .dockerconfigjson key must hold a JSON object (build it with a template, see the README)".into(),
                ))
            }
        }
        _ => Ok(()),
    }
}

fn scalar_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
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

/// A valid Secret data key (the API server's rule): letters, digits, '-', '_', '.'; not '.' or '..'.
pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
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
            service_account_name: None,
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
            &SecretValue::String(r#"{"ok":"1","bad key hunter2":"x"}"#.into()),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "InvalidKeyName");
        assert_eq!(
            e.to_string(),
            "top-level field #1 of the AWS value (15 bytes) is not a valid Secret key: use letters, digits, '-', '_' or '.'"
        );
        let big = SecretValue::String("x".repeat(MAX_AWS_VALUE_BYTES + 1));
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
    fn ambiguous_mappings_are_refused_not_silently_overwritten() {
        let two_to_one = DataMapping {
            keys: vec![
                KeyMapping {
                    from: "username".into(),
                    to: Some("USER".into()),
                },
                KeyMapping {
                    from: "credentials.password".into(),
                    to: Some("USER".into()),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            render(&spec(two_to_one), &creds()).unwrap_err().to_string(),
            "invalid spec: data.keys[0] and data.keys[1] both write the key \"USER\"; give one of them another `to`"
        );
        let mut sp = spec(DataMapping {
            keys: vec![KeyMapping {
                from: "password".into(),
                to: None,
            }],
            ..Default::default()
        });
        sp.templates
            .insert("password".into(), "{{ username }}".into());
        assert_eq!(
            render(&sp, &creds()).unwrap_err().to_string(),
            "invalid spec: templates key \"password\" is also written by spec.data; rename one of them"
        );
        let mut sp = spec(DataMapping {
            all_keys: true,
            ..Default::default()
        });
        sp.templates.insert("host".into(), "x".into());
        assert_eq!(render(&sp, &creds()).unwrap_err().reason(), "InvalidSpec");
        sp.templates.clear();
        sp.templates.insert("bad key".into(), "x".into());
        assert_eq!(
            render(&sp, &creds()).unwrap_err().reason(),
            "InvalidKeyName"
        );
        // A JSON null is reported, not written as an empty value.
        let nulls = SecretValue::String(r#"{"user":"u","password":null}"#.into());
        let e = render(
            &spec(DataMapping {
                all_keys: true,
                ..Default::default()
            }),
            &nulls,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "NullValue");
        assert_eq!(
            e.to_string(),
            "top-level field #1 of the AWS value (8 bytes) is null: give it a value in AWS or map other fields"
        );
        let e = render(
            &spec(DataMapping {
                keys: vec![KeyMapping {
                    from: "password".into(),
                    to: None,
                }],
                ..Default::default()
            }),
            &nulls,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "data.keys[0] (password) is null: give it a value in AWS or map other fields"
        );
    }

    #[test]
    fn typed_secrets_need_their_keys_and_shapes() {
        let mut basic = BTreeMap::new();
        basic.insert("token".to_string(), b"x".to_vec());
        assert_eq!(
            check_type(SecretType::BasicAuth, &basic).unwrap_err().to_string(),
            "invalid spec: a Secret of type kubernetes.io/basic-auth needs a username or a password key"
        );
        basic.insert("password".to_string(), b"x".to_vec());
        assert!(check_type(SecretType::BasicAuth, &basic).is_ok());
        let mut dc = BTreeMap::new();
        dc.insert(".dockerconfigjson".to_string(), b"[1, 2]".to_vec());
        assert_eq!(
            check_type(SecretType::DockerConfigJson, &dc)
                .unwrap_err()
                .reason(),
            "InvalidSpec"
        );
        dc.insert(".dockerconfigjson".to_string(), br#"{"auths":{}}"#.to_vec());
        assert!(check_type(SecretType::DockerConfigJson, &dc).is_ok());
    }

    #[test]
    fn a_dockerconfigjson_is_built_from_a_username_and_a_password() {
        let mut sp = spec(DataMapping {
            keys: vec![KeyMapping {
                from: "username".into(),
                to: None,
            }],
            ..Default::default()
        });
        sp.target.type_ = SecretType::DockerConfigJson;
        sp.templates.insert(
            ".dockerconfigjson".into(),
            r#"{"auths":{"{{ host }}":{"auth":"{{ (username ~ ':' ~ password) | b64encode }}"}}}"#
                .into(),
        );
        let d = render(&sp, &creds()).unwrap();
        assert_eq!(
            s(&d, ".dockerconfigjson"),
            r#"{"auths":{"db.local":{"auth":"ZGJhZG1pbjpwQHNzL3c6cmQ="}}}"#
        );
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
        assert_ne!(d.hash(b"k"), d2.hash(b"k"));
        assert_eq!(d.hash(b"k"), d.clone().hash(b"k"));
        assert_ne!(d.hash(b"k"), d.hash(b"another key"), "keyed");
        assert!(d.hash(b"k").starts_with("hmac-sha256:"));
    }
}
