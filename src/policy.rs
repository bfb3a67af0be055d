//! Pure: whether a namespace may reference an AWS secret, and as which AWS identity it reads it.
//! The SecretAccessPolicies are the grants; nothing outside them is read.

use crate::crd::{AccessRule, SecretAccessPolicySpec};
use crate::labels::selector_matches;
use std::collections::BTreeMap;

/// What a namespace looks like to the policies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// What a ManagedSecret asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub namespace: &'a Namespace,
    /// The ManagedSecret's name (for session tags).
    pub name: &'a str,
    pub secret_id: &'a str,
    /// The region the secret is read in (spec, ARN, or the operator's default).
    pub region: Option<&'a str>,
    /// `spec.serviceAccountName`.
    pub service_account: Option<&'a str>,
}

/// The AWS identity a secret is read as. Part of every cache key: a value read as one identity is
/// never served to a ManagedSecret that uses another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Identity {
    /// The operator's own credentials (IRSA, Pod Identity, environment).
    #[default]
    Operator,
    /// A ServiceAccount's IRSA role, through a token the operator requests for it.
    ServiceAccount { namespace: String, name: String },
    /// An IAM role assumed with session tags naming the ManagedSecret.
    Role {
        arn: String,
        external_id: Option<String>,
        namespace: String,
        name: String,
    },
}

impl Identity {
    /// How the identity is named in messages and metrics (never a credential).
    pub fn describe(&self) -> String {
        match self {
            Identity::Operator => "the operator's identity".into(),
            Identity::ServiceAccount { namespace, name } => {
                format!("ServiceAccount {namespace}/{name}")
            }
            Identity::Role { arn, .. } => format!("role {arn}"),
        }
    }
}

/// Which rule granted the request, and the identity to read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub policy: String,
    pub rule: usize,
    pub identity: Identity,
}

/// The identity when no policy is enforced: the ManagedSecret's ServiceAccount, or the operator's.
pub fn identity_without_policy(req: &Request) -> Identity {
    match req.service_account {
        Some(sa) => Identity::ServiceAccount {
            namespace: req.namespace.name.clone(),
            name: sa.to_string(),
        },
        None => Identity::Operator,
    }
}

/// Decides whether `ms` may read its AWS secret from namespace `ns`: the request it makes (its
/// region resolved from the spec, the ARN or `default_region`), decided against `policies`. One
/// decision for the controller and the offline `check`.
pub fn decide_for(
    policies: &[(String, SecretAccessPolicySpec)],
    ms: &crate::crd::ManagedSecret,
    ns: &Namespace,
    default_region: Option<&str>,
) -> Result<Grant, String> {
    let region = crate::source::region::resolve(
        ms.spec.region.as_deref(),
        &ms.spec.secret_id,
        default_region,
    );
    let name = ms.metadata.name.clone().unwrap_or_default();
    decide(policies, &request(ms, ns, &name, region.as_deref()))
}

/// The request `ms` makes from namespace `ns`, reading in `region`.
pub fn request<'a>(
    ms: &'a crate::crd::ManagedSecret,
    ns: &'a Namespace,
    name: &'a str,
    region: Option<&'a str>,
) -> Request<'a> {
    Request {
        namespace: ns,
        name,
        secret_id: &ms.spec.secret_id,
        region,
        service_account: ms.spec.service_account_name.as_deref(),
    }
}

/// Decides a request against every policy (by name, then rule order: the first rule that grants
/// wins). `Err` is the message a denied ManagedSecret shows.
pub fn decide(
    policies: &[(String, SecretAccessPolicySpec)],
    req: &Request,
) -> Result<Grant, String> {
    let mut sorted: Vec<&(String, SecretAccessPolicySpec)> = policies.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut identity_mismatch = None;
    for (name, spec) in &sorted {
        for (i, rule) in spec.rules.iter().enumerate() {
            if rule_problem(rule).is_some() || !grants(rule, req) {
                continue;
            }
            match rule_identity(rule, req) {
                Ok(identity) => {
                    return Ok(Grant {
                        policy: name.clone(),
                        rule: i,
                        identity,
                    })
                }
                Err(m) => {
                    identity_mismatch.get_or_insert(format!("{name} rule {i}: {m}"));
                }
            }
        }
    }
    let region = req.region.unwrap_or("the operator's default region");
    if let Some(m) = identity_mismatch {
        return Err(format!(
            "AWS secret {} ({region}) is granted to namespace {} only with another identity: {m}",
            req.secret_id, req.namespace.name
        ));
    }
    // Only the policies with a rule for this namespace are named: the others are other tenants'
    // business.
    let names: Vec<&str> = sorted
        .iter()
        .filter(|(_, spec)| spec.rules.iter().any(|r| applies_to(r, req.namespace)))
        .map(|(n, _)| n.as_str())
        .collect();
    Err(format!(
        "no SecretAccessPolicy grants namespace {} the AWS secret {} ({region}); policies for this namespace: {}",
        req.namespace.name,
        req.secret_id,
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ))
}

/// The identity a granting rule reads with; the ManagedSecret may not choose another.
fn rule_identity(rule: &AccessRule, req: &Request) -> Result<Identity, String> {
    let ns = req.namespace.name.clone();
    let required = match (&rule.role_arn, &rule.service_account_name) {
        (Some(arn), _) => Some(Identity::Role {
            arn: arn.clone(),
            external_id: rule.external_id.clone(),
            namespace: ns.clone(),
            name: req.name.to_string(),
        }),
        (None, Some(sa)) => Some(Identity::ServiceAccount {
            namespace: ns.clone(),
            name: sa.clone(),
        }),
        (None, None) => None,
    };
    match (required, req.service_account) {
        (None, _) => Ok(identity_without_policy(req)),
        (Some(Identity::ServiceAccount { name, .. }), Some(sa)) if name != sa => Err(format!(
            "the rule reads as ServiceAccount {name}; remove spec.serviceAccountName or set it to {name}"
        )),
        (Some(Identity::Role { arn, .. }), Some(_)) => Err(format!(
            "the rule reads as role {arn}; remove spec.serviceAccountName"
        )),
        (Some(id), _) => Ok(id),
    }
}

/// Why a rule grants nothing whatever it is asked (None when it is well formed).
pub fn rule_problem(rule: &AccessRule) -> Option<String> {
    if rule.namespaces.is_empty() && rule.namespace_selector.is_none() {
        return Some("selects no namespace (set namespaces or namespaceSelector)".into());
    }
    if rule.role_arn.is_some() && rule.service_account_name.is_some() {
        return Some("sets both roleArn and serviceAccountName".into());
    }
    if rule.external_id.is_some() && rule.role_arn.is_none() {
        return Some("sets externalId without roleArn".into());
    }
    if let Some(sel) = &rule.namespace_selector {
        if let Some(bad) = sel.match_expressions.iter().flatten().find(|e| {
            !matches!(
                e.operator.as_str(),
                "In" | "NotIn" | "Exists" | "DoesNotExist"
            )
        }) {
            return Some(format!("unknown selector operator {:?}", bad.operator));
        }
    }
    for p in &rule.secrets {
        if let Err(e) = check_variables(p) {
            return Some(format!("secret pattern {p:?}: {e}"));
        }
    }
    None
}

/// Whether a rule is about this namespace at all (by name or selector), whatever it grants.
fn applies_to(rule: &AccessRule, ns: &Namespace) -> bool {
    rule.namespaces.contains(&ns.name)
        || rule
            .namespace_selector
            .as_ref()
            .map(|s| selector_matches(s, &ns.labels))
            .unwrap_or(false)
}

fn grants(rule: &AccessRule, req: &Request) -> bool {
    let ns = req.namespace;
    if !applies_to(rule, ns) {
        return false;
    }
    if !rule.regions.is_empty()
        && !req
            .region
            .map(|r| rule.regions.iter().any(|x| x == r))
            .unwrap_or(false)
    {
        return false;
    }
    let is_arn = req.secret_id.starts_with("arn:");
    rule.secrets.iter().any(|p| {
        p.starts_with("arn:") == is_arn
            && substitute(p, ns)
                .map(|pat| glob(&pat, req.secret_id))
                .unwrap_or(false)
    })
}

/// Only `$(namespace)` and `$(labels.<key>)` are variables.
fn check_variables(p: &str) -> Result<(), String> {
    let mut rest = p;
    while let Some(i) = rest.find("$(") {
        let after = &rest[i + 2..];
        let end = after.find(')').ok_or("an unclosed $(")?;
        let var = &after[..end];
        if var != "namespace" && var.strip_prefix("labels.").is_none_or(|k| k.is_empty()) {
            return Err(format!("unknown variable $({var})"));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// The pattern with its variables replaced; None when a label it names is missing (the rule then
/// grants nothing to that namespace). Substituted text matches itself only (`*` and `?` in it are
/// literal).
fn substitute(p: &str, ns: &Namespace) -> Option<Vec<Tok>> {
    let mut out = vec![];
    let mut rest = p;
    loop {
        let (lit, var) = match rest.find("$(") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        for c in lit.chars() {
            out.push(match c {
                '*' => Tok::Star,
                '?' => Tok::One,
                c => Tok::Char(c),
            });
        }
        let Some(after) = var else { break };
        let end = after.find(')')?;
        let name = &after[..end];
        let value = if name == "namespace" {
            ns.name.clone()
        } else {
            ns.labels.get(name.strip_prefix("labels.")?)?.clone()
        };
        if value.is_empty() {
            return None;
        }
        out.extend(value.chars().map(Tok::Char));
        rest = &after[end + 1..];
    }
    Some(out)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Char(char),
    /// Any run of characters.
    Star,
    /// One character.
    One,
}

/// Glob match in linear time (the classic two-pointer algorithm with one backtrack point).
fn glob(pat: &[Tok], s: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some(Tok::Char(c)) if *c == s[i] => {
                p += 1;
                i += 1;
            }
            Some(Tok::One) => {
                p += 1;
                i += 1;
            }
            Some(Tok::Star) => {
                star = Some((p, i));
                p += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|t| *t == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn policy(name: &str, rules: serde_json::Value) -> (String, SecretAccessPolicySpec) {
        (
            name.into(),
            serde_json::from_value(json!({ "rules": rules })).unwrap(),
        )
    }

    fn ask<'a>(ns: &'a Namespace, id: &'a str, region: Option<&'a str>) -> Request<'a> {
        Request {
            namespace: ns,
            name: "db",
            secret_id: id,
            region,
            service_account: None,
        }
    }

    #[test]
    fn globs_match_whole_names() {
        let t = |p: &str| substitute(p, &Namespace::default()).unwrap();
        assert!(glob(&t("dev/*"), "dev/payments/db"));
        assert!(glob(&t("dev/*"), "dev/"));
        assert!(!glob(&t("dev/*"), "prod/dev/x"));
        assert!(glob(&t("prod/payments/*"), "prod/payments/db/credentials"));
        assert!(!glob(&t("prod/payments/*"), "prod/payments"));
        assert!(glob(&t("a?c"), "abc"));
        assert!(!glob(&t("a?c"), "abbc"));
        assert!(glob(&t("*db*"), "x/db/y"));
        assert!(glob(&t("exact"), "exact"));
        assert!(!glob(&t("exact"), "exactly"));
        assert!(glob(&t("**"), ""));
        // Linear: a pathological pattern answers at once.
        let long = format!("{}b", "*a".repeat(200));
        assert!(!glob(&t(&long), &"a".repeat(5000)));
    }

    #[test]
    fn names_selectors_variables_and_regions_allow_and_deny() {
        let policies = vec![
            policy(
                "conventions",
                json!([{"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "Exists"}]},
                                          "secrets": ["$(labels.env)/$(namespace)/*"]}]),
            ),
            policy(
                "payments",
                json!([{"namespaces": ["payments"], "secrets": ["prod/payments/*"], "regions": ["eu-west-1"]}]),
            ),
            policy(
                "shared",
                json!([{"namespaces": ["payments"],
                                     "secrets": ["arn:aws:secretsmanager:eu-west-1:111122223333:secret:shared/*"]}]),
            ),
        ];
        let dev_team = ns("team-a", &[("env", "dev")]);
        let g = decide(&policies, &ask(&dev_team, "dev/team-a/db", None)).unwrap();
        assert_eq!(
            (g.policy.as_str(), g.rule, g.identity),
            ("conventions", 0, Identity::Operator)
        );
        assert!(
            decide(&policies, &ask(&dev_team, "dev/team-b/db", None)).is_err(),
            "another team"
        );
        assert!(
            decide(&policies, &ask(&dev_team, "prod/team-a/db", None)).is_err(),
            "another env"
        );
        let unlabelled = ns("team-c", &[]);
        assert_eq!(
            decide(&policies, &ask(&unlabelled, "dev/team-c/db", None)).unwrap_err(),
            "no SecretAccessPolicy grants namespace team-c the AWS secret dev/team-c/db (the operator's default region); policies for this namespace: none",
            "other tenants' policies are not named"
        );
        assert_eq!(
            decide(&policies, &ask(&dev_team, "prod/team-a/db", None)).unwrap_err(),
            "no SecretAccessPolicy grants namespace team-a the AWS secret prod/team-a/db (the operator's default region); policies for this namespace: conventions"
        );
        let payments = ns("payments", &[]);
        assert!(decide(
            &policies,
            &ask(&payments, "prod/payments/db", Some("eu-west-1"))
        )
        .is_ok());
        assert!(
            decide(
                &policies,
                &ask(&payments, "prod/payments/db", Some("us-east-1"))
            )
            .is_err(),
            "region"
        );
        assert!(
            decide(&policies, &ask(&payments, "prod/payments/db", None)).is_err(),
            "region unknown"
        );
        let arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:shared/key-AbCdEf";
        assert_eq!(
            decide(&policies, &ask(&payments, arn, None))
                .unwrap()
                .policy,
            "shared"
        );
        let other_account =
            "arn:aws:secretsmanager:eu-west-1:999999999999:secret:shared/key-AbCdEf";
        assert!(decide(&policies, &ask(&payments, other_account, None)).is_err());
        // A name pattern never matches an ARN (it could be any account's).
        let p = vec![policy(
            "names",
            json!([{"namespaces": ["payments"], "secrets": ["*"]}]),
        )];
        assert!(decide(&p, &ask(&payments, arn, None)).is_err());
        assert!(decide(&p, &ask(&payments, "anything", None)).is_ok());
        assert_eq!(
            decide(&[], &ask(&payments, "x", Some("us-east-1"))).unwrap_err(),
            "no SecretAccessPolicy grants namespace payments the AWS secret x (us-east-1); policies for this namespace: none"
        );
    }

    #[test]
    fn label_values_are_literal_in_patterns() {
        let p = vec![policy(
            "p",
            json!([{"namespaceSelector": {}, "secrets": ["$(labels.team)/x"]}]),
        )];
        let sneaky = ns("a", &[("team", "*")]);
        assert!(decide(&p, &ask(&sneaky, "anything/x", None)).is_err());
        assert!(decide(&p, &ask(&sneaky, "*/x", None)).is_ok());
    }

    #[test]
    fn identities_come_from_the_rule_or_the_managed_secret() {
        let p = vec![
            policy(
                "a-role",
                json!([{"namespaces": ["cross"], "secrets": ["*"], "roleArn": "arn:aws:iam::111122223333:role/reader", "externalId": "xid"}]),
            ),
            policy(
                "b-sa",
                json!([{"namespaces": ["irsa"], "secrets": ["*"], "serviceAccountName": "reader"}]),
            ),
            policy(
                "c-free",
                json!([{"namespaces": ["free"], "secrets": ["*"]}]),
            ),
        ];
        let cross = ns("cross", &[]);
        assert_eq!(
            decide(&p, &ask(&cross, "x", None)).unwrap().identity,
            Identity::Role {
                arn: "arn:aws:iam::111122223333:role/reader".into(),
                external_id: Some("xid".into()),
                namespace: "cross".into(),
                name: "db".into()
            }
        );
        let irsa = ns("irsa", &[]);
        assert_eq!(
            decide(&p, &ask(&irsa, "x", None)).unwrap().identity,
            Identity::ServiceAccount {
                namespace: "irsa".into(),
                name: "reader".into()
            }
        );
        let mut req = ask(&irsa, "x", None);
        req.service_account = Some("other");
        assert_eq!(
            decide(&p, &req).unwrap_err(),
            "AWS secret x (the operator's default region) is granted to namespace irsa only with another identity: b-sa rule 0: the rule reads as ServiceAccount reader; remove spec.serviceAccountName or set it to reader"
        );
        let free = ns("free", &[]);
        let mut req = ask(&free, "x", None);
        req.service_account = Some("mine");
        assert_eq!(
            decide(&p, &req).unwrap().identity,
            Identity::ServiceAccount {
                namespace: "free".into(),
                name: "mine".into()
            }
        );
        assert_eq!(
            identity_without_policy(&ask(&free, "x", None)),
            Identity::Operator
        );
    }

    #[test]
    fn malformed_rules_grant_nothing_and_say_why() {
        let r = |v: serde_json::Value| -> AccessRule { serde_json::from_value(v).unwrap() };
        assert_eq!(
            rule_problem(&r(json!({"secrets": ["*"]}))).unwrap(),
            "selects no namespace (set namespaces or namespaceSelector)"
        );
        assert!(
            rule_problem(&r(json!({"namespaces": ["a"], "secrets": ["$(labels)/x"]}))).is_some()
        );
        assert!(rule_problem(&r(json!({"namespaces": ["a"], "secrets": ["$(user)/x"]}))).is_some());
        assert!(rule_problem(&r(
            json!({"namespaces": ["a"], "secrets": ["x"], "externalId": "e"})
        ))
        .is_some());
        assert!(rule_problem(&r(json!({"namespaces": ["a"], "secrets": ["x"], "roleArn": "arn:aws:iam::111122223333:role/r", "serviceAccountName": "s"}))).is_some());
        assert!(rule_problem(&r(
            json!({"namespaces": ["a"], "secrets": ["$(labels.env)/$(namespace)/*"]})
        ))
        .is_none());
        let p = vec![policy("bad", json!([{"secrets": ["*"]}]))];
        assert!(decide(&p, &ask(&ns("a", &[]), "x", None)).is_err());
    }
}
