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

pub const TARGET_MISSING: &str = "RolloutTargetMissing";

/// What the step leaves for the sync: when to look again while a rollout waits, and the first
/// patch that failed (after the records, status and Events say so).
#[derive(Debug, Default)]
pub(super) struct Step {
    pub hint: Option<Duration>,
    pub failed: Option<Error>,
}

/// Remembers new targets with the version they run, restarts targets whose version moved once
/// the debounce window has passed (one annotation covering every managed Secret the workload uses,
/// so rotations in the same window make one rollout), reports missing named targets. Mutates
/// `status`.
pub(super) async fn step(
    ms: &ManagedSecret,
    ctx: &Context,
    st: &mut ManagedSecretStatus,
    now: DateTime<Utc>,
    sync: rollout::Sync,
) -> Result<Step> {
    let Some(spec) = &ms.spec.rollout else {
        status::set_condition(&mut st.conditions, TARGET_MISSING, None);
        st.rollouts.clear();
        st.rollout_pending_since = None;
        return Ok(Step::default());
    };
    let Some(version) = st.synced_version_id.clone() else {
        return Ok(Step::default());
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
    let missing_condition = (!missing.is_empty()).then(|| {
        let names: Vec<String> = missing
            .iter()
            .map(|(k, n)| format!("{}/{n}", k.as_str()))
            .collect();
        status::condition(
            &st.conditions,
            TARGET_MISSING,
            true,
            "TargetNotFound",
            format!("rollout targets not found: {}", names.join(", ")),
            ms.metadata.generation,
            now,
        )
    });
    status::set_condition(&mut st.conditions, TARGET_MISSING, missing_condition);
    let mut out = Step::default();
    if due.is_empty() {
        st.rollout_pending_since = None;
    } else if spec.strategy == RolloutStrategy::None {
        for r in records.iter_mut().filter(|r| is_due(&due, r)) {
            r.version = Some(version.clone());
            r.error = None;
        }
        st.rollout_pending_since = None;
    } else {
        let since = status::parse_ts(st.rollout_pending_since.as_deref()).unwrap_or(now);
        st.rollout_pending_since = Some(ts(since));
        let debounce = schedule::debounce(spec.debounce.as_deref(), ctx.settings.rollout_debounce)?;
        if let Some(left) = rollout::debounce_left(since, now, debounce) {
            debug!(
                ?left,
                targets = due.len(),
                "rollout waits for the debounce window"
            );
            out.hint = Some(left);
        } else {
            let peers = peer_versions(ms, ctx, &ns, &workloads, &version).await?;
            out.failed = trigger(
                ms,
                ctx,
                &workloads,
                &due,
                &peers,
                &mut records,
                &version,
                now,
            )
            .await;
            if out.failed.is_none() {
                st.rollout_pending_since = None;
            }
        }
    }
    st.rollouts = records;
    Ok(out)
}

fn is_due(due: &[TargetRef], r: &RolloutRecord) -> bool {
    due.iter().any(|(k, n)| *k == r.kind && *n == r.name)
}

/// Patches every due target (or finds it already rolled to the same set of versions); records the
/// result per target. Returns the first failure.
#[allow(clippy::too_many_arguments)]
async fn trigger(
    ms: &ManagedSecret,
    ctx: &Context,
    workloads: &[Workload],
    due: &[TargetRef],
    peers: &PeerVersions,
    records: &mut [RolloutRecord],
    version: &str,
    now: DateTime<Utc>,
) -> Option<Error> {
    let ns = ms.namespace().unwrap_or_default();
    let secret = ms.target_name();
    let mut first_failure = None;
    for (kind, name) in due {
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
        let running = workloads
            .iter()
            .find(|w| w.kind == *kind && &w.name == name)
            .and_then(|w| w.current_version_annotation());
        if running == Some(value.as_str()) {
            // Already rolled to this set of versions (by another ManagedSecret in the window).
            rec.version = Some(version.to_string());
            rec.rolled_out_at = Some(ts(now));
            rec.error = None;
            ctx.metrics.rollout(kind.as_str(), "coalesced");
            continue;
        }
        match k8s::workloads::set_version_annotation(&ctx.client, &ns, *kind, name, &value).await {
            Ok(wref) => {
                rec.version = Some(version.to_string());
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
            }
            Err(e) => {
                rec.error = Some(e.to_string());
                ctx.metrics.rollout(kind.as_str(), "failed");
                ctx.event(
                    ms,
                    EventType::Warning,
                    "RolloutFailed",
                    format!("{} {name}: {e}", kind.as_str()),
                )
                .await;
                first_failure.get_or_insert(e);
            }
        }
    }
    first_failure
}

type PeerVersions = HashMap<(WorkloadKind, String), BTreeMap<String, String>>;

/// For each workload, the synced versions of every ManagedSecret in the namespace that targets it
/// (this one with `version`).
async fn peer_versions(
    ms: &ManagedSecret,
    ctx: &Context,
    ns: &str,
    workloads: &[Workload],
    version: &str,
) -> Result<PeerVersions> {
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
    Ok(out)
}
