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
    /// Re-validate with AWS now however fresh the cached value is (its metadata first; the value
    /// is read only if the version moved): a scheduled rotation is due.
    pub revalidate: bool,
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
    /// The secret's rotation as AWS last described it (None: not asked, e.g. a pinned version).
    pub rotation: Option<Rotation>,
}

/// What AWS says of a secret's rotation: metadata only, dates as unix seconds as AWS gave them
/// (`rotation` checks them before any use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    pub enabled: bool,
    pub last_rotated: Option<i64>,
    pub next_rotation: Option<i64>,
    /// A version that carries AWSPENDING and not AWSCURRENT (a rotation started, not finished).
    pub pending: Option<String>,
    /// The rotation rules' window length (`3h`) and schedule (`rate(4 hours)`), as AWS gave them
    /// (at most 64 characters each).
    pub window: Option<String>,
    pub schedule: Option<String>,
    /// Rotation was ever set up (rules or a rotation function), enabled now or not.
    pub configured: bool,
}

impl Rotation {
    /// From AWS's answer and the versions' staging labels.
    pub fn new(
        enabled: bool,
        last_rotated: Option<i64>,
        next_rotation: Option<i64>,
        stages: &[(String, Vec<String>)],
    ) -> Rotation {
        let pending = stages
            .iter()
            .find(|(_, st)| {
                st.iter().any(|s| s == "AWSPENDING") && !st.iter().any(|s| s == "AWSCURRENT")
            })
            .map(|(v, _)| v.chars().take(64).collect());
        Rotation {
            enabled,
            last_rotated,
            next_rotation,
            pending,
            window: None,
            schedule: None,
            configured: false,
        }
    }

    /// Whether there is anything to say about the secret's rotation: it is or was set up, or a
    /// version is pending. A secret never set up for rotation gets no `status.rotation`.
    pub fn relevant(&self) -> bool {
        self.enabled || self.configured || self.pending.is_some()
    }

    /// With the rotation rules' window and schedule; `configured` when rotation was ever set up.
    pub fn with_rules(
        mut self,
        window: Option<&str>,
        schedule: Option<&str>,
        configured: bool,
    ) -> Rotation {
        let bounded = |s: Option<&str>| s.map(|s| s.chars().take(64).collect());
        self.window = bounded(window);
        self.schedule = bounded(schedule);
        self.configured = configured;
        self
    }
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

/// DescribeSecret's (or a ListSecrets entry's) answer: each version id with its staging labels,
/// and the rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions {
    pub stages: Vec<(String, Vec<String>)>,
    pub rotation: Rotation,
}

impl Versions {
    /// The staging labels of `version`.
    pub fn stages_of(&self, version: &str) -> Vec<String> {
        self.stages
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }
}

impl From<Vec<(String, Vec<String>)>> for Versions {
    fn from(stages: Vec<(String, Vec<String>)>) -> Self {
        let rotation = Rotation::new(false, None, None, &stages);
        Versions { stages, rotation }
    }
}

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
pub fn resolve(versions: &Versions, sel: &VersionSelector) -> Option<String> {
    let versions = &versions.stages;
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
