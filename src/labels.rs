//! Pure: Kubernetes label selector semantics, for rollout targets and access policies.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// Label selector semantics (matchLabels and matchExpressions); an empty selector matches all.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let eq = sel
        .match_labels
        .as_ref()
        .map(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
        .unwrap_or(true);
    let exprs = sel.match_expressions.iter().flatten().all(|e| {
        let have = labels.get(&e.key);
        let vals = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => have.map(|h| vals.contains(h)).unwrap_or(false),
            "NotIn" => have.map(|h| !vals.contains(h)).unwrap_or(true),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    eq && exprs
}

/// Whether a selector requires some label to be present (a matchLabels entry, an `In` or an
/// `Exists`): one that only excludes (empty, `NotIn`, `DoesNotExist`) matches nearly everything.
pub fn selects_by_presence(sel: &LabelSelector) -> bool {
    sel.match_labels
        .as_ref()
        .map(|m| !m.is_empty())
        .unwrap_or(false)
        || sel
            .match_expressions
            .iter()
            .flatten()
            .any(|e| matches!(e.operator.as_str(), "In" | "Exists"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_required_label_selects_by_presence() {
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        assert!(selects_by_presence(&sel(
            json!({"matchLabels": {"app": "api"}})
        )));
        assert!(selects_by_presence(&sel(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]}]})
        )));
        assert!(selects_by_presence(&sel(
            json!({"matchExpressions": [{"key": "app", "operator": "Exists"}, {"key": "x", "operator": "DoesNotExist"}]})
        )));
        assert!(!selects_by_presence(&sel(json!({}))));
        assert!(!selects_by_presence(&sel(json!({"matchLabels": {}}))));
        assert!(!selects_by_presence(&sel(
            json!({"matchExpressions": [{"key": "nope", "operator": "DoesNotExist"}]})
        )));
        assert!(!selects_by_presence(&sel(
            json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]})
        )));
    }

    #[test]
    fn match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [
            ("env".to_string(), "prod".to_string()),
            ("team".to_string(), "a".to_string()),
        ]
        .into();
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        assert!(
            selector_matches(&sel(json!({})), &labels),
            "empty matches all"
        );
        assert!(selector_matches(
            &sel(json!({"matchLabels": {"env": "prod"}})),
            &labels
        ));
        assert!(!selector_matches(
            &sel(json!({"matchLabels": {"env": "dev"}})),
            &labels
        ));
        let e = |op: &str, vals: serde_json::Value| {
            sel(json!({"matchExpressions": [{"key": "env", "operator": op, "values": vals}]}))
        };
        assert!(selector_matches(&e("In", json!(["prod", "dev"])), &labels));
        assert!(!selector_matches(&e("NotIn", json!(["prod"])), &labels));
        assert!(selector_matches(&e("Exists", json!(null)), &labels));
        assert!(!selector_matches(&e("DoesNotExist", json!(null)), &labels));
        assert!(
            !selector_matches(&e("Bogus", json!(null)), &labels),
            "unknown operators match nothing"
        );
    }
}
