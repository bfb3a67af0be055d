//! The Argo CD health check shipped with the chart (charts/managed-secrets/files/argocd-health.lua),
//! run by a real Lua 5.4 against statuses the controller's own status code writes.

use chrono::{TimeZone, Utc};
use managed_secrets::crd::ManagedSecretStatus;
use managed_secrets::status::{failed, synced, Failed, Synced};
use mlua::{Lua, LuaSerdeExt};
use serde_json::{json, Value};
use std::time::Duration;

const SCRIPT: &str = include_str!("../charts/managed-secrets/files/argocd-health.lua");

/// (status, message) as Argo CD would show them.
fn health(obj: Value) -> (String, String) {
    let lua = Lua::new();
    lua.globals()
        .set("obj", lua.to_value(&obj).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(SCRIPT).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

/// The object as the API server serves it (an absent status is absent, not null).
fn object(generation: i64, status: Option<&ManagedSecretStatus>) -> Value {
    let mut o = json!({
        "apiVersion": "managedsecrets.io/v1alpha1",
        "kind": "ManagedSecret",
        "metadata": {"name": "db", "namespace": "db", "generation": generation},
        "spec": {"secretId": "prod/db/credentials"},
    });
    if let Some(s) = status {
        o["status"] = serde_json::to_value(s).unwrap();
    }
    o
}

fn ok(generation: i64) -> ManagedSecretStatus {
    let now = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
    synced(
        &ManagedSecretStatus::default(),
        Synced {
            generation: Some(generation),
            secret_id: "prod/db/credentials".into(),
            target: "db".into(),
            version_id: "v1".into(),
            version_stages: vec!["AWSCURRENT".into()],
            data_hash: "h".into(),
            keys: vec!["password".into()],
            now,
            next_refresh: now,
            forced: None,
        },
    )
}

fn fail(
    prev: &ManagedSecretStatus,
    generation: i64,
    reason: &'static str,
    transient: bool,
    confirmed_mins_ago: i64,
) -> ManagedSecretStatus {
    let now = Utc.with_ymd_and_hms(2026, 11, 29, 10, 30, 0).unwrap();
    failed(
        prev,
        Failed {
            generation: Some(generation),
            secret_id: "prod/db/credentials".into(),
            target: "db".into(),
            reason,
            message: "AWS said no".into(),
            transient,
            secret_intact: true,
            now,
            next_attempt: now,
            confirmed_at: Some(now - chrono::Duration::minutes(confirmed_mins_ago)),
            refresh_interval: Duration::from_secs(300),
        },
    )
    .0
}

#[test]
fn no_status_yet_is_progressing() {
    assert_eq!(
        health(object(1, None)),
        (
            "Progressing".into(),
            "Waiting for the operator to sync".into()
        )
    );
}

#[test]
fn synced_for_the_current_generation_is_healthy() {
    assert_eq!(
        health(object(3, Some(&ok(3)))),
        (
            "Healthy".into(),
            "Secret db holds AWS version v1 of prod/db/credentials".into()
        )
    );
}

#[test]
fn an_older_generation_is_progressing() {
    assert_eq!(
        health(object(4, Some(&ok(3)))),
        (
            "Progressing".into(),
            "Waiting for the operator to sync generation 4".into()
        )
    );
}

#[test]
fn a_failure_is_degraded_with_its_reason() {
    let s = fail(&ManagedSecretStatus::default(), 2, "AccessDenied", false, 0);
    let (status, message) = health(object(2, Some(&s)));
    assert_eq!(status, "Degraded");
    assert!(
        message.starts_with("AccessDenied: AWS said no"),
        "{message}"
    );
}

#[test]
fn a_transient_failure_keeps_it_healthy_until_stale() {
    let recent = fail(&ok(2), 2, "AwsUnavailable", true, 1);
    assert_eq!(health(object(2, Some(&recent))).0, "Healthy");
    let stale = fail(&ok(2), 2, "AwsUnavailable", true, 60);
    let (status, message) = health(object(2, Some(&stale)));
    assert_eq!(status, "Degraded");
    assert!(
        message.starts_with("AwsUnavailable: AWS has not confirmed the value since"),
        "{message}"
    );
}

#[test]
fn the_readme_snippet_is_the_shipped_script() {
    let readme = include_str!("../charts/managed-secrets/README.md");
    let indented: String = SCRIPT
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    assert!(
        readme.contains(&indented),
        "charts/managed-secrets/README.md must hold files/argocd-health.lua, indented 4 spaces, in its argocd-cm snippet"
    );
}
