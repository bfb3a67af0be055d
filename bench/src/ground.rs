//! What every scenario stands on: the Kubernetes API emulator and moto started fresh, the CRDs
//! installed, clients for both, the operator under test started, and a Lambda-style rotation.

use crate::{first_line_url, free_port, Group, Proc, RunArgs};
use anyhow::{Context as _, Result};
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Ground {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub emu_url: String,
    pub aws_url: String,
    pub client: Client,
    pub sdk: aws_config::SdkConfig,
    pub sm: aws_sdk_secretsmanager::Client,
    pub http: reqwest::Client,
    _emu: Proc,
    _moto: Proc,
}

/// The operator under test: its pid (for /proc), its metrics URL, and the process group that
/// dies with the bench.
pub struct Operator {
    pub pid: u32,
    pub metrics_url: String,
    _group: Group,
}

/// How the operator runs where a scenario says "as shipped".
pub const AS_SHIPPED: &str = "as shipped: the chart's default values (its Deployment's env, rendered by helm template), access policies enforced, a SecretAccessPolicy in place";

/// What the operator of a run is: as shipped, unless `BENCH_CHART_SET` (a `helm --set` list, e.g.
/// `accessPolicy.enforce=false`) tunes the chart's values, which every result then says.
pub fn operator_label() -> String {
    match chart_set() {
        Some(set) => format!(
            "TUNED, not as shipped: the chart's values with --set {set} (its Deployment's env, rendered by helm template), a SecretAccessPolicy in place"
        ),
        None => AS_SHIPPED.to_string(),
    }
}

fn chart_set() -> Option<String> {
    std::env::var("BENCH_CHART_SET")
        .ok()
        .filter(|s| !s.is_empty())
}

/// The chart's Deployment env as `helm template` renders it with default values: the literal
/// values (those taken from the pod, and the metrics address, which the bench picks, aside).
pub fn chart_env(namespace: &str) -> Result<Vec<(String, String)>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let helm = std::env::var("HELM").unwrap_or_else(|_| format!("{root}/.tools/bin/helm"));
    let out = Command::new(&helm)
        .args([
            "template",
            "bench",
            &format!("{root}/charts/managed-secrets"),
        ])
        .args([
            "--namespace",
            namespace,
            "--show-only",
            "templates/deployment.yaml",
        ])
        .args(
            chart_set()
                .map(|s| vec!["--set".to_string(), s])
                .unwrap_or_default(),
        )
        .output()
        .with_context(|| format!("{helm} (make tools installs it)"))?;
    anyhow::ensure!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = String::from_utf8(out.stdout)?;
    let d: serde_json::Value = docs
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<serde_json::Value>(doc).ok())
        .find(|d| d["kind"] == "Deployment")
        .context("the chart renders no Deployment")?;
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .context("the chart's Deployment has no env")?;
    Ok(env
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .filter(|(k, _)| k != "MANAGED_SECRETS_METRICS_ADDR")
        .collect())
}

impl Ground {
    pub async fn start(args: &RunArgs) -> Result<Ground> {
        let dir = std::env::temp_dir().join(format!("ms-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = dir.join("kubeconfig");
        let mut emu = Command::new(args.bin_dir.join("kube-emulator"))
            .args(["--write-kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("kube-emulator (build it in release first)")?;
        let emu_url = first_line_url(&mut emu)?;
        let emu = Proc(emu);
        let mut moto = Command::new(&args.python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/aws/moto_server.py"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("moto")?;
        let aws_url = first_line_url(&mut moto)?;
        let moto = Proc(moto);
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let client = Client::try_from(cfg)?;
        install_crds(&client).await?;
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&aws_url)
            .credentials_provider(
                aws_sdk_secretsmanager::config::SharedCredentialsProvider::new(
                    aws_sdk_secretsmanager::config::Credentials::new(
                        "bench", "bench", None, None, "bench",
                    ),
                ),
            )
            .build();
        let sm = aws_sdk_secretsmanager::Client::new(&sdk);
        Ok(Ground {
            dir,
            kubeconfig,
            emu_url,
            aws_url,
            client,
            sdk,
            sm,
            http: reqwest::Client::new(),
            _emu: emu,
            _moto: moto,
        })
    }

    pub async fn namespace(&self, name: &str, labels: serde_json::Value) -> Result<()> {
        Api::<Namespace>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?,
            )
            .await?;
        Ok(())
    }

    /// Creates AWS secrets `<prefix><j>` for j in 0..m, each `{"username", "password"}`.
    pub async fn aws_secrets(&self, prefix: &str, m: usize) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(0..m)
            .map(|j| {
                let sm = self.sm.clone();
                let name = format!("{prefix}{j}");
                async move {
                    sm.create_secret()
                        .name(name)
                        .secret_string(
                            json!({"username": "app", "password": format!("p-{j}-0")}).to_string(),
                        )
                        .send()
                        .await
                        .map_err(|e| anyhow::anyhow!("CreateSecret: {}", DisplayErrorContext(&e)))
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Starts `program` (the operator, or the naive baseline) with the emulators' settings,
    /// `BENCH_WRAPPER` (e.g. heaptrack) around the operator when set.
    pub fn start_operator(
        &self,
        program: &std::path::Path,
        wrap: bool,
        args: &[String],
        log: &str,
    ) -> Result<Operator> {
        self.start_program(program, wrap, args, &[], log)
    }

    /// The operator (wrapped as `start_operator` does) with `env` set.
    pub fn start_operator_env(
        &self,
        program: &std::path::Path,
        args: &[String],
        env: &[(String, String)],
        log: &str,
    ) -> Result<Operator> {
        self.start_program(program, true, args, env, log)
    }

    fn start_program(
        &self,
        program: &std::path::Path,
        wrap: bool,
        args: &[String],
        env: &[(String, String)],
        log: &str,
    ) -> Result<Operator> {
        let port = free_port();
        let mut cmd = match std::env::var("BENCH_WRAPPER") {
            Ok(w) if wrap && !w.is_empty() => {
                let mut c = Command::new(w);
                c.arg(program);
                c
            }
            _ => Command::new(program),
        };
        cmd.args(args);
        if wrap {
            cmd.args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
        } else {
            cmd.args(["--metrics-port", &port.to_string()]);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        if env.iter().any(|(k, _)| k == "MANAGED_SECRETS_WEBHOOK_ADDR") {
            // The webhook serves as shipped, on a port of its own (operators may run side by side).
            cmd.env(
                "MANAGED_SECRETS_WEBHOOK_ADDR",
                format!("127.0.0.1:{}", free_port()),
            );
        }
        let op = cmd
            .env("POD_NAMESPACE", "default")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("AWS_ENDPOINT_URL", &self.aws_url)
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join(log))?)
            // Its own process group, so that a profiler wrapper's child dies with it.
            .process_group(0)
            .spawn()
            .context("operator")?;
        Ok(Operator {
            pid: op.id(),
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            _group: Group(Proc(op)),
        })
    }

    /// The operator with the chart's default values (`chart_env`), in namespace `default`.
    pub fn start_as_shipped(&self, args: &RunArgs) -> Result<Operator> {
        self.start_operator_env(
            &args.bin_dir.join("managed-secrets"),
            &["run".to_string()],
            &chart_env("default")?,
            "op.log",
        )
    }

    /// Waits until the operator says it is ready (`/readyz`: caches listed, lead taken).
    pub async fn wait_operator_ready(&self, op: &Operator) -> Result<()> {
        let url = op.metrics_url.replace("/metrics", "/readyz");
        for _ in 0..600 {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the operator was not ready within a minute")
    }

    /// Rotates `name` as a rotation Lambda does (AWSPENDING, then AWSCURRENT moved to it) to the
    /// value `{"username": "app", "password": <password>}`; returns the new version id.
    pub async fn rotate(&self, name: &str, password: &str) -> Result<String> {
        let token = rotation_token();
        self.rotate_with(name, password, &token).await?;
        Ok(token)
    }

    /// [`Ground::rotate`] with the new version's id chosen by the caller (`rotation_token`).
    pub async fn rotate_with(&self, name: &str, password: &str, token: &str) -> Result<()> {
        self.sm
            .put_secret_value()
            .secret_id(name)
            .secret_string(json!({"username": "app", "password": password}).to_string())
            .client_request_token(token)
            .version_stages("AWSPENDING")
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("PutSecretValue: {}", DisplayErrorContext(&e)))?;
        let cur = self
            .sm
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("DescribeSecret: {}", DisplayErrorContext(&e)))?;
        let current = cur
            .version_ids_to_stages()
            .and_then(|m| {
                m.iter()
                    .find(|(_, s)| s.iter().any(|x| x == "AWSCURRENT"))
                    .map(|(v, _)| v.clone())
            })
            .unwrap_or_default();
        self.sm
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage("AWSCURRENT")
            .move_to_version_id(token)
            .remove_from_version_id(current)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("UpdateSecretVersionStage: {}", DisplayErrorContext(&e))
            })?;
        Ok(())
    }
}

async fn install_crds(client: &Client) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, yaml) in managed_secrets::crd::all_crds() {
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml)?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        for _ in 0..100 {
            let c = api.get(&name).await?;
            let ok = c
                .status
                .and_then(|s| s.conditions)
                .map(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
                .unwrap_or(false);
            if ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// A new version's ClientRequestToken: 32 to 64 characters, as a rotation Lambda's is.
pub fn rotation_token() -> String {
    format!("rot-{:032x}", rand::random::<u128>())
}
