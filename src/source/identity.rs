//! AWS credentials for the identities a secret is read as (policy::Identity): the operator's own,
//! a ServiceAccount's IRSA role (a Kubernetes token exchanged with STS
//! AssumeRoleWithWebIdentity), or a role assumed with session tags (STS AssumeRole). Credentials
//! are cached per identity and fetched again five minutes before they expire.

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::policy::Identity;
use aws_sdk_secretsmanager::config::Credentials;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The audience of ServiceAccount tokens exchanged with STS (as EKS IRSA uses).
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";
/// The annotation naming a ServiceAccount's IAM role (as EKS IRSA reads it).
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// Credentials are fetched again this long before they expire.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// Most identities whose credentials are kept.
pub const MAX_IDENTITIES: usize = 1024;
/// Session tags that name the ManagedSecret an assumed role reads for.
pub const TAG_NAMESPACE: &str = "managedsecrets.io/namespace";
pub const TAG_NAME: &str = "managedsecrets.io/name";

/// The Kubernetes side of a ServiceAccount identity: its role and a short-lived token for it.
pub trait TokenIssuer: Send + Sync {
    /// The role in the ServiceAccount's role annotation and a token (audience `audience`).
    fn role_and_token<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<(String, String)>>;
}

pub struct Identities {
    sts: aws_sdk_sts::Client,
    tokens: Option<Arc<dyn TokenIssuer>>,
    metrics: Arc<Metrics>,
    cache: Mutex<HashMap<Identity, Credentials>>,
}

/// A role session name from the ManagedSecret's namespace and name (2-64 of `[\w+=,.@-]`).
pub fn session_name(namespace: &str, name: &str) -> String {
    let raw = format!("ms-{namespace}.{name}");
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(64);
    s
}

fn fresh(c: &Credentials, now: SystemTime) -> bool {
    c.expiry()
        .and_then(|e| e.duration_since(now).ok())
        .map(|left| left > REFRESH_BEFORE)
        .unwrap_or(true)
}

impl Identities {
    pub fn new(
        base: &aws_config::SdkConfig,
        tokens: Option<Arc<dyn TokenIssuer>>,
        metrics: Arc<Metrics>,
    ) -> Identities {
        Identities {
            sts: aws_sdk_sts::Client::new(base),
            tokens,
            metrics,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Credentials for `id` (None for the operator's own: the SDK's default chain).
    pub async fn credentials(&self, id: &Identity) -> Result<Option<Credentials>> {
        if *id == Identity::Operator {
            return Ok(None);
        }
        let now = SystemTime::now();
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .filter(|c| fresh(c, now))
        {
            return Ok(Some(c.clone()));
        }
        let creds = self.fetch(id).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_IDENTITIES && !cache.contains_key(id) {
            // Drop the credentials that expire first.
            if let Some(k) = cache
                .iter()
                .min_by_key(|(_, c)| c.expiry())
                .map(|(k, _)| k.clone())
            {
                cache.remove(&k);
            }
        }
        cache.insert(id.clone(), creds.clone());
        Ok(Some(creds))
    }

    /// Forgets cached credentials (after AWS refused them).
    pub fn forget(&self, id: &Identity) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    async fn fetch(&self, id: &Identity) -> Result<Credentials> {
        let (api, res) = match id {
            Identity::Operator => {
                return Err(Error::Internal("no STS call for the operator".into()))
            }
            Identity::ServiceAccount { namespace, name } => {
                let tokens = self.tokens.as_ref().ok_or_else(|| {
                    Error::IdentityFailed(format!(
                        "ServiceAccount {namespace}/{name}: this operator cannot request tokens"
                    ))
                })?;
                let (role, token) = tokens.role_and_token(namespace, name, STS_AUDIENCE).await?;
                let res = self
                    .sts
                    .assume_role_with_web_identity()
                    .role_arn(&role)
                    .web_identity_token(token)
                    .role_session_name(session_name(namespace, name))
                    .duration_seconds(3600)
                    .send()
                    .await
                    .map(|o| o.credentials)
                    .map_err(|e| {
                        map_sts_error(
                            &format!("role {role} for ServiceAccount {namespace}/{name}"),
                            &e,
                        )
                    });
                ("AssumeRoleWithWebIdentity", res)
            }
            Identity::Role {
                arn,
                external_id,
                namespace,
                name,
            } => {
                let tag = |k: &str, v: &str| {
                    aws_sdk_sts::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|_| {
                            Error::IdentityFailed(format!("role {arn}: a session tag is malformed"))
                        })
                };
                let res = self
                    .sts
                    .assume_role()
                    .role_arn(arn)
                    .set_external_id(external_id.clone())
                    .role_session_name(session_name(namespace, name))
                    .tags(tag(TAG_NAMESPACE, namespace)?)
                    .tags(tag(TAG_NAME, name)?)
                    .duration_seconds(3600)
                    .send()
                    .await
                    .map(|o| o.credentials)
                    .map_err(|e| map_sts_error(&format!("role {arn}"), &e));
                ("AssumeRole", res)
            }
        };
        self.metrics.sts_call(
            api,
            match &res {
                Ok(_) => "ok",
                Err(e) => e.reason(),
            },
        );
        let c = res?.ok_or_else(|| {
            Error::IdentityFailed(format!("{}: STS returned no credentials", id.describe()))
        })?;
        let expiry = SystemTime::try_from(*c.expiration()).ok();
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            expiry,
            "managed-secrets-sts",
        ))
    }
}

/// STS errors: throttling and outages are transient; a refusal names the role (never a token).
fn map_sts_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    what: &str,
    err: &SdkError<E>,
) -> Error {
    match err.code().unwrap_or("") {
        "Throttling" | "ThrottlingException" | "TooManyRequestsException" => {
            Error::Throttled(what.to_string())
        }
        "" => Error::AwsUnavailable {
            secret: what.to_string(),
            detail: "STS did not answer".into(),
        },
        code => Error::IdentityFailed(format!("{what} could not be assumed ({code})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_fit_sts_rules() {
        assert_eq!(session_name("team-a", "db"), "ms-team-a.db");
        let long = session_name(&"n".repeat(63), &"m".repeat(253));
        assert_eq!(long.len(), 64);
        assert!(long
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)));
    }

    #[test]
    fn credentials_are_refreshed_five_minutes_before_they_expire() {
        let now = SystemTime::now();
        let c = |secs: u64| {
            Credentials::new("a", "b", None, Some(now + Duration::from_secs(secs)), "t")
        };
        assert!(fresh(&c(3600), now));
        assert!(!fresh(&c(299), now));
        assert!(fresh(&Credentials::new("a", "b", None, None, "t"), now));
    }
}
