//! What one tenant can cost the others, with the operator as shipped (`ground::AS_SHIPPED`: the
//! chart's default values, access policies enforced, a SecretAccessPolicy in place):
//!
//! - `noisy`: 2,000 ManagedSecrets in one namespace that all fail (half not granted by any
//!   policy, half granted but missing in AWS; `refreshInterval: 10s`) beside a quiet namespace
//!   whose secrets rotate. Measures the Kubernetes requests per second and AWS calls the failing
//!   ones cost at rest, and rotation -> Secret in the quiet namespace during the noisy burst and
//!   at rest (the target: within the quiet refresh interval + 5 s).
//! - `tenant-secrets`: two rounds of 100 Secrets of 1,000,000 bytes each, labelled
//!   `app.kubernetes.io/managed-by=managed-secrets` by a tenant (anyone can set that label).
//!   Measures the operator's resident memory before and after each round: the growth per Secret.

use crate::ground::Ground;
use crate::{admin, kube_counters, proc_usage, watch_arrivals, RunArgs, Window};
use anyhow::{bail, Context as _, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use managed_secrets::crd::ManagedSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NOISY: usize = 2_000;
const NOISY_REFRESH: &str = "10s";
const QUIET: usize = 20;
const QUIET_SECRETS: usize = 10;
const QUIET_REFRESH_SECONDS: u64 = 30;
const BULK_SECRETS: usize = 100;
const BULK_BYTES: usize = 1_000_000;

#[derive(Serialize, Deserialize, Default, Clone)]
pub struct NoisyResult {
    pub operator: String,
    pub failing: usize,
    pub failing_refresh: String,
    pub quiet: usize,
    pub quiet_refresh_seconds: u64,
    /// From the first noisy create to every noisy ManagedSecret saying why it fails.
    pub all_failing_reported_seconds: Option<f64>,
    /// Rotation -> Secret in the quiet namespace while the noisy ones are created and first fail.
    pub burst_rotation_to_secret_max_seconds: Option<f64>,
    pub burst_rotations_seen: usize,
    pub burst_rotations_expected: usize,
    pub rest_window_seconds: u64,
    /// Every Kubernetes request in the window (watches and leader election aside), per second.
    pub rest_kube_requests_per_second: f64,
    pub rest_kube_requests: BTreeMap<String, u64>,
    /// Secrets Manager calls naming a noisy secret, per minute at rest (shared sweeps aside).
    pub rest_noisy_aws_calls_per_minute: f64,
    pub rest_aws_calls: BTreeMap<String, u64>,
    pub rest_rotation_to_secret_max_seconds: Option<f64>,
    pub rest_rotations_seen: usize,
    pub rest_rotations_expected: usize,
    pub operator_peak_rss_mib: f64,
}

#[derive(Serialize, Deserialize, Default, Clone)]
pub struct MemoryResult {
    pub operator: String,
    pub secrets: usize,
    pub bytes_per_secret: usize,
    pub rss_before_mib: f64,
    /// After the first round of `secrets`.
    #[serde(default)]
    pub rss_after_first_mib: f64,
    /// After the second.
    pub rss_after_mib: f64,
    pub peak_rss_mib: f64,
    /// Over both rounds.
    pub growth_per_secret_kib: f64,
    /// Over the second round only.
    #[serde(default)]
    pub growth_per_further_secret_kib: f64,
    /// The tenant's ManagedSecrets still Ready afterwards (the operator survived).
    pub still_ready: usize,
    pub managed: usize,
}

/// Ready (Some(true)), failing with a reason (Some(false)) or not yet reported (None), per
/// `namespace/name`, as a watch sees the ManagedSecrets.
pub type Readiness = Arc<Mutex<HashMap<String, Option<bool>>>>;

/// How many are Ready.
pub fn count_ready(seen: &Readiness) -> usize {
    seen.lock()
        .unwrap()
        .values()
        .filter(|v| **v == Some(true))
        .count()
}

pub fn watch_readiness(client: &Client) -> (Readiness, tokio::task::JoinHandle<()>) {
    let seen: Readiness = Arc::default();
    let w = seen.clone();
    let api: Api<ManagedSecret> = Api::all(client.clone());
    let task = tokio::spawn(async move {
        let _ = watcher(api, watcher::Config::default())
            .applied_objects()
            .try_for_each(|ms| {
                let ready = ms.status.as_ref().and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == "Ready")
                        .map(|c| c.status == "True")
                });
                let key = format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any());
                w.lock().unwrap().insert(key, ready);
                async { Ok(()) }
            })
            .await;
    });
    (seen, task)
}

/// Waits until `n` ManagedSecrets of `ns` are as `want` says; the seconds it took.
async fn wait_for(
    seen: &Readiness,
    ns: &str,
    n: usize,
    want: fn(Option<bool>) -> bool,
) -> Option<f64> {
    let t = Instant::now();
    let prefix = format!("{ns}/");
    while t.elapsed() < Duration::from_secs(600) {
        let ok = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, v)| k.starts_with(&prefix) && want(**v))
            .count();
        if ok >= n {
            return Some(t.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

pub async fn policy(g: &Ground, rules: serde_json::Value) -> Result<()> {
    let api: Api<managed_secrets::crd::SecretAccessPolicy> = Api::all(g.client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"apiVersion": "managedsecrets.io/v1alpha1",
            "kind": "SecretAccessPolicy", "metadata": {"name": "bench"}, "spec": {"rules": rules}}))?,
    )
    .await?;
    Ok(())
}

async fn managed_secrets(
    g: &Ground,
    ns: &str,
    names: Vec<(String, String)>,
    refresh: &str,
) -> Result<()> {
    let api: Api<ManagedSecret> = Api::namespaced(g.client.clone(), ns);
    futures::stream::iter(names)
        .map(|(name, secret_id)| {
            let api = api.clone();
            async move {
                let ms: ManagedSecret = serde_json::from_value(json!({"apiVersion": "managedsecrets.io/v1alpha1",
                    "kind": "ManagedSecret", "metadata": {"name": name},
                    "spec": {"secretId": secret_id, "refreshInterval": refresh, "data": {"allKeys": true}}}))?;
                api.create(&PostParams::default(), &ms).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Rotates quiet secrets `range`, `spacing` apart, recording when; what the watcher saw.
async fn rotate_quiet(
    g: &Ground,
    range: std::ops::Range<usize>,
    spacing: Duration,
) -> Result<(Vec<f64>, usize)> {
    let window = Window {
        m: QUIET_SECRETS,
        rotated_at: Arc::default(),
        listed: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let seen: Arc<Mutex<Vec<f64>>> = Arc::default();
    let watch = watch_arrivals(
        Api::<Secret>::namespaced(g.client.clone(), "quiet"),
        watcher::Config::default(),
        "q-",
        |s: &Secret| {
            s.annotations()
                .get("managedsecrets.io/aws-version-id")
                .cloned()
        },
        window.clone(),
        seen.clone(),
    );
    tokio::time::timeout(Duration::from_secs(60), window.listed.acquire())
        .await
        .context("the quiet Secrets' watch did not list")??
        .forget();
    let expected = range.len() * QUIET / QUIET_SECRETS;
    for j in range {
        let token = g
            .rotate(&format!("quiet/s{j}"), &format!("p-{j}-1"))
            .await?;
        window
            .rotated_at
            .lock()
            .unwrap()
            .insert(j, (Instant::now(), token));
        tokio::time::sleep(spacing).await;
    }
    // Long enough for a polled rotation to arrive: the refresh interval + 5 s, and then some.
    let deadline = Instant::now() + Duration::from_secs(QUIET_REFRESH_SECONDS + 15);
    while seen.lock().unwrap().len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    watch.abort();
    let v = seen.lock().unwrap().clone();
    Ok((v, expected))
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

pub async fn noisy(args: &RunArgs) -> Result<NoisyResult> {
    eprintln!("== noisy neighbour ({})", crate::ground::operator_label());
    let g = Ground::start(args).await?;
    g.namespace("quiet", json!({})).await?;
    g.namespace("noisy", json!({})).await?;
    policy(
        &g,
        json!([{"namespaces": ["quiet"], "secrets": ["quiet/*"]},
               {"namespaces": ["noisy"], "secrets": ["noisy-granted/*"]}]),
    )
    .await?;
    g.aws_secrets("quiet/s", QUIET_SECRETS).await?;
    let (seen, readiness) = watch_readiness(&g.client);
    let op = g.start_as_shipped(args)?;
    let quiet = (0..QUIET)
        .map(|i| (format!("q-{i}"), format!("quiet/s{}", i % QUIET_SECRETS)))
        .collect();
    managed_secrets(&g, "quiet", quiet, &format!("{QUIET_REFRESH_SECONDS}s")).await?;
    if wait_for(&seen, "quiet", QUIET, |r| r == Some(true))
        .await
        .is_none()
    {
        bail!("the quiet namespace's ManagedSecrets did not become Ready");
    }
    // The burst: the noisy tenant creates its objects while quiet secrets rotate.
    let created = Instant::now();
    let noisy: Vec<(String, String)> = (0..NOISY)
        .map(|i| {
            let id = if i % 2 == 0 {
                format!("noisy/s{i}")
            } else {
                format!("noisy-granted/missing-{i}")
            };
            (format!("n-{i}"), id)
        })
        .collect();
    let (made, burst) = tokio::join!(
        managed_secrets(&g, "noisy", noisy, NOISY_REFRESH),
        rotate_quiet(&g, 0..QUIET_SECRETS / 2, Duration::from_secs(2)),
    );
    made?;
    let (burst_seen, burst_expected) = burst?;
    let failing = wait_for(&seen, "noisy", NOISY, |r| r == Some(false))
        .await
        .map(|_| created.elapsed().as_secs_f64());
    eprintln!("   noisy: all {NOISY} failing after {failing:?}");
    readiness.abort();
    // At rest: the failures have been reported; their retries back off.
    tokio::time::sleep(Duration::from_secs(30)).await;
    for path in ["__calls", "__requests"] {
        admin(
            &g.http,
            &format!("{}/{path}", g.aws_url),
            reqwest::Method::DELETE,
        )
        .await?;
    }
    admin(
        &g.http,
        &format!("{}/__admin/counters", g.emu_url),
        reqwest::Method::DELETE,
    )
    .await?;
    let start = Instant::now();
    let window = Duration::from_secs(args.window_seconds);
    let spacing = window / 2 / u32::try_from(QUIET_SECRETS / 2).unwrap_or(1);
    let (rest_seen, rest_expected) =
        rotate_quiet(&g, QUIET_SECRETS / 2..QUIET_SECRETS, spacing).await?;
    tokio::time::sleep(window.saturating_sub(start.elapsed())).await;
    let secs = start.elapsed().as_secs_f64();
    let kube = kube_counters(&g.http, &g.emu_url).await?;
    let mut aws: BTreeMap<String, u64> = serde_json::from_value(
        admin(
            &g.http,
            &format!("{}/__calls", g.aws_url),
            reqwest::Method::GET,
        )
        .await?,
    )?;
    for api in ["PutSecretValue", "UpdateSecretVersionStage"] {
        aws.remove(api);
    }
    if let Some(d) = aws.get_mut("DescribeSecret") {
        *d = d.saturating_sub((QUIET_SECRETS / 2) as u64);
    }
    let requests = admin(
        &g.http,
        &format!("{}/__requests", g.aws_url),
        reqwest::Method::GET,
    )
    .await?;
    let noisy_calls = requests
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            let one = r["secret_id"]
                .as_str()
                .is_some_and(|s| s.starts_with("noisy"));
            let batch = r["secret_ids"].as_array().is_some_and(|ids| {
                ids.iter()
                    .any(|s| s.as_str().is_some_and(|s| s.starts_with("noisy")))
            });
            one || batch
        })
        .count();
    let total: u64 = kube
        .iter()
        .filter(|(v, _)| !v.starts_with("watch") && !v.starts_with("lease-"))
        .map(|(_, c)| c)
        .sum();
    let (_, peak, _) = proc_usage(op.pid);
    Ok(NoisyResult {
        operator: crate::ground::operator_label(),
        failing: NOISY,
        failing_refresh: NOISY_REFRESH.into(),
        quiet: QUIET,
        quiet_refresh_seconds: QUIET_REFRESH_SECONDS,
        all_failing_reported_seconds: failing,
        burst_rotation_to_secret_max_seconds: max(&burst_seen),
        burst_rotations_seen: burst_seen.len(),
        burst_rotations_expected: burst_expected,
        rest_window_seconds: args.window_seconds,
        rest_kube_requests_per_second: total as f64 / secs,
        rest_kube_requests: kube,
        rest_noisy_aws_calls_per_minute: noisy_calls as f64 * 60.0 / secs,
        rest_aws_calls: aws,
        rest_rotation_to_secret_max_seconds: max(&rest_seen),
        rest_rotations_seen: rest_seen.len(),
        rest_rotations_expected: rest_expected,
        operator_peak_rss_mib: mib(peak),
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Creates Secrets `bulk-<k>` of `BULK_BYTES` random bytes, labelled as if ours, then waits for
/// the operator's watch to have delivered them.
async fn plant(secrets: &Api<Secret>, range: std::ops::Range<usize>) -> Result<()> {
    futures::stream::iter(range)
        .map(|k| {
            let api = secrets.clone();
            async move {
                let blob: Vec<u8> = (0..BULK_BYTES).map(|_| rand::random::<u8>()).collect();
                let mut s: Secret =
                    serde_json::from_value(json!({"metadata": {"name": format!("bulk-{k}"),
                    "labels": {"app.kubernetes.io/managed-by": "managed-secrets"}}}))?;
                s.data = Some(BTreeMap::from([("blob".to_string(), ByteString(blob))]));
                api.create(&PostParams::default(), &s).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<_>>()
        .await?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    Ok(())
}

pub async fn tenant_secrets(args: &RunArgs) -> Result<MemoryResult> {
    eprintln!(
        "== tenant Secrets labelled managed-by ({})",
        crate::ground::operator_label()
    );
    let g = Ground::start(args).await?;
    g.namespace("tenant", json!({})).await?;
    policy(
        &g,
        json!([{"namespaces": ["tenant"], "secrets": ["mem/*"]}]),
    )
    .await?;
    g.aws_secrets("mem/s", 10).await?;
    let (seen, readiness) = watch_readiness(&g.client);
    let op = g.start_as_shipped(args)?;
    let names = (0..10)
        .map(|i| (format!("m-{i}"), format!("mem/s{i}")))
        .collect();
    managed_secrets(&g, "tenant", names, "60s").await?;
    if wait_for(&seen, "tenant", 10, |r| r == Some(true))
        .await
        .is_none()
    {
        bail!("the tenant's ManagedSecrets did not become Ready");
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, _, before) = proc_usage(op.pid);
    let secrets: Api<Secret> = Api::namespaced(g.client.clone(), "tenant");
    // Two rounds: what the first costs includes the allocator's buffers for decoding 1 MB watch
    // events (kept, not returned); what the second adds is what each further Secret costs.
    plant(&secrets, 0..BULK_SECRETS).await?;
    let (_, _, middle) = proc_usage(op.pid);
    plant(&secrets, BULK_SECRETS..2 * BULK_SECRETS).await?;
    let (_, peak, after) = proc_usage(op.pid);
    let still_ready = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, v)| k.starts_with("tenant/") && **v == Some(true))
        .count();
    readiness.abort();
    Ok(MemoryResult {
        operator: crate::ground::operator_label(),
        secrets: BULK_SECRETS,
        bytes_per_secret: BULK_BYTES,
        rss_before_mib: mib(before),
        rss_after_first_mib: mib(middle),
        rss_after_mib: mib(after),
        peak_rss_mib: mib(peak),
        growth_per_secret_kib: (after as f64 - before as f64) / 1024.0 / (2 * BULK_SECRETS) as f64,
        growth_per_further_secret_kib: (after as f64 - middle as f64)
            / 1024.0
            / BULK_SECRETS as f64,
        still_ready,
        managed: 10,
    })
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
}

/// The tenants' section of results.md.
pub fn markdown(noisy: Option<&NoisyResult>, memory: Option<&MemoryResult>) -> String {
    let mut s = String::new();
    if let Some(r) = noisy {
        s += &format!(
            "\n### Noisy neighbour: {} failing ManagedSecrets (refresh {}) beside {} quiet ones (refresh {}s)\n\nOperator {}.\n\n| measure | value |\n|---|---|\n",
            r.failing, r.failing_refresh, r.quiet, r.quiet_refresh_seconds, r.operator
        );
        let rows = [
            (
                "every failing object reports why (s from first create)",
                fmt(r.all_failing_reported_seconds),
            ),
            (
                "quiet rotation -> Secret during the burst, max (s)",
                format!(
                    "{} ({}/{} Secrets)",
                    fmt(r.burst_rotation_to_secret_max_seconds),
                    r.burst_rotations_seen,
                    r.burst_rotations_expected
                ),
            ),
            (
                "Kubernetes requests / s at rest (watches, leases aside)",
                format!("{:.2}", r.rest_kube_requests_per_second),
            ),
            (
                "AWS calls / min naming a failing secret, at rest",
                format!("{:.1}", r.rest_noisy_aws_calls_per_minute),
            ),
            (
                "quiet rotation -> Secret at rest, max (s)",
                format!(
                    "{} ({}/{} Secrets)",
                    fmt(r.rest_rotation_to_secret_max_seconds),
                    r.rest_rotations_seen,
                    r.rest_rotations_expected
                ),
            ),
            (
                "target: quiet rotation within (s)",
                format!("{}", r.quiet_refresh_seconds + 5),
            ),
            (
                "operator peak RSS (MiB)",
                format!("{:.1}", r.operator_peak_rss_mib),
            ),
        ];
        for (k, v) in rows {
            s += &format!("| {k} | {v} |\n");
        }
    }
    if let Some(r) = memory {
        s += &format!(
            "\n### A tenant's labelled Secrets: twice {} Secrets of {} bytes labelled managed-by\n\nOperator {}.\n\n| measure | value |\n|---|---|\n",
            r.secrets, r.bytes_per_secret, r.operator
        );
        let mib = |x: f64| format!("{x:.1}");
        let rows = [
            ("operator RSS before (MiB)", mib(r.rss_before_mib)),
            (
                "operator RSS after the first round (MiB)",
                mib(r.rss_after_first_mib),
            ),
            (
                "operator RSS after the second round (MiB)",
                mib(r.rss_after_mib),
            ),
            ("operator peak RSS (MiB)", mib(r.peak_rss_mib)),
            (
                "RSS growth per labelled Secret over both rounds (KiB)",
                mib(r.growth_per_secret_kib),
            ),
            (
                "RSS growth per labelled Secret in the second round (KiB)",
                mib(r.growth_per_further_secret_kib),
            ),
            (
                "tenant ManagedSecrets still Ready",
                format!("{}/{}", r.still_ready, r.managed),
            ),
        ];
        for (k, v) in rows {
            s += &format!("| {k} | {v} |\n");
        }
    }
    s
}
