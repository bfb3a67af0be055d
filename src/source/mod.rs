//! Where secret values come from. The controller only sees [`SecretSource`]; the AWS client and the
//! cache in front of it are the one place that talks to AWS.

pub mod aws;
pub mod cache;
pub mod identity;
pub mod limits;
pub mod region;

use crate::error::Result;
use crate::render::SecretValue;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// Which version of a secret to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VersionSelector {
    Stage(String),
    Id(String),
}

/// One secret as one identity reads it: the cache key (a value read as one identity is never
/// served to another).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub secret_id: String,
    pub region: Option<String>,
    pub version: VersionSelector,
    pub identity: crate::policy::Identity,
}

#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub secret: SecretRef,
    /// Re-read from AWS, ignoring any cached value (force-sync).
    pub bypass_cache: bool,
    /// A cached value older than this is re-validated with AWS.
    pub max_age: Duration,
    /// Who needs the value (a ManagedSecret's UID): the cache drops values nobody needs.
    pub owner: String,
}

/// A value with the AWS version it belongs to. `Debug` is redacted through [`SecretValue`].
#[derive(Debug, Clone)]
pub struct Fetched {
    pub value: Arc<SecretValue>,
    pub version_id: String,
    pub version_stages: Vec<String>,
    /// Served from the cache without any AWS call.
    pub from_cache: bool,
    /// When the operator first saw this version (for the sync-lag metric).
    pub seen_at: std::time::Instant,
}

/// An identity in a region: what one ListSecrets sweep covers (AWS quotas are per account and
/// region; an identity stands for an account).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group {
    pub identity: crate::policy::Identity,
    pub region: String,
}

/// One secret as ListSecrets describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub arn: String,
    pub versions: Versions,
}

impl Listed {
    /// Does `id` (a name, a full ARN, or an ARN without its random suffix) name this secret?
    pub fn is(&self, id: &str) -> bool {
        id == self.name
            || id == self.arn
            || (id.starts_with("arn:")
                && self.arn.len() == id.len() + 7
                && self.arn.starts_with(id))
    }
}

/// A secret whose watched version a sweep saw move (its ManagedSecrets should look again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub secret_id: String,
    pub region: String,
}

/// Shared handle to a source, as the controller holds it.
pub type DynSourceRef = Arc<dyn SecretSource>;

/// The operator's view of a secret store.
pub trait SecretSource: Send + Sync {
    fn fetch<'a>(&'a self, req: &'a FetchRequest) -> BoxFuture<'a, Result<Fetched>>;
    /// `owner` no longer needs any value (its ManagedSecret is gone).
    fn release(&self, owner: &str);
    /// Only these owners still exist; values needed by no one else are dropped.
    fn retain(&self, live: &std::collections::HashSet<String>);
    /// Secrets whose version the source saw move by itself (a ListSecrets sweep).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Changed>;
    /// The version the source last saw for `secret` (no I/O), if it holds the secret.
    fn known_version(&self, secret: &SecretRef) -> Option<String>;
    /// Asks AWS now which version `secret` is at (DescribeSecret), reads the value when it is not
    /// the one held (or none is), and returns that version. For notifications, which are only hints.
    fn confirm<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<String>>;
    /// Tells subscribers that the ManagedSecrets reading `changed` should look again.
    fn announce(&self, changed: Changed);
    /// Background work (sweeps) until the future is dropped.
    fn background(&self) -> BoxFuture<'_, ()>;
}

/// DescribeSecret's answer: each version id with its staging labels.
pub type Versions = Vec<(String, Vec<String>)>;

/// The raw calls a backend answers; the cache decides which to make.
pub trait SecretsBackend: Send + Sync {
    /// GetSecretValue for a stage or version id.
    fn get_value<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<Fetched>>;
    /// DescribeSecret: the version ids and their stages.
    fn describe<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<Versions>>;
    /// ListSecrets, every page: each secret of the group's account and region with its versions.
    fn list<'a>(&'a self, group: &'a Group) -> BoxFuture<'a, Result<Vec<Listed>>>;
    /// BatchGetSecretValue of the AWSCURRENT values of `ids` (at most 20 a call; more are split).
    /// Returns (the id as asked, the value); ids that fail are left out.
    fn batch_current<'a>(
        &'a self,
        group: &'a Group,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(String, Fetched)>>>;
    /// The region a secret is read in (spec, ARN, or the default).
    fn region_of(&self, secret: &SecretRef) -> String;
}

/// The version id a selector points at, per a DescribeSecret answer.
pub fn resolve(versions: &[(String, Vec<String>)], sel: &VersionSelector) -> Option<String> {
    match sel {
        VersionSelector::Id(id) => versions
            .iter()
            .find(|(v, _)| v == id)
            .map(|(v, _)| v.clone()),
        VersionSelector::Stage(s) => versions
            .iter()
            .find(|(_, st)| st.iter().any(|x| x == s))
            .map(|(v, _)| v.clone()),
    }
}
