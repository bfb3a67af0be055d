//! Reconcile workers shared fairly between namespaces.
//!
//! The controller has a fixed number of workers (`--concurrency`). Without a rule for who gets the
//! next free one, a namespace with thousands of due objects (a tenant's many cheap ManagedSecrets,
//! all failing) takes every worker in turn, and another namespace's rotation waits behind all of
//! them. Here a free worker goes to the namespaces with waiting reconciles in turn (round robin),
//! each namespace's own reconciles in arrival order: a namespace gets at most its share of workers
//! whenever another namespace is waiting, and every worker when nobody else is (work-conserving).
//! The Kubernetes and AWS rate limits are spent by the workers, so they are shared the same way.
//!
//! `Turns` is the decision (pure, tested exactly); `FairWorkers` hands out `Permit`s with it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Who gets the next free worker: namespaces with waiters take turns; within one, first come
/// first served. `W` is a waiter (a channel in `FairWorkers`, a plain id in tests).
#[derive(Debug)]
pub struct Turns<W> {
    free: usize,
    /// Namespaces with at least one waiter, in the order of their next turn.
    order: VecDeque<String>,
    waiting: HashMap<String, VecDeque<W>>,
    /// Workers held, per namespace.
    running: HashMap<String, usize>,
}

impl<W> Turns<W> {
    pub fn new(workers: usize) -> Self {
        Turns {
            free: workers.max(1),
            order: VecDeque::new(),
            waiting: HashMap::new(),
            running: HashMap::new(),
        }
    }

    /// A reconcile in `ns` wants a worker: true when it takes one now (one is free and nobody
    /// waits ahead of it); false when it waits as `waiter`, and `finish` hands it one in its turn.
    pub fn arrive(&mut self, ns: &str, waiter: W) -> bool {
        if self.free > 0 && self.order.is_empty() {
            self.free -= 1;
            *self.running.entry(ns.to_string()).or_default() += 1;
            return true;
        }
        let queue = self.waiting.entry(ns.to_string()).or_default();
        if queue.is_empty() {
            self.order.push_back(ns.to_string());
        }
        queue.push_back(waiter);
        false
    }

    /// A worker of `ns` is done: the next waiter in turn, with its namespace, now holds it (or the
    /// worker is free when nobody waits).
    pub fn finish(&mut self, ns: &str) -> Option<(String, W)> {
        if let Some(n) = self.running.get_mut(ns) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(ns);
            }
        }
        match self.next_waiter() {
            Some((next, w)) => {
                *self.running.entry(next.clone()).or_default() += 1;
                Some((next, w))
            }
            None => {
                self.free += 1;
                None
            }
        }
    }

    fn next_waiter(&mut self) -> Option<(String, W)> {
        let ns = self.order.pop_front()?;
        let queue = self.waiting.get_mut(&ns)?;
        let w = queue.pop_front()?;
        if queue.is_empty() {
            self.waiting.remove(&ns);
        } else {
            // Its next waiter goes to the back of the line of namespaces.
            self.order.push_back(ns.clone());
        }
        Some((ns, w))
    }

    /// Reconciles waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// Workers held by `ns`.
    pub fn running(&self, ns: &str) -> usize {
        self.running.get(ns).copied().unwrap_or(0)
    }
}

/// The workers, handed out by `Turns`. Cloning shares them.
#[derive(Clone)]
pub struct FairWorkers {
    turns: Arc<Mutex<Turns<oneshot::Sender<Permit>>>>,
    waiting: prometheus_client::metrics::gauge::Gauge,
}

/// A worker, held until dropped (then it goes to the next namespace in turn).
pub struct Permit {
    workers: Option<FairWorkers>,
    ns: String,
}

impl FairWorkers {
    /// `waiting` shows the reconciles waiting for a worker.
    pub fn new(workers: usize, waiting: prometheus_client::metrics::gauge::Gauge) -> Self {
        FairWorkers {
            turns: Arc::new(Mutex::new(Turns::new(workers))),
            waiting,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Turns<oneshot::Sender<Permit>>> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a worker in `ns`'s turn. Dropping the future gives up the place (and a worker
    /// handed to it meanwhile goes on to the next in turn).
    pub async fn acquire(&self, ns: &str) -> Permit {
        let rx = {
            let mut turns = self.lock();
            let (tx, rx) = oneshot::channel();
            if turns.arrive(ns, tx) {
                return self.permit(ns);
            }
            self.waiting.set(gauge(turns.waiting()));
            rx
        };
        match rx.await {
            Ok(p) => p,
            // The sender is only dropped with the workers themselves: carry on unlimited.
            Err(_) => Permit {
                workers: None,
                ns: ns.to_string(),
            },
        }
    }

    fn permit(&self, ns: &str) -> Permit {
        Permit {
            workers: Some(self.clone()),
            ns: ns.to_string(),
        }
    }

    fn release(&self, ns: &str) {
        let mut turns = self.lock();
        let mut done = ns.to_string();
        while let Some((next, tx)) = turns.finish(&done) {
            match tx.send(self.permit(&next)) {
                Ok(()) => break,
                // That waiter gave up: its worker goes on.
                Err(mut p) => {
                    p.workers = None;
                    done = next;
                }
            }
        }
        self.waiting.set(gauge(turns.waiting()));
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(w) = self.workers.take() {
            w.release(&self.ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out every worker, then returns who got them as namespaces finish in `done` order.
    fn order_after(workers: usize, arrivals: &[(&str, u32)], done: &[&str]) -> Vec<u32> {
        let mut t = Turns::new(workers);
        let mut started = vec![];
        for (ns, id) in arrivals {
            if t.arrive(ns, *id) {
                started.push(*id);
            }
        }
        for ns in done {
            if let Some((_, id)) = t.finish(ns) {
                started.push(id);
            }
        }
        started
    }

    #[test]
    fn a_namespace_with_many_waiters_takes_turns_with_one_that_has_few() {
        // Two workers, both taken by the noisy namespace; then 4 more noisy and 2 quiet arrive.
        let arrivals = [
            ("noisy", 1),
            ("noisy", 2),
            ("noisy", 3),
            ("noisy", 4),
            ("noisy", 5),
            ("quiet", 10),
            ("noisy", 6),
            ("quiet", 11),
        ];
        let done = [
            "noisy", "noisy", "noisy", "quiet", "noisy", "quiet", "noisy",
        ];
        assert_eq!(
            order_after(2, &arrivals, &done),
            vec![1, 2, 3, 10, 4, 11, 5, 6]
        );
    }

    #[test]
    fn alone_a_namespace_has_every_worker_and_a_free_worker_is_taken_at_once() {
        let mut t = Turns::new(3);
        assert!(t.arrive("a", 1));
        assert!(t.arrive("a", 2));
        assert!(t.arrive("a", 3));
        assert!(!t.arrive("a", 4));
        assert_eq!((t.running("a"), t.waiting()), (3, 1));
        assert_eq!(t.finish("a"), Some(("a".to_string(), 4)));
        assert_eq!(t.finish("a"), None);
        assert_eq!((t.running("a"), t.waiting()), (2, 0));
        // The freed worker is taken by the next arrival, whatever its namespace.
        assert!(t.arrive("b", 5));
        assert_eq!(t.running("b"), 1);
    }

    #[test]
    fn nobody_overtakes_a_waiter_when_a_worker_frees() {
        let mut t = Turns::new(1);
        assert!(t.arrive("a", 1));
        assert!(!t.arrive("b", 2));
        // A worker freed goes to b; c, arriving after, waits although a worker was just freed.
        assert_eq!(t.finish("a"), Some(("b".to_string(), 2)));
        assert!(!t.arrive("c", 3));
        assert_eq!(t.finish("b"), Some(("c".to_string(), 3)));
        assert_eq!(t.finish("c"), None);
        assert_eq!(t.waiting(), 0);
    }

    #[test]
    fn zero_workers_means_one() {
        let mut t = Turns::new(0);
        assert!(t.arrive("a", 1));
        assert!(!t.arrive("a", 2));
    }

    #[tokio::test]
    async fn permits_go_round_robin_and_a_waiter_that_gives_up_passes_its_turn_on() {
        let waiting = prometheus_client::metrics::gauge::Gauge::default();
        let w = FairWorkers::new(1, waiting.clone());
        let first = w.acquire("noisy").await;
        let order = Arc::new(Mutex::new(vec![]));
        let mut tasks = vec![];
        for (ns, id) in [("noisy", 1), ("noisy", 2), ("gone", 3), ("quiet", 4)] {
            let (w, order) = (w.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = w.acquire(ns).await;
                order.lock().unwrap().push(id);
                drop(p);
            }));
            // Arrival order is the spawn order.
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(waiting.get(), 4);
        // The waiter of namespace "gone" gives up before its turn.
        tasks.remove(2).abort();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![1, 4, 2]);
        assert_eq!(waiting.get(), 0);
        // Every worker is back: one can be taken at once.
        let p = tokio::time::timeout(std::time::Duration::from_secs(1), w.acquire("x")).await;
        assert!(p.is_ok());
    }
}
