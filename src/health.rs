//! What `/healthz` and `/readyz` report: the reconcile loop is alive (it beats while it runs and
//! stops beating when it ends or hangs), and the operator is ready once the initial list of every
//! kind it watches has succeeded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A loop that has not beaten for this long is reported dead.
pub const STALL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Health {
    /// Unix seconds of the reconcile loop's last beat (0: never).
    beat: AtomicI64,
    /// The reconcile loop ended (it never should before shutdown).
    ended: AtomicBool,
    shutting_down: AtomicBool,
    /// Watched kinds and whether their initial list has succeeded.
    synced: Mutex<BTreeMap<String, bool>>,
    /// Optional parts that do not decide readiness but are reported with it (the event source).
    notes: Mutex<BTreeMap<String, String>>,
    /// What the start-up RBAC check found.
    permissions: Mutex<Permissions>,
}

/// The start-up RBAC check's state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Permissions {
    /// No check runs (readiness does not wait for one).
    #[default]
    Unchecked,
    /// Not answered yet (with the last error, if any).
    Checking(String),
    /// These permissions are missing.
    Missing(Vec<String>),
    /// Everything needed is granted.
    Granted,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A verdict with the text the endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub text: String,
}

impl Health {
    pub fn beat(&self) {
        self.beat.store(unix_now(), Ordering::SeqCst);
    }
    pub fn ended(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
    /// Registers a watched kind (not yet listed).
    pub fn watching(&self, kind: &str) {
        self.synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind.to_string(), false);
    }
    /// The initial list of `kind` succeeded.
    pub fn listed(&self, kind: &str) {
        self.synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind.to_string(), true);
    }

    /// Reports the state of an optional part (`/readyz` lists it after its verdict).
    pub fn note(&self, part: &str, state: impl Into<String>) {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(part.to_string(), state.into());
    }

    /// Records the RBAC check's state.
    pub fn permissions(&self, p: Permissions) {
        *self.permissions.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    pub fn is_listed(&self, kind: &str) -> bool {
        self.synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(kind)
            .copied()
            .unwrap_or(false)
    }

    /// Liveness at `now` (unix seconds).
    pub fn live_at(&self, now: i64) -> Verdict {
        let beat = self.beat.load(Ordering::SeqCst);
        if self.ended.load(Ordering::SeqCst) {
            return Verdict {
                ok: false,
                text: "the reconcile loop has ended".into(),
            };
        }
        if beat == 0 {
            // Starting: the loop has not run yet.
            return Verdict {
                ok: true,
                text: "starting".into(),
            };
        }
        let age = now.saturating_sub(beat);
        if age > STALL.as_secs() as i64 {
            return Verdict {
                ok: false,
                text: format!("the reconcile loop has not run for {age}s"),
            };
        }
        Verdict {
            ok: true,
            text: "ok".into(),
        }
    }

    pub fn live(&self) -> Verdict {
        self.live_at(unix_now())
    }

    /// Readiness: every watched kind listed, the loop alive, not shutting down.
    pub fn ready(&self) -> Verdict {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Verdict {
                ok: false,
                text: "shutting down".into(),
            };
        }
        let live = self.live();
        if !live.ok {
            return live;
        }
        match &*self.permissions.lock().unwrap_or_else(|e| e.into_inner()) {
            Permissions::Checking(why) => {
                return Verdict {
                    ok: false,
                    text: format!("checking RBAC permissions{why}"),
                }
            }
            Permissions::Missing(m) => {
                return Verdict {
                    ok: false,
                    text: format!("missing RBAC permissions: {}", m.join("; ")),
                }
            }
            Permissions::Unchecked | Permissions::Granted => {}
        }
        let synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let waiting: Vec<&str> = synced
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|(k, _)| k.as_str())
            .collect();
        if synced.is_empty() || !waiting.is_empty() {
            return Verdict {
                ok: false,
                text: format!("waiting for the initial list of: {}", waiting.join(", ")),
            };
        }
        let notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = "ready".to_string();
        for (part, state) in notes.iter() {
            text.push_str(&format!("; {part}: {state}"));
        }
        Verdict { ok: true, text }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_parts_are_reported_without_deciding_readiness() {
        let h = Health::default();
        h.watching("managedsecrets");
        h.listed("managedsecrets");
        h.beat();
        h.note(
            "events",
            "degraded (SQS ReceiveMessage: timed out); polling alone refreshes",
        );
        assert_eq!(
            h.ready(),
            Verdict {
                ok: true,
                text: "ready; events: degraded (SQS ReceiveMessage: timed out); polling alone refreshes".into()
            }
        );
    }

    #[test]
    fn ready_only_after_every_initial_list() {
        let h = Health::default();
        assert!(!h.ready().ok);
        h.watching("managedsecrets");
        h.watching("secrets");
        h.beat();
        h.listed("managedsecrets");
        assert_eq!(
            h.ready(),
            Verdict {
                ok: false,
                text: "waiting for the initial list of: secrets".into()
            }
        );
        h.listed("secrets");
        assert!(h.ready().ok);
        h.shutting_down();
        assert_eq!(h.ready().text, "shutting down");
    }

    #[test]
    fn missing_permissions_keep_it_unready_and_say_which() {
        let h = Health::default();
        h.watching("secrets");
        h.listed("secrets");
        h.beat();
        assert!(h.ready().ok, "no check, no wait");
        h.permissions(Permissions::Checking(String::new()));
        assert_eq!(h.ready().text, "checking RBAC permissions");
        h.permissions(Permissions::Missing(vec![
            "create secrets in a".into(),
            "patch secrets in a".into(),
        ]));
        assert_eq!(
            h.ready(),
            Verdict {
                ok: false,
                text: "missing RBAC permissions: create secrets in a; patch secrets in a".into()
            }
        );
        h.permissions(Permissions::Granted);
        assert!(h.ready().ok);
    }

    #[test]
    fn liveness_follows_the_loop() {
        let h = Health::default();
        assert!(h.live_at(100).ok, "starting");
        h.beat.store(100, Ordering::SeqCst);
        assert!(h.live_at(150).ok);
        assert_eq!(
            h.live_at(200),
            Verdict {
                ok: false,
                text: "the reconcile loop has not run for 100s".into()
            }
        );
        h.beat.store(200, Ordering::SeqCst);
        h.ended();
        assert_eq!(h.live_at(200).text, "the reconcile loop has ended");
        assert!(!h.ready().ok);
    }
}
