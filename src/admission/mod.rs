//! The validating admission webhook: refuses at apply time what the controller would refuse later
//! (an invalid spec, a reference no SecretAccessPolicy grants, a malformed policy), with the same
//! messages. Every replica serves it from its watch caches; its certificate is kept by `keeper`.

pub mod certs;
pub mod keeper;
pub mod review;
pub mod server;
pub mod tls;

use crate::controller::policies::PolicyView;
use crate::health::Health;
use crate::metrics::Metrics;
use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

/// The webhook's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub keeper: keeper::Keeper,
    pub min_refresh: Duration,
    pub default_region: Option<String>,
}

/// The names the serving certificate is for: the Service's in-cluster names, and `extra` (DNS
/// names or IP addresses, e.g. for a `clientConfig.url`).
pub fn hosts(service: &str, namespace: &str, extra: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = [
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
    .into_iter()
    .collect();
    out.extend(extra.iter().filter(|h| !h.is_empty()).map(|h| canonical(h)));
    out
}

/// A host as the certificate reads back: an IP address in its canonical form.
fn canonical(host: &str) -> String {
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|_| host.to_string())
}

/// Whether `host` can be a name of the serving certificate: an IP address or a DNS name.
pub fn valid_host(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok() || crate::crd::validate::valid_secret_name(host)
}

/// Binds the webhook's address and serves it, and keeps its certificate, until `stop`. Returns the
/// bound address (port 0 picks one).
pub async fn start(
    settings: Settings,
    client: kube::Client,
    policy: Option<PolicyView>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(JoinHandle<()>, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(settings.addr).await?;
    let bound = listener.local_addr()?;
    let cert = Arc::new(tls::Certificate::default());
    let router = server::router(Arc::new(server::Admission {
        min_refresh: settings.min_refresh,
        default_region: settings.default_region,
        policy,
        health,
        metrics: metrics.clone(),
    }));
    let stop = futures::FutureExt::shared(Box::pin(stop));
    let keeping = settings
        .keeper
        .run(client, cert.clone(), metrics, stop.clone());
    let serving = tls::serve(listener, cert, router, stop);
    let task = tokio::spawn(
        async move {
            futures::join!(keeping, serving);
        }
        .instrument(tracing::Span::current()),
    );
    Ok((task, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_the_service_and_the_extra_hosts() {
        let h: Vec<String> = hosts(
            "ms-webhook",
            "ops",
            &["127.0.0.1".into(), String::new(), "0:0::1".into()],
        )
        .into_iter()
        .collect();
        assert_eq!(
            h,
            [
                "127.0.0.1",
                "::1",
                "ms-webhook",
                "ms-webhook.ops",
                "ms-webhook.ops.svc",
                "ms-webhook.ops.svc.cluster.local"
            ]
        );
        assert!(valid_host("10.0.0.1") && valid_host("webhook.example.com"));
        assert!(!valid_host("Not A Host") && !valid_host("*.example.com"));
    }
}
