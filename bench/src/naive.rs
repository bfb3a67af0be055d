//! The naive baseline the benchmark compares against: the common design of secret operators
//! (External Secrets Operator's refresh loop, a cached Lambda's per-object reads). Every reconcile
//! GETs the target Secret, calls GetSecretValue (no cache, no change detection), writes the
//! Secret when it differs, patches status with the refresh time, and for rollouts LISTs the
//! namespace's Deployments. It is part of the benchmark harness, not of the product.

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Client, ResourceExt};
use managed_secrets::crd::ManagedSecret;
use managed_secrets::render::{self, SecretValue};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Port of its /metrics (reconciles, for the bench to read).
    #[arg(long)]
    metrics_port: u16,
}

struct Ctx {
    client: Client,
    sm: aws_sdk_secretsmanager::Client,
    reconciles: AtomicU64,
}

async fn reconcile(ms: Arc<ManagedSecret>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    ctx.reconciles.fetch_add(1, Ordering::Relaxed);
    let ns = ms.namespace().unwrap_or_default();
    let name = ms.target_name();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let current = secrets.get_opt(&name).await?;
    let refresh = managed_secrets::schedule::refresh_interval(
        ms.spec.refresh_interval.as_deref(),
        Duration::from_secs(1),
    )
    .unwrap_or(Duration::from_secs(60));
    let got = match ctx
        .sm
        .get_secret_value()
        .secret_id(&ms.spec.secret_id)
        .send()
        .await
    {
        Ok(g) => g,
        Err(_) => return Ok(Action::requeue(Duration::from_secs(5))),
    };
    let version = got.version_id().unwrap_or_default().to_string();
    let value = SecretValue::String(got.secret_string().unwrap_or_default().to_string());
    let Ok(data) = render::render(&ms.spec, &value) else {
        return Ok(Action::requeue(refresh));
    };
    let desired = managed_secrets::k8s::secret::desired_secret(&ms, &data, &version);
    let previous = current.as_ref().and_then(|s| {
        s.annotations()
            .get("managedsecrets.io/aws-version-id")
            .cloned()
    });
    if current.is_none() || previous.as_deref() != Some(version.as_str()) {
        secrets
            .patch(
                &name,
                &PatchParams::apply("naive").force(),
                &Patch::Apply(&desired),
            )
            .await?;
        if ms.spec.rollout.is_some() && current.is_some() {
            // Reloader-style: find the workloads that read the Secret and restart them.
            let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            for d in deployments.list(&Default::default()).await? {
                let tpl =
                    serde_json::to_value(d.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
                if managed_secrets::rollout::references_secret(&tpl, &name) {
                    let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": d.name_any()},
                        "spec": {"template": {"metadata": {"annotations": {"managedsecrets.io/secret-version": version}}}}});
                    deployments
                        .patch(
                            &d.name_any(),
                            &PatchParams::apply("naive").force(),
                            &Patch::Apply(&body),
                        )
                        .await?;
                }
            }
        }
    }
    // The refresh time in status: a write on every reconcile.
    let api: Api<ManagedSecret> = Api::namespaced(ctx.client.clone(), &ns);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = json!({"apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret", "status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "Synced", "message": "synced", "lastTransitionTime": now}],
        "syncedVersionId": version, "lastSyncTime": now}});
    api.patch_status(
        &ms.name_any(),
        &PatchParams::apply("naive").force(),
        &Patch::Apply(&status),
    )
    .await?;
    Ok(Action::requeue(refresh))
}

fn error_policy(_: Arc<ManagedSecret>, _: &kube::Error, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_secs(5))
}

pub async fn run(args: Args) -> Result<()> {
    let client = Client::try_default().await?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        sm: aws_sdk_secretsmanager::Client::new(&sdk),
        reconciles: AtomicU64::new(0),
    });
    let metrics_ctx = ctx.clone();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.metrics_port)).await?;
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            use tokio::io::AsyncReadExt;
            let mut req = [0u8; 1024];
            let _ = sock.read(&mut req).await;
            let body = format!(
                "managed_secrets_reconciles_total {}\n",
                metrics_ctx.reconciles.load(Ordering::Relaxed)
            );
            use tokio::io::AsyncWriteExt;
            let _ = sock
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    Controller::new(Api::<ManagedSecret>::all(client), Default::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(32))
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
    Ok(())
}
