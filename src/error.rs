//! The library's one error type. Messages name the secret, key or setting at fault and never
//! contain a secret value, nor text that came from an AWS value or a template (a position, a
//! length or an index instead).

use crate::reason;
use std::time::Duration;

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("AWS secret {0:?} was not found (check spec.secretId and spec.region)")]
    SecretNotFound(String),
    #[error("access to AWS secret {0:?} was denied: the operator's role needs secretsmanager:GetSecretValue and secretsmanager:DescribeSecret on it")]
    AccessDenied(String),
    #[error("AWS could not decrypt secret {0:?}: the operator's role needs kms:Decrypt on the secret's KMS key")]
    DecryptionFailed(String),
    #[error("AWS throttled the requests for secret {0:?}; retrying with back-off")]
    Throttled(String),
    #[error("AWS Secrets Manager did not answer for secret {secret:?}: {detail}")]
    AwsUnavailable { secret: String, detail: String },
    #[error("the value of AWS secret {secret:?} is not a JSON object ({detail}); use data.rawKey for plain strings")]
    InvalidJson { secret: String, detail: String },
    #[error("KeyNotFound: {0}")]
    KeyNotFound(String),
    #[error("{0} is null: give it a value in AWS or map other fields")]
    NullValue(String),
    #[error("{0}")]
    ValueTooLarge(String),
    #[error("{0} is not a valid Secret key: use letters, digits, '-', '_' or '.'")]
    InvalidKeyName(String),
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("SecretConflict: {0}")]
    SecretConflict(String),
    #[error("Secret {0:?} does not exist; target.creationPolicy Merge only adds keys to an existing Secret")]
    TargetMissing(String),
    #[error("Kubernetes API request failed: {}", kube_summary(.0))]
    Kube(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("PolicyDenied: {0}; nothing is read from AWS until a SecretAccessPolicy grants it")]
    PolicyDenied(String),
    #[error("the AWS identity could not be used: {0}")]
    IdentityFailed(String),
    /// A reconcile panicked: a bug, contained to the one object.
    #[error("internal error while reconciling ({0}); this is a bug, please report it")]
    Internal(String),
}

/// What a Kubernetes error says, without echoing request bodies: the code, the reason and the
/// API server's message (which names the object and the verb).
fn kube_summary(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let hint = match s.code {
                403 => " (the operator's RBAC does not allow this; see the chart's ClusterRole)",
                _ => "",
            };
            format!("{} {}: {}{hint}", s.code, s.reason, s.message)
        }
        other => other.to_string(),
    }
}

impl Error {
    /// Short stable label: the status condition reason and the metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::SecretNotFound(_) => reason::SECRET_NOT_FOUND,
            Error::AccessDenied(_) => reason::ACCESS_DENIED,
            Error::DecryptionFailed(_) => reason::DECRYPTION_FAILED,
            Error::Throttled(_) => reason::THROTTLED,
            Error::AwsUnavailable { .. } => reason::AWS_UNAVAILABLE,
            Error::InvalidJson { .. } => reason::INVALID_JSON,
            Error::KeyNotFound(_) => reason::KEY_NOT_FOUND,
            Error::NullValue(_) => reason::NULL_VALUE,
            Error::ValueTooLarge(_) => reason::VALUE_TOO_LARGE,
            Error::InvalidKeyName(_) => reason::INVALID_KEY_NAME,
            Error::InvalidSpec(_) => reason::INVALID_SPEC,
            Error::SecretConflict(_) => reason::SECRET_CONFLICT,
            Error::TargetMissing(_) => reason::TARGET_MISSING,
            Error::Kube(_) => reason::KUBERNETES_ERROR,
            Error::Finalizer(_) => reason::FINALIZER_ERROR,
            Error::Internal(_) => reason::INTERNAL_ERROR,
            Error::PolicyDenied(_) => reason::POLICY_DENIED,
            Error::IdentityFailed(_) => reason::IDENTITY_FAILED,
        }
    }

    /// Transient failures are retried with back-off and never touch the synced Secret; permanent
    /// ones wait for a spec change (or the next refresh) and say what to change.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Throttled(_)
            | Error::AwsUnavailable { .. }
            | Error::Finalizer(_)
            | Error::Internal(_) => true,
            // 403 (RBAC), 400/404/422 (the request itself is wrong) do not heal by retrying soon.
            Error::Kube(kube::Error::Api(s)) => !matches!(s.code, 400 | 403 | 404 | 405 | 422),
            Error::Kube(_) => true,
            _ => false,
        }
    }

    /// The wait the server asked for (a 429 from the API server's priority and fairness).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 429 => Some(Duration::from_secs(
                s.details
                    .as_ref()
                    .map(|d| u64::from(d.retry_after_seconds))
                    .filter(|n| *n > 0)
                    .unwrap_or(1),
            )),
            _ => None,
        }
    }

    /// Kubernetes answered 403: the operator's RBAC is missing something.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 403)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exponential back-off per object: 5s, 10s, 20s, ... capped at 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(10);
    Duration::from_secs(5u64.saturating_mul(1 << exp)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, retry: u32) -> Error {
        let mut s = kube::core::Status::failure("m", "R").with_code(code);
        if retry > 0 {
            s.details = Some(
                serde_json::from_value(serde_json::json!({"retryAfterSeconds": retry})).unwrap(),
            );
        }
        Error::Kube(kube::Error::Api(Box::new(s)))
    }

    #[test]
    fn backoff_doubles_and_caps_at_five_minutes() {
        let got: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(1000), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn transient_and_permanent_are_decided_in_one_place() {
        assert!(Error::Throttled("a".into()).is_transient());
        assert!(Error::AwsUnavailable {
            secret: "a".into(),
            detail: "timeout".into()
        }
        .is_transient());
        assert!(!Error::SecretNotFound("a".into()).is_transient());
        assert!(!Error::AccessDenied("a".into()).is_transient());
        assert!(!Error::KeyNotFound("x".into()).is_transient());
        assert!(!Error::InvalidSpec("x".into()).is_transient());
        assert!(Error::Internal("x".into()).is_transient());
        for code in [409, 429, 500, 503, 504] {
            assert!(api(code, 0).is_transient(), "{code}");
        }
        for code in [400, 403, 404, 422] {
            assert!(!api(code, 0).is_transient(), "{code}");
        }
        assert_eq!(
            Error::KeyNotFound("password".into()).to_string(),
            "KeyNotFound: password"
        );
    }

    #[test]
    fn a_429_says_how_long_to_wait_and_a_403_names_rbac() {
        assert_eq!(api(429, 7).retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(api(429, 0).retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(api(500, 7).retry_after(), None);
        assert!(api(403, 0).is_forbidden());
        assert_eq!(
            api(403, 0).to_string(),
            "Kubernetes API request failed: 403 R: m (the operator's RBAC does not allow this; see the chart's ClusterRole)"
        );
    }
}
