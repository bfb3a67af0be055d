//! The cache in front of AWS. A fresh entry is served without any call; an expired one is
//! re-validated with DescribeSecret and only re-read with GetSecretValue when the version moved;
//! a forced fetch bypasses it entirely. A failed fetch never evicts a good entry.
//!
//! Each entry knows which ManagedSecrets (owners, by UID) need it: an entry nobody needs is
//! dropped at once (its plaintext is overwritten as it goes), and the cache is bounded in entries
//! and bytes, dropping the least recently used first.

use super::{resolve, FetchRequest, Fetched, SecretRef, SecretSource, SecretsBackend};
use crate::error::Result;
use crate::metrics::Metrics;
use futures::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Bounds of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

struct Entry {
    fetched: Fetched,
    checked: Instant,
    used: Instant,
    owners: HashSet<String>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<SecretRef, Entry>,
    /// owner -> the entry it uses.
    owners: HashMap<String, SecretRef>,
    bytes: usize,
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
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
}

impl<B: SecretsBackend> CachedSource<B> {
    pub fn new(backend: B) -> Self {
        CachedSource {
            backend,
            inner: Mutex::new(Inner::default()),
            limits: Limits::default(),
            metrics: None,
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Reports the cache's size in `source_cache_entries` / `source_cache_bytes`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, inner: &Inner) {
        if let Some(m) = &self.metrics {
            m.cache_entries
                .set(i64::try_from(inner.entries.len()).unwrap_or(i64::MAX));
            m.cache_bytes
                .set(i64::try_from(inner.bytes).unwrap_or(i64::MAX));
        }
    }

    fn cached(&self, key: &SecretRef, owner: &str) -> Option<(Fetched, Instant)> {
        let mut inner = self.lock();
        let out = inner.entries.get_mut(key).map(|e| {
            e.used = Instant::now();
            (e.fetched.clone(), e.checked)
        });
        if out.is_some() {
            inner.claim(owner, key);
        }
        out
    }

    fn store(&self, key: &SecretRef, owner: &str, fetched: &Fetched) {
        let mut f = fetched.clone();
        f.from_cache = false;
        let mut inner = self.lock();
        let mut owners = HashSet::new();
        if let Some(old) = inner.entries.remove(key) {
            inner.bytes = inner.bytes.saturating_sub(old.fetched.value.len());
            owners = old.owners;
        }
        inner.bytes = inner.bytes.saturating_add(f.value.len());
        let now = Instant::now();
        inner.entries.insert(
            key.clone(),
            Entry {
                fetched: f,
                checked: now,
                used: now,
                owners,
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
        if let super::VersionSelector::Stage(_) = &key.version {
            let versions = self.backend.describe(key).await?;
            if let Some(current) = resolve(&versions, &key.version) {
                if current != got.version_id {
                    let by_id = SecretRef {
                        version: super::VersionSelector::Id(current.clone()),
                        ..key.clone()
                    };
                    let mut f = self.backend.get_value(&by_id).await?;
                    f.version_stages = versions
                        .iter()
                        .find(|(v, _)| *v == current)
                        .map(|(_, s)| s.clone())
                        .unwrap_or_default();
                    return Ok(f);
                }
            }
        }
        Ok(got)
    }

    async fn fetch_inner(&self, req: &FetchRequest) -> Result<Fetched> {
        let key = &req.secret;
        if !req.bypass_cache {
            if let Some((cached, checked)) = self.cached(key, &req.owner) {
                if checked.elapsed() < req.max_age {
                    return Ok(Fetched {
                        from_cache: true,
                        ..cached
                    });
                }
                // Expired: is it still the same version?
                let versions = self.backend.describe(key).await?;
                if resolve(&versions, &key.version).as_deref() == Some(cached.version_id.as_str()) {
                    let stages = versions
                        .iter()
                        .find(|(v, _)| *v == cached.version_id)
                        .map(|(_, s)| s.clone())
                        .unwrap_or_default();
                    let refreshed = Fetched {
                        version_stages: stages,
                        ..cached
                    };
                    self.store(key, &req.owner, &refreshed);
                    return Ok(Fetched {
                        from_cache: true,
                        ..refreshed
                    });
                }
            }
        }
        let f = self.read(key).await?;
        self.store(key, &req.owner, &f);
        Ok(f)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::SecretValue;
    use crate::source::VersionSelector;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// An in-memory secret store that counts calls.
    #[derive(Default)]
    struct Store {
        versions: Mutex<Vec<(String, Vec<String>, String)>>,
        gets: AtomicUsize,
        describes: AtomicUsize,
        stale_get: Mutex<Option<String>>,
    }

    impl SecretsBackend for Store {
        fn get_value<'a>(&'a self, s: &'a SecretRef) -> BoxFuture<'a, Result<Fetched>> {
            Box::pin(async move {
                self.gets.fetch_add(1, Ordering::SeqCst);
                let v = self.versions.lock().unwrap();
                let stale = self.stale_get.lock().unwrap().clone();
                let found = match (&s.version, stale) {
                    (VersionSelector::Stage(_), Some(id)) => v.iter().find(|x| x.0 == id),
                    (VersionSelector::Stage(st), None) => v.iter().find(|x| x.1.contains(st)),
                    (VersionSelector::Id(id), _) => v.iter().find(|x| &x.0 == id),
                };
                let (id, stages, val) = found
                    .cloned()
                    .ok_or_else(|| crate::error::Error::SecretNotFound(s.secret_id.clone()))?;
                Ok(Fetched {
                    value: Arc::new(SecretValue::String(val)),
                    version_id: id,
                    version_stages: stages,
                    from_cache: false,
                })
            })
        }
        fn describe<'a>(
            &'a self,
            _: &'a SecretRef,
        ) -> BoxFuture<'a, Result<crate::source::Versions>> {
            Box::pin(async move {
                self.describes.fetch_add(1, Ordering::SeqCst);
                Ok(self
                    .versions
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(a, b, _)| (a.clone(), b.clone()))
                    .collect())
            })
        }
    }

    fn req(bypass: bool, max_age: Duration) -> FetchRequest {
        FetchRequest {
            secret: SecretRef {
                secret_id: "prod/db/credentials".into(),
                region: None,
                version: VersionSelector::Stage("AWSCURRENT".into()),
                identity: Default::default(),
            },
            bypass_cache: bypass,
            max_age,
            owner: "uid-1".into(),
        }
    }

    fn store() -> Store {
        let s = Store::default();
        s.versions
            .lock()
            .unwrap()
            .push(("v1".into(), vec!["AWSCURRENT".into()], "one".into()));
        s
    }

    #[tokio::test]
    async fn fresh_entries_are_served_without_aws_calls() {
        let c = CachedSource::new(store());
        let a = c.fetch(&req(false, Duration::from_secs(60))).await.unwrap();
        assert!(!a.from_cache);
        let b = c.fetch(&req(false, Duration::from_secs(60))).await.unwrap();
        assert!(b.from_cache);
        assert_eq!(c.backend.gets.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn expired_entries_are_revalidated_with_describe_and_reread_only_when_the_version_moved()
    {
        let c = CachedSource::new(store());
        c.fetch(&req(false, Duration::ZERO)).await.unwrap();
        let gets = c.backend.gets.load(Ordering::SeqCst);
        let same = c.fetch(&req(false, Duration::ZERO)).await.unwrap();
        assert!(same.from_cache);
        assert_eq!(
            c.backend.gets.load(Ordering::SeqCst),
            gets,
            "same version: no GetSecretValue"
        );
        {
            let mut v = c.backend.versions.lock().unwrap();
            v[0].1 = vec!["AWSPREVIOUS".into()];
            v.push(("v2".into(), vec!["AWSCURRENT".into()], "two".into()));
        }
        let moved = c.fetch(&req(false, Duration::ZERO)).await.unwrap();
        assert_eq!(moved.version_id, "v2");
        assert_eq!(*moved.value, SecretValue::String("two".into()));
    }

    #[tokio::test]
    async fn force_bypasses_a_fresh_entry() {
        let c = CachedSource::new(store());
        c.fetch(&req(false, Duration::from_secs(3600)))
            .await
            .unwrap();
        {
            let mut v = c.backend.versions.lock().unwrap();
            v[0] = (
                "v1".into(),
                vec!["AWSCURRENT".into()],
                "changed in place".into(),
            );
        }
        let f = c
            .fetch(&req(true, Duration::from_secs(3600)))
            .await
            .unwrap();
        assert!(!f.from_cache);
        assert_eq!(*f.value, SecretValue::String("changed in place".into()));
    }

    fn req_for(id: &str, owner: &str) -> FetchRequest {
        FetchRequest {
            secret: SecretRef {
                secret_id: id.into(),
                region: None,
                version: VersionSelector::Stage("AWSCURRENT".into()),
                identity: Default::default(),
            },
            bypass_cache: false,
            max_age: Duration::from_secs(3600),
            owner: owner.into(),
        }
    }

    #[tokio::test]
    async fn values_nobody_needs_are_dropped() {
        let c = CachedSource::new(store());
        c.fetch(&req_for("a", "ms-1")).await.unwrap();
        c.fetch(&req_for("a", "ms-2")).await.unwrap();
        c.fetch(&req_for("b", "ms-3")).await.unwrap();
        assert_eq!(c.len(), 2);
        c.release("ms-1");
        assert_eq!(c.len(), 2, "ms-2 still needs a");
        c.release("ms-2");
        assert_eq!(c.len(), 1, "a is gone with its last owner");
        // An owner that moves to another secret gives up the first.
        c.fetch(&req_for("c", "ms-3")).await.unwrap();
        assert_eq!(c.len(), 1);
        c.fetch(&req_for("d", "ms-4")).await.unwrap();
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
        let c = CachedSource::new(store()).with_limits(Limits {
            max_entries: 2,
            max_bytes: 1024,
        });
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            c.fetch(&req_for(id, &format!("ms-{i}"))).await.unwrap();
        }
        assert_eq!(c.len(), 2, "the least recently used entry went");
        let gets = c.backend.gets.load(Ordering::SeqCst);
        c.fetch(&req_for("c", "ms-2")).await.unwrap();
        assert_eq!(c.backend.gets.load(Ordering::SeqCst), gets, "c stayed");
        let tiny = CachedSource::new(store()).with_limits(Limits {
            max_entries: 10,
            max_bytes: 2,
        });
        tiny.fetch(&req_for("a", "ms-1")).await.unwrap();
        assert_eq!(tiny.len(), 0, "a value over the byte bound is not kept");
    }

    #[tokio::test]
    async fn a_lagging_get_is_corrected_by_describe() {
        let s = store();
        {
            let mut v = s.versions.lock().unwrap();
            v[0].1 = vec!["AWSPREVIOUS".into()];
            v.push(("v2".into(), vec!["AWSCURRENT".into()], "two".into()));
        }
        *s.stale_get.lock().unwrap() = Some("v1".into());
        let c = CachedSource::new(s);
        let f = c.fetch(&req(false, Duration::from_secs(60))).await.unwrap();
        assert_eq!(f.version_id, "v2");
        assert_eq!(*f.value, SecretValue::String("two".into()));
    }
}
