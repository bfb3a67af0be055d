//! The operator's permissions, one list (`src/permissions.rs`) checked against what documents and
//! grants them: the README's RBAC table, and the chart's rules in every mode (rendered by the
//! real helm). What the operator actually requests is checked against the same table after the
//! e2e suite (`scripts/check-rbac.py`).

mod support;

use managed_secrets::permissions::{markdown_table, Named, Needed, Scope, RULES};
use serde_json::Value;
use std::collections::BTreeSet;
use support::rbac::render;

const START: &str =
    "<!-- rbac-table: generated from src/permissions.rs (tests/rbac.rs checks it) -->\n";
const END: &str = "<!-- /rbac-table -->";

/// `UPDATE_README=1 cargo test --test rbac` writes the table instead of checking it.
#[test]
fn the_readme_table_is_generated_from_the_permission_list() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let b = readme
        .find(START)
        .expect("README: the rbac-table start marker")
        + START.len();
    let e = b + readme[b..]
        .find(END)
        .expect("README: the rbac-table end marker");
    let want = markdown_table();
    if std::env::var("UPDATE_README").is_ok() {
        std::fs::write(path, format!("{}{want}{}", &readme[..b], &readme[e..])).unwrap();
        return;
    }
    assert_eq!(
        &readme[b..e],
        want,
        "README's RBAC table is out of date: UPDATE_README=1 cargo test --test rbac"
    );
}

/// (verb, group, resource, resourceName) of a list of rules.
type Grant = (String, String, String, String);

fn grants(rules: &Value) -> BTreeSet<Grant> {
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for r in rules.as_array().into_iter().flatten() {
        let names = strs(&r["resourceNames"]);
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        for v in strs(&r["verbs"]) {
            for g in strs(&r["apiGroups"]) {
                for res in strs(&r["resources"]) {
                    for n in &names {
                        out.insert((v.clone(), g.clone(), res.clone(), n.clone()));
                    }
                }
            }
        }
    }
    out
}

/// The grants RULES asks for in `scope` (only those needed with these features).
fn wanted(scope: Scope, policies: bool, leader: bool, webhook: bool) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for r in RULES.iter().filter(|r| r.scope == scope) {
        let on = match r.needed {
            Needed::Always => true,
            Needed::AccessPolicies => policies,
            Needed::LeaderElection => leader,
            Needed::Webhook => webhook,
            Needed::WebhookIssuer => webhook,
        };
        if !on {
            continue;
        }
        let name = match r.named {
            Named::Any => "",
            Named::HashKey => "managed-secrets-hash-key",
            Named::Lease => "managed-secrets-leader",
            Named::WebhookSecret => "managed-secrets-webhook-cert",
            Named::WebhookConfiguration => "ops-managed-secrets",
        };
        for v in r.verbs {
            out.insert((
                v.to_string(),
                r.group.to_string(),
                r.resource.to_string(),
                name.to_string(),
            ));
        }
    }
    out
}

fn role(docs: &[Value], kind: &str, name: &str, ns: Option<&str>) -> Option<BTreeSet<Grant>> {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && ns.map(|n| d["metadata"]["namespace"] == n).unwrap_or(true)
        })
        .map(|d| grants(&d["rules"]))
}

/// The installation's Lease Role in the release namespace `ops`.
fn lease_role(docs: &[Value]) -> Option<BTreeSet<Grant>> {
    role(docs, "Role", "managed-secrets-leader-election", Some("ops"))
}

fn union(a: BTreeSet<Grant>, b: BTreeSet<Grant>) -> BTreeSet<Grant> {
    a.into_iter().chain(b).collect()
}

#[test]
fn the_chart_grants_exactly_the_permission_list_in_every_mode() {
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // The whole cluster (the default): one ClusterRole for watched namespaces and cluster rows.
    let docs = render("ops", &[]);
    assert_eq!(
        role(&docs, "ClusterRole", "ops-managed-secrets", None),
        Some(union(
            wanted(Scope::Watched, true, true, true),
            wanted(Scope::Cluster, true, true, true)
        ))
    );
    assert_eq!(
        role(&docs, "Role", "managed-secrets-hash-key", Some("ops")),
        Some(wanted(Scope::OperatorNamespace, true, true, true))
    );
    assert_eq!(
        lease_role(&docs),
        Some(wanted(Scope::LeaseNamespace, true, true, true))
    );
    // cert-manager issues the webhook's certificate: the operator only reads it.
    let docs = render("ops", &set(&["webhook.certificate.issuer=certManager"]));
    let issuer_only = |scope: Scope| -> BTreeSet<Grant> {
        let all = wanted(scope, true, true, true);
        let mut no_issuer = BTreeSet::new();
        for g in all {
            let row = RULES.iter().find(|r| {
                r.needed == Needed::WebhookIssuer
                    && r.resource == g.2
                    && r.verbs.contains(&g.0.as_str())
                    && r.scope == scope
            });
            if row.is_none() {
                no_issuer.insert(g);
            }
        }
        no_issuer
    };
    assert_eq!(
        role(&docs, "Role", "managed-secrets-hash-key", Some("ops")),
        Some(issuer_only(Scope::OperatorNamespace))
    );
    assert_eq!(
        role(&docs, "ClusterRole", "ops-managed-secrets", None),
        Some(union(
            wanted(Scope::Watched, true, true, true),
            issuer_only(Scope::Cluster)
        ))
    );
    assert!(!issuer_only(Scope::Cluster)
        .iter()
        .any(|g| g.2 == "validatingwebhookconfigurations"));
    // Listed namespaces: a Role in each; the ClusterRole keeps the cluster rows.
    let docs = render("ops", &set(&["watchNamespaces={apps,payments}"]));
    for ns in ["apps", "payments"] {
        assert_eq!(
            role(&docs, "Role", "managed-secrets", Some(ns)),
            Some(wanted(Scope::Watched, true, true, true)),
            "{ns}"
        );
    }
    assert_eq!(
        role(&docs, "ClusterRole", "ops-managed-secrets", None),
        Some(wanted(Scope::Cluster, true, true, true))
    );
    // Without access policies and with listed namespaces, nothing cluster-wide but other
    // installations' Leases; without leader election, the Lease is held but not watched.
    let docs = render(
        "ops",
        &set(&[
            "watchNamespaces={apps}",
            "accessPolicy.enforce=false",
            "leaderElection.enabled=false",
            "replicaCount=1",
            "webhook.enabled=false",
        ]),
    );
    assert_eq!(
        role(&docs, "ClusterRole", "ops-managed-secrets", None),
        Some(wanted(Scope::Cluster, false, false, false))
    );
    assert_eq!(
        lease_role(&docs),
        Some(wanted(Scope::LeaseNamespace, false, false, false))
    );
    assert_eq!(
        role(&docs, "Role", "managed-secrets", Some("apps")),
        Some(wanted(Scope::Watched, false, false, false))
    );
    // Every binding names the chart's ServiceAccount.
    for d in docs
        .iter()
        .filter(|d| d["kind"].as_str().unwrap_or("").ends_with("Binding"))
    {
        assert_eq!(
            d["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "managed-secrets", "namespace": "ops"}]),
            "{d}"
        );
    }
}
