//! Pure: the status a ManagedSecret gets after a successful sync or a failure. Ready follows
//! kstatus; a transient failure after a good sync keeps Ready=True (the Secret is still good) and,
//! once AWS has not confirmed the value for longer than the refresh interval, adds Stale=True.

use crate::crd::ManagedSecretStatus;
use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub use crate::reason::{READY, STALE};

/// RFC 3339 with seconds, as status fields hold times.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_ts(s: Option<&str>) -> Option<DateTime<Utc>> {
    s.and_then(|x| DateTime::parse_from_rfc3339(x).ok())
        .map(|t| t.with_timezone(&Utc))
}

pub fn time(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).unwrap_or_default())
}

/// A condition, keeping lastTransitionTime while its status does not flip.
pub fn condition(
    prev: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    condition_with(prev, type_, status, reason, message, generation, now)
}

/// [`condition`] with any status ("True", "False", "Unknown").
pub fn condition_with(
    prev: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let since = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Replaces (or removes, with `None`) the condition of `type_`, keeping the others in order.
pub fn set_condition(conds: &mut Vec<Condition>, type_: &str, c: Option<Condition>) {
    match (conds.iter().position(|x| x.type_ == type_), c) {
        (Some(i), Some(c)) => conds[i] = c,
        (Some(i), None) => {
            conds.remove(i);
        }
        (None, Some(c)) => conds.push(c),
        (None, None) => {}
    }
}

pub fn is_true(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// Whether two statuses differ only in the per-refresh bookkeeping (lastSyncTime,
/// lastAttemptTime, nextRefreshTime): then there is nothing worth an etcd write.
pub fn same_apart_from_times(a: &ManagedSecretStatus, b: &ManagedSecretStatus) -> bool {
    let strip = |s: &ManagedSecretStatus| ManagedSecretStatus {
        last_sync_time: None,
        last_attempt_time: None,
        next_refresh_time: None,
        ..s.clone()
    };
    strip(a) == strip(b)
}

/// What a successful sync wrote.
#[derive(Debug, Clone)]
pub struct Synced {
    pub generation: Option<i64>,
    pub secret_id: String,
    pub target: String,
    pub version_id: String,
    pub version_stages: Vec<String>,
    pub data_hash: String,
    pub keys: Vec<String>,
    pub now: DateTime<Utc>,
    pub next_refresh: DateTime<Utc>,
    /// The force-sync value this sync acted on.
    pub forced: Option<String>,
}

pub fn synced(prev: &ManagedSecretStatus, s: Synced) -> ManagedSecretStatus {
    let mut conditions = prev.conditions.clone();
    set_condition(
        &mut conditions,
        READY,
        Some(condition(
            &prev.conditions,
            READY,
            true,
            crate::reason::SYNCED,
            format!(
                "Secret {} holds AWS version {} of {}",
                s.target, s.version_id, s.secret_id
            ),
            s.generation,
            s.now,
        )),
    );
    set_condition(&mut conditions, STALE, None);
    ManagedSecretStatus {
        observed_generation: s.generation,
        conditions,
        secret_name: Some(s.target),
        synced_version_id: Some(s.version_id),
        synced_version_stages: s.version_stages,
        data_hash: Some(s.data_hash),
        synced_keys: s.keys,
        last_sync_time: Some(ts(s.now)),
        last_attempt_time: Some(ts(s.now)),
        next_refresh_time: Some(ts(s.next_refresh)),
        last_force_sync: s.forced.or_else(|| prev.last_force_sync.clone()),
        failures: 0,
        rollouts: prev.rollouts.clone(),
        rollout_pending_since: prev.rollout_pending_since.clone(),
        claimed_by: prev.claimed_by.clone(),
        rotation: prev.rotation.clone(),
    }
}

/// A failed attempt.
#[derive(Debug, Clone)]
pub struct Failed {
    pub generation: Option<i64>,
    pub secret_id: String,
    pub target: String,
    pub reason: &'static str,
    /// The error's message (never a value).
    pub message: String,
    pub transient: bool,
    /// The Secret in the cluster still holds what was synced.
    pub secret_intact: bool,
    pub now: DateTime<Utc>,
    pub next_attempt: DateTime<Utc>,
    /// When AWS last confirmed the synced value.
    pub confirmed_at: Option<DateTime<Utc>>,
    pub refresh_interval: std::time::Duration,
}

/// The status after a failure, and whether the object is now stale.
pub fn failed(prev: &ManagedSecretStatus, f: Failed) -> (ManagedSecretStatus, bool) {
    let failures = prev.failures.saturating_add(1);
    let next = ts(f.next_attempt);
    let synced_here = prev.data_hash.is_some()
        && prev.secret_name.as_deref() == Some(f.target.as_str())
        && prev.observed_generation == f.generation;
    let still_good =
        f.transient && f.secret_intact && synced_here && is_true(&prev.conditions, READY);
    let mut conditions = prev.conditions.clone();
    let mut stale = false;
    match (&prev.synced_version_id, still_good) {
        (Some(v), true) => {
            set_condition(
                &mut conditions,
                READY,
                Some(condition(
                    &prev.conditions,
                    READY,
                    true,
                    crate::reason::SYNCED,
                    format!(
                        "Secret {} holds AWS version {v} of {}; the last refresh failed ({}), next attempt at {next}",
                        f.target, f.secret_id, f.reason
                    ),
                    f.generation,
                    f.now,
                )),
            );
            let unconfirmed_for = f
                .confirmed_at
                .map(|t| (f.now - t).to_std().unwrap_or_default())
                .unwrap_or(std::time::Duration::MAX);
            stale = unconfirmed_for > f.refresh_interval;
            let since = f
                .confirmed_at
                .map(ts)
                .unwrap_or_else(|| "before the operator started".into());
            set_condition(
                &mut conditions,
                STALE,
                stale.then(|| {
                    condition(
                        &prev.conditions,
                        STALE,
                        true,
                        f.reason,
                        format!(
                            "AWS has not confirmed the value since {since}: {}; the Secret keeps AWS version {v}; next attempt at {next}",
                            f.message
                        ),
                        f.generation,
                        f.now,
                    )
                }),
            );
        }
        (synced, _) => {
            let kept = match synced {
                Some(v) if prev.data_hash.is_some() => {
                    format!("; the Secret keeps AWS version {v}")
                }
                _ => String::new(),
            };
            set_condition(
                &mut conditions,
                READY,
                Some(condition(
                    &prev.conditions,
                    READY,
                    false,
                    f.reason,
                    format!("{}{kept}; next attempt at {next}", f.message),
                    f.generation,
                    f.now,
                )),
            );
            set_condition(&mut conditions, STALE, None);
        }
    }
    let status = ManagedSecretStatus {
        observed_generation: f.generation,
        conditions,
        last_attempt_time: Some(ts(f.now)),
        next_refresh_time: Some(next),
        failures,
        ..prev.clone()
    };
    (status, stale)
}

/// A condition message without its trailing "next attempt at <time>" (which moves with every
/// attempt).
fn without_next_attempt(message: &str) -> &str {
    const AT: &str = "next attempt at ";
    match message.rfind(AT) {
        Some(i) if !message[i + AT.len()..].contains(char::is_whitespace) => {
            message[..i].trim_end_matches([' ', ',', ';'])
        }
        _ => message,
    }
}

/// Whether a failure's status says anything the previous status did not: another observed
/// generation, or a condition that appeared, went, or changed status, reason or message (its
/// next-attempt time aside). A failure that repeats unchanged is worth no status write and no
/// Event: only the attempt's times and count would move.
pub fn failure_is_news(prev: &ManagedSecretStatus, new: &ManagedSecretStatus) -> bool {
    let view = |s: &ManagedSecretStatus| -> Vec<(String, String, String, String)> {
        s.conditions
            .iter()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    without_next_attempt(&c.message).to_string(),
                )
            })
            .collect()
    };
    prev.observed_generation != new.observed_generation || view(prev) != view(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_failure_that_repeats_unchanged_is_no_news() {
        let f = |now: &str, next: &str, reason: &'static str, generation: i64| Failed {
            generation: Some(generation),
            secret_id: "prod/db/credentials".into(),
            target: "db".into(),
            reason,
            message: "the error".into(),
            transient: false,
            secret_intact: true,
            now: t(now),
            next_attempt: t(next),
            confirmed_at: None,
            refresh_interval: Duration::from_secs(60),
        };
        let (first, _) = failed(
            &ManagedSecretStatus::default(),
            f(
                "2026-11-29T10:00:00Z",
                "2026-11-29T10:01:00Z",
                "PolicyDenied",
                1,
            ),
        );
        assert!(failure_is_news(&ManagedSecretStatus::default(), &first));
        let (again, _) = failed(
            &first,
            f(
                "2026-11-29T10:01:00Z",
                "2026-11-29T10:03:00Z",
                "PolicyDenied",
                1,
            ),
        );
        assert_ne!(again, first, "times and count moved");
        assert!(!failure_is_news(&first, &again));
        let (other, _) = failed(
            &first,
            f(
                "2026-11-29T10:01:00Z",
                "2026-11-29T10:03:00Z",
                "InvalidSpec",
                1,
            ),
        );
        assert!(failure_is_news(&first, &other), "another reason");
        let (edited, _) = failed(
            &first,
            f(
                "2026-11-29T10:01:00Z",
                "2026-11-29T10:03:00Z",
                "PolicyDenied",
                2,
            ),
        );
        assert!(failure_is_news(&first, &edited), "another generation");
        // A synced object whose refresh starts failing is news; the repeat is not.
        let (failing, _) = failed(
            &good(),
            Failed {
                transient: true,
                ..f(
                    "2026-11-29T10:02:00Z",
                    "2026-11-29T10:02:05Z",
                    "AwsUnavailable",
                    1,
                )
            },
        );
        assert!(failure_is_news(&good(), &failing));
        let (still, _) = failed(
            &failing,
            Failed {
                transient: true,
                ..f(
                    "2026-11-29T10:02:05Z",
                    "2026-11-29T10:02:15Z",
                    "AwsUnavailable",
                    1,
                )
            },
        );
        assert!(!failure_is_news(&failing, &still));
    }

    #[test]
    fn next_attempt_times_are_cut_from_messages() {
        assert_eq!(
            without_next_attempt("the error; next attempt at 2026-11-29T10:02:05Z"),
            "the error"
        );
        assert_eq!(
            without_next_attempt("failed (X), next attempt at 2026-11-29T10:02:05Z"),
            "failed (X)"
        );
        assert_eq!(without_next_attempt("no time here"), "no time here");
    }

    fn t(s: &str) -> DateTime<Utc> {
        parse_ts(Some(s)).unwrap()
    }

    fn good() -> ManagedSecretStatus {
        synced(
            &ManagedSecretStatus::default(),
            Synced {
                generation: Some(1),
                secret_id: "prod/db/credentials".into(),
                target: "db".into(),
                version_id: "v1".into(),
                version_stages: vec!["AWSCURRENT".into()],
                data_hash: "sha256:x".into(),
                keys: vec!["password".into()],
                now: t("2026-11-29T10:00:00Z"),
                next_refresh: t("2026-11-29T10:05:00Z"),
                forced: None,
            },
        )
    }

    fn failure(transient: bool, now: &str, confirmed: &str) -> Failed {
        Failed {
            generation: Some(1),
            secret_id: "prod/db/credentials".into(),
            target: "db".into(),
            reason: if transient {
                "AwsUnavailable"
            } else {
                "KeyNotFound"
            },
            message: "the error".into(),
            transient,
            secret_intact: true,
            now: t(now),
            next_attempt: t(now) + chrono::Duration::seconds(5),
            confirmed_at: Some(t(confirmed)),
            refresh_interval: Duration::from_secs(300),
        }
    }

    #[test]
    fn a_sync_is_ready_and_records_what_it_wrote() {
        let s = good();
        assert_eq!(s.conditions.len(), 1);
        let c = &s.conditions[0];
        assert_eq!(
            (
                c.type_.as_str(),
                c.status.as_str(),
                c.reason.as_str(),
                c.message.as_str()
            ),
            (
                "Ready",
                "True",
                "Synced",
                "Secret db holds AWS version v1 of prod/db/credentials"
            )
        );
        assert_eq!(s.next_refresh_time.as_deref(), Some("2026-11-29T10:05:00Z"));
        assert_eq!(s.failures, 0);
    }

    #[test]
    fn a_refresh_that_finds_nothing_new_has_nothing_to_write() {
        let a = good();
        let mut b = a.clone();
        b.last_attempt_time = Some("2026-11-29T11:00:00Z".into());
        b.next_refresh_time = Some("2026-11-29T11:05:00Z".into());
        b.last_sync_time = Some("2026-11-29T11:00:00Z".into());
        assert!(same_apart_from_times(&a, &b));
        b.synced_version_id = Some("v2".into());
        assert!(!same_apart_from_times(&a, &b));
    }

    #[test]
    fn a_short_transient_failure_keeps_ready_and_is_not_stale() {
        let (s, stale) = failed(
            &good(),
            failure(true, "2026-11-29T10:02:00Z", "2026-11-29T10:00:00Z"),
        );
        assert!(!stale);
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(
            s.conditions[0].message,
            "Secret db holds AWS version v1 of prod/db/credentials; the last refresh failed (AwsUnavailable), next attempt at 2026-11-29T10:02:05Z"
        );
        assert_eq!(s.failures, 1);
        assert_eq!(s.synced_version_id.as_deref(), Some("v1"));
    }

    #[test]
    fn after_one_refresh_interval_without_aws_the_secret_is_stale_then_clears() {
        let (s, stale) = failed(
            &good(),
            failure(true, "2026-11-29T10:06:00Z", "2026-11-29T10:00:00Z"),
        );
        assert!(stale);
        assert_eq!(s.conditions[0].status, "True", "Ready stays True");
        let st = &s.conditions[1];
        assert_eq!(
            (st.type_.as_str(), st.status.as_str(), st.reason.as_str(), st.message.as_str()),
            ("Stale", "True", "AwsUnavailable", "AWS has not confirmed the value since 2026-11-29T10:00:00Z: the error; the Secret keeps AWS version v1; next attempt at 2026-11-29T10:06:05Z")
        );
        let mut next = good();
        next.conditions = s.conditions.clone();
        let cleared = synced(
            &s,
            Synced {
                generation: Some(1),
                secret_id: "prod/db/credentials".into(),
                target: "db".into(),
                version_id: "v1".into(),
                version_stages: vec![],
                data_hash: "sha256:x".into(),
                keys: vec![],
                now: t("2026-11-29T10:07:00Z"),
                next_refresh: t("2026-11-29T10:12:00Z"),
                forced: None,
            },
        );
        assert_eq!(cleared.conditions.len(), 1, "Stale is gone");
        assert_eq!(
            cleared.conditions[0].last_transition_time, s.conditions[0].last_transition_time,
            "Ready never flipped"
        );
    }

    #[test]
    fn permanent_failures_and_failures_without_a_good_secret_are_not_ready() {
        let (s, stale) = failed(
            &good(),
            failure(false, "2026-11-29T10:02:00Z", "2026-11-29T10:00:00Z"),
        );
        assert!(!stale);
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].reason, "KeyNotFound");
        assert_eq!(
            s.conditions[0].message,
            "the error; the Secret keeps AWS version v1; next attempt at 2026-11-29T10:02:05Z"
        );
        let mut f = failure(true, "2026-11-29T10:02:00Z", "2026-11-29T10:00:00Z");
        f.secret_intact = false;
        assert_eq!(failed(&good(), f).0.conditions[0].status, "False");
        let first = failed(
            &ManagedSecretStatus::default(),
            failure(true, "2026-11-29T10:02:00Z", "2026-11-29T10:00:00Z"),
        )
        .0;
        assert_eq!(first.conditions[0].status, "False");
        assert_eq!(
            first.conditions[0].message,
            "the error; next attempt at 2026-11-29T10:02:05Z"
        );
        let mut f = failure(true, "2026-11-29T10:02:00Z", "2026-11-29T10:00:00Z");
        f.generation = Some(2);
        assert_eq!(
            failed(&good(), f).0.conditions[0].status,
            "False",
            "a new spec is not synced yet"
        );
    }

    #[test]
    fn a_failed_force_sync_is_not_recorded_as_done() {
        let mut prev = good();
        prev.last_force_sync = Some("1".into());
        let (s, _) = failed(
            &prev,
            failure(true, "2026-11-29T10:02:00Z", "2026-11-29T10:00:00Z"),
        );
        assert_eq!(s.last_force_sync.as_deref(), Some("1"));
    }
}
