//! Kubernetes Events (`events.k8s.io/v1`) with a bounded memory.
//!
//! kube's `Recorder` keeps every Event it published for six minutes, whole (about 2.7 KiB each
//! with its map slot): at 10,000 ManagedSecrets syncing for the first time that was a quarter of
//! the operator's heap. This recorder publishes the same Events and folds a repeat into the
//! existing Event's `series` the same way, but remembers only a hash of what makes Events the same,
//! the Event's name and its count (about 60 bytes), for a bounded number of them.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::Client;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a published Event absorbs repeats (as kube's recorder and client-go do).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// How many Events are remembered for series at most (a repeat of one not remembered starts a new
/// Event: nothing is lost but the folding).
pub const DEFAULT_CAPACITY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    name: Box<str>,
    count: i32,
    last: Instant,
}

/// The series bookkeeping, without I/O.
#[derive(Debug)]
pub struct SeriesCache {
    hasher: RandomState,
    capacity: usize,
    seen: HashMap<u64, Seen>,
    /// When a full cache last looked for expired entries (at most once per `SWEEP_EVERY`, so a
    /// cache full of live entries does not scan itself on every Event).
    swept: Option<Instant>,
}

/// How often a full cache looks for expired entries at most.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What to do for one Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// Create a new Event.
    Create,
    /// Patch this existing Event's series to this count.
    Repeat { name: String, count: i32 },
}

impl SeriesCache {
    pub fn new(capacity: usize) -> Self {
        SeriesCache {
            hasher: RandomState::new(),
            capacity,
            seen: HashMap::new(),
            swept: None,
        }
    }

    /// The identity of an Event as far as series go: everything but the note and the times.
    fn key(&self, ev: &Event, regarding: &ObjectReference) -> u64 {
        let mut h = self.hasher.build_hasher();
        matches!(ev.type_, EventType::Warning).hash(&mut h);
        ev.action.hash(&mut h);
        ev.reason.hash(&mut h);
        for r in std::iter::once(regarding).chain(ev.secondary.as_ref()) {
            r.api_version.hash(&mut h);
            r.kind.hash(&mut h);
            r.namespace.hash(&mut h);
            r.name.hash(&mut h);
            r.uid.hash(&mut h);
        }
        h.finish()
    }

    /// Whether this Event repeats one published less than `SERIES_TTL` ago.
    pub fn decide(&mut self, ev: &Event, regarding: &ObjectReference, now: Instant) -> Publish {
        let key = self.key(ev, regarding);
        match self.seen.get(&key) {
            Some(s) if now.saturating_duration_since(s.last) < SERIES_TTL => Publish::Repeat {
                name: s.name.to_string(),
                count: s.count.saturating_add(1),
            },
            _ => Publish::Create,
        }
    }

    /// Records that the Event was published as `name` with `count` occurrences.
    pub fn record(
        &mut self,
        ev: &Event,
        regarding: &ObjectReference,
        name: &str,
        count: i32,
        now: Instant,
    ) {
        let key = self.key(ev, regarding);
        if !self.seen.contains_key(&key) && self.seen.len() >= self.capacity {
            if self
                .swept
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
            {
                self.swept = Some(now);
                self.seen
                    .retain(|_, s| now.saturating_duration_since(s.last) < SERIES_TTL);
            }
            if self.seen.len() >= self.capacity {
                return;
            }
        }
        self.seen.insert(
            key,
            Seen {
                name: name.into(),
                count,
                last: now,
            },
        );
    }

    /// Forgets an Event (its series could not be patched: the server let it expire).
    pub fn forget(&mut self, ev: &Event, regarding: &ObjectReference) {
        let key = self.key(ev, regarding);
        self.seen.remove(&key);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Publishes Events as `controller` (instance `instance`).
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    cache: Mutex<SeriesCache>,
}

impl Recorder {
    pub fn new(client: Client, controller: String, instance: String) -> Self {
        Recorder {
            client,
            controller,
            instance,
            cache: Mutex::new(SeriesCache::new(DEFAULT_CAPACITY)),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, SeriesCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `ev` about `regarding` in its namespace (`default` for cluster-scoped objects).
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let ns = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), ns);
        let decision = self.cache().decide(ev, regarding, Instant::now());
        if let Publish::Repeat { name, count } = decision {
            let patch = serde_json::json!({"series": {
                "count": count,
                "lastObservedTime": MicroTime(Timestamp::now()),
            }});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.cache()
                        .record(ev, regarding, &name, count, Instant::now());
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    self.cache().forget(ev, regarding);
                }
                Err(e) => return Err(e),
            }
        }
        let event = self.new_event(ev, regarding);
        let created = api.create(&PostParams::default(), &event).await?;
        let name = created.metadata.name.unwrap_or_default();
        self.cache().record(ev, regarding, &name, 1, Instant::now());
        Ok(())
    }

    fn new_event(&self, ev: &Event, regarding: &ObjectReference) -> K8sEvent {
        let now = Timestamp::now();
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Sync".into(),
            secondary: None,
        }
    }

    fn obj(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("ManagedSecret".into()),
            namespace: Some("team".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_repeat_within_the_ttl_extends_the_series_and_a_later_one_starts_anew() {
        let mut c = SeriesCache::new(10);
        let t0 = Instant::now();
        let (e, o) = (ev("SyncFailed", "a"), obj("db", "u1"));
        assert_eq!(c.decide(&e, &o, t0), Publish::Create);
        c.record(&e, &o, "db.1", 1, t0);
        // The note does not make an Event different (as in client-go).
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(
            c.decide(&ev("SyncFailed", "b"), &o, t1),
            Publish::Repeat {
                name: "db.1".into(),
                count: 2
            }
        );
        c.record(&e, &o, "db.1", 2, t1);
        // The TTL runs from the last occurrence.
        let t2 = t1 + SERIES_TTL - Duration::from_secs(1);
        assert_eq!(
            c.decide(&e, &o, t2),
            Publish::Repeat {
                name: "db.1".into(),
                count: 3
            }
        );
        assert_eq!(c.decide(&e, &o, t1 + SERIES_TTL), Publish::Create);
    }

    #[test]
    fn reason_type_and_object_make_events_different() {
        let mut c = SeriesCache::new(10);
        let t0 = Instant::now();
        let (e, o) = (ev("SyncFailed", "a"), obj("db", "u1"));
        c.record(&e, &o, "db.1", 1, t0);
        assert_eq!(c.decide(&ev("Synced", "a"), &o, t0), Publish::Create);
        let mut normal = ev("SyncFailed", "a");
        normal.type_ = EventType::Normal;
        assert_eq!(c.decide(&normal, &o, t0), Publish::Create);
        // Same name, another object (recreated: new UID).
        assert_eq!(c.decide(&e, &obj("db", "u2"), t0), Publish::Create);
        assert_eq!(c.decide(&e, &obj("api", "u1"), t0), Publish::Create);
    }

    #[test]
    fn the_cache_is_bounded_and_makes_room_from_expired_entries() {
        let mut c = SeriesCache::new(2);
        let t0 = Instant::now();
        let e = ev("Synced", "");
        c.record(&e, &obj("a", "1"), "a.1", 1, t0);
        c.record(&e, &obj("b", "2"), "b.1", 1, t0 + Duration::from_secs(10));
        // Full, nothing expired: the third is published but not remembered.
        c.record(&e, &obj("c", "3"), "c.1", 1, t0 + Duration::from_secs(20));
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.decide(&e, &obj("c", "3"), t0 + Duration::from_secs(21)),
            Publish::Create
        );
        // Once the first expired, a new one takes its place.
        let later = t0 + SERIES_TTL + Duration::from_secs(1);
        c.record(&e, &obj("c", "3"), "c.2", 1, later);
        assert_eq!(c.len(), 2);
        assert_eq!(c.decide(&e, &obj("a", "1"), later), Publish::Create);
        assert!(matches!(
            c.decide(&e, &obj("c", "3"), later),
            Publish::Repeat { count: 2, .. }
        ));
        // An existing entry is always updated, even when full.
        c.record(&e, &obj("b", "2"), "b.1", 5, later);
        assert!(matches!(
            c.decide(&e, &obj("b", "2"), later),
            Publish::Repeat { count: 6, .. }
        ));
    }

    #[test]
    fn a_full_cache_looks_for_expired_entries_at_most_every_30_seconds() {
        let mut c = SeriesCache::new(1);
        let t0 = Instant::now();
        let e = ev("Synced", "");
        let (a, b) = (obj("a", "1"), obj("b", "2"));
        c.record(&e, &a, "a.1", 1, t0);
        let t1 = t0 + SERIES_TTL - Duration::from_secs(10);
        c.record(&e, &b, "b.1", 1, t1);
        assert_eq!(
            c.decide(&e, &b, t1),
            Publish::Create,
            "full of a live entry"
        );
        // `a` has expired, but the last look was 15s ago: b is still not remembered.
        let t2 = t1 + Duration::from_secs(15);
        c.record(&e, &b, "b.1", 1, t2);
        assert_eq!(c.decide(&e, &b, t2), Publish::Create);
        let t3 = t1 + SWEEP_EVERY;
        c.record(&e, &b, "b.1", 1, t3);
        assert!(matches!(
            c.decide(&e, &b, t3),
            Publish::Repeat { count: 2, .. }
        ));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_forgotten_event_starts_anew() {
        let mut c = SeriesCache::new(2);
        let t0 = Instant::now();
        let (e, o) = (ev("SyncFailed", "a"), obj("db", "u1"));
        c.record(&e, &o, "db.1", 1, t0);
        c.forget(&e, &o);
        assert!(c.is_empty());
        assert_eq!(c.decide(&e, &o, t0), Publish::Create);
    }
}
