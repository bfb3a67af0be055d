use anyhow::Context as _;
use clap::Parser;
use managed_secrets::config::{Cli, Command};
use managed_secrets::{controller, crd, http, metrics::Metrics, source, telemetry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    managed_secrets::install_crypto_provider();
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Crdgen => {
            print!("{}", crd::crd_yaml());
            return Ok(());
        }
        Command::Run(args) => args,
    };
    telemetry::init(args.log_format);
    let metrics = Arc::new(Metrics::default());
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
    let backend = source::aws::AwsBackend::from_env(metrics.clone()).await;
    let src: source::DynSourceRef = Arc::new(source::cache::CachedSource::new(backend));
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", args.metrics_addr))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let router = http::router(http::Health {
        ready: ready.clone(),
        metrics: metrics.clone(),
    });
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = http_stop.changed().await;
            })
            .await
    });
    let settings = controller::Settings {
        namespace: args.namespace.clone(),
        concurrency: args.concurrency,
        min_refresh: args.min_refresh_interval,
        rollout_debounce: args.rollout_debounce,
        ..Default::default()
    };
    tracing::info!(namespace = ?settings.namespace, metrics = %args.metrics_addr, "managed-secrets starting");
    ready.store(true, Ordering::SeqCst);
    let mut ctrl_stop = stop_rx.clone();
    let shutdown = async move {
        let _ = ctrl_stop.changed().await;
    };
    let ctrl = tokio::spawn(controller::run(client, src, metrics, settings, shutdown));
    shutdown_signal().await;
    tracing::info!("shutting down");
    ready.store(false, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let _ = ctrl.await;
    let _ = server.await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
