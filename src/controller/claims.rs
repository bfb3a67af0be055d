//! Glue for `claim`: reads other installations' Leases (each at most every few seconds), leaves
//! their objects alone with a `Contested` condition and an Event, and takes over objects whose
//! installation is gone.

use super::{uid, Context};
use crate::claim::{self, Decision, Holder, CONTENDER_MANAGER, CONTESTED};
use crate::crd::ManagedSecret;
use crate::metrics::Metrics;
use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a Lease read answers for every object that names it.
const LEASE_FRESH: Duration = Duration::from_secs(5);
/// How often, at most, an object left to another installation is looked at again (its Lease may
/// lapse): its refresh interval when shorter.
const RECHECK: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct Claims {
    leases: Mutex<HashMap<String, (Instant, Holder)>>,
    /// Per claimant, since when its Lease has been seen free (released or missing).
    free_since: Mutex<HashMap<String, chrono::DateTime<Utc>>>,
    contested: Mutex<HashSet<String>>,
    /// Objects taken over (UID -> the installation they were taken from) whose status does not
    /// show this installation's claim yet: a reconcile before it lands takes over nothing again.
    taken: Mutex<HashMap<String, String>>,
}

impl Claims {
    fn set_contested(&self, uid: &str, contested: bool, metrics: &Metrics) {
        let mut c = self.contested.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if contested {
            c.insert(uid.to_string())
        } else {
            c.remove(uid)
        };
        if changed {
            metrics
                .claims
                .contested
                .set(i64::try_from(c.len()).unwrap_or(i64::MAX));
        }
    }

    /// Whether the object with this UID is left to another installation.
    pub(super) fn is_contested(&self, uid: &str) -> bool {
        self.contested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(uid)
    }

    /// The object is this installation's again (its status says so), or gone.
    pub(super) fn settled(&self, uid: &str, metrics: &Metrics) {
        self.set_contested(uid, false, metrics);
        self.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// Records a takeover from `from`; false when it was already taken over from `from`.
    fn first_take_over(&self, uid: &str, from: &str) -> bool {
        self.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string(), from.to_string())
            .as_deref()
            != Some(from)
    }
}

/// What the claimant's Lease says now (read at most every `LEASE_FRESH` per installation).
async fn holder(ctx: &Context, claimant: &str) -> Holder {
    if let Some((at, h)) = ctx
        .claims
        .leases
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(claimant)
    {
        if at.elapsed() < LEASE_FRESH {
            return h.clone();
        }
    }
    let Some((ns, name)) = claim::lease_of(claimant) else {
        return Holder::Gone;
    };
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), ns);
    let h = match api.get_opt(name).await {
        Ok(l) => {
            let spec = l.and_then(|l| l.spec);
            let now = Utc::now();
            let since = {
                let mut free = ctx
                    .claims
                    .free_since
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if claim::is_free(spec.as_ref()) {
                    Some(*free.entry(claimant.to_string()).or_insert(now))
                } else {
                    free.remove(claimant);
                    None
                }
            };
            claim::holder(spec.as_ref(), now, since)
        }
        Err(kube::Error::Api(e)) => Holder::Unknown(format!("{} {}", e.code, e.reason)),
        Err(_) => Holder::Unknown("the API server did not answer".into()),
    };
    ctx.claims
        .leases
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(claimant.to_string(), (Instant::now(), h.clone()));
    h
}

/// Whether this installation syncs `ms`: `None` when it does (taking it over if its claimant is
/// gone), else what to do instead (the object is left to its claimant).
pub(super) async fn check(ms: &ManagedSecret, ctx: &Context) -> Option<Action> {
    let me = ctx.settings.installation.as_str();
    let claimed = ms.status.as_ref().and_then(|s| s.claimed_by.clone());
    let h = match claimed.as_deref() {
        Some(c) if c != me => Some(holder(ctx, c).await),
        _ => None,
    };
    let decision = claim::decide(me, claimed.as_deref(), |_| h.unwrap_or(Holder::Gone));
    match decision {
        Decision::Sync => {
            ctx.claims.settled(&uid(ms), &ctx.metrics);
            if noted_by(ms, me) {
                // Left by this installation while another held it, and not removed when it took
                // over (that removal failed): removed now.
                if let Err(e) = apply_contested(ctx, ms, None).await {
                    warn!(error = %e, "could not remove the Contested condition");
                }
            }
            None
        }
        Decision::TakeOver { from } => {
            // An earlier reconcile took it over and its claim is not in the cache yet: once.
            if ctx.claims.first_take_over(&uid(ms), &from) {
                take_over(ms, ctx, &from).await;
            }
            None
        }
        Decision::LeaveTo { holder, note } => Some(leave(ms, ctx, &holder, note.as_deref()).await),
    }
}

async fn take_over(ms: &ManagedSecret, ctx: &Context, from: &str) {
    let me = &ctx.settings.installation;
    info!(
        from,
        "taking over a ManagedSecret whose installation is gone"
    );
    ctx.metrics.claims.taken_over.inc();
    ctx.claims.set_contested(&uid(ms), false, &ctx.metrics);
    if has_contested(ms) {
        // Our note that it was left alone goes (only the contender's field manager owns it).
        if let Err(e) = apply_contested(ctx, ms, None).await {
            warn!(error = %e, "could not remove the Contested condition");
        }
    }
    ctx.event(
        ms,
        EventType::Normal,
        crate::reason::TAKEN_OVER,
        format!("installation {me} syncs this ManagedSecret now: installation {from}, which did, no longer renews its Lease"),
    )
    .await;
}

/// Whether the object carries a `Contested` note written by installation `me`.
fn noted_by(ms: &ManagedSecret, me: &str) -> bool {
    let mine = format!("installation {me} also watches it");
    ms.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == CONTESTED && c.message.contains(&mine))
    })
}

fn has_contested(ms: &ManagedSecret) -> bool {
    ms.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == CONTESTED))
}

async fn leave(ms: &ManagedSecret, ctx: &Context, holder: &str, note: Option<&str>) -> Action {
    let me = &ctx.settings.installation;
    // Whatever this installation read for it stops being read.
    ctx.source.release(&uid(ms));
    ctx.claims.set_contested(&uid(ms), true, &ctx.metrics);
    let message = claim::contested_message(me, holder, note);
    let said = ms.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == CONTESTED && c.message == message)
    });
    if !said {
        warn!(
            claimed_by = holder,
            "another installation syncs this ManagedSecret: leaving it alone"
        );
        match apply_contested(ctx, ms, Some(&message)).await {
            Ok(()) => {
                ctx.event(ms, EventType::Warning, claim::CLAIMED_ELSEWHERE, message)
                    .await
            }
            Err(e) => warn!(error = %e, "could not set the Contested condition"),
        }
    }
    // Looked at again within its refresh interval (at most RECHECK): the claimant may be gone.
    let again =
        crate::crd::validate_spec(ms, ctx.settings.min_refresh).map_or(RECHECK, |i| i.min(RECHECK));
    Action::requeue(crate::schedule::jittered(again, rand::random::<f64>()))
}

/// Sets (Some) or removes (None) the `Contested` condition, as the contender's field manager:
/// the claimant's status writes never touch it.
async fn apply_contested(
    ctx: &Context,
    ms: &ManagedSecret,
    message: Option<&str>,
) -> kube::Result<()> {
    let conditions = match message {
        Some(m) => json!([{
            "type": CONTESTED,
            "status": "True",
            "reason": claim::CLAIMED_ELSEWHERE,
            "message": m,
            "observedGeneration": ms.metadata.generation,
            "lastTransitionTime": crate::status::ts(Utc::now()),
        }]),
        None => json!([]),
    };
    let api: Api<ManagedSecret> =
        Api::namespaced(ctx.client.clone(), &ms.namespace().unwrap_or_default());
    let body = json!({"apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret",
        "status": {"conditions": conditions}});
    api.patch_status(
        &ms.name_any(),
        &PatchParams::apply(CONTENDER_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_takeover_counts_once_until_the_status_shows_the_claim() {
        let (claims, metrics) = (Claims::default(), Metrics::default());
        assert!(claims.first_take_over("u1", "ops/a"));
        // A reconcile before the claim reaches the cache: nothing taken over again.
        assert!(!claims.first_take_over("u1", "ops/a"));
        assert!(claims.first_take_over("u2", "ops/a"));
        // Taken from another installation since (it claimed the object meanwhile): counts.
        assert!(claims.first_take_over("u1", "ops/b"));
        // The status shows this installation's claim (or the object is gone): forgotten.
        claims.settled("u1", &metrics);
        assert!(claims.first_take_over("u1", "ops/b"));
    }
}
