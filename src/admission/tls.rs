//! The webhook's HTTPS listener: TLS with the certificate the keeper last loaded (a renewal takes
//! effect on the next connection, without a restart), HTTP/1.1 to an axum router.

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers (also on an idle kept-alive connection).
const HEADER_READ: Duration = Duration::from_secs(30);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 256;

/// The serving certificate in use; none until the first is loaded (a handshake then fails, and the
/// API server applies the webhook's failure policy).
#[derive(Default)]
pub struct Certificate {
    current: RwLock<Option<(String, Arc<CertifiedKey>)>>,
    /// When the certificate in use expires (Unix seconds; 0: none in use).
    not_after: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate").finish_non_exhaustive()
    }
}

impl Certificate {
    /// Uses this certificate and key (PEM), which expire at `not_after`, from the next handshake
    /// on. `Ok(true)` when it differs from the one in use.
    pub fn load(&self, crt: &str, key: &str, not_after: i64) -> Result<bool, String> {
        if self.current_pem().as_deref() == Some(crt) {
            return Ok(false);
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| "tls.crt is not PEM".to_string())?;
        if chain.is_empty() {
            return Err("tls.crt holds no certificate".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|_| "tls.key is not a PEM private key".to_string())?;
        let provider = rustls::crypto::CryptoProvider::get_default()
            .ok_or("no TLS crypto provider installed")?;
        let certified = CertifiedKey::from_der(chain, key, provider)
            .map_err(|e| format!("tls.crt and tls.key do not make a serving certificate: {e}"))?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = Some((crt.to_string(), Arc::new(certified)));
        self.not_after
            .store(not_after, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }

    /// When the certificate in use expires (Unix seconds); 0 when none is in use.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The PEM of the certificate in use.
    pub fn current_pem(&self) -> Option<String> {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        cur.as_ref().map(|(pem, _)| pem.clone())
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        cur.as_ref().map(|(_, k)| k.clone())
    }
}

/// Serves `router` over TLS on `listener` until `stop` (or until this future is dropped: every
/// connection it accepted closes with it), at most `MAX_CONNECTIONS` at once.
pub async fn serve(
    listener: TcpListener,
    cert: Arc<Certificate>,
    router: axum::Router,
    stop: impl Future<Output = ()>,
) {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = &mut stop => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => listener.accept().await.map(|a| (a, slot)),
                Err(_) => return,
            },
        };
        let ((tcp, peer), slot) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        let connection = async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = TowerToHyperService::new(router);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "webhook: connection ended with an error");
            }
        };
        connections.spawn(connection.instrument(tracing::Span::current()));
    }
}
