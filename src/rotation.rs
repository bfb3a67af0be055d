//! Pure: what AWS's rotation metadata means for a ManagedSecret. AWS rotates a secret at any time
//! in its rotation window: from NextRotationDate for the rules' `Duration` (without one, an hour
//! for a schedule in hours, else to the end of that UTC day). When to look again so that the
//! rotation reaches the Secret soon after it finishes ([`next_check`]); what `status.rotation`
//! says ([`status`]); and whether the rotation is healthy ([`health`]): overdue (the window closed
//! longer than a grace period ago, AWSCURRENT not moved), stuck (a version has carried AWSPENDING
//! without AWSCURRENT for longer than a threshold: the rotation function's finishSecret never
//! ran), or disabled. Only metadata, never values; every date and text from AWS is checked.

use crate::crd::RotationStatus;
use crate::reason;
use crate::source::Rotation;
use crate::status::{parse_ts, ts};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A rotation is first looked for this long after its window opens (a rotation function usually
/// finishes within seconds of starting).
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

/// How long the window that opens at `next` stays open: the rules' `Duration` (`3h`), else an
/// hour for a schedule in hours (`rate(4 hours)`, or a cron in hours), else to the end of that UTC
/// day; never more than a day, never less than an hour.
pub fn window(duration: Option<&str>, schedule: Option<&str>, next: DateTime<Utc>) -> Duration {
    let hour = Duration::from_secs(3600);
    if let Some(h) = duration
        .and_then(|d| d.trim().strip_suffix('h'))
        .and_then(|n| n.parse::<u64>().ok())
    {
        return Duration::from_secs(h.saturating_mul(3600)).clamp(hour, MAX_WINDOW);
    }
    if schedule.is_some_and(|s| s.len() <= 256 && s.contains("hour")) {
        return hour;
    }
    let end_of_day = next
        .date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc());
    end_of_day
        .and_then(|e| (e - next).to_std().ok())
        .unwrap_or(MAX_WINDOW)
        .clamp(hour, MAX_WINDOW)
}

/// The rotation window of `rot`: (opens, closes), if AWS says when.
fn window_of(rot: &Rotation) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let next = at(rot.next_rotation)?;
    let w = window(rot.window.as_deref(), rot.schedule.as_deref(), next);
    Some((next, plus(next, w)?))
}

/// The earliest time to look again for the rotation's sake (the refresh interval still applies):
/// shortly after a NextRotationDate ahead; every [`DUE_POLL`] while a due rotation has not
/// finished and is not overdue yet; None otherwise (disabled, unknown, or overdue: the interval).
pub fn next_check(rot: &Rotation, now: DateTime<Utc>, t: &Thresholds) -> Option<DateTime<Utc>> {
    if !rot.enabled {
        return None;
    }
    let (opens, closes) = window_of(rot)?;
    let settled = plus(opens, SETTLE)?;
    if now < settled {
        return Some(settled);
    }
    let overdue = plus(closes, t.overdue_after)?;
    let every = ((closes - opens).to_std().ok()? / 60).clamp(DUE_POLL, DUE_POLL_MAX);
    (now < overdue).then(|| plus(now, every).map_or(overdue, |p| p.min(overdue)))
}

/// Whether a refresh at `now` must ask AWS even if the cache checked the secret recently: while
/// the rotation window (as the status last saw it) is open, and until the rotation is overdue.
pub fn due(st: Option<&RotationStatus>, now: DateTime<Utc>, t: &Thresholds) -> bool {
    let Some(st) = st.filter(|s| s.enabled) else {
        return false;
    };
    let opens = parse_ts(st.next_rotation_time.as_deref());
    let closes = parse_ts(st.window_closes_time.as_deref());
    match (opens, closes) {
        (Some(o), Some(c)) => now >= o && plus(c, t.overdue_after).is_some_and(|end| now <= end),
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
        window_closes_time: window_of(rot).map(|(_, c)| ts(c)),
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
    let closes = parse_ts(st.window_closes_time.as_deref());
    if let Some(closes) = closes {
        if plus(closes, t.overdue_after).is_some_and(|limit| now > limit) {
            return Health {
                status: "False",
                reason: reason::ROTATION_OVERDUE,
                message: format!(
                    "the rotation due by {} has not happened (AWSCURRENT did not move): check the rotation function",
                    ts(closes)
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
    fn the_window_is_the_rules_duration_an_hour_for_hourly_schedules_else_the_rest_of_the_day() {
        let next = t("2026-12-01T10:00:00Z");
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(window(Some("3h"), None, next), h(3));
        assert_eq!(window(Some("99h"), None, next), h(24));
        assert_eq!(window(Some("0h"), None, next), h(1));
        assert_eq!(window(None, Some("rate(4 hours)"), next), h(1));
        assert_eq!(window(None, Some("rate(10 days)"), next), h(14));
        assert_eq!(window(None, None, t("2026-12-01T23:30:00Z")), h(1));
        assert_eq!(window(Some("junk"), None, next), h(14));
    }

    #[test]
    fn a_rotation_ahead_is_looked_for_shortly_after_it_is_due_then_every_minute_until_overdue() {
        let th = Thresholds::default();
        let r = rot("2026-12-01T10:20:00Z");
        assert_eq!(
            next_check(&r, t("2026-12-01T10:00:00Z"), &th),
            Some(t("2026-12-01T10:20:30Z"))
        );
        assert_eq!(
            next_check(&r, t("2026-12-01T10:20:30Z"), &th),
            Some(t("2026-12-01T10:21:30Z"))
        );
        assert_eq!(
            next_check(&r, t("2026-12-01T12:19:40Z"), &th),
            Some(t("2026-12-01T12:20:00Z")),
            "never past the window and the grace"
        );
        assert_eq!(next_check(&r, t("2026-12-01T12:20:01Z"), &th), None);
        // A day-long window: every 24 minutes.
        let day = Rotation {
            window: Some("24h".into()),
            ..r.clone()
        };
        assert_eq!(
            next_check(&day, t("2026-12-01T11:00:00Z"), &th),
            Some(t("2026-12-01T11:24:00Z"))
        );
        let off = Rotation {
            enabled: false,
            ..r.clone()
        };
        assert_eq!(next_check(&off, t("2026-12-01T10:00:00Z"), &th), None);
        let unknown = Rotation {
            next_rotation: None,
            ..r
        };
        assert_eq!(next_check(&unknown, t("2026-12-01T10:00:00Z"), &th), None);
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
            assert_eq!(next_check(&r, t("2026-12-01T10:00:00Z"), &th), None);
            let st = status(None, &r, t("2026-12-01T10:00:00Z"));
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
            ("False", "RotationOverdue", "the rotation due by 2026-12-01T11:00:00Z has not happened (AWSCURRENT did not move): check the rotation function")
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
        assert!(!at("2026-12-01T09:59:00Z"), "not due yet");
        assert!(at("2026-12-01T10:00:00Z"));
        assert!(at("2026-12-01T10:30:00Z"));
        assert!(
            at("2026-12-01T11:30:00Z"),
            "the window closed, not overdue yet"
        );
        assert!(!at("2026-12-01T12:00:01Z"), "overdue: the interval");
        assert!(!due(None, t("2026-12-01T10:00:10Z"), &th));
        let off = RotationStatus {
            enabled: false,
            ..st.clone()
        };
        assert!(!due(Some(&off), t("2026-12-01T10:00:10Z"), &th));
    }
}
