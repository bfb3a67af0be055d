//! The Kubernetes client the operator uses: every request goes through a token bucket (QPS and
//! burst, like client-go's) and is counted by verb (`managed_secrets_kube_requests_total`). The
//! pace adapts to the API server: an answer 429 (API Priority and Fairness turning requests
//! away) holds every request for its Retry-After and halves the pace; each calm interval
//! doubles it again, up to the configured QPS (`Pace`).

use crate::metrics::Metrics;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::Request;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service};

/// The verb of a request, as the API server's audit and metrics name it.
pub fn verb(method: &http::Method, path: &str, query: Option<&str>) -> &'static str {
    let watch = query
        .map(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
        .unwrap_or(false);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // After /api/v1 or /apis/group/version: [namespaces, ns,] plural [, name [, sub]]
    let rest: &[&str] = match segs.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, r @ ..] if !r.is_empty() => r,
        r => r,
    };
    let named = rest.len() >= 2;
    match method.as_str() {
        "GET" if watch => "watch",
        "GET" if named => "get",
        "GET" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if named => "delete",
        "DELETE" => "deletecollection",
        _ => "other",
    }
}

/// The slowest pace after repeated 429s: one sixteenth of the configured QPS.
pub const MAX_COST: u32 = 16;
/// The longest a Retry-After holds every request.
pub const MAX_HOLD: Duration = Duration::from_secs(10);
/// A pace halved by a 429 doubles again after this long without one.
pub const CALM: Duration = Duration::from_secs(5);

/// How the client paces itself after the API server answered 429: each request costs `cost`
/// tokens of the QPS bucket (1 when calm: the configured QPS; 2 after a 429: half of it; up to
/// `MAX_COST`), and no request goes out before `hold_until` (the Retry-After). Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub cost: u32,
    pub hold_until: Option<Instant>,
    /// Since when no 429 came (or the pace last recovered a step).
    pub calm_since: Instant,
}

impl Pace {
    pub fn new(now: Instant) -> Pace {
        Pace {
            cost: 1,
            hold_until: None,
            calm_since: now,
        }
    }

    /// A 429 arrived at `now` (with the server's Retry-After, if it sent one; 1 s if not).
    pub fn throttled(&mut self, now: Instant, retry_after: Option<Duration>) {
        self.cost = self.cost.saturating_mul(2).min(MAX_COST);
        let until = now + retry_after.unwrap_or(Duration::from_secs(1)).min(MAX_HOLD);
        self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
        self.calm_since = now;
    }

    /// What the next request must wait for at `now`: the hold still left, and its cost in tokens
    /// (a step recovered per `CALM` without a 429).
    pub fn next(&mut self, now: Instant) -> (Duration, u32) {
        while self.cost > 1 && now.saturating_duration_since(self.calm_since) >= CALM {
            self.cost /= 2;
            self.calm_since += CALM;
        }
        let hold = self
            .hold_until
            .map(|h| h.saturating_duration_since(now))
            .unwrap_or_default();
        if hold.is_zero() {
            self.hold_until = None;
        }
        (hold, self.cost)
    }
}

/// Seconds of a Retry-After header (the API server sends whole seconds).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[derive(Clone)]
pub struct LimitLayer {
    limiter: Arc<DefaultDirectRateLimiter>,
    burst: u32,
    pace: Arc<Mutex<Pace>>,
    metrics: Arc<Metrics>,
}

impl LimitLayer {
    pub fn new(qps: u32, burst: u32, metrics: Arc<Metrics>) -> LimitLayer {
        let q = Quota::per_second(NonZeroU32::new(qps).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        LimitLayer {
            limiter: Arc::new(RateLimiter::direct(q)),
            burst: burst.max(1),
            pace: Arc::new(Mutex::new(Pace::new(Instant::now()))),
            metrics,
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limited<S>;
    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            layer: self.clone(),
            wait: None,
            permit: false,
        }
    }
}

pub struct Limited<S> {
    inner: S,
    layer: LimitLayer,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// A token was taken for the next call.
    permit: bool,
}

impl<S, B, RB> Service<Request<B>> for Limited<S>
where
    S: Service<Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permit {
            let (limiter, pace, burst) = (
                self.layer.limiter.clone(),
                self.layer.pace.clone(),
                self.layer.burst,
            );
            let wait = self.wait.get_or_insert_with(|| {
                Box::pin(async move {
                    // A 429 that arrives while this waits extends the hold: look again after it.
                    let cost = loop {
                        let (hold, cost) = pace
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .next(Instant::now());
                        if hold.is_zero() {
                            break cost;
                        }
                        tokio::time::sleep(hold).await;
                    };
                    let n = NonZeroU32::new(cost.min(burst)).unwrap_or(NonZeroU32::MIN);
                    // `n` is at most the burst: never an error.
                    let _ = limiter.until_n_ready(n).await;
                })
            });
            match wait.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.wait = None;
                    self.permit = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.permit = false;
        self.layer
            .metrics
            .kube_request(verb(req.method(), req.uri().path(), req.uri().query()));
        let (pace, metrics, limiter, burst) = (
            self.layer.pace.clone(),
            self.layer.metrics.clone(),
            self.layer.limiter.clone(),
            self.layer.burst,
        );
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            if res.status() == http::StatusCode::TOO_MANY_REQUESTS {
                metrics.kube.throttled.inc();
                pace.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .throttled(Instant::now(), retry_after(res.headers()));
                // The tokens saved up meanwhile must not become a burst when the hold ends.
                for _ in 0..burst {
                    if limiter.check().is_err() {
                        break;
                    }
                }
            }
            Ok(res)
        })
    }
}

/// The Lease's client: its own small limit and pace, and kube's retry of 429/503/504 (with the
/// server's Retry-After) kept, so that a renewal is retried at once rather than a sync later.
pub async fn lease_client(qps: u32, metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    limited(infer().await?, qps, qps.saturating_mul(2), metrics)
}

async fn infer() -> Result<kube::Config, kube::Error> {
    kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)
}

fn limited(
    config: kube::Config,
    qps: u32,
    burst: u32,
    metrics: Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&LimitLayer::new(qps, burst, metrics))
        .build())
}

/// A client from the environment (kubeconfig or in-cluster) with the limit and the counting.
pub async fn client(
    qps: u32,
    burst: u32,
    metrics: Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    from_config(infer().await?, qps, burst, metrics)
}

pub fn from_config(
    mut config: kube::Config,
    qps: u32,
    burst: u32,
    metrics: Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    // kube's own retry of 429/503/504 sits below this layer: its retries would bypass the limit
    // and hide every 429 from `Pace`. Off: a 429 fails its request (the object retries after the
    // Retry-After, `retry_wait`) and slows every request after it.
    config.default_retry = false;
    limited(config, qps, burst, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn verbs_are_named_as_the_api_server_names_them() {
        let v = |m: Method, p: &str, q: Option<&str>| verb(&m, p, q);
        assert_eq!(v(Method::GET, "/api/v1/namespaces/a/secrets", None), "list");
        assert_eq!(v(Method::GET, "/api/v1/secrets", None), "list");
        assert_eq!(
            v(Method::GET, "/api/v1/namespaces/a/secrets/db", None),
            "get"
        );
        assert_eq!(v(Method::GET, "/api/v1/namespaces/a", None), "get");
        assert_eq!(v(Method::GET, "/api/v1/namespaces", None), "list");
        assert_eq!(
            v(
                Method::GET,
                "/apis/managedsecrets.io/v1alpha1/managedsecrets",
                Some("watch=true&resourceVersion=1")
            ),
            "watch"
        );
        assert_eq!(
            v(
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/deployments/api",
                None
            ),
            "patch"
        );
        assert_eq!(
            v(
                Method::PATCH,
                "/apis/managedsecrets.io/v1alpha1/namespaces/a/managedsecrets/db/status",
                None
            ),
            "patch"
        );
        assert_eq!(
            v(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/a/events",
                None
            ),
            "create"
        );
        assert_eq!(
            v(Method::DELETE, "/api/v1/namespaces/a/secrets/db", None),
            "delete"
        );
    }

    #[test]
    fn a_429_holds_for_its_retry_after_halves_the_pace_and_calm_restores_it() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = Pace::new(t0);
        assert_eq!(p.next(t0), (Duration::ZERO, 1));
        p.throttled(t0, Some(s(3)));
        assert_eq!(p.next(t0 + s(1)), (s(2), 2));
        // A second 429 while held: half again, the later hold wins.
        p.throttled(t0 + s(1), Some(s(1)));
        assert_eq!(p.next(t0 + s(1)), (s(2), 4));
        assert_eq!(p.next(t0 + s(3)), (Duration::ZERO, 4));
        // One step back per calm interval.
        assert_eq!(p.next(t0 + s(6)), (Duration::ZERO, 2));
        assert_eq!(p.next(t0 + s(11)), (Duration::ZERO, 1));
        assert_eq!(p.next(t0 + s(60)), (Duration::ZERO, 1));
        // Never slower than MAX_COST, never held longer than MAX_HOLD, 1 s without Retry-After.
        let mut p = Pace::new(t0);
        for _ in 0..10 {
            p.throttled(t0, Some(s(3600)));
        }
        assert_eq!(p.next(t0), (MAX_HOLD, MAX_COST));
        let mut p = Pace::new(t0);
        p.throttled(t0, None);
        assert_eq!(p.next(t0), (s(1), 2));
    }

    #[test]
    fn retry_after_reads_whole_seconds() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[tokio::test]
    async fn a_429_slows_every_request_after_it() {
        let metrics = Arc::new(Metrics::default());
        let layer = LimitLayer::new(1000, 1000, metrics.clone());
        let mut svc = layer.layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(429)
                    .header("Retry-After", "1")
                    .body(())
                    .unwrap(),
            )
        }));
        use tower::ServiceExt;
        svc.ready().await.unwrap();
        svc.call(Request::get("/api/v1/secrets").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(metrics.kube.throttled.get(), 1);
        // Held for the Retry-After: not ready now; the saved-up tokens are gone.
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(svc.poll_ready(&mut cx).is_pending());
        assert_eq!(layer.pace.lock().unwrap().cost, 2);
        assert!(layer.limiter.check().is_err());
    }

    #[tokio::test]
    async fn requests_over_the_burst_wait_for_tokens() {
        let metrics = Arc::new(Metrics::default());
        let layer = LimitLayer::new(1, 2, metrics.clone());
        let mut svc = layer.layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        }));
        use tower::ServiceExt;
        for _ in 0..2 {
            svc.ready().await.unwrap();
            svc.call(Request::get("/api/v1/secrets").body(()).unwrap())
                .await
                .unwrap();
        }
        // The third has no token: not ready now.
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(svc.poll_ready(&mut cx).is_pending());
        assert!(metrics
            .render()
            .contains(r#"managed_secrets_kube_requests_total{verb="list"} 2"#));
    }
}
