//! `coldstart[-NxM]`: N new ManagedSecrets over M AWS secrets (10,000 over 1,000 unless named)
//! created against a running operator as shipped (the chart's default values, policies enforced,
//! a SecretAccessPolicy granting every namespace). Reports the time to all Ready, the operator's
//! Kubernetes requests per new object by verb and resource (Events apart), and its Kubernetes
//! requests per second at the peak (one-second samples).

use crate::ground::Ground;
use crate::{admin, kube_counters, proc_usage, tenants, RunArgs};
use anyhow::{Context as _, Result};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams};
use managed_secrets::crd::ManagedSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NAMESPACES: usize = 10;

#[derive(Serialize, Deserialize, Default, Clone)]
pub struct ColdStartResult {
    pub operator: String,
    pub n: usize,
    pub m: usize,
    /// How long the bench took to create them (32 at a time).
    pub create_seconds: f64,
    /// From the first create to every one Ready.
    pub all_ready_seconds: Option<f64>,
    pub ready: usize,
    /// The operator's requests from the first create to all Ready (watches and the Lease aside),
    /// by verb and resource.
    pub kube_requests: BTreeMap<String, u64>,
    /// Those requests per new object, Events apart.
    pub kube_requests_per_object: f64,
    /// Event requests (creates and patches) per new object.
    pub event_requests_per_object: f64,
    /// The most requests the operator made in one second.
    pub peak_kube_requests_per_second: f64,
    pub operator_cpu_seconds: f64,
    pub operator_peak_rss_mib: f64,
}

/// `coldstart` or `coldstart-NxM`.
pub fn parse(spec: &str) -> Option<(usize, usize)> {
    match spec.strip_prefix("coldstart")? {
        "" => Some((10_000, 1_000)),
        rest => {
            let (n, m) = rest.strip_prefix('-')?.split_once('x')?;
            Some((n.parse().ok()?, m.parse().ok()?))
        }
    }
}

/// The requests that are the operator's: the bench's own creates and the Lease are not.
fn operator_requests(all: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    all.iter()
        .filter(|(k, _)| *k != "create managedsecrets" && !k.starts_with("lease-") && *k != "watch")
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn total(m: &BTreeMap<String, u64>, events: bool) -> u64 {
    m.iter()
        .filter(|(k, _)| k.ends_with(" events") == events)
        .map(|(_, v)| v)
        .sum()
}

pub async fn run(args: &RunArgs, n: usize, m: usize) -> Result<ColdStartResult> {
    eprintln!("== coldstart {n}x{m} ({})", crate::ground::operator_label());
    let g = Ground::start(args).await?;
    for i in 0..NAMESPACES {
        g.namespace(&format!("cold-{i}"), json!({"team": "cold"}))
            .await?;
    }
    g.aws_secrets("cold/s", m).await?;
    tenants::policy(
        &g,
        json!([{"namespaceSelector": {"matchLabels": {"team": "cold"}}, "secrets": ["cold/*"]}]),
    )
    .await?;
    let op = g.start_as_shipped(args)?;
    g.wait_operator_ready(&op).await?;
    let (ready, readiness) = tenants::watch_readiness(&g.client);
    // The readiness watch's list is the bench's: done before the count starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counters = format!("{}/__admin/counters", g.emu_url);
    admin(&g.http, &counters, reqwest::Method::DELETE).await?;
    let cpu_before = proc_usage(op.pid).0;
    let started = Instant::now();
    let creating = {
        let client = g.client.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..n)
                .map(|i| {
                    let api: Api<ManagedSecret> =
                        Api::namespaced(client.clone(), &format!("cold-{}", i % NAMESPACES));
                    async move {
                        let ms: ManagedSecret = serde_json::from_value(json!({"apiVersion": "managedsecrets.io/v1alpha1",
                            "kind": "ManagedSecret", "metadata": {"name": format!("ms-{i}")},
                            "spec": {"secretId": format!("cold/s{}", i % m), "refreshInterval": "1h", "data": {"allKeys": true}}}))?;
                        api.create(&PostParams::default(), &ms).await?;
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(32)
                .try_collect::<Vec<_>>()
                .await?;
            anyhow::Ok(started.elapsed().as_secs_f64())
        })
    };
    let mut peak = 0.0f64;
    let mut last = (Instant::now(), 0u64);
    let mut all_ready = None;
    while started.elapsed() < Duration::from_secs(args.ready_timeout) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = operator_requests(&kube_counters(&g.http, &g.emu_url).await?);
        let sum: u64 = now.values().sum();
        let rate = (sum.saturating_sub(last.1)) as f64 / last.0.elapsed().as_secs_f64();
        peak = peak.max(rate);
        last = (Instant::now(), sum);
        if tenants::count_ready(&ready) >= n {
            all_ready = Some(started.elapsed().as_secs_f64());
            break;
        }
    }
    let create_seconds = creating.await.context("creating")??;
    let requests = operator_requests(&kube_counters(&g.http, &g.emu_url).await?);
    let done = tenants::count_ready(&ready);
    readiness.abort();
    let (cpu, rss, _) = proc_usage(op.pid);
    eprintln!("   ready {done}/{n} after {all_ready:?} s; requests {requests:?}; peak {peak:.0}/s");
    Ok(ColdStartResult {
        operator: crate::ground::operator_label(),
        n,
        m,
        create_seconds,
        all_ready_seconds: all_ready,
        ready: done,
        kube_requests_per_object: total(&requests, false) as f64 / n as f64,
        event_requests_per_object: total(&requests, true) as f64 / n as f64,
        kube_requests: requests,
        peak_kube_requests_per_second: peak,
        operator_cpu_seconds: cpu - cpu_before,
        operator_peak_rss_mib: rss as f64 / (1024.0 * 1024.0),
    })
}

/// The cold start results as Markdown, one row per run size.
pub fn markdown(results: &[ColdStartResult]) -> String {
    let Some(first) = results.first() else {
        return String::new();
    };
    let mut s = format!(
        "\n### Cold start: new ManagedSecrets against a running operator\n\nOperator {}.\n\n| N x M | created in (s) | all Ready after (s) | Kubernetes requests / object (Events apart) | Event requests / object | peak Kubernetes requests / s | requests by verb | operator CPU (s) | peak RSS (MiB) |\n|---|---|---|---|---|---|---|---|---|\n",
        first.operator
    );
    for r in results {
        let verbs: Vec<String> = r
            .kube_requests
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        s += &format!(
            "| {} x {} | {:.1} | {} | {:.2} | {:.2} | {:.0} | {} | {:.1} | {:.0} |\n",
            r.n,
            r.m,
            r.create_seconds,
            r.all_ready_seconds
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| format!("not all ({}/{})", r.ready, r.n)),
            r.kube_requests_per_object,
            r.event_requests_per_object,
            r.peak_kube_requests_per_second,
            verbs.join(", "),
            r.operator_cpu_seconds,
            r.operator_peak_rss_mib
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names() {
        assert_eq!(parse("coldstart"), Some((10_000, 1_000)));
        assert_eq!(parse("coldstart-1000x100"), Some((1_000, 100)));
        assert_eq!(parse("coldstart-1000"), None);
        assert_eq!(parse("noisy"), None);
    }

    #[test]
    fn the_operators_requests_leave_out_the_bench_and_the_lease() {
        let all: BTreeMap<String, u64> = [
            ("create managedsecrets", 10),
            ("lease-patch", 3),
            ("watch", 5),
            ("patch secrets", 10),
            ("create events", 4),
            ("patch managedsecrets/status", 10),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let ours = operator_requests(&all);
        assert_eq!(total(&ours, false), 20);
        assert_eq!(total(&ours, true), 4);
    }
}
