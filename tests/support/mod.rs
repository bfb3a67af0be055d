//! The end-to-end runner: a Kubernetes API (the project's emulator, or a real cluster when
//! `MANAGED_SECRETS_E2E_KUBECONFIG` points at one), moto for AWS, the operator under test as a task,
//! and helpers that wait for conditions with deadlines. Everything is torn down on drop, also when
//! a test panics.
#![allow(dead_code)]

pub mod aws;
pub mod rbac;
pub mod workloads;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use managed_secrets::crd::ManagedSecret;
use managed_secrets::{controller, metrics::Metrics, source};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `f` until it returns `Some`, or panics with `what` after the deadline.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

enum ClusterKind {
    Emulator(kube_emulator::Emulator),
    Real,
}

pub struct Cluster {
    kind: ClusterKind,
    /// How to reach the API server (the administrator's credentials).
    config: kube::Config,
    /// The administrator (the test itself).
    pub client: Client,
    /// The operator: the chart's ServiceAccount, with exactly the chart's RBAC.
    pub operator_client: Client,
    operator_config: kube::Config,
    /// Its bearer token and user name.
    pub operator_token: String,
    pub operator_user: String,
    /// The tenant namespace the test works in (the operator watches it).
    pub namespace: String,
    /// The operator's own namespace (`<namespace>-op`).
    pub operator_namespace: String,
    http: reqwest::Client,
    /// Cluster-scoped objects this test made (removed on a real cluster when it ends).
    policies: std::sync::Mutex<Vec<String>>,
    /// Webhook configurations this test made (likewise).
    webhooks: std::sync::Mutex<Vec<String>>,
    /// The chart's cluster-scoped RBAC objects (likewise).
    rbac_objects: Vec<(String, String)>,
    /// The chart's identity objects as applied (the operator's rights).
    pub identity: Vec<Value>,
    /// Whether the operator's requests are kept for the RBAC table check (not when a test takes
    /// permissions away on purpose).
    keep_audit: std::sync::atomic::AtomicBool,
    /// Further installations of the operator a test made (`another_installation`): their
    /// namespaces, users and cluster-scoped RBAC objects.
    others: std::sync::Mutex<Vec<(Installation, ClusterScoped)>>,
}

/// Cluster-scoped objects a test made, as (kind, name).
type ClusterScoped = Vec<(String, String)>;

/// One installation of the operator: the chart's ServiceAccount and RBAC in its own namespace,
/// which also holds its hash key and its Lease.
#[derive(Clone)]
pub struct Installation {
    pub client: Client,
    /// The client's configuration (the operator builds its own, paced, client from it).
    pub config: kube::Config,
    pub namespace: String,
    pub user: String,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid_like()[..8])
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..16)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[r.random_range(0..36)]))
        .collect()
}

impl Cluster {
    /// A cluster with the operator's identity as the chart installs it by default.
    pub async fn start() -> Cluster {
        Self::start_with_chart(|_| vec![]).await
    }

    /// A cluster with the operator's identity rendered from the chart with `--set` values (given
    /// the test namespace, e.g. for `watchNamespaces`).
    pub async fn start_with_chart(values: impl FnOnce(&str) -> Vec<String>) -> Cluster {
        managed_secrets::install_crypto_provider();
        let (kind, cfg) = match std::env::var("MANAGED_SECRETS_E2E_KUBECONFIG") {
            Ok(path) if !path.is_empty() => {
                let kc = kube::config::Kubeconfig::read_from(&path)
                    .expect("reading MANAGED_SECRETS_E2E_KUBECONFIG");
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .expect("kubeconfig");
                (ClusterKind::Real, cfg)
            }
            _ => {
                let emu = kube_emulator::Emulator::start(kube_emulator::Options::default())
                    .await
                    .expect("emulator");
                let mut cfg = kube::Config::new(emu.url().parse().unwrap());
                cfg.auth_info.token = Some(kube_emulator::auth::ADMIN_TOKEN.to_string().into());
                (ClusterKind::Emulator(emu), cfg)
            }
        };
        let client = Client::try_from(cfg.clone()).expect("client");
        let namespace = unique("e2e");
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await
        .expect("namespace");
        // The operator's own namespace, apart from the tenant's as in a real install: the chart's
        // release namespace (ServiceAccount, hash key, Lease).
        let operator_namespace = format!("{namespace}-op");
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": operator_namespace}})).unwrap(),
        )
        .await
        .expect("operator namespace");
        // The operator's identity: the chart's ServiceAccount and RBAC, and a token for it.
        let mut set = vec![format!("leaderElection.leaseName={}", rbac::LEASE)];
        set.extend(values(&namespace));
        let identity = rbac::identity_objects(&rbac::render(&operator_namespace, &set));
        let rbac_objects = rbac::install(&client, &identity).await;
        let operator_token = rbac::token(&client, &operator_namespace, rbac::RELEASE).await;
        let mut op_cfg = cfg.clone();
        op_cfg.auth_info = kube::config::AuthInfo {
            token: Some(operator_token.clone().into()),
            ..Default::default()
        };
        let operator_client = Client::try_from(op_cfg.clone()).expect("operator client");
        let c = Cluster {
            kind,
            config: cfg,
            client,
            operator_client,
            operator_config: op_cfg,
            operator_user: format!(
                "system:serviceaccount:{operator_namespace}:{}",
                rbac::RELEASE
            ),
            operator_token,
            namespace,
            operator_namespace,
            http: reqwest::Client::new(),
            policies: std::sync::Mutex::new(vec![]),
            webhooks: std::sync::Mutex::new(vec![]),
            rbac_objects,
            identity,
            keep_audit: std::sync::atomic::AtomicBool::new(true),
            others: Default::default(),
        };
        c.install_crd().await;
        c
    }

    fn client_config(&self) -> kube::Config {
        self.config.clone()
    }

    /// The installation every test has (`<namespace>-op`).
    pub fn installation(&self) -> Installation {
        Installation {
            client: self.operator_client.clone(),
            config: self.operator_config.clone(),
            namespace: self.operator_namespace.clone(),
            user: self.operator_user.clone(),
        }
    }

    /// A second installation of the chart, in a namespace of its own (`<namespace>-op2`), also
    /// watching the whole cluster: as a second release during a migration would.
    pub async fn another_installation(&self) -> Installation {
        let ns = format!("{}-op2", self.namespace);
        Api::<Namespace>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .expect("second operator namespace");
        let set = vec![format!("leaderElection.leaseName={}", rbac::LEASE)];
        let identity = rbac::identity_objects(&rbac::render(&ns, &set));
        let objects = rbac::install(&self.client, &identity).await;
        let token = rbac::token(&self.client, &ns, rbac::RELEASE).await;
        let mut cfg = self.client_config();
        cfg.auth_info = kube::config::AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        let inst = Installation {
            client: Client::try_from(cfg.clone()).expect("second operator client"),
            config: cfg,
            user: format!("system:serviceaccount:{ns}:{}", rbac::RELEASE),
            namespace: ns,
        };
        self.others.lock().unwrap().push((inst.clone(), objects));
        inst
    }

    /// Waits until a CRD is Established.
    pub async fn wait_crd_established(&self, name: &str) {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        wait_for(&format!("CRD {name} Established"), DEADLINE, || async {
            let c = api.get(name).await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }

    /// The ManagedSecret's last sync attempt time.
    pub async fn last_attempt(&self, name: &str) -> Option<String> {
        self.managed()
            .get(name)
            .await
            .ok()?
            .status?
            .last_attempt_time
    }

    /// Waits until the operator has made `n` more attempts for `name`: each seen as AWS calls for
    /// its secret (a refresh that finds nothing new writes nothing) or a new lastAttemptTime (a
    /// new failure is recorded in status; one that repeats the last writes nothing: use
    /// `Operator::wait_failures` for those).
    pub async fn wait_attempts(&self, moto: &aws::Moto, name: &str, n: usize) {
        let id = self.managed().get(name).await.unwrap().spec.secret_id;
        let calls = || async {
            moto.calls_for("DescribeSecret", &id).await
                + moto.calls_for("GetSecretValue", &id).await
        };
        for _ in 0..n {
            let (before_calls, before_attempt) = (calls().await, self.last_attempt(name).await);
            wait_for("another refresh", DEADLINE, || async {
                (calls().await > before_calls || self.last_attempt(name).await != before_attempt)
                    .then_some(())
            })
            .await;
        }
    }

    /// Applies crds/ (the generated CRDs) and waits until they are Established.
    pub async fn install_crd(&self) {
        for (file, _) in managed_secrets::crd::all_crds() {
            let yaml =
                std::fs::read_to_string(format!("{}/crds/{file}", env!("CARGO_MANIFEST_DIR")))
                    .unwrap();
            let crd: Value = serde_yaml::from_str(&yaml).unwrap();
            self.apply_crd(&crd).await;
        }
    }

    /// Writes a kubeconfig for this cluster (the emulator's, or a copy of the real cluster's).
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        match &self.kind {
            ClusterKind::Emulator(emu) => emu.write_kubeconfig(path).expect("kubeconfig"),
            ClusterKind::Real => {
                let src = std::env::var("MANAGED_SECRETS_E2E_KUBECONFIG")
                    .expect("real cluster kubeconfig");
                std::fs::copy(src, path).expect("copy kubeconfig");
            }
        }
    }

    /// A kubeconfig for the operator: this cluster, the chart ServiceAccount's token.
    pub fn write_operator_kubeconfig(&self, path: &std::path::Path) {
        self.write_kubeconfig(path);
        let mut kc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for u in kc["users"].as_sequence_mut().into_iter().flatten() {
            let mut user = serde_yaml::Mapping::new();
            user.insert("token".into(), self.operator_token.clone().into());
            u["user"] = serde_yaml::Value::Mapping(user);
        }
        std::fs::write(path, serde_yaml::to_string(&kc).unwrap()).unwrap();
    }

    /// Takes away what the chart's ClusterRole grants on `resource` (core group), as a cluster
    /// administrator who edited the chart's RBAC would; the rest of the chart's rights stay.
    pub async fn revoke(&self, resource: &str) {
        use k8s_openapi::api::rbac::v1::ClusterRole;
        self.keep_audit
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let mut role = self
            .identity
            .iter()
            .find(|o| o["kind"] == "ClusterRole")
            .cloned()
            .expect("the chart's ClusterRole");
        let rules: Vec<Value> = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !(r["apiGroups"] == json!([""]) && r["resources"] == json!([resource])))
            .cloned()
            .collect();
        role["rules"] = json!(rules);
        let name = role["metadata"]["name"].as_str().unwrap().to_string();
        Api::<ClusterRole>::all(self.client.clone())
            .patch(
                &name,
                &PatchParams::apply("e2e-tests").force(),
                &Patch::Apply(&role),
            )
            .await
            .expect("ClusterRole without the resource");
    }

    pub fn is_emulator(&self) -> bool {
        matches!(self.kind, ClusterKind::Emulator(_))
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    pub fn managed(&self) -> Api<ManagedSecret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates a ManagedSecret from a JSON spec.
    pub async fn create_ms(&self, name: &str, spec: Value) -> ManagedSecret {
        let ms: ManagedSecret = serde_json::from_value(json!({"apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret", "metadata": {"name": name}, "spec": spec})).unwrap();
        self.managed()
            .create(&PostParams::default(), &ms)
            .await
            .expect("create ManagedSecret")
    }

    /// Applies a SecretAccessPolicy named `<namespace>-<suffix>` (cluster-scoped: the test's
    /// namespace in its name keeps parallel tests on a real cluster apart); returns its name.
    pub async fn apply_policy(&self, suffix: &str, spec: Value) -> String {
        use managed_secrets::crd::SecretAccessPolicy;
        let name = format!("{}-{suffix}", self.namespace);
        let api: Api<SecretAccessPolicy> = Api::all(self.client.clone());
        // Labelled with the test namespace: the test's own webhook judges only its policies.
        let body = json!({"apiVersion": "managedsecrets.io/v1alpha1", "kind": "SecretAccessPolicy", "metadata": {"name": name, "labels": {"e2e-namespace": self.namespace}}, "spec": spec});
        api.patch(
            &name,
            &PatchParams::apply("e2e-tests").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("policy applies");
        let mut p = self.policies.lock().unwrap();
        if !p.contains(&name) {
            p.push(name.clone());
        }
        name
    }

    /// Deletes a SecretAccessPolicy.
    pub async fn delete_policy(&self, name: &str) {
        use managed_secrets::crd::SecretAccessPolicy;
        let api: Api<SecretAccessPolicy> = Api::all(self.client.clone());
        api.delete(name, &Default::default())
            .await
            .expect("policy deleted");
    }

    /// The chart's ValidatingWebhookConfiguration name for this test's installation.
    pub fn webhook_configuration(&self) -> String {
        format!("{}-{}", self.operator_namespace, rbac::RELEASE)
    }

    /// Applies the chart's ValidatingWebhookConfiguration as rendered, except that it calls the
    /// in-process operator at `addr` by `clientConfig.url` (on a real cluster, the test machine's
    /// address the API server can reach: `MANAGED_SECRETS_E2E_WEBHOOK_HOST`), with
    /// `failure_policy`, and judges only this test's namespace (parallel tests on one real
    /// cluster stay apart). The operator publishes its caBundle.
    pub async fn install_webhook(&self, addr: std::net::SocketAddr, failure_policy: &str) {
        let docs = rbac::render(
            &self.operator_namespace,
            &[format!("leaderElection.leaseName={}", rbac::LEASE)],
        );
        let mut vwc = docs
            .into_iter()
            .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
            .expect("the chart renders a ValidatingWebhookConfiguration");
        for w in vwc["webhooks"].as_array_mut().expect("webhooks") {
            let path = w["clientConfig"]["service"]["path"].clone();
            w["clientConfig"] =
                json!({"url": format!("https://{addr}{}", path.as_str().unwrap_or("/"))});
            w["failurePolicy"] = json!(failure_policy);
            let mine = json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": [self.namespace]});
            let (selector, only) = if w["namespaceSelector"].is_object() {
                ("namespaceSelector", mine)
            } else {
                // Policies are cluster-scoped: this test's carry its namespace as a label.
                (
                    "objectSelector",
                    json!({"key": "e2e-namespace", "operator": "In", "values": [self.namespace]}),
                )
            };
            let exprs = w[selector]["matchExpressions"]
                .as_array_mut()
                .expect("matchExpressions");
            exprs.push(only);
        }
        let name = self.webhook_configuration();
        assert_eq!(vwc["metadata"]["name"], name.as_str());
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        api.patch(
            &name,
            &PatchParams::apply("e2e-tests").force(),
            &Patch::Apply(&vwc),
        )
        .await
        .expect("webhook configuration applies");
        let mut w = self.webhooks.lock().unwrap();
        if !w.contains(&name) {
            w.push(name);
        }
    }

    /// Sets the failure policy of every webhook of the installation's configuration.
    pub async fn webhook_failure_policy(&self, failure_policy: &str) {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let name = self.webhook_configuration();
        let mut c = api.get(&name).await.expect("webhook configuration");
        for w in c.webhooks.iter_mut().flatten() {
            w.failure_policy = Some(failure_policy.to_string());
        }
        api.replace(&name, &PostParams::default(), &c)
            .await
            .expect("failure policy set");
    }

    /// Merge-patches the test namespace's labels.
    pub async fn label_namespace(&self, labels: Value) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.patch(
            &self.namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .expect("namespace labels");
    }

    /// A ServiceAccount in the test namespace naming an IAM role (IRSA's annotation).
    pub async fn service_account(&self, name: &str, role_arn: Option<&str>) {
        use k8s_openapi::api::core::v1::ServiceAccount;
        let mut sa = json!({"metadata": {"name": name}});
        if let Some(r) = role_arn {
            sa["metadata"]["annotations"] = json!({"eks.amazonaws.com/role-arn": r});
        }
        Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &serde_json::from_value(sa).unwrap())
            .await
            .expect("service account");
    }

    /// Merge-patches a ManagedSecret (spec or metadata).
    pub async fn patch_ms(&self, name: &str, patch: Value) -> ManagedSecret {
        self.managed()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch ManagedSecret")
    }

    /// Waits until the ManagedSecret is gone (finalized).
    pub async fn wait_ms_gone(&self, name: &str) {
        wait_for(
            &format!("ManagedSecret {name} to be deleted"),
            DEADLINE,
            || async {
                self.managed()
                    .get_opt(name)
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            },
        )
        .await
    }

    /// Waits until the Secret is gone.
    pub async fn wait_secret_gone(&self, name: &str) {
        wait_for(
            &format!("Secret {name} to be deleted"),
            DEADLINE,
            || async {
                self.secrets()
                    .get_opt(name)
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            },
        )
        .await
    }

    /// The resourceVersion of Secret `name` (which must exist).
    pub async fn secret_version(&self, name: &str) -> Option<String> {
        self.secrets()
            .get(name)
            .await
            .unwrap()
            .metadata
            .resource_version
    }

    /// The Secret's data as strings, when it exists.
    pub async fn secret_data(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let s = self.secrets().get_opt(name).await.ok()??;
        Some(
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect(),
        )
    }

    /// Waits until the Secret has `key` = `value`.
    pub async fn wait_secret_value(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> BTreeMap<String, String> {
        wait_for(
            &format!("Secret {name} to hold {key}"),
            DEADLINE,
            || async {
                let d = self.secret_data(name).await?;
                (d.get(key).map(String::as_str) == Some(value)).then_some(d)
            },
        )
        .await
    }

    /// Waits until the ManagedSecret's Ready condition has `status` and `reason`; returns it.
    pub async fn wait_ready(&self, name: &str, status: &str, reason: &str) -> ManagedSecret {
        self.wait_condition(name, "Ready", status, reason).await
    }

    /// Waits until the ManagedSecret has no condition of `type_`; returns it.
    pub async fn wait_no_condition(&self, name: &str, type_: &str) -> ManagedSecret {
        wait_for(
            &format!("{name} without a {type_} condition"),
            DEADLINE,
            || async {
                let ms = self.managed().get(name).await.ok()?;
                let has = ms
                    .status
                    .as_ref()
                    .map(|s| s.conditions.iter().any(|c| c.type_ == type_))
                    .unwrap_or(false);
                (!has && ms.status.is_some()).then_some(ms)
            },
        )
        .await
    }

    /// Waits until the ManagedSecret's condition `type_` has `status` and `reason`; returns it.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> ManagedSecret {
        let mut last = String::new();
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(ms) = self.managed().get(name).await {
                if let Some(c) = ms
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
                {
                    if c.status == status && c.reason == reason {
                        return ms;
                    }
                    last = format!("{}/{}: {}", c.status, c.reason, c.message);
                }
            }
            assert!(
                tokio::time::Instant::now() < end,
                "ManagedSecret {name} never had {type_}={status} ({reason}); last: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Events (events.k8s.io) about an object of the test namespace.
    async fn events_about(&self, name: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let list = api
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        list.into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }

    /// Events about an object (reason, note).
    pub async fn events_for(&self, name: &str) -> Vec<(String, String)> {
        self.events_about(name)
            .await
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// Events about an object: (reason, occurrences), a repeat folded into its Event's series.
    pub async fn event_counts(&self, name: &str) -> Vec<(String, i32)> {
        self.events_about(name)
            .await
            .into_iter()
            .map(|e| {
                let n = e.series.map(|s| s.count).unwrap_or(1);
                (e.reason.unwrap_or_default(), n)
            })
            .collect()
    }

    /// Request counts by verb for a resource in the test namespace (emulator only; `None` on a real cluster).
    pub async fn count(&self, verb: &str, resource: &str) -> Option<u64> {
        let ClusterKind::Emulator(emu) = &self.kind else {
            return None;
        };
        let v: Value = self
            .http
            .get(format!("{}/__admin/counters", emu.url()))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(
            v["counters"]
                .as_array()?
                .iter()
                .filter(|c| {
                    c["verb"] == verb
                        && c["resource"] == resource
                        && c["namespace"] == self.namespace.as_str()
                })
                .map(|c| c["count"].as_u64().unwrap_or(0))
                .sum(),
        )
    }

    /// Delays the next `count` requests matching verb/resource in the test namespace by `ms`
    /// (emulator only).
    pub async fn kube_latency(&self, verb: &str, resource: &str, ms: u64, count: u64) -> bool {
        self.latency(verb, resource, ms, count, Some(&self.namespace))
            .await
    }

    /// The same for cluster-scoped requests (emulator only).
    pub async fn kube_latency_cluster(
        &self,
        verb: &str,
        resource: &str,
        ms: u64,
        count: u64,
    ) -> bool {
        self.latency(verb, resource, ms, count, None).await
    }

    async fn latency(
        &self,
        verb: &str,
        resource: &str,
        ms: u64,
        count: u64,
        namespace: Option<&str>,
    ) -> bool {
        self.admin_post(
            "faults",
            json!({"verb": verb, "resource": resource, "latency_ms": ms, "count": count, "namespace": namespace}),
        )
        .await
    }

    /// Ends every open watch (emulator only).
    pub async fn close_watches(&self) -> bool {
        self.admin_post("watches/close", json!({})).await
    }

    /// Ends every open watch and forgets the event history, so re-watches get 410 Gone (emulator only).
    pub async fn expire_history(&self) -> bool {
        self.admin_post("history/expire", json!({})).await
    }

    /// Clears pending faults (emulator only).
    pub async fn clear_faults(&self) -> bool {
        let ClusterKind::Emulator(emu) = &self.kind else {
            return false;
        };
        self.http
            .delete(format!("{}/__admin/faults", emu.url()))
            .send()
            .await
            .is_ok()
    }

    async fn admin_post(&self, what: &str, body: Value) -> bool {
        let ClusterKind::Emulator(emu) = &self.kind else {
            return false;
        };
        self.http
            .post(format!("{}/__admin/{what}", emu.url()))
            .json(&body)
            .send()
            .await
            .is_ok()
    }

    /// Applies a CRD given as a value and waits until it is Established.
    pub async fn apply_crd(&self, crd: &Value) {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crd: CustomResourceDefinition = serde_json::from_value(crd.clone()).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        api.patch(
            &name,
            &PatchParams::apply("e2e-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("CRD applies");
        self.wait_crd_established(&name).await;
    }

    /// Makes the next `count` Kubernetes requests matching verb/resource fail (emulator only).
    pub async fn kube_fault(&self, verb: &str, resource: &str, code: u16, count: u64) -> bool {
        let ClusterKind::Emulator(emu) = &self.kind else {
            return false;
        };
        self.http
            .post(format!("{}/__admin/faults", emu.url()))
            .json(&json!({"verb": verb, "resource": resource, "code": code, "count": count, "namespace": self.namespace}))
            .send()
            .await
            .is_ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let ClusterKind::Emulator(emu) = &self.kind {
            if self.keep_audit.load(std::sync::atomic::Ordering::SeqCst) {
                let audit = emu.audit();
                rbac::keep_audit(
                    &self.operator_user,
                    &audit,
                    &self.namespace,
                    &self.operator_namespace,
                );
                for (o, _) in self.others.lock().unwrap().iter() {
                    rbac::keep_audit(&o.user, &audit, &self.namespace, &o.namespace);
                }
            }
        }
        if let ClusterKind::Real = self.kind {
            // Best effort: remove the test namespace on the real cluster.
            let client = self.client.clone();
            let mut nss = vec![self.namespace.clone(), self.operator_namespace.clone()];
            let policies = std::mem::take(&mut *self.policies.lock().unwrap());
            let webhooks = std::mem::take(&mut *self.webhooks.lock().unwrap());
            let mut rbac_objects = std::mem::take(&mut self.rbac_objects);
            for (o, objects) in std::mem::take(&mut *self.others.lock().unwrap()) {
                nss.push(o.namespace);
                rbac_objects.extend(objects);
            }
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async move {
                        use managed_secrets::crd::SecretAccessPolicy;
                        let sap: Api<SecretAccessPolicy> = Api::all(client.clone());
                        for p in policies {
                            let _ = sap.delete(&p, &Default::default()).await;
                        }
                        let vwc: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
                        for w in webhooks {
                            let _ = vwc.delete(&w, &Default::default()).await;
                        }
                        rbac::uninstall(&client, &rbac_objects).await;
                        let api: Api<Namespace> = Api::all(client);
                        for ns in nss {
                            let _ = api.delete(&ns, &Default::default()).await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// The operator under test, running as a task against the cluster and moto; restartable.
pub struct Operator {
    task: Option<tokio::task::JoinHandle<()>>,
    /// The installation's Lease holder, and what stops it (released on a graceful stop).
    lease: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
    rbac_check: Option<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<managed_secrets::health::Health>,
    /// Where its admission webhook listens (`start_admitting`).
    pub webhook: Option<std::net::SocketAddr>,
    webhook_task: Option<tokio::task::JoinHandle<()>>,
}

/// The webhook's certificate Secret in the operator's namespace (the chart's name).
pub const WEBHOOK_CERT_SECRET: &str = "managed-secrets-webhook-cert";

impl Operator {
    /// The operator with access policies off (single-tenant), as most tests want it.
    pub async fn start(cluster: &Cluster, aws: &aws::Moto) -> Operator {
        Self::start_with(cluster, aws, |_| {}).await
    }

    /// The operator with access policies enforced.
    pub async fn start_enforcing(cluster: &Cluster, aws: &aws::Moto) -> Operator {
        Self::start_with(cluster, aws, |s| {
            s.access_policy = controller::AccessPolicy::Enforce
        })
        .await
    }

    /// The operator under test, with settings adjusted by `tune`.
    pub async fn start_with(
        cluster: &Cluster,
        aws: &aws::Moto,
        tune: impl FnOnce(&mut controller::Settings),
    ) -> Operator {
        Self::start_tuned(cluster, aws, tune, Default::default()).await
    }

    /// The operator under test, with settings and source cache limits of the test's choosing.
    pub async fn start_tuned(
        cluster: &Cluster,
        aws: &aws::Moto,
        tune: impl FnOnce(&mut controller::Settings),
        limits: source::cache::Limits,
    ) -> Operator {
        Self::start_installed(cluster, &cluster.installation(), aws, tune, limits, None).await
    }

    /// The operator with access policies enforced and its admission webhook served on a local
    /// port (certificate for 127.0.0.1, kept in the chart's Secret, caBundle kept in the chart's
    /// configuration), with these certificate lifetimes.
    pub async fn start_admitting(
        cluster: &Cluster,
        aws: &aws::Moto,
        lifetimes: managed_secrets::admission::certs::Lifetimes,
    ) -> Operator {
        Self::start_installed(
            cluster,
            &cluster.installation(),
            aws,
            |s| s.access_policy = controller::AccessPolicy::Enforce,
            Default::default(),
            Some((lifetimes, false)),
        )
        .await
    }

    /// As `start_admitting`, for a replica that never leads: it reconciles nothing, keeps its
    /// watch caches warm, and serves the webhook from them.
    pub async fn start_admitting_standby(
        cluster: &Cluster,
        aws: &aws::Moto,
        lifetimes: managed_secrets::admission::certs::Lifetimes,
    ) -> Operator {
        Self::start_installed(
            cluster,
            &cluster.installation(),
            aws,
            |s| {
                s.access_policy = controller::AccessPolicy::Enforce;
                s.leadership = managed_secrets::leader::Leadership::new();
            },
            Default::default(),
            Some((lifetimes, true)),
        )
        .await
    }

    /// Stops the webhook alone (its port refuses connections); the controller runs on.
    pub fn stop_webhook(&mut self) {
        if let Some(t) = self.webhook_task.take() {
            t.abort();
        }
    }

    /// The operator of another installation (`Cluster::another_installation`), with access
    /// policies off.
    pub async fn start_as(cluster: &Cluster, inst: &Installation, aws: &aws::Moto) -> Operator {
        Self::start_installed(cluster, inst, aws, |_| {}, Default::default(), None).await
    }

    /// The operator as `inst` installed it: its identity, hash key and Lease in its namespace.
    async fn start_installed(
        cluster: &Cluster,
        inst: &Installation,
        aws: &aws::Moto,
        tune: impl FnOnce(&mut controller::Settings),
        limits: source::cache::Limits,
        webhook: Option<(managed_secrets::admission::certs::Lifetimes, bool)>,
    ) -> Operator {
        // E2E_LOG=managed_secrets=debug shows the operator's logs in test output.
        if std::env::var("E2E_LOG").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_env("E2E_LOG"))
                .with_test_writer()
                .try_init();
        }
        let metrics = Arc::new(Metrics::default());
        let tokens: Arc<dyn source::identity::TokenIssuer> =
            Arc::new(managed_secrets::k8s::tokens::KubeTokens {
                client: inst.client.clone(),
            });
        let backend = source::aws::AwsBackend::new(aws.sdk_config(), metrics.clone())
            .with_tokens(Some(tokens));
        let default_region = backend.default_region();
        let src: source::DynSourceRef = Arc::new(
            source::cache::CachedSource::new(backend)
                .with_limits(limits)
                .with_metrics(metrics.clone()),
        );
        let health = Arc::new(managed_secrets::health::Health::default());
        // The hash key lives in the operator's namespace.
        let key = managed_secrets::k8s::hash_key::load_or_create(
            &inst.client,
            &inst.namespace,
            "managed-secrets-hash-key",
        )
        .await
        .expect("hash key");
        let mut settings = controller::Settings {
            namespaces: vec![cluster.namespace.clone()],
            concurrency: 4,
            // Tests use short refresh intervals; production keeps the 10s minimum.
            min_refresh: Duration::from_secs(1),
            reporter: "managed-secrets".into(),
            rollout_debounce: Duration::from_secs(1),
            rotation: Default::default(),
            access_policy: controller::AccessPolicy::Off,
            default_region,
            hash_key: controller::HashKey(Arc::from(key)),
            leadership: managed_secrets::leader::Leadership::alone(),
            notifications: None,
            installation: managed_secrets::claim::installation(&inst.namespace, rbac::LEASE),
        };
        tune(&mut settings);
        // The start-up RBAC check, as the binary runs it (in-process operators lead alone).
        let checks =
            managed_secrets::permissions::checks(&managed_secrets::permissions::Deployment {
                namespaces: settings.namespaces.clone(),
                access_policies: settings.access_policy == controller::AccessPolicy::Enforce,
                leader_election: false,
                operator_namespace: inst.namespace.clone(),
                hash_key_secret: "managed-secrets-hash-key".into(),
                lease_namespace: inst.namespace.clone(),
                lease_name: rbac::LEASE.into(),
                webhook: webhook.map(|_| managed_secrets::permissions::WebhookNames {
                    secret: WEBHOOK_CERT_SECRET.into(),
                    configuration: format!("{}-{}", inst.namespace, rbac::RELEASE),
                    issues: true,
                }),
            });
        let rbac_check = tokio::spawn(managed_secrets::k8s::access::verify(
            inst.client.clone(),
            checks,
            health.clone(),
            metrics.clone(),
            std::future::pending::<()>(),
        ));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // The installation's Lease, held as the binary holds it without leader election.
        let (lease_tx, lease_rx) = tokio::sync::oneshot::channel::<()>();
        let lease = tokio::spawn(managed_secrets::leader::run(
            inst.client.clone(),
            managed_secrets::leader::Settings {
                enabled: false,
                lease_name: rbac::LEASE.into(),
                lease_namespace: inst.namespace.clone(),
                duration: Duration::from_secs(15),
                grace: Duration::from_secs(5),
                identity: format!("e2e-{}", uuid_like()),
            },
            // A standby's Lease task must not make it lead.
            match webhook {
                Some((_, true)) => managed_secrets::leader::Leadership::new(),
                _ => settings.leadership.clone(),
            },
            metrics.clone(),
            async move {
                let _ = lease_rx.await;
            },
        ));
        // The controller's client as the binary builds it: paced (`Pace`), counted by verb.
        let paced = managed_secrets::k8s::client::from_config(
            inst.config.clone(),
            500,
            1000,
            metrics.clone(),
        )
        .expect("operator client");
        let grants = controller::Grants::for_settings(&settings);
        let (webhook_task, addr) = match webhook {
            None => (None, None),
            Some((lifetimes, _)) => {
                let (t, a) =
                    start_webhook(inst, &settings, &grants, lifetimes, &health, &metrics).await;
                (Some(t), Some(a))
            }
        };
        let task = tokio::spawn(controller::run(
            paced,
            src,
            metrics.clone(),
            health.clone(),
            settings,
            grants,
            async move {
                let _ = rx.await;
            },
        ));
        Operator {
            task: Some(task),
            rbac_check: Some(rbac_check),
            stop: Some(tx),
            lease: Some((lease, lease_tx)),
            metrics,
            health,
            webhook: addr,
            webhook_task,
        }
    }

    /// Attempts that failed with `reason` so far (every attempt counts, also one that wrote
    /// nothing because it failed as the last did).
    pub fn failures(&self, reason: &str) -> u64 {
        self.metrics
            .reconciles
            .failures
            .get_or_create(&managed_secrets::metrics::ReasonLabels {
                reason: reason.into(),
            })
            .get()
    }

    /// Waits until `n` more attempts have failed with `reason`.
    pub async fn wait_failures(&self, reason: &str, n: u64) {
        let start = self.failures(reason);
        wait_for(&format!("{n} more {reason} failures"), DEADLINE, || async {
            (self.failures(reason) >= start + n).then_some(())
        })
        .await;
    }

    /// Stops at once, with no graceful shutdown (as SIGKILL would).
    pub fn kill(&mut self) {
        self.stop.take();
        self.stop_webhook();
        if let Some((t, _)) = self.lease.take() {
            // Not released: it lapses, as a killed process's would.
            t.abort();
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(t) = self.rbac_check.take() {
            t.abort();
        }
    }

    /// The controller task is still running.
    pub fn running(&self) -> bool {
        self.task
            .as_ref()
            .map(|t| !t.is_finished())
            .unwrap_or(false)
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        if let Some((t, tx)) = self.lease.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        if let Some(t) = self.rbac_check.take() {
            t.abort();
        }
        self.stop_webhook();
    }
}

/// The address the API server calls the in-process webhook at: 127.0.0.1 for the emulator; on a
/// real cluster, an address of this machine it can reach (`MANAGED_SECRETS_E2E_WEBHOOK_HOST`).
pub fn webhook_host() -> String {
    std::env::var("MANAGED_SECRETS_E2E_WEBHOOK_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into())
}

/// The operator's admission webhook as the binary starts it, on a local port, as the chart's
/// ServiceAccount.
async fn start_webhook(
    inst: &Installation,
    settings: &controller::Settings,
    grants: &controller::Grants,
    lifetimes: managed_secrets::admission::certs::Lifetimes,
    health: &Arc<managed_secrets::health::Health>,
    metrics: &Arc<Metrics>,
) -> (tokio::task::JoinHandle<()>, std::net::SocketAddr) {
    use managed_secrets::admission;
    let keeper = admission::keeper::Keeper {
        namespace: inst.namespace.clone(),
        secret: WEBHOOK_CERT_SECRET.into(),
        configuration: Some(format!("{}-{}", inst.namespace, rbac::RELEASE)),
        hosts: admission::hosts(
            "managed-secrets-webhook",
            &inst.namespace,
            &[webhook_host()],
        ),
        lifetimes,
        issuer: admission::keeper::Issuer::Operator,
    };
    let client =
        managed_secrets::k8s::client::from_config(inst.config.clone(), 50, 100, metrics.clone())
            .expect("webhook client");
    admission::start(
        admission::Settings {
            addr: std::net::SocketAddr::new(webhook_host().parse().expect("an IP address"), 0),
            keeper,
            min_refresh: settings.min_refresh,
            default_region: settings.default_region.clone(),
        },
        client,
        grants.view(),
        health.clone(),
        metrics.clone(),
        std::future::pending::<()>(),
    )
    .await
    .expect("webhook listens")
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
