//! Pure: which installation of the operator a ManagedSecret belongs to.
//!
//! Two installations watching the same namespaces (a second chart release during a migration, two
//! teams, a local `managed-secrets run` against a shared cluster) would otherwise both sync, both
//! write status, and with different AWS endpoints flip the Secret between their values. Each
//! installation is named by its Lease (`<namespace>/<name>`, held by one of its replicas and
//! renewed while it runs, with or without leader election). The installation that writes a
//! ManagedSecret's status records itself in `status.claimedBy`; another installation that finds
//! the claim leaves the object alone while the claimant's Lease is renewed, and says so (the
//! `Contested` condition, an Event); once that Lease is released or lapses, it takes over.

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::LeaseSpec;

/// The reason of `Contested=True`.
pub use crate::reason::CLAIMED_ELSEWHERE;
/// The condition a second installation sets on an object it leaves to the first.
pub use crate::reason::CONTESTED;
/// The field manager of the `Contested` condition (never the one of the rest of the status, so
/// that the claimant's status writes and the contender's note do not undo each other).
pub const CONTENDER_MANAGER: &str = "managed-secrets-contender";

/// The installation's name: its Lease.
pub fn installation(lease_namespace: &str, lease_name: &str) -> String {
    format!("{lease_namespace}/{lease_name}")
}

/// `(namespace, name)` of a claim's Lease, when the claim is well-formed.
pub fn lease_of(claim: &str) -> Option<(&str, &str)> {
    let (ns, name) = claim.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    (ok(ns) && ok(name)).then_some((ns, name))
}

/// What the claimant's Lease says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Held and renewed lately: the installation runs.
    Live,
    /// Missing, released, or not renewed for longer than it promised: the installation is gone.
    Gone,
    /// The Lease could not be read (the reason, for the condition): assumed to run.
    Unknown(String),
}

/// A Lease's duration when it does not say (the chart's `leaderElection.leaseDuration`).
pub const DEFAULT_LEASE_SECONDS: u64 = 15;

/// Whether a Lease shows a running installation at `now`: a holder, renewed within its
/// duration plus as much again (a renewal late by a full period is still a live installation
/// under load, not a dead one). A Lease that nobody holds, or that is missing, was released:
/// by an installation that is gone, or by a replica that restarts (a rollout, a failover) and
/// takes it again in a moment. So it counts as gone only once it has been free (since
/// `free_since`, when this installation first saw it free) for twice its duration.
pub fn holder(
    lease: Option<&LeaseSpec>,
    now: DateTime<Utc>,
    free_since: Option<DateTime<Utc>>,
) -> Holder {
    let secs = lease
        .and_then(|l| l.lease_duration_seconds)
        .map_or(DEFAULT_LEASE_SECONDS, |s| u64::try_from(s).unwrap_or(0))
        .clamp(1, 3600);
    let twice = chrono::Duration::seconds(i64::try_from(secs.saturating_mul(2)).unwrap_or(7200));
    let within = |since: DateTime<Utc>| since.checked_add_signed(twice).is_some_and(|t| t >= now);
    let Some(spec) = lease.filter(|l| !is_free(Some(l))) else {
        return match free_since {
            Some(since) if !within(since) => Holder::Gone,
            _ => Holder::Live,
        };
    };
    match spec.renew_time.as_ref() {
        // Held but never renewed: the holder just took it.
        None => Holder::Live,
        Some(r) => {
            let renewed = DateTime::<Utc>::from_timestamp(r.0.as_second(), 0).unwrap_or(now);
            if within(renewed) {
                Holder::Live
            } else {
                Holder::Gone
            }
        }
    }
}

/// Whether a Lease nobody holds (or a missing one) is what `holder` sees.
pub fn is_free(lease: Option<&LeaseSpec>) -> bool {
    lease
        .and_then(|l| l.holder_identity.as_deref())
        .is_none_or(str::is_empty)
}

/// What an installation does with a ManagedSecret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Its own (or nobody's yet): sync it.
    Sync,
    /// Claimed by an installation that is gone: sync it, taking it over.
    TakeOver { from: String },
    /// Claimed by another installation that runs (or may): leave it alone.
    LeaveTo {
        holder: String,
        note: Option<String>,
    },
}

/// `me` finds `claimed_by` on an object; `holder` is what the claimant's Lease says (asked only
/// when the claim is another installation's).
pub fn decide(me: &str, claimed_by: Option<&str>, holder: impl FnOnce(&str) -> Holder) -> Decision {
    match claimed_by {
        None => Decision::Sync,
        Some(c) if c == me => Decision::Sync,
        // A claim that names no Lease cannot be checked: nobody can hold it.
        Some(c) if lease_of(c).is_none() => Decision::TakeOver {
            from: c.to_string(),
        },
        Some(c) => match holder(c) {
            Holder::Live => Decision::LeaveTo {
                holder: c.to_string(),
                note: None,
            },
            Holder::Unknown(why) => Decision::LeaveTo {
                holder: c.to_string(),
                note: Some(why),
            },
            Holder::Gone => Decision::TakeOver {
                from: c.to_string(),
            },
        },
    }
}

/// The `Contested` condition's message.
pub fn contested_message(me: &str, holder: &str, note: Option<&str>) -> String {
    let why = match note {
        None => format!("its Lease {holder} is renewed"),
        Some(n) => format!("its Lease {holder} could not be read ({n}), so it is assumed to run"),
    };
    format!(
        "installation {holder} syncs this ManagedSecret ({why}); installation {me} also watches it and leaves it alone. Two installations should not watch the same namespaces: uninstall one, or narrow its watchNamespaces"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>, secs: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: renewed.map(|s| {
                MicroTime(k8s_openapi::jiff::Timestamp::from_second(at(s).timestamp()).unwrap())
            }),
            lease_duration_seconds: secs,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_live_while_held_and_renewed_within_twice_its_duration() {
        let now = at(100);
        let h = |l: LeaseSpec| holder(Some(&l), now, None);
        assert_eq!(h(lease(Some("pod-a"), Some(99), Some(15))), Holder::Live);
        assert_eq!(h(lease(Some("pod-a"), Some(70), Some(15))), Holder::Live);
        assert_eq!(h(lease(Some("pod-a"), Some(69), Some(15))), Holder::Gone);
        // A duration out of range is bounded (at most an hour, doubled; at least a second).
        assert_eq!(
            h(lease(Some("a"), Some(100 - 7201), Some(i32::MAX))),
            Holder::Gone
        );
        assert_eq!(h(lease(Some("a"), Some(97), Some(-5))), Holder::Gone);
        // Without a duration, the default (15 s) is assumed.
        assert_eq!(h(lease(Some("a"), Some(71), None)), Holder::Live);
        assert_eq!(h(lease(Some("a"), Some(69), None)), Holder::Gone);
        // Held but never renewed: taken as live, as the holder just took it.
        assert_eq!(h(lease(Some("a"), None, Some(15))), Holder::Live);
    }

    #[test]
    fn a_free_or_missing_lease_is_gone_only_after_twice_its_duration() {
        let now = at(100);
        let free = lease(None, None, Some(10));
        assert!(
            is_free(Some(&free)) && is_free(None) && is_free(Some(&lease(Some(""), None, None)))
        );
        assert!(!is_free(Some(&lease(Some("pod-a"), None, None))));
        // Just released (a replica restarting): still live.
        assert_eq!(holder(Some(&free), now, None), Holder::Live);
        assert_eq!(holder(Some(&free), now, Some(at(80))), Holder::Live);
        assert_eq!(holder(Some(&free), now, Some(at(79))), Holder::Gone);
        // A missing Lease: the default duration.
        assert_eq!(holder(None, now, Some(at(70))), Holder::Live);
        assert_eq!(holder(None, now, Some(at(69))), Holder::Gone);
    }

    #[test]
    fn an_installation_syncs_its_own_and_unclaimed_objects_and_leaves_live_claims_alone() {
        let me = "ops/managed-secrets";
        let never = |_: &str| -> Holder { panic!("the Lease is not asked for") };
        assert_eq!(decide(me, None, never), Decision::Sync);
        assert_eq!(decide(me, Some(me), never), Decision::Sync);
        assert_eq!(
            decide(me, Some("other/ms"), |c| {
                assert_eq!(c, "other/ms");
                Holder::Live
            }),
            Decision::LeaveTo {
                holder: "other/ms".into(),
                note: None
            }
        );
        assert_eq!(
            decide(me, Some("other/ms"), |_| Holder::Unknown("403".into())),
            Decision::LeaveTo {
                holder: "other/ms".into(),
                note: Some("403".into())
            }
        );
        assert_eq!(
            decide(me, Some("other/ms"), |_| Holder::Gone),
            Decision::TakeOver {
                from: "other/ms".into()
            }
        );
        assert_eq!(
            decide(me, Some("no lease here"), never),
            Decision::TakeOver {
                from: "no lease here".into()
            }
        );
    }

    #[test]
    fn claims_name_a_lease() {
        assert_eq!(installation("ops", "ms"), "ops/ms");
        assert_eq!(lease_of("ops/ms"), Some(("ops", "ms")));
        assert_eq!(lease_of("ops/"), None);
        assert_eq!(lease_of("/ms"), None);
        assert_eq!(lease_of("ops/ms/x"), None);
        assert_eq!(lease_of("Ops/ms"), None);
        assert_eq!(lease_of(&format!("ops/{}", "a".repeat(254))), None);
    }

    #[test]
    fn the_contested_message_names_both_installations() {
        assert_eq!(
            contested_message("b/ms", "a/ms", None),
            "installation a/ms syncs this ManagedSecret (its Lease a/ms is renewed); installation b/ms also watches it and leaves it alone. Two installations should not watch the same namespaces: uninstall one, or narrow its watchNamespaces"
        );
        assert!(contested_message("b/ms", "a/ms", Some("Forbidden"))
            .contains("its Lease a/ms could not be read (Forbidden), so it is assumed to run"));
    }
}
