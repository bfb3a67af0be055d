//! Pure: what the admission webhook answers for a ManagedSecret or a SecretAccessPolicy. The same
//! checks the controller makes (spec validation, the mapping, the access decision) and the same
//! messages its conditions carry; the offline `check` calls these too.

use crate::crd::{ManagedSecret, SecretAccessPolicy, SecretAccessPolicySpec};
use crate::error::Error;
use crate::policy::{self, Namespace};
use std::time::Duration;

/// Why an object is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The field the message is about (`spec`, `spec.secretId`, `spec.rules[2]`).
    pub field: String,
    pub message: String,
    /// Whether an access policy refused it (403 Forbidden) rather than the spec itself (422
    /// Invalid).
    pub denied: bool,
}

impl Refusal {
    fn invalid(field: &str, message: String) -> Refusal {
        Refusal {
            field: field.into(),
            message,
            denied: false,
        }
    }

    /// The HTTP status code the API server answers the client with.
    pub fn code(&self) -> u16 {
        if self.denied {
            403
        } else {
            422
        }
    }

    /// The Status reason that goes with the code.
    pub fn reason(&self) -> &'static str {
        if self.denied {
            "Forbidden"
        } else {
            "Invalid"
        }
    }
}

/// What a ManagedSecret is decided against when access policies are enforced.
pub struct Access<'a> {
    pub policies: &'a [(String, SecretAccessPolicySpec)],
    /// Its namespace, with the labels the operator sees.
    pub namespace: &'a Namespace,
    /// The operator's default region (AWS_REGION).
    pub default_region: Option<&'a str>,
}

/// A ManagedSecret as the controller would judge it: its spec (`validate_spec`), its mapping
/// (`validate_mapping`), then, with `access`, whether a policy grants its reference. The first
/// problem is the answer.
pub fn managed_secret(
    ms: &ManagedSecret,
    min_refresh: Duration,
    access: Option<&Access<'_>>,
) -> Result<(), Refusal> {
    crate::crd::validate_spec(ms, min_refresh)
        .map_err(|e| Refusal::invalid("spec", e.to_string()))?;
    crate::render::validate_mapping(&ms.spec)
        .map_err(|e| Refusal::invalid("spec", e.to_string()))?;
    if let Some(a) = access {
        policy::decide_for(a.policies, ms, a.namespace, a.default_region).map_err(|m| Refusal {
            field: "spec.secretId".into(),
            message: Error::PolicyDenied(m).to_string(),
            denied: true,
        })?;
    }
    Ok(())
}

/// A SecretAccessPolicy's malformed rules (a bad glob, an unknown variable, a bad selector), each
/// named by its index; empty when every rule is in effect.
pub fn policy(p: &SecretAccessPolicy) -> Vec<Refusal> {
    p.spec
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            policy::rule_problem(rule)
                .map(|problem| Refusal::invalid(&format!("spec.rules[{i}]"), problem))
        })
        .collect()
}

/// The message of a refused policy: every malformed rule, by index.
pub fn policy_message(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(|r| format!("{}: {}", r.field, r.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether an update needs a decision at all: only a changed spec does. Metadata-only writes (the
/// operator's finalizer, labels, a deletion in progress) of an object that was admitted before, or
/// that a later policy change now denies, must not be blocked.
pub fn spec_changed(old: Option<&serde_json::Value>, new: &serde_json::Value) -> bool {
    match old {
        None => true,
        Some(old) => old.get("spec") != new.get("spec"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(spec: serde_json::Value) -> ManagedSecret {
        serde_json::from_value(json!({
            "apiVersion": "managedsecrets.io/v1alpha1",
            "kind": "ManagedSecret",
            "metadata": {"name": "db", "namespace": "team-a"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn grant(secrets: &[&str]) -> Vec<(String, SecretAccessPolicySpec)> {
        let spec: SecretAccessPolicySpec = serde_json::from_value(json!({
            "rules": [{"namespaceSelector": {"matchLabels": {"team": "a"}}, "secrets": secrets}]
        }))
        .unwrap();
        vec![("teams".into(), spec)]
    }

    fn ns(labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            name: "team-a".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const MIN: Duration = Duration::from_secs(10);

    #[test]
    fn a_granted_reference_is_admitted_and_a_denied_one_gets_the_condition_message() {
        let policies = grant(&["prod/$(namespace)/*"]);
        let labelled = ns(&[("team", "a")]);
        let access = Access {
            policies: &policies,
            namespace: &labelled,
            default_region: Some("eu-west-1"),
        };
        let good = ms(json!({"secretId": "prod/team-a/db", "data": {"allKeys": true}}));
        assert_eq!(managed_secret(&good, MIN, Some(&access)), Ok(()));
        let other = ms(json!({"secretId": "prod/team-b/db", "data": {"allKeys": true}}));
        let refusal = managed_secret(&other, MIN, Some(&access)).unwrap_err();
        let condition = Error::PolicyDenied(
            policy::decide_for(&policies, &other, &labelled, Some("eu-west-1")).unwrap_err(),
        )
        .to_string();
        assert_eq!(
            refusal,
            Refusal {
                field: "spec.secretId".into(),
                message: condition,
                denied: true
            }
        );
        assert!(refusal.message.starts_with("PolicyDenied: "), "{refusal:?}");
        assert_eq!((refusal.code(), refusal.reason()), (403, "Forbidden"));
        // Without access policies only the spec is judged.
        assert_eq!(managed_secret(&other, MIN, None), Ok(()));
    }

    #[test]
    fn an_invalid_spec_is_refused_before_any_access_decision_naming_the_field() {
        let policies = grant(&["*"]);
        let labelled = ns(&[]);
        let access = Access {
            policies: &policies,
            namespace: &labelled,
            default_region: None,
        };
        let reserved = ms(json!({
            "secretId": "prod/team-a/db",
            "data": {"allKeys": true},
            "target": {"annotations": {"managedsecrets.io/owner": "x"}}
        }));
        let r = managed_secret(&reserved, MIN, Some(&access)).unwrap_err();
        assert_eq!(r.field, "spec");
        assert!(!r.denied);
        assert!(r.message.contains("target.annotations key"), "{r:?}");
        assert_eq!((r.code(), r.reason()), (422, "Invalid"));
        let fast =
            ms(json!({"secretId": "prod/db", "data": {"allKeys": true}, "refreshInterval": "1s"}));
        let r = managed_secret(&fast, MIN, None).unwrap_err();
        assert!(r.message.contains("refreshInterval"), "{r:?}");
    }

    #[test]
    fn a_malformed_rule_is_named_by_its_index() {
        let p: SecretAccessPolicy = serde_json::from_value(json!({
            "apiVersion": "managedsecrets.io/v1alpha1",
            "kind": "SecretAccessPolicy",
            "metadata": {"name": "p"},
            "spec": {"rules": [
                {"namespaceSelector": {}, "secrets": ["prod/*"]},
                {"namespaceSelector": {}, "secrets": ["$(labels.team/*"]},
            ]}
        }))
        .unwrap();
        let found = policy(&p);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "spec.rules[1]");
        assert_eq!(
            policy_message(&found),
            format!(
                "spec.rules[1]: {}",
                policy::rule_problem(&p.spec.rules[1]).unwrap()
            )
        );
    }

    #[test]
    fn only_a_changed_spec_needs_a_decision() {
        let a = json!({"metadata": {"finalizers": []}, "spec": {"secretId": "a"}});
        let b = json!({"metadata": {"finalizers": ["x"]}, "spec": {"secretId": "a"}});
        let c = json!({"spec": {"secretId": "c"}});
        assert!(spec_changed(None, &a));
        assert!(!spec_changed(Some(&a), &b));
        assert!(spec_changed(Some(&a), &c));
    }
}
