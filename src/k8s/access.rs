//! The start-up RBAC check: asks the API server (SelfSubjectAccessReview) for every permission
//! the operator needs in its scope (`permissions::checks`), and reports what is missing in
//! `/readyz`, as an ERROR naming verb and resource, and in `managed_secrets_permission_missing`,
//! instead of a 403 on every object later. Re-checks until everything is granted, so a fixed
//! Role makes the operator ready without a restart.

use crate::health::{Health, Permissions};
use crate::metrics::{Metrics, PermissionLabels};
use crate::permissions::Check;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::Client;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// How often a check that found something missing (or failed) runs again.
pub const RECHECK: Duration = Duration::from_secs(30);
/// Reviews in flight at once.
const PARALLEL: usize = 8;

/// Whether the API server allows one check.
async fn allowed(api: &Api<SelfSubjectAccessReview>, c: &Check) -> Result<bool, kube::Error> {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(c.verb.clone()),
                group: Some(c.group.clone()),
                resource: Some(c.resource.clone()),
                subresource: opt(&c.subresource),
                namespace: opt(&c.namespace),
                name: opt(&c.name),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = api.create(&PostParams::default(), &review).await?;
    Ok(out.status.map(|s| s.allowed).unwrap_or(false))
}

/// The checks the API server does not allow.
pub async fn missing(client: &Client, checks: &[Check]) -> Result<Vec<Check>, kube::Error> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answers: Vec<(Check, bool)> = futures::stream::iter(checks.iter().cloned())
        .map(|c| {
            let api = api.clone();
            async move { allowed(&api, &c).await.map(|ok| (c, ok)) }
        })
        .buffered(PARALLEL)
        .try_collect()
        .await?;
    Ok(answers
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(c, _)| c)
        .collect())
}

fn labels(c: &Check) -> PermissionLabels {
    let mut resource = c.resource.clone();
    if !c.subresource.is_empty() {
        resource = format!("{resource}/{}", c.subresource);
    }
    if !c.group.is_empty() {
        resource = format!("{resource}.{}", c.group);
    }
    PermissionLabels {
        verb: c.verb.clone(),
        resource,
        namespace: c.namespace.clone(),
        name: c.name.clone(),
    }
}

/// Checks `checks` until all are granted (or the check itself is refused), keeping `health` and
/// the metric current. Returns when everything is granted or on `shutdown`.
pub async fn verify(
    client: Client,
    checks: Vec<Check>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    health.permissions(Permissions::Checking(String::new()));
    let mut reported: BTreeSet<Check> = BTreeSet::new();
    loop {
        match missing(&client, &checks).await {
            Ok(m) => {
                let now: BTreeSet<Check> = m.iter().cloned().collect();
                for c in now.difference(&reported) {
                    let l = labels(c);
                    error!(verb = %l.verb, resource = %l.resource, namespace = %l.namespace, name = %l.name,
                        "missing RBAC permission: grant the operator's ServiceAccount {c} (see the README's RBAC table, or use the chart's)");
                }
                for c in &checks {
                    metrics
                        .permissions
                        .missing
                        .get_or_create(&labels(c))
                        .set(i64::from(now.contains(c)));
                }
                if now.is_empty() {
                    info!(
                        checked = checks.len(),
                        "every Kubernetes permission the operator needs is granted"
                    );
                    health.permissions(Permissions::Granted);
                    return;
                }
                health.permissions(Permissions::Missing(
                    m.iter().map(ToString::to_string).collect(),
                ));
                reported = now;
            }
            Err(kube::Error::Api(e)) if e.code == 403 => {
                // The review API itself is refused (every signed-in user may use it by default):
                // nothing can be checked, so readiness does not wait for it.
                warn!(error = %e, "cannot check RBAC permissions (SelfSubjectAccessReview is forbidden); a missing permission shows as a 403 later");
                health.permissions(Permissions::Unchecked);
                return;
            }
            Err(e) => {
                warn!(error = %e, "could not check RBAC permissions; trying again");
                health.permissions(Permissions::Checking(format!(" (last attempt: {e})")));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RECHECK) => {}
            _ = &mut shutdown => return,
        }
    }
}
