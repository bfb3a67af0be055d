//! Command line and environment, validated once at start-up into strong types.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "managed-secrets",
    version,
    about = "Syncs AWS Secrets Manager secrets into Kubernetes Secrets"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller.
    // Each flag's help under its name, in every heading's section alike.
    #[command(next_line_help = true)]
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions (ManagedSecret, SecretAccessPolicy) as YAML documents.
    Crdgen,
    /// Check ManagedSecret and SecretAccessPolicy manifests offline (schema, unknown fields, the
    /// controller's own spec checks); prints `file:line: message` and exits 1 on any finding.
    Check(CheckArgs),
    /// Print the keys a ManagedSecret would put in its Secret for a sample AWS value (values
    /// redacted unless --show-values), rendered by the controller's own code.
    Render(RenderArgs),
    /// For a cluster whose operator is gone: give back the Secrets of ManagedSecrets that carry
    /// the cleanup finalizer (per their deletion policy) and remove the finalizer, so that they
    /// and their namespaces do not hang in Terminating.
    ReleaseFinalizers(ReleaseArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Files or directories (YAML files in them, recursively); other kinds are skipped.
    #[arg(short = 'f', long = "filename", required = true)]
    pub paths: Vec<std::path::PathBuf>,
    /// The operator's --min-refresh-interval, which refreshInterval must not be under.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    pub min_refresh_interval: Duration,
    /// SecretAccessPolicy files or directories: decide every ManagedSecret against them, as the
    /// operator would with access policies enforced.
    #[arg(long = "policies")]
    pub policies: Vec<std::path::PathBuf>,
    /// With --policies: each namespace's labels, `namespace=key=value` (comma-separated or
    /// repeated; `namespace=` for one without labels).
    #[arg(long = "namespace-labels")]
    pub namespace_labels: Vec<String>,
    /// With --policies: the namespace of ManagedSecrets whose manifest names none.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
    /// With --policies: the region the operator reads secrets in when neither the spec nor an ARN
    /// says (its AWS_REGION).
    #[arg(long)]
    pub default_region: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RenderArgs {
    /// The file holding the ManagedSecret.
    #[arg(short = 'f', long = "filename")]
    pub file: std::path::PathBuf,
    /// Which ManagedSecret of the file (needed when it holds several).
    #[arg(long)]
    pub name: Option<String>,
    /// A sample AWS value: its contents are the SecretString.
    #[arg(long)]
    pub value_file: std::path::PathBuf,
    /// Treat the sample as a SecretBinary instead.
    #[arg(long)]
    pub binary: bool,
    /// Print the values too (never do this with a real secret in a CI log).
    #[arg(long)]
    pub show_values: bool,
    /// The operator's --min-refresh-interval.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    pub min_refresh_interval: Duration,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReleaseArgs {
    /// Only this namespace (default: every namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Also ManagedSecrets that are not being deleted (before uninstalling the operator for good);
    /// by default only those stuck in Terminating.
    #[arg(long)]
    pub all: bool,
    /// Say what would be done, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccessPolicyArg {
    Enforce,
    Off,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The flags of `run`, grouped by concern (each group under its own heading in `--help`).
/// `validate` checks them together.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub operator: OperatorArgs,
    #[command(flatten)]
    pub reconcile: ReconcileArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
    #[command(flatten)]
    pub events: EventArgs,
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// What is watched, and what it may read from AWS.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Scope")]
pub struct ScopeArgs {
    /// Watch ManagedSecrets in these namespaces only (comma-separated; default: all namespaces).
    #[arg(
        long = "namespaces",
        alias = "namespace",
        env = "MANAGED_SECRETS_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// `enforce`: a ManagedSecret reads only what a SecretAccessPolicy grants its namespace;
    /// `off`: anything the operator's AWS identity can read (single-tenant clusters).
    #[arg(
        long,
        env = "MANAGED_SECRETS_ACCESS_POLICY",
        value_enum,
        default_value = "enforce"
    )]
    pub access_policy: AccessPolicyArg,
}

/// The operator's own namespace and hash key, its HTTP server, logs and shutdown.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Operator")]
pub struct OperatorArgs {
    /// The operator's own namespace (for the Secret holding its hash key).
    #[arg(long, env = "POD_NAMESPACE", default_value = "managed-secrets")]
    pub operator_namespace: String,
    /// The Secret (in the operator's namespace) holding the key of status.dataHash; created if missing.
    #[arg(
        long,
        env = "MANAGED_SECRETS_HASH_KEY_SECRET",
        default_value = "managed-secrets-hash-key"
    )]
    pub hash_key_secret: String,
    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "MANAGED_SECRETS_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    #[arg(
        long,
        env = "MANAGED_SECRETS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// How long SIGTERM waits for in-flight reconciles before the process exits anyway (keep it
    /// under the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "MANAGED_SECRETS_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_interval)]
    pub shutdown_timeout: Duration,
}

/// How many reconciles run at once, and the timing limits of ManagedSecrets.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Reconciles")]
pub struct ReconcileArgs {
    /// ManagedSecrets reconciled at once (in all watched namespaces together; namespaces with
    /// due reconciles take the free workers in turn).
    #[arg(long, env = "MANAGED_SECRETS_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Smallest refreshInterval a ManagedSecret may ask for.
    #[arg(long, env = "MANAGED_SECRETS_MIN_REFRESH_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub min_refresh_interval: Duration,
    /// How long a rollout waits after a new version, so rotations in that window make one rollout
    /// (a ManagedSecret's rollout.debounce overrides it).
    #[arg(long, env = "MANAGED_SECRETS_ROLLOUT_DEBOUNCE", default_value = "5s", value_parser = parse_debounce)]
    pub rollout_debounce: Duration,
    /// A rotation whose NextRotationDate (the end of its window: AWS rotates on or before it) passed
    /// longer ago than this is overdue (RotationHealthy=False, RotationOverdue). 1s to 7d.
    #[arg(long, env = "MANAGED_SECRETS_ROTATION_OVERDUE_AFTER", default_value = "1h", value_parser = parse_rotation_threshold)]
    pub rotation_overdue_after: Duration,
    /// A version that has carried AWSPENDING without AWSCURRENT for longer than this is a stuck
    /// rotation (RotationHealthy=False, RotationStuck). 1s to 7d.
    #[arg(long, env = "MANAGED_SECRETS_ROTATION_STUCK_AFTER", default_value = "1h", value_parser = parse_rotation_threshold)]
    pub rotation_stuck_after: Duration,
}

/// What AWS is asked, how often, and how much of it is held in memory (the source cache).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "AWS reads")]
pub struct AwsArgs {
    /// Most AWS secret values held in memory at once.
    #[arg(long, env = "MANAGED_SECRETS_CACHE_MAX_ENTRIES", default_value = "10000", value_parser = clap::value_parser!(u32).range(1..))]
    pub cache_max_entries: u32,
    /// Check an identity's secrets in a region with one ListSecrets sweep (100 a page) instead of
    /// a DescribeSecret each, once this many of them are cached (0: never sweep).
    #[arg(long, env = "MANAGED_SECRETS_SWEEP_THRESHOLD", default_value_t = 100)]
    pub sweep_threshold: u32,
    /// Read every value again at least this often, whatever the metadata says.
    #[arg(long, env = "MANAGED_SECRETS_FULL_REREAD_INTERVAL", default_value = "24h", value_parser = parse_interval)]
    pub full_reread_interval: Duration,
    /// The share of AWS Secrets Manager's documented request quotas the operator allows itself
    /// (per API and region; 0.5 = half).
    #[arg(long, env = "MANAGED_SECRETS_AWS_QUOTA_SHARE", default_value_t = 0.5, value_parser = parse_share)]
    pub aws_quota_share: f64,
    /// Most bytes of AWS secret values held in memory at once (`64Mi`, `1Gi`, or bytes).
    #[arg(long, env = "MANAGED_SECRETS_CACHE_MAX_BYTES", default_value = "64Mi", value_parser = parse_bytes)]
    pub cache_max_bytes: usize,
}

/// The operator's pace against the Kubernetes API.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Kubernetes API")]
pub struct KubeArgs {
    /// Kubernetes API requests per second (sustained) the operator allows itself at most: it makes
    /// none at rest, three per new object (a read, two writes); an answer 429 from the API
    /// server's priority and fairness holds requests for its Retry-After and halves this for a
    /// while.
    #[arg(long, env = "MANAGED_SECRETS_KUBE_QPS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub kube_qps: u32,
    /// Kubernetes API requests the operator may make in a burst.
    #[arg(long, env = "MANAGED_SECRETS_KUBE_BURST", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub kube_burst: u32,
}

/// Leader election and the Lease (held either way: it names the installation).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Leader election")]
pub struct LeaderArgs {
    /// Leader election: only the replica holding the Lease reconciles (run two or more replicas for
    /// high availability). `false` for a single replica that needs no Lease.
    #[arg(long, env = "MANAGED_SECRETS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// The leader Lease's name.
    #[arg(
        long,
        env = "MANAGED_SECRETS_LEASE_NAME",
        default_value = "managed-secrets"
    )]
    pub lease_name: String,
    /// The leader Lease's namespace (default: the operator's namespace).
    #[arg(long, env = "MANAGED_SECRETS_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the lease lasts without renewal: a standby takes over this long after a leader dies
    /// (at once after a leader's SIGTERM).
    #[arg(long, env = "MANAGED_SECRETS_LEASE_DURATION", default_value = "15s", value_parser = parse_interval)]
    pub lease_duration: Duration,
    /// The leader renews its lease this long before it expires.
    #[arg(long, env = "MANAGED_SECRETS_LEASE_GRACE", default_value = "5s", value_parser = parse_interval)]
    pub lease_grace: Duration,
}

/// The event source: Secrets Manager events from an SQS queue.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Event-driven refresh")]
pub struct EventArgs {
    /// Event-driven refresh: the URL of an SQS queue an EventBridge rule feeds with Secrets Manager
    /// events. A rotation then reaches its Secrets within seconds; polling stays as the backstop.
    #[arg(long, env = "MANAGED_SECRETS_EVENTS_QUEUE_URL")]
    pub events_queue_url: Option<String>,
    /// While events flow, refreshes run at least this far apart (the spec's refreshInterval when
    /// the queue fails).
    #[arg(long, env = "MANAGED_SECRETS_EVENTS_BACKSTOP_INTERVAL", default_value = "30m", value_parser = parse_backstop)]
    pub events_backstop_interval: Duration,
    /// A received event comes back this long after it was received unless it was handled.
    #[arg(long, env = "MANAGED_SECRETS_EVENTS_VISIBILITY_TIMEOUT", default_value = "2m", value_parser = parse_visibility)]
    pub events_visibility_timeout: Duration,
    /// SQS long-poll wait (1s to 20s).
    #[arg(long, env = "MANAGED_SECRETS_EVENTS_WAIT", default_value = "20s", value_parser = parse_events_wait)]
    pub events_wait: Duration,
}

/// The validating admission webhook.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Admission webhook")]
pub struct WebhookArgs {
    /// Serve the validating admission webhook (HTTPS) on this address, e.g. `0.0.0.0:9443`;
    /// unset: no webhook (the controller still enforces everything).
    #[arg(long, env = "MANAGED_SECRETS_WEBHOOK_ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// The Service in front of the webhook (in the operator's namespace): the serving
    /// certificate is for its in-cluster names.
    #[arg(
        long,
        env = "MANAGED_SECRETS_WEBHOOK_SERVICE",
        default_value = "managed-secrets-webhook"
    )]
    pub webhook_service: String,
    /// The ValidatingWebhookConfiguration whose caBundle the operator keeps current (with
    /// `--webhook-cert-issuer operator`); empty: none.
    #[arg(
        long,
        env = "MANAGED_SECRETS_WEBHOOK_CONFIGURATION",
        default_value = "managed-secrets"
    )]
    pub webhook_configuration: String,
    /// The Secret (in the operator's namespace) holding the webhook's CA and serving certificate.
    #[arg(
        long,
        env = "MANAGED_SECRETS_WEBHOOK_CERT_SECRET",
        default_value = "managed-secrets-webhook-cert"
    )]
    pub webhook_cert_secret: String,
    /// `operator`: the operator makes its own CA and serving certificate in that Secret, renews
    /// them, and keeps the caBundle current; `external`: something else (cert-manager) writes the
    /// Secret and the caBundle, and the operator only serves what the Secret holds.
    #[arg(
        long,
        env = "MANAGED_SECRETS_WEBHOOK_CERT_ISSUER",
        value_enum,
        default_value = "operator"
    )]
    pub webhook_cert_issuer: CertIssuerArg,
    /// More names for the serving certificate (DNS names or IP addresses, comma-separated), e.g.
    /// for a `clientConfig.url`.
    #[arg(
        long,
        env = "MANAGED_SECRETS_WEBHOOK_CERT_HOSTS",
        value_delimiter = ','
    )]
    pub webhook_cert_hosts: Vec<String>,
    /// How long the operator's webhook CA is valid (renewed with a third left; 2h to 87600h, at
    /// least twice --webhook-cert-validity).
    #[arg(long, env = "MANAGED_SECRETS_WEBHOOK_CA_VALIDITY", default_value = "8760h", value_parser = parse_ca_validity)]
    pub webhook_ca_validity: Duration,
    /// How long a serving certificate is valid (renewed with a third left; 1h to 8760h).
    #[arg(long, env = "MANAGED_SECRETS_WEBHOOK_CERT_VALIDITY", default_value = "2160h", value_parser = parse_cert_validity)]
    pub webhook_cert_validity: Duration,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertIssuerArg {
    Operator,
    External,
}

/// A flag that does not fit with the others. The message names the flags.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--lease-grace must be shorter than --lease-duration")]
    LeaseGraceNotShorter,
    #[error("--events-visibility-timeout must be longer than --events-wait")]
    VisibilityNotLongerThanWait,
    #[error("{0} must be at least 1")]
    NotPositive(&'static str),
    #[error("--webhook-ca-validity must be at least twice --webhook-cert-validity")]
    WebhookCaTooShort,
    #[error("--webhook-cert-hosts {0:?} is neither an IP address nor a DNS name")]
    WebhookHost(String),
}

/// `run`'s flags checked together, in the types the operator runs with.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scope: ScopeArgs,
    pub operator: OperatorArgs,
    pub reconcile: ReconcileArgs,
    pub kube: KubeArgs,
    pub cache: CacheLimits,
    /// The share of AWS Secrets Manager's request quotas the operator allows itself (0 to 1).
    pub aws_quota_share: f64,
    pub lease: Lease,
    /// The event source, when a queue is configured.
    pub events: Option<EventQueue>,
    /// The admission webhook, when an address is given: where it listens, and its certificate.
    pub webhook: Option<(SocketAddr, crate::admission::keeper::Keeper)>,
}

/// The source cache's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_entries: NonZeroUsize,
    pub max_bytes: NonZeroUsize,
    /// 0: never sweep.
    pub sweep_threshold: usize,
    pub full_reread: Duration,
}

/// The Lease: the leader's with leader election, the installation's sign of life either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub election: bool,
    pub name: String,
    /// `--lease-namespace`, else the operator's namespace.
    pub namespace: String,
    pub duration: Duration,
    /// Shorter than `duration`.
    pub grace: Duration,
}

/// The SQS queue events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQueue {
    pub url: String,
    pub wait: Duration,
    /// Longer than `wait`.
    pub visibility: Duration,
    pub backstop: Duration,
}

impl RunArgs {
    /// Checks the flags together (each alone was checked while parsing).
    pub fn validate(self) -> Result<RunConfig, ConfigError> {
        let RunArgs {
            scope,
            operator,
            reconcile,
            aws,
            kube,
            leader,
            events,
            webhook,
        } = self;
        let webhook = webhook.validate(&operator.operator_namespace)?;
        if leader.lease_grace >= leader.lease_duration {
            return Err(ConfigError::LeaseGraceNotShorter);
        }
        let events = match events.events_queue_url {
            None => None,
            Some(_) if events.events_visibility_timeout <= events.events_wait => {
                return Err(ConfigError::VisibilityNotLongerThanWait);
            }
            Some(url) => Some(EventQueue {
                url,
                wait: events.events_wait,
                visibility: events.events_visibility_timeout,
                backstop: events.events_backstop_interval,
            }),
        };
        let cache = CacheLimits {
            max_entries: positive("--cache-max-entries", widen(aws.cache_max_entries))?,
            max_bytes: positive("--cache-max-bytes", aws.cache_max_bytes)?,
            sweep_threshold: widen(aws.sweep_threshold),
            full_reread: aws.full_reread_interval,
        };
        let lease = Lease {
            election: leader.leader_election,
            namespace: leader
                .lease_namespace
                .unwrap_or_else(|| operator.operator_namespace.clone()),
            name: leader.lease_name,
            duration: leader.lease_duration,
            grace: leader.lease_grace,
        };
        Ok(RunConfig {
            scope,
            operator,
            reconcile,
            kube,
            cache,
            aws_quota_share: aws.aws_quota_share,
            lease,
            events,
            webhook,
        })
    }
}

impl WebhookArgs {
    fn validate(
        self,
        namespace: &str,
    ) -> Result<Option<(SocketAddr, crate::admission::keeper::Keeper)>, ConfigError> {
        use crate::admission::keeper::{Issuer, Keeper};
        let Some(addr) = self.webhook_addr else {
            return Ok(None);
        };
        if self.webhook_ca_validity < self.webhook_cert_validity * 2 {
            return Err(ConfigError::WebhookCaTooShort);
        }
        if let Some(h) = self
            .webhook_cert_hosts
            .iter()
            .find(|h| !h.is_empty() && !crate::admission::valid_host(h))
        {
            return Err(ConfigError::WebhookHost(h.chars().take(100).collect()));
        }
        let keeper = Keeper {
            namespace: namespace.to_string(),
            secret: self.webhook_cert_secret,
            configuration: Some(self.webhook_configuration).filter(|c| !c.is_empty()),
            hosts: crate::admission::hosts(
                &self.webhook_service,
                namespace,
                &self.webhook_cert_hosts,
            ),
            lifetimes: crate::admission::certs::Lifetimes {
                ca: self.webhook_ca_validity,
                serving: self.webhook_cert_validity,
            },
            issuer: match self.webhook_cert_issuer {
                CertIssuerArg::Operator => Issuer::Operator,
                CertIssuerArg::External => Issuer::External,
            },
        };
        Ok(Some((addr, keeper)))
    }
}

/// A count from a flag (lossless wherever `usize` has 32 bits or more).
fn widen(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn positive(flag: &'static str, n: usize) -> Result<NonZeroUsize, ConfigError> {
    NonZeroUsize::new(n).ok_or(ConfigError::NotPositive(flag))
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    crate::schedule::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_debounce(s: &str) -> Result<Duration, String> {
    let d = parse_interval(s)?;
    crate::schedule::debounce(Some(s), d).map_err(|e| e.to_string())
}

fn parse_rotation_threshold(s: &str) -> Result<Duration, String> {
    parse_bounded(
        s,
        crate::rotation::MIN_THRESHOLD,
        crate::rotation::MAX_THRESHOLD,
        "a rotation threshold",
    )
}

/// A duration between `min` and `max` (both included).
fn parse_bounded(s: &str, min: Duration, max: Duration, what: &str) -> Result<Duration, String> {
    let d = parse_interval(s)?;
    if d < min || d > max {
        return Err(format!(
            "{s:?} is out of range for {what}: {}s to {}s",
            min.as_secs(),
            max.as_secs()
        ));
    }
    Ok(d)
}

fn parse_ca_validity(s: &str) -> Result<Duration, String> {
    let h = |n: u64| Duration::from_secs(n * 3600);
    parse_bounded(s, h(2), h(87_600), "the webhook CA's validity")
}

fn parse_cert_validity(s: &str) -> Result<Duration, String> {
    let h = |n: u64| Duration::from_secs(n * 3600);
    parse_bounded(s, h(1), h(8760), "a webhook serving certificate's validity")
}

/// SQS long polls wait 1 to 20 seconds.
fn parse_events_wait(s: &str) -> Result<Duration, String> {
    parse_bounded(
        s,
        Duration::from_secs(1),
        Duration::from_secs(20),
        "an SQS long poll",
    )
}

/// SQS visibility timeouts are at most 12 hours.
fn parse_visibility(s: &str) -> Result<Duration, String> {
    parse_bounded(
        s,
        Duration::from_secs(1),
        Duration::from_secs(12 * 3600),
        "an SQS visibility timeout",
    )
}

/// The backstop is a refresh interval: at most the longest refreshInterval (24h).
fn parse_backstop(s: &str) -> Result<Duration, String> {
    parse_bounded(
        s,
        Duration::from_secs(1),
        Duration::from_secs(24 * 3600),
        "the backstop interval",
    )
}

fn parse_share(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0 && *v <= 1.0)
        .ok_or_else(|| format!("{s:?} is not a share between 0 (excluded) and 1"))
}

/// `1024`, `64Ki`, `64Mi`, `1Gi`.
fn parse_bytes(s: &str) -> Result<usize, String> {
    let (num, mult) = match s {
        x if x.ends_with("Ki") => (&x[..x.len() - 2], 1usize << 10),
        x if x.ends_with("Mi") => (&x[..x.len() - 2], 1 << 20),
        x if x.ends_with("Gi") => (&x[..x.len() - 2], 1 << 30),
        x => (x, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size like 64Mi, 1Gi or a number of bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_validated_with_clear_errors() {
        let c = Cli::try_parse_from([
            "managed-secrets",
            "run",
            "--concurrency",
            "8",
            "--min-refresh-interval",
            "1m",
        ])
        .unwrap();
        match c.command {
            Command::Run(a) => {
                assert_eq!(a.reconcile.concurrency, 8);
                assert_eq!(a.reconcile.min_refresh_interval, Duration::from_secs(60));
                assert_eq!(a.operator.log_format, LogFormat::Text);
                assert_eq!(
                    a.scope.access_policy,
                    AccessPolicyArg::Enforce,
                    "secure by default"
                );
                assert!(a.scope.namespaces.is_empty());
            }
            _ => panic!("run"),
        }
        let e = Cli::try_parse_from(["managed-secrets", "run", "--concurrency", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--concurrency"), "{e}");
        let e = Cli::try_parse_from(["managed-secrets", "run", "--min-refresh-interval", "soon"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--min-refresh-interval"), "{e}");
        assert!(Cli::try_parse_from(["managed-secrets", "run", "--unknown"]).is_err());
        let e = Cli::try_parse_from(["managed-secrets", "run", "--rollout-debounce", "1h"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--rollout-debounce") && e.contains("maximum of 10m"),
            "{e}"
        );
        let c =
            Cli::try_parse_from(["managed-secrets", "run", "--cache-max-bytes", "1Gi"]).unwrap();
        match c.command {
            Command::Run(a) => {
                assert_eq!(a.aws.cache_max_bytes, 1 << 30);
                assert_eq!(a.operator.shutdown_timeout, Duration::from_secs(20));
            }
            _ => panic!("run"),
        }
        assert!(
            Cli::try_parse_from(["managed-secrets", "run", "--cache-max-bytes", "lots"]).is_err()
        );
        for (flag, bad) in [
            ("--events-wait", "0s"),
            ("--events-wait", "21s"),
            ("--events-visibility-timeout", "13h"),
            ("--events-backstop-interval", "25h"),
        ] {
            let e = Cli::try_parse_from(["managed-secrets", "run", flag, bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains(flag) && e.contains("out of range"), "{e}");
        }
    }

    fn run_args(flags: &[&str]) -> RunArgs {
        let argv = ["managed-secrets", "run"].iter().chain(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => *a,
            _ => panic!("run"),
        }
    }

    #[test]
    fn the_lease_grace_must_be_shorter_than_the_lease_duration() {
        for grace in ["15s", "20s"] {
            let e = run_args(&["--lease-duration", "15s", "--lease-grace", grace])
                .validate()
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                "--lease-grace must be shorter than --lease-duration"
            );
        }
        let c = run_args(&["--lease-duration", "15s", "--lease-grace", "14s"])
            .validate()
            .unwrap();
        assert_eq!(c.lease.grace, Duration::from_secs(14));
    }

    #[test]
    fn with_a_queue_the_visibility_timeout_must_be_longer_than_the_long_poll() {
        for visibility in ["20s", "10s"] {
            let e = run_args(&[
                "--events-queue-url",
                "https://sqs.example/q",
                "--events-wait",
                "20s",
                "--events-visibility-timeout",
                visibility,
            ])
            .validate()
            .unwrap_err();
            assert_eq!(
                e.to_string(),
                "--events-visibility-timeout must be longer than --events-wait"
            );
        }
        // Without a queue there is no event source, and its flags are not checked together.
        let c = run_args(&["--events-wait", "20s", "--events-visibility-timeout", "10s"])
            .validate()
            .unwrap();
        assert_eq!(c.events, None);
    }

    #[test]
    fn the_lease_is_checked_before_the_event_source() {
        let e = run_args(&[
            "--lease-grace",
            "1m",
            "--events-queue-url",
            "https://sqs.example/q",
            "--events-visibility-timeout",
            "1s",
        ])
        .validate()
        .unwrap_err();
        assert_eq!(e, ConfigError::LeaseGraceNotShorter);
    }

    #[test]
    fn a_zero_cache_limit_is_refused_naming_its_flag() {
        let mut a = run_args(&[]);
        a.aws.cache_max_entries = 0;
        assert_eq!(
            a.validate().unwrap_err().to_string(),
            "--cache-max-entries must be at least 1"
        );
        let mut a = run_args(&[]);
        a.aws.cache_max_bytes = 0;
        assert_eq!(
            a.validate().unwrap_err().to_string(),
            "--cache-max-bytes must be at least 1"
        );
    }

    #[test]
    fn validated_flags_come_out_in_the_types_the_operator_runs_with() {
        let c = run_args(&[
            "--operator-namespace",
            "ops",
            "--cache-max-entries",
            "7",
            "--cache-max-bytes",
            "1Ki",
            "--sweep-threshold",
            "0",
            "--events-queue-url",
            "https://sqs.example/q",
            "--events-visibility-timeout",
            "21s",
        ])
        .validate()
        .unwrap();
        assert_eq!(
            c.cache,
            CacheLimits {
                max_entries: NonZeroUsize::new(7).unwrap(),
                max_bytes: NonZeroUsize::new(1024).unwrap(),
                sweep_threshold: 0,
                full_reread: Duration::from_secs(24 * 3600),
            }
        );
        assert_eq!(
            c.lease,
            Lease {
                election: true,
                name: "managed-secrets".into(),
                namespace: "ops".into(),
                duration: Duration::from_secs(15),
                grace: Duration::from_secs(5),
            },
            "the Lease lives in the operator's namespace unless told otherwise"
        );
        assert_eq!(
            c.events,
            Some(EventQueue {
                url: "https://sqs.example/q".into(),
                wait: Duration::from_secs(20),
                visibility: Duration::from_secs(21),
                backstop: Duration::from_secs(30 * 60),
            })
        );
        let c = run_args(&["--operator-namespace", "ops", "--lease-namespace", "leases"])
            .validate()
            .unwrap();
        assert_eq!(c.lease.namespace, "leases");
        assert!(c.webhook.is_none(), "no webhook without --webhook-addr");
    }

    #[test]
    fn the_webhook_flags_make_its_certificate_keeper() {
        let c = run_args(&[
            "--operator-namespace",
            "ops",
            "--webhook-addr",
            "0.0.0.0:9443",
            "--webhook-cert-hosts",
            "10.0.0.1",
            "--webhook-cert-validity",
            "24h",
            "--webhook-ca-validity",
            "48h",
        ])
        .validate()
        .unwrap();
        let (addr, k) = c.webhook.unwrap();
        assert_eq!(addr, "0.0.0.0:9443".parse().unwrap());
        assert_eq!(k.namespace, "ops");
        assert_eq!(k.secret, "managed-secrets-webhook-cert");
        assert_eq!(k.configuration.as_deref(), Some("managed-secrets"));
        assert_eq!(k.issuer, crate::admission::keeper::Issuer::Operator);
        assert!(k.hosts.contains("managed-secrets-webhook.ops.svc"));
        assert!(k.hosts.contains("10.0.0.1"));
        assert_eq!(k.lifetimes.serving, Duration::from_secs(24 * 3600));
        let e = run_args(&[
            "--webhook-addr",
            "0.0.0.0:9443",
            "--webhook-cert-validity",
            "48h",
            "--webhook-ca-validity",
            "72h",
        ])
        .validate()
        .unwrap_err();
        assert_eq!(e, ConfigError::WebhookCaTooShort);
        let e = run_args(&[
            "--webhook-addr",
            "0.0.0.0:9443",
            "--webhook-cert-hosts",
            "a b",
        ])
        .validate()
        .unwrap_err();
        assert_eq!(e, ConfigError::WebhookHost("a b".into()));
        let e = Cli::try_parse_from(["managed-secrets", "run", "--webhook-cert-validity", "30m"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
