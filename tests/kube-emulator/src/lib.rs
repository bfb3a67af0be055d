//! A Kubernetes API server emulator for managed-secrets' tests: a generic JSON object store that
//! speaks the Kubernetes REST API (discovery, CRUD, the four patch types including server-side apply,
//! watch with bookmarks and 410 Gone, CRD schema validation, validating admission webhooks,
//! finalizers and garbage collection, a minimal workload controller), plus admin endpoints for
//! fault injection and request counters.
//! See the README section "The test ground" for what is and is not emulated.
#![forbid(unsafe_code)]
// ApiError is a whole Status body that is turned into an HTTP answer at once; boxing it buys nothing.
#![allow(clippy::result_large_err)]

pub mod admission;
pub mod auth;
pub mod error;
pub mod events;
pub mod fields;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod smp;
pub mod store;
pub mod table;
pub mod validate;
pub mod workloads;
pub mod write;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// A running emulator. Dropping it stops the server.
///
/// It serves the same API twice: over plain HTTP at [`Emulator::url`] (clients that set their own
/// `Authorization` header, and the test-only `/__admin` endpoints), and over HTTPS at
/// [`Emulator::https_url`] with a CA made at start, which the kubeconfig names: client-go (kubectl,
/// helm) sends a kubeconfig's credentials only over TLS, as to a real API server.
pub struct Emulator {
    pub addr: SocketAddr,
    pub tls_addr: SocketAddr,
    /// The CA that signed the serving certificate (PEM).
    pub ca_pem: String,
    pub state: Arc<server::AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub listen: SocketAddr,
    /// The HTTPS listener.
    pub listen_tls: SocketAddr,
    /// How often open watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: "127.0.0.1:0".parse().expect("addr"),
            listen_tls: "127.0.0.1:0".parse().expect("addr"),
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

/// A CA and a serving certificate for `127.0.0.1` and `localhost`, signed by it: (CA PEM, TLS
/// server configuration).
fn tls_material() -> std::io::Result<(String, Arc<rustls::ServerConfig>)> {
    let err = |e: rcgen::Error| std::io::Error::other(e.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-emulator-ca");
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .map_err(std::io::Error::other)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((ca_cert.pem(), Arc::new(cfg)))
}

/// Serves `app` over TLS on `listener` until the task is aborted (connections with it).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        conns.spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
        while conns.try_join_next().is_some() {}
    }
}

impl Emulator {
    /// Starts the server on the current tokio runtime.
    pub async fn start(opts: Options) -> std::io::Result<Emulator> {
        let state = server::AppState::new(opts.bookmark_interval);
        let listener = tokio::net::TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let st = state.clone();
        let app = axum::Router::new().fallback(move |method, uri, headers, body| {
            let st = st.clone();
            async move { server::handle(st, method, uri, headers, body).await }
        });
        let tls_listener = tokio::net::TcpListener::bind(opts.listen_tls).await?;
        let tls_addr = tls_listener.local_addr()?;
        let (ca_pem, tls) = tls_material()?;
        let serve_tls = tokio::spawn(serve_tls(tls_listener, tls, app.clone()));
        let (tx, rx) = oneshot::channel::<()>();
        let serve = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        let ctrl = tokio::spawn(server::run_controllers(state.clone()));
        Ok(Emulator {
            addr,
            tls_addr,
            ca_pem,
            state,
            shutdown: Some(tx),
            tasks: vec![serve, serve_tls, ctrl],
        })
    }

    /// Plain HTTP: for clients that send their own credentials, and `/__admin`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// HTTPS, with [`Emulator::ca_pem`] as the CA.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.tls_addr)
    }

    /// A kubeconfig (HTTPS, the CA, the administrator's token) that kubectl, helm, the Python
    /// client and kube-rs accept.
    pub fn kubeconfig(&self) -> String {
        kubeconfig_for(&self.https_url(), &self.ca_pem, auth::ADMIN_TOKEN)
    }

    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Who did what (`/__admin/audit`): every request by user, verb, API group, resource,
    /// namespace and whether it was allowed, with counts.
    pub fn audit(&self) -> serde_json::Value {
        server::audit(&self.state)
    }

    /// Ends every open watch (clients see the stream close and re-watch).
    pub fn close_watches(&self) {
        self.state.watch_epoch.send_modify(|e| *e += 1);
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.close_watches();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A kubeconfig for the server at `url` (HTTPS with the CA `ca_pem`) whose user has `token` (the
/// administrator's: group `system:masters`; or a ServiceAccount's).
pub fn kubeconfig_for(url: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\ncurrent-context: emulator\nusers:\n- name: emulator\n  user:\n    token: {token}\npreferences: {{}}\n"
    )
}
