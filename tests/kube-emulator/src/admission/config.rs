//! ValidatingWebhookConfiguration (admissionregistration.k8s.io/v1) as the API server decodes,
//! defaults and validates it: the typed webhook, its v1 defaults (failurePolicy `Fail`,
//! matchPolicy `Equivalent`, empty selectors, timeoutSeconds 10, rule scope `*`, service port 443)
//! and the field errors of `ValidateValidatingWebhookConfiguration` with their paths.

use crate::error::ApiError;
use crate::validate::{self, Cause};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One entry of `webhooks`, in the field order the API server writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub client_config: ClientConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<Selector>,
    #[serde(default)]
    pub side_effects: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(default)]
    pub admission_review_versions: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
    /// Base64 of PEM certificates, as the JSON form of Go's `[]byte`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_versions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// A `metav1.LabelSelector`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<Requirement>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

const FAILURE_POLICIES: [&str; 2] = ["Fail", "Ignore"];
const MATCH_POLICIES: [&str; 2] = ["Equivalent", "Exact"];
const NO_SIDE_EFFECTS: [&str; 2] = ["None", "NoneOnDryRun"];
const OPERATIONS: [&str; 5] = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
const SCOPES: [&str; 3] = ["*", "Cluster", "Namespaced"];
const REVIEW_VERSIONS: [&str; 2] = ["v1", "v1beta1"];

impl Webhook {
    /// The v1 defaults (`SetDefaults_ValidatingWebhook`, `_Rule`, `_ServiceReference`).
    fn default_fields(&mut self) {
        self.failure_policy.get_or_insert_with(|| "Fail".into());
        self.match_policy.get_or_insert_with(|| "Equivalent".into());
        self.namespace_selector
            .get_or_insert_with(Selector::default);
        self.object_selector.get_or_insert_with(Selector::default);
        self.timeout_seconds.get_or_insert(10);
        for r in self.rules.iter_mut().flatten() {
            r.scope.get_or_insert_with(|| "*".into());
        }
        if let Some(s) = &mut self.client_config.service {
            s.port.get_or_insert(443);
        }
    }

    pub fn fails_closed(&self) -> bool {
        self.failure_policy.as_deref() != Some("Ignore")
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(10).clamp(1, 30) as u64)
    }
}

/// The webhooks of a stored configuration (already defaulted and valid).
pub fn webhooks_of(obj: &Value) -> Vec<Webhook> {
    obj.get("webhooks")
        .cloned()
        .and_then(|w| serde_json::from_value(w).ok())
        .unwrap_or_default()
}

/// Decodes a ValidatingWebhookConfiguration as the API server does (unknown fields dropped, v1
/// defaults filled, in place) and returns its validation errors. A body that does not decode is a
/// 400, as Go's JSON decoding refuses it.
pub fn default_and_validate(obj: &mut Value) -> Result<Vec<Cause>, ApiError> {
    let undecodable = |e: String| {
        ApiError::bad_request(format!("ValidatingWebhookConfiguration in version \"v1\" cannot be handled as a ValidatingWebhookConfiguration: {e}"))
    };
    let mut hooks: Vec<Webhook> = match obj.get("webhooks") {
        None | Some(Value::Null) => vec![],
        Some(w) => serde_json::from_value(w.clone()).map_err(|e| undecodable(e.to_string()))?,
    };
    for h in &mut hooks {
        if let Some(ca) = &h.client_config.ca_bundle {
            base64::engine::general_purpose::STANDARD
                .decode(ca)
                .map_err(|e| undecodable(e.to_string()))?;
        }
        h.default_fields();
    }
    let kept = ["apiVersion", "kind", "metadata"];
    if let Some(m) = obj.as_object_mut() {
        m.retain(|k, _| kept.contains(&k.as_str()));
        if !hooks.is_empty() {
            m.insert("webhooks".into(), json!(hooks));
        }
    }
    Ok(validate(&hooks))
}

/// `ValidateValidatingWebhookConfiguration` for v1 (side effects must be None or NoneOnDryRun,
/// an AdmissionReview version the server speaks, unique names).
pub fn validate(hooks: &[Webhook]) -> Vec<Cause> {
    let mut causes = vec![];
    let mut names = std::collections::BTreeSet::new();
    for (i, h) in hooks.iter().enumerate() {
        let path = format!("webhooks[{i}]");
        causes.extend(validate_webhook(h, &path));
        causes.extend(validate_review_versions(
            h.admission_review_versions.as_deref().unwrap_or(&[]),
            &format!("{path}.admissionReviewVersions"),
        ));
        if !h.name.is_empty() && !names.insert(h.name.as_str()) {
            causes.push(Cause::duplicate(format!("{path}.name"), &h.name));
        }
    }
    causes
}

fn validate_webhook(h: &Webhook, path: &str) -> Vec<Cause> {
    let mut causes = fully_qualified_name(&format!("{path}.name"), &h.name);
    for (i, r) in h.rules.iter().flatten().enumerate() {
        causes.extend(validate_rule(r, &format!("{path}.rules[{i}]")));
    }
    let one_of = |field: &str, value: &Option<String>, allowed: &[&str]| {
        value
            .as_deref()
            .filter(|v| !allowed.contains(v))
            .map(|v| Cause::not_supported(format!("{path}.{field}"), v, allowed))
    };
    causes.extend(one_of(
        "failurePolicy",
        &h.failure_policy,
        &FAILURE_POLICIES,
    ));
    causes.extend(one_of("matchPolicy", &h.match_policy, &MATCH_POLICIES));
    match &h.side_effects {
        None => causes.push(Cause::required(
            format!("{path}.sideEffects"),
            &format!("must specify one of {}", NO_SIDE_EFFECTS.join(", ")),
        )),
        value => causes.extend(one_of("sideEffects", value, &NO_SIDE_EFFECTS)),
    }
    if let Some(t) = h.timeout_seconds.filter(|t| !(1..=30).contains(t)) {
        causes.push(Cause::invalid(
            format!("{path}.timeoutSeconds"),
            &t.to_string(),
            "the timeout value must be between 1 and 30 seconds",
        ));
    }
    for (field, sel) in [
        ("namespaceSelector", &h.namespace_selector),
        ("objectSelector", &h.object_selector),
    ] {
        if let Some(sel) = sel {
            causes.extend(validate_selector(sel, &format!("{path}.{field}")));
        }
    }
    causes.extend(validate_client_config(
        &h.client_config,
        &format!("{path}.clientConfig"),
    ));
    causes
}

/// `utilvalidation.IsFullyQualifiedName`: a DNS subdomain of at least three segments.
fn fully_qualified_name(path: &str, name: &str) -> Vec<Cause> {
    if name.is_empty() {
        return vec![Cause::required(path, "")];
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let errs = validate::dns1123_subdomain_errors(name);
    if !errs.is_empty() {
        return vec![Cause::invalid(path, &format!("{name:?}"), &errs.join(","))];
    }
    if name.split('.').count() < 3 {
        return vec![Cause::invalid(
            path,
            &format!("{name:?}"),
            "should be a domain with at least three segments separated by dots",
        )];
    }
    vec![]
}

/// Go's `%#v` of a string slice: `[]string{"a", "b"}`.
fn go_strings(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

fn validate_rule(r: &Rule, path: &str) -> Vec<Cause> {
    let mut causes = vec![];
    let ops = format!("{path}.operations");
    if r.operations.is_empty() {
        causes.push(Cause::required(&ops, ""));
    }
    if r.operations.len() > 1 && r.operations.iter().any(|o| o == "*") {
        let value =
            go_strings(&r.operations).replace("[]string", "[]admissionregistration.OperationType");
        causes.push(Cause::invalid(
            &ops,
            &value,
            "if '*' is present, must not specify other operations",
        ));
    }
    for (i, op) in r.operations.iter().enumerate() {
        if !OPERATIONS.contains(&op.as_str()) {
            causes.push(Cause::not_supported(format!("{ops}[{i}]"), op, &OPERATIONS));
        }
    }
    for (field, list, what) in [
        ("apiGroups", &r.api_groups, "API groups"),
        ("apiVersions", &r.api_versions, "API versions"),
    ] {
        let p = format!("{path}.{field}");
        if list.is_empty() {
            causes.push(Cause::required(&p, ""));
        }
        if list.len() > 1 && list.iter().any(|g| g == "*") {
            let detail = format!("if '*' is present, must not specify other {what}");
            causes.push(Cause::invalid(&p, &go_strings(list), &detail));
        }
    }
    for (i, v) in r.api_versions.iter().enumerate() {
        if v.is_empty() {
            causes.push(Cause::required(format!("{path}.apiVersions[{i}]"), ""));
        }
    }
    causes.extend(validate_resources(
        &r.resources,
        &format!("{path}.resources"),
    ));
    if let Some(s) = r.scope.as_deref().filter(|s| !SCOPES.contains(s)) {
        causes.push(Cause::not_supported(format!("{path}.scope"), s, &SCOPES));
    }
    causes
}

/// `validateResources`: `resource`, `resource/subresource`, `*`, `*/sub`, `res/*`, `*/*`, without
/// overlaps.
fn validate_resources(resources: &[String], path: &str) -> Vec<Cause> {
    let mut causes = vec![];
    if resources.is_empty() {
        causes.push(Cause::required(path, ""));
    }
    let (mut res_wild_sub, mut sub_wild_res) = (vec![], vec![]);
    let (mut double, mut single, mut plain) = (false, false, false);
    for (i, rs) in resources.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if rs.is_empty() {
            causes.push(Cause::required(&p, ""));
            continue;
        }
        double |= rs == "*/*";
        single |= rs == "*";
        let Some((res, sub)) = rs.split_once('/') else {
            plain = rs != "*";
            continue;
        };
        if res_wild_sub.contains(&res) {
            let detail = format!("if '{res}/*' is present, must not specify {rs}");
            causes.push(Cause::invalid(&p, &format!("{rs:?}"), &detail));
        }
        if sub_wild_res.contains(&sub) {
            let detail = format!("if '*/{sub}' is present, must not specify {rs}");
            causes.push(Cause::invalid(&p, &format!("{rs:?}"), &detail));
        }
        if sub == "*" {
            res_wild_sub.push(res);
        }
        if res == "*" {
            sub_wild_res.push(sub);
        }
    }
    if resources.len() > 1 && double {
        let detail = "if '*/*' is present, must not specify other resources";
        causes.push(Cause::invalid(path, &go_strings(resources), detail));
    }
    if single && plain {
        let detail = "if '*' is present, must not specify other resources without subresources";
        causes.push(Cause::invalid(path, &go_strings(resources), detail));
    }
    causes
}

fn validate_review_versions(versions: &[String], path: &str) -> Vec<Cause> {
    if versions.is_empty() {
        let detail = format!("must specify one of {}", REVIEW_VERSIONS.join(", "));
        return vec![Cause::required(path, &detail)];
    }
    let mut causes = vec![];
    let mut seen = std::collections::BTreeSet::new();
    for (i, v) in versions.iter().enumerate() {
        if !seen.insert(v.as_str()) {
            causes.push(Cause::invalid(
                format!("{path}[{i}]"),
                &format!("{v:?}"),
                "duplicate version",
            ));
            continue;
        }
        for e in validate::dns1035_label_errors(v) {
            causes.push(Cause::invalid(
                format!("{path}[{i}]"),
                &format!("{v:?}"),
                &e,
            ));
        }
    }
    if !versions
        .iter()
        .any(|v| REVIEW_VERSIONS.contains(&v.as_str()))
    {
        let detail = format!(
            "must include at least one of {}",
            REVIEW_VERSIONS.join(", ")
        );
        causes.push(Cause::invalid(path, &go_strings(versions), &detail));
    }
    causes
}

/// `metav1validation.ValidateLabelSelector`.
fn validate_selector(sel: &Selector, path: &str) -> Vec<Cause> {
    let mut causes = vec![];
    let labels = format!("{path}.matchLabels");
    for (k, v) in sel.match_labels.iter().flatten() {
        for e in validate::qualified_name_errors(k) {
            causes.push(Cause::invalid(&labels, &format!("{k:?}"), &e));
        }
        for e in validate::label_value_errors(v) {
            causes.push(Cause::invalid(&labels, &format!("{v:?}"), &e));
        }
    }
    for (i, r) in sel.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let has_values = r.values.as_ref().is_some_and(|v| !v.is_empty());
        match r.operator.as_str() {
            "In" | "NotIn" if !has_values => causes.push(Cause::required(
                format!("{p}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if has_values => causes.push(Cause::forbidden(
                format!("{p}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => causes.push(Cause::invalid(
                format!("{p}.operator"),
                &format!("{op:?}"),
                "not a valid selector operator",
            )),
        }
        for e in validate::qualified_name_errors(&r.key) {
            causes.push(Cause::invalid(
                format!("{p}.key"),
                &format!("{:?}", r.key),
                &e,
            ));
        }
    }
    causes
}

fn validate_client_config(cc: &ClientConfig, path: &str) -> Vec<Cause> {
    match (&cc.url, &cc.service) {
        (Some(url), None) => validate_url(url, &format!("{path}.url")),
        (None, Some(svc)) => validate_service(svc, &format!("{path}.service")),
        _ => vec![Cause::required(
            path,
            "exactly one of url or service is required",
        )],
    }
}

/// `webhook.ValidateWebhookURL` with https forced.
fn validate_url(raw: &str, path: &str) -> Vec<Cause> {
    const FORM: &str = "; desired format: https://host[/path]";
    let scheme_error = |scheme: &str| {
        let detail = format!("'https' is the only allowed URL scheme{FORM}");
        Cause::invalid(path, &format!("{scheme:?}"), &detail)
    };
    let host_error = || Cause::invalid(path, "\"\"", &format!("host must be specified{FORM}"));
    let u = match url::Url::parse(raw) {
        Ok(u) => u,
        // Go's parser takes these as a URL without scheme or host, and says so.
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            return vec![scheme_error(""), host_error()]
        }
        Err(url::ParseError::EmptyHost) if raw.starts_with("https:") => return vec![host_error()],
        Err(e) => {
            let detail = format!("url must be a valid URL: {e}{FORM}");
            return vec![Cause::required(path, &detail)];
        }
    };
    let mut causes = vec![];
    if u.scheme() != "https" {
        causes.push(scheme_error(u.scheme()));
    }
    if u.host_str().unwrap_or("").is_empty() {
        causes.push(host_error());
    }
    if !u.username().is_empty() || u.password().is_some() {
        let user = match u.password() {
            Some(p) => format!("{}:{p}", u.username()),
            None => u.username().to_string(),
        };
        let detail = "user information is not permitted in the URL";
        causes.push(Cause::invalid(path, &format!("{user:?}"), detail));
    }
    if let Some(f) = u.fragment().filter(|f| !f.is_empty()) {
        let detail = "fragments are not permitted in the URL";
        causes.push(Cause::invalid(path, &format!("{f:?}"), detail));
    }
    if let Some(q) = u.query().filter(|q| !q.is_empty()) {
        let detail = "query parameters are not permitted in the URL";
        causes.push(Cause::invalid(path, &format!("{q:?}"), detail));
    }
    causes
}

/// `webhook.ValidateWebhookService`.
fn validate_service(svc: &ServiceRef, path: &str) -> Vec<Cause> {
    let mut causes = vec![];
    if svc.name.is_empty() {
        causes.push(Cause::required(
            format!("{path}.name"),
            "service name is required",
        ));
    }
    if svc.namespace.is_empty() {
        causes.push(Cause::required(
            format!("{path}.namespace"),
            "service namespace is required",
        ));
    }
    let port = svc.port.unwrap_or(443);
    if !(1..=65535).contains(&port) {
        causes.push(Cause::invalid(
            format!("{path}.port"),
            &port.to_string(),
            "port is not valid: must be between 1 and 65535, inclusive",
        ));
    }
    let Some(p) = svc.path.as_deref().filter(|p| !p.is_empty() && *p != "/") else {
        return causes;
    };
    let field = format!("{path}.path");
    if p == "//" {
        causes.push(Cause::invalid(
            &field,
            &format!("{p:?}"),
            "segment[0] may not be empty",
        ));
        return causes;
    }
    if !p.starts_with('/') {
        causes.push(Cause::invalid(
            &field,
            &format!("{p:?}"),
            "must start with a '/'",
        ));
    }
    let trimmed = p.get(1..).unwrap_or("");
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    for (i, step) in trimmed.split('/').enumerate() {
        if step.is_empty() {
            let detail = format!("segment[{i}] may not be empty");
            causes.push(Cause::invalid(&field, &format!("{p:?}"), &detail));
            continue;
        }
        for e in validate::dns1123_subdomain_errors(step) {
            let detail = format!("segment[{i}]: {e}");
            causes.push(Cause::invalid(&field, &format!("{p:?}"), &detail));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(extra: Value) -> Value {
        let mut h = json!({"name": "deny.example.com", "clientConfig": {"url": "https://127.0.0.1:1/x"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"]});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                h.as_object_mut().unwrap().remove(k);
            } else {
                h[k] = v.clone();
            }
        }
        h
    }

    fn errors(hooks: Vec<Value>) -> Vec<(String, String)> {
        let mut obj = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "c"}, "webhooks": hooks});
        default_and_validate(&mut obj)
            .unwrap()
            .into_iter()
            .map(|c| (c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_are_the_v1_defaults_and_unknown_fields_go() {
        let mut obj = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "c"}, "spec": {},
            "webhooks": [hook(json!({"clientConfig": {"service": {"namespace": "ns", "name": "svc"}}, "junk": 1}))]});
        assert!(default_and_validate(&mut obj).unwrap().is_empty());
        assert_eq!(obj.get("spec"), None);
        let w = &obj["webhooks"][0];
        assert_eq!(w.get("junk"), None);
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["matchPolicy"], "Equivalent");
        assert_eq!(w["namespaceSelector"], json!({}));
        assert_eq!(w["objectSelector"], json!({}));
        assert_eq!(w["timeoutSeconds"], 10);
        assert_eq!(w["rules"][0]["scope"], "*");
        assert_eq!(w["clientConfig"]["service"]["port"], 443);
    }

    #[test]
    fn field_errors_name_their_paths_in_the_api_servers_words() {
        let e = errors(vec![hook(json!({"sideEffects": null}))]);
        assert_eq!(
            e,
            vec![(
                "webhooks[0].sideEffects".into(),
                "Required value: must specify one of None, NoneOnDryRun".into()
            )]
        );
        let e = errors(vec![hook(json!({"sideEffects": "Some"}))]);
        assert_eq!(
            e[0].1,
            "Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\""
        );
        let e = errors(vec![hook(json!({"name": "deny.example"}))]);
        assert_eq!(
            e,
            vec![(
                "webhooks[0].name".into(),
                "Invalid value: \"deny.example\": should be a domain with at least three segments separated by dots".into()
            )]
        );
        let both = json!({"url": "https://a.b/", "service": {"namespace": "n", "name": "s"}});
        let e = errors(vec![hook(json!({"clientConfig": both}))]);
        assert_eq!(
            e,
            vec![(
                "webhooks[0].clientConfig".into(),
                "Required value: exactly one of url or service is required".into()
            )]
        );
        let e = errors(vec![hook(json!({"clientConfig": {"url": "http://a.b/x"}}))]);
        assert_eq!(e, vec![("webhooks[0].clientConfig.url".into(), "Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]".into())]);
        let e = errors(vec![hook(json!({"timeoutSeconds": 31}))]);
        assert_eq!(
            e,
            vec![(
                "webhooks[0].timeoutSeconds".into(),
                "Invalid value: 31: the timeout value must be between 1 and 30 seconds".into()
            )]
        );
        let e = errors(vec![hook(json!({"admissionReviewVersions": ["v2"]}))]);
        assert_eq!(
            e,
            vec![(
                "webhooks[0].admissionReviewVersions".into(),
                "Invalid value: []string{\"v2\"}: must include at least one of v1, v1beta1".into()
            )]
        );
        let e = errors(vec![hook(json!({})), hook(json!({}))]);
        assert_eq!(
            e,
            vec![(
                "webhooks[1].name".into(),
                "Duplicate value: \"deny.example.com\"".into()
            )]
        );
    }

    #[test]
    fn rules_urls_services_and_selectors_are_checked() {
        let rule = json!([{"operations": ["CREATE", "FOO"], "apiGroups": ["*", "apps"], "apiVersions": ["v1"], "resources": ["*", "pods"], "scope": "Everywhere"}]);
        let fields: Vec<String> = errors(vec![hook(json!({"rules": rule}))])
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "webhooks[0].rules[0].operations[1]",
                "webhooks[0].rules[0].apiGroups",
                "webhooks[0].rules[0].resources",
                "webhooks[0].rules[0].scope"
            ]
        );
        let e = errors(vec![hook(
            json!({"clientConfig": {"url": "https://u:p@a.b/x?q=1#f"}}),
        )]);
        assert_eq!(e.len(), 3, "{e:?}");
        let svc = json!({"service": {"namespace": "", "name": "s", "port": 0, "path": "/a//b"}});
        let e = errors(vec![hook(json!({"clientConfig": svc}))]);
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "webhooks[0].clientConfig.service.namespace",
                "webhooks[0].clientConfig.service.port",
                "webhooks[0].clientConfig.service.path"
            ]
        );
        let sel = json!({"matchExpressions": [{"key": "env", "operator": "In"}, {"key": "a", "operator": "Is"}]});
        let e = errors(vec![hook(json!({"namespaceSelector": sel}))]);
        assert_eq!(
            e,
            vec![
                (
                    "webhooks[0].namespaceSelector.matchExpressions[0].values".into(),
                    "Required value: must be specified when `operator` is 'In' or 'NotIn'".into()
                ),
                (
                    "webhooks[0].namespaceSelector.matchExpressions[1].operator".into(),
                    "Invalid value: \"Is\": not a valid selector operator".into()
                ),
            ]
        );
    }

    #[test]
    fn a_body_that_does_not_decode_is_a_bad_request() {
        let mut obj = json!({"metadata": {"name": "c"}, "webhooks": [hook(json!({"timeoutSeconds": "ten"}))]});
        let e = default_and_validate(&mut obj).unwrap_err();
        assert_eq!(e.code, 400);
        let mut obj = json!({"metadata": {"name": "c"}, "webhooks": [hook(json!({"clientConfig": {"url": "https://a.b/", "caBundle": "!!"}}))]});
        assert_eq!(default_and_validate(&mut obj).unwrap_err().code, 400);
    }
}
