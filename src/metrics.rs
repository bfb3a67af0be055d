//! Prometheus metrics (`/metrics`), prefixed `managed_secrets_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
pub struct AwsLabels {
    pub api: String,
    pub outcome: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub reconciles_completed: Counter,
    pub syncs: Counter,
    pub failures: Family<ReasonLabels, Counter>,
    pub aws_calls: Family<AwsLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub managed_objects: Gauge,
    pub rollouts: Family<RolloutLabels, Counter>,
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
            reconciles,
            reconciles_completed,
            syncs,
            failures,
            aws_calls,
            reconcile_duration,
            managed_objects,
            rollouts,
        }
    }
}

impl Metrics {
    pub fn aws_call(&self, api: &str, outcome: &str) {
        self.aws_calls
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
    pub fn render(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("metrics encode");
        s
    }
}
