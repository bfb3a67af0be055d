//! What triggers reconciles: one pipeline per watched scope (all namespaces, or each listed one)
//! with ManagedSecret and Secret watches; with access policies enforced, the SecretAccessPolicy
//! and Namespace watches that re-evaluate ManagedSecrets when a grant or a namespace's labels
//! change. Watch failures are reported here (a 403 loudly) and readiness follows the initial lists.

use super::policies::{self, Change};
use super::{error_policy, reconcile, sync_relevant, uid, Context};
use crate::crd::{ManagedSecret, FIELD_MANAGER, MANAGED_BY_LABEL};
use crate::health::Health;
use crate::metrics::Metrics;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::{debug, error, info, warn};

type Shutdown = Shared<BoxFuture<'static, ()>>;

/// The readiness key of a watched kind in a scope.
pub(super) fn kind_key(kind: &str, scope: &Option<String>) -> String {
    match scope {
        Some(ns) => format!("{kind} in {ns}"),
        None => kind.to_string(),
    }
}

/// Logs watch failures (a 403 loudly, naming the permission), counts them, and marks a kind as
/// listed once its initial list succeeded.
pub(super) fn watch_report<K>(
    resource: &'static str,
    key: String,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> impl FnMut(&std::result::Result<watcher::Event<K>, watcher::Error>) {
    move |ev| match ev {
        Ok(watcher::Event::InitDone) => health.listed(&key),
        Ok(_) => {}
        Err(e) => {
            let status = match e {
                watcher::Error::InitialListFailed(kube::Error::Api(s))
                | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                | watcher::Error::WatchFailed(kube::Error::Api(s)) => {
                    Some((s.code, s.reason.clone()))
                }
                watcher::Error::WatchError(s) => Some((s.code, s.reason.clone())),
                _ => None,
            };
            let reason = match &status {
                Some((_, r)) if !r.is_empty() => r.clone(),
                Some((c, _)) => c.to_string(),
                None => "Unreachable".into(),
            };
            metrics.watch_error(resource, &reason);
            match status {
                Some((403, _)) => error!(
                    resource,
                    error = %e,
                    "the operator may not list or watch {resource}: grant its ServiceAccount get, list and watch on {resource} (the chart's RBAC does); nothing syncs until then"
                ),
                Some((404, _)) => error!(
                    resource,
                    "{resource} is not served: install its CRD (charts/managed-secrets/crds, or crds/)"
                ),
                Some((410, _)) => debug!(resource, "watch expired; re-listing"),
                _ => warn!(resource, error = %e, "watch failed; retrying with back-off"),
            }
        }
    }
}

/// Turns a broadcast of policy changes into a stream (a lagging receiver re-evaluates all).
fn changes(rx: broadcast::Receiver<Change>) -> impl Stream<Item = Change> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(c) => Some((c, rx)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some((Change::All, rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// The ManagedSecrets a Secret event concerns: those that target it, or did (a renamed target).
fn owners_of(store: &Store<ManagedSecret>, s: &Secret) -> Vec<ObjectRef<ManagedSecret>> {
    let (ns, name) = (s.namespace(), s.name_any());
    store
        .state()
        .iter()
        .filter(|m| m.namespace() == ns)
        .filter(|m| {
            m.target_name() == name
                || m.status.as_ref().and_then(|st| st.secret_name.as_deref()) == Some(&name)
        })
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// One scope's controller: runs until shutdown.
async fn scope_controller(
    ctx: Arc<Context>,
    scope: Option<String>,
    store: Store<ManagedSecret>,
    writer: reflector::store::Writer<ManagedSecret>,
    policy_changes: Option<broadcast::Receiver<Change>>,
    shutdown: Shutdown,
) {
    let client = ctx.client.clone();
    let (mss, secrets): (Api<ManagedSecret>, Api<Secret>) = match &scope {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (health, metrics) = (ctx.health.clone(), ctx.metrics.clone());
    let forget = ctx.clone();
    let ms_events = watcher(mss, watcher::Config::default())
        .default_backoff()
        .inspect(watch_report(
            "managedsecrets",
            kind_key("managedsecrets", &scope),
            health.clone(),
            metrics.clone(),
        ))
        .reflect(writer)
        .inspect(move |ev| {
            if let Ok(watcher::Event::Delete(o)) = ev {
                forget.forget(&uid(o));
            }
        })
        .applied_objects()
        .predicate_filter(sync_relevant, Default::default());
    let secret_events = watcher(
        secrets,
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}")),
    )
    .default_backoff()
    .inspect(watch_report(
        "secrets",
        kind_key("secrets", &scope),
        health,
        metrics,
    ))
    .touched_objects();
    let mapper_store = store.clone();
    let mut controller = Controller::for_stream(ms_events, store.clone())
        .watches_stream(secret_events, move |s: Secret| owners_of(&mapper_store, &s))
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency),
        );
    if let Some(rx) = policy_changes {
        let (all_rx, ns_rx) = (rx.resubscribe(), rx);
        controller = controller
            .reconcile_all_on(
                changes(all_rx)
                    .filter_map(|c| async move { matches!(c, Change::All).then_some(()) }),
            )
            .reconcile_on(changes(ns_rx).flat_map(move |c| {
                let refs: Vec<ObjectRef<ManagedSecret>> = match c {
                    Change::Namespace(ns) => store
                        .state()
                        .iter()
                        .filter(|m| m.namespace().as_deref() == Some(ns.as_str()))
                        .map(|m| ObjectRef::from_obj(m.as_ref()))
                        .collect(),
                    Change::All => vec![],
                };
                futures::stream::iter(refs)
            }));
    }
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok(_) => {}
                Err(kube::runtime::controller::Error::ObjectNotFound(r)) => {
                    debug!(object = %r, "object gone before its reconcile")
                }
                Err(e) => debug!(error = %e, "controller stream item"),
            }
        })
        .await;
}

/// Runs every pipeline until `shutdown`; returns early only if one of them stops by itself.
pub(super) async fn run_all(
    ctx: Arc<Context>,
    scopes: Vec<(
        Option<String>,
        Store<ManagedSecret>,
        reflector::store::Writer<ManagedSecret>,
    )>,
    policy: Option<policies::Watches>,
    shutdown: BoxFuture<'static, ()>,
) {
    let shutdown: Shutdown = shutdown.shared();
    let health = ctx.health.clone();
    for (scope, _, _) in &scopes {
        health.watching(&kind_key("managedsecrets", scope));
        health.watching(&kind_key("secrets", scope));
    }
    let (tx, _) = broadcast::channel::<Change>(4096);
    let mut tasks: Vec<BoxFuture<'static, &'static str>> = vec![];
    if let Some(w) = policy {
        health.watching("secretaccesspolicies");
        health.watching("namespaces");
        let (c, t, s) = (ctx.clone(), tx.clone(), shutdown.clone());
        tasks.push(
            async move {
                tokio::select! {
                    _ = policies::watch(c, w, t) => {},
                    _ = s => {},
                }
                "the policy watches"
            }
            .boxed(),
        );
    }
    let stores: Vec<Store<ManagedSecret>> = scopes.iter().map(|(_, s, _)| s.clone()).collect();
    for (scope, store, writer) in scopes {
        let rx = ctx.policy.is_some().then(|| tx.subscribe());
        let (c, s) = (ctx.clone(), shutdown.clone());
        tasks.push(
            async move {
                scope_controller(c, scope, store, writer, rx, s).await;
                "a controller"
            }
            .boxed(),
        );
    }
    let mut all = futures::future::select_all(tasks);
    // The loop beats while it runs (liveness); once a minute objects deleted while a watch was
    // down are forgotten.
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            (what, _, rest) = &mut all => {
                if shutdown.peek().is_none() {
                    error!("{what} stopped unexpectedly");
                } else {
                    // Wait for the other pipelines' graceful shutdown too.
                    futures::future::join_all(rest).await;
                }
                break;
            }
            _ = tick.tick() => {
                health.beat();
                let listed = stores.len() == 1 || health.is_listed("managedsecrets");
                if last_sweep.elapsed() >= Duration::from_secs(60) && listed {
                    last_sweep = Instant::now();
                    let live: HashSet<String> =
                        stores.iter().flat_map(|s| s.state()).map(|o| uid(&o)).collect();
                    ctx.sweep(&live);
                }
            }
        }
    }
    health.ended();
    info!("controller stopped");
}
