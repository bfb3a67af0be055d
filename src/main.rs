use anyhow::Context as _;
use clap::Parser;
use managed_secrets::config::{AccessPolicyArg, CheckArgs, Cli, Command, RenderArgs, RunArgs};
use managed_secrets::health::Health;
use managed_secrets::source::cache::{CachedSource, Limits};
use managed_secrets::{
    cmd, controller, crd, http, leader, lifecycle, metrics::Metrics, permissions, source, telemetry,
};
use std::sync::Arc;
use tracing::Instrument as _;

/// Requests per second of the Lease's own client (a renewal every few seconds, and its watch).
const LEASE_QPS: u32 = 5;

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
        Command::Check(a) => std::process::exit(check(&a)),
        Command::Render(a) => std::process::exit(render(&a)),
        Command::ReleaseFinalizers(a) => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
            let scope = if a.all {
                cmd::release::Scope::All
            } else {
                cmd::release::Scope::Terminating
            };
            let lines = cmd::release::run(client, a.namespace.as_deref(), scope, a.dry_run).await?;
            if lines.is_empty() {
                println!("no ManagedSecret to release");
            }
            for l in lines {
                println!("{l}");
            }
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

/// `check`: every finding on stdout, a summary on stderr; 1 when anything was found.
fn check(a: &CheckArgs) -> i32 {
    let checker = match cmd::check::Checker::new(a.min_refresh_interval) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    let files = match cmd::check::files(&a.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut summary = cmd::check::Summary::default();
    for f in &files {
        match std::fs::read_to_string(f) {
            Ok(text) => checker.check_text(&f.display().to_string(), &text, &mut summary),
            Err(e) => summary.findings.push(cmd::check::Finding {
                file: f.display().to_string(),
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    for finding in &summary.findings {
        println!("{finding}");
    }
    eprintln!(
        "checked {} ManagedSecret(s) and {} SecretAccessPolicy(ies) in {} file(s) ({} other document(s) skipped): {} problem(s)",
        summary.managed_secrets,
        summary.policies,
        files.len(),
        summary.skipped,
        summary.findings.len()
    );
    i32::from(!summary.findings.is_empty())
}

/// `render`: the Secret's keys on stdout; an error (never echoing the value) and 1 otherwise.
fn render(a: &RenderArgs) -> i32 {
    let run = || -> anyhow::Result<String> {
        let text = std::fs::read_to_string(&a.file)
            .with_context(|| format!("reading {}", a.file.display()))?;
        let mut found = cmd::preview::managed_secrets(&text, a.name.as_deref())?;
        let ms = match found.len() {
            1 => found.remove(0),
            0 => anyhow::bail!(
                "{} holds no ManagedSecret{}",
                a.file.display(),
                a.name
                    .as_ref()
                    .map(|n| format!(" named {n}"))
                    .unwrap_or_default()
            ),
            n => anyhow::bail!(
                "{} holds {n} ManagedSecrets: pick one with --name",
                a.file.display()
            ),
        };
        let bytes = std::fs::read(&a.value_file)
            .with_context(|| format!("reading {}", a.value_file.display()))?;
        let value = if a.binary {
            managed_secrets::render::SecretValue::Binary(bytes)
        } else {
            managed_secrets::render::SecretValue::String(String::from_utf8(bytes).map_err(
                |_| {
                    anyhow::anyhow!(
                        "{} is not UTF-8: use --binary for a SecretBinary",
                        a.value_file.display()
                    )
                },
            )?)
        };
        let data = cmd::preview::render(&ms, &value, a.min_refresh_interval)
            .map_err(|e| anyhow::anyhow!("{}: {e}", e.reason()))?;
        Ok(cmd::preview::describe(&ms, &data, a.show_values))
    };
    match run() {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Runs until SIGTERM/SIGINT (exit 0) or until the controller stops by itself (exit 1: the pod
/// restarts instead of looking healthy while nothing syncs).
async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    // The Lease is held with or without leader election (it names the installation).
    if args.lease_grace >= args.lease_duration {
        anyhow::bail!("--lease-grace must be shorter than --lease-duration");
    }
    let leadership = if args.leader_election {
        leader::Leadership::new()
    } else {
        leader::Leadership::alone()
    };
    let src_gate = leadership.flag();

    let client =
        managed_secrets::k8s::client::client(args.kube_qps, args.kube_burst, metrics.clone())
            .await
            .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
    // The RBAC check runs beside everything else; readiness waits for its answer.
    let rbac = tokio::spawn(
        managed_secrets::k8s::access::verify(
            client.clone(),
            permissions::checks(&permissions::Deployment {
                namespaces: args.namespaces.clone(),
                access_policies: matches!(args.access_policy, AccessPolicyArg::Enforce),
                leader_election: args.leader_election,
                operator_namespace: args.operator_namespace.clone(),
                hash_key_secret: args.hash_key_secret.clone(),
                lease_namespace: args
                    .lease_namespace
                    .clone()
                    .unwrap_or_else(|| args.operator_namespace.clone()),
                lease_name: args.lease_name.clone(),
            }),
            health.clone(),
            metrics.clone(),
            std::future::pending::<()>(),
        )
        .instrument(tracing::info_span!("rbac_check")),
    );
    let tokens: Arc<dyn source::identity::TokenIssuer> =
        Arc::new(managed_secrets::k8s::tokens::KubeTokens {
            client: client.clone(),
        });
    let backend = source::aws::AwsBackend::from_env(metrics.clone(), Some(tokens))
        .await
        .with_quota_share(args.aws_quota_share);
    let default_region = backend.default_region();
    let notifications = match &args.events_queue_url {
        Some(url) => {
            if args.events_visibility_timeout <= args.events_wait {
                anyhow::bail!("--events-visibility-timeout must be longer than --events-wait");
            }
            let queue = managed_secrets::notifications::queue::SqsQueue::new(
                backend.sdk_config(),
                url,
                args.events_wait,
            );
            Some(controller::notifications::NotificationSettings {
                queue: Arc::new(queue),
                wait: args.events_wait,
                visibility: args.events_visibility_timeout,
                backstop: args.events_backstop_interval,
            })
        }
        None => None,
    };
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
            .with_metrics(metrics.clone())
            .with_gate(src_gate),
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
    let lease_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| args.operator_namespace.clone());
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
        leadership: leadership.clone(),
        notifications,
        installation: managed_secrets::claim::installation(&lease_namespace, &args.lease_name),
        ..Default::default()
    };
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("managed-secrets-{:08x}", rand::random::<u32>()));
    // The Lease has a client of its own: a hold after a 429 on the controller's requests (`Pace`)
    // must not delay a renewal past the Lease's expiry.
    let lease_client = managed_secrets::k8s::client::lease_client(LEASE_QPS, metrics.clone())
        .await
        .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
    let election = tokio::spawn(leader::run(
        lease_client,
        leader::Settings {
            enabled: args.leader_election,
            lease_name: args.lease_name.clone(),
            lease_namespace,
            duration: args.lease_duration,
            grace: args.lease_grace,
            identity,
        },
        leadership,
        metrics.clone(),
        {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.changed().await;
            }
        },
    ));
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
    rbac.abort();
    // The lease goes back at once, so that a standby takes over without waiting for it to expire.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(6), election).await;
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
