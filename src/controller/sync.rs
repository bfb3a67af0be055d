//! One sync of a ManagedSecret: read the target Secret, decide (schedule::plan) whether AWS must be
//! asked, fetch through the source, render, write only what changed, release a renamed target,
//! run the rollout step, record status. Every error ends in [`fail`].

use super::{policies, retry_wait, rollout, uid, Context};
use crate::crd::{
    CreationPolicy, ManagedSecret, ManagedSecretStatus, FIELD_MANAGER, FORCE_SYNC_ANNOTATION,
    MANAGED_BY_LABEL,
};
use crate::error::{Error, Result};
use crate::k8s;
use crate::policy::Identity;
use crate::schedule::{self, Observed, Plan};
use crate::source::{FetchRequest, SecretRef, VersionSelector};
use crate::status::{self, Failed, Synced, READY};
use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Most labels or annotations a ManagedSecret may put on its Secret (also the CRD's bound).
pub const MAX_TARGET_METADATA: usize = 32;
/// Most named rollout targets (also the CRD's bound).
pub const MAX_ROLLOUT_TARGETS: usize = 64;

/// Spec checks beyond the schema (which an older CRD may not have). Pure. Returns the refresh
/// interval.
pub fn validate_spec(ms: &ManagedSecret, min_refresh: Duration) -> Result<Duration> {
    let spec = &ms.spec;
    let interval = schedule::refresh_interval(spec.refresh_interval.as_deref(), min_refresh)?;
    if spec.secret_id.is_empty() || spec.secret_id.len() > 2048 {
        return Err(Error::InvalidSpec(
            "secretId must be 1 to 2048 characters".into(),
        ));
    }
    let target = ms.target_name();
    if !k8s::valid_secret_name(&target) {
        return Err(Error::InvalidSpec(format!(
            "target.name must be a DNS-1123 subdomain (lower case letters, digits, '-' and '.', at most 253 characters); got {} characters",
            target.len()
        )));
    }
    if spec.version_stage.as_deref() == Some("AWSPENDING") {
        return Err(Error::InvalidSpec("versionStage AWSPENDING is refused: a pending value is not yet in use and may never be".into()));
    }
    if spec.version_id.is_some() && spec.version_stage.is_some() {
        return Err(Error::InvalidSpec(
            "set either versionStage or versionId, not both".into(),
        ));
    }
    if target.starts_with(k8s::HELM_RELEASE_PREFIX) {
        return Err(Error::InvalidSpec(format!(
            "target.name {}* is Helm's release storage; pick another name",
            k8s::HELM_RELEASE_PREFIX
        )));
    }
    for (what, keys) in [
        ("target.labels", &spec.target.labels),
        ("target.annotations", &spec.target.annotations),
    ] {
        if keys.len() > MAX_TARGET_METADATA {
            return Err(Error::InvalidSpec(format!(
                "{what} has {} entries; at most {MAX_TARGET_METADATA}",
                keys.len()
            )));
        }
        if let Some(k) = keys.keys().find(|k| k8s::reserved_key(k)) {
            let k: String = k.chars().take(100).collect();
            return Err(Error::InvalidSpec(format!(
                "{what} key {k:?} is reserved for the operator (managedsecrets.io/* and {MANAGED_BY_LABEL})"
            )));
        }
    }
    if let Some(r) = &spec.rollout {
        schedule::debounce(r.debounce.as_deref(), Duration::ZERO)?;
        if let Some(sel) = &r.selector {
            if !crate::labels::selects_by_presence(sel) {
                return Err(Error::InvalidSpec(
                    "rollout.selector selects by no label a workload has (it is empty, or only NotIn/DoesNotExist) and would match nearly every workload in the namespace; give it matchLabels, or an In or Exists expression".into(),
                ));
            }
        }
        if r.targets.len() > MAX_ROLLOUT_TARGETS {
            return Err(Error::InvalidSpec(format!(
                "rollout.targets has {} entries; at most {MAX_ROLLOUT_TARGETS}",
                r.targets.len()
            )));
        }
    }
    Ok(interval)
}

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

/// What a failed sync had learnt before it failed.
#[derive(Debug, Default, Clone)]
pub(super) struct Known {
    pub interval: Option<Duration>,
    pub secret_intact: Option<bool>,
    /// The status this attempt wrote before it failed (a failed rollout after a good sync).
    pub status: Option<ManagedSecretStatus>,
}

/// Syncs `ms`; failures are recorded (status, Event, back-off) and never returned.
pub(super) async fn apply(ms: &ManagedSecret, ctx: &Context) -> Result<Action> {
    if !policies::ready(ctx) {
        // The grants are not known yet: deciding now could deny what a policy allows.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut known = Known::default();
    let started = std::time::Instant::now();
    let out = match run(ms, ctx, &mut known).await {
        Ok(a) => a,
        Err(e) => fail(ms, ctx, e, known).await,
    };
    ctx.attempted(ms, started);
    Ok(out)
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

async fn run(ms: &ManagedSecret, ctx: &Context, known: &mut Known) -> Result<Action> {
    let now = Utc::now();
    let ns = ms.namespace().unwrap_or_default();
    let status = ms.status.clone().unwrap_or_default();
    let force = ms.annotations().get(FORCE_SYNC_ANNOTATION).cloned();
    let interval = ctx.stretched(validate_spec(ms, ctx.settings.min_refresh)?);
    known.interval = Some(interval);
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
    let mapping = ctx.mapping(ms)?;
    let hash_key = ctx.settings.hash_key.0.clone();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let target = ms.target_name();
    // From the watch cache. A Secret the cache does not hold (not ours, or not there) is read
    // from the API only when the answer matters now: whether a synced Secret is intact; else just
    // before a write, once AWS has answered, so that a ManagedSecret that keeps failing costs no
    // Kubernetes read. Either way as the cache keeps it: our keys, values as digests.
    let mut current: Option<Option<Secret>> = match super::stores::secret(&ctx.scopes, &ns, &target)
    {
        Some(s) => Some(Some(s)),
        None if status.data_hash.is_some() => {
            Some(read_secret(&secrets, &target, &hash_key).await?)
        }
        None => None,
    };
    let intact = match &status.data_hash {
        None => true,
        Some(h) => {
            current
                .as_ref()
                .and_then(Option::as_ref)
                .and_then(|c| k8s::current_hash(c, &status.synced_keys, &hash_key))
                .as_deref()
                == Some(h.as_str())
        }
    };
    known.secret_intact = Some(intact && current.as_ref().is_some_and(Option::is_some));
    let plan = schedule::plan(&Observed {
        now,
        generation: ms.metadata.generation,
        observed_generation: status.observed_generation,
        force_sync: force.clone(),
        last_force_sync: status.last_force_sync.clone(),
        // The schedule lives in memory; the status has it as of the last change (after a restart).
        next_refresh: ctx
            .next_refresh(ms)
            .or_else(|| status::parse_ts(status.next_refresh_time.as_deref()))
            // Never later than the interval in force now, jitter included (shorter again when
            // events stop flowing).
            .map(|t| {
                match ctx
                    .confirmed_at(ms)
                    .and_then(|c| schedule::after(c, interval + interval / 10))
                {
                    Some(cap) => t.min(cap),
                    None => t,
                }
            }),
        ready: status::is_true(&status.conditions, READY),
        secret_intact: intact,
        access_granted: status
            .conditions
            .iter()
            .any(|c| c.type_ == READY && c.reason == "PolicyDenied"),
        source_moved,
    });
    let bypass_cache = match plan {
        Plan::Rest { until } => {
            let mut wait = (until - now).to_std().unwrap_or(ctx.settings.min_refresh);
            if ms.spec.rollout.is_some() {
                // A rollout waiting for its debounce window, or a workload that appeared or
                // changed: the rollout step needs no AWS call (and no API read: the caches).
                let mut st = status.clone();
                let step = rollout::step(ms, ctx, &mut st, now, crate::rollout::Sync::Same).await?;
                if let Some(hint) = step.hint {
                    wait = wait.min(hint);
                }
                write_status(ctx, ms, &st).await?;
                if let Some(e) = step.failed {
                    known.status = Some(st);
                    return Err(e);
                }
            }
            debug!(until = %until, "in sync; resting");
            return Ok(Action::requeue(wait));
        }
        Plan::Sync { bypass_cache, why } => {
            debug!(why, bypass_cache, "syncing");
            bypass_cache
        }
    };
    let req = FetchRequest {
        secret: secret_ref(ms, identity),
        bypass_cache,
        max_age: interval,
        owner: uid(ms),
    };
    let fetched = ctx.source.fetch(&req).await?;
    let current = match current.take() {
        Some(c) => c,
        None if reads_first(ms, &status) => read_secret(&secrets, &target, &hash_key).await?,
        // Not read: a new object's Secret is created, which never writes into one that exists.
        None => None,
    };
    check_target(ctx, ms, current.as_ref())?;
    if let Some(id) = &ms.spec.version_id {
        let stages = &fetched.version_stages;
        if !stages.is_empty() && stages.iter().all(|s| s == "AWSPENDING") {
            return Err(Error::InvalidSpec(format!(
                "versionId {id} is only AWSPENDING: a pending value is not yet in use and may never be"
            )));
        }
    }
    let data = mapping.render(&fetched.value)?;
    let desired = k8s::desired_secret(ms, &data, &fetched.version_id);
    let changed = write_secret(ctx, ms, &secrets, current.as_ref(), &desired)
        .await
        .map_err(|e| name_managers(ctx, &ns, e))?;
    // Confirmed only once the Secret holds the value (a confirmation resets the failure count
    // that a target conflict's back-off doubles from).
    ctx.confirmed(ms, now);
    if changed {
        ctx.metrics.syncs.changed.inc();
        info!(secret = %target, version = %fetched.version_id, keys = data.0.len(), "Secret written");
    }
    // Events mark changes people act on: a new version, a repaired Secret. A first sync has
    // none (its Ready condition says it; a cold start of 10,000 objects is not 10,000 Events).
    if changed && status.synced_version_id.is_some() {
        ctx.event(
            ms,
            EventType::Normal,
            "Synced",
            format!(
                "Secret {target} now holds AWS version {} ({})",
                fetched.version_id,
                if ms.spec.data.all_keys {
                    // The names came from the AWS value: Events are readable more widely.
                    format!("{} keys", data.0.len())
                } else {
                    format!("keys: {}", data.keys().join(", "))
                }
            ),
        )
        .await;
    }
    if let Some(old) = status.secret_name.as_ref().filter(|o| **o != target) {
        // target.name changed: the previous Secret is given back as a deletion would.
        k8s::release_secret(&secrets, ms, old).await?;
        info!(old = %old, new = %target, "released the previous target Secret");
        ctx.event(
            ms,
            EventType::Normal,
            "Released",
            format!(
                "Secret {old} is no longer the target (now {target}); released per deletionPolicy {:?}",
                k8s::deletion_policy(ms)
            ),
        )
        .await;
    }
    let next = schedule::after(now, schedule::jittered(interval, rand::random::<f64>()))
        .ok_or_else(|| Error::InvalidSpec("refreshInterval is too long".into()))?;
    let mut new_status = status::synced(
        &status,
        Synced {
            generation: ms.metadata.generation,
            secret_id: ms.spec.secret_id.clone(),
            target: target.clone(),
            version_id: fetched.version_id.clone(),
            version_stages: fetched.version_stages.clone(),
            data_hash: data.hash(&hash_key),
            keys: status_keys(ms, &data, &hash_key),
            now,
            next_refresh: next,
            forced: if bypass_cache { force } else { None },
        },
    );
    let sync_kind = match &status.synced_version_id {
        None => crate::rollout::Sync::First,
        Some(v) if *v != fetched.version_id => crate::rollout::Sync::NewVersion,
        Some(_) => crate::rollout::Sync::Same,
    };
    let mut wait = (next - now).to_std().unwrap_or(interval);
    let step = rollout::step(ms, ctx, &mut new_status, now, sync_kind).await?;
    if let Some(hint) = step.hint {
        wait = wait.min(hint);
    }
    ctx.schedule(ms, next);
    if changed || unclaimed(ctx, &status) || !status::same_apart_from_times(&status, &new_status) {
        write_status(ctx, ms, &new_status).await?;
    } else {
        debug!("nothing new: no status write");
    }
    if changed && sync_kind == crate::rollout::Sync::NewVersion {
        ctx.metrics
            .syncs
            .lag
            .observe(fetched.seen_at.elapsed().as_secs_f64());
    }
    if let Some(e) = step.failed {
        known.status = Some(new_status);
        return Err(e);
    }
    Ok(Action::requeue(wait))
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
        .and_then(k8s::owner_uid)
        .and_then(|u| ctx.name_of(&ns, &u));
    k8s::check_target(ms, current, owner.as_deref())?;
    k8s::check_type_change(ms, current)
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
    let manager = k8s::field_manager(ms);
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
    if k8s::in_sync(current, desired, &manager, hash_key) {
        return Ok(false);
    }
    if ms.spec.target.creation_policy != CreationPolicy::Merge
        && k8s::create::created_by(current, &manager)
    {
        // Once in the Secret's life: what the create wrote becomes the apply's (k8s::create).
        // (Never for Merge: it creates nothing, and the Secret it merges into is someone else's.)
        k8s::create::adopt_created_fields(secrets, ms, current).await?;
    }
    k8s::apply_secret(secrets, ms, desired).await?;
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

/// Whether the status does not yet name this installation as the one that syncs the object
/// (new, written by an earlier version, or taken over): the next write claims it.
fn unclaimed(ctx: &Context, status: &ManagedSecretStatus) -> bool {
    status.claimed_by.as_deref() != Some(ctx.settings.installation.as_str())
}

/// A server-side apply conflict names field managers; ours are `managed-secrets/<uid>`: say which
/// ManagedSecret that is.
fn name_managers(ctx: &Context, ns: &str, e: Error) -> Error {
    match e {
        Error::SecretConflict(m) => {
            let mut m = m;
            for uid in k8s::our_managers_in(&m) {
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

/// The key names status.syncedKeys shows: as written when the spec names them, as digests when
/// they came from the AWS value (allKeys), sorted.
fn status_keys(
    ms: &ManagedSecret,
    data: &crate::render::SecretData,
    hash_key: &[u8],
) -> Vec<String> {
    if !ms.spec.data.all_keys {
        return data.keys();
    }
    let mut keys: Vec<String> = data
        .keys()
        .iter()
        .map(|k| crate::render::key_digest(hash_key, k))
        .collect();
    keys.sort();
    keys
}

/// A failure: the Secret is left as it is; status and an Event say what failed and when the next
/// attempt is. Transient errors back off (5s ... 5m with jitter, or what a 429 asked for);
/// permanent ones wait for a change, or retry at the refresh interval doubling to an hour.
pub(super) async fn fail(ms: &ManagedSecret, ctx: &Context, err: Error, known: Known) -> Action {
    let now = Utc::now();
    let prev = known
        .status
        .clone()
        .or_else(|| ms.status.clone())
        .unwrap_or_default();
    let failures = ctx.failed(ms);
    let transient = err.is_transient();
    let interval = known.interval.unwrap_or(schedule::DEFAULT_REFRESH);
    let wait = if transient {
        retry_wait(&err, failures)
    } else {
        // A permanent failure that repeats costs less and less: doubling from the interval.
        schedule::jittered(
            schedule::permanent_retry(interval, failures),
            rand::random::<f64>(),
        )
    };
    let next_attempt = schedule::after(now, wait).unwrap_or(now);
    ctx.schedule(ms, next_attempt);
    let confirmed_at = ctx
        .confirmed_at(ms)
        .or_else(|| status::parse_ts(prev.last_sync_time.as_deref()));
    let reason = err.reason();
    let (mut st, stale) = status::failed(
        &prev,
        Failed {
            generation: ms.metadata.generation,
            secret_id: ms.spec.secret_id.clone(),
            target: ms.target_name(),
            reason,
            message: err.to_string(),
            transient,
            secret_intact: known.secret_intact.unwrap_or(true),
            now,
            next_attempt,
            confirmed_at,
            refresh_interval: interval,
        },
    );
    st.failures = failures;
    ctx.metrics.failure(reason);
    if let (Some(t), Some(_)) = (confirmed_at, &prev.synced_version_id) {
        let key = ctx.with_state(ms, |st| st.key.clone());
        ctx.metrics.freshness(&key, t.timestamp(), stale);
    }
    if err.is_forbidden() {
        tracing::error!(reason, error = %err, "the operator's RBAC does not allow a request it needs");
    } else {
        warn!(reason, transient, error = %err, retry_in = ?wait, "sync failed");
    }
    // The same failure again costs no request: status and the Event already say it (the
    // failures metric counts every attempt).
    let news = status::failure_is_news(&prev, &st);
    if news || unclaimed(ctx, &prev) {
        if news {
            ctx.event(ms, EventType::Warning, reason, err.to_string())
                .await;
        }
        if let Err(e) = write_status(ctx, ms, &st).await {
            warn!(error = %e, "could not record the failure in status; retrying with back-off");
        }
    } else {
        debug!(
            reason,
            "the same failure as recorded: no status write, no Event"
        );
    }
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(spec: serde_json::Value) -> ManagedSecret {
        let mut s = json!({"secretId": "team/db", "data": {"allKeys": true}});
        if let (Some(base), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(
            json!({"apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "db", "namespace": "team", "uid": "u1"}, "spec": s}),
        )
        .unwrap()
    }

    fn refused(spec: serde_json::Value) -> String {
        match validate_spec(&ms(spec), Duration::from_secs(10)) {
            Err(Error::InvalidSpec(m)) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn reserved_labels_and_annotations_are_refused() {
        assert_eq!(
            refused(json!({"target": {"annotations": {"managedsecrets.io/owner-uid": "u1"}}})),
            "target.annotations key \"managedsecrets.io/owner-uid\" is reserved for the operator (managedsecrets.io/* and app.kubernetes.io/managed-by)"
        );
        refused(json!({"target": {"annotations": {"x.managedsecrets.io/y": "1"}}}));
        refused(json!({"target": {"labels": {"app.kubernetes.io/managed-by": "managed-secrets"}}}));
        refused(json!({"target": {"labels": {"managedsecrets.io/allow-merge": "db"}}}));
        assert!(validate_spec(
            &ms(json!({"target": {"labels": {"team": "a", "notmanagedsecrets.io/x": "1"}, "annotations": {"example.com/x": "1"}}})),
            Duration::from_secs(10)
        )
        .is_ok());
    }

    #[test]
    fn helm_release_names_and_selectors_that_match_everything_are_refused() {
        assert_eq!(
            refused(json!({"target": {"name": "sh.helm.release.v1.app.v3"}})),
            "target.name sh.helm.release.v1.* is Helm's release storage; pick another name"
        );
        let m = refused(
            json!({"rollout": {"selector": {"matchExpressions": [{"key": "nope", "operator": "DoesNotExist"}]}}}),
        );
        assert!(m.starts_with("rollout.selector selects by no label"), "{m}");
        refused(json!({"rollout": {"selector": {}}}));
        assert!(validate_spec(
            &ms(json!({"rollout": {"selector": {"matchLabels": {"app": "api"}}}})),
            Duration::from_secs(10)
        )
        .is_ok());
    }
}
