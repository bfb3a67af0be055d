//! Validation as the API server does it: a CRD's `openAPIV3Schema` (through the `jsonschema`
//! crate, after turning the Kubernetes extensions into plain JSON Schema), pruning of unknown fields,
//! schema defaults, object names, and the built-in Secret rules.

use base64::Engine;
use serde_json::{json, Map, Value};

/// One entry of `details.causes` in a 422 Invalid answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn to_json(&self) -> Value {
        json!({"reason": self.reason, "message": self.message, "field": self.field})
    }
    /// `field: message`, as the Status message lists causes.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
    /// Go's `field.Required`.
    pub fn required(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            message: with_detail("Required value".into(), detail),
            field: field.into(),
        }
    }
    /// Go's `field.Invalid`; `value` is already printed as Go prints it (`"text"`, `31`).
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            message: with_detail(format!("Invalid value: {value}"), detail),
            field: field.into(),
        }
    }
    /// Go's `field.NotSupported`.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Cause {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
            field: field.into(),
        }
    }
    /// Go's `field.Duplicate`.
    pub fn duplicate(field: impl Into<String>, value: &str) -> Cause {
        Cause {
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: {value:?}"),
            field: field.into(),
        }
    }
    /// Go's `field.Forbidden`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            message: with_detail("Forbidden".into(), detail),
            field: field.into(),
        }
    }
}

fn with_detail(body: String, detail: &str) -> String {
    if detail.is_empty() {
        body
    } else {
        format!("{body}: {detail}")
    }
}

/// Go's `validation.RegexError`: the message, its examples and the pattern.
fn regex_error(msg: &str, pattern: &str, examples: &[&str]) -> String {
    format!(
        "{msg} (e.g. '{}', regex used for validation is '{pattern}')",
        examples.join("',  or '")
    )
}

fn full_match(pattern: &str, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .expect("valid regex")
        .is_match(value)
}

const SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const QNAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QNAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Go's `validation.IsDNS1123Subdomain`: its messages, none when `value` is one.
pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errs = vec![];
    if value.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !full_match(SUBDOMAIN_FMT, value) {
        errs.push(regex_error("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character", SUBDOMAIN_FMT, &["example.com"]));
    }
    errs
}

/// Go's `validation.IsDNS1035Label`.
pub fn dns1035_label_errors(value: &str) -> Vec<String> {
    let mut errs = vec![];
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    let pattern = "[a-z]([-a-z0-9]*[a-z0-9])?";
    if !full_match(pattern, value) {
        errs.push(regex_error("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character", pattern, &["my-name", "abc-123"]));
    }
    errs
}

/// Go's `validation.IsQualifiedName` (label keys): an optional DNS subdomain prefix and `/`, then
/// a name of at most 63 characters.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let name_regex = || regex_error(QNAME_MSG, QNAME_FMT, &["MyName", "my.name", "123-abc"]);
    let mut errs = vec![];
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                let prefixed = dns1123_subdomain_errors(prefix).into_iter();
                errs.extend(prefixed.map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            return vec![format!("a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')", name_regex())];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !full_match(QNAME_FMT, name) {
        errs.push(format!("name part {}", name_regex()));
    }
    errs
}

/// Go's `validation.IsValidLabelValue`.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = vec![];
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    let pattern = format!("({QNAME_FMT})?");
    if !full_match(&pattern, value) {
        errs.push(regex_error("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", &pattern, &["MyValue", "my_value", "12345"]));
    }
    errs
}

/// Rewrites an OpenAPI v3 structural schema into JSON Schema the validator understands.
pub fn to_json_schema(s: &Value) -> Value {
    let Some(m) = s.as_object() else {
        return s.clone();
    };
    let mut out = Map::new();
    let int_or_string = m.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    let nullable = m.get("nullable").and_then(Value::as_bool) == Some(true);
    for (k, v) in m {
        match k.as_str() {
            "properties" | "patternProperties" => {
                let props = v
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(pk, pv)| (pk.clone(), to_json_schema(pv)))
                            .collect::<Map<_, _>>()
                    })
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" | "not" if v.is_object() => {
                out.insert(k.clone(), to_json_schema(v));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list = v
                    .as_array()
                    .map(|a| a.iter().map(to_json_schema).collect())
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Array(list));
            }
            // Formats are annotations for the API server too (int32, byte, date-time are not enforced here).
            "format" | "nullable" | "default" | "description" | "example" | "title" => {}
            _ if k.starts_with("x-kubernetes") => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if int_or_string {
        out.remove("type");
        out.insert(
            "anyOf".into(),
            json!([{"type": "integer"}, {"type": "string"}]),
        );
    }
    if nullable {
        if let Some(t) = out.get("type").cloned() {
            out.insert("type".into(), json!([t, "null"]));
        }
        if let Some(e) = out.get_mut("enum").and_then(Value::as_array_mut) {
            e.push(Value::Null);
        }
    }
    Value::Object(out)
}

fn pointer_to_field(ptr: &str) -> String {
    ptr.trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn quoted(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Validates a custom resource against its schema; causes in the API server's words.
pub fn validate_schema(schema: &Value, obj: &Value) -> Vec<Cause> {
    use jsonschema::error::ValidationErrorKind as K;
    let js = to_json_schema(schema);
    // The server validates metadata itself; the schema's view of it is not enforced.
    let mut inst = obj.clone();
    if let Some(m) = inst.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
    }
    let mut js = js;
    if let Some(p) = js.get_mut("properties").and_then(Value::as_object_mut) {
        p.remove("metadata");
        p.remove("apiVersion");
        p.remove("kind");
    }
    let validator = match jsonschema::validator_for(&js) {
        Ok(v) => v,
        Err(e) => {
            return vec![Cause {
                reason: "FieldValueInvalid",
                message: format!("the CRD schema could not be compiled: {e}"),
                field: String::new(),
            }]
        }
    };
    let mut causes = vec![];
    for err in validator.iter_errors(&inst) {
        let field = pointer_to_field(&err.instance_path().to_string());
        let value = err.instance().clone().into_owned();
        let cause = match err.kind() {
            K::Type { kind } => {
                let want = match kind {
                    jsonschema::error::TypeKind::Single(t) => t.to_string(),
                    jsonschema::error::TypeKind::Multiple(ts) => format!("{ts:?}"),
                };
                Cause {
                    reason: "FieldValueTypeInvalid",
                    message: format!(
                        "Invalid value: \"{}\": {field} in body must be of type {want}: \"{}\"",
                        type_name(&value),
                        type_name(&value)
                    ),
                    field: field.clone(),
                }
            }
            K::Enum { options } => {
                let opts: Vec<String> = options.as_array().map(|a| a.iter().map(quoted).collect()).unwrap_or_default();
                Cause {
                    reason: "FieldValueNotSupported",
                    message: format!("Unsupported value: {}: supported values: {}", quoted(&value), opts.join(", ")),
                    field: field.clone(),
                }
            }
            K::Required { property } => {
                let prop = property.as_str().unwrap_or_default();
                let f = if field.is_empty() { prop.to_string() } else { format!("{field}.{prop}") };
                Cause { reason: "FieldValueRequired", message: "Required value".into(), field: f }
            }
            K::Minimum { limit } => Cause {
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {value}: {field} in body should be greater than or equal to {limit}"),
                field: field.clone(),
            },
            K::Maximum { limit } => Cause {
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {value}: {field} in body should be less than or equal to {limit}"),
                field: field.clone(),
            },
            K::MaxLength { limit } => Cause {
                reason: "FieldValueTooLong",
                message: format!("Too long: may not be longer than {limit}"),
                field: field.clone(),
            },
            K::MinLength { limit } => Cause {
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {}: {field} in body should be at least {limit} chars long", quoted(&value)),
                field: field.clone(),
            },
            K::Pattern { pattern } => Cause {
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {}: {field} in body should match '{pattern}'", quoted(&value)),
                field: field.clone(),
            },
            K::MaxItems { limit } => Cause {
                reason: "FieldValueTooMany",
                message: format!("Too many: {}: must have at most {limit} items", value.as_array().map(Vec::len).unwrap_or(0)),
                field: field.clone(),
            },
            _ => Cause { reason: "FieldValueInvalid", message: format!("Invalid value: {}: {err}", quoted(&value)), field: field.clone() },
        };
        if !causes.contains(&cause) {
            causes.push(cause);
        }
    }
    causes
}

/// Drops fields the schema does not know (unless `x-kubernetes-preserve-unknown-fields`) and fills
/// schema defaults, as the API server does before validation.
pub fn prune_and_default(schema: &Value, v: &mut Value, top: bool) {
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            if let Some(props) = props {
                for (k, ps) in props {
                    if !m.contains_key(k) {
                        if let Some(d) = ps.get("default") {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                }
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if top && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    continue;
                }
                if let Some(ps) = props.and_then(|p| p.get(&k)) {
                    prune_and_default(ps, m.get_mut(&k).expect("present"), false);
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    prune_and_default(a, m.get_mut(&k).expect("present"), false);
                } else if additional.and_then(Value::as_bool) == Some(true) || preserve {
                } else {
                    m.remove(&k);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for it in items {
                    prune_and_default(is, it, false);
                }
            }
        }
        _ => {}
    }
}

const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS1123_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

pub fn validate_name(name: &str, label_only: bool) -> Option<Cause> {
    let (re, max, what, example, pattern) = if label_only {
        (DNS1123_LABEL, 63, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc'", "", "[a-z0-9]([-a-z0-9]*[a-z0-9])?")
    } else {
        (DNS1123_SUBDOMAIN, 253, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com'", "", r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
    };
    let _ = example;
    if name.len() > max {
        return Some(Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {name:?}: must be no more than {max} characters"),
            field: "metadata.name".into(),
        });
    }
    if !regex::Regex::new(re).expect("valid regex").is_match(name) {
        return Some(Cause {
            reason: "FieldValueInvalid",
            message: format!(
                "Invalid value: {name:?}: {what}, regex used for validation is '{pattern}')"
            ),
            field: "metadata.name".into(),
        });
    }
    None
}

/// Names of RBAC objects: any path segment (`system:basic-user` is one), as
/// `path.ValidatePathSegmentName` checks them.
pub fn validate_path_segment_name(name: &str) -> Option<Cause> {
    let why = if name == "." || name == ".." {
        format!("may not be '{name}'")
    } else if let Some(c) = ['/', '%'].into_iter().find(|c| name.contains(*c)) {
        format!("may not contain '{c}'")
    } else {
        return None;
    };
    Some(Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {name:?}: {why}"),
        field: "metadata.name".into(),
    })
}

pub const SECRET_MAX_BYTES: usize = 1024 * 1024;

/// Folds `stringData` into `data` (base64) as the Secret's REST strategy does.
pub fn fold_string_data(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else { return };
    if let Some(Value::Object(sd)) = m.remove("stringData") {
        let data = m.entry("data").or_insert_with(|| Value::Object(Map::new()));
        if !data.is_object() {
            *data = Value::Object(Map::new());
        }
        let d = data.as_object_mut().expect("object");
        for (k, v) in sd {
            let s = v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            d.insert(
                k,
                Value::String(base64::engine::general_purpose::STANDARD.encode(s)),
            );
        }
    }
    if !m.contains_key("type") {
        m.insert("type".into(), json!("Opaque"));
    }
}

/// The built-in Secret validation: key names, decodable data, total size, per-type required keys,
/// and immutability against the previous object.
pub fn validate_secret(obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = vec![];
    let key_re = regex::Regex::new(r"^[-._a-zA-Z0-9]+$").expect("valid regex");
    let data = obj
        .get("data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut total = 0usize;
    for (k, v) in &data {
        if !key_re.is_match(k) || k.len() > 253 || k == "." || k == ".." {
            causes.push(Cause {
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"),
                field: format!("data[{k}]"),
            });
        }
        match v
            .as_str()
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
        {
            Some(Ok(bytes)) => total += bytes.len(),
            _ => causes.push(Cause {
                reason: "FieldValueInvalid",
                message: "Invalid value: \"<secret contents redacted>\": illegal base64 data"
                    .into(),
                field: format!("data[{k}]"),
            }),
        }
    }
    if total > SECRET_MAX_BYTES {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            message: format!("Too long: must have at most {SECRET_MAX_BYTES} bytes"),
            field: "data".into(),
        });
    }
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or("Opaque");
    if let Some(old) = old {
        let old_ty = old.get("type").and_then(Value::as_str).unwrap_or("Opaque");
        if old_ty != ty {
            causes.push(Cause {
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {ty:?}: field is immutable"),
                field: "type".into(),
            });
        }
        if old.get("immutable").and_then(Value::as_bool) == Some(true) {
            if old.get("data") != obj.get("data") {
                causes.push(Cause {
                    reason: "FieldValueForbidden",
                    message: "Forbidden: field is immutable when `immutable` is set".into(),
                    field: "data".into(),
                });
            }
            if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
                causes.push(Cause {
                    reason: "FieldValueForbidden",
                    message: "Forbidden: field is immutable when `immutable` is set".into(),
                    field: "immutable".into(),
                });
            }
        }
    }
    let required: &[&str] = match ty {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        _ => &[],
    };
    for k in required {
        if !data.contains_key(*k) {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value".into(),
                field: format!("data[{k}]"),
            });
        }
    }
    if ty == "kubernetes.io/basic-auth"
        && !data.contains_key("username")
        && !data.contains_key("password")
    {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value".into(),
            field: "data[username]".into(),
        });
    }
    if ty == "kubernetes.io/dockerconfigjson" {
        if let Some(raw) = data.get(".dockerconfigjson").and_then(Value::as_str) {
            let ok = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some();
            if !ok {
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    message:
                        "Invalid value: \"<secret contents redacted>\": invalid character in JSON"
                            .into(),
                    field: "data[.dockerconfigjson]".into(),
                });
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget_schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["size"], "properties": {
            "size": {"type": "integer", "minimum": 1, "maximum": 10},
            "color": {"type": "string", "enum": ["red", "blue"]},
            "code": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "port": {"x-kubernetes-int-or-string": true},
            "mode": {"type": "string", "default": "fast"}
        }}}})
    }

    #[test]
    fn schema_violations_name_the_field_and_rule() {
        let s = widget_schema();
        let c = validate_schema(&s, &json!({"spec": {"size": "big", "color": "green"}}));
        assert_eq!(c[0].field, "spec.size");
        assert_eq!(c[0].reason, "FieldValueTypeInvalid");
        assert_eq!(
            c[0].message,
            "Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
        );
        assert_eq!(c[1].reason, "FieldValueNotSupported");
        assert_eq!(
            c[1].message,
            "Unsupported value: \"green\": supported values: \"red\", \"blue\""
        );
        let c = validate_schema(&s, &json!({"spec": {"color": "red"}}));
        assert_eq!(
            c,
            vec![Cause {
                reason: "FieldValueRequired",
                message: "Required value".into(),
                field: "spec.size".into()
            }]
        );
        let c = validate_schema(&s, &json!({"spec": {"size": 11, "code": "ABCDEFG"}}));
        let reasons: Vec<_> = c.iter().map(|c| (c.field.as_str(), c.reason)).collect();
        assert!(
            reasons.contains(&("spec.size", "FieldValueInvalid")),
            "{c:?}"
        );
        assert!(
            reasons.contains(&("spec.code", "FieldValueTooLong")),
            "{c:?}"
        );
        assert!(
            reasons.contains(&("spec.code", "FieldValueInvalid")),
            "{c:?}"
        );
        assert!(validate_schema(&s, &json!({"spec": {"size": 1, "port": "http"}})).is_empty());
        assert!(validate_schema(&s, &json!({"spec": {"size": 1, "port": 80}})).is_empty());
    }

    #[test]
    fn unknown_fields_are_pruned_unless_preserved_and_defaults_filled() {
        let s = widget_schema();
        let mut o = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"}, "spec": {"size": 1, "unknown": 1, "free": {"any": {"thing": 1}}}, "junk": true});
        prune_and_default(&s, &mut o, true);
        assert_eq!(
            o,
            json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"}, "spec": {"size": 1, "free": {"any": {"thing": 1}}, "mode": "fast"}})
        );
    }

    #[test]
    fn secrets_are_checked_like_the_real_server() {
        let mut s = json!({"stringData": {"bad key": "v"}});
        fold_string_data(&mut s);
        assert_eq!(validate_secret(&s, None)[0].field, "data[bad key]");
        let tls = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        assert_eq!(validate_secret(&tls, None)[0].field, "data[tls.key]");
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; SECRET_MAX_BYTES + 1]);
        let c = validate_secret(&json!({"data": {"k": big}}), None);
        assert_eq!(c[0].message, "Too long: must have at most 1048576 bytes");
        let old = json!({"immutable": true, "data": {"k": "dg=="}, "type": "Opaque"});
        let new = json!({"immutable": true, "data": {"k": "djI="}, "type": "Opaque"});
        assert_eq!(
            validate_secret(&new, Some(&old))[0].reason,
            "FieldValueForbidden"
        );
        assert!(validate_name("Bad_Name", false).is_some());
        assert!(validate_name("good.name-1", false).is_none());
    }
}
