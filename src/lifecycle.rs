//! How the process ends: on SIGTERM the controller gets a bounded time to finish in-flight
//! reconciles (exit 0); if the controller stops by itself, something is badly wrong and the
//! process exits 1 so that Kubernetes restarts it instead of keeping a pod that looks healthy while
//! nothing syncs.

use crate::health::Health;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Waits for `signal` or for the controller task to end; returns the exit code. `stop` asks the
/// controller to stop gracefully.
pub async fn supervise(
    mut ctrl: JoinHandle<()>,
    signal: impl Future<Output = ()>,
    stop: impl FnOnce(),
    health: &Health,
    grace: Duration,
) -> i32 {
    tokio::select! {
        _ = signal => {
            tracing::info!("shutting down");
            health.shutting_down();
            stop();
            match tokio::time::timeout(grace, &mut ctrl).await {
                Ok(_) => tracing::info!("stopped"),
                Err(_) => {
                    ctrl.abort();
                    tracing::warn!(timeout = ?grace, "reconciles did not finish within --shutdown-timeout; exiting anyway");
                }
            }
            0
        }
        res = &mut ctrl => {
            match res {
                Err(e) if e.is_panic() => tracing::error!("the controller panicked; exiting so that the pod restarts"),
                _ => tracing::error!("the controller stopped unexpectedly; exiting so that the pod restarts"),
            }
            health.ended();
            stop();
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_controller_that_ends_by_itself_exits_non_zero_and_is_not_live() {
        let h = Health::default();
        let ctrl = tokio::spawn(async {});
        let code = supervise(
            ctrl,
            std::future::pending(),
            || {},
            &h,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(code, 1);
        assert!(!h.live().ok);
        let ctrl = tokio::spawn(async { panic!("a bug") });
        let code = supervise(
            ctrl,
            std::future::pending(),
            || {},
            &h,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(code, 1);
    }

    #[tokio::test]
    async fn sigterm_stops_gracefully_or_after_the_grace_period() {
        let h = Health::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let ctrl = tokio::spawn(async move {
            let _ = rx.await;
        });
        let s = stopped.clone();
        let code = supervise(
            ctrl,
            async {},
            move || {
                s.store(true, Ordering::SeqCst);
                let _ = tx.send(());
            },
            &h,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(code, 0);
        assert!(stopped.load(Ordering::SeqCst));
        assert_eq!(h.ready().text, "shutting down");
        // A controller that never finishes (a hung watch) does not hold the process.
        let hung = tokio::spawn(std::future::pending::<()>());
        let t = tokio::time::Instant::now();
        let code = supervise(hung, async {}, || {}, &h, Duration::from_millis(200)).await;
        assert_eq!(code, 0);
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
