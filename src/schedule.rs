//! Pure timing: refresh intervals, jitter, and whether a reconcile must read AWS or can rest.

use crate::error::{Error, Result};
use chrono::{DateTime, Datelike, Utc};
use std::time::Duration;

pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// The longest refreshInterval: a Secret is re-checked at least once a day.
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// The longest rollout debounce.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(600);
/// A failure that repeats without a change (permanent: a denied, invalid or missing secret)
/// is retried at most this far apart, or at the refresh interval when that is longer.
pub const PERMANENT_RETRY_CAP: Duration = Duration::from_secs(3600);

/// Parses a Kubernetes-style duration: `30s`, `5m`, `1h`, `1h30m`, `500ms`. `field` names the
/// setting in the error message.
pub fn parse_duration_of(field: &str, s: &str) -> Result<Duration> {
    let bad = || {
        Error::InvalidSpec(format!(
            "{field} {s:?} is not a duration like 30s, 5m or 1h30m"
        ))
    };
    if s.len() > 32 {
        return Err(Error::InvalidSpec(format!(
            "{field} is {} characters long; a duration is at most 32",
            s.len()
        )));
    }
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u32 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return Err(bad());
        };
        total = unit
            .checked_mul(n)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(bad)?;
        rest = &rest[len..];
    }
    Ok(total)
}

/// [`parse_duration_of`] for flags and tests.
pub fn parse_duration(s: &str) -> Result<Duration> {
    parse_duration_of("duration", s)
}

/// The refresh interval of a spec, with the default and the enforced minimum and maximum.
pub fn refresh_interval(spec: Option<&str>, minimum: Duration) -> Result<Duration> {
    let d = match spec {
        None => DEFAULT_REFRESH,
        Some(s) => parse_duration_of("refreshInterval", s)?,
    };
    if d < minimum {
        return Err(Error::InvalidSpec(format!(
            "refreshInterval {} is below the minimum of {}",
            spec.unwrap_or_default(),
            human(minimum)
        )));
    }
    if d > MAX_REFRESH {
        return Err(Error::InvalidSpec(format!(
            "refreshInterval {} is above the maximum of 24h",
            spec.unwrap_or_default()
        )));
    }
    Ok(d)
}

/// A rollout debounce: the spec's, or the operator's default; at most 10 minutes.
pub fn debounce(spec: Option<&str>, default: Duration) -> Result<Duration> {
    let d = match spec {
        None => default,
        Some(s) => parse_duration_of("rollout.debounce", s)?,
    };
    if d > MAX_DEBOUNCE {
        return Err(Error::InvalidSpec(format!(
            "rollout.debounce {} is above the maximum of 10m",
            spec.unwrap_or_default()
        )));
    }
    Ok(d)
}

/// `1m30s`-style text for a duration (whole seconds; sub-second as ms).
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// `now + d` without overflow: None when the result is not a time chrono (or RFC 3339) can hold.
pub fn after(now: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    let t = now.checked_add_signed(chrono::TimeDelta::from_std(d).ok()?)?;
    // RFC 3339 (status fields) has four-digit years.
    (t.year_ce().1 <= 9999).then_some(t)
}

/// Adds up to 10% jitter so that many ManagedSecrets created together do not refresh together.
/// `unit` is a random number in [0, 1).
/// The wait before the next attempt after the `failures`-th permanent failure in a row: the
/// refresh interval, doubled with each repeat, capped at [`PERMANENT_RETRY_CAP`] (or the
/// interval, when longer). A change (spec, policy, namespace labels, the Secret) is attempted at
/// once whatever this says; this only spaces out retries that nothing prompted.
pub fn permanent_retry(interval: Duration, failures: u32) -> Duration {
    let cap = PERMANENT_RETRY_CAP.max(interval);
    let doublings = failures.saturating_sub(1).min(20);
    interval
        .checked_mul(1u32 << doublings)
        .map_or(cap, |d| d.min(cap))
}

pub fn jittered(interval: Duration, unit: f64) -> Duration {
    interval + interval.mul_f64(0.1 * unit.clamp(0.0, 1.0))
}

/// What a reconcile observed, for the decision below.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub now: DateTime<Utc>,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    pub force_sync: Option<String>,
    pub last_force_sync: Option<String>,
    pub next_refresh: Option<DateTime<Utc>>,
    /// The last sync succeeded.
    pub ready: bool,
    /// The Secret in the cluster still holds what was synced (hash over our keys matches).
    pub secret_intact: bool,
    /// The last attempt was refused by the access policies, and now they grant it.
    pub access_granted: bool,
    /// The source has seen another AWS version than the one synced (a sweep saw it move).
    pub source_moved: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing to do until this time.
    Rest { until: DateTime<Utc> },
    /// Read the value (from the cache unless `bypass_cache`) and converge.
    Sync {
        bypass_cache: bool,
        why: &'static str,
    },
}

/// Decides whether to touch AWS at all. Pure.
pub fn plan(o: &Observed) -> Plan {
    let forced = o.force_sync.is_some() && o.force_sync != o.last_force_sync;
    if forced {
        return Plan::Sync {
            bypass_cache: true,
            why: "force-sync annotation changed",
        };
    }
    if o.generation != o.observed_generation {
        return Plan::Sync {
            bypass_cache: false,
            why: "spec changed",
        };
    }
    if !o.secret_intact {
        return Plan::Sync {
            bypass_cache: false,
            why: "Secret changed or missing",
        };
    }
    if o.access_granted {
        return Plan::Sync {
            bypass_cache: false,
            why: "an access policy grants it now",
        };
    }
    if o.source_moved && o.ready {
        return Plan::Sync {
            bypass_cache: false,
            why: "AWS has a new version",
        };
    }
    match o.next_refresh {
        // After a failure, next_refresh is the end of the back-off.
        Some(t) if o.now < t => Plan::Rest { until: t },
        _ if !o.ready => Plan::Sync {
            bypass_cache: false,
            why: "retry after failure",
        },
        _ => Plan::Sync {
            bypass_cache: false,
            why: "refresh interval elapsed",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_failures_back_off_from_the_interval_to_an_hour() {
        let s = Duration::from_secs;
        let waits: Vec<Duration> = (0..=10).map(|n| permanent_retry(s(10), n)).collect();
        assert_eq!(
            waits,
            [10, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600].map(s)
        );
        assert_eq!(permanent_retry(s(10), u32::MAX), s(3600));
        assert_eq!(
            permanent_retry(MAX_REFRESH, 5),
            MAX_REFRESH,
            "a day stays a day"
        );
        assert_eq!(permanent_retry(s(7200), 1), s(7200));
    }

    #[test]
    fn durations_parse_like_kubernetes() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        for bad in ["", "5", "m", "5d", "-5s", "5 m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn huge_durations_are_errors_never_panics() {
        // The values that crashed the operator before the bounds: each is an InvalidSpec now.
        for huge in [
            "4294967295h",
            "99999999h",
            "4294967295h4294967295h",
            "18446744073709551615s",
        ] {
            let e = refresh_interval(Some(huge), MIN_REFRESH).unwrap_err();
            assert_eq!(e.reason(), "InvalidSpec", "{huge}");
            let e = debounce(Some(huge), Duration::from_secs(5)).unwrap_err();
            assert_eq!(e.reason(), "InvalidSpec", "{huge}");
        }
        assert_eq!(
            debounce(Some("11m"), Duration::from_secs(5))
                .unwrap_err()
                .to_string(),
            "invalid spec: rollout.debounce 11m is above the maximum of 10m"
        );
        assert_eq!(
            debounce(None, Duration::from_secs(5)).unwrap(),
            Duration::from_secs(5)
        );
        let now = Utc::now();
        assert_eq!(after(now, Duration::from_secs(u64::MAX)), None);
        assert_eq!(after(now, Duration::from_secs(4_294_967_295 * 3600)), None);
        assert_eq!(
            after(now, Duration::from_secs(60)),
            Some(now + chrono::Duration::seconds(60))
        );
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_millis(500)), "500ms");
        assert_eq!(human(Duration::from_secs(10)), "10s");
    }

    #[test]
    fn refresh_interval_defaults_to_five_minutes_and_enforces_the_minimum() {
        assert_eq!(
            refresh_interval(None, MIN_REFRESH).unwrap(),
            Duration::from_secs(300)
        );
        let e = refresh_interval(Some("5s"), MIN_REFRESH).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid spec: refreshInterval 5s is below the minimum of 10s"
        );
        assert_eq!(
            refresh_interval(Some("25h"), MIN_REFRESH)
                .unwrap_err()
                .to_string(),
            "invalid spec: refreshInterval 25h is above the maximum of 24h"
        );
        assert_eq!(
            refresh_interval(Some("24h"), MIN_REFRESH).unwrap(),
            MAX_REFRESH
        );
        assert_eq!(
            refresh_interval(Some("10s"), MIN_REFRESH).unwrap(),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let i = Duration::from_secs(300);
        assert_eq!(jittered(i, 0.0), i);
        assert_eq!(jittered(i, 0.5), Duration::from_secs(315));
        assert!(jittered(i, 0.999) < Duration::from_secs(330));
    }

    fn base() -> Observed {
        let now = Utc::now();
        Observed {
            now,
            generation: Some(1),
            observed_generation: Some(1),
            force_sync: None,
            last_force_sync: None,
            next_refresh: Some(now + chrono::Duration::seconds(60)),
            ready: true,
            secret_intact: true,
            access_granted: false,
            source_moved: false,
        }
    }

    #[test]
    fn rests_until_the_refresh_when_all_is_in_sync() {
        let o = base();
        assert_eq!(
            plan(&o),
            Plan::Rest {
                until: o.next_refresh.unwrap()
            }
        );
    }

    #[test]
    fn a_version_the_source_saw_move_syncs_now_unless_backing_off() {
        let mut o = base();
        o.source_moved = true;
        assert_eq!(
            plan(&o),
            Plan::Sync {
                bypass_cache: false,
                why: "AWS has a new version"
            }
        );
        o.ready = false;
        assert_eq!(
            plan(&o),
            Plan::Rest {
                until: o.next_refresh.unwrap()
            },
            "a failing object keeps its back-off"
        );
    }

    #[test]
    fn syncs_when_due_changed_forced_or_drifted() {
        let mut o = base();
        o.now = o.next_refresh.unwrap();
        assert!(matches!(
            plan(&o),
            Plan::Sync {
                bypass_cache: false,
                ..
            }
        ));
        let mut o = base();
        o.generation = Some(2);
        assert!(matches!(
            plan(&o),
            Plan::Sync {
                bypass_cache: false,
                why: "spec changed"
            }
        ));
        let mut o = base();
        o.secret_intact = false;
        assert!(matches!(
            plan(&o),
            Plan::Sync {
                bypass_cache: false,
                ..
            }
        ));
        let mut o = base();
        o.force_sync = Some("1".into());
        assert_eq!(
            plan(&o),
            Plan::Sync {
                bypass_cache: true,
                why: "force-sync annotation changed"
            }
        );
        o.last_force_sync = Some("1".into());
        assert!(
            matches!(plan(&o), Plan::Rest { .. }),
            "the same force value acts once"
        );
        let mut o = base();
        o.ready = false;
        o.next_refresh = None;
        assert!(matches!(plan(&o), Plan::Sync { .. }));
        let mut o = base();
        o.ready = false;
        o.access_granted = true;
        assert_eq!(
            plan(&o),
            Plan::Sync {
                bypass_cache: false,
                why: "an access policy grants it now"
            },
            "a denial lifted by a policy change does not wait for the next refresh"
        );
    }
}
