//! Access policies at run time: the SecretAccessPolicy and Namespace stores, the watches that
//! re-evaluate ManagedSecrets when a grant or a namespace's labels change, the policies' own
//! status (which rules are malformed), and the check every sync makes before any AWS call.

use super::report::watch_report;
use super::Context;
use crate::crd::{ManagedSecret, SecretAccessPolicy, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::policy::{self, Identity, Namespace};
use crate::source::region;
use crate::status;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace as KNamespace;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// What changed for the grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A policy: every ManagedSecret is evaluated again.
    All,
    /// A namespace's labels: its ManagedSecrets are.
    Namespace(String),
}

/// The stores the checks read.
#[derive(Clone)]
pub struct PolicyView {
    pub policies: Store<SecretAccessPolicy>,
    pub namespaces: Store<PartialObjectMeta<KNamespace>>,
}

/// The writers the watches fill.
pub struct Watches {
    policies: reflector::store::Writer<SecretAccessPolicy>,
    namespaces: reflector::store::Writer<PartialObjectMeta<KNamespace>>,
}

pub fn stores() -> (PolicyView, Watches) {
    let (policies, pw) = reflector::store();
    let (namespaces, nw) = reflector::store();
    (
        PolicyView {
            policies,
            namespaces,
        },
        Watches {
            policies: pw,
            namespaces: nw,
        },
    )
}

/// The region a ManagedSecret reads in: the spec's, the ARN's, or the operator's default.
pub fn region_of(ms: &ManagedSecret, default: Option<&str>) -> Option<String> {
    region::resolve(ms.spec.region.as_deref(), &ms.spec.secret_id, default)
}

/// May this ManagedSecret read its AWS secret, and as which identity? No AWS call is made before
/// this says yes.
pub fn authorize(ctx: &Context, ms: &ManagedSecret) -> Result<Identity> {
    let ns_name = ms.namespace().unwrap_or_default();
    let region = region_of(ms, ctx.settings.default_region.as_deref());
    let mut ns = Namespace {
        name: ns_name.clone(),
        ..Default::default()
    };
    if let Some(view) = &ctx.policy {
        if let Some(meta) = view.namespaces.get(&ObjectRef::new(&ns_name)) {
            ns.labels = meta.labels().clone();
        }
    }
    let name = ms.name_any();
    let req = policy::request(ms, &ns, &name, region.as_deref());
    match &ctx.policy {
        None => Ok(policy::identity_without_policy(&req)),
        Some(view) => {
            let policies: Vec<(String, crate::crd::SecretAccessPolicySpec)> = view
                .policies
                .state()
                .iter()
                .map(|p| (p.name_any(), p.spec.clone()))
                .collect();
            policy::decide(&policies, &req)
                .map(|g| g.identity)
                .map_err(Error::PolicyDenied)
        }
    }
}

/// Are the stores the checks read filled?
pub fn ready(ctx: &Context) -> bool {
    ctx.policy.is_none()
        || (ctx.health.is_listed("secretaccesspolicies") && ctx.health.is_listed("namespaces"))
}

/// The status a policy should have: how many rules are in effect, and which grant nothing.
pub fn desired_status(
    p: &SecretAccessPolicy,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::crd::policy::SecretAccessPolicyStatus {
    let problems: Vec<String> = p
        .spec
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| policy::rule_problem(r).map(|m| format!("rule {i} {m}")))
        .collect();
    let prev = p.status.clone().unwrap_or_default();
    let ok = problems.is_empty();
    let c = status::condition(
        &prev.conditions,
        crate::reason::VALID,
        ok,
        if ok {
            crate::reason::RULES_VALID
        } else {
            crate::reason::RULES_IGNORED
        },
        if ok {
            "every rule is in effect".into()
        } else {
            format!("these rules grant nothing: {}", problems.join("; "))
        },
        p.metadata.generation,
        now,
    );
    crate::crd::policy::SecretAccessPolicyStatus {
        rules: u32::try_from(p.spec.rules.len().saturating_sub(problems.len())).unwrap_or(0),
        conditions: vec![c],
    }
}

async fn write_status(ctx: &Context, p: &SecretAccessPolicy) {
    if !ctx.settings.leadership.is_leader() {
        return;
    }
    let want = desired_status(p, chrono::Utc::now());
    let same = p
        .status
        .as_ref()
        .map(|s| {
            s.rules == want.rules
                && s.conditions
                    .iter()
                    .map(|c| (&c.status, &c.message))
                    .eq(want.conditions.iter().map(|c| (&c.status, &c.message)))
        })
        .unwrap_or(false);
    if same {
        return;
    }
    let api: Api<SecretAccessPolicy> = Api::all(ctx.client.clone());
    let body = json!({"apiVersion": "managedsecrets.io/v1alpha1", "kind": "SecretAccessPolicy", "status": want});
    if let Err(e) = api
        .patch_status(
            &p.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        warn!(policy = %p.name_any(), error = %e, "could not write the policy's status");
    }
}

/// Watches policies and namespaces until the streams end; announces each change that can alter a
/// grant.
pub async fn watch(ctx: Arc<Context>, w: Watches, tx: broadcast::Sender<Change>) {
    let (health, metrics) = (ctx.health.clone(), ctx.metrics.clone());
    let client = ctx.client.clone();
    let policy_tx = tx.clone();
    let mut generations: HashMap<String, Option<i64>> = HashMap::new();
    let policies = watcher(Api::<SecretAccessPolicy>::all(client.clone()), Default::default())
        .default_backoff()
        .inspect(watch_report(
            "secretaccesspolicies",
            "secretaccesspolicies".into(),
            health.clone(),
            metrics.clone(),
        ))
        .reflect(w.policies)
        .for_each(|ev| {
            let ctx = ctx.clone();
            let mut changed = None;
            tracing::debug!(event = ?ev.as_ref().map(|e| match e {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) | watcher::Event::Delete(p) => format!("{} gen {:?}", p.name_any(), p.metadata.generation),
                watcher::Event::Init => "init".into(),
                watcher::Event::InitDone => "init done".into(),
            }), "policy watch event");
            match &ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    if generations.insert(uid, p.metadata.generation) != Some(p.metadata.generation) {
                        changed = Some(p.clone());
                    }
                }
                Ok(watcher::Event::Delete(p)) => {
                    generations.remove(&p.metadata.uid.clone().unwrap_or_default());
                    info!(policy = %p.name_any(), "SecretAccessPolicy deleted");
                    let _ = policy_tx.send(Change::All);
                }
                Ok(watcher::Event::InitDone) => {
                    let _ = policy_tx.send(Change::All);
                }
                _ => {}
            }
            let tx = policy_tx.clone();
            async move {
                if let Some(p) = changed {
                    info!(policy = %p.name_any(), "SecretAccessPolicy changed; re-evaluating ManagedSecrets");
                    let _ = tx.send(Change::All);
                    write_status(&ctx, &p).await;
                }
            }
        });
    let mut labels: HashMap<String, std::collections::BTreeMap<String, String>> = HashMap::new();
    let namespaces = watcher(
        Api::<PartialObjectMeta<KNamespace>>::all(client),
        Default::default(),
    )
    .default_backoff()
    .inspect(watch_report(
        "namespaces",
        "namespaces".into(),
        health,
        metrics,
    ))
    .reflect(w.namespaces)
    .applied_objects()
    .for_each(|ns| {
        if let Ok(ns) = ns {
            let name = ns.name_any();
            let now = ns.labels().clone();
            if labels.get(&name) != Some(&now) {
                labels.insert(name.clone(), now);
                let _ = tx.send(Change::Namespace(name));
            }
        }
        async {}
    });
    futures::join!(policies, namespaces);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_status_counts_rules_in_effect_and_names_the_others() {
        let p: SecretAccessPolicy = serde_json::from_value(json!({
            "apiVersion": "managedsecrets.io/v1alpha1", "kind": "SecretAccessPolicy",
            "metadata": {"name": "p", "generation": 2},
            "spec": {"rules": [
                {"namespaces": ["a"], "secrets": ["a/*"]},
                {"secrets": ["b/*"]},
                {"namespaces": ["c"], "secrets": ["$(user)/*"]}
            ]}
        }))
        .unwrap();
        let st = desired_status(&p, chrono::Utc::now());
        assert_eq!(st.rules, 1);
        assert_eq!(st.conditions[0].status, "False");
        assert_eq!(
            st.conditions[0].message,
            "these rules grant nothing: rule 1 selects no namespace (set namespaces or namespaceSelector); rule 2 secret pattern \"$(user)/*\": unknown variable $(user)"
        );
    }

    #[test]
    fn the_region_comes_from_the_spec_the_arn_or_the_default() {
        let mut ms: ManagedSecret = serde_json::from_value(json!({
            "apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "x"}, "spec": {"secretId": "a/b", "data": {"allKeys": true}}
        }))
        .unwrap();
        assert_eq!(
            region_of(&ms, Some("us-east-1")).as_deref(),
            Some("us-east-1")
        );
        ms.spec.secret_id = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:a/b".into();
        assert_eq!(
            region_of(&ms, Some("us-east-1")).as_deref(),
            Some("eu-west-1")
        );
        ms.spec.region = Some("ap-south-1".into());
        assert_eq!(region_of(&ms, None).as_deref(), Some("ap-south-1"));
    }
}
