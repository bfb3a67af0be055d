//! Logging setup: text or JSON, filtered by `RUST_LOG` (default `info`). The HTTP and AWS client
//! stacks are capped whatever `RUST_LOG` says: at `trace` they print request and response bodies,
//! which carry secret values.

use crate::config::LogFormat;
use tracing::{Instrument as _, Level};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

/// The most each payload-logging target may log (an upper bound; `RUST_LOG` can still lower it).
pub fn caps() -> Targets {
    Targets::new()
        .with_default(Level::TRACE)
        .with_target("aws_smithy_runtime", Level::DEBUG)
        .with_target("aws_smithy_runtime_api", Level::DEBUG)
        .with_target("aws_smithy_http", Level::DEBUG)
        .with_target("aws_smithy_http_client", Level::DEBUG)
        .with_target("aws_sdk_secretsmanager", Level::DEBUG)
        .with_target("aws_config", Level::DEBUG)
        .with_target("kube_client", Level::DEBUG)
        .with_target("hyper", Level::INFO)
        .with_target("hyper_util", Level::INFO)
        .with_target("h2", Level::INFO)
        .with_target("rustls", Level::INFO)
        .with_target("tower", Level::INFO)
}

/// Spawns `task` inside `span`: every spawned task has one, so that its logs say what they belong
/// to. (`tokio::spawn(task.instrument(span))` with the span first, for a long `async move` block.)
pub fn spawn_in<F>(span: tracing::Span, task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(task.instrument(span))
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube=warn,aws=warn,hyper=warn"));
    let registry = tracing_subscriber::registry().with(filter).with(caps());
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_logging_targets_are_capped() {
        let c = caps();
        assert!(!c.would_enable("hyper::proto", &Level::DEBUG));
        assert!(!c.would_enable("aws_smithy_runtime::client", &Level::TRACE));
        assert!(c.would_enable("aws_smithy_runtime::client", &Level::DEBUG));
        assert!(c.would_enable("managed_secrets::controller", &Level::TRACE));
    }
}
