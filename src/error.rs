//! The library's one error type. Messages name the secret, key or setting at fault and never
//! contain a secret value.

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
    #[error("the Secret would hold {0} bytes, over the Kubernetes limit of 1048576")]
    ValueTooLarge(usize),
    #[error("{0:?} is not a valid Secret key: use letters, digits, '-', '_' or '.'")]
    InvalidKeyName(String),
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("Secret {0:?} exists and is not managed by this ManagedSecret; set target.creationPolicy: Merge to manage keys in it")]
    SecretConflict(String),
    #[error("Secret {0:?} does not exist; target.creationPolicy Merge only adds keys to an existing Secret")]
    TargetMissing(String),
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// Short stable label: the status condition reason and the metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::SecretNotFound(_) => "SecretNotFound",
            Error::AccessDenied(_) => "AccessDenied",
            Error::DecryptionFailed(_) => "DecryptionFailed",
            Error::Throttled(_) => "Throttled",
            Error::AwsUnavailable { .. } => "AwsUnavailable",
            Error::InvalidJson { .. } => "InvalidJSON",
            Error::KeyNotFound(_) => "KeyNotFound",
            Error::ValueTooLarge(_) => "ValueTooLarge",
            Error::InvalidKeyName(_) => "InvalidKeyName",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::SecretConflict(_) => "SecretConflict",
            Error::TargetMissing(_) => "TargetMissing",
            Error::Kube(_) => "KubernetesError",
            Error::Finalizer(_) => "FinalizerError",
        }
    }

    /// Transient failures are retried with back-off and never touch the synced Secret; permanent
    /// ones wait for a spec change (or the next refresh) and say what to change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Throttled(_)
                | Error::AwsUnavailable { .. }
                | Error::Kube(_)
                | Error::Finalizer(_)
        )
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

    #[test]
    fn backoff_doubles_and_caps_at_five_minutes() {
        let got: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(1000), Duration::from_secs(300));
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
        assert_eq!(
            Error::KeyNotFound("password".into()).to_string(),
            "KeyNotFound: password"
        );
    }
}
