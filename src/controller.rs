//! The reconcile glue: read state, ask the pure functions what to do, do it, record status and
//! Events. No decision lives here that a plain function can make.

use crate::crd::{
    ManagedSecret, ManagedSecretStatus, FIELD_MANAGER, FINALIZER, FORCE_SYNC_ANNOTATION,
    MANAGED_BY_ANNOTATION, MANAGED_BY_LABEL,
};
use crate::crd::{RolloutRecord, RolloutStrategy, WorkloadKind};
use crate::error::{backoff, Error, Result};
use crate::k8s;
use crate::metrics::Metrics;
use crate::render;
use crate::rollout::{self, Decision};
use crate::schedule::{self, Observed, Plan};
use crate::source::{DynSourceRef, FetchRequest, SecretRef, VersionSelector};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FEvent};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::HashSet;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, instrument, warn};

/// Settings the controller runs with (validated by `config`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    pub concurrency: u16,
    pub min_refresh: Duration,
    pub reporter: String,
    /// Default debounce before a rollout (a ManagedSecret's rollout.debounce overrides it).
    pub rollout_debounce: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rollout_debounce: Duration::from_secs(5),
            namespace: None,
            concurrency: 4,
            min_refresh: schedule::MIN_REFRESH,
            reporter: "managed-secrets".into(),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub source: DynSourceRef,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub settings: Settings,
    managed: Mutex<HashSet<String>>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_ts(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref()
        .and_then(|x| DateTime::parse_from_rfc3339(x).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The Ready condition, keeping lastTransitionTime while the status does not flip.
fn ready_condition(
    prev: &[Condition],
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = prev
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(
            k8s_openapi::jiff::Timestamp::from_second(now.timestamp()).unwrap_or_default(),
        ));
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

fn secret_ref(ms: &ManagedSecret) -> SecretRef {
    let version = match (&ms.spec.version_id, &ms.spec.version_stage) {
        (Some(id), _) => VersionSelector::Id(id.clone()),
        (None, Some(s)) => VersionSelector::Stage(s.clone()),
        (None, None) => VersionSelector::Stage("AWSCURRENT".into()),
    };
    SecretRef {
        secret_id: ms.spec.secret_id.clone(),
        region: ms.spec.region.clone(),
        version,
    }
}

/// Spec checks beyond the schema. Pure.
pub fn validate_spec(ms: &ManagedSecret, min_refresh: Duration) -> Result<Duration> {
    let interval = schedule::refresh_interval(ms.spec.refresh_interval.as_deref(), min_refresh)?;
    render::validate_mapping(&ms.spec)?;
    if ms.spec.version_stage.as_deref() == Some("AWSPENDING") {
        return Err(Error::InvalidSpec("versionStage AWSPENDING is refused: a pending value is not yet in use and may never be".into()));
    }
    if ms.spec.version_id.is_some() && ms.spec.version_stage.is_some() {
        return Err(Error::InvalidSpec(
            "set either versionStage or versionId, not both".into(),
        ));
    }
    Ok(interval)
}

impl Context {
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

    async fn write_status(&self, ms: &ManagedSecret, status: &ManagedSecretStatus) -> Result<()> {
        if ms.status.as_ref() == Some(status) {
            return Ok(());
        }
        let api: Api<ManagedSecret> =
            Api::namespaced(self.client.clone(), &ms.namespace().unwrap_or_default());
        let body = json!({"apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret", "status": status});
        api.patch_status(
            &ms.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::Kube)?;
        Ok(())
    }

    fn track(&self, key: String, present: bool) {
        let mut m = self.managed.lock().unwrap_or_else(|e| e.into_inner());
        if present {
            m.insert(key);
        } else {
            m.remove(&key);
        }
        self.metrics.managed_objects.set(m.len() as i64);
    }
}

#[instrument(skip_all, fields(namespace = %ms.namespace().unwrap_or_default(), name = %ms.name_any()))]
async fn reconcile(ms: Arc<ManagedSecret>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let api: Api<ManagedSecret> =
        Api::namespaced(ctx.client.clone(), &ms.namespace().unwrap_or_default());
    let res = finalizer(&api, FINALIZER, ms, |event| async {
        match event {
            FEvent::Apply(ms) => sync(&ms, &ctx).await,
            FEvent::Cleanup(ms) => cleanup(&ms, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics.reconciles_completed.inc();
    res
}

async fn sync(ms: &ManagedSecret, ctx: &Context) -> Result<Action> {
    let now = Utc::now();
    let ns = ms.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", ms.name_any());
    ctx.track(key, true);
    let status = ms.status.clone().unwrap_or_default();
    let force = ms.annotations().get(FORCE_SYNC_ANNOTATION).cloned();
    let interval = match validate_spec(ms, ctx.settings.min_refresh) {
        Ok(i) => i,
        Err(e) => return fail(ms, ctx, e, &force).await,
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let current = secrets
        .get_opt(&ms.target_name())
        .await
        .map_err(Error::Kube)?;
    let intact = match &status.data_hash {
        None => true,
        Some(h) => {
            current
                .as_ref()
                .and_then(|c| k8s::current_hash(c, &status.synced_keys))
                .as_deref()
                == Some(h.as_str())
        }
    };
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let plan = schedule::plan(&Observed {
        now,
        generation: ms.metadata.generation,
        observed_generation: status.observed_generation,
        force_sync: force.clone(),
        last_force_sync: status.last_force_sync.clone(),
        next_refresh: parse_ts(&status.next_refresh_time),
        ready,
        secret_intact: intact,
    });
    let bypass_cache = match plan {
        Plan::Rest { until } => {
            let mut wait = (until - now).to_std().unwrap_or(Duration::from_secs(1));
            if status.rollout_pending_since.is_some() {
                // A rollout waits for its debounce window: no AWS call needed for it.
                let mut st = status.clone();
                if let Some(hint) = rollout_step(ms, ctx, &mut st, now, rollout::Sync::Same).await?
                {
                    wait = wait.min(hint);
                }
                ctx.write_status(ms, &st).await?;
            }
            debug!(until = %until, "in sync; resting");
            return Ok(Action::requeue(wait));
        }
        Plan::Sync { bypass_cache, why } => {
            debug!(why, bypass_cache, "syncing");
            bypass_cache
        }
    };
    if let Err(e) = k8s::check_target(ms, current.as_ref()) {
        return fail(ms, ctx, e, &force).await;
    }
    let req = FetchRequest {
        secret: secret_ref(ms),
        bypass_cache,
        max_age: interval,
    };
    let fetched = match ctx.source.fetch(&req).await {
        Ok(f) => f,
        Err(e) => return fail(ms, ctx, e, &force).await,
    };
    let data = match render::render(&ms.spec, &fetched.value) {
        Ok(d) => d,
        Err(e) => return fail(ms, ctx, e, &force).await,
    };
    let desired = k8s::desired_secret(ms, &data, &fetched.version_id);
    let changed = match &current {
        Some(c) if k8s::in_sync(c, &desired) => false,
        _ => {
            if let Err(e) = k8s::apply_secret(&secrets, ms, &desired).await {
                return fail(ms, ctx, e, &force).await;
            }
            true
        }
    };
    let target = ms.target_name();
    if changed {
        ctx.metrics.syncs.inc();
        info!(secret = %target, version = %fetched.version_id, keys = data.0.len(), "Secret written");
        ctx.event(
            ms,
            EventType::Normal,
            "Synced",
            format!(
                "Secret {target} now holds AWS version {} (keys: {})",
                fetched.version_id,
                data.keys().join(", ")
            ),
        )
        .await;
    }
    let next = now
        + chrono::Duration::from_std(schedule::jittered(interval, rand::random::<f64>()))
            .unwrap_or_default();
    let new_status = ManagedSecretStatus {
        observed_generation: ms.metadata.generation,
        conditions: vec![ready_condition(
            &status.conditions,
            true,
            "Synced",
            format!(
                "Secret {target} holds AWS version {} of {}",
                fetched.version_id, ms.spec.secret_id
            ),
            ms.metadata.generation,
            now,
        )],
        secret_name: Some(target),
        synced_version_id: Some(fetched.version_id.clone()),
        synced_version_stages: fetched.version_stages.clone(),
        data_hash: Some(data.hash()),
        synced_keys: data.keys(),
        last_sync_time: Some(ts(now)),
        last_attempt_time: Some(ts(now)),
        next_refresh_time: Some(ts(next)),
        last_force_sync: force.or(status.last_force_sync.clone()),
        failures: 0,
        rollouts: status.rollouts.clone(),
        rollout_pending_since: status.rollout_pending_since.clone(),
    };
    let mut new_status = new_status;
    let sync_kind = match &status.synced_version_id {
        None => rollout::Sync::First,
        Some(v) if *v != fetched.version_id => rollout::Sync::NewVersion,
        Some(_) => rollout::Sync::Same,
    };
    let mut wait = (next - now).to_std().unwrap_or(interval);
    if let Some(hint) = rollout_step(ms, ctx, &mut new_status, now, sync_kind).await? {
        wait = wait.min(hint);
    }
    ctx.write_status(ms, &new_status).await?;
    Ok(Action::requeue(wait))
}

/// Rollouts for the synced version, after the Secret was written: new targets are remembered with
/// the version they run, targets whose version moved are restarted once the debounce window has
/// passed (one annotation covering every managed Secret the workload uses, so rotations in the
/// same window make one rollout), missing named targets are reported. Mutates `status`; returns
/// when to look again while a rollout waits.
async fn rollout_step(
    ms: &ManagedSecret,
    ctx: &Context,
    status: &mut ManagedSecretStatus,
    now: DateTime<Utc>,
    sync: rollout::Sync,
) -> Result<Option<Duration>> {
    status
        .conditions
        .retain(|c| c.type_ != "RolloutTargetMissing");
    let Some(spec) = &ms.spec.rollout else {
        status.rollouts.clear();
        status.rollout_pending_since = None;
        return Ok(None);
    };
    let Some(version) = status.synced_version_id.clone() else {
        return Ok(None);
    };
    let ns = ms.namespace().unwrap_or_default();
    let secret = ms.target_name();
    let workloads = k8s::workloads::list(&ctx.client, &ns).await?;
    let (targets, missing) = rollout::select_targets(spec, &secret, &workloads);
    let mut records: Vec<RolloutRecord> = vec![];
    let mut due = vec![];
    for (kind, name) in &targets {
        let prev = status
            .rollouts
            .iter()
            .find(|r| r.kind == *kind && &r.name == name)
            .cloned();
        match rollout::decide(prev.as_ref(), &version, sync, spec.on_create) {
            Decision::Baseline => records.push(RolloutRecord {
                kind: *kind,
                name: name.clone(),
                version: Some(version.clone()),
                ..Default::default()
            }),
            Decision::Nothing => records.push(prev.expect("Nothing implies a record")),
            Decision::RollOut => {
                due.push((*kind, name.clone()));
                records.push(prev.unwrap_or(RolloutRecord {
                    kind: *kind,
                    name: name.clone(),
                    ..Default::default()
                }));
            }
        }
    }
    for (kind, name) in &missing {
        records.push(RolloutRecord {
            kind: *kind,
            name: name.clone(),
            error: Some(format!(
                "{} {name} not found in namespace {ns}",
                kind.as_str()
            )),
            ..Default::default()
        });
    }
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|(k, n)| format!("{}/{n}", k.as_str()))
            .collect();
        status.conditions.push(Condition {
            type_: "RolloutTargetMissing".into(),
            status: "True".into(),
            reason: "TargetNotFound".into(),
            message: format!("rollout targets not found: {}", names.join(", ")),
            observed_generation: ms.metadata.generation,
            last_transition_time: Time(
                k8s_openapi::jiff::Timestamp::from_second(now.timestamp()).unwrap_or_default(),
            ),
        });
    }
    let mut hint = None;
    if due.is_empty() {
        status.rollout_pending_since = None;
    } else if spec.strategy == RolloutStrategy::None {
        for r in records
            .iter_mut()
            .filter(|r| due.iter().any(|(k, n)| *k == r.kind && *n == r.name))
        {
            r.version = Some(version.clone());
            r.error = None;
        }
        status.rollout_pending_since = None;
    } else {
        let since = parse_ts(&status.rollout_pending_since).unwrap_or(now);
        status.rollout_pending_since = Some(ts(since));
        let debounce = match &spec.debounce {
            Some(d) => schedule::parse_duration(d)?,
            None => ctx.settings.rollout_debounce,
        };
        if let Some(left) = rollout::debounce_left(since, now, debounce) {
            debug!(
                ?left,
                targets = due.len(),
                "rollout waits for the debounce window"
            );
            hint = Some(left);
        } else {
            let peers = peer_versions(ms, ctx, &ns, &workloads, &version).await?;
            let mut failed = false;
            for (kind, name) in &due {
                let versions = peers
                    .get(&(*kind, name.clone()))
                    .cloned()
                    .unwrap_or_default();
                let value = rollout::annotation_value(&versions);
                let w = workloads
                    .iter()
                    .find(|w| w.kind == *kind && &w.name == name);
                let rec = records
                    .iter_mut()
                    .find(|r| r.kind == *kind && &r.name == name)
                    .expect("due targets have records");
                if w.and_then(|w| w.current_version_annotation()) == Some(value.as_str()) {
                    // Already rolled to this set of versions (by another ManagedSecret's rollout in the window).
                    rec.version = Some(version.clone());
                    rec.rolled_out_at = Some(ts(now));
                    rec.error = None;
                    ctx.metrics.rollout(kind.as_str(), "coalesced");
                    continue;
                }
                match k8s::workloads::set_version_annotation(&ctx.client, &ns, *kind, name, &value)
                    .await
                {
                    Ok(wref) => {
                        rec.version = Some(version.clone());
                        rec.rolled_out_at = Some(ts(now));
                        rec.error = None;
                        ctx.metrics.rollout(kind.as_str(), "triggered");
                        info!(workload = %format!("{}/{name}", kind.as_str()), %version, "rollout triggered");
                        ctx.event(
                            ms,
                            EventType::Normal,
                            "RolledOut",
                            format!(
                                "{} {name} restarted for AWS version {version} of Secret {secret}",
                                kind.as_str()
                            ),
                        )
                        .await;
                        let ev = KEvent {
                            type_: EventType::Normal,
                            reason: "RolledOut".into(),
                            note: Some(format!("restarted by ManagedSecret {}: Secret {secret} is now AWS version {version}", ms.name_any())),
                            action: "Rollout".into(),
                            secondary: None,
                        };
                        if let Err(e) = ctx.recorder.publish(&ev, &wref).await {
                            warn!(error = %e, "could not publish the workload event");
                        }
                    }
                    Err(e) => {
                        failed = true;
                        rec.error = Some(e.to_string());
                        ctx.metrics.rollout(kind.as_str(), "failed");
                        ctx.event(
                            ms,
                            EventType::Warning,
                            "RolloutFailed",
                            format!("{} {name}: {e}", kind.as_str()),
                        )
                        .await;
                    }
                }
            }
            if failed {
                hint = Some(backoff(1));
            } else {
                status.rollout_pending_since = None;
            }
        }
    }
    status.rollouts = records;
    Ok(hint)
}

type PeerVersions = HashMap<(WorkloadKind, String), BTreeMap<String, String>>;

/// For each workload, the synced versions of every ManagedSecret in the namespace that targets it
/// (this one with `version`).
async fn peer_versions(
    ms: &ManagedSecret,
    ctx: &Context,
    ns: &str,
    workloads: &[rollout::Workload],
    version: &str,
) -> Result<PeerVersions> {
    let api: Api<ManagedSecret> = Api::namespaced(ctx.client.clone(), ns);
    let all = api.list(&Default::default()).await.map_err(Error::Kube)?;
    let mut out: PeerVersions = HashMap::new();
    for other in all
        .items
        .iter()
        .filter(|o| o.name_any() != ms.name_any())
        .chain(std::iter::once(ms))
    {
        let Some(spec) = &other.spec.rollout else {
            continue;
        };
        let v = if other.name_any() == ms.name_any() {
            version.to_string()
        } else {
            match other
                .status
                .as_ref()
                .and_then(|s| s.synced_version_id.clone())
            {
                Some(v) => v,
                None => continue,
            }
        };
        let (targets, _) = rollout::select_targets(spec, &other.target_name(), workloads);
        for t in targets {
            out.entry(t)
                .or_default()
                .insert(other.target_name(), v.clone());
        }
    }
    Ok(out)
}

/// A failed sync: the Secret is left as it is; status and an Event say what failed and when the
/// next attempt is.
async fn fail(
    ms: &ManagedSecret,
    ctx: &Context,
    err: Error,
    force: &Option<String>,
) -> Result<Action> {
    let now = Utc::now();
    let prev = ms.status.clone().unwrap_or_default();
    let failures = prev.failures.saturating_add(1);
    let wait = backoff(failures);
    let reason = err.reason();
    ctx.metrics.failure(reason);
    let kept = match &prev.synced_version_id {
        Some(v) if prev.data_hash.is_some() => format!("; the Secret keeps AWS version {v}"),
        _ => String::new(),
    };
    let message = format!(
        "{err}{kept}; next attempt at {}",
        ts(now + chrono::Duration::from_std(wait).unwrap_or_default())
    );
    warn!(reason, transient = err.is_transient(), error = %err, "sync failed");
    ctx.event(ms, EventType::Warning, reason, err.to_string())
        .await;
    let status = ManagedSecretStatus {
        observed_generation: ms.metadata.generation,
        conditions: vec![ready_condition(
            &prev.conditions,
            false,
            reason,
            message,
            ms.metadata.generation,
            now,
        )],
        last_attempt_time: Some(ts(now)),
        next_refresh_time: Some(ts(
            now + chrono::Duration::from_std(wait).unwrap_or_default()
        )),
        last_force_sync: force.clone().or(prev.last_force_sync.clone()),
        failures,
        ..prev
    };
    ctx.write_status(ms, &status).await?;
    Ok(Action::requeue(wait))
}

async fn cleanup(ms: &ManagedSecret, ctx: &Context) -> Result<Action> {
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &ms.namespace().unwrap_or_default());
    k8s::release_secret(&secrets, ms).await?;
    ctx.track(
        format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any()),
        false,
    );
    info!(policy = ?ms.spec.target.deletion_policy, "released the Secret");
    Ok(Action::await_change())
}

fn error_policy(ms: Arc<ManagedSecret>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(err.reason());
    let failures = ms.status.as_ref().map(|s| s.failures).unwrap_or(0) + 1;
    warn!(name = %ms.name_any(), error = %err, "reconcile error");
    Action::requeue(backoff(failures))
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    source: DynSourceRef,
    metrics: Arc<Metrics>,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (mss, secrets): (Api<ManagedSecret>, Api<Secret>) = match &settings.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| settings.reporter.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: settings.reporter.clone(),
            instance: Some(instance),
        },
    );
    let ctx = Arc::new(Context {
        client,
        source,
        metrics,
        recorder,
        settings: settings.clone(),
        managed: Mutex::new(HashSet::new()),
    });
    let secret_watch =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}"));
    Controller::new(mss, watcher::Config::default())
        .watches(secrets, secret_watch, |s: Secret| {
            let ns = s.namespace();
            s.annotations().get(MANAGED_BY_ANNOTATION).map(|name| {
                let r = ObjectRef::<ManagedSecret>::new(name);
                match ns {
                    Some(ns) => r.within(&ns),
                    None => r,
                }
            })
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "controller stream item");
            }
        })
        .await;
}
