//! `make bench`: managed-secrets at fleet scale, measured from the outside.
//!
//! For each scenario (N ManagedSecrets over M AWS secrets in 10 namespaces, a quarter of them with
//! `rollout.auto` and a Deployment that reads their Secret) and each mode (the operator as built,
//! and a naive baseline: one GetSecretValue per ManagedSecret per refresh and a GET/LIST per
//! reconcile, the common design), it starts the Kubernetes API emulator and moto, lets everything
//! sync, rotates 1% of the AWS secrets Lambda-style during a fixed window, and measures: AWS calls
//! by API (moto's own counters), Kubernetes requests by verb (the emulator's counters),
//! create -> Ready for all, rotation -> Secret and rotation -> rollout latency, reconciles, the
//! operator's CPU seconds and peak RSS. Results go to bench/results/*.json, a Markdown table and a
//! PNG chart. Never a test: numbers from this machine, rerunnable by anyone.

mod coldstart;
mod ground;
mod naive;
mod report;
mod tenants;

use anyhow::{bail, Context as _, Result};
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use managed_secrets::crd::ManagedSecret;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "managed-secrets-bench")]
enum Cli {
    /// Run the scenarios and write the results.
    Run(RunArgs),
    /// The naive baseline controller (started by `run` as a process of its own).
    Naive(naive::Args),
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Scenarios as NxM (ManagedSecrets x AWS secrets), the tenants' scenarios `noisy` and
    /// `tenant-secrets` (see `tenants`) and `coldstart[-NxM]` (see `coldstart`), comma-separated.
    #[arg(
        long,
        default_value = "100x10,1000x100,10000x1000,coldstart,noisy,tenant-secrets",
        value_delimiter = ','
    )]
    scenarios: Vec<String>,
    /// Modes to run: built (the operator as built, polling), events (as built, with the SQS event
    /// source fed by every rotation) and naive (the baseline).
    #[arg(long, default_value = "built,events,naive", value_delimiter = ',')]
    modes: Vec<String>,
    /// The measurement window (rotations happen in its first half).
    #[arg(long, default_value = "120")]
    window_seconds: u64,
    /// The steady-state scenarios create their ManagedSecrets at a steady pace over this many
    /// seconds (as a real cluster fills), not all at once.
    #[arg(long, default_value = "120")]
    spread_seconds: u64,
    /// refreshInterval of every ManagedSecret.
    #[arg(long, default_value = "60s")]
    refresh: String,
    /// Where results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Release binaries (managed-secrets, kube-emulator, managed-secrets-bench).
    #[arg(long, env = "BENCH_BIN_DIR")]
    bin_dir: PathBuf,
    /// The Python with moto (the project's venv).
    #[arg(long, env = "MANAGED_SECRETS_PYTHON")]
    python: PathBuf,
    /// Seconds to wait for every ManagedSecret to be Ready.
    #[arg(long, default_value = "600")]
    ready_timeout: u64,
}

/// A child process that dies with the bench.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process that leads its own process group: the whole group dies with the bench (a
/// `BENCH_WRAPPER` such as heaptrack runs the operator as its child).
struct Group(Proc);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0 .0.id())])
            .status();
    }
}

fn first_line_url(child: &mut Child) -> Result<String> {
    let out = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    Ok(line
        .trim()
        .strip_prefix("listening on ")
        .context("unexpected first line")?
        .to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18080)
}

/// CPU seconds (user + system) and peak RSS (bytes) of a process, from /proc.
/// CPU seconds, peak RSS and current RSS (bytes) of a process.
fn proc_usage(pid: u32) -> (f64, u64, u64) {
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) / ticks)
        })
        .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (cpu, kib("VmHWM:"), kib("VmRSS:"))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

#[derive(Serialize, serde::Deserialize, Default, Clone)]
pub struct Result1 {
    pub scenario: String,
    pub mode: String,
    pub n: usize,
    pub m: usize,
    pub refresh_seconds: u64,
    pub window_seconds: u64,
    pub create_to_all_ready_seconds: Option<f64>,
    /// From the last create to all Ready (creation is spread over `spread_seconds`).
    #[serde(default)]
    pub last_create_to_all_ready_seconds: Option<f64>,
    #[serde(default)]
    pub spread_seconds: u64,
    /// How the operator ran (`ground::operator_label`).
    #[serde(default)]
    pub operator: String,
    pub aws_calls: BTreeMap<String, u64>,
    pub aws_calls_per_minute: f64,
    pub kube_requests: BTreeMap<String, u64>,
    pub kube_requests_per_minute: f64,
    pub kube_writes_per_minute: f64,
    /// Leader election (Lease get and renew), apart from the controller's own requests.
    #[serde(default)]
    pub lease_requests_per_minute: f64,
    /// The event source's SQS calls (ReceiveMessage long polls, DeleteMessage), apart from the
    /// Secrets Manager calls above.
    #[serde(default)]
    pub sqs_calls_per_minute: f64,
    pub rotations: usize,
    pub rotation_to_secret_seconds: BTreeMap<String, Option<f64>>,
    pub rotation_to_rollout_seconds: BTreeMap<String, Option<f64>>,
    pub secrets_updated: usize,
    pub secrets_expected: usize,
    pub reconciles_in_window: Option<u64>,
    pub refreshes_due_in_window: u64,
    pub throttling_errors: u64,
    pub operator_cpu_seconds: f64,
    pub operator_peak_rss_mib: f64,
    /// Resident memory at the end of the window (at rest, after the creation burst).
    #[serde(default)]
    pub operator_rss_at_end_mib: f64,
    pub emulator: EmulatorBench,
}

#[derive(Serialize, serde::Deserialize, Default, Clone)]
pub struct EmulatorBench {
    pub objects_stored: usize,
    pub create_writes_per_second: f64,
    pub list_all_managedsecrets_ms: f64,
}

const NAMESPACES: usize = 10;

fn ns_of(i: usize) -> String {
    format!("bench-{}", i % NAMESPACES)
}

/// Watches objects named `<prefix><i>` and records, once per object, the seconds from the rotation
/// of AWS secret `i % m` to the object carrying its new version (as `version_of` reads it).
/// What the window's watchers share: the rotations to look for, and a permit per watcher once it
/// has listed.
#[derive(Clone)]
struct Window {
    m: usize,
    rotated_at: Arc<Mutex<HashMap<usize, (Instant, String)>>>,
    listed: Arc<tokio::sync::Semaphore>,
}

fn watch_arrivals<K>(
    api: Api<K>,
    cfg: watcher::Config,
    prefix: &'static str,
    version_of: fn(&K) -> Option<String>,
    window: Window,
    seen: Arc<Mutex<Vec<f64>>>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let done: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let Window {
        m,
        rotated_at,
        listed,
    } = window;
    tokio::spawn(async move {
        let _ = watcher(api, cfg)
            .inspect_ok(|e| {
                // The first complete initial list: the window may start.
                if matches!(e, watcher::Event::InitDone) {
                    listed.add_permits(1);
                }
            })
            .applied_objects()
            .try_for_each(|o| {
                let idx = o
                    .name_any()
                    .strip_prefix(prefix)
                    .and_then(|x| x.parse::<usize>().ok());
                if let (Some(v), Some(i)) = (version_of(&o), idx) {
                    if let Some((t, want)) = rotated_at.lock().unwrap().get(&(i % m)) {
                        let key = o.name_any() + &o.namespace().unwrap_or_default();
                        if *want == v && done.lock().unwrap().insert(key) {
                            seen.lock().unwrap().push(t.elapsed().as_secs_f64());
                        }
                    }
                }
                async { Ok(()) }
            })
            .await;
    })
}

/// Whether ManagedSecret `i` of a scenario with `m` AWS secrets rolls out a Deployment.
fn rolls_out(i: usize, m: usize) -> bool {
    (i / m.max(1)).is_multiple_of(4)
}

async fn admin(http: &reqwest::Client, url: &str, method: reqwest::Method) -> Result<Value> {
    Ok(http.request(method, url).send().await?.json().await?)
}

async fn kube_counters(http: &reqwest::Client, emu: &str) -> Result<BTreeMap<String, u64>> {
    let v = admin(
        http,
        &format!("{emu}/__admin/counters"),
        reqwest::Method::GET,
    )
    .await?;
    let mut out = BTreeMap::new();
    for c in v["counters"].as_array().into_iter().flatten() {
        // Leader election's Lease renewals are counted apart from the controller's requests.
        let verb = c["verb"].as_str().unwrap_or("");
        let key = match c["resource"].as_str() {
            Some("leases") => format!("lease-{verb}"),
            // Reads and writes are broken down by resource (a resting operator should make no
            // read, and its writes should be the changes').
            Some(r) if verb != "watch" => format!("{verb} {r}"),
            _ => verb.to_string(),
        };
        *out.entry(key).or_default() += c["count"].as_u64().unwrap_or(0);
    }
    Ok(out)
}

async fn operator_metric(http: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

async fn scenario(args: &RunArgs, spec: &str, mode: &str) -> Result<Result1> {
    let (n, m) = spec
        .split_once('x')
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .context("scenario NxM")?;
    eprintln!("== {spec} ({mode})");
    let ground = ground::Ground::start(args).await?;
    let (client, http) = (ground.client.clone(), ground.http.clone());
    let (emu_url, aws_url) = (ground.emu_url.clone(), ground.aws_url.clone());
    for i in 0..NAMESPACES {
        ground
            .namespace(&format!("bench-{i}"), json!({"team": "bench"}))
            .await?;
    }
    tenants::policy(
        &ground,
        json!([{"namespaceSelector": {"matchLabels": {"team": "bench"}}, "secrets": ["bench/*"]}]),
    )
    .await?;
    // Events mode: the queue an EventBridge rule on Secrets Manager's own `Secret Label Updated`
    // feeds (the AWS test ground delivers it when a rotation moves AWSCURRENT).
    let sqs = aws_sdk_sqs::Client::new(&ground.sdk);
    let queue = if mode == "events" {
        let url = sqs
            .create_queue()
            .queue_name("managed-secrets-events")
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("CreateQueue: {}", DisplayErrorContext(&e)))?
            .queue_url
            .context("queue url")?;
        http.post(format!("{aws_url}/__eventbridge"))
            .json(&json!({"queue_url": url}))
            .send()
            .await?
            .error_for_status()?;
        Some(url)
    } else {
        None
    };
    ground.aws_secrets("bench/s", m).await?;
    // A quarter of the ManagedSecrets roll out a Deployment that reads their Secret, spread so
    // that every AWS secret has some (ManagedSecret i reads secret i % m).
    let t = Instant::now();
    let rolling: Vec<usize> = (0..n).filter(|i| rolls_out(*i, m)).collect();
    futures::stream::iter(rolling.iter().copied())
        .map(|i| {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns_of(i));
            async move {
                let d = json!({"metadata": {"name": format!("app-{i}")}, "spec": {"selector": {"matchLabels": {"app": format!("app-{i}")}},
                    "template": {"metadata": {"labels": {"app": format!("app-{i}")}}, "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                        "envFrom": [{"secretRef": {"name": format!("ms-{i}")}}]}]}}}});
                api.create(&PostParams::default(), &serde_json::from_value(d)?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let deployment_secs = t.elapsed().as_secs_f64();

    // The operator under test, as shipped (the chart's default values, policies enforced).
    let op = match mode {
        "built" | "events" => {
            let mut flags = vec!["run".to_string()];
            if let Some(q) = &queue {
                flags.extend(["--events-queue-url".to_string(), q.clone()]);
            }
            ground.start_operator_env(
                &args.bin_dir.join("managed-secrets"),
                &flags,
                &ground::chart_env("default")?,
                "op.log",
            )?
        }
        "naive" => ground.start_operator(
            &args.bin_dir.join("managed-secrets-bench"),
            false,
            &["naive".to_string()],
            "naive.log",
        )?,
        other => bail!("unknown mode {other}"),
    };
    let (pid, metrics_url) = (op.pid, op.metrics_url.clone());

    // Watch readiness (one watch; the bench reads nothing else of the API while measuring).
    let (ready, readiness) = tenants::watch_readiness(&client);

    // Created at a steady pace over `spread_seconds`, as a real cluster fills.
    let created = Instant::now();
    let spread = Duration::from_secs(args.spread_seconds);
    let slot = |i: usize| {
        tokio::time::Instant::from_std(created) + spread.mul_f64(i as f64 / n.max(1) as f64)
    };
    futures::stream::iter(0..n)
        .map(|i| {
            let api: Api<ManagedSecret> = Api::namespaced(client.clone(), &ns_of(i));
            let refresh = args.refresh.clone();
            let at = slot(i);
            async move {
                tokio::time::sleep_until(at).await;
                let mut spec = json!({"secretId": format!("bench/s{}", i % m), "refreshInterval": refresh, "data": {"allKeys": true}});
                if rolls_out(i, m) {
                    spec["rollout"] = json!({"auto": true, "debounce": "1s"});
                }
                let ms: ManagedSecret = serde_json::from_value(json!({"apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret",
                    "metadata": {"name": format!("ms-{i}")}, "spec": spec}))?;
                api.create(&PostParams::default(), &ms).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    let create_secs = created.elapsed().as_secs_f64();
    let last_created = Instant::now();
    let mut all_ready = None;
    while created.elapsed() < Duration::from_secs(args.ready_timeout) {
        let ok = tenants::count_ready(&ready);
        if ok >= n {
            all_ready = Some(created.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ok = tenants::count_ready(&ready);
    eprintln!(
        "   ready: {ok}/{n} after {:?}",
        all_ready.map(Duration::from_secs_f64)
    );
    readiness.abort();
    // Let the first syncs' rollouts and follow-ups settle before the window.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // secret index -> (rotation instant, new version)
    let rotated_at: Arc<Mutex<HashMap<usize, (Instant, String)>>> = Arc::default();
    let secret_seen: Arc<Mutex<Vec<f64>>> = Arc::default();
    let rollout_seen: Arc<Mutex<Vec<f64>>> = Arc::default();
    let listed = Arc::new(tokio::sync::Semaphore::new(0));
    let window = Window {
        m,
        rotated_at: rotated_at.clone(),
        listed: listed.clone(),
    };
    let watch_secrets = watch_arrivals(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels("app.kubernetes.io/managed-by=managed-secrets"),
        "ms-",
        |s: &Secret| {
            s.annotations()
                .get("managedsecrets.io/aws-version-id")
                .cloned()
        },
        window.clone(),
        secret_seen.clone(),
    );
    let watch_rollouts = watch_arrivals(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
        "app-",
        |d: &Deployment| {
            d.spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get("managedsecrets.io/secret-version"))
                .cloned()
        },
        window.clone(),
        rollout_seen.clone(),
    );
    // The watchers' initial lists (paged, 20 pages for 10,000 Secrets) are the bench's, not the
    // operator's: the window starts once both have finished.
    tokio::time::timeout(Duration::from_secs(300), listed.acquire_many(2))
        .await
        .context("the bench's watchers did not list in 5 minutes")??
        .forget();

    // The window: counters from zero, rotations in the first half, watches for their effects.
    admin(
        &http,
        &format!("{aws_url}/__calls"),
        reqwest::Method::DELETE,
    )
    .await?;
    admin(
        &http,
        &format!("{emu_url}/__admin/counters"),
        reqwest::Method::DELETE,
    )
    .await?;
    let reconciles_before =
        operator_metric(&http, &metrics_url, "managed_secrets_reconciles_total").await;
    let throttled_before = operator_metric(
        &http,
        &metrics_url,
        "managed_secrets_failures_total{reason=\"Throttled\"}",
    )
    .await
    .unwrap_or(0.0);
    let window = Duration::from_secs(args.window_seconds);
    let start = Instant::now();
    let rotations = (m / 100).max(1);
    let mut rng_order: Vec<usize> = (0..m).collect();
    {
        use rand::seq::SliceRandom;
        rng_order.shuffle(&mut rand::rng());
    }
    let rotated: Vec<usize> = rng_order.into_iter().take(rotations).collect();
    // Rotations spread over the first half of the window, as a rotation Lambda does them.
    let spacing = window / 2 / rotations as u32;
    for j in &rotated {
        let name = format!("bench/s{j}");
        // Recorded before the rotation: its event may be handled before the call returns.
        let token = ground::rotation_token();
        rotated_at
            .lock()
            .unwrap()
            .insert(*j, (Instant::now(), token.clone()));
        ground
            .rotate_with(&name, &format!("p-{j}-1"), &token)
            .await?;
        tokio::time::sleep(spacing).await;
    }
    let rest = window.saturating_sub(start.elapsed());
    tokio::time::sleep(rest).await;
    let elapsed_min = start.elapsed().as_secs_f64() / 60.0;
    let mut aws: BTreeMap<String, u64> = serde_json::from_value(
        admin(&http, &format!("{aws_url}/__calls"), reqwest::Method::GET).await?,
    )?;
    // The bench's own rotation (and event) calls are not the operator's; its SQS calls are
    // counted apart from Secrets Manager's.
    for api in [
        "PutSecretValue",
        "UpdateSecretVersionStage",
        "SendMessage",
        "CreateQueue",
    ] {
        aws.remove(api);
    }
    let sqs_calls: u64 = ["ReceiveMessage", "DeleteMessage"]
        .iter()
        .filter_map(|a| aws.remove(*a))
        .sum();
    if let Some(d) = aws.get_mut("DescribeSecret") {
        *d = d.saturating_sub(rotations as u64);
    }
    let kube = kube_counters(&http, &emu_url).await?;
    let reconciles_after =
        operator_metric(&http, &metrics_url, "managed_secrets_reconciles_total").await;
    let throttled_after = operator_metric(
        &http,
        &metrics_url,
        "managed_secrets_failures_total{reason=\"Throttled\"}",
    )
    .await
    .unwrap_or(0.0);
    watch_secrets.abort();
    watch_rollouts.abort();
    let (cpu, rss, rss_now) = proc_usage(pid);
    // Emulator micro-benchmark: a full list, and what it stores.
    let t = Instant::now();
    let all_ms = Api::<ManagedSecret>::all(client.clone())
        .list(&Default::default())
        .await?;
    let list_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut stored = all_ms.items.len();
    stored += Api::<Secret>::all(client.clone())
        .list(&Default::default())
        .await?
        .items
        .len();
    stored += Api::<Deployment>::all(client.clone())
        .list(&Default::default())
        .await?
        .items
        .len();

    let mut s_lat = secret_seen.lock().unwrap().clone();
    let mut r_lat = rollout_seen.lock().unwrap().clone();
    let pct = |v: &mut Vec<f64>| -> BTreeMap<String, Option<f64>> {
        [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)]
            .iter()
            .map(|(k, p)| {
                (
                    k.to_string(),
                    Some(percentile(v, *p)).filter(|x| x.is_finite()),
                )
            })
            .collect()
    };
    let total_aws: u64 = aws.values().sum();
    let total_kube: u64 = kube
        .iter()
        .filter(|(v, _)| !v.starts_with("watch") && !v.starts_with("lease-"))
        .map(|(_, c)| c)
        .sum();
    let lease: u64 = kube
        .iter()
        .filter(|(v, _)| v.starts_with("lease-") && v.as_str() != "lease-watch")
        .map(|(_, c)| c)
        .sum();
    let writes: u64 = kube
        .iter()
        .filter(|(v, _)| {
            ["create", "update", "patch", "delete"]
                .iter()
                .any(|w| v.split(' ').next() == Some(*w))
        })
        .map(|(_, c)| c)
        .sum();
    let refresh = managed_secrets::schedule::parse_duration(&args.refresh)?.as_secs();
    Ok(Result1 {
        scenario: spec.to_string(),
        mode: mode.to_string(),
        n,
        m,
        refresh_seconds: refresh,
        window_seconds: args.window_seconds,
        create_to_all_ready_seconds: all_ready,
        last_create_to_all_ready_seconds: all_ready
            .map(|a| (a - last_created.duration_since(created).as_secs_f64()).max(0.0)),
        spread_seconds: args.spread_seconds,
        operator: ground::operator_label(),
        aws_calls_per_minute: total_aws as f64 / elapsed_min,
        aws_calls: aws,
        kube_requests_per_minute: total_kube as f64 / elapsed_min,
        kube_writes_per_minute: writes as f64 / elapsed_min,
        lease_requests_per_minute: lease as f64 / elapsed_min,
        sqs_calls_per_minute: sqs_calls as f64 / elapsed_min,
        kube_requests: kube,
        rotations,
        rotation_to_secret_seconds: pct(&mut s_lat),
        rotation_to_rollout_seconds: pct(&mut r_lat),
        secrets_updated: s_lat.len(),
        secrets_expected: rotated
            .iter()
            .map(|j| (0..n).filter(|i| i % m == *j).count())
            .sum(),
        reconciles_in_window: match (reconciles_before, reconciles_after) {
            (Some(a), Some(b)) => Some((b - a) as u64),
            _ => None,
        },
        refreshes_due_in_window: (n as u64) * args.window_seconds / refresh.max(1),
        throttling_errors: (throttled_after - throttled_before).max(0.0) as u64,
        operator_cpu_seconds: cpu,
        operator_peak_rss_mib: rss as f64 / (1024.0 * 1024.0),
        operator_rss_at_end_mib: rss_now as f64 / (1024.0 * 1024.0),
        emulator: EmulatorBench {
            objects_stored: stored,
            create_writes_per_second: (n + rolling.len()) as f64 / (create_secs + deployment_secs),
            list_all_managedsecrets_ms: list_ms,
        },
    })
}

fn main() -> Result<()> {
    managed_secrets::install_crypto_provider();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli {
        Cli::Naive(a) => rt.block_on(naive::run(a)),
        Cli::Run(args) => rt.block_on(async {
            std::fs::create_dir_all(&args.out)?;
            let mut all = vec![];
            for spec in &args.scenarios {
                // `--scenarios ''` runs nothing and writes the report again.
                if spec.is_empty() {
                    continue;
                }
                // The tenants' and the cold start's scenarios run once, with the operator as shipped.
                let once = match spec.as_str() {
                    "noisy" => Some((
                        "tenants-noisy.json".to_string(),
                        serde_json::to_value(tenants::noisy(&args).await?)?,
                    )),
                    "tenant-secrets" => Some((
                        "tenants-tenant-secrets.json".to_string(),
                        serde_json::to_value(tenants::tenant_secrets(&args).await?)?,
                    )),
                    s => match coldstart::parse(s) {
                        Some((n, m)) => Some((
                            format!("coldstart-{n}x{m}.json"),
                            serde_json::to_value(coldstart::run(&args, n, m).await?)?,
                        )),
                        None => None,
                    },
                };
                if let Some((file, r)) = once {
                    let path = args.out.join(file);
                    std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
                    eprintln!("   wrote {}", path.display());
                    continue;
                }
                for mode in &args.modes {
                    let r = scenario(&args, spec, mode).await?;
                    let path = args.out.join(format!("{spec}-{mode}.json"));
                    std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
                    eprintln!("   wrote {}", path.display());
                    all.push(r);
                }
            }
            // The report covers every result in the directory (a run of one mode adds to the rest).
            let mut everything = vec![];
            for e in std::fs::read_dir(&args.out)? {
                let p = e?.path();
                let tenants = p
                    .file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with("tenants-") || f.starts_with("coldstart-"));
                if p.extension().and_then(|x| x.to_str()) == Some("json") && !tenants {
                    let r: Result1 = serde_json::from_str(&std::fs::read_to_string(&p)?)
                        .with_context(|| format!("reading {}", p.display()))?;
                    everything.push(r);
                }
            }
            everything.sort_by(|a, b| (a.n, &a.mode).cmp(&(b.n, &b.mode)));
            eprintln!(
                "   {} results this run, {} in the report",
                all.len(),
                everything.len()
            );
            let read = |name: &str| -> Option<serde_json::Value> {
                let text = std::fs::read_to_string(args.out.join(name)).ok()?;
                serde_json::from_str(&text).ok()
            };
            let noisy = read("tenants-noisy.json").and_then(|v| serde_json::from_value(v).ok());
            let memory =
                read("tenants-tenant-secrets.json").and_then(|v| serde_json::from_value(v).ok());
            let mut colds: Vec<coldstart::ColdStartResult> = std::fs::read_dir(&args.out)?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("coldstart-"))
                .filter_map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok())
                .collect();
            colds.sort_by_key(|r| r.n);
            let extra =
                tenants::markdown(noisy.as_ref(), memory.as_ref()) + &coldstart::markdown(&colds);
            report::write(&args.out, &everything, &extra)?;
            Ok(())
        }),
    }
}
