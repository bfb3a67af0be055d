//! A Kubernetes API server emulator for managed-secrets' tests: a generic JSON object store that
//! speaks the Kubernetes REST API (discovery, CRUD, the four patch types including server-side apply,
//! watch with bookmarks and 410 Gone, CRD schema validation, finalizers and garbage collection, a
//! minimal workload controller), plus admin endpoints for fault injection and request counters.
//! See the README section "The test ground" for what is and is not emulated.
#![forbid(unsafe_code)]
// ApiError is a whole Status body that is turned into an HTTP answer at once; boxing it buys nothing.
#![allow(clippy::result_large_err)]

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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// A running emulator. Dropping it stops the server.
pub struct Emulator {
    pub addr: SocketAddr,
    pub state: Arc<server::AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub listen: SocketAddr,
    /// How often open watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: "127.0.0.1:0".parse().expect("addr"),
            bookmark_interval: Duration::from_secs(5),
        }
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
            state,
            shutdown: Some(tx),
            tasks: vec![serve, ctrl],
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig that kubectl and kube-rs accept.
    pub fn kubeconfig(&self) -> String {
        kubeconfig_for(&self.url())
    }

    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
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

pub fn kubeconfig_for(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {url}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\ncurrent-context: emulator\nusers:\n- name: emulator\n  user:\n    token: emulator\npreferences: {{}}\n"
    )
}
