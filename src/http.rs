//! The operator's HTTP server: `/healthz` (the reconcile loop is alive), `/readyz` (every watched
//! kind listed), `/metrics`.

use crate::health::{Health, Verdict};
use crate::metrics::Metrics;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

fn answer(v: Verdict) -> (StatusCode, String) {
    let code = if v.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, v.text)
}

pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    let live = health.clone();
    Router::new()
        .route(
            "/healthz",
            get(move || {
                let h = live.clone();
                async move { answer(h.live()) }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let h = health.clone();
                async move { answer(h.ready()) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
}
