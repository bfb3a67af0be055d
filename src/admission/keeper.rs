//! Keeps the webhook's certificate: reads its Secret in the operator's namespace, makes or renews
//! the CA and serving certificate there (`certs::next_step`), keeps the webhook configuration's
//! `caBundle` current, and loads what the Secret holds into the listener. Every replica runs it:
//! writes are guarded by resourceVersion, so replicas that race agree on one Secret, and a replica
//! that starts uses the stored certificate. With `Issuer::External` (cert-manager) it only loads.

use super::certs::{self, Lifetimes, Material, Publication, Step};
use super::tls::Certificate;
use crate::metrics::Metrics;
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Who makes the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// The operator: its own CA, renewed before expiry, `caBundle` kept current.
    Operator,
    /// Someone else writes the Secret and the `caBundle` (cert-manager and its CA injector).
    External,
}

/// The keeper's settings.
#[derive(Debug, Clone)]
pub struct Keeper {
    pub namespace: String,
    pub secret: String,
    /// The ValidatingWebhookConfiguration whose `caBundle` is kept (None: not kept).
    pub configuration: Option<String>,
    pub hosts: BTreeSet<String>,
    pub lifetimes: Lifetimes,
    pub issuer: Issuer,
}

/// After a write, the next look comes this soon (the next step may be due at once).
const AFTER_WRITE: Duration = Duration::from_secs(1);

impl Keeper {
    /// How often the Secret is read: a twentieth of the serving certificate's life, 1 s to 60 s.
    pub fn interval(&self) -> Duration {
        (self.lifetimes.serving / 20).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Runs until `stop`.
    pub async fn run(
        self,
        client: Client,
        cert: Arc<Certificate>,
        metrics: Arc<Metrics>,
        stop: impl Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut failures: u32 = 0;
        let mut seen = None;
        loop {
            let wait = match self.once(&client, &cert, &metrics, &mut seen).await {
                Ok(true) => AFTER_WRITE,
                Ok(false) => {
                    failures = 0;
                    self.interval()
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(secret = %self.secret, error = %e, "webhook: keeping the certificate failed; retrying");
                    (Duration::from_secs(1) * 2u32.saturating_pow(failures.min(6)))
                        .min(self.interval())
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One look: `Ok(true)` when something was written (look again soon). `seen` is since when
    /// this replica has seen the configuration carry which bundle.
    async fn once(
        &self,
        client: &Client,
        cert: &Certificate,
        metrics: &Metrics,
        seen: &mut Option<(String, i64)>,
    ) -> Result<bool, String> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let secret = self.read(&secrets).await?;
        let material = secret.as_ref().map(material_of);
        if self.issuer == Issuer::External {
            return match material {
                Some(Ok(m)) => load(cert, &m, expiry(&m), metrics).map(|_| false),
                _ => Err(format!(
                    "Secret {}/{} holds no tls.crt and tls.key yet",
                    self.namespace, self.secret
                )),
            };
        }
        let parsed = material
            .as_ref()
            .map(|m| m.clone().and_then(|m| certs::parse(&m)));
        let (stored, usable) = match (&material, &parsed) {
            (Some(Ok(m)), Some(Ok(p))) => (Some(m), Some(p)),
            (Some(Ok(m)), _) => (Some(m), None),
            _ => (None, None),
        };
        let now = chrono::Utc::now().timestamp();
        let published = match (&self.configuration, usable.and(stored)) {
            (Some(name), Some(m)) => self.published(client, name, m).await?,
            _ => None,
        };
        let publication = publication(published, stored, now, seen);
        // Serve what is stored once the API servers trust it; at once when nothing is served, or
        // what is served expires before then (a damaged Secret made again late).
        if let (Some(m), Some(p)) = (stored, usable) {
            let served_until = cert.not_after();
            if certs::trusted(publication, now, &self.lifetimes)
                || served_until <= now.saturating_add(self.lifetimes.publish_margin())
            {
                load(cert, m, p.serving.not_after, metrics)?;
            }
        }
        let step = certs::next_step(
            now,
            parsed.as_ref(),
            publication,
            &self.hosts,
            &self.lifetimes,
        );
        match step {
            Step::Rest => Ok(false),
            Step::Publish => {
                // Only the bundle still stored: a replica that read the Secret before another
                // changed it must not publish an older bundle over a newer one.
                let again = self.read(&secrets).await?;
                let version = |s: &Option<Secret>| {
                    s.as_ref().and_then(|s| s.metadata.resource_version.clone())
                };
                if version(&again) == version(&secret) {
                    self.publish(client, stored.ok_or("nothing to publish")?)
                        .await?;
                }
                Ok(true)
            }
            _ => {
                let next = certs::renew(step, now, stored, usable, &self.hosts, &self.lifetimes)?
                    .ok_or("no certificate was made")?;
                self.write(&secrets, secret, &next, step).await?;
                Ok(true)
            }
        }
    }

    async fn read(&self, secrets: &Api<Secret>) -> Result<Option<Secret>, String> {
        secrets
            .get_opt(&self.secret)
            .await
            .map_err(|e| format!("reading Secret {}/{}: {e}", self.namespace, self.secret))
    }

    /// Whether every webhook of the configuration carries the bundle (None: no configuration).
    async fn published(
        &self,
        client: &Client,
        name: &str,
        m: &Material,
    ) -> Result<Option<bool>, String> {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| format!("reading ValidatingWebhookConfiguration {name}: {e}"))?;
        let Some(c) = found else {
            tracing::warn!(configuration = %name, "webhook: the ValidatingWebhookConfiguration does not exist; its caBundle is not kept");
            return Ok(None);
        };
        let want = m.ca_bundle.as_bytes();
        Ok(Some(c.webhooks.iter().flatten().all(|w| {
            w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(want)
        })))
    }

    /// Puts the bundle in every webhook of the configuration (a JSON patch guarded by the
    /// resourceVersion it was read at: the webhooks are addressed by position).
    async fn publish(&self, client: &Client, m: &Material) -> Result<(), String> {
        let Some(name) = &self.configuration else {
            return Ok(());
        };
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let c = api
            .get(name)
            .await
            .map_err(|e| format!("reading ValidatingWebhookConfiguration {name}: {e}"))?;
        let bundle = base64::engine::general_purpose::STANDARD.encode(m.ca_bundle.as_bytes());
        let mut ops = vec![
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": c.metadata.resource_version}),
        ];
        for i in 0..c.webhooks.as_ref().map_or(0, Vec::len) {
            ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}));
        }
        let patch: json_patch::Patch =
            serde_json::from_value(json!(ops)).map_err(|e| e.to_string())?;
        api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map_err(|e| format!("updating the caBundle of {name}: {e}"))?;
        tracing::info!(configuration = %name, "webhook: caBundle published");
        Ok(())
    }

    /// Creates the Secret, or replaces it at the version it was read (another replica that wrote
    /// first wins; this one reads again).
    async fn write(
        &self,
        secrets: &Api<Secret>,
        read: Option<Secret>,
        m: &Material,
        step: Step,
    ) -> Result<(), String> {
        let data: BTreeMap<String, ByteString> = [
            ("ca.crt", &m.ca_bundle),
            ("ca.key", &m.ca_key),
            ("tls.crt", &m.tls_crt),
            ("tls.key", &m.tls_key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
        let result = match read {
            Some(mut s) => {
                s.data = Some(data);
                s.string_data = None;
                secrets
                    .replace(&self.secret, &PostParams::default(), &s)
                    .await
            }
            None => {
                let s: Secret = serde_json::from_value(json!({
                    "metadata": {"name": self.secret, "namespace": self.namespace,
                        "labels": {"app.kubernetes.io/component": "webhook-certificate"}},
                    "type": "kubernetes.io/tls",
                }))
                .map_err(|e| e.to_string())?;
                let s = Secret {
                    data: Some(data),
                    ..s
                };
                secrets.create(&PostParams::default(), &s).await
            }
        };
        match result {
            Ok(_) => {
                tracing::info!(secret = %self.secret, ?step, "webhook: certificate Secret written");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::debug!(secret = %self.secret, "webhook: another replica wrote the certificate first");
                Ok(())
            }
            Err(e) => Err(format!(
                "writing Secret {}/{}: {e}",
                self.namespace, self.secret
            )),
        }
    }
}

/// What the configuration carries: `published` is whether it carries the stored bundle (None: no
/// configuration kept), remembered with the time this replica first saw it.
fn publication(
    published: Option<bool>,
    stored: Option<&Material>,
    now: i64,
    seen: &mut Option<(String, i64)>,
) -> Publication {
    match (published, stored) {
        (None, _) | (_, None) => Publication::Unkept,
        (Some(false), _) => {
            *seen = None;
            Publication::Missing
        }
        (Some(true), Some(m)) => match seen {
            Some((bundle, since)) if *bundle == m.ca_bundle => Publication::Since(*since),
            _ => {
                *seen = Some((m.ca_bundle.clone(), now));
                Publication::Since(now)
            }
        },
    }
}

/// The Secret's keys as PEM text (`ca.key` only matters when the operator is the issuer).
fn material_of(s: &Secret) -> Result<Material, String> {
    let data = s.data.as_ref();
    let key = |k: &str| -> String {
        data.and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let m = Material {
        ca_bundle: key("ca.crt"),
        ca_key: key("ca.key"),
        tls_crt: key("tls.crt"),
        tls_key: key("tls.key"),
    };
    if m.tls_crt.is_empty() || m.tls_key.is_empty() {
        return Err("the Secret has no tls.crt or tls.key".into());
    }
    Ok(m)
}

/// Serves this certificate (expiring at `not_after`) from the next handshake on.
fn load(cert: &Certificate, m: &Material, not_after: i64, metrics: &Metrics) -> Result<(), String> {
    if cert.load(&m.tls_crt, &m.tls_key, not_after)? {
        metrics.admission.certificate_expiry.set(not_after);
        tracing::info!(expires = not_after, "webhook: serving certificate loaded");
    }
    Ok(())
}

/// When the certificate in `m` expires (0 when it does not read).
fn expiry(m: &Material) -> i64 {
    x509_parser::pem::parse_x509_pem(m.tls_crt.as_bytes())
        .ok()
        .and_then(|(_, p)| {
            p.parse_x509()
                .ok()
                .map(|x| x.validity().not_after.timestamp())
        })
        .unwrap_or_default()
}
