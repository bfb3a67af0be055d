//! What triggers reconciles: one pipeline per watched scope (all namespaces, or each listed one)
//! with ManagedSecret and Secret watches; with access policies enforced, the SecretAccessPolicy
//! and Namespace watches that re-evaluate ManagedSecrets when a grant or a namespace's labels
//! change. Watch failures are reported here (a 403 loudly) and readiness follows the initial lists.

use super::policies::{self, Change};
use super::report::{kind_key, watch_report};
use super::stores::{self, ScopeStores, ScopeWriters};
use super::{error_policy, reconcile, sync_relevant, uid, Context};
use crate::crd::{ManagedSecret, FIELD_MANAGER, MANAGED_BY_LABEL};
use crate::health::Health;
use crate::source::Changed;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::api::DynamicObject;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio::sync::mpsc;
use tracing::{debug, error, info};

type Shutdown = Shared<BoxFuture<'static, ()>>;

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

/// The ManagedSecrets that read an AWS secret a sweep saw move.
fn readers_of(store: &Store<ManagedSecret>, c: &Changed) -> Vec<ObjectRef<ManagedSecret>> {
    store
        .state()
        .iter()
        .filter(|m| m.spec.secret_id == c.secret_id)
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// A watch of one workload kind: fills its cache and turns changes that matter to a rollout
/// (labels, annotations, pod template) into reconciles of the ManagedSecrets whose rollout that
/// workload concerns (selected now, or recorded as a target).
fn workload_triggers<K>(
    api: Api<K>,
    cache: stores::WorkloadCache,
    key: String,
    kind: &'static str,
    wkind: crate::crd::WorkloadKind,
    ctx: &Arc<Context>,
    managed: Store<ManagedSecret>,
) -> impl Stream<Item = ObjectRef<ManagedSecret>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .inspect(watch_report(
            kind,
            key,
            ctx.health.clone(),
            ctx.metrics.clone(),
        ))
        .modify(stores::trim_workload)
        .inspect(move |ev| {
            if let Ok(ev) = ev {
                cache.apply(ev, |o| stores::to_workload(wkind, o));
            }
        })
        .inspect(workloads_changed(ctx.clone()))
        .applied_objects()
        .predicate_filter(stores::workload_relevant, Default::default())
        .filter_map(|w| async move { w.ok() })
        .flat_map(move |w| {
            let ns = w.namespace().unwrap_or_default();
            let workload = stores::to_workload(wkind, &w);
            let refs = managed
                .state()
                .iter()
                .filter(|m| m.namespace().as_deref() == Some(ns.as_str()))
                .filter(|m| {
                    m.spec.rollout.as_ref().is_some_and(|r| {
                        let recorded = m
                            .status
                            .as_ref()
                            .map(|s| s.rollouts.as_slice())
                            .unwrap_or(&[]);
                        crate::rollout::concerns(r, &m.target_name(), recorded, &workload)
                    })
                })
                .map(|m| ObjectRef::from_obj(m.as_ref()))
                .collect::<Vec<_>>();
            futures::stream::iter(refs)
        })
}

/// Tells the context that a workload cache changed (after the cache has the change).
fn workloads_changed<K: kube::Resource>(
    ctx: Arc<Context>,
) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) {
    move |ev| match ev {
        Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => {
            ctx.workloads_changed(Some(o.meta().namespace.as_deref().unwrap_or_default()))
        }
        Ok(_) => ctx.workloads_changed(None),
        Err(_) => {}
    }
}

fn api_for<K>(client: &kube::Client, scope: &Option<String>) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One scope's controller: runs until shutdown. A reconcile is triggered by its ManagedSecret,
/// its Secret, a workload it rolls out, a sweep that saw its AWS secret move, taking the lead,
/// and (with access policies) a grant or a namespace's labels changing.
async fn scope_controller(
    ctx: Arc<Context>,
    stores: ScopeStores,
    writers: ScopeWriters,
    policy_changes: Option<broadcast::Receiver<Change>>,
    rollout_triggers: mpsc::UnboundedReceiver<ObjectRef<ManagedSecret>>,
    shutdown: Shutdown,
) {
    let mapper_store = stores.managed.clone();
    let mut controller = Controller::for_stream(
        managed_secrets(&ctx, &stores, writers),
        stores.managed.clone(),
    )
    .reconcile_all_on(leadership_taken(&ctx))
    .watches_stream(secrets(&ctx, &stores), move |s: Secret| {
        owners_of(&mapper_store, &s)
    })
    .reconcile_on(workloads(&ctx, &stores, rollout_triggers))
    .reconcile_on(swept(&ctx, &stores))
    // Unlimited here: the reconcile waits for one of the shared workers (`fair`), which
    // go to namespaces in turn, across every scope.
    .with_config(kube::runtime::controller::Config::default().concurrency(0));
    if let Some(rx) = policy_changes {
        let (all_rx, ns_rx) = (rx.resubscribe(), rx);
        let store = stores.managed.clone();
        controller = controller
            .reconcile_all_on(
                changes(all_rx)
                    .filter_map(|c| async move { matches!(c, Change::All).then_some(()) }),
            )
            .reconcile_on(
                changes(ns_rx)
                    .flat_map(move |c| futures::stream::iter(in_changed_namespace(&store, &c))),
            );
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

/// The scope's ManagedSecrets, cached trimmed; a deleted one is forgotten. Only changes that need
/// a reconcile (`sync_relevant`) pass.
fn managed_secrets(
    ctx: &Arc<Context>,
    stores: &ScopeStores,
    writers: ScopeWriters,
) -> impl Stream<Item = Result<ManagedSecret, watcher::Error>> + Send + 'static {
    let scope = &stores.scope;
    let forget = ctx.clone();
    watcher(api_for(&ctx.client, scope), watcher::Config::default())
        .default_backoff()
        .inspect(watch_report(
            "managedsecrets",
            kind_key("managedsecrets", scope),
            ctx.health.clone(),
            ctx.metrics.clone(),
        ))
        .modify(stores::trim_managed)
        .reflect(writers.managed)
        .inspect(move |ev| {
            if let Ok(watcher::Event::Delete(o)) = ev {
                forget.forget(&uid(o));
            }
        })
        .applied_objects()
        .predicate_filter(sync_relevant, Default::default())
}

/// The scope's managed Secrets (by the managed-by label), cached as bounded records.
fn secrets(
    ctx: &Arc<Context>,
    stores: &ScopeStores,
) -> impl Stream<Item = Result<Secret, watcher::Error>> + Send + 'static {
    let scope = &stores.scope;
    let key = ctx.settings.hash_key.0.clone();
    let cache = stores.secrets.clone();
    watcher(
        api_for::<Secret>(&ctx.client, scope),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}")),
    )
    .default_backoff()
    .inspect(watch_report(
        "secrets",
        kind_key("secrets", scope),
        ctx.health.clone(),
        ctx.metrics.clone(),
    ))
    .modify(move |s: &mut Secret| stores::trim_secret(s, &key))
    .inspect(move |ev| {
        if let Ok(ev) = ev {
            cache.apply_secret(ev);
        }
    })
    .touched_objects()
}

/// The ManagedSecrets a workload change concerns (Deployments, StatefulSets, DaemonSets, and
/// Argo Rollouts through `rollout_triggers` once they are served).
fn workloads(
    ctx: &Arc<Context>,
    stores: &ScopeStores,
    rollout_triggers: mpsc::UnboundedReceiver<ObjectRef<ManagedSecret>>,
) -> impl Stream<Item = ObjectRef<ManagedSecret>> + Send + 'static {
    use crate::crd::WorkloadKind;
    let scope = &stores.scope;
    let managed = || stores.managed.clone();
    let key = |kind: &str| kind_key(kind, scope);
    futures::stream::select_all(vec![
        workload_triggers::<Deployment>(
            api_for(&ctx.client, scope),
            stores.deployments.clone(),
            key("deployments"),
            "deployments",
            WorkloadKind::Deployment,
            ctx,
            managed(),
        )
        .boxed(),
        workload_triggers::<StatefulSet>(
            api_for(&ctx.client, scope),
            stores.statefulsets.clone(),
            key("statefulsets"),
            "statefulsets",
            WorkloadKind::StatefulSet,
            ctx,
            managed(),
        )
        .boxed(),
        workload_triggers::<DaemonSet>(
            api_for(&ctx.client, scope),
            stores.daemonsets.clone(),
            key("daemonsets"),
            "daemonsets",
            WorkloadKind::DaemonSet,
            ctx,
            managed(),
        )
        .boxed(),
        futures::stream::unfold(rollout_triggers, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        })
        .boxed(),
    ])
}

/// The ManagedSecrets that read an AWS secret a sweep saw move.
fn swept(
    ctx: &Arc<Context>,
    stores: &ScopeStores,
) -> impl Stream<Item = ObjectRef<ManagedSecret>> + Send + 'static {
    let store = stores.managed.clone();
    futures::stream::unfold(ctx.source.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(c) => return Some((c, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .flat_map(move |c| futures::stream::iter(readers_of(&store, &c)))
}

/// Taking the lead reconciles everything (a standby did nothing).
fn leadership_taken(ctx: &Arc<Context>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(ctx.settings.leadership.subscribe(), |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
}

/// The ManagedSecrets of a namespace whose labels changed (a change of every grant is a
/// reconcile of all, elsewhere).
fn in_changed_namespace(store: &Store<ManagedSecret>, c: &Change) -> Vec<ObjectRef<ManagedSecret>> {
    match c {
        Change::Namespace(ns) => store
            .state()
            .iter()
            .filter(|m| m.namespace().as_deref() == Some(ns.as_str()))
            .map(|m| ObjectRef::from_obj(m.as_ref()))
            .collect(),
        Change::All => vec![],
    }
}

/// What a scope's Rollout watch needs: its scope, cache writer, trigger channel, ManagedSecrets.
type RolloutScope = (
    Option<String>,
    stores::WorkloadCache,
    mpsc::UnboundedSender<ObjectRef<ManagedSecret>>,
    Store<ManagedSecret>,
);

/// Argo Rollouts are watched once their CRD is served (checked every 10 seconds until then).
struct PendingRollouts {
    scopes: Vec<RolloutScope>,
    last_check: Option<Instant>,
}

impl PendingRollouts {
    async fn start_if_served(&mut self, ctx: &Arc<Context>, shutdown: &Shutdown) {
        if self.scopes.is_empty()
            || self
                .last_check
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        self.last_check = Some(Instant::now());
        let served = ctx
            .client
            .list_api_group_resources("argoproj.io/v1alpha1")
            .await
            .map(|l| l.resources.iter().any(|r| r.name == "rollouts"))
            .unwrap_or(false);
        if !served {
            return;
        }
        info!("Argo Rollouts are served: watching them");
        let ar = crate::k8s::workloads::argo_rollout();
        for (scope, cache, tx, managed) in self.scopes.drain(..) {
            let api: Api<DynamicObject> = match &scope {
                Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
                None => Api::all_with(ctx.client.clone(), &ar),
            };
            let c = ctx.clone();
            let stop = shutdown.clone();
            let span = tracing::info_span!("argo_rollouts_watch", namespace = scope.as_deref());
            crate::telemetry::spawn_in(span, async move {
                let stream = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .inspect(watch_report(
                        "rollouts",
                        kind_key("rollouts", &scope),
                        c.health.clone(),
                        c.metrics.clone(),
                    ))
                    .modify(stores::trim_dynamic)
                    .inspect(move |ev| {
                        if let Ok(ev) = ev {
                            cache.apply(ev, |o| {
                                stores::to_workload(crate::crd::WorkloadKind::Rollout, o)
                            });
                        }
                    })
                    .inspect(workloads_changed(c.clone()))
                    .applied_objects()
                    .filter_map(|w| async move { w.ok() })
                    .for_each(move |w| {
                        let ns = w.namespace().unwrap_or_default();
                        for m in managed.state() {
                            if m.namespace().as_deref() == Some(ns.as_str())
                                && m.spec.rollout.is_some()
                            {
                                let _ = tx.send(ObjectRef::from_obj(m.as_ref()));
                            }
                        }
                        async {}
                    });
                tokio::select! {
                    _ = stream => {},
                    _ = stop => {},
                }
            });
        }
    }
}

/// Runs every pipeline until `shutdown`; returns early only if one of them stops by itself.
pub(super) async fn run_all(
    ctx: Arc<Context>,
    scopes: Vec<(ScopeStores, ScopeWriters)>,
    policy: Option<policies::Watches>,
    shutdown: BoxFuture<'static, ()>,
) {
    let shutdown: Shutdown = shutdown.shared();
    let keys = watched_keys(&ctx.health, &scopes);
    let (tx, _) = broadcast::channel::<Change>(4096);
    let mut tasks = background_tasks(&ctx, policy, &tx, &shutdown);
    let mut pending = PendingRollouts {
        scopes: vec![],
        last_check: None,
    };
    for (stores, writers) in scopes {
        let rx = ctx.policy.is_some().then(|| tx.subscribe());
        let (rtx, rrx) = mpsc::unbounded_channel();
        pending.scopes.push((
            stores.scope.clone(),
            stores.rollouts.clone(),
            rtx,
            stores.managed.clone(),
        ));
        let (c, s) = (ctx.clone(), shutdown.clone());
        tasks.push(
            async move {
                scope_controller(c, stores, writers, rx, rrx, s).await;
                "a controller"
            }
            .boxed(),
        );
    }
    supervise(&ctx, tasks, &keys, pending, &shutdown).await;
    ctx.health.ended();
    info!("controller stopped");
}

/// The readiness keys of every scope's watches, each announced as watched.
fn watched_keys(health: &Health, scopes: &[(ScopeStores, ScopeWriters)]) -> Vec<String> {
    let mut keys = vec![];
    for (s, _) in scopes {
        for kind in [
            "managedsecrets",
            "secrets",
            "deployments",
            "statefulsets",
            "daemonsets",
        ] {
            let k = kind_key(kind, &s.scope);
            health.watching(&k);
            keys.push(k);
        }
    }
    keys
}

type Task = BoxFuture<'static, &'static str>;

/// The pipelines besides the scopes' controllers: the policy watches (when enforced) and the
/// source's sweeps. Each ends with the shutdown, naming itself.
fn background_tasks(
    ctx: &Arc<Context>,
    policy: Option<policies::Watches>,
    tx: &broadcast::Sender<Change>,
    shutdown: &Shutdown,
) -> Vec<Task> {
    let mut tasks: Vec<Task> = vec![];
    if let Some(w) = policy {
        ctx.health.watching("secretaccesspolicies");
        ctx.health.watching("namespaces");
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
    let (src, s) = (ctx.source.clone(), shutdown.clone());
    tasks.push(
        async move {
            tokio::select! {
                _ = src.background() => {},
                _ = s => {},
            }
            "the source's sweeps"
        }
        .boxed(),
    );
    tasks
}

/// Waits for the pipelines; meanwhile beats (liveness), starts the Argo Rollouts watches once
/// served, and once a minute forgets objects deleted while a watch was down.
async fn supervise(
    ctx: &Arc<Context>,
    tasks: Vec<Task>,
    keys: &[String],
    mut pending: PendingRollouts,
    shutdown: &Shutdown,
) {
    let health = &ctx.health;
    let mut all = futures::future::select_all(tasks);
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
                return;
            }
            _ = tick.tick() => {
                health.beat();
                pending.start_if_served(ctx, shutdown).await;
                let listed = keys.iter().all(|k| health.is_listed(k));
                if last_sweep.elapsed() >= Duration::from_secs(60) && listed {
                    last_sweep = Instant::now();
                    let live: HashSet<String> = ctx
                        .scopes
                        .iter()
                        .flat_map(|s| s.managed.state())
                        .map(|o| uid(&o))
                        .collect();
                    ctx.sweep(&live);
                }
            }
        }
    }
}
