//! Pure: what AWS's rotation metadata means for a ManagedSecret. AWS rotates a secret at any time
//! in its rotation window, "on or before" NextRotationDate, the window's end (the window is the
//! rules' `Duration` long; without one, an hour for a schedule in hours, else that UTC day). When
//! to look again so that the rotation reaches the Secret soon after it finishes ([`next_check`]);
//! what `status.rotation` says ([`status`]); and whether the rotation is healthy ([`health`]):
//! overdue (NextRotationDate passed longer than a grace period ago: AWS moves it forward after
//! every successful rotation), stuck (a version has carried AWSPENDING without AWSCURRENT for
//! longer than a threshold: the rotation function's finishSecret never ran), or disabled. Only
//! metadata, never values; every date and text from AWS is checked.

use crate::crd::RotationStatus;
use crate::reason;
use crate::source::Rotation;
use crate::status::{parse_ts, ts};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A rotation is first looked for this long after its window opens, and last this long after it
/// ends (a rotation function usually finishes within seconds of starting).
pub const SETTLE: Duration = Duration::from_secs(30);
/// While the window is open (and until the rotation is overdue), look every sixtieth of the
/// window, at least this often apart...
pub const DUE_POLL: Duration = Duration::from_secs(60);
/// ...and at most this far apart (a day-long window: every 24 minutes).
pub const DUE_POLL_MAX: Duration = Duration::from_secs(30 * 60);
/// The longest window AWS allows (a window never crosses into the next UTC day).
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Bounds of the thresholds (flags).
pub const MIN_THRESHOLD: Duration = Duration::from_secs(1);
pub const MAX_THRESHOLD: Duration = Duration::from_secs(7 * 24 * 3600);

/// When a rotation counts as overdue or stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// NextRotationDate passed by more than this, AWSCURRENT not moved: overdue.
    pub overdue_after: Duration,
    /// A version pending (AWSPENDING, not AWSCURRENT) for longer than this: stuck.
    pub stuck_after: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            overdue_after: Duration::from_secs(3600),
            stuck_after: Duration::from_secs(3600),
        }
    }
}

/// A unix time from AWS, if it is one chrono (and RFC 3339) can hold.
fn at(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
        .filter(|t| t.timestamp() > 0 && ts(*t).len() == 20)
}

fn plus(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    crate::schedule::after(t, d)
}

/// When the window that ends at `next` (NextRotationDate: AWS rotates "on or before" it) opens:
/// the rules' `Duration` (`3h`) before it; an hour before it for a schedule in hours
/// (`rate(4 hours)`, or a cron whose hours field repeats); else at the start of that UTC day. Never
/// before that day starts (a window does not cross into the next UTC day).
pub fn window_opens(
    duration: Option<&str>,
    schedule: Option<&str>,
    next: DateTime<Utc>,
) -> DateTime<Utc> {
    let hour = Duration::from_secs(3600);
    let length = duration
        .and_then(|d| d.trim().strip_suffix('h'))
        .and_then(|n| n.parse::<u64>().ok())
        .map(|h| Duration::from_secs(h.saturating_mul(3600)).clamp(hour, MAX_WINDOW))
        .or_else(|| schedule.filter(|s| hourly(s)).map(|_| hour));
    let start_of_day = next
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc())
        .unwrap_or(next);
    match length {
        Some(l) => before(next, l).map_or(start_of_day, |o| o.max(start_of_day)),
        None => start_of_day,
    }
}

/// Whether a schedule expression repeats within a day: `rate(N hour[s])`, or a cron whose hours
/// field is not one hour.
fn hourly(schedule: &str) -> bool {
    let s = schedule.trim();
    if s.len() > 256 {
        return false;
    }
    if let Some(rate) = s.strip_prefix("rate(") {
        return rate.contains("hour");
    }
    s.strip_prefix("cron(")
        .and_then(|c| c.split_whitespace().nth(1))
        .is_some_and(|h| h.contains(['*', '/', ',', '-']))
}

fn before(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_sub_signed(chrono::TimeDelta::from_std(d).ok()?)
}

/// The rotation window of `rot`: (opens, ends at NextRotationDate), if AWS says when.
fn window_of(rot: &Rotation) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let next = at(rot.next_rotation)?;
    let opens = window_opens(rot.window.as_deref(), rot.schedule.as_deref(), next);
    Some((opens, next))
}

/// The earliest time to look again for the rotation's sake (the refresh interval stays the
/// backstop): 30 s after the window opens; while it is open, every sixtieth of it (1 to 30
/// minutes apart) and 30 s after it ends; then once more when it would turn overdue; and when a
/// pending version would turn stuck. None when there is nothing to look for.
pub fn next_check(
    rot: &Rotation,
    st: &RotationStatus,
    now: DateTime<Utc>,
    t: &Thresholds,
) -> Option<DateTime<Utc>> {
    let stuck = parse_ts(st.pending_since.as_deref())
        .filter(|_| st.pending_version_id.is_some())
        .and_then(|since| plus(since, t.stuck_after + Duration::from_secs(1)));
    let scheduled = rot
        .enabled
        .then(|| window_of(rot))
        .flatten()
        .and_then(|(opens, ends)| {
            let settled = plus(opens, SETTLE)?;
            if now < settled {
                return Some(settled);
            }
            let overdue = plus(ends, t.overdue_after + Duration::from_secs(1))?;
            if now >= overdue {
                return None;
            }
            let window = (ends - opens).to_std().ok()?;
            let every = Duration::from_secs(window.as_secs() / 60).clamp(DUE_POLL, DUE_POLL_MAX);
            let mut at = plus(now, every)?.min(overdue);
            if let Some(last) = plus(ends, SETTLE).filter(|l| now < *l) {
                at = at.min(last);
            }
            Some(at)
        });
    [stuck.filter(|s| *s > now), scheduled]
        .into_iter()
        .flatten()
        .min()
}

/// Whether a refresh at `now` must ask AWS even if the cache checked the secret recently: from the
/// window's opening (as the status last saw it) until the rotation would be overdue.
pub fn due(st: Option<&RotationStatus>, now: DateTime<Utc>, t: &Thresholds) -> bool {
    let Some(st) = st.filter(|s| s.enabled) else {
        return false;
    };
    let opens = parse_ts(st.window_opens_time.as_deref());
    let ends = parse_ts(st.next_rotation_time.as_deref());
    match (opens, ends) {
        (Some(o), Some(e)) => now >= o && plus(e, t.overdue_after).is_some_and(|end| now <= end),
        _ => false,
    }
}

/// `status.rotation` from what AWS says now and what the status said before: the pending version
/// keeps the time it was first seen (AWS does not say when a version was created).
pub fn status(prev: Option<&RotationStatus>, rot: &Rotation, now: DateTime<Utc>) -> RotationStatus {
    let pending_since = rot.pending.as_ref().map(|p| {
        prev.filter(|s| s.pending_version_id.as_ref() == Some(p))
            .and_then(|s| s.pending_since.clone())
            .unwrap_or_else(|| ts(now))
    });
    RotationStatus {
        enabled: rot.enabled,
        last_rotated_time: at(rot.last_rotated).map(ts),
        next_rotation_time: at(rot.next_rotation).map(ts),
        window_opens_time: window_of(rot).map(|(o, _)| ts(o)),
        pending_version_id: rot.pending.clone(),
        pending_since,
    }
}

/// Whether a rotation is healthy, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// "True", "False" or "Unknown" (the condition's status).
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The `RotationHealthy` condition's content for `st` (as [`status`] made it) at `now`.
pub fn health(st: &RotationStatus, now: DateTime<Utc>, t: &Thresholds) -> Health {
    let since = parse_ts(st.pending_since.as_deref());
    if let (Some(v), Some(since)) = (&st.pending_version_id, since) {
        if plus(since, t.stuck_after).is_some_and(|limit| now > limit) {
            return Health {
                status: "False",
                reason: reason::ROTATION_STUCK,
                message: format!(
                    "version {v} has been AWSPENDING without becoming AWSCURRENT since {}: the rotation did not finish (check the rotation function's finishSecret step and its logs)",
                    ts(since)
                ),
            };
        }
    }
    if !st.enabled {
        return Health {
            status: "Unknown",
            reason: reason::ROTATION_DISABLED,
            message: "rotation is not enabled on the AWS secret".into(),
        };
    }
    let next = parse_ts(st.next_rotation_time.as_deref());
    if let Some(next) = next {
        if plus(next, t.overdue_after).is_some_and(|limit| now > limit) {
            return Health {
                status: "False",
                reason: reason::ROTATION_OVERDUE,
                message: format!(
                    "the rotation due by {} has not happened (AWSCURRENT did not move): check the rotation function",
                    ts(next)
                ),
            };
        }
    }
    Health {
        status: "True",
        reason: reason::ROTATION_ON_SCHEDULE,
        message: match (&st.last_rotated_time, &st.next_rotation_time) {
            (Some(l), Some(n)) => format!("last rotated at {l}; next rotation at {n}"),
            (None, Some(n)) => format!("next rotation at {n}"),
            _ => "rotation is enabled".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_ts(Some(s)).unwrap()
    }

    fn rot(next: &str) -> Rotation {
        Rotation {
            enabled: true,
            last_rotated: Some(t("2026-11-01T10:00:00Z").timestamp()),
            next_rotation: Some(t(next).timestamp()),
            window: Some("1h".into()),
            ..Rotation::default()
        }
    }

    #[test]
    fn the_window_ends_at_next_rotation_and_opens_the_rules_duration_before_it() {
        let next = t("2026-12-01T23:59:59Z");
        assert_eq!(
            window_opens(Some("3h"), None, next),
            t("2026-12-01T20:59:59Z")
        );
        assert_eq!(
            window_opens(Some("99h"), None, next),
            t("2026-12-01T00:00:00Z"),
            "never before the day starts"
        );
        assert_eq!(
            window_opens(Some("0h"), None, next),
            t("2026-12-01T22:59:59Z")
        );
        for hourly in [
            "rate(4 hours)",
            "rate(1 hour)",
            "cron(0 */4 * * ? *)",
            "cron(0 8,20 * * ? *)",
        ] {
            assert_eq!(
                window_opens(None, Some(hourly), next),
                t("2026-12-01T22:59:59Z"),
                "{hourly}"
            );
        }
        for daily in ["rate(10 days)", "cron(0 8 1 * ? *)"] {
            assert_eq!(
                window_opens(None, Some(daily), next),
                t("2026-12-01T00:00:00Z"),
                "{daily}"
            );
        }
        assert_eq!(
            window_opens(Some("junk"), None, next),
            t("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            window_opens(Some("2h"), None, t("2026-12-01T01:00:00Z")),
            t("2026-12-01T00:00:00Z")
        );
    }

    #[test]
    fn a_window_is_looked_at_as_it_opens_while_open_as_it_ends_and_when_it_would_be_overdue() {
        let th = Thresholds::default();
        // Window 10:20 to 11:20 (Duration 1h, NextRotationDate 11:20).
        let r = rot("2026-12-01T11:20:00Z");
        let st = status(None, &r, t("2026-12-01T10:00:00Z"));
        assert_eq!(
            st.window_opens_time.as_deref(),
            Some("2026-12-01T10:20:00Z")
        );
        let at = |now: &str| next_check(&r, &st, t(now), &th);
        assert_eq!(at("2026-12-01T10:00:00Z"), Some(t("2026-12-01T10:20:30Z")));
        assert_eq!(at("2026-12-01T10:20:30Z"), Some(t("2026-12-01T10:21:30Z")));
        assert_eq!(
            at("2026-12-01T11:19:40Z"),
            Some(t("2026-12-01T11:20:30Z")),
            "30 s after the window ends"
        );
        assert_eq!(at("2026-12-01T11:20:30Z"), Some(t("2026-12-01T11:21:30Z")));
        assert_eq!(
            at("2026-12-01T12:19:40Z"),
            Some(t("2026-12-01T12:20:01Z")),
            "when it would turn overdue"
        );
        assert_eq!(at("2026-12-01T12:20:01Z"), None);
        // A day-long window: every 24 minutes.
        let day = Rotation {
            window: Some("24h".into()),
            next_rotation: Some(t("2026-12-01T23:59:59Z").timestamp()),
            ..r.clone()
        };
        let dst = status(None, &day, t("2026-12-01T10:00:00Z"));
        assert_eq!(
            next_check(&day, &dst, t("2026-12-01T11:00:00Z"), &th),
            Some(t("2026-12-01T11:23:59Z")),
            "a window of 86,399 s: every 1,439 s"
        );
        let off = Rotation {
            enabled: false,
            ..r.clone()
        };
        assert_eq!(next_check(&off, &st, t("2026-12-01T10:00:00Z"), &th), None);
        // A pending version: looked at when it would turn stuck, rotation enabled or not.
        let pending = Rotation {
            pending: Some("v2".into()),
            ..off
        };
        let pst = status(None, &pending, t("2026-12-01T10:00:00Z"));
        assert_eq!(
            next_check(&pending, &pst, t("2026-12-01T10:05:00Z"), &th),
            Some(t("2026-12-01T11:00:01Z"))
        );
    }

    #[test]
    fn dates_no_status_can_hold_are_ignored() {
        let th = Thresholds::default();
        for bad in [i64::MAX, i64::MIN, -5, 0, 253_402_300_800] {
            let r = Rotation {
                enabled: true,
                last_rotated: Some(bad),
                next_rotation: Some(bad),
                ..Rotation::default()
            };
            let st = status(None, &r, t("2026-12-01T10:00:00Z"));
            assert_eq!(next_check(&r, &st, t("2026-12-01T10:00:00Z"), &th), None);
            assert_eq!((st.last_rotated_time, st.next_rotation_time), (None, None));
        }
    }

    #[test]
    fn a_pending_version_keeps_when_it_was_first_seen_and_turns_stuck() {
        let th = Thresholds {
            overdue_after: Duration::from_secs(3600),
            stuck_after: Duration::from_secs(600),
        };
        let mut r = rot("2026-12-30T10:00:00Z");
        r.pending = Some("v2".into());
        let first = status(None, &r, t("2026-12-01T10:00:00Z"));
        assert_eq!(first.pending_since.as_deref(), Some("2026-12-01T10:00:00Z"));
        let later = status(Some(&first), &r, t("2026-12-01T10:30:00Z"));
        assert_eq!(later.pending_since.as_deref(), Some("2026-12-01T10:00:00Z"));
        assert_eq!(
            health(&later, t("2026-12-01T10:05:00Z"), &th).status,
            "True",
            "pending for 5 minutes: a rotation in progress"
        );
        let h = health(&later, t("2026-12-01T10:30:00Z"), &th);
        assert_eq!((h.status, h.reason), ("False", "RotationStuck"));
        assert_eq!(h.message, "version v2 has been AWSPENDING without becoming AWSCURRENT since 2026-12-01T10:00:00Z: the rotation did not finish (check the rotation function's finishSecret step and its logs)");
        // Another pending version starts again; none clears.
        r.pending = Some("v3".into());
        let other = status(Some(&later), &r, t("2026-12-01T10:31:00Z"));
        assert_eq!(other.pending_since.as_deref(), Some("2026-12-01T10:31:00Z"));
        r.pending = None;
        let done = status(Some(&other), &r, t("2026-12-01T10:32:00Z"));
        assert_eq!((done.pending_version_id, done.pending_since), (None, None));
    }

    #[test]
    fn overdue_disabled_and_on_schedule() {
        let th = Thresholds::default();
        let st = status(
            None,
            &rot("2026-12-01T10:00:00Z"),
            t("2026-12-01T10:00:00Z"),
        );
        let h = health(&st, t("2026-12-01T10:59:00Z"), &th);
        assert_eq!(
            (h.status, h.reason, h.message.as_str()),
            (
                "True",
                "RotationOnSchedule",
                "last rotated at 2026-11-01T10:00:00Z; next rotation at 2026-12-01T10:00:00Z"
            )
        );
        let h = health(&st, t("2026-12-01T12:00:01Z"), &th);
        assert_eq!(
            (h.status, h.reason, h.message.as_str()),
            ("False", "RotationOverdue", "the rotation due by 2026-12-01T10:00:00Z has not happened (AWSCURRENT did not move): check the rotation function")
        );
        let off = status(None, &Rotation::default(), t("2026-12-01T10:00:00Z"));
        let h = health(&off, t("2026-12-01T10:00:00Z"), &th);
        assert_eq!((h.status, h.reason), ("Unknown", "RotationDisabled"));
    }

    #[test]
    fn while_a_rotation_is_due_each_look_asks_aws() {
        let th = Thresholds::default();
        let st = status(
            None,
            &rot("2026-12-01T10:00:00Z"),
            t("2026-12-01T09:00:00Z"),
        );
        let at = |s: &str| due(Some(&st), t(s), &th);
        assert!(!at("2026-12-01T08:59:00Z"), "the window is not open yet");
        assert!(at("2026-12-01T09:00:00Z"));
        assert!(at("2026-12-01T09:30:00Z"));
        assert!(
            at("2026-12-01T10:59:00Z"),
            "the window closed, not overdue yet"
        );
        assert!(!at("2026-12-01T11:00:01Z"), "overdue: the interval");
        assert!(!due(None, t("2026-12-01T10:00:10Z"), &th));
        let off = RotationStatus {
            enabled: false,
            ..st.clone()
        };
        assert!(!due(Some(&off), t("2026-12-01T10:00:10Z"), &th));
    }
}
