//! The cache in front of AWS: the one place that decides which AWS calls are made.
//!
//! - A fresh entry is served without any call. An expired one is re-validated (metadata first)
//!   and its value re-read only when the version moved; a forced fetch bypasses everything.
//! - Concurrent requests for one secret share one in-flight call (single flight).
//! - Change detection: DescribeSecret per due secret for small fleets; for an identity and region
//!   with at least `sweep_threshold` cached secrets, one ListSecrets sweep (100 secrets a page) per
//!   refresh interval answers for all of them, and the values that moved are fetched together
//!   with BatchGetSecretValue (20 a call). A sweep announces what moved, so its ManagedSecrets look
//!   again at once.
//! - A full re-read of the value every `full_reread` (default 24h) is the safety net.
//! - Each entry knows which ManagedSecrets (owners) need it: an entry nobody needs is dropped at
//!   once (its plaintext overwritten), and the cache is bounded in entries and bytes (LRU).
//! - A failed fetch never evicts a good entry.

use super::{
    resolve, Changed, FetchRequest, Fetched, Group, Listed, SecretRef, SecretSource,
    SecretsBackend, VersionSelector, Versions,
};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// Sweeps of one group are at least this far apart, whatever the refresh intervals.
pub const MIN_SWEEP_PERIOD: Duration = Duration::from_secs(10);
/// The refresh interval recorded for a value an event had read before any ManagedSecret asked.
const CONFIRMED_MAX_AGE: Duration = Duration::from_secs(300);

/// A fetch that must revalidate (a rotation window is open) still takes an answer this fresh: the
/// readers of one secret looking at once cost one DescribeSecret, not one each.
const REVALIDATED_WITHIN: Duration = Duration::from_secs(15);

/// How much older than its period a sweep may be and still answer (it runs on a 1s tick).
const SWEEP_SLACK: Duration = Duration::from_secs(3);

/// Bounds and tuning of the cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_entries: usize,
    pub max_bytes: usize,
    /// Sweep an identity and region with ListSecrets once it has this many cached secrets
    /// (0: never sweep).
    pub sweep_threshold: usize,
    /// Re-read every value at least this often, whatever the metadata says.
    pub full_reread: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            sweep_threshold: 100,
            full_reread: Duration::from_secs(24 * 3600),
        }
    }
}

struct Entry {
    fetched: Fetched,
    /// Last time AWS confirmed the version (metadata or value).
    checked: Instant,
    /// Last time the value itself was read.
    read: Instant,
    used: Instant,
    owners: HashSet<String>,
    /// The refresh interval of the requests using it (the smallest seen).
    max_age: Duration,
    /// A sweep saw another version than this one (and its value is not read yet): the next fetch
    /// reads it, fresh or not.
    moved: Option<String>,
}

/// What the last sweep of a group saw.
struct Sweep {
    at: Instant,
    listed: Vec<Listed>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<SecretRef, Entry>,
    /// owner -> the entry it uses.
    owners: HashMap<String, SecretRef>,
    bytes: usize,
    sweeps: HashMap<Group, Sweep>,
    /// Groups that may not ListSecrets (AccessDenied): DescribeSecret for them.
    no_sweep: HashSet<Group>,
}

impl Inner {
    fn remove(&mut self, key: &SecretRef) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes = self.bytes.saturating_sub(e.fetched.value.len());
            for o in e.owners {
                if self.owners.get(&o) == Some(key) {
                    self.owners.remove(&o);
                }
            }
        }
    }

    /// Drops `owner`'s claim; an entry nobody claims any more goes.
    fn release(&mut self, owner: &str) {
        if let Some(key) = self.owners.remove(owner) {
            let empty = self
                .entries
                .get_mut(&key)
                .map(|e| {
                    e.owners.remove(owner);
                    e.owners.is_empty()
                })
                .unwrap_or(false);
            if empty {
                self.remove(&key);
            }
        }
    }

    fn claim(&mut self, owner: &str, key: &SecretRef) {
        if owner.is_empty() {
            return;
        }
        if self.owners.get(owner) != Some(key) {
            self.release(owner);
            if let Some(e) = self.entries.get_mut(key) {
                e.owners.insert(owner.to_string());
                self.owners.insert(owner.to_string(), key.clone());
            }
        }
    }

    /// Evicts the least recently used entries until the bounds hold.
    fn enforce(&mut self, limits: Limits) {
        while self.entries.len() > limits.max_entries || self.bytes > limits.max_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
    }
}

pub struct CachedSource<B> {
    backend: B,
    inner: Mutex<Inner>,
    /// One lock per secret being fetched: concurrent requests wait for the first.
    flights: Mutex<HashMap<SecretRef, Arc<tokio::sync::Mutex<()>>>>,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    changes: broadcast::Sender<Changed>,
    /// Sweeps run only while this is set (the leader's flag).
    gate: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// The version a selector points at among a sweep's secrets, if the sweep saw that secret.
fn swept_version(listed: &[Listed], key: &SecretRef) -> Option<Versions> {
    listed
        .iter()
        .find(|l| l.is(&key.secret_id))
        .map(|l| l.versions.clone())
}

impl<B: SecretsBackend> CachedSource<B> {
    pub fn new(backend: B) -> Self {
        CachedSource {
            backend,
            inner: Mutex::new(Inner::default()),
            flights: Mutex::new(HashMap::new()),
            limits: Limits::default(),
            metrics: None,
            changes: broadcast::channel(1024).0,
            gate: None,
        }
    }

    /// Sweeps only while `flag` is set (standbys make no AWS calls).
    pub fn with_gate(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.gate = Some(flag);
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Reports the cache's size and hit rate in the metrics.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, inner: &Inner) {
        if let Some(m) = &self.metrics {
            m.cache
                .entries
                .set(i64::try_from(inner.entries.len()).unwrap_or(i64::MAX));
            m.cache
                .bytes
                .set(i64::try_from(inner.bytes).unwrap_or(i64::MAX));
        }
    }

    fn lookup(&self, result: &str) {
        if let Some(m) = &self.metrics {
            m.cache_lookup(result);
        }
    }

    fn group_of(&self, key: &SecretRef) -> Group {
        Group {
            identity: key.identity.clone(),
            region: self.backend.region_of(key),
        }
    }

    /// The cached entry (and marks it used and claimed by `owner`).
    fn cached(
        &self,
        key: &SecretRef,
        owner: &str,
        max_age: Duration,
    ) -> Option<(Fetched, Instant, Instant)> {
        let mut inner = self.lock();
        let out = inner.entries.get_mut(key).map(|e| {
            e.used = Instant::now();
            e.max_age = e.max_age.min(max_age);
            (e.fetched.clone(), e.checked, e.read)
        });
        if out.is_some() {
            inner.claim(owner, key);
        }
        out
    }

    fn store(
        &self,
        key: &SecretRef,
        owner: &str,
        fetched: &Fetched,
        value_read: bool,
        max_age: Duration,
    ) {
        let mut f = fetched.clone();
        f.from_cache = false;
        let mut inner = self.lock();
        let now = Instant::now();
        let (mut owners, mut read, mut age) = (HashSet::new(), now, max_age);
        if let Some(old) = inner.entries.remove(key) {
            inner.bytes = inner.bytes.saturating_sub(old.fetched.value.len());
            owners = old.owners;
            if !value_read {
                read = old.read;
            }
            age = age.min(old.max_age);
        }
        inner.bytes = inner.bytes.saturating_add(f.value.len());
        inner.entries.insert(
            key.clone(),
            Entry {
                fetched: f,
                checked: now,
                read,
                used: now,
                owners,
                max_age: age,
                moved: None,
            },
        );
        inner.claim(owner, key);
        inner.enforce(self.limits);
        self.report(&inner);
    }

    /// GetSecretValue, cross-checked against DescribeSecret: when a stage was asked for and the
    /// returned version does not carry it (a store that lags, or a rotation in between), the version
    /// DescribeSecret names is read by id.
    async fn read(&self, key: &SecretRef) -> Result<Fetched> {
        let got = self.backend.get_value(key).await?;
        if let VersionSelector::Stage(_) = &key.version {
            let versions = self.backend.describe(key).await?;
            if let Some(current) = resolve(&versions, &key.version) {
                if current != got.version_id {
                    let by_id = SecretRef {
                        version: VersionSelector::Id(current.clone()),
                        ..key.clone()
                    };
                    let mut f = self.backend.get_value(&by_id).await?;
                    f.version_stages = versions.stages_of(&current);
                    f.rotation = Some(versions.rotation);
                    return Ok(f);
                }
            }
            return Ok(Fetched {
                rotation: Some(versions.rotation),
                ..got
            });
        }
        Ok(got)
    }

    /// The versions of an expired entry: from a sweep of its group if one answered within the
    /// entry's refresh interval, else from DescribeSecret.
    async fn versions_of(&self, key: &SecretRef, max_age: Duration) -> Result<(Versions, bool)> {
        let group = self.group_of(key);
        let swept = {
            let inner = self.lock();
            inner
                .sweeps
                .get(&group)
                // Sweeps run at most every MIN_SWEEP_PERIOD: that is the lag they add.
                .filter(|s| s.at.elapsed() <= max_age.max(MIN_SWEEP_PERIOD) + SWEEP_SLACK)
                .and_then(|s| swept_version(&s.listed, key))
        };
        match swept {
            Some(v) => Ok((v, true)),
            None => Ok((self.backend.describe(key).await?, false)),
        }
    }

    async fn fetch_inner(&self, req: &FetchRequest) -> Result<Fetched> {
        let key = &req.secret;
        // Single flight: whoever comes second finds what the first fetched.
        let flight = {
            let mut f = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            f.entry(key.clone()).or_default().clone()
        };
        let guard = flight.lock().await;
        let res = self.fetch_locked(req).await;
        drop(guard);
        {
            let mut f = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            if Arc::strong_count(&flight) <= 2 {
                f.remove(key);
            }
        }
        res
    }

    async fn fetch_locked(&self, req: &FetchRequest) -> Result<Fetched> {
        let key = &req.secret;
        if !req.bypass_cache {
            if let Some((cached, checked, read)) = self.cached(key, &req.owner, req.max_age) {
                let full = read.elapsed() >= self.limits.full_reread;
                let moved = self
                    .lock()
                    .entries
                    .get(key)
                    .is_some_and(|e| e.moved.is_some());
                let fresh_for = if req.revalidate {
                    req.max_age.min(REVALIDATED_WITHIN)
                } else {
                    req.max_age
                };
                if checked.elapsed() < fresh_for && !full && !moved {
                    self.lookup("hit");
                    return Ok(Fetched {
                        from_cache: true,
                        ..cached
                    });
                }
                if !full {
                    // Expired: is it still the same version?
                    let (versions, swept) = self.versions_of(key, fresh_for).await?;
                    if resolve(&versions, &key.version).as_deref()
                        == Some(cached.version_id.as_str())
                    {
                        let refreshed = Fetched {
                            version_stages: versions.stages_of(&cached.version_id),
                            rotation: Some(versions.rotation.clone()),
                            ..cached
                        };
                        self.store(key, &req.owner, &refreshed, false, req.max_age);
                        self.lookup(if swept { "swept" } else { "revalidated" });
                        return Ok(Fetched {
                            from_cache: true,
                            ..refreshed
                        });
                    }
                }
            }
        }
        self.lookup("miss");
        let f = self.read(key).await?;
        self.store(key, &req.owner, &f, true, req.max_age);
        Ok(f)
    }

    /// See `SecretSource::confirm`. Shares the single flight of fetches for the same secret.
    async fn confirm_inner(&self, key: &SecretRef) -> Result<String> {
        let flight = {
            let mut f = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            f.entry(key.clone()).or_default().clone()
        };
        let guard = flight.lock().await;
        let res = self.confirm_locked(key).await;
        drop(guard);
        {
            let mut f = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            if Arc::strong_count(&flight) <= 2 {
                f.remove(key);
            }
        }
        res
    }

    async fn confirm_locked(&self, key: &SecretRef) -> Result<String> {
        let held = self
            .lock()
            .entries
            .get(key)
            .map(|e| (e.fetched.version_id.clone(), e.max_age));
        let versions = self.backend.describe(key).await?;
        let now = resolve(&versions, &key.version);
        if let (Some((version, max_age)), Some(now)) = (&held, &now) {
            if version == now {
                let refreshed = {
                    let mut inner = self.lock();
                    inner.entries.get_mut(key).map(|e| {
                        e.moved = None;
                        e.fetched.rotation = Some(versions.rotation.clone());
                        e.fetched.clone()
                    })
                };
                if let Some(f) = refreshed {
                    self.store(key, "", &f, false, *max_age);
                }
                self.lookup("revalidated");
                return Ok(now.clone());
            }
        }
        self.lookup("miss");
        let f = self.read(key).await?;
        let max_age = held.map(|(_, a)| a).unwrap_or(CONFIRMED_MAX_AGE);
        self.store(key, "", &f, true, max_age);
        Ok(f.version_id)
    }

    /// The groups due for a sweep now: enough cached secrets, sweeping allowed, and the last
    /// sweep at least one refresh interval ago.
    fn due_sweeps(&self) -> Vec<Group> {
        if self.limits.sweep_threshold == 0 {
            return vec![];
        }
        let inner = self.lock();
        let mut groups: BTreeMap<Group, (usize, Duration)> = BTreeMap::new();
        for (k, e) in &inner.entries {
            let g = self.group_of(k);
            let slot = groups.entry(g).or_insert((0, e.max_age));
            slot.0 += 1;
            slot.1 = slot.1.min(e.max_age);
        }
        groups
            .into_iter()
            .filter(|(g, (n, _))| *n >= self.limits.sweep_threshold && !inner.no_sweep.contains(g))
            .filter(|(g, (_, every))| {
                inner
                    .sweeps
                    .get(g)
                    .map(|s| s.at.elapsed() >= (*every).max(MIN_SWEEP_PERIOD))
                    .unwrap_or(true)
            })
            .map(|(g, _)| g)
            .collect()
    }

    /// One ListSecrets sweep of a group: records what it saw, fetches the values that moved
    /// (BatchGetSecretValue for AWSCURRENT), and announces them. Returns the secrets that moved.
    pub async fn sweep(&self, group: &Group) -> Result<Vec<Changed>> {
        let listed = match self.backend.list(group).await {
            Ok(l) => l,
            Err(e @ Error::AccessDenied(_)) => {
                warn!(region = %group.region, identity = %group.identity.describe(), "ListSecrets is not allowed; checking secrets one by one with DescribeSecret (grant secretsmanager:ListSecrets to sweep)");
                self.lock().no_sweep.insert(group.clone());
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        // The cached secrets of this group whose watched version moved (in a stable order).
        let mut moved: Vec<(SecretRef, String)> = {
            let inner = self.lock();
            inner
                .entries
                .iter()
                .filter(|(k, _)| self.group_of(k) == *group)
                .filter_map(|(k, e)| {
                    let versions = swept_version(&listed, k)?;
                    let now = resolve(&versions, &k.version)?;
                    (now != e.fetched.version_id).then(|| (k.clone(), now))
                })
                .collect()
        };
        moved.sort_by(|a, b| a.0.secret_id.cmp(&b.0.secret_id));
        self.lock().sweeps.insert(
            group.clone(),
            Sweep {
                at: Instant::now(),
                listed: listed.clone(),
            },
        );
        if moved.is_empty() {
            return Ok(vec![]);
        }
        info!(region = %group.region, moved = moved.len(), "a sweep saw new versions");
        let current: Vec<String> = moved
            .iter()
            .filter(|(k, _)| k.version == VersionSelector::Stage("AWSCURRENT".into()))
            .map(|(k, _)| k.secret_id.clone())
            .collect();
        let mut fetched: HashMap<String, Fetched> = HashMap::new();
        if !current.is_empty() {
            match self.backend.batch_current(group, &current).await {
                Ok(v) => fetched.extend(v),
                Err(e) => {
                    debug!(error = %e, "BatchGetSecretValue failed; the values are read one by one")
                }
            }
        }
        let mut changed = vec![];
        for (key, version) in moved {
            // A batch answer counts only if it is the version the sweep saw.
            if let Some(f) = fetched
                .get(&key.secret_id)
                .filter(|f| f.version_id == version)
            {
                let f = &Fetched {
                    rotation: swept_version(&listed, &key).map(|v| v.rotation),
                    ..f.clone()
                };
                let max_age = self
                    .lock()
                    .entries
                    .get(&key)
                    .map(|e| e.max_age)
                    .unwrap_or(Duration::ZERO);
                self.store(&key, "", f, true, max_age);
            } else if let Some(e) = self.lock().entries.get_mut(&key) {
                e.moved = Some(version.clone());
            }
            let c = Changed {
                secret_id: key.secret_id.clone(),
                region: group.region.clone(),
            };
            if !changed.contains(&c) {
                changed.push(c);
            }
        }
        for c in &changed {
            let _ = self.changes.send(c.clone());
        }
        Ok(changed)
    }

    /// Sweeps the groups that are due, every second, until the future is dropped.
    pub async fn run_sweeps(&self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Some(g) = &self.gate {
                if !g.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
            }
            for g in self.due_sweeps() {
                if let Err(e) = self.sweep(&g).await {
                    debug!(error = %e, region = %g.region, "sweep failed; DescribeSecret answers until the next");
                    // Do not retry before another interval.
                    let mut inner = self.lock();
                    inner
                        .sweeps
                        .entry(g)
                        .or_insert(Sweep {
                            at: Instant::now(),
                            listed: vec![],
                        })
                        .at = Instant::now();
                }
            }
        }
    }

    /// Entries held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: SecretsBackend> SecretSource for CachedSource<B> {
    fn fetch<'a>(&'a self, req: &'a FetchRequest) -> BoxFuture<'a, Result<Fetched>> {
        Box::pin(self.fetch_inner(req))
    }

    fn release(&self, owner: &str) {
        let mut inner = self.lock();
        inner.release(owner);
        self.report(&inner);
    }

    fn retain(&self, live: &HashSet<String>) {
        let mut inner = self.lock();
        let gone: Vec<String> = inner
            .owners
            .keys()
            .filter(|o| !live.contains(*o))
            .cloned()
            .collect();
        for o in gone {
            inner.release(&o);
        }
        self.report(&inner);
    }

    fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }

    fn confirm<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<String>> {
        Box::pin(self.confirm_inner(secret))
    }

    fn announce(&self, changed: Changed) {
        let _ = self.changes.send(changed);
    }

    fn known_version(&self, secret: &SecretRef) -> Option<String> {
        let inner = self.lock();
        let e = inner.entries.get(secret)?;
        Some(
            e.moved
                .clone()
                .unwrap_or_else(|| e.fetched.version_id.clone()),
        )
    }

    fn background(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.run_sweeps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::SecretValue;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Versions3 = Vec<(String, Vec<String>, String)>;

    /// An in-memory secret store that counts calls.
    #[derive(Default)]
    struct Store {
        secrets: Mutex<BTreeMap<String, Versions3>>,
        gets: AtomicUsize,
        describes: AtomicUsize,
        lists: AtomicUsize,
        batches: AtomicUsize,
        stale_get: Mutex<Option<String>>,
        slow: bool,
    }

    impl Store {
        fn with(ids: &[&str]) -> Store {
            let s = Store::default();
            for id in ids {
                s.secrets.lock().unwrap().insert(
                    id.to_string(),
                    vec![("v1".into(), vec!["AWSCURRENT".into()], format!("{id}-one"))],
                );
            }
            s
        }
        fn rotate(&self, id: &str, version: &str, value: &str) {
            let mut all = self.secrets.lock().unwrap();
            let v = all.get_mut(id).unwrap();
            for x in v.iter_mut() {
                x.1.retain(|s| s != "AWSCURRENT");
            }
            v.push((version.into(), vec!["AWSCURRENT".into()], value.into()));
        }
    }

    fn fetched(id: String, stages: Vec<String>, val: String) -> Fetched {
        Fetched {
            value: Arc::new(SecretValue::String(val)),
            version_id: id,
            version_stages: stages,
            from_cache: false,
            seen_at: Instant::now(),
            rotation: None,
        }
    }

    impl SecretsBackend for Store {
        fn get_value<'a>(&'a self, s: &'a SecretRef) -> BoxFuture<'a, Result<Fetched>> {
            Box::pin(async move {
                self.gets.fetch_add(1, Ordering::SeqCst);
                if self.slow {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let all = self.secrets.lock().unwrap().clone();
                let v = all
                    .get(&s.secret_id)
                    .ok_or_else(|| Error::SecretNotFound(s.secret_id.clone()))?;
                let stale = self.stale_get.lock().unwrap().clone();
                let found = match (&s.version, stale) {
                    (VersionSelector::Stage(_), Some(id)) => v.iter().find(|x| x.0 == id),
                    (VersionSelector::Stage(st), None) => v.iter().find(|x| x.1.contains(st)),
                    (VersionSelector::Id(id), _) => v.iter().find(|x| &x.0 == id),
                };
                let (id, stages, val) = found
                    .cloned()
                    .ok_or_else(|| Error::SecretNotFound(s.secret_id.clone()))?;
                Ok(fetched(id, stages, val))
            })
        }
        fn describe<'a>(&'a self, s: &'a SecretRef) -> BoxFuture<'a, Result<Versions>> {
            Box::pin(async move {
                self.describes.fetch_add(1, Ordering::SeqCst);
                let all = self.secrets.lock().unwrap();
                let stages: Vec<(String, Vec<String>)> = all
                    .get(&s.secret_id)
                    .map(|v| v.iter().map(|(a, b, _)| (a.clone(), b.clone())).collect())
                    .unwrap_or_default();
                Ok(stages.into())
            })
        }
        fn list<'a>(&'a self, _: &'a Group) -> BoxFuture<'a, Result<Vec<Listed>>> {
            Box::pin(async move {
                self.lists.fetch_add(1, Ordering::SeqCst);
                Ok(self
                    .secrets
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(id, v)| Listed {
                        name: id.clone(),
                        arn: format!(
                            "arn:aws:secretsmanager:us-east-1:123456789012:secret:{id}-AbCdEf"
                        ),
                        versions: v
                            .iter()
                            .map(|(a, b, _)| (a.clone(), b.clone()))
                            .collect::<Vec<_>>()
                            .into(),
                    })
                    .collect())
            })
        }
        fn batch_current<'a>(
            &'a self,
            _: &'a Group,
            ids: &'a [String],
        ) -> BoxFuture<'a, Result<Vec<(String, Fetched)>>> {
            Box::pin(async move {
                self.batches
                    .fetch_add(ids.len().div_ceil(20), Ordering::SeqCst);
                let all = self.secrets.lock().unwrap();
                Ok(ids
                    .iter()
                    .filter_map(|id| {
                        let v = all.get(id)?;
                        let (vid, st, val) = v
                            .iter()
                            .find(|x| x.1.iter().any(|s| s == "AWSCURRENT"))?
                            .clone();
                        Some((id.clone(), fetched(vid, st, val)))
                    })
                    .collect())
            })
        }
        fn region_of(&self, s: &SecretRef) -> String {
            s.region.clone().unwrap_or_else(|| "us-east-1".into())
        }
    }

    fn req_for(id: &str, owner: &str, bypass: bool, max_age: Duration) -> FetchRequest {
        FetchRequest {
            secret: SecretRef {
                secret_id: id.into(),
                region: None,
                version: VersionSelector::Stage("AWSCURRENT".into()),
                identity: Default::default(),
            },
            bypass_cache: bypass,
            max_age,
            revalidate: false,
            owner: owner.into(),
        }
    }

    fn req(bypass: bool, max_age: Duration) -> FetchRequest {
        req_for("prod/db/credentials", "uid-1", bypass, max_age)
    }

    fn value(f: &Fetched) -> String {
        match f.value.as_ref() {
            SecretValue::String(s) => s.clone(),
            SecretValue::Binary(_) => String::new(),
        }
    }

    #[tokio::test]
    async fn fresh_entries_are_served_without_aws_calls() {
        let c = CachedSource::new(Store::with(&["prod/db/credentials"]));
        let a = c.fetch(&req(false, Duration::from_secs(60))).await.unwrap();
        assert!(!a.from_cache);
        let b = c.fetch(&req(false, Duration::from_secs(60))).await.unwrap();
        assert!(b.from_cache);
        assert_eq!(c.backend.gets.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn expired_entries_are_revalidated_with_describe_and_reread_only_when_the_version_moved()
    {
        let c = CachedSource::new(Store::with(&["prod/db/credentials"]));
        c.fetch(&req(false, Duration::ZERO)).await.unwrap();
        let gets = c.backend.gets.load(Ordering::SeqCst);
        let same = c.fetch(&req(false, Duration::ZERO)).await.unwrap();
        assert!(same.from_cache);
        assert_eq!(
            c.backend.gets.load(Ordering::SeqCst),
            gets,
            "same version: no GetSecretValue"
        );
        c.backend.rotate("prod/db/credentials", "v2", "two");
        let moved = c.fetch(&req(false, Duration::ZERO)).await.unwrap();
        assert_eq!(moved.version_id, "v2");
        assert_eq!(value(&moved), "two");
    }

    #[tokio::test]
    async fn a_due_rotation_revalidates_a_fresh_entry_and_reads_only_a_moved_version() {
        let c = CachedSource::new(Store::with(&["prod/db/credentials"]));
        let hour = Duration::from_secs(3600);
        c.fetch(&req(false, hour)).await.unwrap();
        let due = FetchRequest {
            revalidate: true,
            ..req(false, hour)
        };
        assert!(
            c.fetch(&due).await.unwrap().from_cache,
            "checked within 15 s: one answer serves every reader"
        );
        // Checked 16 s ago.
        {
            let mut inner = c.lock();
            let e = inner.entries.get_mut(&due.secret).unwrap();
            e.checked = e.checked.checked_sub(Duration::from_secs(16)).unwrap();
        }
        let (gets, describes) = (
            c.backend.gets.load(Ordering::SeqCst),
            c.backend.describes.load(Ordering::SeqCst),
        );
        let same = c.fetch(&due).await.unwrap();
        assert!(same.from_cache);
        assert_eq!(c.backend.describes.load(Ordering::SeqCst), describes + 1);
        assert_eq!(
            c.backend.gets.load(Ordering::SeqCst),
            gets,
            "not moved: no read"
        );
        c.backend.rotate("prod/db/credentials", "v2", "two");
        {
            let mut inner = c.lock();
            let e = inner.entries.get_mut(&due.secret).unwrap();
            e.checked = e.checked.checked_sub(Duration::from_secs(16)).unwrap();
        }
        assert_eq!(value(&c.fetch(&due).await.unwrap()), "two");
        assert_eq!(value(&c.fetch(&req(false, hour)).await.unwrap()), "two");
    }

    #[tokio::test]
    async fn confirm_asks_aws_now_and_reads_only_a_version_it_does_not_hold() {
        let c = CachedSource::new(Store::with(&["prod/db/credentials"]));
        let key = req(false, Duration::from_secs(3600)).secret;
        // Nothing held: described and read.
        let v1 = c.confirm(&key).await.unwrap();
        assert_eq!(c.known_version(&key), Some(v1.clone()));
        assert_eq!(c.backend.gets.load(Ordering::SeqCst), 1);
        // Held and current (a duplicate event): described only, even though the entry is fresh.
        let describes = c.backend.describes.load(Ordering::SeqCst);
        assert_eq!(c.confirm(&key).await.unwrap(), v1);
        assert_eq!(c.backend.gets.load(Ordering::SeqCst), 1);
        assert_eq!(c.backend.describes.load(Ordering::SeqCst), describes + 1);
        // Rotated: the new value is read once, and a fetch then serves it from the cache.
        c.backend.rotate("prod/db/credentials", "v2", "two");
        assert_eq!(c.confirm(&key).await.unwrap(), "v2");
        assert_eq!(c.known_version(&key).as_deref(), Some("v2"));
        let f = c
            .fetch(&req(false, Duration::from_secs(3600)))
            .await
            .unwrap();
        assert!(f.from_cache);
        assert_eq!(value(&f), "two");
        assert_eq!(c.backend.gets.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn force_bypasses_a_fresh_entry() {
        let c = CachedSource::new(Store::with(&["prod/db/credentials"]));
        c.fetch(&req(false, Duration::from_secs(3600)))
            .await
            .unwrap();
        c.backend
            .secrets
            .lock()
            .unwrap()
            .get_mut("prod/db/credentials")
            .unwrap()[0]
            .2 = "changed in place".into();
        let f = c
            .fetch(&req(true, Duration::from_secs(3600)))
            .await
            .unwrap();
        assert!(!f.from_cache);
        assert_eq!(value(&f), "changed in place");
    }

    #[tokio::test]
    async fn a_lagging_get_is_corrected_by_describe() {
        let s = Store::with(&["prod/db/credentials"]);
        s.rotate("prod/db/credentials", "v2", "two");
        *s.stale_get.lock().unwrap() = Some("v1".into());
        let c = CachedSource::new(s);
        let f = c.fetch(&req(false, Duration::from_secs(60))).await.unwrap();
        assert_eq!(f.version_id, "v2");
        assert_eq!(value(&f), "two");
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_secret_share_one_call() {
        let mut s = Store::with(&["prod/db/credentials"]);
        s.slow = true;
        let c = CachedSource::new(s);
        let reqs: Vec<FetchRequest> = (0..20)
            .map(|i| {
                req_for(
                    "prod/db/credentials",
                    &format!("ms-{i}"),
                    false,
                    Duration::from_secs(60),
                )
            })
            .collect();
        let all = futures::future::join_all(reqs.iter().map(|r| c.fetch(r))).await;
        assert!(all.iter().all(|r| r.is_ok()));
        assert_eq!(
            c.backend.gets.load(Ordering::SeqCst),
            1,
            "one GetSecretValue for twenty"
        );
        assert_eq!(c.backend.describes.load(Ordering::SeqCst), 1);
        assert!(c.flights.lock().unwrap().is_empty(), "no lock left behind");
    }

    #[tokio::test]
    async fn a_sweep_answers_for_many_secrets_and_batches_the_values_that_moved() {
        let ids: Vec<String> = (0..30).map(|i| format!("prod/s{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let c = CachedSource::new(Store::with(&refs)).with_limits(Limits {
            sweep_threshold: 10,
            ..Limits::default()
        });
        let mut rx = c.subscribe();
        for (i, id) in ids.iter().enumerate() {
            c.fetch(&req_for(id, &format!("ms-{i}"), false, Duration::ZERO))
                .await
                .unwrap();
        }
        let group = Group {
            identity: Default::default(),
            region: "us-east-1".into(),
        };
        assert_eq!(c.due_sweeps(), vec![group.clone()]);
        for id in &ids[..3] {
            c.backend.rotate(id, "v2", "two");
        }
        let changed = c.sweep(&group).await.unwrap();
        assert_eq!(changed.len(), 3);
        assert_eq!(rx.try_recv().unwrap().secret_id, "prod/s0");
        assert_eq!(c.backend.lists.load(Ordering::SeqCst), 1);
        assert_eq!(
            c.backend.batches.load(Ordering::SeqCst),
            1,
            "three values in one batch"
        );
        let (gets, describes) = (
            c.backend.gets.load(Ordering::SeqCst),
            c.backend.describes.load(Ordering::SeqCst),
        );
        // Expired entries are answered by the sweep: no DescribeSecret, no GetSecretValue.
        for (i, id) in ids.iter().enumerate() {
            let f = c
                .fetch(&req_for(
                    id,
                    &format!("ms-{i}"),
                    false,
                    Duration::from_secs(60),
                ))
                .await
                .unwrap();
            assert!(f.from_cache, "{id}");
            assert_eq!(f.version_id, if i < 3 { "v2" } else { "v1" });
        }
        assert_eq!(c.backend.gets.load(Ordering::SeqCst), gets);
        assert_eq!(c.backend.describes.load(Ordering::SeqCst), describes);
        assert!(c.due_sweeps().is_empty(), "not again before the interval");
        // Below the threshold, DescribeSecret answers (no sweep).
        let small = CachedSource::new(Store::with(&["a"]));
        small
            .fetch(&req_for("a", "x", false, Duration::ZERO))
            .await
            .unwrap();
        assert!(small.due_sweeps().is_empty());
    }

    #[tokio::test]
    async fn values_are_read_again_after_the_full_reread_interval() {
        let c = CachedSource::new(Store::with(&["prod/db/credentials"])).with_limits(Limits {
            full_reread: Duration::ZERO,
            ..Limits::default()
        });
        c.fetch(&req(false, Duration::from_secs(3600)))
            .await
            .unwrap();
        c.fetch(&req(false, Duration::from_secs(3600)))
            .await
            .unwrap();
        assert_eq!(c.backend.gets.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn values_nobody_needs_are_dropped() {
        let c = CachedSource::new(Store::with(&["a", "b", "c", "d"]));
        let h = Duration::from_secs(3600);
        c.fetch(&req_for("a", "ms-1", false, h)).await.unwrap();
        c.fetch(&req_for("a", "ms-2", false, h)).await.unwrap();
        c.fetch(&req_for("b", "ms-3", false, h)).await.unwrap();
        assert_eq!(c.len(), 2);
        c.release("ms-1");
        assert_eq!(c.len(), 2, "ms-2 still needs a");
        c.release("ms-2");
        assert_eq!(c.len(), 1, "a is gone with its last owner");
        // An owner that moves to another secret gives up the first.
        c.fetch(&req_for("c", "ms-3", false, h)).await.unwrap();
        assert_eq!(c.len(), 1);
        c.fetch(&req_for("d", "ms-4", false, h)).await.unwrap();
        c.retain(&HashSet::from(["ms-4".to_string()]));
        assert_eq!(c.len(), 1, "only what live owners need is kept");
        assert_eq!(
            c.backend.gets.load(Ordering::SeqCst),
            4,
            "a was fetched once for both owners"
        );
    }

    #[tokio::test]
    async fn the_cache_is_bounded_in_entries_and_bytes() {
        let h = Duration::from_secs(3600);
        let c = CachedSource::new(Store::with(&["a", "b", "c"])).with_limits(Limits {
            max_entries: 2,
            max_bytes: 1024,
            ..Limits::default()
        });
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            c.fetch(&req_for(id, &format!("ms-{i}"), false, h))
                .await
                .unwrap();
        }
        assert_eq!(c.len(), 2, "the least recently used entry went");
        let gets = c.backend.gets.load(Ordering::SeqCst);
        c.fetch(&req_for("c", "ms-2", false, h)).await.unwrap();
        assert_eq!(c.backend.gets.load(Ordering::SeqCst), gets, "c stayed");
        let tiny = CachedSource::new(Store::with(&["a"])).with_limits(Limits {
            max_bytes: 2,
            ..Limits::default()
        });
        tiny.fetch(&req_for("a", "ms-1", false, h)).await.unwrap();
        assert_eq!(tiny.len(), 0, "a value over the byte bound is not kept");
    }
}
