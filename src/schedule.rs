//! Pure timing: refresh intervals, jitter, and whether a reconcile must read AWS or can rest.

use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use std::time::Duration;

pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
pub const MIN_REFRESH: Duration = Duration::from_secs(10);

/// Parses a Kubernetes-style duration: `30s`, `5m`, `1h`, `1h30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || {
        Error::InvalidSpec(format!(
            "refreshInterval {s:?} is not a duration like 30s, 5m or 1h"
        ))
    };
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
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
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
        total += unit * u32::try_from(n).map_err(|_| bad())?;
        rest = &rest[len..];
    }
    Ok(total)
}

/// The refresh interval of a spec, with the default and the enforced minimum.
pub fn refresh_interval(spec: Option<&str>, minimum: Duration) -> Result<Duration> {
    let d = match spec {
        None => DEFAULT_REFRESH,
        Some(s) => parse_duration(s)?,
    };
    if d < minimum {
        return Err(Error::InvalidSpec(format!(
            "refreshInterval {} is below the minimum of {}s",
            spec.unwrap_or_default(),
            minimum.as_secs()
        )));
    }
    Ok(d)
}

/// Adds up to 10% jitter so that many ManagedSecrets created together do not refresh together.
/// `unit` is a random number in [0, 1).
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
    }
}
