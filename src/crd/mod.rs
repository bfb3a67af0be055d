//! The custom resources: `ManagedSecret` (namespaced) and, in `policy`, `SecretAccessPolicy`
//! (cluster-scoped), both `managedsecrets.io/v1alpha1`.

pub mod policy;
pub mod validate;
pub use policy::{AccessRule, SecretAccessPolicy, SecretAccessPolicySpec};
pub use validate::validate_spec;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const GROUP: &str = "managedsecrets.io";
/// Annotation whose new value forces an immediate re-read from AWS, bypassing every cache.
pub const FORCE_SYNC_ANNOTATION: &str = "managedsecrets.io/force-sync";
/// Annotation on a Secret that an Owner or Orphan ManagedSecret manages: that ManagedSecret's UID.
/// Merge never writes it, so merging can never turn into ownership.
pub const OWNER_UID_ANNOTATION: &str = "managedsecrets.io/owner-uid";
/// Annotation with the AWS VersionId an owned Secret holds.
pub const VERSION_ID_ANNOTATION: &str = "managedsecrets.io/aws-version-id";
/// Annotation a Secret's owner sets to let ManagedSecrets (comma-separated names, same namespace)
/// merge keys into it.
pub const ALLOW_MERGE_ANNOTATION: &str = "managedsecrets.io/allow-merge";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const FIELD_MANAGER: &str = "managed-secrets";
pub const FINALIZER: &str = "managedsecrets.io/cleanup";

/// Keeps a Kubernetes Secret in sync with an AWS Secrets Manager secret.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "managedsecrets.io",
    version = "v1alpha1",
    kind = "ManagedSecret",
    namespaced,
    shortname = "ms",
    status = "ManagedSecretStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".status.secretName"}"#,
    printcolumn = r#"{"name":"AWS Version","type":"string","jsonPath":".status.syncedVersionId"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedSecretSpec {
    /// Name (e.g. `prod/db/credentials`) or full ARN of the AWS Secrets Manager secret.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^[A-Za-z0-9/_+=.@:-]+$")
    )]
    pub secret_id: String,
    /// AWS region of the secret; defaults to the operator's region (or the ARN's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$"))]
    pub region: Option<String>,
    /// Staging label to read (default `AWSCURRENT`). `AWSPENDING` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_+=.@-]+$"))]
    pub version_stage: Option<String>,
    /// Read the secret as this ServiceAccount of the ManagedSecret's namespace (its
    /// `eks.amazonaws.com/role-arn` role, through a token the operator requests for it), instead of
    /// the operator's own AWS identity. A SecretAccessPolicy rule may require another identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub service_account_name: Option<String>,
    /// Pin one version by its VersionId instead of following a staging label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_+=.@-]+$"))]
    pub version_id: Option<String>,
    /// How often the value is re-read from AWS: `30s`, `5m`, `1h`, `1h30m`. Default `5m`, minimum
    /// `10s` (flag `--min-refresh-interval`), maximum `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,6}(ms|s|m|h)){1,4}$"))]
    pub refresh_interval: Option<String>,
    /// How the AWS value maps into the Secret's keys. Leave it out when `templates` build every key.
    #[serde(default)]
    pub data: DataMapping,
    /// Extra keys rendered from the JSON fields with `{{ field }}` placeholders (see the README).
    /// At most 32, each at most 16 KiB.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 16384}))]
    pub templates: BTreeMap<String, String>,
    /// The Kubernetes Secret to write.
    #[serde(default)]
    pub target: Target,
    /// Restart the workloads that use the Secret when its AWS version changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
}

/// Which workloads restart when the synced AWS version changes, and how.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Workloads by kind and name (same namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub targets: Vec<RolloutTarget>,
    /// Workloads by label selector (same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// Every Deployment, StatefulSet and DaemonSet whose pod template reads the Secret
    /// (env secretKeyRef, envFrom, secret and projected volumes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto: bool,
    /// Also restart on the first sync of a new ManagedSecret (default: only on a version change).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_create: bool,
    /// `Restart` (default) patches the pod template; `None` only updates the Secret (for apps that
    /// re-read mounted files).
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// How long to wait after a new version before restarting, so that several rotations in that
    /// window make one rollout. Default `5s` (flag `--rollout-debounce`), maximum `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,6}(ms|s|m|h)){1,4}$"))]
    pub debounce: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct RolloutTarget {
    pub kind: WorkloadKind,
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum WorkloadKind {
    #[default]
    Deployment,
    StatefulSet,
    DaemonSet,
    /// Argo Rollouts (`argoproj.io/v1alpha1`), when its CRD is installed.
    Rollout,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::Rollout => "Rollout",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutStrategy {
    #[default]
    Restart,
    None,
}

/// One rollout target as last seen.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    pub kind: WorkloadKind,
    pub name: String,
    /// The AWS VersionId the workload runs with (rolled to, or found running at first sight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_out_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Exactly one of `allKeys`, `keys` or `rawKey`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataMapping {
    /// The value is a JSON object: each top-level field becomes a key (nested values as JSON text).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_keys: bool,
    /// Selected fields of a JSON value, each to a key; `from` may be a dotted path (`credentials.password`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub keys: Vec<KeyMapping>,
    /// The whole value (string or binary) goes to this one key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub raw_key: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct KeyMapping {
    /// Field of the JSON value; dots go into nested objects.
    #[schemars(length(min = 1, max = 1024))]
    pub from: String,
    /// Key in the Secret; defaults to the last segment of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub to: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Secret name (a DNS-1123 subdomain); defaults to the ManagedSecret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: Option<String>,
    /// Secret type.
    #[serde(default, rename = "type")]
    pub type_: SecretType,
    /// Labels for the Secret (at most 32).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    pub labels: BTreeMap<String, String>,
    /// Annotations for the Secret (at most 32, each value at most 4 KiB).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub creation_policy: CreationPolicy,
    /// `Delete` or `Retain`; default `Delete`, but `Retain` for `creationPolicy: Orphan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SecretType {
    #[default]
    Opaque,
    #[serde(rename = "kubernetes.io/basic-auth")]
    BasicAuth,
    #[serde(rename = "kubernetes.io/tls")]
    Tls,
    #[serde(rename = "kubernetes.io/dockerconfigjson")]
    DockerConfigJson,
}

impl SecretType {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretType::Opaque => "Opaque",
            SecretType::BasicAuth => "kubernetes.io/basic-auth",
            SecretType::Tls => "kubernetes.io/tls",
            SecretType::DockerConfigJson => "kubernetes.io/dockerconfigjson",
        }
    }
    /// Keys the API server requires for this type.
    pub fn required_keys(self) -> &'static [&'static str] {
        match self {
            SecretType::Opaque => &[],
            SecretType::BasicAuth => &[],
            SecretType::Tls => &["tls.crt", "tls.key"],
            SecretType::DockerConfigJson => &[".dockerconfigjson"],
        }
    }
}

/// Who owns the target Secret.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CreationPolicy {
    /// Create the Secret and own it (ownerReference); an existing Secret that is not ours is refused.
    #[default]
    Owner,
    /// The Secret exists already; only our keys are managed, others' keys are left alone.
    Merge,
    /// Create and manage the Secret, without an ownerReference.
    Orphan,
}

/// What happens to the Secret when the ManagedSecret is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the Secret (with Merge: remove only our keys).
    #[default]
    Delete,
    /// Keep the Secret and its data.
    Retain,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedSecretStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (kstatus style): True when the Secret holds the current AWS value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The AWS VersionId last written to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synced_version_stages: Vec<String>,
    /// The keys written to the Secret (names only; with allKeys, whose names come from the AWS
    /// value, an HMAC of each name, `hmac:<hex>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synced_keys: Vec<String>,
    /// SHA-256 of the synced keys and values (never the data itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_time: Option<String>,
    /// The force-sync annotation value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_force_sync: Option<String>,
    /// Rollout targets and the version each runs with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<RolloutRecord>,
    /// Since when a synced version waits for its rollout (the debounce window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_pending_since: Option<String>,
    /// Consecutive failures (drives the back-off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// The installation of the operator that syncs this object (its Lease, `namespace/name`).
    /// Another installation watching the same namespace leaves the object alone while that Lease
    /// is renewed, and says so in the `Contested` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 507))]
    pub claimed_by: Option<String>,
    /// The AWS secret's rotation, as its metadata says (never a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Box<RotationStatus>>,
}

/// What AWS says of a secret's rotation (DescribeSecret, ListSecrets).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// Rotation is enabled on the AWS secret.
    #[serde(default)]
    pub enabled: bool,
    /// When AWS last rotated the secret (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub last_rotated_time: Option<String>,
    /// AWS rotates it on or before this time (RFC 3339); it moves forward after every rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub next_rotation_time: Option<String>,
    /// When the rotation window that ends at nextRotationTime opens (AWS rotates at any time in
    /// it, on or before nextRotationTime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub window_opens_time: Option<String>,
    /// A version that carries AWSPENDING and not AWSCURRENT: a rotation started, not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub pending_version_id: Option<String>,
    /// When the operator first saw that version pending (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub pending_since: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ManagedSecret {
    pub fn target_name(&self) -> String {
        self.spec
            .target
            .name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

/// The ManagedSecret CRD as YAML (`crds/managedsecrets.io_managedsecrets.yaml`). Keys are
/// sorted, so the output does not depend on whether serde_json's `preserve_order` is unified into
/// the build (it is when the whole workspace builds, not when the operator builds alone).
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    sorted_yaml(&ManagedSecret::crd())
}

/// The SecretAccessPolicy CRD as YAML (`crds/managedsecrets.io_secretaccesspolicies.yaml`).
pub fn policy_crd_yaml() -> String {
    use kube::CustomResourceExt;
    sorted_yaml(&SecretAccessPolicy::crd())
}

/// Every CRD with the file name it has in `crds/`.
pub fn all_crds() -> Vec<(&'static str, String)> {
    vec![
        ("managedsecrets.io_managedsecrets.yaml", crd_yaml()),
        (
            "managedsecrets.io_secretaccesspolicies.yaml",
            policy_crd_yaml(),
        ),
    ]
}

/// YAML of `v` with every mapping's keys in sorted order.
pub fn sorted_yaml<T: Serialize>(v: &T) -> String {
    let json = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
    serde_yaml::to_string(&Sorted(&json)).unwrap_or_default()
}

struct Sorted<'a>(&'a serde_json::Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut map = s.serialize_map(Some(keys.len()))?;
                for k in keys {
                    map.serialize_entry(k, &Sorted(&m[k]))?;
                }
                map.end()
            }
            serde_json::Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for x in a {
                    seq.serialize_element(&Sorted(x))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}
