//! Which webhooks a request calls, as the API server's webhook matchers decide it: the
//! namespaceSelector (against the labels of the object's namespace; not applied to cluster-scoped
//! objects other than Namespaces), the objectSelector (the object's labels or the old object's),
//! then the rules (operations, apiGroups, apiVersions, `resource/subresource` with `*`, scope), and
//! with matchPolicy `Equivalent` the same resource at another served version.

use super::config::{Rule, Selector, Webhook};
use super::Attributes;
use serde_json::Value;

/// Whether `hook` is called for `a`, and at which version of the resource (the request's, or for
/// matchPolicy `Equivalent` another version its rules name). `namespace_labels` are the labels the
/// namespaceSelector is evaluated against, `None` where it does not apply.
pub fn should_call(
    hook: &Webhook,
    a: &Attributes,
    namespace_labels: Option<&Value>,
) -> Option<String> {
    if let (Some(sel), Some(labels)) = (&hook.namespace_selector, namespace_labels) {
        if !sel.matches(Some(labels)) {
            return None;
        }
    }
    if let Some(sel) = hook.object_selector.as_ref().filter(|s| !s.is_empty()) {
        let selected = |o: &Option<Value>| {
            o.as_ref()
                .is_some_and(|o| sel.matches(o.pointer("/metadata/labels")))
        };
        if !selected(&a.object) && !selected(&a.old_object) {
            return None;
        }
    }
    let rules = hook.rules.as_deref().unwrap_or(&[]);
    if rules.iter().any(|r| rule_matches(r, a, &a.version)) {
        return Some(a.version.clone());
    }
    if hook.match_policy.as_deref() == Some("Exact") {
        return None;
    }
    a.versions
        .iter()
        .filter(|v| **v != a.version)
        .find(|v| rules.iter().any(|r| rule_matches(r, a, v)))
        .cloned()
}

/// Writes to the webhook configurations themselves are never sent to webhooks (so a broken webhook
/// can always be removed).
pub fn is_exempt(a: &Attributes) -> bool {
    a.group == "admissionregistration.k8s.io"
        && matches!(
            a.resource.as_str(),
            "validatingwebhookconfigurations" | "mutatingwebhookconfigurations"
        )
}

/// `rules.Matcher`: scope, operation, group, version and resource.
fn rule_matches(r: &Rule, a: &Attributes, version: &str) -> bool {
    let any_or = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
    scope_matches(r.scope.as_deref(), a)
        && any_or(&r.operations, a.operation.as_str())
        && any_or(&r.api_groups, &a.group)
        && any_or(&r.api_versions, version)
        && r.resources.iter().any(|rs| {
            let (res, sub) = rs.split_once('/').unwrap_or((rs, ""));
            (res == "*" || res == a.resource) && (sub == "*" || sub == a.subresource)
        })
}

/// A Namespace counts as cluster-scoped (its requests carry its own name as their namespace).
fn scope_matches(scope: Option<&str>, a: &Attributes) -> bool {
    let is_namespace = a.group.is_empty() && a.resource == "namespaces";
    match scope.unwrap_or("*") {
        "*" => true,
        "Namespaced" => !is_namespace && !a.namespace.is_empty(),
        "Cluster" => is_namespace || a.namespace.is_empty(),
        _ => false,
    }
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && self.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    }

    /// A label selector against a `labels` map (absent: no labels).
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_match = self
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| get(k) == Some(v.as_str()));
        let expressions_match = self.match_expressions.iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or(&[]);
            let value_in = |v: &str| values.iter().any(|x| x == v);
            match r.operator.as_str() {
                "In" => get(&r.key).is_some_and(value_in),
                "NotIn" => !get(&r.key).is_some_and(value_in),
                "Exists" => get(&r.key).is_some(),
                "DoesNotExist" => get(&r.key).is_none(),
                _ => false,
            }
        });
        labels_match && expressions_match
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Attributes, Operation};
    use super::*;
    use crate::auth::UserInfo;
    use serde_json::json;

    fn attrs(op: Operation, resource: &str, sub: &str, ns: &str) -> Attributes {
        Attributes {
            operation: op,
            group: "example.io".into(),
            version: "v1".into(),
            versions: vec!["v1".into(), "v2".into()],
            resource: resource.into(),
            subresource: sub.into(),
            kind: "Thing".into(),
            namespace: ns.into(),
            name: "t".into(),
            object: Some(json!({"metadata": {"labels": {"tier": "db"}}})),
            old_object: None,
            user: UserInfo::admin(),
            dry_run: false,
            options: json!({}),
        }
    }

    fn hook(rule: Value, extra: Value) -> Webhook {
        let mut h = json!({"name": "a.b.c", "rules": [rule], "matchPolicy": "Equivalent"});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        serde_json::from_value(h).unwrap()
    }

    fn rule(ops: &[&str], groups: &[&str], versions: &[&str], resources: &[&str]) -> Value {
        json!({"operations": ops, "apiGroups": groups, "apiVersions": versions, "resources": resources})
    }

    #[test]
    fn rules_match_operation_group_version_and_resource_with_subresources_apart() {
        let create = attrs(Operation::Create, "things", "", "ns");
        let status = attrs(Operation::Update, "things", "status", "ns");
        let plain = hook(
            rule(&["*"], &["example.io"], &["v1"], &["things"]),
            json!({}),
        );
        assert_eq!(should_call(&plain, &create, None), Some("v1".into()));
        assert_eq!(should_call(&plain, &status, None), None);
        let star = hook(rule(&["*"], &["*"], &["*"], &["*"]), json!({}));
        assert_eq!(should_call(&star, &status, None), None);
        let all = hook(rule(&["*"], &["*"], &["*"], &["*/*"]), json!({}));
        assert!(should_call(&all, &status, None).is_some());
        let sub = hook(
            rule(&["UPDATE"], &["*"], &["*"], &["things/status"]),
            json!({}),
        );
        assert!(should_call(&sub, &status, None).is_some());
        assert!(should_call(&sub, &create, None).is_none());
        let update_only = hook(rule(&["UPDATE"], &["*"], &["*"], &["*"]), json!({}));
        assert!(should_call(&update_only, &create, None).is_none());
        let other_group = hook(rule(&["*"], &[""], &["*"], &["*"]), json!({}));
        assert!(should_call(&other_group, &create, None).is_none());
    }

    #[test]
    fn equivalent_matches_another_served_version_and_exact_does_not() {
        let a = attrs(Operation::Create, "things", "", "ns");
        let v2 = rule(&["*"], &["*"], &["v2"], &["things"]);
        assert_eq!(
            should_call(&hook(v2.clone(), json!({})), &a, None),
            Some("v2".into())
        );
        let exact = hook(v2, json!({"matchPolicy": "Exact"}));
        assert_eq!(should_call(&exact, &a, None), None);
    }

    #[test]
    fn scope_and_selectors_decide_with_old_labels_counting_on_update() {
        let any = rule(&["*"], &["*"], &["*"], &["*"]);
        let mut cluster = any.clone();
        cluster["scope"] = json!("Cluster");
        let namespaced = attrs(Operation::Create, "things", "", "ns");
        assert!(should_call(&hook(cluster, json!({})), &namespaced, None).is_none());
        let sel = json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}});
        let h = hook(any.clone(), sel);
        assert!(should_call(&h, &namespaced, Some(&json!({"env": "dev"}))).is_none());
        assert!(should_call(&h, &namespaced, Some(&json!({"env": "prod"}))).is_some());
        assert!(
            should_call(&h, &namespaced, None).is_some(),
            "cluster-scoped: not applied"
        );
        let by_object = hook(
            any,
            json!({"objectSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}}),
        );
        assert!(should_call(&by_object, &namespaced, None).is_none());
        let mut update = attrs(Operation::Update, "things", "", "ns");
        update.old_object = Some(json!({"metadata": {"labels": {"tier": "web"}}}));
        assert!(should_call(&by_object, &update, None).is_some());
    }
}
