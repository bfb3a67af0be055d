//! The rollout step of a sync, after the Secret was written: which targets need a restart
//! (`crate::rollout` decides), the debounce window, and the pod-template patch (`k8s::workloads`).

use super::Context;
use crate::crd::{
    ManagedSecret, ManagedSecretStatus, RolloutRecord, RolloutStrategy, WorkloadKind,
};
use crate::error::{Error, Result};
use crate::k8s;
use crate::rollout::{self, TargetRef, Workload};
use crate::schedule;
use crate::status::{self, ts};
use chrono::{DateTime, Utc};
use kube::runtime::events::{Event as KEvent, EventType};
use kube::ResourceExt;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tracing::{debug, info, warn};

pub use crate::reason::ROLLOUT_TARGET_MISSING as TARGET_MISSING;

/// Remembers new targets with the version they run, restarts targets whose version moved once
/// the debounce window has passed (one annotation covering every managed Secret the workload uses,
/// so rotations in the same window make one rollout), reports missing named targets. Mutates
/// `st` (also when a patch fails: the records say which), and returns when to look again while a
/// rollout waits, or the first patch that failed.
pub(super) async fn step(
    ms: &ManagedSecret,
    ctx: &Context,
    st: &mut ManagedSecretStatus,
    now: DateTime<Utc>,
    sync: rollout::Sync,
) -> Result<Option<Duration>> {
    let Some(spec) = &ms.spec.rollout else {
        status::set_condition(&mut st.conditions, TARGET_MISSING, None);
        st.rollouts.clear();
        st.rollout_pending_since = None;
        return Ok(None);
    };
    let Some(version) = st.synced_version_id.clone() else {
        return Ok(None);
    };
    let ns = ms.namespace().unwrap_or_default();
    let secret = ms.target_name();
    let workloads = ctx.workloads(&ns);
    let (targets, missing) = rollout::select_targets(spec, &secret, &workloads);
    let (mut records, due) = rollout::records(
        &st.rollouts,
        &targets,
        &missing,
        &version,
        sync,
        spec.on_create,
        &ns,
    );
    report_missing(ms, st, &missing, now);
    let out = if due.is_empty() {
        st.rollout_pending_since = None;
        Ok(None)
    } else if spec.strategy == RolloutStrategy::None {
        for r in records.iter_mut().filter(|r| is_due(&due, r)) {
            r.version = Some(version.clone());
            r.error = None;
        }
        st.rollout_pending_since = None;
        Ok(None)
    } else {
        let due = Due {
            workloads: &workloads,
            targets: &due,
            version: &version,
            now,
        };
        roll(ms, ctx, spec, st, &due, &mut records).await
    };
    st.rollouts = records;
    out
}

/// The condition that names the rollout targets that do not exist (none when all do).
fn report_missing(
    ms: &ManagedSecret,
    st: &mut ManagedSecretStatus,
    missing: &[TargetRef],
    now: DateTime<Utc>,
) {
    let missing_condition = (!missing.is_empty()).then(|| {
        let names: Vec<String> = missing
            .iter()
            .map(|(k, n)| format!("{}/{n}", k.as_str()))
            .collect();
        status::condition(
            &st.conditions,
            TARGET_MISSING,
            true,
            crate::reason::TARGET_NOT_FOUND,
            format!("rollout targets not found: {}", names.join(", ")),
            ms.metadata.generation,
            now,
        )
    });
    status::set_condition(&mut st.conditions, TARGET_MISSING, missing_condition);
}

fn is_due(due: &[TargetRef], r: &RolloutRecord) -> bool {
    due.iter().any(|(k, n)| *k == r.kind && *n == r.name)
}

/// The targets due for a restart, and for which version.
struct Due<'a> {
    workloads: &'a [Workload],
    targets: &'a [TargetRef],
    version: &'a str,
    now: DateTime<Utc>,
}

/// Restarts the due targets once the debounce window (from the first pending sync) has passed;
/// until then, how long it has left.
async fn roll(
    ms: &ManagedSecret,
    ctx: &Context,
    spec: &crate::crd::RolloutSpec,
    st: &mut ManagedSecretStatus,
    due: &Due<'_>,
    records: &mut [RolloutRecord],
) -> Result<Option<Duration>> {
    let since = status::parse_ts(st.rollout_pending_since.as_deref()).unwrap_or(due.now);
    st.rollout_pending_since = Some(ts(since));
    let debounce = schedule::debounce(spec.debounce.as_deref(), ctx.settings.rollout_debounce)?;
    if let Some(left) = rollout::debounce_left(since, due.now, debounce) {
        debug!(
            ?left,
            targets = due.targets.len(),
            "rollout waits for the debounce window"
        );
        return Ok(Some(left));
    }
    let ns = ms.namespace().unwrap_or_default();
    let peers = peer_versions(ms, ctx, &ns, due.workloads, due.version);
    match trigger(ms, ctx, due, &peers, records).await {
        None => {
            st.rollout_pending_since = None;
            Ok(None)
        }
        Some(e) => Err(e),
    }
}

/// Patches every due target (or finds it already rolled to the same set of versions); records the
/// result per target. Returns the first failure.
async fn trigger(
    ms: &ManagedSecret,
    ctx: &Context,
    due: &Due<'_>,
    peers: &PeerVersions,
    records: &mut [RolloutRecord],
) -> Option<Error> {
    let mut first_failure = None;
    for (kind, name) in due.targets {
        let value = rollout::annotation_value(
            &peers
                .get(&(*kind, name.clone()))
                .cloned()
                .unwrap_or_default(),
        );
        let Some(rec) = records
            .iter_mut()
            .find(|r| r.kind == *kind && &r.name == name)
        else {
            continue;
        };
        let running = due
            .workloads
            .iter()
            .find(|w| w.kind == *kind && &w.name == name)
            .and_then(|w| w.current_version_annotation());
        let outcome = if running == Some(value.as_str()) {
            // Already rolled to this set of versions (by another ManagedSecret in the window).
            ctx.metrics.rollout(kind.as_str(), "coalesced");
            Ok(())
        } else {
            restart(ms, ctx, *kind, name, &value, due.version).await
        };
        match outcome {
            Ok(()) => {
                rec.version = Some(due.version.to_string());
                rec.rolled_out_at = Some(ts(due.now));
                rec.error = None;
            }
            Err(e) => {
                rec.error = Some(e.to_string());
                first_failure.get_or_insert(e);
            }
        }
    }
    first_failure
}

/// Restarts one workload (its pod-template annotation); says so on the ManagedSecret and on the
/// workload, or says why not.
async fn restart(
    ms: &ManagedSecret,
    ctx: &Context,
    kind: WorkloadKind,
    name: &str,
    value: &str,
    version: &str,
) -> Result<()> {
    let ns = ms.namespace().unwrap_or_default();
    let secret = ms.target_name();
    match k8s::workloads::set_version_annotation(&ctx.client, &ns, kind, name, value).await {
        Ok(wref) => {
            ctx.metrics.rollout(kind.as_str(), "triggered");
            info!(workload = %format!("{}/{name}", kind.as_str()), %version, "rollout triggered");
            ctx.event(
                ms,
                EventType::Normal,
                crate::reason::ROLLED_OUT,
                format!(
                    "{} {name} restarted for AWS version {version} of Secret {secret}",
                    kind.as_str()
                ),
            )
            .await;
            let ev = KEvent {
                type_: EventType::Normal,
                reason: crate::reason::ROLLED_OUT.into(),
                note: Some(format!(
                    "restarted by ManagedSecret {}: Secret {secret} is now AWS version {version}",
                    ms.name_any()
                )),
                action: "Rollout".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&ev, &wref).await {
                warn!(error = %e, "could not publish the workload event");
            }
            Ok(())
        }
        Err(e) => {
            ctx.metrics.rollout(kind.as_str(), "failed");
            ctx.event(
                ms,
                EventType::Warning,
                crate::reason::ROLLOUT_FAILED,
                format!("{} {name}: {e}", kind.as_str()),
            )
            .await;
            Err(e)
        }
    }
}

type PeerVersions = HashMap<(WorkloadKind, String), BTreeMap<String, String>>;

/// For each workload, the synced versions of every ManagedSecret in the namespace that targets it
/// (this one with `version`).
fn peer_versions(
    ms: &ManagedSecret,
    ctx: &Context,
    ns: &str,
    workloads: &[Workload],
    version: &str,
) -> PeerVersions {
    let all = ctx.managed_in(ns);
    let mut out: PeerVersions = HashMap::new();
    for other in all
        .iter()
        .map(|o| o.as_ref())
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
    out
}
