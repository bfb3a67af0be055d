//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager). Only the leader
//! reconciles and writes; standbys keep their watch caches warm and report ready, take over when
//! the lease expires, and at once when the leader releases it (SIGTERM): a watch on the Lease
//! wakes them. Without leader election the Lease is still held: it names the installation and
//! shows that it runs (`claim`).

use crate::metrics::Metrics;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{info, info_span, warn, Instrument as _};

#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    /// How long a lease lasts without renewal (a dead leader's successor waits this long).
    pub duration: Duration,
    /// The leader renews this long before its lease expires.
    pub grace: Duration,
    /// This replica's name in the Lease (the Pod name).
    pub identity: String,
}

/// Whether this replica leads, shared with the controller; changes are announced on `changes`.
#[derive(Clone)]
pub struct Leadership {
    leading: Arc<AtomicBool>,
    changes: watch::Sender<bool>,
}

impl Leadership {
    pub fn new() -> Leadership {
        Leadership {
            leading: Arc::new(AtomicBool::new(false)),
            changes: watch::channel(false).0,
        }
    }

    /// Always the leader (leader election off).
    pub fn alone() -> Leadership {
        let l = Leadership::new();
        l.set(true);
        l
    }

    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }

    fn set(&self, v: bool) {
        self.leading.store(v, Ordering::SeqCst);
        self.changes.send_replace(v);
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Leadership(leading: {})", self.is_leader())
    }
}

impl Leadership {
    /// The flag itself (for work that only the leader does, such as sweeps).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.leading.clone()
    }
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership::new()
    }
}

/// Takes part in the election until `shutdown`, then releases the lease (if held) and returns.
pub async fn run(
    client: Client,
    settings: Settings,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    if !settings.enabled {
        // Reconciling does not wait for the Lease.
        leadership.set(true);
        metrics.leader.leading.set(1);
    }
    let Some(mut manager) = build_manager(&client, &settings, &mut shutdown).await else {
        return;
    };
    if !settings.enabled {
        heartbeat(&settings, &mut manager, shutdown).await;
        // Stopping: reconciles still waiting for a worker need not run.
        leadership.set(false);
        metrics.leader.leading.set(0);
        let _ = tokio::time::timeout(Duration::from_secs(5), manager.release()).await;
        return;
    }
    // A released lease wakes a standby at once instead of at the old expiry. (The manager only
    // re-reads the Lease once its cached copy has expired, so a standby that sees the release
    // starts over with a fresh manager, which reads it at once.)
    let released = Arc::new(Notify::new());
    let lease_watch = {
        let released = released.clone();
        let api: Api<Lease> = Api::namespaced(client.clone(), &settings.lease_namespace);
        let cfg =
            watcher::Config::default().fields(&format!("metadata.name={}", settings.lease_name));
        watcher(api, cfg)
            .default_backoff()
            .applied_objects()
            .for_each(move |lease| {
                if let Ok(lease) = lease {
                    if is_free(&lease) {
                        released.notify_one();
                    }
                }
                async {}
            })
    };
    let span = info_span!(
        "lease_watch",
        lease = %settings.lease_name,
        namespace = %settings.lease_namespace
    );
    let lease_watch = tokio::spawn(lease_watch.instrument(span));
    info!(identity = %settings.identity, lease = %settings.lease_name, "taking part in leader election");
    loop {
        let mut start_over = false;
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = manager.changed() => match r {
                Ok(leading) => {
                    if leading {
                        info!(identity = %settings.identity, "leading: reconciling");
                    } else {
                        warn!(identity = %settings.identity, "lost the lease: standing by");
                    }
                    leadership.set(leading);
                    metrics.leader.leading.set(i64::from(leading));
                }
                Err(e) => {
                    warn!(error = %e, "leader election failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            _ = released.notified() => start_over = !leadership.is_leader(),
        }
        if start_over {
            info!(identity = %settings.identity, "the leader released the Lease: trying to take it");
            match build_manager(&client, &settings, &mut shutdown).await {
                Some(m) => manager = m,
                None => break,
            }
        }
    }
    lease_watch.abort();
    leadership.set(false);
    metrics.leader.leading.set(0);
    match tokio::time::timeout(Duration::from_secs(5), manager.release()).await {
        Ok(Ok(())) => info!("released the leader Lease"),
        Ok(Err(e)) => warn!(error = %e, "could not release the leader Lease; it expires by itself"),
        Err(_) => warn!("releasing the leader Lease timed out; it expires by itself"),
    }
}

/// Without leader election the process reconciles regardless, and still holds the Lease: it is
/// the installation's sign of life, which another installation watching the same namespaces
/// checks before it takes over a ManagedSecret this one claims (`claim`).
async fn heartbeat(
    settings: &Settings,
    manager: &mut LeaseManager,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) {
    info!(identity = %settings.identity, lease = %settings.lease_name, "holding the Lease as this installation's sign of life (no leader election)");
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => return,
            r = manager.changed() => match r {
                Ok(true) => info!("holding the installation's Lease"),
                Ok(false) => warn!("another process holds this installation's Lease (a second replica without leader election?)"),
                Err(e) => {
                    warn!(error = %e, "renewing the installation's Lease failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}

/// A Lease nobody holds (released by its last leader, or never taken).
fn is_free(lease: &Lease) -> bool {
    crate::claim::is_free(lease.spec.as_ref())
}

async fn build_manager(
    client: &Client,
    settings: &Settings,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Option<LeaseManager> {
    let secs = |d: Duration| d.as_secs().max(1);
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
            .with_namespace(&settings.lease_namespace)
            .with_identity(&settings.identity)
            .with_duration(secs(settings.duration))
            .with_grace(secs(settings.grace))
            .with_field_manager("managed-secrets-leader")
            .build();
        tokio::select! {
            m = built => match m {
                Ok(m) => return Some(m),
                Err(e) => {
                    warn!(error = %e, lease = %settings.lease_name, "cannot use the leader Lease yet; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            },
            _ = shutdown.as_mut() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    fn lease(holder: Option<&str>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_lease_is_free_when_nobody_holds_it() {
        assert!(is_free(&lease(None)));
        assert!(is_free(&lease(Some(""))));
        assert!(is_free(&Lease::default()));
        assert!(!is_free(&lease(Some("pod-a"))));
    }
}
