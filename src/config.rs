//! Command line and environment, validated once at start-up into strong types.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
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

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
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
    /// How long SIGTERM waits for in-flight reconciles before the process exits anyway (keep it
    /// under the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "MANAGED_SECRETS_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_interval)]
    pub shutdown_timeout: Duration,
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
    /// Kubernetes API requests per second (sustained) the operator allows itself at most: it makes
    /// none at rest, three per new object (a read, two writes); an answer 429 from the API
    /// server's priority and fairness holds requests for its Retry-After and halves this for a
    /// while.
    #[arg(long, env = "MANAGED_SECRETS_KUBE_QPS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub kube_qps: u32,
    /// Kubernetes API requests the operator may make in a burst.
    #[arg(long, env = "MANAGED_SECRETS_KUBE_BURST", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub kube_burst: u32,
    /// Leader election: only the replica holding the Lease reconciles (run two or more replicas for
    /// high availability). `false` for a single replica that needs no Lease.
    #[arg(long, env = "MANAGED_SECRETS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
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
    /// Most bytes of AWS secret values held in memory at once (`64Mi`, `1Gi`, or bytes).
    #[arg(long, env = "MANAGED_SECRETS_CACHE_MAX_BYTES", default_value = "64Mi", value_parser = parse_bytes)]
    pub cache_max_bytes: usize,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    crate::schedule::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_debounce(s: &str) -> Result<Duration, String> {
    let d = parse_interval(s)?;
    crate::schedule::debounce(Some(s), d).map_err(|e| e.to_string())
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
                assert_eq!(a.concurrency, 8);
                assert_eq!(a.min_refresh_interval, Duration::from_secs(60));
                assert_eq!(a.log_format, LogFormat::Text);
                assert_eq!(
                    a.access_policy,
                    AccessPolicyArg::Enforce,
                    "secure by default"
                );
                assert!(a.namespaces.is_empty());
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
                assert_eq!(a.cache_max_bytes, 1 << 30);
                assert_eq!(a.shutdown_timeout, Duration::from_secs(20));
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
}
