//! Validating admission webhooks as kube-apiserver (1.24, admissionregistration.k8s.io/v1) calls
//! them: once a write is decoded, defaulted, merged and validated, and before it is stored, every
//! matching webhook of every ValidatingWebhookConfiguration (read at call time, in name order) is
//! called, all at once; the first denial, or failed call under failurePolicy `Fail`, in that order
//! is what the client gets, with the warnings of every answer. No store lock is held during the
//! calls. Mutating webhooks are not emulated.

pub mod client;
pub mod config;
pub mod matching;
pub mod review;

use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::server::AppState;
use crate::store::Inner;
use config::Webhook;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// What admission knows of a request (the API server's `admission.Attributes`).
#[derive(Debug, Clone)]
pub struct Attributes {
    pub operation: Operation,
    pub group: String,
    /// The version the request was made at.
    pub version: String,
    /// Every version the resource is served at (matchPolicy `Equivalent`).
    pub versions: Vec<String>,
    pub resource: String,
    pub subresource: String,
    pub kind: String,
    /// Empty for cluster-scoped objects; a Namespace's own name for requests on it by name.
    pub namespace: String,
    /// As the request named it (empty for a create by generateName).
    pub name: String,
    /// The object as it would be stored (none for a delete).
    pub object: Option<Value>,
    /// The stored object (updates and deletes).
    pub old_object: Option<Value>,
    pub user: UserInfo,
    pub dry_run: bool,
    /// CreateOptions, UpdateOptions or DeleteOptions (meta.k8s.io/v1).
    pub options: Value,
}

/// The webhooks' verdict on one request, and the warnings they gave (the client gets those either
/// way).
#[derive(Debug, Default)]
pub struct Decision {
    pub denied: Option<ApiError>,
    pub warnings: Vec<String>,
}

impl Decision {
    fn warn(&mut self, warnings: Vec<String>) {
        for w in warnings {
            if !w.is_empty() && !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
    }
}

/// One webhook to call, at which version of the resource, and where.
struct Call {
    hook: Webhook,
    version: String,
    endpoint: client::Endpoint,
}

enum Outcome {
    Allowed(Vec<String>),
    Denied(ApiError, Vec<String>),
    /// Why the call failed (the text after `failed calling webhook "<name>": `).
    Failed(String),
}

/// Whether any ValidatingWebhookConfiguration exists (a write builds no attributes otherwise).
pub fn configured(inner: &Inner) -> bool {
    let key = "admissionregistration.k8s.io/validatingwebhookconfigurations";
    inner.objects.get(key).is_some_and(|m| !m.is_empty())
}

/// Calls the validating webhooks that match `a` (the store is read, then let go).
pub async fn validate(state: &AppState, a: &Attributes) -> Decision {
    if matching::is_exempt(a) {
        return Decision::default();
    }
    let calls = plan(&state.lock(), a);
    if calls.is_empty() {
        return Decision::default();
    }
    let outcomes = futures::future::join_all(calls.iter().map(|c| call(c, a))).await;
    decide(&calls, outcomes)
}

/// The webhooks to call for `a`, by configuration name and then their order within it.
fn plan(inner: &Inner, a: &Attributes) -> Vec<Call> {
    let group = "admissionregistration.k8s.io";
    let Some(rt) = inner.find_type(group, "v1", "validatingwebhookconfigurations") else {
        return vec![];
    };
    let configs = inner.list(&rt, None);
    if configs.is_empty() {
        return vec![];
    }
    let labels = namespace_labels(inner, a);
    configs
        .into_iter()
        .flat_map(config::webhooks_of)
        .filter_map(|hook| {
            let version = matching::should_call(&hook, a, labels.as_ref())?;
            let endpoint = client::resolve(inner, &hook.client_config, hook.timeout());
            Some(Call {
                hook,
                version,
                endpoint,
            })
        })
        .collect()
}

/// The labels a namespaceSelector is matched against: a Namespace's own (as written, for its
/// create or update), the stored namespace's for a namespaced object, none for other
/// cluster-scoped objects (the selector does not apply to them).
fn namespace_labels(inner: &Inner, a: &Attributes) -> Option<Value> {
    let labels = |o: &Value| o.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
    let is_namespace = a.group.is_empty() && a.resource == "namespaces";
    if is_namespace && a.subresource.is_empty() && a.operation != Operation::Delete {
        return Some(a.object.as_ref().map(labels).unwrap_or(json!({})));
    }
    if a.namespace.is_empty() {
        return None;
    }
    let rt = inner.find_type("", "v1", "namespaces")?;
    Some(
        inner
            .get(&rt, "", &a.namespace)
            .map(labels)
            .unwrap_or(json!({})),
    )
}

/// The AdmissionReview version a webhook takes: the first of its list the server speaks.
fn review_version(hook: &Webhook) -> &'static str {
    let listed = hook.admission_review_versions.as_deref().unwrap_or(&[]);
    match listed.iter().find(|v| *v == "v1" || *v == "v1beta1") {
        Some(v) if v == "v1beta1" => "v1beta1",
        _ => "v1",
    }
}

async fn call(c: &Call, a: &Attributes) -> Outcome {
    if a.dry_run
        && !matches!(
            c.hook.side_effects.as_deref(),
            Some("None" | "NoneOnDryRun")
        )
    {
        return Outcome::Denied(review::dry_run_unsupported(&c.hook.name), vec![]);
    }
    let version = review_version(&c.hook);
    let uid = uuid::Uuid::new_v4().to_string();
    let body = review::request(a, &c.version, &uid, version).to_string();
    let reply = match client::post(&c.endpoint, body.into_bytes(), c.hook.timeout()).await {
        Ok(r) => r,
        Err(why) => return Outcome::Failed(why),
    };
    match review::read(
        &uid,
        version,
        reply.status,
        &reply.content_type,
        &reply.body,
    ) {
        Ok(answer) if answer.allowed => Outcome::Allowed(answer.warnings),
        Ok(answer) => {
            let e = review::denied(&c.hook.name, answer.status.as_ref());
            Outcome::Denied(e, answer.warnings)
        }
        Err(why) => Outcome::Failed(why),
    }
}

/// The first denial, or failed call of a webhook that fails closed, in call order; a failed call
/// of a webhook with failurePolicy `Ignore` is logged and passed over.
fn decide(calls: &[Call], outcomes: Vec<Outcome>) -> Decision {
    let mut d = Decision::default();
    for (c, outcome) in calls.iter().zip(outcomes) {
        let error = match outcome {
            Outcome::Allowed(w) => {
                d.warn(w);
                None
            }
            Outcome::Denied(e, w) => {
                d.warn(w);
                Some(e)
            }
            Outcome::Failed(why) if c.hook.fails_closed() => {
                Some(review::call_failed(&c.hook.name, &why))
            }
            Outcome::Failed(why) => {
                tracing::warn!(webhook = %c.hook.name, %why, "failed calling webhook, failing open");
                None
            }
        };
        if d.denied.is_none() {
            d.denied = error;
        }
    }
    d
}
