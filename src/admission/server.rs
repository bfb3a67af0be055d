//! The webhook's endpoints: an AdmissionReview in, the decision of `review` out, from the watch
//! caches only (never AWS). A replica whose caches are not filled yet answers 503, and the API
//! server applies the webhook's failure policy.

use super::review::{self, Access, Refusal};
use crate::controller::policies::PolicyView;
use crate::crd::{ManagedSecret, SecretAccessPolicy, SecretAccessPolicySpec};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::policy::Namespace;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The paths the webhook configuration names.
pub const MANAGED_SECRETS_PATH: &str = "/validate/managedsecrets";
pub const POLICIES_PATH: &str = "/validate/secretaccesspolicies";

/// How long a review waits for a namespace the cache has not seen yet (it was created just now).
const NAMESPACE_WAIT: Duration = Duration::from_secs(1);

/// What a review decides with.
pub struct Admission {
    pub min_refresh: Duration,
    pub default_region: Option<String>,
    /// The grants and namespace labels (None: access policies are off).
    pub policy: Option<PolicyView>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ManagedSecret,
    Policy,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::ManagedSecret => "ManagedSecret",
            Kind::Policy => "SecretAccessPolicy",
        }
    }
}

/// The answer cannot be given now (caches not filled): the API server's failure policy decides.
struct Unavailable(String);

/// The largest AdmissionReview read (an object and its old version, each at most etcd's 1.5 MiB).
const MAX_BODY: usize = 4 << 20;

pub fn router(a: Arc<Admission>) -> Router {
    let b = a.clone();
    Router::new()
        .route(
            MANAGED_SECRETS_PATH,
            post(move |body: Bytes| handle(a.clone(), Kind::ManagedSecret, body)),
        )
        .route(
            POLICIES_PATH,
            post(move |body: Bytes| handle(b.clone(), Kind::Policy, body)),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

async fn handle(a: Arc<Admission>, kind: Kind, body: Bytes) -> Response {
    let started = Instant::now();
    let (response, result) = match answer(&a, kind, &body).await {
        Ok((review, result)) => match serde_json::to_vec(&review) {
            Ok(body) => (
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response(),
                result,
            ),
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR.into_response(), "error"),
        },
        Err(Unavailable(why)) => {
            tracing::info!(kind = kind.label(), %why, "webhook: no answer yet");
            (
                (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
                "unavailable",
            )
        }
    };
    a.metrics
        .admission
        .observe(kind.label(), result, started.elapsed());
    response
}

/// The AdmissionReview answered, and the result for the metrics.
async fn answer(
    a: &Admission,
    kind: Kind,
    body: &[u8],
) -> Result<(AdmissionReview<DynamicObject>, &'static str), Unavailable> {
    let req: AdmissionRequest<DynamicObject> =
        match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
            .map_err(|e| e.to_string())
            .and_then(|r| r.try_into().map_err(|e| format!("{e}")))
        {
            Ok(r) => r,
            Err(e) => {
                let why = format!("not an AdmissionReview request: {e}");
                return Ok((AdmissionResponse::invalid(why).into_review(), "error"));
            }
        };
    let allowed = AdmissionResponse::from(&req);
    let Some(new) = req
        .object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok())
    else {
        return Ok((allowed.into_review(), "allowed"));
    };
    let old = req
        .old_object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok());
    let judged = matches!(req.operation, Operation::Create | Operation::Update)
        && review::spec_changed(old.as_ref(), &new);
    if !judged {
        return Ok((allowed.into_review(), "allowed"));
    }
    let refusal = match kind {
        Kind::ManagedSecret => a.managed_secret(new, req.namespace.as_deref()).await?,
        Kind::Policy => a.policy(new),
    };
    Ok(match refusal {
        None => (allowed.into_review(), "allowed"),
        Some(r) => {
            tracing::info!(kind = kind.label(), name = %req.name, namespace = ?req.namespace, field = %r.field, "webhook: refused");
            let result = if r.denied { "denied" } else { "invalid" };
            (refuse(allowed, &r).into_review(), result)
        }
    })
}

fn refuse(base: AdmissionResponse, r: &Refusal) -> AdmissionResponse {
    let mut resp = base.deny(&r.message);
    resp.result.code = r.code();
    resp.result.reason = r.reason().into();
    resp
}

impl Admission {
    async fn managed_secret(
        &self,
        obj: serde_json::Value,
        namespace: Option<&str>,
    ) -> Result<Option<Refusal>, Unavailable> {
        let ms: ManagedSecret = match serde_json::from_value(obj) {
            Ok(ms) => ms,
            Err(e) => {
                return Ok(Some(Refusal {
                    field: "spec".into(),
                    message: format!("spec: {e}"),
                    denied: false,
                }))
            }
        };
        let Some(view) = &self.policy else {
            return Ok(review::managed_secret(&ms, self.min_refresh, None).err());
        };
        if !(self.health.is_listed("secretaccesspolicies") && self.health.is_listed("namespaces")) {
            return Err(Unavailable(
                "the access policies and namespaces are not listed yet".into(),
            ));
        }
        let name = namespace
            .map(String::from)
            .unwrap_or_else(|| ms.namespace().unwrap_or_default());
        let ns = wait_for_namespace(view, &name).await.ok_or_else(|| {
            Unavailable(format!(
                "namespace {name} is not in the operator's cache yet"
            ))
        })?;
        let policies: Vec<(String, SecretAccessPolicySpec)> = view
            .policies
            .state()
            .iter()
            .map(|p| (p.name_any(), p.spec.clone()))
            .collect();
        let access = Access {
            policies: &policies,
            namespace: &ns,
            default_region: self.default_region.as_deref(),
        };
        Ok(review::managed_secret(&ms, self.min_refresh, Some(&access)).err())
    }

    fn policy(&self, obj: serde_json::Value) -> Option<Refusal> {
        match serde_json::from_value::<SecretAccessPolicy>(obj) {
            Err(e) => Some(Refusal {
                field: "spec".into(),
                message: format!("spec: {e}"),
                denied: false,
            }),
            Ok(p) => {
                let found = review::policy(&p);
                (!found.is_empty()).then(|| Refusal {
                    field: found[0].field.clone(),
                    message: review::policy_message(&found),
                    denied: false,
                })
            }
        }
    }
}

/// The namespace as the cache has it, waiting a moment for one created just now.
async fn wait_for_namespace(view: &PolicyView, name: &str) -> Option<Namespace> {
    let deadline = Instant::now() + NAMESPACE_WAIT;
    loop {
        if let Some(meta) = view.namespaces.get(&ObjectRef::new(name)) {
            return Some(Namespace {
                name: name.to_string(),
                labels: meta.labels().clone(),
            });
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
