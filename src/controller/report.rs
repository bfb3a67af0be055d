//! How watches report: a failure logged (a 403 loudly, naming the permission) and counted, and a
//! kind marked as listed once its initial list succeeded (readiness). Shared by every watch.

use crate::health::Health;
use crate::metrics::Metrics;
use kube::runtime::watcher;
use std::sync::Arc;
use tracing::{debug, error, warn};

/// The readiness key of a watched kind in a scope.
pub(super) fn kind_key(kind: &str, scope: &Option<String>) -> String {
    match scope {
        Some(ns) => format!("{kind} in {ns}"),
        None => kind.to_string(),
    }
}

/// Logs watch failures (a 403 loudly, naming the permission), counts them, and marks a kind as
/// listed once its initial list succeeded.
pub(super) fn watch_report<K>(
    resource: &'static str,
    key: String,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> impl FnMut(&std::result::Result<watcher::Event<K>, watcher::Error>) {
    move |ev| match ev {
        Ok(watcher::Event::InitDone) => health.listed(&key),
        Ok(_) => {}
        Err(e) => {
            let status = match e {
                watcher::Error::InitialListFailed(kube::Error::Api(s))
                | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                | watcher::Error::WatchFailed(kube::Error::Api(s)) => {
                    Some((s.code, s.reason.clone()))
                }
                watcher::Error::WatchError(s) => Some((s.code, s.reason.clone())),
                _ => None,
            };
            let reason = match &status {
                Some((_, r)) if !r.is_empty() => r.clone(),
                Some((c, _)) => c.to_string(),
                None => "Unreachable".into(),
            };
            metrics.watch_error(resource, &reason);
            match status {
                Some((403, _)) => error!(
                    resource,
                    error = %e,
                    "the operator may not list or watch {resource}: grant its ServiceAccount get, list and watch on {resource} (the chart's RBAC does); nothing syncs until then"
                ),
                Some((404, _)) => error!(
                    resource,
                    "{resource} is not served: install its CRD (charts/managed-secrets/crds, or crds/)"
                ),
                Some((410, _)) => debug!(resource, "watch expired; re-listing"),
                _ => warn!(resource, error = %e, "watch failed; retrying with back-off"),
            }
        }
    }
}
