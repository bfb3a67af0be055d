//! Decides which Kubernetes permissions the operator needs, and where: the one list the start-up
//! check asks the API server about (SelfSubjectAccessReview), and the one the README's RBAC table
//! and the chart's rules are checked against (`tests/rbac_table.rs`, `scripts/check-rbac.py`).

/// Where a permission is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every watched namespace (all of them when the operator watches the whole cluster).
    Watched,
    /// Cluster-scoped kinds.
    Cluster,
    /// The operator's own namespace.
    OperatorNamespace,
    /// The leader Lease's namespace.
    LeaseNamespace,
}

impl Scope {
    /// The README table's word for it.
    pub fn label(self) -> &'static str {
        match self {
            Scope::Watched => "watched namespaces",
            Scope::Cluster => "cluster",
            Scope::OperatorNamespace => "operator namespace",
            Scope::LeaseNamespace => "lease namespace",
        }
    }
}

/// When a permission is needed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    Always,
    /// Only with `--access-policy enforce`.
    AccessPolicies,
    /// Only with `--leader-election true`.
    LeaderElection,
    /// Only with `--webhook-addr` (the admission webhook).
    Webhook,
    /// Only when the operator issues the webhook's certificate (`--webhook-cert-issuer
    /// operator`, not cert-manager).
    WebhookIssuer,
}

/// Which object a rule names, when it names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    Any,
    /// The hash key Secret (`--hash-key-secret`).
    HashKey,
    /// The installation's Lease (`--lease-name`).
    Lease,
    /// The webhook's certificate Secret (`--webhook-cert-secret`).
    WebhookSecret,
    /// The webhook's configuration (`--webhook-configuration`).
    WebhookConfiguration,
}

/// One RBAC rule the operator needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub verbs: &'static [&'static str],
    pub group: &'static str,
    /// `resource` or `resource/subresource`.
    pub resource: &'static str,
    pub named: Named,
    pub scope: Scope,
    pub needed: Needed,
    /// Whether the operator asks for it at start (false: the API server checks it while admitting
    /// another write, so a SelfSubjectAccessReview of it proves nothing about this cluster).
    pub checked_at_start: bool,
    pub why: &'static str,
}

const fn rule(
    verbs: &'static [&'static str],
    group: &'static str,
    resource: &'static str,
    scope: Scope,
    why: &'static str,
) -> Rule {
    Rule {
        verbs,
        group,
        resource,
        named: Named::Any,
        scope,
        needed: Needed::Always,
        checked_at_start: true,
        why,
    }
}

/// Every permission the operator uses, in the order of the README's table.
pub const RULES: &[Rule] = &[
    rule(
        &["list", "watch", "patch"],
        "managedsecrets.io",
        "managedsecrets",
        Scope::Watched,
        "watch specs; add and remove the cleanup finalizer",
    ),
    rule(
        &["patch"],
        "managedsecrets.io",
        "managedsecrets/status",
        Scope::Watched,
        "status and conditions (server-side apply)",
    ),
    Rule {
        checked_at_start: false,
        ..rule(
            &["update"],
            "managedsecrets.io",
            "managedsecrets/finalizers",
            Scope::Watched,
            "ownerReferences from Secrets to their ManagedSecret: checked by the API server's OwnerReferencesPermissionEnforcement admission where it is on, never requested by the operator",
        )
    },
    rule(
        &["get", "list", "watch", "create", "patch", "delete"],
        "",
        "secrets",
        Scope::Watched,
        "watch, read, write (server-side apply: one that creates a Secret is authorized as `create`), repair and release (deletionPolicy Delete) target Secrets",
    ),
    rule(
        &["list", "watch", "patch"],
        "apps",
        "deployments",
        Scope::Watched,
        "find rollout targets, set the version annotation",
    ),
    rule(
        &["list", "watch", "patch"],
        "apps",
        "statefulsets",
        Scope::Watched,
        "as for Deployments",
    ),
    rule(
        &["list", "watch", "patch"],
        "apps",
        "daemonsets",
        Scope::Watched,
        "as for Deployments",
    ),
    rule(
        &["list", "watch", "patch"],
        "argoproj.io",
        "rollouts",
        Scope::Watched,
        "as for Deployments, when the Argo Rollouts CRD exists",
    ),
    rule(
        &["create", "patch"],
        "events.k8s.io",
        "events",
        Scope::Watched,
        "Events on ManagedSecrets and restarted workloads (a repeat patches the series)",
    ),
    rule(
        &["get"],
        "",
        "serviceaccounts",
        Scope::Watched,
        "read a ServiceAccount identity's `eks.amazonaws.com/role-arn`",
    ),
    rule(
        &["create"],
        "",
        "serviceaccounts/token",
        Scope::Watched,
        "tokens for ServiceAccount identities (audience `sts.amazonaws.com`). This lets the operator mint a token for any ServiceAccount of a watched namespace, for any audience: treat the operator's own account as sensitive, and use `watchNamespaces` to narrow it",
    ),
    Rule {
        needed: Needed::AccessPolicies,
        ..rule(
            &["list", "watch"],
            "managedsecrets.io",
            "secretaccesspolicies",
            Scope::Cluster,
            "the grants",
        )
    },
    Rule {
        needed: Needed::AccessPolicies,
        ..rule(
            &["patch"],
            "managedsecrets.io",
            "secretaccesspolicies/status",
            Scope::Cluster,
            "which rules are in effect (Valid condition)",
        )
    },
    Rule {
        needed: Needed::AccessPolicies,
        ..rule(
            &["list", "watch"],
            "",
            "namespaces",
            Scope::Cluster,
            "namespace labels for `namespaceSelector` and `$(labels.*)` (metadata only)",
        )
    },
    rule(
        &["create"],
        "",
        "secrets",
        Scope::OperatorNamespace,
        "the key of `status.dataHash`, and the webhook's certificate Secret, created on first start",
    ),
    Rule {
        named: Named::HashKey,
        ..rule(
            &["get"],
            "",
            "secrets",
            Scope::OperatorNamespace,
            "the key of `status.dataHash`, read at start",
        )
    },
    Rule {
        needed: Needed::Webhook,
        named: Named::WebhookSecret,
        ..rule(
            &["get"],
            "",
            "secrets",
            Scope::OperatorNamespace,
            "the admission webhook's serving certificate, read by every replica",
        )
    },
    Rule {
        needed: Needed::WebhookIssuer,
        named: Named::WebhookSecret,
        ..rule(
            &["update"],
            "",
            "secrets",
            Scope::OperatorNamespace,
            "the webhook's own CA and serving certificate, renewed before they expire",
        )
    },
    Rule {
        needed: Needed::WebhookIssuer,
        named: Named::WebhookConfiguration,
        ..rule(
            &["get", "patch"],
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            Scope::Cluster,
            "keep the webhook configuration's `caBundle` current through a CA rotation",
        )
    },
    rule(
        &["create"],
        "coordination.k8s.io",
        "leases",
        Scope::LeaseNamespace,
        "the installation's Lease, created by the first replica (held with or without leader election: it names the installation and shows that it runs)",
    ),
    Rule {
        named: Named::Lease,
        ..rule(
            &["get", "patch"],
            "coordination.k8s.io",
            "leases",
            Scope::LeaseNamespace,
            "read, take, renew and release the Lease",
        )
    },
    Rule {
        needed: Needed::LeaderElection,
        named: Named::Lease,
        ..rule(
            &["list", "watch"],
            "coordination.k8s.io",
            "leases",
            Scope::LeaseNamespace,
            "leader election: a standby wakes when the leader releases the Lease",
        )
    },
    rule(
        &["get"],
        "coordination.k8s.io",
        "leases",
        Scope::Cluster,
        "another installation's Lease, when it claims a ManagedSecret this one watches: while it is renewed, this installation leaves the object alone",
    ),
];

/// What the operator is configured to do, as far as its permissions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Watched namespaces; empty means all.
    pub namespaces: Vec<String>,
    pub access_policies: bool,
    pub leader_election: bool,
    pub operator_namespace: String,
    pub hash_key_secret: String,
    pub lease_namespace: String,
    pub lease_name: String,
    /// The webhook's certificate Secret and configuration, when it serves.
    pub webhook: Option<WebhookNames>,
}

/// What the webhook's rules name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookNames {
    pub secret: String,
    /// Empty: its caBundle is not kept.
    pub configuration: String,
    /// Whether the operator issues the certificate (and keeps the caBundle).
    pub issues: bool,
}

/// One question for the API server: may I `verb` this?
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Check {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// Empty: the cluster scope (or all namespaces).
    pub namespace: String,
    /// Empty: any object.
    pub name: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if !self.name.is_empty() {
            write!(f, " {:?}", self.name)?;
        }
        if self.namespace.is_empty() {
            write!(f, " (cluster-wide)")
        } else {
            write!(f, " in {}", self.namespace)
        }
    }
}

/// Every check the operator makes at start for this deployment, in the table's order.
pub fn checks(d: &Deployment) -> Vec<Check> {
    let mut out = vec![];
    for r in RULES.iter().filter(|r| r.checked_at_start) {
        let wanted = match r.needed {
            Needed::Always => true,
            Needed::AccessPolicies => d.access_policies,
            Needed::LeaderElection => d.leader_election,
            Needed::Webhook => d.webhook.is_some(),
            Needed::WebhookIssuer => d.webhook.as_ref().is_some_and(|w| w.issues),
        };
        let webhook = d.webhook.clone().unwrap_or(WebhookNames {
            secret: String::new(),
            configuration: String::new(),
            issues: false,
        });
        if !wanted || (r.named == Named::WebhookConfiguration && webhook.configuration.is_empty()) {
            continue;
        }
        let namespaces: Vec<String> = match r.scope {
            Scope::Watched if d.namespaces.is_empty() => vec![String::new()],
            Scope::Watched => d.namespaces.clone(),
            Scope::Cluster => vec![String::new()],
            Scope::OperatorNamespace => vec![d.operator_namespace.clone()],
            Scope::LeaseNamespace => vec![d.lease_namespace.clone()],
        };
        let name = match r.named {
            Named::Any => String::new(),
            Named::HashKey => d.hash_key_secret.clone(),
            Named::Lease => d.lease_name.clone(),
            Named::WebhookSecret => webhook.secret.clone(),
            Named::WebhookConfiguration => webhook.configuration.clone(),
        };
        let (resource, subresource) = r.resource.split_once('/').unwrap_or((r.resource, ""));
        for ns in &namespaces {
            for verb in r.verbs {
                out.push(Check {
                    verb: verb.to_string(),
                    group: r.group.to_string(),
                    resource: resource.to_string(),
                    subresource: subresource.to_string(),
                    namespace: ns.clone(),
                    name: name.clone(),
                });
            }
        }
    }
    out
}

/// The README's RBAC table, as generated from [`RULES`].
pub fn markdown_table() -> String {
    let mut out = String::from("| Verbs | API group | Resource | Scope | Only | Why |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for r in RULES {
        let group = if r.group.is_empty() {
            "`\"\"` (core)".to_string()
        } else {
            format!("`{}`", r.group)
        };
        let only = match r.named {
            Named::Any => "",
            Named::HashKey => "the hash key Secret",
            Named::Lease => "the installation's Lease",
            Named::WebhookSecret => "the webhook's certificate Secret",
            Named::WebhookConfiguration => "the webhook's configuration",
        };
        let when = match r.needed {
            Needed::Always => "",
            Needed::AccessPolicies => " (access policies enforced)",
            Needed::LeaderElection => " (leader election on)",
            Needed::Webhook => " (admission webhook on)",
            Needed::WebhookIssuer => " (webhook certificate issued by the operator)",
        };
        out.push_str(&format!(
            "| `{}` | {group} | `{}` | {}{when} | {only} | {} |\n",
            r.verbs.join(", "),
            r.resource,
            r.scope.label(),
            r.why
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(namespaces: &[&str]) -> Deployment {
        Deployment {
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            access_policies: true,
            leader_election: true,
            operator_namespace: "ops".into(),
            hash_key_secret: "hk".into(),
            lease_namespace: "ops".into(),
            lease_name: "lead".into(),
            webhook: Some(WebhookNames {
                secret: "wh-cert".into(),
                configuration: "ops-wh".into(),
                issues: true,
            }),
        }
    }

    fn short(c: &[Check]) -> Vec<String> {
        c.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn a_cluster_wide_operator_asks_cluster_wide_and_in_its_own_namespace() {
        let c = checks(&deployment(&[]));
        let s = short(&c);
        assert_eq!(s.len(), 43, "{s:#?}");
        assert_eq!(
            &s[..4],
            [
                "list managedsecrets.managedsecrets.io (cluster-wide)",
                "watch managedsecrets.managedsecrets.io (cluster-wide)",
                "patch managedsecrets.managedsecrets.io (cluster-wide)",
                "patch managedsecrets/status.managedsecrets.io (cluster-wide)",
            ]
        );
        assert!(s.contains(&"create secrets (cluster-wide)".to_string()));
        assert!(s.contains(&"create serviceaccounts/token (cluster-wide)".to_string()));
        assert!(s.contains(&"get secrets \"hk\" in ops".to_string()));
        assert!(s.contains(&"patch leases.coordination.k8s.io \"lead\" in ops".to_string()));
        assert!(s.contains(&"watch leases.coordination.k8s.io \"lead\" in ops".to_string()));
        assert!(s.contains(&"get leases.coordination.k8s.io (cluster-wide)".to_string()));
        assert!(s.contains(&"update secrets \"wh-cert\" in ops".to_string()));
        assert!(s.contains(
            &"patch validatingwebhookconfigurations.admissionregistration.k8s.io \"ops-wh\" (cluster-wide)"
                .to_string()
        ));
        assert!(
            !s.iter().any(|x| x.contains("finalizers")),
            "admission-only rules are not asked"
        );
        // cert-manager issues the certificate: the operator only reads it.
        let mut d = deployment(&[]);
        d.webhook.as_mut().unwrap().issues = false;
        let s = short(&checks(&d));
        assert!(s.contains(&"get secrets \"wh-cert\" in ops".to_string()));
        assert!(!s.iter().any(|x| x.starts_with("update secrets")), "{s:#?}");
        assert!(!s
            .iter()
            .any(|x| x.contains("validatingwebhookconfigurations")));
    }

    #[test]
    fn a_namespaced_operator_asks_in_each_namespace_and_skips_what_it_does_not_use() {
        let mut d = deployment(&["a", "b"]);
        d.access_policies = false;
        d.leader_election = false;
        d.webhook = None;
        let s = short(&checks(&d));
        assert_eq!(s.iter().filter(|x| x.ends_with(" in a")).count(), 26);
        assert_eq!(s.iter().filter(|x| x.ends_with(" in b")).count(), 26);
        // Only other installations' Leases are read cluster-wide (claims); without leader
        // election the own Lease is still held, not watched.
        let wide: Vec<&String> = s.iter().filter(|x| x.contains("cluster-wide")).collect();
        assert_eq!(
            wide,
            ["get leases.coordination.k8s.io (cluster-wide)"],
            "{s:#?}"
        );
        assert!(s.contains(&"patch leases.coordination.k8s.io \"lead\" in ops".to_string()));
        assert!(!s.iter().any(|x| x.starts_with("watch leases")));
        assert_eq!(s.len(), 58);
    }

    #[test]
    fn the_table_has_a_row_per_rule() {
        let t = markdown_table();
        assert_eq!(t.lines().count(), RULES.len() + 2);
        assert!(t.contains("| `get, list, watch, create, patch, delete` | `\"\"` (core) | `secrets` | watched namespaces |  |"));
    }
}
