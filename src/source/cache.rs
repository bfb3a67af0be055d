//! The cache in front of AWS. A fresh entry is served without any call; an expired one is
//! re-validated with DescribeSecret and only re-read with GetSecretValue when the version moved;
//! a forced fetch bypasses it entirely. A failed fetch never evicts a good entry.

use super::{resolve, FetchRequest, Fetched, SecretRef, SecretSource, SecretsBackend};
use crate::error::Result;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

struct Entry {
    fetched: Fetched,
    checked: Instant,
}

pub struct CachedSource<B> {
    backend: B,
    entries: Mutex<HashMap<SecretRef, Entry>>,
}

impl<B: SecretsBackend> CachedSource<B> {
    pub fn new(backend: B) -> Self {
        CachedSource {
            backend,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &SecretRef) -> Option<(Fetched, Instant)> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|e| (e.fetched.clone(), e.checked))
    }

    fn store(&self, key: &SecretRef, fetched: &Fetched) {
        let mut f = fetched.clone();
        f.from_cache = false;
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key.clone(),
                Entry {
                    fetched: f,
                    checked: Instant::now(),
                },
            );
    }

    /// GetSecretValue, cross-checked against DescribeSecret: when a stage was asked for and the
    /// returned version does not carry it (a store that lags, or a rotation in between), the version
    /// DescribeSecret names is read by id.
    async fn read(&self, key: &SecretRef) -> Result<Fetched> {
        let got = self.backend.get_value(key).await?;
        if let super::VersionSelector::Stage(stage) = &key.version {
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
                    debug_assert!(f.version_stages.contains(stage));
                    return Ok(f);
                }
            }
        }
        Ok(got)
    }

    async fn fetch_inner(&self, req: &FetchRequest) -> Result<Fetched> {
        let key = &req.secret;
        if !req.bypass_cache {
            if let Some((cached, checked)) = self.cached(key) {
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
                    self.store(key, &refreshed);
                    return Ok(Fetched {
                        from_cache: true,
                        ..refreshed
                    });
                }
            }
        }
        let f = self.read(key).await?;
        self.store(key, &f);
        Ok(f)
    }
}

impl<B: SecretsBackend> SecretSource for CachedSource<B> {
    fn fetch<'a>(&'a self, req: &'a FetchRequest) -> BoxFuture<'a, Result<Fetched>> {
        Box::pin(self.fetch_inner(req))
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
            },
            bypass_cache: bypass,
            max_age,
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
