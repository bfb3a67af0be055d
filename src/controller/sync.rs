//! One sync of a ManagedSecret, as glue: observe (the spec checked, the grant, the memory and the
//! target Secret, once), plan (`plan`: pure), converge (fetch through the source, write the Secret
//! only when it changed, give back a renamed target, the rollout step, the status), then the
//! memory written back once. Every error ends in [`fail`].

use super::plan::{self, Memo, Observation};
use super::{policies, rollout, uid, Context};
use crate::crd::{
    validate_spec, CreationPolicy, ManagedSecret, ManagedSecretStatus, FIELD_MANAGER,
};
use crate::error::{Error, Result};
use crate::k8s;
use crate::policy::Identity;
use crate::reason;
use crate::render::Mapping;
use crate::schedule::Plan;
use crate::source::{FetchRequest, SecretRef, VersionSelector};
use crate::status::READY;
use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

pub(super) fn secret_ref(ms: &ManagedSecret, identity: Identity) -> SecretRef {
    let version = match (&ms.spec.version_id, &ms.spec.version_stage) {
        (Some(id), _) => VersionSelector::Id(id.clone()),
        (None, Some(s)) => VersionSelector::Stage(s.clone()),
        (None, None) => VersionSelector::Stage("AWSCURRENT".into()),
    };
    SecretRef {
        secret_id: ms.spec.secret_id.clone(),
        region: ms.spec.region.clone(),
        version,
        identity,
    }
}

/// A sync that failed: the error, and the status the attempt wrote before it failed (a failed
/// rollout after a good sync), which the failure's status builds on.
pub(super) struct Failure {
    pub error: Error,
    pub written: Option<ManagedSecretStatus>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            written: None,
        }
    }
}

/// Syncs `ms`: observe (everything once), plan (`plan`, pure), converge (the writes), then the
/// memory written back once. Failures are recorded (status, Event, back-off) and never returned.
pub(super) async fn apply(ms: &ManagedSecret, ctx: &Context) -> Result<Action> {
    if !policies::ready(ctx) {
        // The grants are not known yet: deciding now could deny what a policy allows.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let started = std::time::Instant::now();
    let action = match observe(ms, ctx).await {
        Err(e) => fail(ms, ctx, e.into(), None).await,
        Ok(seen) => {
            let (mut memo, done) = converge(ms, ctx, &seen).await;
            if seen.compiled {
                memo.mapping = Some((ms.metadata.generation, seen.mapping.clone()));
            }
            ctx.remember(ms, memo);
            match done {
                Ok(action) => action,
                Err(failure) => fail(ms, ctx, failure, Some(&seen)).await,
            }
        }
    };
    ctx.attempted(ms, started);
    Ok(action)
}

/// Reads what a sync decides from: the spec checked, the grant, the memory, the target Secret
/// (from the watch cache; from the API only when the answer matters now).
async fn observe(ms: &ManagedSecret, ctx: &Context) -> Result<Observation> {
    let now = Utc::now();
    let status = ms.status.clone().unwrap_or_default();
    let interval = ctx.stretched(validate_spec(ms, ctx.settings.min_refresh)?);
    // Before anything is read from AWS: may this namespace read this secret, and as whom?
    let identity = policies::authorize(ctx, ms).inspect_err(|_| {
        // Denied: it claims no AWS value any more, so sweeps and batches stop reading its secret
        // (unless a ManagedSecret that is granted it still reads it).
        ctx.source.release(&uid(ms));
    })?;
    // A sweep that saw a new version makes this sync now, not at the next refresh.
    let source_moved = ctx
        .source
        .known_version(&secret_ref(ms, identity.clone()))
        .is_some_and(|v| status.synced_version_id.as_deref() != Some(v.as_str()));
    let memory = ctx.recall(ms);
    let (mapping, compiled) = match &memory.mapping {
        Some((g, m)) if *g == ms.metadata.generation => (m.clone(), false),
        _ => (Arc::new(Mapping::compile(&ms.spec)?), true),
    };
    let current = cached_target(ms, ctx, &status).await?;
    let intact = plan::intact(
        &status,
        current.as_ref().and_then(Option::as_ref),
        &ctx.settings.hash_key.0,
    );
    Ok(Observation {
        now,
        status,
        interval,
        identity,
        mapping,
        compiled,
        memory,
        source_moved,
        current,
        intact,
        thresholds: ctx.settings.rotation,
    })
}

/// The target Secret from the watch cache. One the cache does not hold (not ours, or not there)
/// is read from the API only when the answer matters now: whether a synced Secret is intact;
/// else just before a write, once AWS has answered, so that a ManagedSecret that keeps failing
/// costs no Kubernetes read. Either way as the cache keeps it: our keys, values as digests.
async fn cached_target(
    ms: &ManagedSecret,
    ctx: &Context,
    status: &ManagedSecretStatus,
) -> Result<Option<Option<Secret>>> {
    let ns = ms.namespace().unwrap_or_default();
    let target = ms.target_name();
    Ok(match super::stores::secret(&ctx.scopes, &ns, &target) {
        Some(s) => Some(Some(s)),
        None if status.data_hash.is_some() => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            Some(read_secret(&secrets, &target, &ctx.settings.hash_key.0).await?)
        }
        None => None,
    })
}

/// Rests, or fetches and writes what changed; what the memory keeps of it, and the outcome.
async fn converge(
    ms: &ManagedSecret,
    ctx: &Context,
    seen: &Observation,
) -> (Memo, std::result::Result<Action, Failure>) {
    match plan::when(ms, seen) {
        Plan::Rest { until } => {
            debug!(until = %until, "in sync; resting");
            (Memo::default(), rest(ms, ctx, seen, until).await)
        }
        Plan::Sync { bypass_cache, why } => {
            debug!(why, bypass_cache, "syncing");
            match write(ms, ctx, seen, bypass_cache).await {
                Err(e) => (Memo::default(), Err(e.into())),
                Ok((w, changed)) => {
                    // Confirmed only once the Secret holds the value (a confirmation resets the
                    // failure count that a target conflict's back-off doubles from).
                    let memo = Memo {
                        confirmed_at: Some(seen.now),
                        next_refresh: Some(w.next_refresh),
                        ..Memo::default()
                    };
                    (memo, record(ms, ctx, seen, w, changed).await)
                }
            }
        }
    }
}

/// In sync: only the rollout step (a rollout waiting for its debounce window, or a workload that
/// appeared or changed), which needs no AWS call and no API read (the caches).
async fn rest(
    ms: &ManagedSecret,
    ctx: &Context,
    seen: &Observation,
    until: chrono::DateTime<Utc>,
) -> std::result::Result<Action, Failure> {
    let wait = plan::rest_wait(seen.now, until, ctx.settings.min_refresh);
    // What the status says (after a restart or a change of leader, before any sync).
    ctx.metrics
        .rotation
        .set(&seen.memory.key, plan::rotation_unhealthy(&seen.status));
    if ms.spec.rollout.is_none() {
        return Ok(Action::requeue(wait));
    }
    let mut st = seen.status.clone();
    let rolled = rollout::step(ms, ctx, &mut st, seen.now, crate::rollout::Sync::Same).await;
    write_status(ctx, ms, &st).await?;
    match rolled {
        Ok(hint) => Ok(Action::requeue(hint.map_or(wait, |h| wait.min(h)))),
        Err(error) => Err(Failure {
            error,
            written: Some(st),
        }),
    }
}

/// Fetches the value, decides what the Secret holds (`plan::write`) and writes it unless it holds
/// it already. Returns the plan and whether the Secret changed.
async fn write(
    ms: &ManagedSecret,
    ctx: &Context,
    seen: &Observation,
    bypass_cache: bool,
) -> Result<(plan::Write, bool)> {
    let req = FetchRequest {
        secret: secret_ref(ms, seen.identity.clone()),
        bypass_cache,
        max_age: seen.interval,
        revalidate: crate::rotation::due(
            seen.status.rotation.as_deref(),
            seen.now,
            &seen.thresholds,
        ),
        owner: uid(ms),
    };
    let fetched = ctx.source.fetch(&req).await?;
    let ns = ms.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let hash_key = &ctx.settings.hash_key.0;
    let read;
    let current = match &seen.current {
        Some(c) => c.as_ref(),
        None if reads_first(ms, &seen.status) => {
            read = read_secret(&secrets, &ms.target_name(), hash_key).await?;
            read.as_ref()
        }
        // Not read: a new object's Secret is created, which never writes into one that exists.
        None => None,
    };
    check_target(ctx, ms, current)?;
    let w = plan::write(ms, seen, &fetched, bypass_cache, hash_key, rand::random())?;
    let changed = write_secret(ctx, ms, &secrets, current, &w.desired)
        .await
        .map_err(|e| name_managers(ctx, &ns, e))?;
    if changed {
        ctx.metrics.syncs.changed.inc();
        info!(secret = %ms.target_name(), version = %w.version_id, keys = w.keys, "Secret written");
    }
    Ok((w, changed))
}

/// After the Secret: its Event, the previous target given back, the rollout step, the status.
async fn record(
    ms: &ManagedSecret,
    ctx: &Context,
    seen: &Observation,
    w: plan::Write,
    changed: bool,
) -> std::result::Result<Action, Failure> {
    if let Some(note) = w.note.filter(|_| changed) {
        ctx.event(ms, EventType::Normal, reason::SYNCED, note).await;
    }
    ctx.metrics
        .rotation
        .set(&seen.memory.key, w.rotation_unhealthy);
    if let Some(news) = w.rotation_news {
        let kind = if news.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(ms, kind, news.reason, news.message).await;
    }
    if let Some(old) = &w.release {
        release(ms, ctx, old).await?;
    }
    let mut st = w.status;
    let rolled = rollout::step(ms, ctx, &mut st, seen.now, w.kind).await;
    if plan::status_is_news(changed, claimed_here(ctx, &seen.status), &seen.status, &st) {
        write_status(ctx, ms, &st).await?;
    } else {
        debug!("nothing new: no status write");
    }
    if changed && w.kind == crate::rollout::Sync::NewVersion {
        ctx.metrics
            .syncs
            .lag
            .observe(w.seen_at.elapsed().as_secs_f64());
    }
    match rolled {
        Ok(hint) => Ok(Action::requeue(hint.map_or(w.wait, |h| w.wait.min(h)))),
        Err(error) => Err(Failure {
            error,
            written: Some(st),
        }),
    }
}

/// target.name changed: the previous Secret is given back as a deletion would.
async fn release(ms: &ManagedSecret, ctx: &Context, old: &str) -> Result<()> {
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &ms.namespace().unwrap_or_default());
    let target = ms.target_name();
    k8s::secret::release_secret(&secrets, ms, old).await?;
    info!(old = %old, new = %target, "released the previous target Secret");
    ctx.event(
        ms,
        EventType::Normal,
        reason::RELEASED,
        format!(
            "Secret {old} is no longer the target (now {target}); released per deletionPolicy {:?}",
            k8s::secret::deletion_policy(ms)
        ),
    )
    .await;
    Ok(())
}

pub(super) async fn write_status(
    ctx: &Context,
    ms: &ManagedSecret,
    status: &ManagedSecretStatus,
) -> Result<()> {
    // Every status write claims the object for this installation (`claim`).
    let status = &ManagedSecretStatus {
        claimed_by: Some(ctx.settings.installation.clone()),
        ..status.clone()
    };
    if ms.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<ManagedSecret> =
        Api::namespaced(ctx.client.clone(), &ms.namespace().unwrap_or_default());
    // The Contested condition is another installation's note (its own field manager): never
    // applied here, so never taken over or removed by this write.
    let mut applied = status.clone();
    applied
        .conditions
        .retain(|c| c.type_ != crate::claim::CONTESTED);
    let body = json!({"apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret", "status": applied});
    api.patch_status(
        &ms.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

/// Whether the target is read before it is written: Merge writes only into a Secret that exists,
/// and after a failure the target may well be what failed (taken, of another type), where a
/// create would only fail and be followed by the read anyway.
fn reads_first(ms: &ManagedSecret, status: &ManagedSecretStatus) -> bool {
    ms.spec.target.creation_policy == CreationPolicy::Merge
        || status
            .conditions
            .iter()
            .any(|c| c.type_ == READY && c.status == "False")
}

/// May this ManagedSecret write into the Secret (or create it, when there is none)?
fn check_target(ctx: &Context, ms: &ManagedSecret, current: Option<&Secret>) -> Result<()> {
    let ns = ms.namespace().unwrap_or_default();
    let owner = current
        .and_then(k8s::secret::owner_uid)
        .and_then(|u| ctx.name_of(&ns, &u));
    k8s::secret::check_target(ms, current, owner.as_deref())?;
    k8s::secret::check_type_change(ms, current)
}

/// Writes the desired Secret unless it holds it already; whether it wrote. With no Secret known,
/// one POST creates it; one that turns out to exist is read and decided on like any other.
async fn write_secret(
    ctx: &Context,
    ms: &ManagedSecret,
    secrets: &Api<Secret>,
    current: Option<&Secret>,
    desired: &serde_json::Value,
) -> Result<bool> {
    let hash_key = &ctx.settings.hash_key.0;
    let manager = k8s::secret::field_manager(ms);
    let target = ms.target_name();
    let read;
    let current = match current {
        Some(c) => c,
        None => {
            if k8s::create::create_secret(secrets, ms, desired).await? {
                return Ok(true);
            }
            read = read_secret(secrets, &target, hash_key)
                .await?
                .ok_or_else(|| {
                    k8s::create::conflict(&target, "existed when created, not when read")
                })?;
            check_target(ctx, ms, Some(&read))?;
            &read
        }
    };
    if k8s::secret::in_sync(current, desired, &manager, hash_key) {
        return Ok(false);
    }
    if ms.spec.target.creation_policy != CreationPolicy::Merge
        && k8s::create::created_by(current, &manager)
    {
        // Once in the Secret's life: what the create wrote becomes the apply's (k8s::create).
        // (Never for Merge: it creates nothing, and the Secret it merges into is someone else's.)
        k8s::create::adopt_created_fields(secrets, ms, current).await?;
    }
    k8s::secret::apply_secret(secrets, ms, desired).await?;
    Ok(true)
}

/// The target Secret from the API, as the cache would keep it.
async fn read_secret(secrets: &Api<Secret>, name: &str, hash_key: &[u8]) -> Result<Option<Secret>> {
    Ok(secrets
        .get_opt(name)
        .await
        .map_err(Error::Kube)?
        .map(|mut s| {
            super::stores::trim_secret(&mut s, hash_key);
            s
        }))
}

/// Whether the status names this installation as the one that syncs the object (not when new,
/// written by an earlier version, or taken over: the next write claims it).
fn claimed_here(ctx: &Context, status: &ManagedSecretStatus) -> bool {
    status.claimed_by.as_deref() == Some(ctx.settings.installation.as_str())
}

/// A server-side apply conflict names field managers; ours are `managed-secrets/<uid>`: say which
/// ManagedSecret that is.
fn name_managers(ctx: &Context, ns: &str, e: Error) -> Error {
    match e {
        Error::SecretConflict(m) => {
            let mut m = m;
            for uid in k8s::secret::our_managers_in(&m) {
                if let Some(name) = ctx.name_of(ns, &uid) {
                    m = m.replace(
                        &format!("{FIELD_MANAGER}/{uid}"),
                        &format!("ManagedSecret {name}"),
                    );
                }
            }
            Error::SecretConflict(m)
        }
        other => other,
    }
}

/// A failure: the Secret is left as it is; status and an Event say what failed and when the next
/// attempt is (`plan::failure` decides). `seen` is what the attempt observed, if it got that far.
pub(super) async fn fail(
    ms: &ManagedSecret,
    ctx: &Context,
    failure: Failure,
    seen: Option<&Observation>,
) -> Action {
    let memory = ctx.recall(ms);
    let prev = failure
        .written
        .or_else(|| ms.status.clone())
        .unwrap_or_default();
    let err = failure.error;
    let interval = match seen {
        Some(s) => Some(s.interval),
        None => validate_spec(ms, ctx.settings.min_refresh)
            .ok()
            .map(|i| ctx.stretched(i)),
    };
    let retry = plan::failure(
        &plan::Failing {
            ms,
            prev: &prev,
            error: &err,
            memory: &memory,
            interval,
            secret_intact: seen.is_none_or(Observation::holds_synced),
            now: Utc::now(),
            claimed_here: claimed_here(ctx, &prev),
        },
        rand::random(),
    );
    ctx.remember(
        ms,
        Memo {
            failures: Some(retry.failures),
            next_refresh: Some(retry.next_attempt),
            ..Memo::default()
        },
    );
    let reason = err.reason();
    ctx.metrics.failure(reason);
    if let (Some(t), Some(_)) = (retry.confirmed_at, &prev.synced_version_id) {
        ctx.metrics
            .freshness(&memory.key, t.timestamp(), retry.stale);
    }
    if err.is_forbidden() {
        tracing::error!(reason, error = %err, "the operator's RBAC does not allow a request it needs");
    } else {
        warn!(reason, transient = err.is_transient(), error = %err, retry_in = ?retry.wait, "sync failed");
    }
    if retry.news {
        ctx.event(ms, EventType::Warning, reason, err.to_string())
            .await;
    }
    if retry.write {
        if let Err(e) = write_status(ctx, ms, &retry.status).await {
            warn!(error = %e, "could not record the failure in status; retrying with back-off");
        }
    } else {
        debug!(
            reason,
            "the same failure as recorded: no status write, no Event"
        );
    }
    Action::requeue(retry.wait)
}
