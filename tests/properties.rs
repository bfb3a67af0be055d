//! Properties of the pure functions every AWS value and every spec goes through (value -> Secret
//! mapping, templates, durations), over generated inputs: they never panic, never produce more
//! than a Secret may hold, and never put a value (or template text) into an error message.
//! `make fuzz` runs the same checks under cargo-fuzz for as long as you like.

use managed_secrets::crd::{DataMapping, KeyMapping, ManagedSecretSpec, SecretType};
use managed_secrets::render::{self, SecretValue, MAX_SECRET_BYTES};
use managed_secrets::schedule;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Marks text that came from the AWS value or a template's literal text.
const VALUE_MARK: &str = "VALmark7";
const TEXT_MARK: &str = "TPLmark7";

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("username".to_string()),
        Just("password".to_string()),
        Just("a.b".to_string()),
        Just("my-key".to_string()),
        Just("nested".to_string()),
        Just("list".to_string()),
        Just("bad key".to_string()),
        Just(String::new()),
        "[a-z.]{1,6}",
    ]
}

fn json_value(depth: u32) -> BoxedStrategy<serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (0usize..2000)
            .prop_map(|n| serde_json::Value::from(format!("{VALUE_MARK}{}", "v".repeat(n)))),
        "[ -~]{0,12}".prop_map(|s| serde_json::Value::from(format!("{VALUE_MARK}{s}"))),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        3 => leaf,
        1 => prop::collection::vec(json_value(depth - 1), 0..4).prop_map(serde_json::Value::from),
        1 => prop::collection::btree_map(field_name(), json_value(depth - 1), 0..4)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
    ]
    .boxed()
}

fn aws_value() -> impl Strategy<Value = SecretValue> {
    prop_oneof![
        4 => prop::collection::btree_map(field_name(), json_value(2), 0..6)
            .prop_map(|m| SecretValue::String(serde_json::Value::Object(m.into_iter().collect()).to_string())),
        1 => "[ -~]{0,40}".prop_map(|s| SecretValue::String(format!("{VALUE_MARK}{s}"))),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|mut b| { b.extend_from_slice(VALUE_MARK.as_bytes()); SecretValue::Binary(b) }),
    ]
}

/// Template source from fragments: placeholders, filters, statements, loops, literal text.
fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{ username }}".to_string()),
        Just("{{ .a.b }}".to_string()),
        Just("{{ my-key | base64 }}".to_string()),
        Just("{{ password | urlencode }}".to_string()),
        Just("{{ nested | tojson }}".to_string()),
        Just("{{ password | b64decode }}".to_string()),
        Just("{{ missing | default('d') }}".to_string()),
        Just("{{ (username ~ ':' ~ password) | b64encode | upper | lower | trim }}".to_string()),
        Just("{% for x in list %}{{ x }}{% endfor %}".to_string()),
        Just("{% set s = password %}{% set s = s ~ s %}{{ s }}".to_string()),
        Just("{% if username %}y{% else %}n{% endif %}".to_string()),
        Just("{{ password * 1000 }}".to_string()),
        Just("{% include 'x' %}".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{%".to_string()),
        Just("|".to_string()),
        Just("'".to_string()),
        Just(TEXT_MARK.to_string()),
        "[ -~]{0,8}".prop_map(|s| format!("{TEXT_MARK}{s}")),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

fn spec() -> impl Strategy<Value = ManagedSecretSpec> {
    let mapping = prop_oneof![
        Just(DataMapping {
            all_keys: true,
            ..Default::default()
        }),
        prop::collection::vec((field_name(), prop::option::of("[a-zA-Z_.-]{1,8}")), 1..4).prop_map(
            |ks| DataMapping {
                keys: ks
                    .into_iter()
                    .map(|(from, to)| KeyMapping {
                        from: if from.is_empty() { "x".into() } else { from },
                        to
                    })
                    .collect(),
                ..Default::default()
            }
        ),
        "[a-z.]{1,8}".prop_map(|k| DataMapping {
            raw_key: Some(k),
            ..Default::default()
        }),
    ];
    let types = prop_oneof![
        Just(SecretType::Opaque),
        Just(SecretType::BasicAuth),
        Just(SecretType::Tls),
        Just(SecretType::DockerConfigJson),
    ];
    (
        mapping,
        prop::collection::btree_map("[A-Za-z_.]{1,8}", template(), 0..3),
        types,
    )
        .prop_map(|(data, templates, type_)| {
            let mut s: ManagedSecretSpec = serde_json::from_value(
                serde_json::json!({"secretId": "prod/p/x", "data": {"allKeys": true}}),
            )
            .unwrap();
            s.data = data;
            s.templates = templates;
            s.target.type_ = type_;
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn rendering_never_panics_stays_bounded_and_never_leaks(spec in spec(), value in aws_value()) {
        match render::render(&spec, &value) {
            Ok(data) => {
                let total: usize = data.0.values().map(Vec::len).sum();
                prop_assert!(total <= MAX_SECRET_BYTES);
                prop_assert!(data.0.keys().all(|k| render::valid_key(k)));
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!msg.contains(VALUE_MARK), "a value in {msg}");
                prop_assert!(!msg.contains(TEXT_MARK), "template text in {msg}");
                let dbg = format!("{e:?}");
                prop_assert!(!dbg.contains(VALUE_MARK), "a value in the Debug of {msg}");
            }
        }
    }

    #[test]
    fn durations_parse_or_fail_cleanly(s in "[0-9a-z]{0,40}", big in any::<u64>()) {
        let _ = schedule::parse_duration(&s);
        let _ = schedule::refresh_interval(Some(&s), schedule::MIN_REFRESH);
        let _ = schedule::debounce(Some(&s), std::time::Duration::from_secs(5));
        let huge = format!("{big}h{big}m");
        let _ = schedule::refresh_interval(Some(&huge), schedule::MIN_REFRESH);
        if let Ok(d) = schedule::refresh_interval(Some(&s), schedule::MIN_REFRESH) {
            prop_assert!(d <= schedule::MAX_REFRESH && d >= schedule::MIN_REFRESH);
            prop_assert!(schedule::after(chrono::Utc::now(), d).is_some());
        }
    }

    #[test]
    fn many_placeholders_are_cut_at_the_limit(n in 1usize..4000, len in 1usize..60_000) {
        let mut spec: ManagedSecretSpec = serde_json::from_value(
            serde_json::json!({"secretId": "prod/p/x", "data": {"keys": [{"from": "x", "to": "x"}]}}),
        ).unwrap();
        spec.templates = BTreeMap::from([("t".to_string(), "{{ x }}".repeat(n.min(2000)))]);
        let value = SecretValue::String(serde_json::json!({"x": "y".repeat(len)}).to_string());
        match render::render(&spec, &value) {
            Ok(d) => prop_assert!(d.0.values().map(Vec::len).sum::<usize>() <= MAX_SECRET_BYTES),
            Err(e) => prop_assert_eq!(e.reason(), "ValueTooLarge"),
        }
    }
}
