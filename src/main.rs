use anyhow::Context as _;
use clap::Parser;
use managed_secrets::config::{
    AccessPolicyArg, CheckArgs, Cli, Command, RenderArgs, RunArgs, RunConfig,
};
use managed_secrets::health::Health;
use managed_secrets::source::cache::{CachedSource, Limits};
use managed_secrets::{
    admission, cmd, controller, crd, http, leader, lifecycle, metrics::Metrics, permissions,
    source, telemetry,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
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
    telemetry::init(args.operator.log_format);
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
    let checker = if a.policies.is_empty() {
        checker
    } else {
        match access(a, &checker, &mut summary) {
            Ok(access) => checker.with_access(access),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
    };
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

/// What `check --policies` decides with: the policies (their own problems are findings), the
/// namespace labels, the defaults.
fn access(
    a: &CheckArgs,
    checker: &cmd::check::Checker,
    summary: &mut cmd::check::Summary,
) -> Result<cmd::check::Access, String> {
    let mut texts = vec![];
    for f in cmd::check::files(&a.policies).map_err(|e| e.to_string())? {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        texts.push((f.display().to_string(), text));
    }
    let (policies, found) = cmd::check::policies_in(checker, &texts);
    summary.findings.extend(found.findings);
    Ok(cmd::check::Access {
        policies,
        namespaces: cmd::check::namespace_labels(&a.namespace_labels)?,
        default_namespace: a.namespace.clone(),
        default_region: a.default_region.clone(),
    })
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
/// restarts instead of looking healthy while nothing syncs). Logging is already set up.
async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let config = args.validate()?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    // The Lease is held with or without leader election (it names the installation).
    let leadership = if config.lease.election {
        leader::Leadership::new()
    } else {
        leader::Leadership::alone()
    };
    let connected = connect(&config, &leadership, &metrics, &health).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = serve(&config, &health, &metrics, stopped(&stop_rx)).await?;
    let election = elect(&config, leadership, &metrics, stopped(&stop_rx)).await?;
    let settings = connected.settings;
    let grants = controller::Grants::for_settings(&settings);
    let webhook = admit(
        &config,
        &connected.client,
        &settings,
        &grants,
        (&health, &metrics),
        drained(stopped(&stop_rx)),
    )
    .await?;
    tracing::info!(namespaces = ?settings.namespaces, access_policy = ?settings.access_policy, metrics = %config.operator.metrics_addr, "managed-secrets starting");
    let span = tracing::info_span!("controller", installation = %settings.installation);
    let ctrl = tokio::spawn(
        controller::run(
            connected.client,
            connected.source,
            metrics,
            health.clone(),
            settings,
            grants,
            stopped(&stop_rx),
        )
        .instrument(span),
    );
    let stop = move || {
        let _ = stop_tx.send(true);
    };
    let grace = config.operator.shutdown_timeout;
    let code = lifecycle::supervise(ctrl, shutdown_signal(), stop, &health, grace).await;
    wind_down(connected.rbac, election, server).await;
    // The webhook answers until the process exits: the API server may call it until its
    // endpoints are gone.
    drop(webhook);
    Ok(code)
}

/// `stop`, then as long as the API server may take to stop calling a webhook on a stopped pod.
async fn drained(stop: impl Future<Output = ()> + Send + 'static) {
    stop.await;
    tokio::time::sleep(Duration::from_secs(15)).await;
}

/// Starts the admission webhook (every replica serves it) when --webhook-addr is set.
async fn admit(
    config: &RunConfig,
    client: &kube::Client,
    controller: &controller::Settings,
    grants: &controller::Grants,
    (health, metrics): (&Arc<Health>, &Arc<Metrics>),
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some((addr, keeper)) = config.webhook.clone() else {
        return Ok(None);
    };
    let settings = admission::Settings {
        addr,
        keeper,
        min_refresh: config.reconcile.min_refresh_interval,
        default_region: controller.default_region.clone(),
    };
    let span = tracing::info_span!("webhook", %addr);
    let (task, _) = admission::start(
        settings,
        client.clone(),
        grants.view(),
        health.clone(),
        metrics.clone(),
        stop,
    )
    .instrument(span)
    .await
    .with_context(|| format!("binding --webhook-addr {addr}"))?;
    Ok(Some(task))
}

/// What the controller runs against once connected, and the RBAC check started beside it.
struct Connected {
    client: kube::Client,
    source: source::DynSourceRef,
    settings: controller::Settings,
    rbac: JoinHandle<()>,
}

/// Connects to Kubernetes and AWS, starts the RBAC check, reads (or creates) the hash key, and
/// puts the source cache in front of AWS.
async fn connect(
    config: &RunConfig,
    leadership: &leader::Leadership,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
) -> anyhow::Result<Connected> {
    let client = managed_secrets::k8s::client::client(
        config.kube.kube_qps,
        config.kube.kube_burst,
        metrics.clone(),
    )
    .await
    .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
    let rbac = spawn_rbac_check(config, &client, health, metrics);
    let tokens: Arc<dyn source::identity::TokenIssuer> =
        Arc::new(managed_secrets::k8s::tokens::KubeTokens {
            client: client.clone(),
        });
    let backend = source::aws::AwsBackend::from_env(metrics.clone(), Some(tokens))
        .await
        .with_quota_share(config.aws_quota_share);
    let default_region = backend.default_region();
    let notifications = config.events.as_ref().map(|e| {
        let queue = managed_secrets::notifications::queue::SqsQueue::new(
            backend.sdk_config(),
            &e.url,
            e.wait,
        );
        controller::notifications::NotificationSettings {
            queue: Arc::new(queue),
            wait: e.wait,
            visibility: e.visibility,
            backstop: e.backstop,
        }
    });
    let hash_key = load_hash_key(config, &client).await?;
    let source: source::DynSourceRef = Arc::new(
        CachedSource::new(backend)
            .with_limits(Limits {
                max_entries: config.cache.max_entries.get(),
                max_bytes: config.cache.max_bytes.get(),
                sweep_threshold: config.cache.sweep_threshold,
                full_reread: config.cache.full_reread,
            })
            .with_metrics(metrics.clone())
            .with_gate(leadership.flag()),
    );
    Ok(Connected {
        client,
        source,
        settings: controller_settings(config, leadership, default_region, notifications, hash_key),
        rbac,
    })
}

/// Starts the RBAC check: it runs beside everything else, and readiness waits for its answer.
fn spawn_rbac_check(
    config: &RunConfig,
    client: &kube::Client,
    health: &Arc<Health>,
    metrics: &Arc<Metrics>,
) -> JoinHandle<()> {
    let checks = permissions::checks(&permissions::Deployment {
        namespaces: config.scope.namespaces.clone(),
        access_policies: matches!(config.scope.access_policy, AccessPolicyArg::Enforce),
        leader_election: config.lease.election,
        operator_namespace: config.operator.operator_namespace.clone(),
        hash_key_secret: config.operator.hash_key_secret.clone(),
        lease_namespace: config.lease.namespace.clone(),
        lease_name: config.lease.name.clone(),
        webhook: config
            .webhook
            .as_ref()
            .map(|(_, k)| permissions::WebhookNames {
                secret: k.secret.clone(),
                configuration: k.configuration.clone().unwrap_or_default(),
                issues: k.issuer == admission::keeper::Issuer::Operator,
            }),
    });
    let span = tracing::info_span!("rbac_check", checks = checks.len());
    tokio::spawn(
        managed_secrets::k8s::access::verify(
            client.clone(),
            checks,
            health.clone(),
            metrics.clone(),
            std::future::pending::<()>(),
        )
        .instrument(span),
    )
}

/// The key of status.dataHash, from its Secret in the operator's namespace (created if missing).
async fn load_hash_key(config: &RunConfig, client: &kube::Client) -> anyhow::Result<Vec<u8>> {
    let (namespace, name) = (
        &config.operator.operator_namespace,
        &config.operator.hash_key_secret,
    );
    managed_secrets::k8s::hash_key::load_or_create(client, namespace, name)
        .await
        .with_context(|| {
            format!(
                "reading or creating the hash key Secret {namespace}/{name} (--operator-namespace, --hash-key-secret)"
            )
        })
}

/// The controller's settings: the flags, and what `connect` found.
fn controller_settings(
    config: &RunConfig,
    leadership: &leader::Leadership,
    default_region: Option<String>,
    notifications: Option<controller::notifications::NotificationSettings>,
    hash_key: Vec<u8>,
) -> controller::Settings {
    controller::Settings {
        namespaces: config.scope.namespaces.clone(),
        concurrency: config.reconcile.concurrency,
        min_refresh: config.reconcile.min_refresh_interval,
        rollout_debounce: config.reconcile.rollout_debounce,
        rotation: managed_secrets::rotation::Thresholds {
            overdue_after: config.reconcile.rotation_overdue_after,
            stuck_after: config.reconcile.rotation_stuck_after,
        },
        access_policy: match config.scope.access_policy {
            AccessPolicyArg::Enforce => controller::AccessPolicy::Enforce,
            AccessPolicyArg::Off => controller::AccessPolicy::Off,
        },
        default_region,
        hash_key: controller::HashKey(Arc::from(hash_key)),
        leadership: leadership.clone(),
        notifications,
        installation: managed_secrets::claim::installation(
            &config.lease.namespace,
            &config.lease.name,
        ),
        ..Default::default()
    }
}

/// Binds --metrics-addr and serves /healthz, /readyz and /metrics until `stop`.
async fn serve(
    config: &RunConfig,
    health: &Arc<Health>,
    metrics: &Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let addr = config.operator.metrics_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-addr {addr}"))?;
    let router = http::router(health.clone(), metrics.clone());
    let serving = async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
    };
    let span = tracing::info_span!("http_server", %addr);
    Ok(tokio::spawn(serving.instrument(span)))
}

/// Takes part in leader election (without it, holds the Lease all the same) until `stop`, then
/// gives the Lease back.
async fn elect(
    config: &RunConfig,
    leadership: leader::Leadership,
    metrics: &Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JoinHandle<()>> {
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("managed-secrets-{:08x}", rand::random::<u32>()));
    // The Lease has a client of its own: a hold after a 429 on the controller's requests (`Pace`)
    // must not delay a renewal past the Lease's expiry.
    let lease_client = managed_secrets::k8s::client::lease_client(LEASE_QPS, metrics.clone())
        .await
        .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
    let settings = leader::Settings {
        enabled: config.lease.election,
        lease_name: config.lease.name.clone(),
        lease_namespace: config.lease.namespace.clone(),
        duration: config.lease.duration,
        grace: config.lease.grace,
        identity,
    };
    let lease = managed_secrets::claim::installation(&config.lease.namespace, &config.lease.name);
    let span = tracing::info_span!("leader_election", %lease, enabled = config.lease.election);
    Ok(tokio::spawn(
        leader::run(lease_client, settings, leadership, metrics.clone(), stop).instrument(span),
    ))
}

/// Resolves once `stop` is sent (or its sender is gone).
fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync + 'static {
    let mut stop = stop.clone();
    async move {
        let _ = stop.changed().await;
    }
}

/// After the controller: the RBAC check ends, the Lease goes back at once (so that a standby
/// takes over without waiting for it to expire), the HTTP server finishes its answers.
async fn wind_down(
    rbac: JoinHandle<()>,
    election: JoinHandle<()>,
    server: JoinHandle<std::io::Result<()>>,
) {
    rbac.abort();
    let _ = tokio::time::timeout(Duration::from_secs(6), election).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
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
