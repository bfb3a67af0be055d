//! Prometheus metrics (`/metrics`), prefixed `managed_secrets_`: one group per concern, each
//! registering its own metrics (`register`); `Metrics` holds the groups and the registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
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

/// Reconciles: how many, how long, why they failed, and how many objects are managed.
pub struct ReconcileMetrics {
    pub started: Counter,
    pub completed: Counter,
    pub failures: Family<ReasonLabels, Counter>,
    pub duration: Histogram,
    pub managed_objects: Gauge,
}

impl Default for ReconcileMetrics {
    fn default() -> Self {
        ReconcileMetrics {
            started: Counter::default(),
            completed: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            managed_objects: Gauge::default(),
        }
    }
}

impl ReconcileMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register("reconciles", "Reconciles started", self.started.clone());
        registry.register(
            "reconciles_completed",
            "Reconciles finished",
            self.completed.clone(),
        );
        registry.register(
            "failures",
            "Failed reconciles by reason",
            self.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            self.duration.clone(),
        );
        registry.register(
            "managed_objects",
            "ManagedSecrets being managed",
            self.managed_objects.clone(),
        );
        self
    }
}

/// What reached the Secrets: writes, how long a new AWS version took to arrive, and how fresh
/// the synced values are.
pub struct SyncMetrics {
    /// Syncs that changed a Secret.
    pub changed: Counter,
    /// Seconds from the operator first seeing a new AWS version to the Secret holding it.
    pub lag: Histogram,
    pub oldest_value_age: Gauge,
    pub stale_objects: Gauge,
    /// Per object: unix seconds of the last time AWS confirmed its value, and whether it is stale.
    freshness: Mutex<HashMap<Arc<str>, (i64, bool)>>,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        SyncMetrics {
            changed: Counter::default(),
            lag: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            oldest_value_age: Gauge::default(),
            stale_objects: Gauge::default(),
            freshness: Mutex::new(HashMap::new()),
        }
    }
}

impl SyncMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register("syncs", "Syncs that changed a Secret", self.changed.clone());
        registry.register(
            "sync_lag_seconds",
            "From the operator seeing a new AWS version to the Secret holding it",
            self.lag.clone(),
        );
        registry.register(
            "oldest_value_age_seconds",
            "Age of the oldest value AWS last confirmed for a synced Secret",
            self.oldest_value_age.clone(),
        );
        registry.register(
            "stale_objects",
            "ManagedSecrets whose Secret AWS has not confirmed for longer than their refresh interval",
            self.stale_objects.clone(),
        );
        self
    }

    fn freshness(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, (i64, bool)>> {
        self.freshness.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the oldest value's age and the stale count from what was recorded, as of `now`.
    fn update_freshness_gauges(&self, now: i64) {
        let f = self.freshness();
        let oldest = f
            .values()
            .map(|(t, _)| *t)
            .min()
            .map(|t| now.saturating_sub(t).max(0));
        self.oldest_value_age.set(oldest.unwrap_or(0));
        self.stale_objects
            .set(i64::try_from(f.values().filter(|(_, s)| *s).count()).unwrap_or(i64::MAX));
    }
}

/// Rotations that are not healthy, by reason (no per-object label: the condition names the
/// object).
#[derive(Default)]
pub struct RotationMetrics {
    pub unhealthy: Family<ReasonLabels, Gauge>,
    /// Per object: the reason its rotation is unhealthy.
    by_object: Mutex<HashMap<Arc<str>, &'static str>>,
}

impl RotationMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "rotation_unhealthy",
            "ManagedSecrets whose AWS secret's rotation is overdue or stuck, by reason",
            self.unhealthy.clone(),
        );
        self
    }

    /// Records that `key`'s rotation is unhealthy for `reason` (None: healthy, or unknown).
    pub fn set(&self, key: &Arc<str>, reason: Option<&'static str>) {
        let mut m = self.by_object.lock().unwrap_or_else(|e| e.into_inner());
        let before = match reason {
            Some(r) => m.insert(key.clone(), r),
            None => m.remove(key),
        };
        if before != reason {
            self.adjust(before, -1);
            self.adjust(reason, 1);
        }
    }

    fn forget(&self, key: &str) {
        let before = self
            .by_object
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.adjust(before, -1);
    }

    fn adjust(&self, reason: Option<&'static str>, by: i64) {
        if let Some(r) = reason {
            self.unhealthy
                .get_or_create(&ReasonLabels { reason: r.into() })
                .inc_by(by);
        }
    }
}

/// Calls to AWS: Secrets Manager by API and outcome (and what they cost), STS.
#[derive(Default)]
pub struct AwsMetrics {
    pub calls: Family<AwsLabels, Counter>,
    /// AWS Secrets Manager's price: $0.05 per 10,000 API calls.
    pub estimated_cost: Counter<f64, AtomicU64>,
    pub sts_calls: Family<AwsLabels, Counter>,
}

impl AwsMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "aws_calls",
            "AWS Secrets Manager calls by API and outcome",
            self.calls.clone(),
        );
        registry.register(
            "aws_estimated_cost_dollars",
            "Estimated AWS Secrets Manager API cost of the calls made ($0.05 per 10,000)",
            self.estimated_cost.clone(),
        );
        registry.register(
            "sts_calls",
            "AWS STS calls (AssumeRole, AssumeRoleWithWebIdentity) by API and outcome",
            self.sts_calls.clone(),
        );
        self
    }
}

/// The source cache (`source::cache`): lookups by result, and what it holds.
#[derive(Default)]
pub struct CacheMetrics {
    pub lookups: Family<ResultLabels, Counter>,
    pub entries: Gauge,
    pub bytes: Gauge,
}

impl CacheMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "cache_lookups",
            "Source cache lookups: hit (fresh), revalidated (DescribeSecret said the same version), swept (a ListSecrets sweep said so), miss (the value was read)",
            self.lookups.clone(),
        );
        registry.register(
            "source_cache_entries",
            "Secret values held in the source cache",
            self.entries.clone(),
        );
        registry.register(
            "source_cache_bytes",
            "Bytes of secret values held in the source cache",
            self.bytes.clone(),
        );
        self
    }
}

/// Requests to the Kubernetes API: by verb, the ones turned away, failed lists and watches.
#[derive(Default)]
pub struct KubeMetrics {
    pub requests: Family<VerbLabels, Counter>,
    /// Answers 429 (the API server's priority and fairness turning requests away).
    pub throttled: Counter,
    pub watch_errors: Family<WatchLabels, Counter>,
}

impl KubeMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "kube_requests",
            "Kubernetes API requests by verb",
            self.requests.clone(),
        );
        registry.register(
            "kube_throttled",
            "Kubernetes API answers 429 (each halves the client's pace for a while)",
            self.throttled.clone(),
        );
        registry.register(
            "watch_errors",
            "Failed lists and watches by resource and reason (Forbidden: RBAC is missing a permission)",
            self.watch_errors.clone(),
        );
        self
    }
}

/// Rollouts of the workloads that use a Secret.
#[derive(Default)]
pub struct RolloutMetrics {
    /// By workload kind and result.
    pub results: Family<RolloutLabels, Counter>,
}

impl RolloutMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "rollouts",
            "Rollouts triggered by workload kind and result",
            self.results.clone(),
        );
        self
    }
}

/// The event source (SQS): what it received and dropped, how fast events were handled, its health.
pub struct EventMetrics {
    /// Messages by event type (a known Secrets Manager event, `other`).
    pub received: Family<TypeLabels, Counter>,
    /// Messages deleted without a refresh: malformed, irrelevant, unmanaged, duplicate.
    pub dropped: Family<ReasonLabels, Counter>,
    /// Seconds from receiving an event to every ManagedSecret it moved being handled.
    pub sync: Histogram,
    /// 1 while the event source receives; 0 when it fails (polling carries on).
    pub source_up: Gauge,
    pub queue_errors: Counter,
}

impl Default for EventMetrics {
    fn default() -> Self {
        EventMetrics {
            received: Family::default(),
            dropped: Family::default(),
            sync: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            source_up: Gauge::default(),
            queue_errors: Counter::default(),
        }
    }
}

impl EventMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "events_received",
            "Event source messages received, by event type",
            self.received.clone(),
        );
        registry.register(
            "events_dropped",
            "Event source messages deleted without a refresh: malformed, irrelevant (cannot move a version), unmanaged (no ManagedSecret reads the secret), duplicate (nothing new)",
            self.dropped.clone(),
        );
        registry.register(
            "event_sync_seconds",
            "From receiving an event to every ManagedSecret it moved being synced",
            self.sync.clone(),
        );
        registry.register(
            "event_source_up",
            "1 while the event source (SQS) receives; 0 when it fails and polling alone carries on",
            self.source_up.clone(),
        );
        registry.register(
            "event_queue_errors",
            "Failed SQS calls (ReceiveMessage, DeleteMessage)",
            self.queue_errors.clone(),
        );
        self
    }
}

/// Leader election (`leader`).
#[derive(Default)]
pub struct LeaderMetrics {
    /// 1 while this replica holds the leader Lease.
    pub leading: Gauge,
}

impl LeaderMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (only the leader reconciles)",
            self.leading.clone(),
        );
        self
    }
}

/// What the start-up RBAC check found.
#[derive(Default)]
pub struct PermissionMetrics {
    /// 1 for each permission the operator needs and its ServiceAccount lacks; 0 once granted.
    pub missing: Family<PermissionLabels, Gauge>,
}

impl PermissionMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "permission_missing",
            "1 for each Kubernetes permission the operator needs and was not granted (SelfSubjectAccessReview at start); 0 once granted",
            self.missing.clone(),
        );
        self
    }
}

/// The reconcile workers, shared between namespaces (`fair`).
#[derive(Default)]
pub struct WorkerMetrics {
    /// Reconciles due and waiting for a worker.
    pub waiting: Gauge,
}

impl WorkerMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "reconciles_waiting",
            "Reconciles due and waiting for a worker (workers go to namespaces in turn)",
            self.waiting.clone(),
        );
        self
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
    pub fn register(self, registry: &mut Registry) -> Self {
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
        self
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// The admission webhook (`admission`).
pub struct AdmissionMetrics {
    /// Reviews by kind and result (allowed, denied, invalid, error, unavailable).
    pub requests: Family<AdmissionLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    /// When the serving certificate in use expires (Unix seconds; 0 before one is loaded).
    pub certificate_expiry: Gauge,
}

impl Default for AdmissionMetrics {
    fn default() -> Self {
        AdmissionMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 14))
            }),
            certificate_expiry: Gauge::default(),
        }
    }
}

impl AdmissionMetrics {
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "admission_requests",
            "Admission reviews answered by the webhook, by kind and result (allowed, denied by an access policy, invalid spec, error, unavailable: caches not filled)",
            self.requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review, by kind",
            self.duration.clone(),
        );
        registry.register(
            "webhook_certificate_expiry_timestamp_seconds",
            "When the webhook's serving certificate in use expires (Unix time)",
            self.certificate_expiry.clone(),
        );
        self
    }

    /// One answered review.
    pub fn observe(&self, kind: &str, result: &str, took: std::time::Duration) {
        self.requests
            .get_or_create(&AdmissionLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
        self.duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(took.as_secs_f64());
    }
}

/// Every metric the operator serves, by concern, and the registry they are registered in.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: ReconcileMetrics,
    pub syncs: SyncMetrics,
    pub aws: AwsMetrics,
    pub cache: CacheMetrics,
    pub kube: KubeMetrics,
    pub rollouts: RolloutMetrics,
    pub events: EventMetrics,
    pub leader: LeaderMetrics,
    pub permissions: PermissionMetrics,
    pub workers: WorkerMetrics,
    pub claims: ClaimMetrics,
    pub rotation: RotationMetrics,
    pub admission: AdmissionMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("managed_secrets");
        Metrics {
            reconciles: ReconcileMetrics::default().register(&mut registry),
            syncs: SyncMetrics::default().register(&mut registry),
            aws: AwsMetrics::default().register(&mut registry),
            cache: CacheMetrics::default().register(&mut registry),
            kube: KubeMetrics::default().register(&mut registry),
            rollouts: RolloutMetrics::default().register(&mut registry),
            events: EventMetrics::default().register(&mut registry),
            leader: LeaderMetrics::default().register(&mut registry),
            permissions: PermissionMetrics::default().register(&mut registry),
            workers: WorkerMetrics::default().register(&mut registry),
            claims: ClaimMetrics::default().register(&mut registry),
            rotation: RotationMetrics::default().register(&mut registry),
            admission: AdmissionMetrics::default().register(&mut registry),
            registry,
        }
    }
}

impl Metrics {
    pub fn cache_lookup(&self, result: &str) {
        self.cache
            .lookups
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }
    pub fn event_received(&self, type_: &str) {
        self.events
            .received
            .get_or_create(&TypeLabels {
                r#type: type_.into(),
            })
            .inc();
    }
    pub fn event_dropped(&self, reason: &str) {
        self.events
            .dropped
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
    pub fn kube_request(&self, verb: &str) {
        self.kube
            .requests
            .get_or_create(&VerbLabels { verb: verb.into() })
            .inc();
    }
    pub fn aws_call(&self, api: &str, outcome: &str) {
        self.aws.estimated_cost.inc_by(0.05 / 10_000.0);
        self.aws
            .calls
            .get_or_create(&AwsLabels {
                api: api.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
    pub fn sts_call(&self, api: &str, outcome: &str) {
        self.aws
            .sts_calls
            .get_or_create(&AwsLabels {
                api: api.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
    pub fn rollout(&self, kind: &str, result: &str) {
        self.rollouts
            .results
            .get_or_create(&RolloutLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
    }
    pub fn failure(&self, reason: &str) {
        self.reconciles
            .failures
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
    pub fn watch_error(&self, resource: &str, reason: &str) {
        self.kube
            .watch_errors
            .get_or_create(&WatchLabels {
                resource: resource.into(),
                reason: reason.into(),
            })
            .inc();
    }
    /// Records when AWS last confirmed an object's value (unix seconds) and whether it is stale.
    pub fn freshness(&self, key: &Arc<str>, confirmed_at: i64, stale: bool) {
        self.syncs
            .freshness()
            .insert(key.clone(), (confirmed_at, stale));
    }
    pub fn forget(&self, key: &str) {
        self.syncs.freshness().remove(key);
        self.rotation.forget(key);
    }
    pub fn render(&self) -> String {
        self.syncs
            .update_freshness_gauges(chrono::Utc::now().timestamp());
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("metrics encode");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The families served and their types (what dashboards and alerts query): grouping the
    /// metrics by concern renamed none of them.
    #[test]
    fn every_metric_family_is_served_under_its_name_and_type() {
        let m = Metrics::default();
        // A family shows in the output once it has a series.
        m.cache_lookup("hit");
        m.event_received("PutSecretValue");
        m.event_dropped("duplicate");
        m.kube_request("get");
        m.aws_call("GetSecretValue", "ok");
        m.sts_call("AssumeRole", "ok");
        m.rollout("Deployment", "triggered");
        m.failure("Throttled");
        m.watch_error("secrets", "Forbidden");
        m.admission.observe(
            "ManagedSecret",
            "denied",
            std::time::Duration::from_millis(2),
        );
        m.permissions
            .missing
            .get_or_create(&PermissionLabels {
                verb: "list".into(),
                resource: "secrets".into(),
                namespace: String::new(),
                name: String::new(),
            })
            .set(1);
        let mut served: Vec<String> = m
            .render()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE managed_secrets_"))
            .map(String::from)
            .collect();
        served.sort_unstable();
        assert_eq!(
            served,
            [
                "admission_duration_seconds histogram",
                "admission_requests counter",
                "aws_calls counter",
                "aws_estimated_cost_dollars counter",
                "cache_lookups counter",
                "claims_taken_over counter",
                "contested_objects gauge",
                "event_queue_errors counter",
                "event_source_up gauge",
                "event_sync_seconds histogram",
                "events_dropped counter",
                "events_received counter",
                "failures counter",
                "kube_requests counter",
                "kube_throttled counter",
                "leader gauge",
                "managed_objects gauge",
                "oldest_value_age_seconds gauge",
                "permission_missing gauge",
                "reconcile_duration_seconds histogram",
                "reconciles counter",
                "reconciles_completed counter",
                "reconciles_waiting gauge",
                "rollouts counter",
                "source_cache_bytes gauge",
                "source_cache_entries gauge",
                "stale_objects gauge",
                "sts_calls counter",
                "sync_lag_seconds histogram",
                "syncs counter",
                "watch_errors counter",
                "webhook_certificate_expiry_timestamp_seconds gauge",
            ]
        );
    }

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
        m.rotation.set(&Arc::from("team/a"), Some("RotationStuck"));
        m.admission.observe(
            "ManagedSecret",
            "denied",
            std::time::Duration::from_millis(2),
        );
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

    #[test]
    fn unhealthy_rotations_are_counted_once_per_object_by_reason() {
        let m = Metrics::default();
        let (a, b): (Arc<str>, Arc<str>) = ("team/a".into(), "team/b".into());
        let count = |r: &str| {
            m.rotation
                .unhealthy
                .get_or_create(&ReasonLabels { reason: r.into() })
                .get()
        };
        m.rotation.set(&a, Some("RotationStuck"));
        m.rotation.set(&a, Some("RotationStuck"));
        m.rotation.set(&b, Some("RotationOverdue"));
        assert_eq!((count("RotationStuck"), count("RotationOverdue")), (1, 1));
        m.rotation.set(&a, Some("RotationOverdue"));
        assert_eq!((count("RotationStuck"), count("RotationOverdue")), (0, 2));
        m.rotation.set(&a, None);
        m.forget("team/b");
        assert_eq!((count("RotationStuck"), count("RotationOverdue")), (0, 0));
    }
}
