//! The notification consumer (glue): long-polls the queue while this replica leads; for each
//! message, finds the ManagedSecrets the notification concerns, confirms with AWS through the shared cache (one
//! DescribeSecret, one read if the version moved), has the ones that are behind reconciled at
//! once, and deletes the message only when they have been handled. Anything else (a crash, a
//! timeout, AWS unavailable) leaves the message to come back after its visibility timeout.

use super::{policies, sync, uid, Context};
use crate::crd::ManagedSecret;
use crate::notifications::queue::{Message, NotificationQueue, QueueError};
use crate::notifications::{self, Ignored, Notification};
use crate::source::{Changed, SecretRef};
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// What the notification consumer runs with.
#[derive(Clone)]
pub struct NotificationSettings {
    pub queue: Arc<dyn NotificationQueue>,
    /// Long-poll wait (at most 20s, SQS's maximum).
    pub wait: Duration,
    /// How long a received message stays hidden; it comes back if not deleted by then.
    pub visibility: Duration,
    /// While notifications flow, refreshes run at least this far apart (polling is the backstop).
    pub backstop: Duration,
}

impl std::fmt::Debug for NotificationSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationSettings")
            .field("queue", &self.queue.name())
            .field("wait", &self.wait)
            .field("visibility", &self.visibility)
            .field("backstop", &self.backstop)
            .finish()
    }
}

/// Whether the notification queue is receiving (shared with the refresh schedule).
#[derive(Debug, Default)]
pub struct NotificationState {
    last_ok: AtomicU64,
    last_error: AtomicU64,
    degraded: AtomicBool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl NotificationState {
    pub fn healthy(&self, wait: Duration) -> bool {
        let load = |a: &AtomicU64| Some(a.load(Ordering::SeqCst)).filter(|v| *v > 0);
        notifications::healthy(
            unix_now(),
            load(&self.last_ok),
            load(&self.last_error),
            wait + Duration::from_secs(30),
        )
    }
}

/// The outcome of one message.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Handled (or nothing to do): delete it.
    Done(&'static str),
    /// Not handled yet: leave it to come back.
    Retry(String),
}

/// Runs until `shutdown`; receives only while this replica leads.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()>) {
    let Some(settings) = ctx.settings.notifications.clone() else {
        return;
    };
    tokio::pin!(shutdown);
    let mut leading = ctx.settings.leadership.subscribe();
    let mut backoff = Duration::from_secs(1);
    info!(queue = %settings.queue.name(), backstop = ?settings.backstop, "event source: receiving Secrets Manager events");
    ctx.health.note("events", "starting");
    loop {
        if !ctx.settings.leadership.is_leader() {
            ctx.metrics.events.source_up.set(0);
            ctx.health
                .note("events", "standing by (only the leader receives)");
            tokio::select! {
                _ = &mut shutdown => return,
                r = leading.changed() => if r.is_err() { return },
            }
            continue;
        }
        let received = tokio::select! {
            _ = &mut shutdown => return,
            r = settings.queue.receive(settings.wait, settings.visibility) => r,
        };
        match received {
            Ok(messages) => {
                backoff = Duration::from_secs(1);
                receiving(&ctx, &settings);
                let handling = futures::future::join_all(
                    messages
                        .into_iter()
                        .map(|m| handle_and_ack(&ctx, &settings, m)),
                );
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = handling => {}
                }
            }
            Err(e) => {
                failing(&ctx, &settings, &e);
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// The queue answered: notifications are healthy again (refreshes back at the backstop interval).
fn receiving(ctx: &Context, settings: &NotificationSettings) {
    ctx.notifications
        .last_ok
        .store(unix_now(), Ordering::SeqCst);
    ctx.metrics.events.source_up.set(1);
    ctx.health.note(
        "events",
        format!("receiving from {}", settings.queue.name()),
    );
    if ctx.notifications.degraded.swap(false, Ordering::SeqCst) {
        info!(queue = %settings.queue.name(), "event source: receiving again; refreshes go back to the backstop interval");
    }
}

/// The queue failed: polling alone refreshes until it answers again (the first failure has every
/// ManagedSecret reschedule at its own interval).
fn failing(ctx: &Context, settings: &NotificationSettings, e: &QueueError) {
    ctx.notifications
        .last_error
        .store(unix_now(), Ordering::SeqCst);
    ctx.metrics.events.source_up.set(0);
    ctx.metrics.events.queue_errors.inc();
    ctx.health.note(
        "events",
        format!("degraded ({e}); polling alone refreshes, at each refreshInterval"),
    );
    if !ctx.notifications.degraded.swap(true, Ordering::SeqCst) {
        warn!(queue = %settings.queue.name(), error = %e, "event source degraded: polling alone refreshes ManagedSecrets (at their refreshInterval) until the queue answers again");
        // Refreshes scheduled at the backstop interval come back to their own.
        reschedule_all(ctx);
    } else {
        debug!(error = %e, "event source still failing");
    }
}

/// Has every ManagedSecret look at its schedule again (through the source's announcements).
fn reschedule_all(ctx: &Context) {
    let mut seen = std::collections::BTreeSet::new();
    for ms in ctx.scopes.iter().flat_map(|s| s.managed.state()) {
        if seen.insert(ms.spec.secret_id.clone()) {
            ctx.source.announce(Changed {
                secret_id: ms.spec.secret_id.clone(),
                region: String::new(),
            });
        }
    }
}

async fn handle_and_ack(ctx: &Arc<Context>, settings: &NotificationSettings, m: Message) {
    let started = Instant::now();
    match handle(ctx, settings, &m).await {
        Outcome::Done(why) => {
            if why != "synced" {
                ctx.metrics.event_dropped(why);
            } else {
                ctx.metrics
                    .events
                    .sync
                    .observe(started.elapsed().as_secs_f64());
            }
            if let Err(e) = settings.queue.delete(&m.receipt).await {
                ctx.metrics.events.queue_errors.inc();
                warn!(message = %m.id, error = %e, "could not delete a handled event; it will come back and be found a duplicate");
            }
        }
        Outcome::Retry(why) => {
            debug!(message = %m.id, why, "event not handled yet; it comes back after its visibility timeout");
        }
    }
}

/// One message: what it says, which ManagedSecrets read the secrets it names, whether AWS confirms
/// they are behind, and whether they caught up in time.
async fn handle(ctx: &Arc<Context>, settings: &NotificationSettings, m: &Message) -> Outcome {
    let notification = match read(ctx, m) {
        Ok(n) => n,
        Err(done) => return done,
    };
    if !ready_to_decide(ctx) {
        // Not everything the decision reads is listed yet: a notification decided now could find
        // no reader (and be dropped as unmanaged), or grant what a NotIn or DoesNotExist rule on
        // namespace labels refuses. It comes back after its visibility timeout.
        return Outcome::Retry(
            "ManagedSecrets, access policies or namespace labels are not listed yet".into(),
        );
    }
    let readers = readers(ctx, &notification);
    if readers.is_empty() {
        debug!(message = %m.id, event = %notification.name, secrets = ?notification.secrets, "no ManagedSecret reads the secret of this event");
        return Outcome::Done("unmanaged");
    }
    let behind = match behind(ctx, readers).await {
        Ok(behind) => behind,
        Err(retry) => return retry,
    };
    // Attempts that start from here on see the confirmed version in the cache.
    let trigger = Instant::now();
    announce(ctx, &behind);
    if behind.is_empty() {
        debug!(message = %m.id, event = %notification.name, "every ManagedSecret already holds the version this event is about");
        return Outcome::Done("duplicate");
    }
    info!(event = %notification.name, moved = behind.len(), "an event moved ManagedSecrets: syncing now");
    caught_up(ctx, settings, &behind, trigger).await
}

/// The notification a message carries, counted by its name; a message to ignore is counted by
/// why, and done with.
fn read(ctx: &Context, m: &Message) -> Result<Notification, Outcome> {
    match notifications::parse(&m.body) {
        Ok(notification) => {
            ctx.metrics.event_received(&notification.name);
            Ok(notification)
        }
        Err(ignored) => {
            ctx.metrics.event_received(match &ignored {
                Ignored::Malformed(_) => "malformed",
                Ignored::ReadOnly(_) => "other",
            });
            debug!(message = %m.id, ?ignored, "event ignored");
            Err(Outcome::Done(ignored.reason()))
        }
    }
}

/// Whether everything that decides who reads a secret is listed: the ManagedSecrets of every
/// watched scope, the access policies and the namespace labels.
fn ready_to_decide(ctx: &Context) -> bool {
    let managed_listed = ctx.scopes.iter().all(|s| {
        ctx.health
            .is_listed(&super::report::kind_key("managedsecrets", &s.scope))
    });
    managed_listed && policies::ready(ctx)
}

/// The ManagedSecrets a notification concerns that this installation refreshes and the access
/// policies let read, grouped by what they read (secret, version, identity).
fn readers(
    ctx: &Context,
    notification: &Notification,
) -> HashMap<SecretRef, Vec<Arc<ManagedSecret>>> {
    let default_region = ctx.settings.default_region.as_deref();
    let mut groups: HashMap<SecretRef, Vec<Arc<ManagedSecret>>> = HashMap::new();
    for ms in ctx.scopes.iter().flat_map(|s| s.managed.state()) {
        let region = policies::region_of(&ms, default_region);
        let concerned = notification.secrets.iter().any(|named| {
            notifications::concerns(
                &ms.spec.secret_id,
                region.as_deref(),
                named,
                notification.region.as_deref(),
            )
        });
        let reads_label = notifications::moves_what_it_reads(
            notification.label.as_deref(),
            ms.spec.version_stage.as_deref(),
            ms.spec.version_id.is_some(),
        );
        // Objects left to another installation are that installation's to refresh.
        if !concerned
            || !reads_label
            || ms.metadata.deletion_timestamp.is_some()
            || ctx.claims.is_contested(&super::uid(&ms))
        {
            continue;
        }
        // Only what the access policies let it read (as the identity they say).
        let Ok(identity) = policies::authorize(ctx, &ms) else {
            continue;
        };
        groups
            .entry(sync::secret_ref(&ms, identity))
            .or_default()
            .push(ms);
    }
    groups
}

/// A ManagedSecret that does not hold the version AWS confirmed, and what to announce for it.
struct Behind {
    ms: Arc<ManagedSecret>,
    version: String,
    changed: Changed,
}

/// Confirms with AWS (a notification is a hint) which version each secret is at, and returns the
/// readers that do not hold it. An AWS failure leaves the message to come back.
async fn behind(
    ctx: &Context,
    readers: HashMap<SecretRef, Vec<Arc<ManagedSecret>>>,
) -> Result<Vec<Behind>, Outcome> {
    let mut behind = vec![];
    for (key, readers) in readers {
        let version = match ctx.source.confirm(&key).await {
            Ok(v) => v,
            Err(e) => {
                return Err(Outcome::Retry(format!(
                    "AWS could not confirm the event: {e}"
                )))
            }
        };
        for ms in readers {
            let synced = ms
                .status
                .as_ref()
                .and_then(|s| s.synced_version_id.as_deref());
            if synced != Some(version.as_str()) {
                let changed = Changed {
                    secret_id: ms.spec.secret_id.clone(),
                    region: key.region.clone().unwrap_or_default(),
                };
                behind.push(Behind {
                    ms,
                    version: version.clone(),
                    changed,
                });
            }
        }
    }
    Ok(behind)
}

/// Has the ManagedSecrets behind look again: one announcement per secret and region.
fn announce(ctx: &Context, behind: &[Behind]) {
    let mut announced: Vec<&Changed> = vec![];
    for b in behind {
        if !announced.contains(&&b.changed) {
            ctx.source.announce(b.changed.clone());
            announced.push(&b.changed);
        }
    }
}

/// Done when each ManagedSecret behind has synced its version or had an attempt since `trigger`
/// (a failure is recorded on the object and retried by its own back-off, not by this message);
/// retried when some have not shortly before the message becomes visible again.
async fn caught_up(
    ctx: &Context,
    settings: &NotificationSettings,
    behind: &[Behind],
    trigger: Instant,
) -> Outcome {
    let deadline = trigger
        + settings
            .visibility
            .saturating_sub(Duration::from_secs(2))
            .max(Duration::from_secs(1));
    loop {
        let pending = behind
            .iter()
            .filter(|b| !handled(ctx, &b.ms, &b.version, trigger))
            .count();
        if pending == 0 {
            return Outcome::Done("synced");
        }
        if Instant::now() >= deadline {
            return Outcome::Retry(format!("{pending} ManagedSecrets not synced in time"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `ms` holds `version` now (as the watch cache shows it), or an attempt that started
/// after `t` has finished.
fn handled(ctx: &Context, ms: &ManagedSecret, version: &str, t: Instant) -> bool {
    let current = ctx
        .scopes
        .iter()
        .find_map(|s| s.managed.get(&ObjectRef::from_obj(ms)));
    let Some(current) = current else {
        return true; // deleted meanwhile
    };
    let synced = current
        .status
        .as_ref()
        .and_then(|s| s.synced_version_id.as_deref());
    synced == Some(version) || ctx.attempted_since(&uid(&current), t)
}
