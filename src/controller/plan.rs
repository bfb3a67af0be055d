//! Pure: what one sync of a ManagedSecret decides, whole, from what it observed. Whether AWS is
//! asked at all ([`when`], through `schedule::plan`); once AWS answered, what the Secret must hold,
//! the status, the Event and the previous target to give back ([`write`]); whether the status is
//! worth a write; and after a failure the status, the back-off and whether anything is news
//! ([`failure`]). No I/O and no clock: `sync` observes, calls these, and converges.

use crate::crd::{ManagedSecret, ManagedSecretStatus, FORCE_SYNC_ANNOTATION};
use crate::error::{backoff, Error, Result};
use crate::k8s::secret as target;
use crate::policy::Identity;
use crate::reason;
use crate::render::{Mapping, SecretData};
use crate::rollout::Sync;
use crate::rotation;
use crate::schedule::{self, Observed, Plan};
use crate::source::Fetched;
use crate::status::{self, Failed, Synced, READY};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the operator remembers of one ManagedSecret between reconciles, as a reconcile read it.
#[derive(Clone, Default)]
pub(super) struct Memory {
    /// `namespace/name`, for metrics.
    pub key: Arc<str>,
    /// Consecutive failures, also when the status could not record them.
    pub failures: u32,
    /// When AWS last confirmed the synced value.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The next refresh (the status has it only as of its last change).
    pub next_refresh: Option<DateTime<Utc>>,
    /// The compiled mapping and the generation it was compiled for.
    pub mapping: Option<(Option<i64>, Arc<Mapping>)>,
}

/// What a reconcile hands back to the memory, once.
#[derive(Default)]
pub(super) struct Memo {
    /// AWS confirmed the value and the Secret holds it (the failure count starts again).
    pub confirmed_at: Option<DateTime<Utc>>,
    pub next_refresh: Option<DateTime<Utc>>,
    /// A mapping compiled for this generation.
    pub mapping: Option<(Option<i64>, Arc<Mapping>)>,
    /// After a failure: the consecutive failures.
    pub failures: Option<u32>,
}

/// Everything a sync reads before it decides, read once.
pub(super) struct Observation {
    pub now: DateTime<Utc>,
    /// The status as last written (empty for a new object).
    pub status: ManagedSecretStatus,
    /// The refresh interval in force: the spec's, stretched while events flow.
    pub interval: Duration,
    /// Who reads the secret in AWS (what the access policies grant).
    pub identity: Identity,
    /// The spec's mapping, compiled; `compiled` when this reconcile compiled it.
    pub mapping: Arc<Mapping>,
    pub compiled: bool,
    pub memory: Memory,
    /// A sweep has seen another AWS version than the one synced.
    pub source_moved: bool,
    /// The target Secret as the cache keeps it (our keys, values as digests): None when it was
    /// not read (not cached, and not needed before AWS answers), Some(None) when there is none.
    pub current: Option<Option<Secret>>,
    /// The Secret still holds what was synced (true when nothing was synced yet).
    pub intact: bool,
    /// When a rotation counts as overdue or stuck.
    pub thresholds: rotation::Thresholds,
}

impl Observation {
    /// For a failure: whether the Secret in the cluster is known to still hold the synced value.
    pub fn holds_synced(&self) -> bool {
        self.intact && self.current.as_ref().is_some_and(Option::is_some)
    }
}

/// Whether `current` still holds what the status says was synced (its keys hash the same).
pub(super) fn intact(
    status: &ManagedSecretStatus,
    current: Option<&Secret>,
    hash_key: &[u8],
) -> bool {
    match &status.data_hash {
        None => true,
        Some(h) => {
            current
                .and_then(|c| target::current_hash(c, &status.synced_keys, hash_key))
                .as_deref()
                == Some(h.as_str())
        }
    }
}

/// Whether to ask AWS now, or rest until when.
pub(super) fn when(ms: &ManagedSecret, seen: &Observation) -> Plan {
    let s = &seen.status;
    schedule::plan(&Observed {
        now: seen.now,
        generation: ms.metadata.generation,
        observed_generation: s.observed_generation,
        force_sync: force(ms),
        last_force_sync: s.last_force_sync.clone(),
        next_refresh: next_refresh(seen),
        ready: status::is_true(&s.conditions, READY),
        secret_intact: seen.intact,
        access_granted: s
            .conditions
            .iter()
            .any(|c| c.type_ == READY && c.reason == reason::POLICY_DENIED),
        source_moved: seen.source_moved,
    })
}

fn force(ms: &ManagedSecret) -> Option<String> {
    ms.annotations().get(FORCE_SYNC_ANNOTATION).cloned()
}

/// The refresh as remembered (as the status says after a restart), never later than the interval
/// in force now after the last confirmation, jitter included (shorter again when events stop).
fn next_refresh(seen: &Observation) -> Option<DateTime<Utc>> {
    let cap = seen
        .memory
        .confirmed_at
        .and_then(|c| schedule::after(c, seen.interval + seen.interval / 10));
    seen.memory
        .next_refresh
        .or_else(|| status::parse_ts(seen.status.next_refresh_time.as_deref()))
        .map(|t| cap.map_or(t, |c| t.min(c)))
}

/// How long a resting object waits (`min_refresh` when `until` has passed).
pub(super) fn rest_wait(
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    min_refresh: Duration,
) -> Duration {
    (until - now).to_std().unwrap_or(min_refresh)
}

/// What a sync writes once AWS answered. No `Debug`: `desired` holds the values.
pub(super) struct Write {
    /// The Secret as applied (only the fields we own).
    pub desired: serde_json::Value,
    /// How many keys it holds.
    pub keys: usize,
    pub version_id: String,
    /// The status after the sync, before the rollout step.
    pub status: ManagedSecretStatus,
    pub next_refresh: DateTime<Utc>,
    /// The requeue: until the next refresh.
    pub wait: Duration,
    pub kind: Sync,
    /// The `Synced` Event's note if the Secret changes: a new version, a repaired Secret (a first
    /// sync has none: its Ready condition says it, and a cold start is not 10,000 Events).
    pub note: Option<String>,
    /// The previous target to give back (target.name changed).
    pub release: Option<String>,
    /// When the operator first saw this version (the sync-lag metric).
    pub seen_at: Instant,
    /// The rotation's health when it changed: an Event (a warning when it is not healthy).
    pub rotation_news: Option<RotationNews>,
    /// Why the rotation is unhealthy (the metric), None when it is healthy or unknown.
    pub rotation_unhealthy: Option<&'static str>,
}

/// Why the status says the rotation is unhealthy (the metric's label), if it does.
pub(super) fn rotation_unhealthy(st: &ManagedSecretStatus) -> Option<&'static str> {
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == reason::ROTATION_HEALTHY && c.status == "False")?;
    [reason::ROTATION_OVERDUE, reason::ROTATION_STUCK]
        .into_iter()
        .find(|r| *r == c.reason)
}

/// An Event about the rotation's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RotationNews {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What the Secret, the status and the schedule become with `fetched`. `jitter` in [0, 1).
pub(super) fn write(
    ms: &ManagedSecret,
    seen: &Observation,
    fetched: &Fetched,
    bypass_cache: bool,
    hash_key: &[u8],
    jitter: f64,
) -> Result<Write> {
    if let Some(id) = &ms.spec.version_id {
        let stages = &fetched.version_stages;
        if !stages.is_empty() && stages.iter().all(|s| s == "AWSPENDING") {
            return Err(Error::InvalidSpec(format!(
                "versionId {id} is only AWSPENDING: a pending value is not yet in use and may never be"
            )));
        }
    }
    let data = seen.mapping.render(&fetched.value)?;
    let prev = &seen.status;
    let now = seen.now;
    let name = ms.target_name();
    let polled = schedule::after(now, schedule::jittered(seen.interval, jitter))
        .ok_or_else(|| Error::InvalidSpec("refreshInterval is too long".into()))?;
    let (rotation_status, look) = rotation_schedule(fetched, prev, now, &seen.thresholds);
    let next = look.map_or(polled, |r| r.min(polled));
    let mut status = status::synced(
        prev,
        Synced {
            generation: ms.metadata.generation,
            secret_id: ms.spec.secret_id.clone(),
            target: name.clone(),
            version_id: fetched.version_id.clone(),
            version_stages: fetched.version_stages.clone(),
            data_hash: data.hash(hash_key),
            keys: status_keys(ms, &data, hash_key),
            now,
            next_refresh: next,
            forced: if bypass_cache { force(ms) } else { None },
        },
    );
    if let Some(r) = rotation_status {
        status.rotation = r.map(Box::new);
    }
    let (rotation_news, rotation_unhealthy) = rotation_health(
        &mut status,
        prev,
        ms.metadata.generation,
        now,
        &seen.thresholds,
    );
    Ok(Write {
        desired: target::desired_secret(ms, &data, &fetched.version_id),
        keys: data.0.len(),
        version_id: fetched.version_id.clone(),
        status,
        next_refresh: next,
        wait: (next - now).to_std().unwrap_or(seen.interval),
        kind: match &prev.synced_version_id {
            None => Sync::First,
            Some(v) if *v != fetched.version_id => Sync::NewVersion,
            Some(_) => Sync::Same,
        },
        note: prev
            .synced_version_id
            .is_some()
            .then(|| synced_note(ms, &name, &fetched.version_id, &data)),
        release: prev.secret_name.clone().filter(|o| *o != name),
        seen_at: fetched.seen_at,
        rotation_news,
        rotation_unhealthy,
    })
}

/// The `RotationHealthy` condition from `st.rotation`; the Event when the health changed, and the
/// unhealthy reason.
fn rotation_health(
    st: &mut ManagedSecretStatus,
    prev: &ManagedSecretStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
    thresholds: &rotation::Thresholds,
) -> (Option<RotationNews>, Option<&'static str>) {
    let Some(rot) = &st.rotation else {
        status::set_condition(&mut st.conditions, reason::ROTATION_HEALTHY, None);
        return (None, None);
    };
    let h = rotation::health(rot, now, thresholds);
    let before = prev
        .conditions
        .iter()
        .find(|c| c.type_ == reason::ROTATION_HEALTHY)
        .map(|c| (c.status.clone(), c.reason.clone()));
    let changed =
        before.as_ref().map(|(s, r)| (s.as_str(), r.as_str())) != Some((h.status, h.reason));
    let was_unhealthy = before.as_ref().is_some_and(|(s, _)| s == "False");
    let news = (changed && (h.status == "False" || was_unhealthy)).then(|| RotationNews {
        warning: h.status == "False",
        reason: h.reason,
        message: h.message.clone(),
    });
    let unhealthy = (h.status == "False").then_some(h.reason);
    let c = status::condition_with(
        &prev.conditions,
        reason::ROTATION_HEALTHY,
        h.status,
        h.reason,
        h.message,
        generation,
        now,
    );
    status::set_condition(&mut st.conditions, reason::ROTATION_HEALTHY, Some(c));
    (news, unhealthy)
}

/// status.rotation as AWS's metadata says it now (None when AWS said nothing: a pinned version is
/// read without its metadata, and the status keeps what it had; Some(None) for a secret never set
/// up for rotation, which gets none), and when a rotation window or a pending version is next
/// worth a look (the interval stays the backstop).
fn rotation_schedule(
    fetched: &Fetched,
    prev: &ManagedSecretStatus,
    now: DateTime<Utc>,
    thresholds: &rotation::Thresholds,
) -> (
    Option<Option<crate::crd::RotationStatus>>,
    Option<DateTime<Utc>>,
) {
    let Some(r) = &fetched.rotation else {
        return (None, None);
    };
    if !r.relevant() {
        return (Some(None), None);
    }
    let st = rotation::status(prev.rotation.as_deref(), r, now);
    let look = rotation::next_check(r, &st, now, thresholds);
    (Some(Some(st)), look)
}

fn synced_note(ms: &ManagedSecret, name: &str, version: &str, data: &SecretData) -> String {
    let keys = if ms.spec.data.all_keys {
        // The names came from the AWS value: Events are readable more widely.
        format!("{} keys", data.0.len())
    } else {
        format!("keys: {}", data.keys().join(", "))
    };
    format!("Secret {name} now holds AWS version {version} ({keys})")
}

/// The key names status.syncedKeys shows: as written when the spec names them, as digests when
/// they came from the AWS value (allKeys), sorted.
fn status_keys(ms: &ManagedSecret, data: &SecretData, hash_key: &[u8]) -> Vec<String> {
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

/// Whether a sync's status is worth a write: the Secret changed, the object is not yet claimed by
/// this installation, or something besides the times moved.
pub(super) fn status_is_news(
    changed: bool,
    claimed_here: bool,
    prev: &ManagedSecretStatus,
    new: &ManagedSecretStatus,
) -> bool {
    changed || !claimed_here || !status::same_apart_from_times(prev, new)
}

/// The wait after the `failures`-th consecutive transient failure: 5s, 10s, ... 5m, plus up to
/// 10% jitter, and never less than what the server asked for.
pub(super) fn retry_wait(err: &Error, failures: u32, jitter: f64) -> Duration {
    let wait = schedule::jittered(backoff(failures), jitter);
    err.retry_after().map(|r| r.max(wait)).unwrap_or(wait)
}

/// What a failure decides from.
pub(super) struct Failing<'a> {
    pub ms: &'a ManagedSecret,
    /// The status before the failure: the one this attempt wrote, if it wrote one.
    pub prev: &'a ManagedSecretStatus,
    pub error: &'a Error,
    pub memory: &'a Memory,
    /// The refresh interval in force (None: the spec has none that is valid).
    pub interval: Option<Duration>,
    /// The Secret is known to still hold the synced value (or was not looked at).
    pub secret_intact: bool,
    pub now: DateTime<Utc>,
    /// The status names this installation as the one that syncs the object.
    pub claimed_here: bool,
}

/// What a failure leads to.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Retry {
    pub wait: Duration,
    pub next_attempt: DateTime<Utc>,
    pub failures: u32,
    pub status: ManagedSecretStatus,
    /// The synced value has not been confirmed for longer than the interval.
    pub stale: bool,
    /// When AWS last confirmed the value (memory, else the status).
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The status says something new: an Event and a status write. The same failure again costs
    /// no request (the failures metric counts every attempt).
    pub news: bool,
    /// Write the status (news, or to claim the object).
    pub write: bool,
}

/// The Secret is left as it is; the status says what failed and when the next attempt is.
/// Transient errors back off (5s ... 5m with jitter, or what a 429 asked for); permanent ones
/// wait for a change, or retry at the refresh interval doubling to an hour. `jitter` in [0, 1).
pub(super) fn failure(f: &Failing, jitter: f64) -> Retry {
    let recorded = f.ms.status.as_ref().map(|s| s.failures).unwrap_or(0);
    let failures = f.memory.failures.max(recorded).saturating_add(1);
    let transient = f.error.is_transient();
    let interval = f.interval.unwrap_or(schedule::DEFAULT_REFRESH);
    let wait = if transient {
        retry_wait(f.error, failures, jitter)
    } else {
        schedule::jittered(schedule::permanent_retry(interval, failures), jitter)
    };
    let next_attempt = schedule::after(f.now, wait).unwrap_or(f.now);
    let confirmed_at = f
        .memory
        .confirmed_at
        .or_else(|| status::parse_ts(f.prev.last_sync_time.as_deref()));
    let (mut st, stale) = status::failed(
        f.prev,
        Failed {
            generation: f.ms.metadata.generation,
            secret_id: f.ms.spec.secret_id.clone(),
            target: f.ms.target_name(),
            reason: f.error.reason(),
            message: f.error.to_string(),
            transient,
            secret_intact: f.secret_intact,
            now: f.now,
            next_attempt,
            confirmed_at,
            refresh_interval: interval,
        },
    );
    st.failures = failures;
    let news = status::failure_is_news(f.prev, &st);
    Retry {
        wait,
        next_attempt,
        failures,
        write: news || !f.claimed_here,
        status: st,
        stale,
        confirmed_at,
        news,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::SecretValue;
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        status::parse_ts(Some(s)).unwrap()
    }

    fn ms(spec: serde_json::Value, status: serde_json::Value) -> ManagedSecret {
        serde_json::from_value(json!({
            "apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "db", "namespace": "team", "uid": "u1", "generation": 1},
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    fn spec() -> serde_json::Value {
        json!({"secretId": "prod/db/credentials", "data": {"keys": [{"from": "password"}]}})
    }

    fn seen(ms: &ManagedSecret) -> Observation {
        Observation {
            now: t("2026-12-01T10:00:00Z"),
            status: ms.status.clone().unwrap_or_default(),
            interval: Duration::from_secs(300),
            identity: Identity::Operator,
            mapping: Arc::new(Mapping::compile(&ms.spec).unwrap()),
            compiled: true,
            memory: Memory::default(),
            source_moved: false,
            current: None,
            intact: true,
            thresholds: rotation::Thresholds::default(),
        }
    }

    fn fetched(version: &str, stages: &[&str]) -> Fetched {
        Fetched {
            value: Arc::new(SecretValue::String(
                json!({"password": "hunter2"}).to_string(),
            )),
            version_id: version.into(),
            version_stages: stages.iter().map(|s| s.to_string()).collect(),
            from_cache: false,
            seen_at: Instant::now(),
            rotation: None,
        }
    }

    fn synced_status() -> serde_json::Value {
        json!({
            "observedGeneration": 1, "secretName": "db", "syncedVersionId": "v1",
            "dataHash": "h", "lastSyncTime": "2026-12-01T09:58:00Z",
            "nextRefreshTime": "2026-12-01T10:00:30Z",
            "claimedBy": "managed-secrets/managed-secrets",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Synced",
                "message": "Secret db holds AWS version v1 of prod/db/credentials",
                "lastTransitionTime": "2026-12-01T09:55:00Z", "observedGeneration": 1}],
        })
    }

    #[test]
    fn a_synced_object_rests_until_its_refresh_capped_by_the_interval_after_a_confirmation() {
        let m = ms(spec(), synced_status());
        let mut s = seen(&m);
        s.memory.next_refresh = Some(t("2026-12-01T11:00:00Z"));
        assert_eq!(
            when(&m, &s),
            Plan::Rest {
                until: t("2026-12-01T11:00:00Z")
            }
        );
        // Confirmed at 09:58: never later than 09:58 + 330s.
        s.memory.confirmed_at = Some(t("2026-12-01T09:58:00Z"));
        assert_eq!(
            when(&m, &s),
            Plan::Rest {
                until: t("2026-12-01T10:03:30Z")
            }
        );
        // Nothing remembered (a restart): the status's time, passed by now.
        let s = seen(&m);
        assert_eq!(
            when(&m, &s),
            Plan::Rest {
                until: t("2026-12-01T10:00:30Z")
            }
        );
        assert_eq!(
            rest_wait(s.now, t("2026-12-01T10:00:30Z"), Duration::from_secs(10)),
            Duration::from_secs(30)
        );
        assert_eq!(
            rest_wait(s.now, t("2026-12-01T09:00:00Z"), Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn a_policy_that_grants_a_denied_object_and_a_moved_source_make_it_sync_now() {
        let mut st = synced_status();
        st["conditions"][0]["status"] = json!("False");
        st["conditions"][0]["reason"] = json!("PolicyDenied");
        let m = ms(spec(), st);
        let mut s = seen(&m);
        s.memory.next_refresh = Some(t("2026-12-01T11:00:00Z"));
        assert_eq!(
            when(&m, &s),
            Plan::Sync {
                bypass_cache: false,
                why: "an access policy grants it now"
            }
        );
        let m = ms(spec(), synced_status());
        let mut s = seen(&m);
        s.memory.next_refresh = Some(t("2026-12-01T11:00:00Z"));
        s.source_moved = true;
        assert_eq!(
            when(&m, &s),
            Plan::Sync {
                bypass_cache: false,
                why: "AWS has a new version"
            }
        );
        s.intact = false;
        assert_eq!(
            when(&m, &s),
            Plan::Sync {
                bypass_cache: false,
                why: "Secret changed or missing"
            }
        );
    }

    #[test]
    fn a_new_version_writes_the_secret_the_status_and_a_synced_event() {
        let m = ms(spec(), synced_status());
        let s = seen(&m);
        let w = write(&m, &s, &fetched("v2", &["AWSCURRENT"]), false, b"k", 0.5).unwrap();
        assert_eq!(w.kind, Sync::NewVersion);
        assert_eq!(w.keys, 1);
        assert_eq!(w.version_id, "v2");
        assert_eq!(w.next_refresh, t("2026-12-01T10:05:15Z"));
        assert_eq!(w.wait, Duration::from_secs(315));
        assert_eq!(
            w.note.as_deref(),
            Some("Secret db now holds AWS version v2 (keys: password)")
        );
        assert_eq!(w.release, None);
        assert_eq!(w.desired["data"]["password"], json!("aHVudGVyMg=="));
        assert_eq!(w.status.synced_version_id.as_deref(), Some("v2"));
        assert_eq!(w.status.synced_keys, vec!["password".to_string()]);
        assert_eq!(
            w.status.next_refresh_time.as_deref(),
            Some("2026-12-01T10:05:15Z")
        );
        assert_eq!(
            w.status.conditions[0].message,
            "Secret db holds AWS version v2 of prod/db/credentials"
        );
        assert!(status_is_news(false, true, &s.status, &w.status));
    }

    #[test]
    fn a_first_sync_has_no_event_and_a_renamed_target_gives_the_old_one_back() {
        let m = ms(spec(), json!({}));
        let w = write(
            &m,
            &seen(&m),
            &fetched("v1", &["AWSCURRENT"]),
            false,
            b"k",
            0.0,
        )
        .unwrap();
        assert_eq!((w.kind, w.note), (Sync::First, None));
        let mut sp = spec();
        sp["target"] = json!({"name": "db-v2"});
        let m = ms(sp, synced_status());
        let w = write(
            &m,
            &seen(&m),
            &fetched("v1", &["AWSCURRENT"]),
            false,
            b"k",
            0.0,
        )
        .unwrap();
        assert_eq!(w.kind, Sync::Same);
        assert_eq!(w.release.as_deref(), Some("db"));
        assert_eq!(w.status.secret_name.as_deref(), Some("db-v2"));
    }

    #[test]
    fn the_same_version_again_is_no_status_write_unless_unclaimed() {
        let m = ms(spec(), synced_status());
        let s = seen(&m);
        let first = write(&m, &s, &fetched("v1", &["AWSCURRENT"]), false, b"k", 0.0).unwrap();
        let mut again = seen(&m);
        again.status = first.status.clone();
        again.now = t("2026-12-01T10:05:00Z");
        let second = write(
            &m,
            &again,
            &fetched("v1", &["AWSCURRENT"]),
            false,
            b"k",
            0.0,
        )
        .unwrap();
        assert!(!status_is_news(false, true, &first.status, &second.status));
        assert!(status_is_news(true, true, &first.status, &second.status));
        assert!(status_is_news(false, false, &first.status, &second.status));
    }

    #[test]
    fn a_version_id_that_is_only_pending_and_a_force_sync_are_decided_here() {
        let mut sp = spec();
        sp["versionId"] = json!("v9");
        let m = ms(sp, json!({}));
        let err = write(
            &m,
            &seen(&m),
            &fetched("v9", &["AWSPENDING"]),
            true,
            b"k",
            0.0,
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "invalid spec: versionId v9 is only AWSPENDING: a pending value is not yet in use and may never be"
        );
        let mut m = ms(spec(), json!({}));
        m.metadata.annotations = Some(
            [(FORCE_SYNC_ANNOTATION.to_string(), "1".to_string())]
                .into_iter()
                .collect(),
        );
        let w = write(&m, &seen(&m), &fetched("v1", &[]), true, b"k", 0.0).unwrap();
        assert_eq!(w.status.last_force_sync.as_deref(), Some("1"));
        let w = write(&m, &seen(&m), &fetched("v1", &[]), false, b"k", 0.0).unwrap();
        assert_eq!(w.status.last_force_sync, None);
    }

    fn failing<'a>(
        m: &'a ManagedSecret,
        prev: &'a ManagedSecretStatus,
        error: &'a Error,
        memory: &'a Memory,
    ) -> Failing<'a> {
        Failing {
            ms: m,
            prev,
            error,
            memory,
            interval: Some(Duration::from_secs(300)),
            secret_intact: true,
            now: t("2026-12-01T10:00:00Z"),
            claimed_here: true,
        }
    }

    #[test]
    fn a_transient_failure_after_a_good_sync_keeps_ready_backs_off_and_is_news_once() {
        let m = ms(spec(), synced_status());
        let prev = m.status.clone().unwrap();
        let err = Error::Throttled("prod/db/credentials".into());
        let memory = Memory::default();
        let r = failure(&failing(&m, &prev, &err, &memory), 0.0);
        assert_eq!(
            (r.wait, r.failures, r.stale, r.news, r.write),
            (Duration::from_secs(5), 1, false, true, true)
        );
        assert_eq!(r.next_attempt, t("2026-12-01T10:00:05Z"));
        assert_eq!(r.confirmed_at, Some(t("2026-12-01T09:58:00Z")));
        let ready = &r.status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str(), ready.message.as_str()),
            ("True", "Synced", "Secret db holds AWS version v1 of prod/db/credentials; the last refresh failed (Throttled), next attempt at 2026-12-01T10:00:05Z")
        );
        // The same failure again: no write, no Event; the back-off doubles.
        let memory = Memory {
            failures: 1,
            ..Memory::default()
        };
        let mut again = failing(&m, &r.status, &err, &memory);
        again.now = t("2026-12-01T10:00:05Z");
        let r2 = failure(&again, 0.0);
        assert_eq!(
            (r2.wait, r2.failures, r2.news, r2.write),
            (Duration::from_secs(10), 2, false, false)
        );
        // Unclaimed: written anyway (to claim it), still no Event.
        again.claimed_here = false;
        let r3 = failure(&again, 0.0);
        assert_eq!((r3.news, r3.write), (false, true));
        // Unconfirmed for longer than the interval: Stale, which is news.
        again.claimed_here = true;
        again.now = t("2026-12-01T10:03:01Z");
        let r4 = failure(&again, 0.0);
        assert_eq!((r4.stale, r4.news), (true, true));
        assert_eq!(r4.status.conditions[1].type_, "Stale");
    }

    #[test]
    fn a_permanent_failure_is_ready_false_and_retries_from_the_interval_doubling() {
        let m = ms(spec(), json!({}));
        let prev = ManagedSecretStatus::default();
        let err = Error::PolicyDenied("no SecretAccessPolicy grants namespace team".into());
        let memory = Memory {
            failures: 2,
            ..Memory::default()
        };
        let r = failure(&failing(&m, &prev, &err, &memory), 0.0);
        assert_eq!(
            (r.wait, r.failures, r.stale, r.news),
            (Duration::from_secs(1200), 3, false, true)
        );
        let ready = &r.status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str(), ready.message.as_str()),
            ("False", "PolicyDenied", "PolicyDenied: no SecretAccessPolicy grants namespace team; nothing is read from AWS until a SecretAccessPolicy grants it; next attempt at 2026-12-01T10:20:00Z")
        );
        assert_eq!(r.status.failures, 3);
        // Without a valid interval: from the default.
        let mut f = failing(&m, &prev, &err, &memory);
        f.interval = None;
        assert_eq!(
            failure(&f, 0.0).wait,
            schedule::permanent_retry(schedule::DEFAULT_REFRESH, 3)
        );
    }

    #[test]
    fn transient_waits_honour_what_the_server_asked_for() {
        let err = Error::Throttled("x".into());
        assert_eq!(retry_wait(&err, 1, 0.0), Duration::from_secs(5));
        assert_eq!(retry_wait(&err, 1, 0.5), Duration::from_millis(5250));
    }

    #[test]
    fn intact_compares_the_hash_over_the_synced_keys() {
        let st = ManagedSecretStatus::default();
        assert!(intact(&st, None, b"k"), "nothing synced yet");
        let st = ManagedSecretStatus {
            data_hash: Some("h".into()),
            synced_keys: vec!["password".into()],
            ..Default::default()
        };
        assert!(!intact(&st, None, b"k"), "no Secret");
    }

    fn rotating(next: &str, pending: Option<&str>) -> crate::source::Rotation {
        crate::source::Rotation {
            enabled: true,
            last_rotated: Some(t("2026-11-01T10:00:00Z").timestamp()),
            next_rotation: Some(t(next).timestamp()),
            pending: pending.map(String::from),
            window: Some("1h".into()),
            schedule: None,
            configured: true,
        }
    }

    #[test]
    fn a_rotation_due_within_the_interval_is_looked_for_shortly_after() {
        let m = ms(spec(), synced_status());
        let mut s = seen(&m);
        s.interval = Duration::from_secs(3600);
        let mut f = fetched("v1", &["AWSCURRENT"]);
        // The window opens at 10:20 (Duration 1h; it ends at NextRotationDate, 11:20).
        f.rotation = Some(rotating("2026-12-01T11:20:00Z", None));
        let w = write(&m, &s, &f, false, b"k", 0.0).unwrap();
        assert_eq!(w.next_refresh, t("2026-12-01T10:20:30Z"));
        assert_eq!(w.wait, Duration::from_secs(20 * 60 + 30));
        let rot = w.status.rotation.clone().unwrap();
        assert_eq!(
            (
                rot.enabled,
                rot.last_rotated_time.as_deref(),
                rot.next_rotation_time.as_deref()
            ),
            (
                true,
                Some("2026-11-01T10:00:00Z"),
                Some("2026-12-01T11:20:00Z")
            )
        );
        let c = w
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "RotationHealthy")
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "RotationOnSchedule")
        );
        assert_eq!((w.rotation_news, w.rotation_unhealthy), (None, None));
        // Beyond the interval: the interval.
        f.rotation = Some(rotating("2026-12-05T10:00:00Z", None));
        let w = write(&m, &s, &f, false, b"k", 0.0).unwrap();
        assert_eq!(w.next_refresh, t("2026-12-01T11:00:00Z"));
    }

    #[test]
    fn a_stuck_rotation_is_news_once_and_healthy_again_is_news_too() {
        let m = ms(spec(), synced_status());
        let mut s = seen(&m);
        s.thresholds.stuck_after = Duration::from_secs(60);
        let mut f = fetched("v1", &["AWSCURRENT"]);
        f.rotation = Some(rotating("2026-12-30T10:00:00Z", Some("v2")));
        let first = write(&m, &s, &f, false, b"k", 0.0).unwrap();
        assert_eq!(first.rotation_news, None, "pending: a rotation in progress");
        s.status = first.status.clone();
        s.now = t("2026-12-01T10:02:00Z");
        let stuck = write(&m, &s, &f, false, b"k", 0.0).unwrap();
        let news = stuck.rotation_news.clone().unwrap();
        assert_eq!((news.warning, news.reason), (true, "RotationStuck"));
        assert_eq!(stuck.rotation_unhealthy, Some("RotationStuck"));
        s.status = stuck.status.clone();
        s.now = t("2026-12-01T10:03:00Z");
        let again = write(&m, &s, &f, false, b"k", 0.0).unwrap();
        assert_eq!(again.rotation_news, None, "the same: no Event");
        s.status = again.status.clone();
        f.rotation = Some(rotating("2026-12-30T10:00:00Z", None));
        let healed = write(&m, &s, &f, false, b"k", 0.0).unwrap();
        let news = healed.rotation_news.unwrap();
        assert_eq!((news.warning, news.reason), (false, "RotationOnSchedule"));
        assert_eq!(healed.rotation_unhealthy, None);
        assert_eq!(healed.status.rotation.unwrap().pending_version_id, None);
    }

    #[test]
    fn a_secret_never_set_up_for_rotation_gets_no_rotation_status_nor_condition() {
        let m = ms(spec(), synced_status());
        let mut f = fetched("v1", &["AWSCURRENT"]);
        f.rotation = Some(crate::source::Rotation::default());
        let w = write(&m, &seen(&m), &f, false, b"k", 0.0).unwrap();
        assert_eq!(w.status.rotation, None);
        assert!(!w
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "RotationHealthy"));
        // Set up once and disabled since: said so (informational).
        f.rotation = Some(crate::source::Rotation {
            configured: true,
            ..Default::default()
        });
        let w = write(&m, &seen(&m), &f, false, b"k", 0.0).unwrap();
        let c = w
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "RotationHealthy")
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "RotationDisabled")
        );
    }
}
