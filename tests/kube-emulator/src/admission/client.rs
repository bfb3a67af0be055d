//! Reaching a webhook as kube-apiserver does: `clientConfig.url` directly, `clientConfig.service`
//! through the Endpoints of that Service in the store (the aggregator's endpoint resolver), TLS that
//! trusts exactly the caBundle (the system roots without one) and checks the server name (the URL's
//! host, or `<service>.<namespace>.svc`), then one HTTP/1.1 POST with `?timeout=<N>s`, bounded by
//! the webhook's timeoutSeconds. Failures are worded as Go's client words them.

use super::config::ClientConfig;
use crate::store::{md_str, Inner};
use axum::body::{Body, Bytes};
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::Instrument;

/// Where and how one webhook is called.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL as Go's errors print it: `https://host[:port]/path?timeout=10s`.
    pub url: String,
    /// The address to connect to (a host name is looked up), or why a Service has none.
    dial: Result<String, String>,
    server_name: String,
    host_header: String,
    path: String,
    /// The trusted roots, or why the caBundle gives none.
    roots: Result<Arc<rustls::RootCertStore>, String>,
}

/// A webhook's HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

/// The endpoint of `cc`, resolved against the store now (a Service's Endpoints).
pub fn resolve(inner: &Inner, cc: &ClientConfig, timeout: Duration) -> Endpoint {
    let query = format!("timeout={}s", timeout.as_secs());
    let roots = roots(cc.ca_bundle.as_deref());
    if let Some(svc) = &cc.service {
        let port = svc.port.unwrap_or(443);
        let host = format!("{}.{}.svc", svc.name, svc.namespace);
        let path = svc.path.clone().unwrap_or_default();
        return Endpoint {
            url: format!("https://{host}:{port}{path}?{query}"),
            dial: service_address(inner, &svc.namespace, &svc.name, port),
            server_name: host.clone(),
            host_header: format!("{host}:{port}"),
            path: format!("{}?{query}", if path.is_empty() { "/" } else { &path }),
            roots,
        };
    }
    let raw = cc.url.as_deref().unwrap_or("");
    let u = url::Url::parse(raw).ok();
    let host = u
        .as_ref()
        .and_then(|u| u.host_str())
        .unwrap_or("")
        .to_string();
    let authority = match u.as_ref().and_then(url::Url::port) {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let path = u.as_ref().map(|u| u.path()).unwrap_or("/");
    let port = u.as_ref().and_then(url::Url::port).unwrap_or(443);
    Endpoint {
        url: format!("https://{authority}{path}?{query}"),
        dial: Ok(format!("{host}:{port}")),
        server_name: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        host_header: authority,
        path: format!("{path}?{query}"),
        roots,
    }
}

/// The aggregator's `ResolveEndpoint`: the Service must exist with a port numbered `port`; the
/// first ready address of the Endpoints subset that has a port of the same name.
fn service_address(inner: &Inner, ns: &str, name: &str, port: i32) -> Result<String, String> {
    let get = |plural: &str| {
        let rt = inner.find_type("", "v1", plural)?;
        inner.get(&rt, ns, name).cloned()
    };
    let svc = get("services").ok_or_else(|| format!("service {name:?} not found"))?;
    let ty = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !matches!(ty, "ClusterIP" | "LoadBalancer" | "NodePort") {
        return Err(format!("unsupported service type {ty:?}"));
    }
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let svc_port = ports
        .iter()
        .find(|p| p.get("port").and_then(Value::as_i64) == Some(port.into()))
        .ok_or_else(|| {
            format!(
                "no service port {port} found for service {:?}",
                md_str(&svc, "name")
            )
        })?;
    let port_name = svc_port.get("name").and_then(Value::as_str).unwrap_or("");
    let eps = get("endpoints").ok_or_else(|| format!("endpoints {name:?} not found"))?;
    let subsets = eps
        .get("subsets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for ss in &subsets {
        let ip = ss.pointer("/addresses/0/ip").and_then(Value::as_str);
        let ports = ss.get("ports").and_then(Value::as_array);
        let named = ports.and_then(|ps| {
            ps.iter()
                .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
        });
        if let (Some(ip), Some(p)) = (
            ip,
            named.and_then(|p| p.get("port")).and_then(Value::as_i64),
        ) {
            let ip = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            return Ok(format!("{ip}:{p}"));
        }
    }
    Err(format!("no endpoints available for service {name:?}"))
}

/// Exactly the certificates of the caBundle, or the system's roots without one.
fn roots(ca_bundle: Option<&str>) -> Result<Arc<rustls::RootCertStore>, String> {
    let Some(b64) = ca_bundle.filter(|c| !c.is_empty()) else {
        return Ok(system_roots());
    };
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("unable to load root certificates: {e}"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| "unable to load root certificates: unable to parse bytes as PEM block")?;
    let mut store = rustls::RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(
            "unable to load root certificates: no valid certificate authority data seen".into(),
        );
    }
    Ok(Arc::new(store))
}

fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = rustls::RootCertStore::empty();
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(store)
        })
        .clone()
}

/// POSTs `body` to the endpoint within `timeout`. `Err` is why the call failed, as the text after
/// `failed calling webhook "<name>": `.
pub async fn post(ep: &Endpoint, body: Vec<u8>, timeout: Duration) -> Result<Reply, String> {
    let roots = ep.roots.clone()?;
    let failed = |why: String| format!("failed to call webhook: Post {:?}: {why}", ep.url);
    match tokio::time::timeout(timeout, exchange(ep, roots, body)).await {
        Ok(r) => r.map_err(failed),
        Err(_) => Err(failed("context deadline exceeded".into())),
    }
}

/// Aborts the connection task when the call is over (or abandoned at its deadline).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange(
    ep: &Endpoint,
    roots: Arc<rustls::RootCertStore>,
    body: Vec<u8>,
) -> Result<Reply, String> {
    let tcp = connect(ep.dial.clone()?).await?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(ep.server_name.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| tls_error(&e))?;
    let io = hyper_util::rt::TokioIo::new(tls);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let span = tracing::debug_span!("webhook connection", url = %ep.url);
    let _conn = AbortOnDrop(tokio::spawn(
        async move {
            let _ = conn.await;
        }
        .instrument(span),
    ));
    let req = hyper::Request::post(&ep.path)
        .header("host", &ep.host_header)
        .header("content-type", "application/json")
        .header("accept", "application/json, */*")
        .header("user-agent", "kube-apiserver-admission")
        .body(Body::from(body))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| http_error(&e))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(Body::new(resp.into_body()), 64 << 20)
        .await
        .map_err(|_| "unexpected EOF".to_string())?;
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

/// Go's dialer: a name is looked up, then each address tried.
async fn connect(addr: String) -> Result<tokio::net::TcpStream, String> {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&addr);
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&addr)
        .await
        .map_err(|_| format!("dial tcp: lookup {host}: no such host"))?
        .collect();
    let mut last = format!("dial tcp: lookup {host}: no such host");
    for a in addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = format!("dial tcp {a}: connect: connection refused");
            }
            Err(e) => last = format!("dial tcp {a}: connect: {e}"),
        }
    }
    Err(last)
}

/// A failed handshake in Go's x509 words where there are such.
fn tls_error(e: &std::io::Error) -> String {
    use rustls::CertificateError as C;
    // tokio-rustls hands rustls' own error over inside the io::Error.
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "EOF".into(),
            _ => e.to_string(),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "x509: certificate signed by unknown authority".into()
        }
        // Another CA of the same name (Go names the candidate it tried).
        rustls::Error::InvalidCertificate(C::BadSignature) => {
            "x509: certificate signed by unknown authority (possibly because of a signature verification error while trying to verify a candidate authority certificate)".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidForNameContext {
            expected,
            presented,
        }) => {
            let want = expected.to_str();
            format!(
                "x509: certificate is valid for {}, not {want}",
                presented.join(", ")
            )
        }
        rustls::Error::InvalidCertificate(C::NotValidForName) => {
            "x509: certificate is not valid for the requested name".into()
        }
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "x509: certificate has expired or is not yet valid".into(),
        other => format!("tls: {other}"),
    }
}

fn http_error(e: &hyper::Error) -> String {
    if e.is_incomplete_message() || e.is_closed() {
        "EOF".into()
    } else {
        e.to_string()
    }
}
