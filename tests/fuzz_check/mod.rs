//! The checks `make fuzz` runs on every input (fuzz/fuzz_targets/render.rs includes this file) and
//! `tests/fuzz_regressions.rs` replays on the inputs that once failed: value -> Secret mapping,
//! templates and durations never panic, never exceed the Secret size bound, and never put the
//! value in an error.

use arbitrary::Arbitrary;
use managed_secrets::crd::{DataMapping, KeyMapping, ManagedSecretSpec, SecretType};
use managed_secrets::render::{self, SecretValue, MAX_SECRET_BYTES};
use managed_secrets::schedule;

/// Marks every string that comes from the AWS value.
pub const MARK: &str = "FUZZVAL";

#[derive(Arbitrary, Debug)]
pub struct Input {
    pub duration: String,
    pub mode: u8,
    pub keys: Vec<(String, Option<String>)>,
    pub raw_key: String,
    pub templates: Vec<(String, String)>,
    pub type_: u8,
    pub fields: Vec<(String, Field)>,
    pub raw: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
pub enum Field {
    Null,
    Bool(bool),
    Int(i64),
    Text(String),
    Repeat(u16),
    List(Vec<String>),
    Nested(Vec<(String, String)>),
}

fn clean(s: &str) -> String {
    s.replace(MARK, "")
}

fn marked(s: &str) -> serde_json::Value {
    serde_json::Value::from(format!("{MARK}{s}"))
}

impl Field {
    fn json(&self) -> serde_json::Value {
        match self {
            Field::Null => serde_json::Value::Null,
            Field::Bool(b) => (*b).into(),
            Field::Int(i) => (*i).into(),
            Field::Text(s) => marked(s),
            Field::Repeat(n) => marked(&"x".repeat(usize::from(*n) * 4)),
            Field::List(l) => l.iter().map(|s| marked(s)).collect(),
            Field::Nested(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (clean(k), marked(v))).collect())
            }
        }
    }
}

/// Runs one input; panics (a finding) when an invariant breaks.
pub fn check(i: &Input) {
    for d in [
        schedule::parse_duration(&i.duration).ok(),
        schedule::refresh_interval(Some(&i.duration), schedule::MIN_REFRESH).ok(),
        schedule::debounce(Some(&i.duration), std::time::Duration::from_secs(5)).ok(),
    ]
    .into_iter()
    .flatten()
    {
        let _ = schedule::after(chrono::Utc::now(), d);
    }
    let mut spec: ManagedSecretSpec = serde_json::from_value(
        serde_json::json!({"secretId": "prod/fuzz/x", "data": {"allKeys": true}}),
    )
    .expect("base spec");
    spec.data = match i.mode % 4 {
        0 => DataMapping {
            all_keys: true,
            ..Default::default()
        },
        1 => DataMapping {
            keys: i
                .keys
                .iter()
                .take(16)
                .map(|(f, t)| KeyMapping {
                    from: clean(f),
                    to: t.as_deref().map(clean),
                })
                .collect(),
            ..Default::default()
        },
        2 => DataMapping {
            raw_key: Some(clean(&i.raw_key)),
            ..Default::default()
        },
        _ => DataMapping::default(),
    };
    spec.templates = i
        .templates
        .iter()
        .take(8)
        .map(|(k, v)| (clean(k), clean(v)))
        .collect();
    spec.target.type_ = match i.type_ % 4 {
        0 => SecretType::Opaque,
        1 => SecretType::BasicAuth,
        2 => SecretType::Tls,
        _ => SecretType::DockerConfigJson,
    };
    let value = match &i.raw {
        Some(b) => {
            let mut b = b.clone();
            b.extend_from_slice(MARK.as_bytes());
            match String::from_utf8(b) {
                Ok(s) => SecretValue::String(s),
                Err(e) => SecretValue::Binary(e.into_bytes()),
            }
        }
        None => SecretValue::String(
            serde_json::Value::Object(i.fields.iter().map(|(k, v)| (clean(k), v.json())).collect())
                .to_string(),
        ),
    };
    match render::render(&spec, &value) {
        Ok(data) => {
            let total: usize = data.0.values().map(Vec::len).sum();
            assert!(total <= MAX_SECRET_BYTES, "{total} bytes");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains(MARK), "the value reached an error: {msg}");
            assert!(!format!("{e:?}").contains(MARK), "the value reached Debug");
        }
    }
}
