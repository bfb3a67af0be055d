//! The reconcile glue: the watches that trigger reconciles, the per-object state kept in memory,
//! and the one place every error goes through. What a sync does is in `sync`, rollouts in
//! `rollout`, the finalizer's cleanup in `cleanup`; every decision lives in a pure module.

mod claims;
mod cleanup;
mod compact;
pub mod notifications;
mod plan;
pub mod policies;
mod report;
mod rollout;
mod stores;
mod sync;
mod watches;

use crate::crd::{ManagedSecret, FINALIZER, FORCE_SYNC_ANNOTATION};
use crate::error::{Error, Result};
use crate::health::Health;
use crate::k8s::recorder::Recorder;
use crate::metrics::Metrics;
use crate::schedule;
use crate::source::DynSourceRef;
use futures::FutureExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KEvent, EventType};
use kube::runtime::finalizer::{finalizer, Event as FEvent};

use kube::{Client, Resource, ResourceExt};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{error, instrument, warn, Instrument as _};

pub use policies::{desired_status as policy_status, region_of};

/// The per-installation key of status.dataHash (an HMAC key). `Debug` never shows it.
#[derive(Clone)]
pub struct HashKey(pub Arc<[u8]>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashKey(<redacted, {} bytes>)", self.0.len())
    }
}

/// Settings the controller runs with (validated by `config`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only these namespaces (all when empty).
    pub namespaces: Vec<String>,
    pub concurrency: u16,
    pub min_refresh: Duration,
    pub reporter: String,
    /// Default debounce before a rollout (a ManagedSecret's rollout.debounce overrides it).
    pub rollout_debounce: Duration,
    /// When a rotation counts as overdue or stuck (RotationHealthy).
    pub rotation: crate::rotation::Thresholds,
    pub access_policy: AccessPolicy,
    /// The region a secret is read in when neither its spec nor its ARN says (for policies).
    pub default_region: Option<String>,
    pub hash_key: HashKey,
    /// Only the leader reconciles (always, without leader election).
    pub leadership: crate::leader::Leadership,
    /// The notification queue (SQS) of event-driven refresh, when configured.
    pub notifications: Option<notifications::NotificationSettings>,
    /// This installation's name (its Lease, `namespace/name`), recorded in the status of every
    /// ManagedSecret it syncs (`claim`).
    pub installation: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rollout_debounce: Duration::from_secs(5),
            rotation: crate::rotation::Thresholds::default(),
            namespaces: vec![],
            concurrency: 4,
            min_refresh: schedule::MIN_REFRESH,
            reporter: "managed-secrets".into(),
            access_policy: AccessPolicy::Enforce,
            default_region: None,
            hash_key: HashKey(Arc::from(rand::random::<[u8; 32]>().to_vec())),
            leadership: crate::leader::Leadership::alone(),
            notifications: None,
            installation: crate::claim::installation("managed-secrets", "managed-secrets"),
        }
    }
}
/// What the operator remembers about one ManagedSecret between reconciles (by UID).
#[derive(Default)]
struct ObjectState {
    /// What a sync reads of it (`plan::Memory`: key, failures, confirmation, schedule, mapping).
    memory: plan::Memory,
    /// When the last finished attempt (sync or failure) started.
    attempt_started: Option<Instant>,
}

pub struct Context {
    pub client: Client,
    pub source: DynSourceRef,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub settings: Settings,
    pub health: Arc<Health>,
    objects: Mutex<HashMap<String, ObjectState>>,
    /// The watch caches of every watched scope.
    scopes: Vec<stores::ScopeStores>,
    /// The grants (None when access policies are off).
    policy: Option<policies::PolicyView>,
    /// Whether the notification queue receives.
    notifications: notifications::NotificationState,
    /// Per namespace, the workloads as rollouts see them, built once per change of the workload
    /// caches (a resting reconcile then converts nothing).
    workloads: Mutex<WorkloadSnapshots>,
    /// The reconcile workers (`settings.concurrency` of them, for every scope), taken by
    /// namespaces in turn.
    workers: crate::fair::FairWorkers,
    /// Other installations' Leases as last read, and the objects left to them.
    claims: claims::Claims,
}

#[derive(Default)]
struct WorkloadSnapshots {
    /// Bumped when any workload cache is re-listed.
    reset: u64,
    /// Per namespace: bumped on every workload change there.
    epochs: HashMap<String, u64>,
    /// Per namespace: the snapshot and the (reset, epoch) stamp it was built at.
    built: HashMap<String, ((u64, u64), WorkloadSnapshot)>,
}

type WorkloadSnapshot = Arc<Vec<crate::rollout::Workload>>;

fn uid(ms: &ManagedSecret) -> String {
    ms.metadata.uid.clone().unwrap_or_default()
}

impl Context {
    fn with_state<T>(&self, ms: &ManagedSecret, f: impl FnOnce(&mut ObjectState) -> T) -> T {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let st = objects.entry(uid(ms)).or_insert_with(|| ObjectState {
            memory: plan::Memory {
                key: format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any()).into(),
                ..Default::default()
            },
            ..Default::default()
        });
        let out = f(st);
        self.metrics
            .reconciles
            .managed_objects
            .set(i64::try_from(objects.len()).unwrap_or(i64::MAX));
        out
    }

    /// What the operator remembers of `ms`, read once.
    fn recall(&self, ms: &ManagedSecret) -> plan::Memory {
        self.with_state(ms, |st| st.memory.clone())
    }

    /// Writes back what a reconcile learnt, once.
    fn remember(&self, ms: &ManagedSecret, memo: plan::Memo) {
        let key = self.with_state(ms, |st| {
            let st = &mut st.memory;
            if let Some(m) = memo.mapping {
                st.mapping = Some(m);
            }
            if let Some(at) = memo.confirmed_at {
                st.confirmed_at = Some(at);
                st.failures = 0;
            }
            if let Some(n) = memo.failures {
                st.failures = n;
            }
            if let Some(at) = memo.next_refresh {
                st.next_refresh = Some(at);
            }
            st.key.clone()
        });
        if let Some(at) = memo.confirmed_at {
            self.metrics.freshness(&key, at.timestamp(), false);
        }
    }

    /// The workloads of a namespace, from the caches (rebuilt only after a change).
    fn workloads(&self, ns: &str) -> Arc<Vec<crate::rollout::Workload>> {
        let stamp = {
            let w = self.workloads.lock().unwrap_or_else(|e| e.into_inner());
            let stamp = (w.reset, w.epochs.get(ns).copied().unwrap_or(0));
            if let Some((at, snap)) = w.built.get(ns) {
                if *at == stamp {
                    return snap.clone();
                }
            }
            stamp
        };
        let snap = Arc::new(stores::workloads_in(&self.scopes, ns));
        let mut w = self.workloads.lock().unwrap_or_else(|e| e.into_inner());
        w.built.insert(ns.to_string(), (stamp, snap.clone()));
        snap
    }

    /// The workload caches changed in `ns` (every namespace when None: a re-list).
    fn workloads_changed(&self, ns: Option<&str>) {
        let mut w = self.workloads.lock().unwrap_or_else(|e| e.into_inner());
        match ns {
            Some(ns) => *w.epochs.entry(ns.to_string()).or_default() += 1,
            None => {
                w.reset += 1;
                w.built.clear();
            }
        }
    }

    /// An attempt that started at `started` has finished.
    fn attempted(&self, ms: &ManagedSecret, started: Instant) {
        self.with_state(ms, |st| st.attempt_started = Some(started));
    }

    /// Whether an attempt that started after `t` has finished for the object with this UID.
    fn attempted_since(&self, uid: &str, t: Instant) -> bool {
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        objects
            .get(uid)
            .and_then(|st| st.attempt_started)
            .is_some_and(|s| s >= t)
    }

    /// The refresh interval to schedule: the spec's, or the backstop's while notifications flow.
    fn stretched(&self, interval: std::time::Duration) -> std::time::Duration {
        let es = self.settings.notifications.as_ref();
        crate::notifications::effective_interval(
            interval,
            es.map(|e| e.backstop),
            es.is_some_and(|e| self.notifications.healthy(e.wait)),
        )
    }

    /// Forgets an object that is gone: its state, its metrics and its cached values.
    fn forget(&self, uid: &str) {
        let removed = {
            let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
            let r = objects.remove(uid);
            self.metrics
                .reconciles
                .managed_objects
                .set(i64::try_from(objects.len()).unwrap_or(i64::MAX));
            r
        };
        if let Some(st) = removed {
            self.metrics.forget(&st.memory.key);
        }
        self.claims.settled(uid, &self.metrics);
        self.source.release(uid);
    }

    /// Forgets every object not in `live` (objects deleted while a watch was down).
    fn sweep(&self, live: &HashSet<String>) {
        let gone: Vec<String> = self
            .objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|u| !live.contains(*u))
            .cloned()
            .collect();
        for u in gone {
            self.forget(&u);
        }
        self.source.retain(live);
    }

    /// Every ManagedSecret of a namespace, from the watch caches (no API request).
    fn managed_in(&self, ns: &str) -> Vec<Arc<ManagedSecret>> {
        self.scopes
            .iter()
            .filter(|s| s.covers(ns))
            .flat_map(|s| s.managed.state())
            .filter(|m| m.namespace().as_deref() == Some(ns))
            .collect()
    }

    /// The cached copy of `ms` (None: no longer cached, e.g. deleted meanwhile).
    fn latest(&self, ms: &ManagedSecret) -> Option<Arc<ManagedSecret>> {
        let ns = ms.metadata.namespace.as_deref().unwrap_or_default();
        let key = kube::runtime::reflector::ObjectRef::from_obj(ms);
        self.scopes
            .iter()
            .filter(|s| s.covers(ns))
            .find_map(|s| s.managed.get(&key))
            .filter(|m| m.metadata.uid == ms.metadata.uid)
    }

    /// The name of the ManagedSecret with this UID in `ns`, if the operator knows it.
    fn name_of(&self, ns: &str, uid_: &str) -> Option<String> {
        self.managed_in(ns)
            .iter()
            .find(|m| uid(m) == uid_)
            .map(|m| m.name_any())
    }

    async fn event(&self, ms: &ManagedSecret, type_: EventType, reason: &str, note: String) {
        let ev = KEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Sync".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &ms.object_ref(&())).await {
            warn!(error = %e, "could not publish event");
        }
    }
}

/// A reconcile waits for a worker in its namespace's turn (`fair`), then runs. The waiting
/// future is small (the work is boxed once it has a worker): thousands of due objects cost
/// little while they wait.
async fn reconcile(ms: Arc<ManagedSecret>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.settings.leadership.is_leader() {
        // A standby keeps its caches warm and waits; taking the lead reconciles everything.
        return Ok(Action::await_change());
    }
    let _worker = ctx
        .workers
        .acquire(ms.metadata.namespace.as_deref().unwrap_or_default())
        .await;
    if !ctx.settings.leadership.is_leader() {
        // The lead was lost, or the operator is stopping, while this waited: nothing to do (the
        // next leader reconciles everything).
        return Ok(Action::await_change());
    }
    // The object as it is now: the wait may have seen it change (a status write of an earlier
    // reconcile, a spec edit), and a stale copy would write again what is already written.
    let ms = ctx.latest(&ms).unwrap_or(ms);
    // Another installation that runs and claims it keeps it, finalizer and cleanup included (two
    // installations must not fight).
    let span = tracing::info_span!("claim", namespace = %ms.namespace().unwrap_or_default(), name = %ms.name_any());
    if let Some(left) = claims::check(&ms, &ctx).instrument(span).await {
        return Ok(left);
    }
    work(ms, ctx).boxed().await
}

#[instrument(skip_all, fields(namespace = %ms.namespace().unwrap_or_default(), name = %ms.name_any()))]
async fn work(ms: Arc<ManagedSecret>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.metrics.reconciles.started.inc();
    let api: Api<ManagedSecret> =
        Api::namespaced(ctx.client.clone(), &ms.namespace().unwrap_or_default());
    let obj = ms.clone();
    let has_finalizer = ms.finalizers().iter().any(|f| f == FINALIZER);
    let work = async {
        if crate::k8s::secret::needs_finalizer(&ms)
            || (has_finalizer && ms.metadata.deletion_timestamp.is_some())
        {
            finalizer(&api, FINALIZER, ms, |event| async {
                match event {
                    FEvent::Apply(ms) => sync::apply(&ms, &ctx).await,
                    FEvent::Cleanup(ms) => cleanup::cleanup(&ms, &ctx).await,
                }
            })
            .await
        } else {
            // Deletion needs nothing of the operator (ownerReferences and the garbage collector
            // do it, or the Secret stays): no finalizer, so nothing hangs without the operator.
            if has_finalizer {
                crate::k8s::remove_finalizer(&api, &ms)
                    .await
                    .map_err(kube::runtime::finalizer::Error::RemoveFinalizer)?;
            }
            if ms.metadata.deletion_timestamp.is_some() {
                ctx.forget(&uid(&ms));
                return Ok(Action::await_change());
            }
            sync::apply(&ms, &ctx)
                .await
                .map_err(kube::runtime::finalizer::Error::ApplyFailed)
        }
    };
    // A panic is a bug; it must cost one object a retry, never the operator.
    let res = match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(r) => r.map_err(|e| match e {
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
            kube::runtime::finalizer::Error::AddFinalizer(e)
            | kube::runtime::finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
            other => Error::Finalizer(other.to_string()),
        }),
        Err(_) => {
            error!("reconcile panicked; the object is retried with back-off");
            Err(Error::Internal("a panic".into()))
        }
    };
    // A sync reports its own failures; what failed around it (the finalizer patch, a panic)
    // goes through the same path: status, an Event, back-off. During deletion there is no
    // status to write: the error policy backs off.
    let res = match res {
        Err(e) if obj.metadata.deletion_timestamp.is_none() => {
            Ok(sync::fail(&obj, &ctx, e.into(), None).await)
        }
        other => other,
    };
    ctx.metrics
        .reconciles
        .duration
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics.reconciles.completed.inc();
    res
}

/// Errors of a deletion's cleanup: logged and retried with back-off (the cleanup sends its Event).
fn error_policy(ms: Arc<ManagedSecret>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(err.reason());
    let failures = ctx.with_state(&ms, |st| st.memory.failures.max(1));
    let wait = plan::retry_wait(err, failures, rand::random());
    warn!(name = %ms.name_any(), reason = err.reason(), error = %err, retry_in = ?wait, "reconcile error");
    Action::requeue(wait)
}

/// The properties whose change needs a reconcile: the spec (generation), the force-sync
/// annotation, deletion and finalizers. Status writes (ours included) are not among them.
fn sync_relevant(ms: &ManagedSecret) -> Option<u64> {
    let mut h = DefaultHasher::new();
    ms.metadata.generation.hash(&mut h);
    ms.annotations().get(FORCE_SYNC_ANNOTATION).hash(&mut h);
    ms.metadata.deletion_timestamp.is_some().hash(&mut h);
    ms.finalizers().hash(&mut h);
    Some(h.finish())
}

/// Where access to AWS secrets is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AccessPolicy {
    /// Only what a SecretAccessPolicy grants is read.
    #[default]
    Enforce,
    /// Every ManagedSecret reads what the operator's identity can (single-tenant clusters).
    Off,
}

/// The access policy and namespace caches (when policies are enforced): filled by the
/// controller's watches, read by its syncs and by the admission webhook.
pub struct Grants {
    view: Option<policies::PolicyView>,
    watches: Option<policies::Watches>,
}

impl Grants {
    /// The caches `settings` needs.
    pub fn for_settings(settings: &Settings) -> Grants {
        match settings.access_policy {
            AccessPolicy::Enforce => {
                let (v, w) = policies::stores();
                Grants {
                    view: Some(v),
                    watches: Some(w),
                }
            }
            AccessPolicy::Off => Grants {
                view: None,
                watches: None,
            },
        }
    }

    /// What readers see (None: access policies are off).
    pub fn view(&self) -> Option<policies::PolicyView> {
        self.view.clone()
    }
}

/// Runs the controller until `shutdown` resolves. Returns when it stops; it only stops early if
/// something is badly wrong, which the caller must treat as fatal.
pub async fn run(
    client: Client,
    source: DynSourceRef,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    settings: Settings,
    grants: Grants,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| settings.reporter.clone());
    let recorder = Recorder::new(client.clone(), settings.reporter.clone(), instance);
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let scopes: Vec<_> = scopes.into_iter().map(stores::scope).collect();
    let Grants { view, watches } = grants;
    let workers = crate::fair::FairWorkers::new(
        usize::from(settings.concurrency),
        metrics.workers.waiting.clone(),
    );
    let ctx = Arc::new(Context {
        client,
        source,
        metrics,
        recorder,
        settings,
        health,
        objects: Mutex::new(HashMap::new()),
        scopes: scopes.iter().map(|(s, _)| s.clone()).collect(),
        policy: view,
        notifications: notifications::NotificationState::default(),
        workloads: Mutex::new(WorkloadSnapshots::default()),
        workers,
        claims: claims::Claims::default(),
    });
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let consumer = notifications::run(ctx.clone(), shutdown.clone());
    // The controller's end is the end (the consumer stops with the shutdown signal).
    tokio::select! {
        _ = watches::run_all(ctx, scopes, watches, Box::pin(shutdown)) => {}
        _ = async { consumer.await; std::future::pending::<()>().await } => {}
    }
}
