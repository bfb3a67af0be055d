//! `managed-secrets check -f DIR|FILE`: validates ManagedSecret and SecretAccessPolicy manifests
//! offline, the way the cluster would (the generated CRD schema, unknown fields the API server
//! would silently drop) and the way the controller would (its own spec checks, the mapping and
//! templates compiled), with `file:line: message` findings. Other kinds are skipped. With
//! `--policies`, every ManagedSecret is also decided against those SecretAccessPolicies and the
//! namespace labels given (`Access`), with the message its `PolicyDenied` condition would show.

use super::{documents, locate};
use crate::admission::review;
use crate::crd::{policy::SecretAccessPolicy, ManagedSecret, SecretAccessPolicySpec, GROUP};
use crate::policy::Namespace;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One problem, at a file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// What was checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub managed_secrets: usize,
    pub policies: usize,
    pub skipped: usize,
    pub findings: Vec<Finding>,
}

/// The schemas of both kinds, compiled once.
pub struct Checker {
    ms_schema: Value,
    ms: jsonschema::Validator,
    policy_schema: Value,
    policy: jsonschema::Validator,
    min_refresh: Duration,
    access: Option<Access>,
}

/// What the access decision reads offline: the policies, each namespace's labels, the namespace of
/// a manifest that names none, and the operator's default region.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub policies: Vec<(String, SecretAccessPolicySpec)>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub default_namespace: String,
    pub default_region: Option<String>,
}

impl Access {
    /// `namespace` as the policies see it: the labels given for it.
    pub fn namespace(&self, namespace: &str) -> Namespace {
        Namespace {
            name: namespace.to_string(),
            labels: self.namespaces.get(namespace).cloned().unwrap_or_default(),
        }
    }
}

/// `ns=key=value` items (comma-separated, or one per flag) as each namespace's labels. A namespace
/// named without labels (`ns=`) has none.
pub fn namespace_labels(
    items: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for item in items.iter().flat_map(|i| i.split(',')).map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let bad = || format!("--namespace-labels {item:?} is not namespace=key=value");
        let (ns, label) = item.split_once('=').ok_or_else(bad)?;
        if ns.is_empty() {
            return Err(bad());
        }
        let labels = out.entry(ns.to_string()).or_default();
        if label.is_empty() {
            continue;
        }
        let (k, v) = label.split_once('=').ok_or_else(bad)?;
        if k.is_empty() {
            return Err(bad());
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The SecretAccessPolicies in `texts` ((file, text)); a document that is not a well-formed
/// policy is a finding (as `check -f` reports it).
pub fn policies_in(
    checker: &Checker,
    texts: &[(String, String)],
) -> (Vec<(String, SecretAccessPolicySpec)>, Summary) {
    let mut found = vec![];
    let mut summary = Summary::default();
    for (file, text) in texts {
        checker.check_text(file, text, &mut summary);
        for (_, doc) in documents(text) {
            let Ok(v) = serde_yaml::from_str::<Value>(&doc) else {
                continue;
            };
            if v["kind"] != "SecretAccessPolicy" {
                continue;
            }
            if let Ok(p) = serde_json::from_value::<SecretAccessPolicy>(v) {
                found.push((p.metadata.name.clone().unwrap_or_default(), p.spec));
            }
        }
    }
    summary.managed_secrets = 0;
    summary.skipped = 0;
    (found, summary)
}

impl Checker {
    pub fn new(min_refresh: Duration) -> anyhow::Result<Checker> {
        use kube::CustomResourceExt;
        let ms_schema = openapi_to_json_schema(schema_of(&ManagedSecret::crd())?);
        let policy_schema = openapi_to_json_schema(schema_of(&SecretAccessPolicy::crd())?);
        Ok(Checker {
            ms: jsonschema::validator_for(&ms_schema)?,
            ms_schema,
            policy: jsonschema::validator_for(&policy_schema)?,
            policy_schema,
            min_refresh,
            access: None,
        })
    }

    /// Also decides every ManagedSecret against these policies and labels.
    pub fn with_access(mut self, access: Access) -> Checker {
        self.access = Some(access);
        self
    }

    /// Checks every document of one file's text.
    pub fn check_text(&self, file: &str, text: &str, out: &mut Summary) {
        for (start, doc) in documents(text) {
            // As YAML first (other tools' files may use tags, e.g. CloudFormation's !Ref).
            let value = match serde_yaml::from_str::<serde_yaml::Value>(&doc) {
                Ok(v) => v,
                Err(e) => {
                    let line = e.location().map(|l| start + l.line() - 1).unwrap_or(start);
                    out.findings.push(Finding {
                        file: file.to_string(),
                        line,
                        message: format!("not valid YAML: {}", first_line(&e.to_string())),
                    });
                    continue;
                }
            };
            let api_version = value
                .get("apiVersion")
                .and_then(serde_yaml::Value::as_str)
                .unwrap_or_default();
            if api_version.split('/').next() != Some(GROUP) {
                out.skipped += 1;
                continue;
            }
            let value: Value = match serde_json::to_value(&value) {
                Ok(v) => v,
                Err(e) => {
                    out.findings.push(Finding {
                        file: file.to_string(),
                        line: start,
                        message: format!("not a Kubernetes object: {e}"),
                    });
                    continue;
                }
            };
            match value["kind"].as_str().unwrap_or_default() {
                "ManagedSecret" => out.managed_secrets += 1,
                "SecretAccessPolicy" => out.policies += 1,
                _ => {}
            }
            for (path, message) in self.check_document(&value) {
                out.findings.push(Finding {
                    file: file.to_string(),
                    line: locate(&doc, start, &path),
                    message,
                });
            }
        }
    }

    /// The problems of one managedsecrets.io document: (path of the field at fault, message).
    pub fn check_document(&self, value: &Value) -> Vec<(Vec<String>, String)> {
        let mut found: Vec<(Vec<String>, String)> = vec![];
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        let kind = value["kind"].as_str().unwrap_or_default();
        let (validator, schema) = match kind {
            "ManagedSecret" => (&self.ms, &self.ms_schema),
            "SecretAccessPolicy" => (&self.policy, &self.policy_schema),
            other => {
                found.push((vec![], format!("{api_version} has no kind {other:?}")));
                return found;
            }
        };
        if api_version != format!("{GROUP}/v1alpha1") {
            found.push((
                vec!["apiVersion".into()],
                format!("apiVersion {api_version} is not served; use {GROUP}/v1alpha1"),
            ));
            return found;
        }
        match value["metadata"]["name"].as_str() {
            None | Some("") => found.push((vec!["metadata".into()], "metadata.name is required".into())),
            Some(n) if !crate::crd::validate::valid_secret_name(n) => found.push((
                vec!["metadata".into(), "name".into()],
                "metadata.name must be a DNS-1123 subdomain (lower case letters, digits, '-' and '.')".into(),
            )),
            Some(_) => {}
        }
        for e in validator.iter_errors(value) {
            let path = pointer(&e.instance_path().to_string());
            let message = format!("{}: {e}", dotted(&path));
            found.push((path, message));
        }
        for path in unknown_fields(schema, value, &mut Vec::new()) {
            let message = format!(
                "{}: unknown field (the API server would drop it silently)",
                dotted(&path)
            );
            found.push((path, message));
        }
        if !found.is_empty() {
            return found;
        }
        found.extend(self.controller_checks(kind, value));
        found
    }

    /// The controller's own checks, on what the schema accepted (and the access decision).
    fn controller_checks(&self, kind: &str, value: &Value) -> Vec<(Vec<String>, String)> {
        let mut found: Vec<(Vec<String>, String)> = vec![];
        let spec = vec!["spec".to_string()];
        if kind == "ManagedSecret" {
            match serde_json::from_value::<ManagedSecret>(value.clone()) {
                Err(e) => found.push((spec, format!("spec: {e}"))),
                Ok(ms) => {
                    // The admission webhook's own decision (spec, mapping, access).
                    let ns = self.access.as_ref().map(|a| {
                        let name = ms.metadata.namespace.as_deref();
                        a.namespace(name.unwrap_or(&a.default_namespace))
                    });
                    let access =
                        self.access
                            .as_ref()
                            .zip(ns.as_ref())
                            .map(|(a, ns)| review::Access {
                                policies: &a.policies,
                                namespace: ns,
                                default_region: a.default_region.as_deref(),
                            });
                    if let Err(r) = review::managed_secret(&ms, self.min_refresh, access.as_ref()) {
                        found.push((path_of(&r.field), r.message));
                    }
                }
            }
        } else {
            match serde_json::from_value::<SecretAccessPolicy>(value.clone()) {
                Err(e) => found.push((spec, format!("spec: {e}"))),
                Ok(p) => {
                    for r in review::policy(&p) {
                        let message = review::policy_message(std::slice::from_ref(&r));
                        found.push((path_of(&r.field), message));
                    }
                }
            }
        }
        found
    }
}

/// `spec.rules[1]` as the path segments a line is looked up by (`spec`, `rules`, `1`).
fn path_of(field: &str) -> Vec<String> {
    field
        .split(['.', '[', ']'])
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Every YAML file under `paths` (directories recursively, sorted), or the files themselves.
pub fn files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            entries.sort();
            let (dirs, plain): (Vec<PathBuf>, Vec<PathBuf>) =
                entries.into_iter().partition(|e| e.is_dir());
            out.extend(plain.into_iter().filter(|e| is_yaml(e)));
            out.extend(files(&dirs)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> anyhow::Result<Value> {
    let v = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == "v1alpha1")
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .ok_or_else(|| anyhow::anyhow!("the CRD has no v1alpha1 schema"))?;
    Ok(serde_json::to_value(v)?)
}

/// An OpenAPI v3 structural schema as plain JSON Schema: `nullable` becomes a null type, and
/// `x-kubernetes-int-or-string` an integer or a string. The root gains apiVersion, kind and
/// metadata, which a CRD's schema leaves to the API server.
pub fn openapi_to_json_schema(mut s: Value) -> Value {
    fn walk(s: &mut Value) {
        let Some(o) = s.as_object_mut() else { return };
        if o.get("nullable") == Some(&Value::Bool(true)) {
            if let Some(Value::String(t)) = o.get("type").cloned() {
                o.insert("type".into(), serde_json::json!([t, "null"]));
            }
        }
        if o.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            o.insert("type".into(), serde_json::json!(["integer", "string"]));
        }
        for key in ["properties", "patternProperties"] {
            if let Some(Value::Object(props)) = o.get_mut(key) {
                props.values_mut().for_each(walk);
            }
        }
        for key in ["items", "additionalProperties", "not"] {
            if let Some(v) = o.get_mut(key) {
                walk(v);
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(list)) = o.get_mut(key) {
                list.iter_mut().for_each(walk);
            }
        }
    }
    walk(&mut s);
    if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
        props.insert("kind".into(), serde_json::json!({"type": "string"}));
        props.insert("metadata".into(), serde_json::json!({"type": "object"}));
    }
    s
}

/// Paths of fields the schema does not know (where it lists properties and keeps no unknown ones).
pub fn unknown_fields(schema: &Value, v: &Value, at: &mut Vec<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return out;
    }
    match v {
        Value::Object(o) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties");
            for (k, child) in o {
                if at.is_empty() && k == "metadata" {
                    continue;
                }
                let sub = props
                    .and_then(|p| p.get(k))
                    .or(extra.filter(|e| e.is_object()));
                at.push(k.clone());
                match sub {
                    Some(sub) => out.extend(unknown_fields(sub, child, at)),
                    None if props.is_some() => out.push(at.clone()),
                    None => {}
                }
                at.pop();
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    at.push(i.to_string());
                    out.extend(unknown_fields(sub, item, at));
                    at.pop();
                }
            }
        }
        _ => {}
    }
    out
}

fn pointer(p: &str) -> Vec<String> {
    p.split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// `spec.rollout.targets[0].name`
fn dotted(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if p.parse::<usize>().is_ok() {
            s.push_str(&format!("[{p}]"));
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(p);
        }
    }
    if s.is_empty() {
        "(document)".into()
    } else {
        s
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Summary {
        let c = Checker::new(Duration::from_secs(10)).unwrap();
        let mut s = Summary::default();
        c.check_text("f.yaml", text, &mut s);
        s
    }

    fn messages(s: &Summary) -> Vec<String> {
        s.findings.iter().map(|f| f.to_string()).collect()
    }

    const GOOD: &str = "apiVersion: managedsecrets.io/v1alpha1
kind: ManagedSecret
metadata:
  name: db
spec:
  secretId: prod/db/credentials
  refreshInterval: 5m
  data:
    allKeys: true
";

    #[test]
    fn a_good_manifest_has_no_findings_and_other_kinds_are_skipped() {
        let text = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: db\n---\n{GOOD}");
        let s = check(&text);
        assert_eq!(messages(&s), Vec::<String>::new());
        assert_eq!((s.managed_secrets, s.policies, s.skipped), (1, 0, 1));
    }

    #[test]
    fn a_typo_is_an_unknown_field_at_its_line() {
        let text = GOOD.replace("refreshInterval", "refreshIntervall");
        assert_eq!(
            messages(&check(&text)),
            vec!["f.yaml:7: spec.refreshIntervall: unknown field (the API server would drop it silently)"]
        );
    }

    #[test]
    fn schema_errors_name_the_field_and_line() {
        let text = GOOD.replace("refreshInterval: 5m", "refreshInterval: 5 minutes");
        let m = messages(&check(&text));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("f.yaml:7: spec.refreshInterval: "),
            "{m:?}"
        );
    }

    #[test]
    fn the_controllers_own_checks_apply() {
        let text = GOOD.replace("refreshInterval: 5m", "refreshInterval: 1s");
        let m = messages(&check(&text));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("f.yaml:5: "), "{m:?}");
        assert!(m[0].contains("refreshInterval"), "{m:?}");
        let text = GOOD.replace(
            "  data:\n    allKeys: true\n",
            "  templates:\n    url: \"{{ .user \"\n",
        );
        let m = messages(&check(&text));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("template url"), "{m:?}");
    }

    #[test]
    fn documents_after_the_first_report_their_own_lines() {
        let text = format!("{GOOD}---\n{}", GOOD.replace("name: db", "name: Bad_Name"));
        assert_eq!(
            messages(&check(&text)),
            vec!["f.yaml:14: metadata.name must be a DNS-1123 subdomain (lower case letters, digits, '-' and '.')"]
        );
    }

    #[test]
    fn broken_yaml_and_unknown_kinds_and_versions() {
        let m = messages(&check("a: [1, 2\n"));
        assert_eq!(m.len(), 1);
        assert!(
            m[0].starts_with("f.yaml:") && m[0].contains("not valid YAML"),
            "{m:?}"
        );
        assert_eq!(
            messages(&check(
                "apiVersion: managedsecrets.io/v1alpha1\nkind: Nope\nmetadata: {name: x}\n"
            )),
            vec!["f.yaml:1: managedsecrets.io/v1alpha1 has no kind \"Nope\""]
        );
        assert_eq!(
            messages(&check(&GOOD.replace("v1alpha1", "v1"))),
            vec!["f.yaml:1: apiVersion managedsecrets.io/v1 is not served; use managedsecrets.io/v1alpha1"]
        );
    }

    #[test]
    fn access_policies_are_checked_with_the_rule_checks() {
        let good = "apiVersion: managedsecrets.io/v1alpha1
kind: SecretAccessPolicy
metadata:
  name: teams
spec:
  rules:
    - namespaces: [db]
      secrets: [\"prod/db/*\"]
";
        let s = check(good);
        assert_eq!(messages(&s), Vec::<String>::new());
        assert_eq!(s.policies, 1);
        let bad = good.replace("[\"prod/db/*\"]", "[\"prod/$(labels.)/*\"]");
        let m = messages(&check(&bad));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("f.yaml:7: spec.rules[0]: "), "{m:?}");
    }

    const POLICIES: &str = "apiVersion: managedsecrets.io/v1alpha1
kind: SecretAccessPolicy
metadata:
  name: teams
spec:
  rules:
    - namespaceSelector:
        matchLabels: {env: prod}
      secrets: [\"$(labels.env)/$(namespace)/*\"]
---
apiVersion: managedsecrets.io/v1alpha1
kind: SecretAccessPolicy
metadata:
  name: shared
spec:
  rules:
    - namespaces: [payments]
      secrets: [\"shared/*\"]
";

    fn access(labels: &[&str]) -> Access {
        let c = Checker::new(Duration::from_secs(10)).unwrap();
        let (policies, s) = policies_in(&c, &[("p.yaml".into(), POLICIES.into())]);
        assert_eq!(messages(&s), Vec::<String>::new());
        assert_eq!(policies.len(), 2);
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        Access {
            policies,
            namespaces: namespace_labels(&labels).unwrap(),
            default_namespace: "default".into(),
            default_region: Some("us-east-1".into()),
        }
    }

    fn check_with(access: Access, text: &str) -> Vec<String> {
        let c = Checker::new(Duration::from_secs(10))
            .unwrap()
            .with_access(access);
        let mut s = Summary::default();
        c.check_text("f.yaml", text, &mut s);
        messages(&s)
    }

    #[test]
    fn policies_grant_by_labels_and_variables_and_deny_with_the_conditions_message() {
        let in_db = GOOD.replace("  name: db\n", "  name: db\n  namespace: db\n");
        // db is env=prod: prod/db/* is granted through $(labels.env)/$(namespace)/*.
        assert_eq!(
            check_with(access(&["db=env=prod,db=team=db"]), &in_db),
            Vec::<String>::new()
        );
        // Without the label: denied, with the message the PolicyDenied condition shows.
        assert_eq!(
            check_with(access(&["db=team=db"]), &in_db),
            vec!["f.yaml:7: PolicyDenied: no SecretAccessPolicy grants namespace db the AWS secret prod/db/credentials (us-east-1); policies for this namespace: none; nothing is read from AWS until a SecretAccessPolicy grants it"]
        );
        // Another namespace's secret: $(namespace) is payments.
        let other = in_db.replace("namespace: db", "namespace: payments");
        let m = check_with(access(&["payments=env=prod"]), &other);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("namespace payments the AWS secret prod/db/credentials")
                && m[0].contains("policies for this namespace: shared, teams"),
            "{m:?}"
        );
        // No namespace in the manifest: --namespace (default here).
        let m = check_with(access(&["default=env=prod"]), GOOD);
        assert!(m[0].contains("namespace default"), "{m:?}");
    }

    #[test]
    fn namespace_labels_parse_and_say_what_is_wrong() {
        let l = namespace_labels(&["db=env=prod,db=team=db".into(), "payments=".into()]).unwrap();
        assert_eq!(l["db"]["env"], "prod");
        assert_eq!(l["db"]["team"], "db");
        assert!(l["payments"].is_empty());
        assert_eq!(
            namespace_labels(&["db".into()]),
            Err("--namespace-labels \"db\" is not namespace=key=value".into())
        );
        assert_eq!(
            namespace_labels(&["db=env".into()]),
            Err("--namespace-labels \"db=env\" is not namespace=key=value".into())
        );
    }
}
