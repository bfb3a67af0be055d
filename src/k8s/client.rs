//! The Kubernetes client the operator uses: every request goes through a token bucket (QPS and
//! burst, like client-go's) and is counted by verb (`managed_secrets_kube_requests_total`).

use crate::metrics::Metrics;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::Request;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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

#[derive(Clone)]
pub struct LimitLayer {
    limiter: Arc<DefaultDirectRateLimiter>,
    metrics: Arc<Metrics>,
}

impl LimitLayer {
    pub fn new(qps: u32, burst: u32, metrics: Arc<Metrics>) -> LimitLayer {
        let q = Quota::per_second(NonZeroU32::new(qps).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        LimitLayer {
            limiter: Arc::new(RateLimiter::direct(q)),
            metrics,
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limited<S>;
    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            limiter: self.limiter.clone(),
            metrics: self.metrics.clone(),
            wait: None,
            permit: false,
        }
    }
}

pub struct Limited<S> {
    inner: S,
    limiter: Arc<DefaultDirectRateLimiter>,
    metrics: Arc<Metrics>,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// A token was taken for the next call.
    permit: bool,
}

impl<S, B> Service<Request<B>> for Limited<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permit {
            let limiter = self.limiter.clone();
            let wait = self
                .wait
                .get_or_insert_with(|| Box::pin(async move { limiter.until_ready().await }));
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
        self.metrics
            .kube_request(verb(req.method(), req.uri().path(), req.uri().query()));
        self.inner.call(req)
    }
}

/// A client from the environment (kubeconfig or in-cluster) with the limit and the counting.
pub async fn client(
    qps: u32,
    burst: u32,
    metrics: Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    from_config(config, qps, burst, metrics)
}

pub fn from_config(
    config: kube::Config,
    qps: u32,
    burst: u32,
    metrics: Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&LimitLayer::new(qps, burst, metrics))
        .build())
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

    #[tokio::test]
    async fn requests_over_the_burst_wait_for_tokens() {
        let metrics = Arc::new(Metrics::default());
        let layer = LimitLayer::new(1, 2, metrics.clone());
        let mut svc = layer.layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(())
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
