use anyhow::Context as _;
use clap::Parser;
use managed_secrets::config::{AccessPolicyArg, Cli, Command, RunArgs};
use managed_secrets::health::Health;
use managed_secrets::source::cache::{CachedSource, Limits};
use managed_secrets::{controller, crd, http, lifecycle, metrics::Metrics, source, telemetry};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    managed_secrets::install_crypto_provider();
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Crdgen => {
            let docs: Vec<String> = crd::all_crds().into_iter().map(|(_, y)| y).collect();
            print!("{}", docs.join("---\n"));
            return Ok(());
        }
        Command::Run(args) => args,
    };
    telemetry::init(args.log_format);
    let code = match run(*args).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "managed-secrets failed to start");
            1
        }
    };
    // Exit now: a hung connection or a blocking task must not keep a stopped operator alive.
    std::process::exit(code);
}

/// Runs until SIGTERM/SIGINT (exit 0) or until the controller stops by itself (exit 1: the pod
/// restarts instead of looking healthy while nothing syncs).
async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let client =
        managed_secrets::k8s::client::client(args.kube_qps, args.kube_burst, metrics.clone())
            .await
            .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
    let tokens: Arc<dyn source::identity::TokenIssuer> =
        Arc::new(managed_secrets::k8s::tokens::KubeTokens {
            client: client.clone(),
        });
    let backend = source::aws::AwsBackend::from_env(metrics.clone(), Some(tokens))
        .await
        .with_quota_share(args.aws_quota_share);
    let default_region = backend.default_region();
    let hash_key = managed_secrets::k8s::hash_key::load_or_create(
        &client,
        &args.operator_namespace,
        &args.hash_key_secret,
    )
    .await
    .with_context(|| {
        format!(
            "reading or creating the hash key Secret {}/{} (--operator-namespace, --hash-key-secret)",
            args.operator_namespace, args.hash_key_secret
        )
    })?;
    let src: source::DynSourceRef = Arc::new(
        CachedSource::new(backend)
            .with_limits(Limits {
                max_entries: args.cache_max_entries as usize,
                max_bytes: args.cache_max_bytes,
                sweep_threshold: args.sweep_threshold as usize,
                full_reread: args.full_reread_interval,
            })
            .with_metrics(metrics.clone()),
    );
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", args.metrics_addr))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let router = http::router(health.clone(), metrics.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = http_stop.changed().await;
            })
            .await
    });
    let settings = controller::Settings {
        namespaces: args.namespaces.clone(),
        concurrency: args.concurrency,
        min_refresh: args.min_refresh_interval,
        rollout_debounce: args.rollout_debounce,
        access_policy: match args.access_policy {
            AccessPolicyArg::Enforce => controller::AccessPolicy::Enforce,
            AccessPolicyArg::Off => controller::AccessPolicy::Off,
        },
        default_region,
        hash_key: controller::HashKey(Arc::from(hash_key)),
        ..Default::default()
    };
    tracing::info!(namespaces = ?settings.namespaces, access_policy = ?settings.access_policy, metrics = %args.metrics_addr, "managed-secrets starting");
    let mut ctrl_stop = stop_rx.clone();
    let shutdown = async move {
        let _ = ctrl_stop.changed().await;
    };
    let ctrl = tokio::spawn(controller::run(
        client,
        src,
        metrics,
        health.clone(),
        settings,
        shutdown,
    ));
    let code = lifecycle::supervise(
        ctrl,
        shutdown_signal(),
        move || {
            let _ = stop_tx.send(true);
        },
        &health,
        args.shutdown_timeout,
    )
    .await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
    Ok(code)
}

async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
