//! Prometheus metrics (`/metrics`), prefixed `managed_secrets_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub resource: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsLabels {
    pub api: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PermissionLabels {
    pub verb: String,
    /// `resource[/subresource][.group]`.
    pub resource: String,
    /// Empty: cluster-wide.
    pub namespace: String,
    /// Empty: any object (else the one object the permission is for).
    pub name: String,
}

/// What the start-up RBAC check found.
#[derive(Default)]
pub struct PermissionMetrics {
    /// 1 for each permission the operator needs and its ServiceAccount lacks; 0 once granted.
    pub missing: Family<PermissionLabels, Gauge>,
}

impl PermissionMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "permission_missing",
            "1 for each Kubernetes permission the operator needs and was not granted (SelfSubjectAccessReview at start); 0 once granted",
            self.missing.clone(),
        );
    }
}

/// The reconcile workers, shared between namespaces (`fair`).
#[derive(Default)]
pub struct WorkerMetrics {
    /// Reconciles due and waiting for a worker.
    pub waiting: Gauge,
}

impl WorkerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "reconciles_waiting",
            "Reconciles due and waiting for a worker (workers go to namespaces in turn)",
            self.waiting.clone(),
        );
    }
}

/// Objects claimed by other installations (`claim`).
#[derive(Default)]
pub struct ClaimMetrics {
    /// ManagedSecrets this installation watches and leaves to another, live installation.
    pub contested: Gauge,
    /// ManagedSecrets taken over from an installation whose Lease lapsed.
    pub taken_over: Counter,
}

impl ClaimMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "contested_objects",
            "ManagedSecrets this installation watches but leaves to another installation that claims them and runs (two installations watch the same namespaces)",
            self.contested.clone(),
        );
        registry.register(
            "claims_taken_over",
            "ManagedSecrets taken over from another installation whose Lease lapsed",
            self.taken_over.clone(),
        );
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub permissions: PermissionMetrics,
    pub workers: WorkerMetrics,
    pub claims: ClaimMetrics,
    pub reconciles: Counter,
    pub reconciles_completed: Counter,
    pub syncs: Counter,
    pub failures: Family<ReasonLabels, Counter>,
    pub aws_calls: Family<AwsLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub managed_objects: Gauge,
    pub rollouts: Family<RolloutLabels, Counter>,
    pub watch_errors: Family<WatchLabels, Counter>,
    pub sts_calls: Family<AwsLabels, Counter>,
    pub cache_lookups: Family<ResultLabels, Counter>,
    /// AWS Secrets Manager's price: $0.05 per 10,000 API calls.
    pub aws_cost: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Seconds from the operator first seeing a new AWS version to the Secret holding it.
    pub sync_lag: Histogram,
    pub kube_requests: Family<VerbLabels, Counter>,
    /// Answers 429 (the API server's priority and fairness turning requests away).
    pub kube_throttled: Counter,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Event source (SQS): messages by event type (a known Secrets Manager event, `other`).
    pub events_received: Family<TypeLabels, Counter>,
    /// Messages deleted without a refresh: malformed, irrelevant, unmanaged, duplicate.
    pub events_dropped: Family<ReasonLabels, Counter>,
    /// Seconds from receiving an event to every ManagedSecret it moved being handled.
    pub event_sync: Histogram,
    /// 1 while the event source receives; 0 when it fails (polling carries on).
    pub event_source_up: Gauge,
    pub event_queue_errors: Counter,
    pub oldest_value_age: Gauge,
    pub stale_objects: Gauge,
    pub cache_entries: Gauge,
    pub cache_bytes: Gauge,
    /// Per object: unix seconds of the last time AWS confirmed its value, and whether it is stale.
    freshness: Mutex<HashMap<Arc<str>, (i64, bool)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("managed_secrets");
        let reconciles = Counter::default();
        let reconciles_completed = Counter::default();
        let syncs = Counter::default();
        let failures = Family::<ReasonLabels, Counter>::default();
        let aws_calls = Family::<AwsLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let managed_objects = Gauge::default();
        let rollouts = Family::<RolloutLabels, Counter>::default();
        let watch_errors = Family::<WatchLabels, Counter>::default();
        let sts_calls = Family::<AwsLabels, Counter>::default();
        let cache_lookups = Family::<ResultLabels, Counter>::default();
        let aws_cost = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        let sync_lag = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        let kube_requests = Family::<VerbLabels, Counter>::default();
        let kube_throttled = Counter::default();
        let leader = Gauge::default();
        let events_received = Family::<TypeLabels, Counter>::default();
        let events_dropped = Family::<ReasonLabels, Counter>::default();
        let event_sync = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        let event_source_up = Gauge::default();
        let event_queue_errors = Counter::default();
        let permissions = PermissionMetrics::default();
        permissions.register(&mut registry);
        let workers = WorkerMetrics::default();
        workers.register(&mut registry);
        let claims = ClaimMetrics::default();
        claims.register(&mut registry);
        registry.register(
            "events_received",
            "Event source messages received, by event type",
            events_received.clone(),
        );
        registry.register(
            "events_dropped",
            "Event source messages deleted without a refresh: malformed, irrelevant (cannot move a version), unmanaged (no ManagedSecret reads the secret), duplicate (nothing new)",
            events_dropped.clone(),
        );
        registry.register(
            "event_sync_seconds",
            "From receiving an event to every ManagedSecret it moved being synced",
            event_sync.clone(),
        );
        registry.register(
            "event_source_up",
            "1 while the event source (SQS) receives; 0 when it fails and polling alone carries on",
            event_source_up.clone(),
        );
        registry.register(
            "event_queue_errors",
            "Failed SQS calls (ReceiveMessage, DeleteMessage)",
            event_queue_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (only the leader reconciles)",
            leader.clone(),
        );
        registry.register(
            "cache_lookups",
            "Source cache lookups: hit (fresh), revalidated (DescribeSecret said the same version), swept (a ListSecrets sweep said so), miss (the value was read)",
            cache_lookups.clone(),
        );
        registry.register(
            "aws_estimated_cost_dollars",
            "Estimated AWS Secrets Manager API cost of the calls made ($0.05 per 10,000)",
            aws_cost.clone(),
        );
        registry.register(
            "sync_lag_seconds",
            "From the operator seeing a new AWS version to the Secret holding it",
            sync_lag.clone(),
        );
        registry.register(
            "kube_requests",
            "Kubernetes API requests by verb",
            kube_requests.clone(),
        );
        registry.register(
            "kube_throttled",
            "Kubernetes API answers 429 (each halves the client's pace for a while)",
            kube_throttled.clone(),
        );
        registry.register(
            "sts_calls",
            "AWS STS calls (AssumeRole, AssumeRoleWithWebIdentity) by API and outcome",
            sts_calls.clone(),
        );
        let oldest_value_age = Gauge::default();
        let stale_objects = Gauge::default();
        let cache_entries = Gauge::default();
        let cache_bytes = Gauge::default();
        registry.register(
            "watch_errors",
            "Failed lists and watches by resource and reason (Forbidden: RBAC is missing a permission)",
            watch_errors.clone(),
        );
        registry.register(
            "oldest_value_age_seconds",
            "Age of the oldest value AWS last confirmed for a synced Secret",
            oldest_value_age.clone(),
        );
        registry.register(
            "stale_objects",
            "ManagedSecrets whose Secret AWS has not confirmed for longer than their refresh interval",
            stale_objects.clone(),
        );
        registry.register(
            "source_cache_entries",
            "Secret values held in the source cache",
            cache_entries.clone(),
        );
        registry.register(
            "source_cache_bytes",
            "Bytes of secret values held in the source cache",
            cache_bytes.clone(),
        );
        registry.register(
            "rollouts",
            "Rollouts triggered by workload kind and result",
            rollouts.clone(),
        );
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconciles_completed",
            "Reconciles finished",
            reconciles_completed.clone(),
        );
        registry.register("syncs", "Syncs that changed a Secret", syncs.clone());
        registry.register("failures", "Failed reconciles by reason", failures.clone());
        registry.register(
            "aws_calls",
            "AWS Secrets Manager calls by API and outcome",
            aws_calls.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_duration.clone(),
        );
        registry.register(
            "managed_objects",
            "ManagedSecrets being managed",
            managed_objects.clone(),
        );
        Metrics {
            registry,
            permissions,
            workers,
            claims,
            reconciles,
            reconciles_completed,
            syncs,
            failures,
            aws_calls,
            reconcile_duration,
            managed_objects,
            rollouts,
            watch_errors,
            sts_calls,
            cache_lookups,
            aws_cost,
            sync_lag,
            kube_requests,
            kube_throttled,
            leader,
            events_received,
            events_dropped,
            event_sync,
            event_source_up,
            event_queue_errors,
            oldest_value_age,
            stale_objects,
            cache_entries,
            cache_bytes,
            freshness: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    pub fn cache_lookup(&self, result: &str) {
        self.cache_lookups
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }
    pub fn event_received(&self, type_: &str) {
        self.events_received
            .get_or_create(&TypeLabels {
                r#type: type_.into(),
            })
            .inc();
    }
    pub fn event_dropped(&self, reason: &str) {
        self.events_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
    pub fn kube_request(&self, verb: &str) {
        self.kube_requests
            .get_or_create(&VerbLabels { verb: verb.into() })
            .inc();
    }
    pub fn aws_call(&self, api: &str, outcome: &str) {
        self.aws_cost.inc_by(0.05 / 10_000.0);
        self.aws_calls
            .get_or_create(&AwsLabels {
                api: api.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
    pub fn sts_call(&self, api: &str, outcome: &str) {
        self.sts_calls
            .get_or_create(&AwsLabels {
                api: api.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
    pub fn rollout(&self, kind: &str, result: &str) {
        self.rollouts
            .get_or_create(&RolloutLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
    }
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
    pub fn watch_error(&self, resource: &str, reason: &str) {
        self.watch_errors
            .get_or_create(&WatchLabels {
                resource: resource.into(),
                reason: reason.into(),
            })
            .inc();
    }
    /// Records when AWS last confirmed an object's value (unix seconds) and whether it is stale.
    pub fn freshness(&self, key: &Arc<str>, confirmed_at: i64, stale: bool) {
        self.freshness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (confirmed_at, stale));
    }
    pub fn forget(&self, key: &str) {
        self.freshness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
    pub fn render(&self) -> String {
        {
            let now = chrono::Utc::now().timestamp();
            let f = self.freshness.lock().unwrap_or_else(|e| e.into_inner());
            let oldest = f
                .values()
                .map(|(t, _)| *t)
                .min()
                .map(|t| now.saturating_sub(t).max(0));
            self.oldest_value_age.set(oldest.unwrap_or(0));
            self.stale_objects
                .set(i64::try_from(f.values().filter(|(_, s)| *s).count()).unwrap_or(i64::MAX));
        }
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("metrics encode");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every series the chart's Grafana dashboard queries is one this registry serves.
    #[test]
    fn the_dashboard_queries_only_metrics_that_exist() {
        let dashboard = include_str!("../charts/managed-secrets/files/dashboard.json");
        // A family shows in the output once it has a series.
        let m = Metrics::default();
        m.cache_lookup("hit");
        m.event_received("PutSecretValue");
        m.event_dropped("duplicate");
        m.kube_request("get");
        m.aws_call("GetSecretValue", "ok");
        m.sts_call("AssumeRole", "ok");
        m.rollout("Deployment", "triggered");
        m.failure("Throttled");
        m.watch_error("secrets", "Forbidden");
        let served: Vec<String> = m
            .render()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(String::from)
            .collect();
        let mut queried: Vec<&str> = dashboard
            .match_indices("managed_secrets_")
            .map(|(i, _)| {
                let rest = &dashboard[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        queried.sort_unstable();
        queried.dedup();
        assert!(queried.len() >= 15, "{queried:?}");
        for q in queried {
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| q.strip_suffix(s))
                .unwrap_or(q);
            assert!(
                served.iter().any(|s| s == base),
                "the dashboard queries {q}, which is not served (served: {served:?})"
            );
        }
    }
}
