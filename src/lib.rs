//! managed-secrets: keeps Kubernetes Secrets in sync with AWS Secrets Manager.
#![forbid(unsafe_code)]

pub mod admission;
pub mod claim;
pub mod cmd;
pub mod config;
pub mod controller;
pub mod crd;
pub mod error;
pub mod fair;
pub mod health;
pub mod http;
pub mod k8s;
pub mod labels;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod notifications;
pub mod permissions;
pub mod policy;
pub mod reason;
pub mod render;
pub mod rollout;
pub mod rotation;
pub mod schedule;
pub mod source;
pub mod status;
pub mod telemetry;

pub use error::{Error, Result};

/// Installs the process-wide rustls crypto provider (kube and the AWS SDK both use rustls; without
/// one installed the first TLS connection panics). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
