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
    Run(RunArgs),
    /// Print the ManagedSecret CustomResourceDefinition as YAML.
    Crdgen,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Watch ManagedSecrets in this namespace only (default: all namespaces).
    #[arg(long, env = "MANAGED_SECRETS_NAMESPACE")]
    pub namespace: Option<String>,
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
    /// ManagedSecrets reconciled at once.
    #[arg(long, env = "MANAGED_SECRETS_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Smallest refreshInterval a ManagedSecret may ask for.
    #[arg(long, env = "MANAGED_SECRETS_MIN_REFRESH_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub min_refresh_interval: Duration,
    /// How long a rollout waits after a new version, so rotations in that window make one rollout
    /// (a ManagedSecret's rollout.debounce overrides it).
    #[arg(long, env = "MANAGED_SECRETS_ROLLOUT_DEBOUNCE", default_value = "5s", value_parser = parse_interval)]
    pub rollout_debounce: Duration,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    crate::schedule::parse_duration(s).map_err(|e| e.to_string())
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
    }
}
