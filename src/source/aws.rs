//! AWS Secrets Manager through the official SDK. Credentials come from the standard aws-config
//! chain (env, profile, IRSA web identity, EKS Pod Identity, IMDS); `AWS_ENDPOINT_URL` is honoured.

use super::identity::{Identities, TokenIssuer};
use super::limits::ApiLimits;
use super::region;
use super::{
    Fetched, Group, Listed, Rotation, SecretRef, SecretsBackend, VersionSelector, Versions,
};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::policy::Identity;
use crate::render::SecretValue;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::Client;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Most clients kept, one per (region, identity): a spec cannot make the operator hold a client
/// per made-up region.
pub const MAX_CLIENTS: usize = 256;

type ClientKey = (String, Identity);

pub struct AwsBackend {
    base: aws_config::SdkConfig,
    /// (client, the expiry of the credentials it was built with).
    clients: Mutex<HashMap<ClientKey, (Client, Option<SystemTime>)>>,
    metrics: Arc<Metrics>,
    identities: Identities,
    limits: ApiLimits,
}

impl AwsBackend {
    /// Loads the default credential chain and region; ServiceAccount identities use `tokens`.
    pub async fn from_env(
        metrics: Arc<Metrics>,
        tokens: Option<Arc<dyn TokenIssuer>>,
    ) -> AwsBackend {
        let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        Self::new(base, metrics).with_tokens(tokens)
    }

    pub fn new(base: aws_config::SdkConfig, metrics: Arc<Metrics>) -> AwsBackend {
        AwsBackend {
            identities: Identities::new(&base, None, metrics.clone()),
            base,
            clients: Mutex::new(HashMap::new()),
            metrics,
            limits: ApiLimits::new(0.5),
        }
    }

    /// Client-side rate limits: `share` of each API's documented quota (0.5: half).
    pub fn with_quota_share(mut self, share: f64) -> AwsBackend {
        self.limits = ApiLimits::new(share);
        self
    }

    /// Lets ServiceAccount identities get their tokens from `tokens`.
    pub fn with_tokens(mut self, tokens: Option<Arc<dyn TokenIssuer>>) -> AwsBackend {
        self.identities = Identities::new(&self.base, tokens, self.metrics.clone());
        self
    }

    /// The AWS configuration it was built from (for other clients of the same identity, e.g. SQS).
    pub fn sdk_config(&self) -> &aws_config::SdkConfig {
        &self.base
    }

    /// The region secrets are read in when neither the spec nor an ARN says.
    pub fn default_region(&self) -> Option<String> {
        self.base.region().map(|r| r.to_string())
    }

    /// The client for the secret's region and identity (credentials fetched, or refreshed, first).
    async fn client(&self, secret: &SecretRef) -> Result<Client> {
        // No default here: a client without a region of its own keeps the base configuration's.
        let region =
            region::resolve(secret.region.as_deref(), &secret.secret_id, None).unwrap_or_default();
        let creds = self.identities.credentials(&secret.identity).await?;
        let expiry = creds.as_ref().and_then(|c| c.expiry());
        let key = (region.clone(), secret.identity.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((c, e)) = clients.get(&key) {
            if *e == expiry {
                return Ok(c.clone());
            }
        }
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&key) {
            if let Some(k) = clients.keys().next().cloned() {
                clients.remove(&k);
            }
        }
        let mut b = aws_sdk_secretsmanager::config::Builder::from(&self.base);
        if !region.is_empty() {
            b = b.region(aws_sdk_secretsmanager::config::Region::new(region));
        }
        if let Some(c) = creds {
            b = b.credentials_provider(
                aws_sdk_secretsmanager::config::SharedCredentialsProvider::new(c),
            );
        }
        let client = Client::from_conf(b.build());
        clients.insert(key, (client.clone(), expiry));
        Ok(client)
    }

    /// The client a group's calls share (its region and identity).
    async fn group_client(&self, group: &Group) -> Result<Client> {
        let probe = SecretRef {
            secret_id: String::new(),
            region: Some(group.region.clone()).filter(|r| !r.is_empty()),
            version: VersionSelector::Stage("AWSCURRENT".into()),
            identity: group.identity.clone(),
        };
        self.client(&probe).await
    }

    /// One call about one secret: waits for `api`'s rate limit in the secret's region, sends what
    /// `request` builds on the client for the secret's region and identity, counts the answer and
    /// maps an error about the secret (credentials AWS refused are fetched anew next time).
    async fn call<T, E, F>(
        &self,
        api: &'static str,
        secret: &SecretRef,
        request: impl FnOnce(Client) -> F,
    ) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        F: Future<Output = Result<T, SdkError<E>>>,
    {
        self.limits.wait(api, &self.region_of(secret)).await;
        let answer = request(self.client(secret).await?).await;
        self.answered(api, &secret.secret_id, answer)
            .inspect_err(|e| self.refused(secret, e))
    }

    /// One call of a group's (a ListSecrets page, a BatchGetSecretValue chunk) on its shared
    /// client: waits for `api`'s rate limit in `region`, sends, counts the answer and maps an
    /// error, named after the API.
    async fn group_call<T, E>(
        &self,
        api: &'static str,
        region: &str,
        send: impl Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        self.limits.wait(api, region).await;
        let answer = send.await;
        self.answered(api, api, answer)
    }

    /// Counts an answer by API and outcome (the AWS error code), and maps an error about `subject`
    /// to the operator's reasons.
    fn answered<T, E>(
        &self,
        api: &'static str,
        subject: &str,
        answer: Result<T, SdkError<E>>,
    ) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let outcome = match &answer {
            Ok(_) => "ok",
            Err(e) => e.code().unwrap_or("error"),
        };
        self.metrics.aws_call(api, outcome);
        answer.map_err(|e| map_error(subject, &e))
    }

    /// AWS refused the credentials of an identity: fetch new ones next time.
    fn refused(&self, secret: &SecretRef, err: &Error) {
        if matches!(err, Error::AccessDenied(_)) {
            self.identities.forget(&secret.identity);
        }
    }
}

/// Whether a secret (its name and full ARN) is the one an id names: the name, the full ARN, or a
/// partial ARN (the full one without the `-` and six random characters AWS appends). A prefix is
/// not enough: `...:secret:prod/db` must not answer for `...:secret:prod/db-admin-AbCdEf`.
pub fn answers(id: &str, name: Option<&str>, arn: Option<&str>) -> bool {
    if Some(id) == name || Some(id) == arn {
        return true;
    }
    let Some(rest) = arn.and_then(|a| a.strip_prefix(id)) else {
        return false;
    };
    id.starts_with("arn:")
        && rest.len() == 7
        && rest.starts_with('-')
        && rest[1..].chars().all(|c| c.is_ascii_alphanumeric())
}

/// Maps an SDK error to the operator's reasons. Messages carry the AWS error code, never payloads.
pub fn map_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    secret: &str,
    err: &SdkError<E>,
) -> Error {
    let code = err.code().unwrap_or("");
    let s = secret.to_string();
    match code {
        "ResourceNotFoundException" => Error::SecretNotFound(s),
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException" => Error::AccessDenied(s),
        "DecryptionFailure"
        | "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSInvalidStateException" => Error::DecryptionFailed(s),
        "ThrottlingException"
        | "TooManyRequestsException"
        | "Throttling"
        | "RequestLimitExceeded" => Error::Throttled(s),
        "InvalidRequestException"
            if err
                .message()
                .map(|m| m.contains("deleted"))
                .unwrap_or(false) =>
        {
            Error::SecretNotFound(s)
        }
        "" => {
            let detail = match err {
                SdkError::TimeoutError(_) => "the request timed out".to_string(),
                SdkError::DispatchFailure(_) => "the connection failed".to_string(),
                SdkError::ResponseError(_) => "the response could not be read".to_string(),
                SdkError::ConstructionFailure(_) => {
                    "the request could not be built (check the region and credentials)".to_string()
                }
                _ => "unknown error".to_string(),
            };
            Error::AwsUnavailable { secret: s, detail }
        }
        // The AWS error code only: an error message is not ours to repeat.
        other => Error::AwsUnavailable {
            secret: s,
            detail: other.to_string(),
        },
    }
}

/// The rotation fields DescribeSecret and a ListSecrets entry both carry.
struct RotationFields<'a> {
    enabled: Option<bool>,
    last: Option<&'a aws_sdk_secretsmanager::primitives::DateTime>,
    next: Option<&'a aws_sdk_secretsmanager::primitives::DateTime>,
    rules: Option<&'a aws_sdk_secretsmanager::types::RotationRulesType>,
    lambda: Option<&'a str>,
}

/// A secret's versions (sorted) and rotation, as DescribeSecret or ListSecrets describe them.
fn versions(stages: Option<&HashMap<String, Vec<String>>>, r: RotationFields<'_>) -> Versions {
    let mut stages: Vec<(String, Vec<String>)> = stages
        .map(|m| m.iter().map(|(k, s)| (k.clone(), s.clone())).collect())
        .unwrap_or_default();
    stages.sort();
    let rotation = Rotation::new(
        r.enabled.unwrap_or(false),
        r.last.map(|t| t.secs()),
        r.next.map(|t| t.secs()),
        &stages,
    )
    .with_rules(
        r.rules.and_then(|x| x.duration()),
        r.rules.and_then(|x| x.schedule_expression()),
        r.rules.is_some() || r.lambda.is_some_and(|l| !l.is_empty()),
    );
    Versions { stages, rotation }
}

impl SecretsBackend for AwsBackend {
    fn get_value<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<Fetched>> {
        Box::pin(async move {
            let out = self
                .call("GetSecretValue", secret, |client| {
                    let req = client.get_secret_value().secret_id(&secret.secret_id);
                    match &secret.version {
                        VersionSelector::Stage(s) => req.version_stage(s),
                        VersionSelector::Id(id) => req.version_id(id),
                    }
                    .send()
                })
                .await?;
            let value = if let Some(s) = out.secret_string() {
                SecretValue::String(s.to_string())
            } else if let Some(b) = out.secret_binary() {
                SecretValue::Binary(b.as_ref().to_vec())
            } else {
                return Err(Error::SecretNotFound(secret.secret_id.clone()));
            };
            Ok(Fetched {
                value: Arc::new(value),
                version_id: out.version_id().unwrap_or_default().to_string(),
                version_stages: out.version_stages().to_vec(),
                from_cache: false,
                seen_at: std::time::Instant::now(),
                rotation: None,
            })
        })
    }

    fn describe<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<Versions>> {
        Box::pin(async move {
            let out = self
                .call("DescribeSecret", secret, |client| {
                    client.describe_secret().secret_id(&secret.secret_id).send()
                })
                .await?;
            if out.deleted_date().is_some() {
                return Err(Error::SecretNotFound(secret.secret_id.clone()));
            }
            Ok(versions(
                out.version_ids_to_stages(),
                RotationFields {
                    enabled: out.rotation_enabled(),
                    last: out.last_rotated_date(),
                    next: out.next_rotation_date(),
                    rules: out.rotation_rules(),
                    lambda: out.rotation_lambda_arn(),
                },
            ))
        })
    }

    fn list<'a>(&'a self, group: &'a Group) -> BoxFuture<'a, Result<Vec<Listed>>> {
        Box::pin(async move {
            let client = self.group_client(group).await?;
            let mut out = vec![];
            let mut token: Option<String> = None;
            loop {
                let page = client
                    .list_secrets()
                    .max_results(100)
                    .set_next_token(token.clone())
                    .send();
                let page = self.group_call("ListSecrets", &group.region, page).await?;
                for e in page.secret_list() {
                    if e.deleted_date().is_some() {
                        continue;
                    }
                    let versions = versions(
                        e.secret_versions_to_stages(),
                        RotationFields {
                            enabled: e.rotation_enabled(),
                            last: e.last_rotated_date(),
                            next: e.next_rotation_date(),
                            rules: e.rotation_rules(),
                            lambda: e.rotation_lambda_arn(),
                        },
                    );
                    out.push(Listed {
                        name: e.name().unwrap_or_default().to_string(),
                        arn: e.arn().unwrap_or_default().to_string(),
                        versions,
                    });
                }
                token = page.next_token().map(String::from);
                if token.is_none() {
                    return Ok(out);
                }
            }
        })
    }

    fn batch_current<'a>(
        &'a self,
        group: &'a Group,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(String, Fetched)>>> {
        Box::pin(async move {
            let client = self.group_client(group).await?;
            let mut out = vec![];
            for chunk in ids.chunks(20) {
                let batch = client
                    .batch_get_secret_value()
                    .set_secret_id_list(Some(chunk.to_vec()))
                    .send();
                let got = self
                    .group_call("BatchGetSecretValue", &group.region, batch)
                    .await?;
                for v in got.secret_values() {
                    let value = match (v.secret_string(), v.secret_binary()) {
                        (Some(s), _) => SecretValue::String(s.to_string()),
                        (None, Some(b)) => SecretValue::Binary(b.as_ref().to_vec()),
                        _ => continue,
                    };
                    // Which id was asked for this answer (a name or an ARN, as the spec says).
                    let asked = chunk.iter().find(|id| answers(id, v.name(), v.arn()));
                    if let Some(id) = asked {
                        out.push((
                            id.clone(),
                            Fetched {
                                value: Arc::new(value),
                                version_id: v.version_id().unwrap_or_default().to_string(),
                                version_stages: v.version_stages().to_vec(),
                                from_cache: false,
                                seen_at: std::time::Instant::now(),
                                rotation: None,
                            },
                        ));
                    }
                }
            }
            Ok(out)
        })
    }

    fn region_of(&self, secret: &SecretRef) -> String {
        let default = self.default_region();
        region::resolve(
            secret.region.as_deref(),
            &secret.secret_id,
            default.as_deref(),
        )
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_answer_is_matched_to_the_exact_id_asked() {
        let arn = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf";
        let admin = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-admin-XyZ123";
        let partial = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db";
        assert!(answers("prod/db", Some("prod/db"), Some(arn)));
        assert!(answers(arn, Some("prod/db"), Some(arn)));
        assert!(answers(partial, Some("prod/db"), Some(arn)));
        assert!(
            !answers(partial, Some("prod/db-admin"), Some(admin)),
            "a longer name is another secret"
        );
        assert!(!answers("prod/db", Some("prod/db-admin"), Some(admin)));
        assert!(!answers("prod", Some("prod/db"), Some(arn)));
        assert!(!answers(
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/d",
            Some("prod/db"),
            Some(arn)
        ));
    }

    #[tokio::test]
    async fn clients_per_region_are_bounded() {
        let base = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let b = AwsBackend::new(base, Arc::new(Metrics::default()));
        for i in 0..300 {
            b.client(&SecretRef {
                secret_id: "x".into(),
                region: Some(format!("xx-made-up-{i}")),
                version: VersionSelector::Stage("AWSCURRENT".into()),
                identity: Identity::Operator,
            })
            .await
            .unwrap();
        }
        assert_eq!(b.clients.lock().unwrap().len(), MAX_CLIENTS);
    }
}
