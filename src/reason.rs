//! Every condition type, condition reason and Event reason the operator writes, in one place:
//! they are part of its API (alerts, `kubectl wait`, dashboards and Argo CD health checks match on
//! them), so none is spelt twice. The reasons of failures are `Error::reason`, from these.

// Condition types.
/// ManagedSecret: the Secret holds the AWS value (kstatus).
pub const READY: &str = "Ready";
/// ManagedSecret: AWS has not confirmed the synced value for longer than the refresh interval.
pub const STALE: &str = "Stale";
/// ManagedSecret: a named rollout target does not exist.
pub const ROLLOUT_TARGET_MISSING: &str = "RolloutTargetMissing";
/// ManagedSecret: another installation syncs it (written by the one that leaves it alone).
pub const CONTESTED: &str = "Contested";
/// SecretAccessPolicy: whether every rule is in effect.
pub const VALID: &str = "Valid";
/// ManagedSecret: whether the AWS secret's rotation runs as scheduled (informational: never
/// affects Ready).
pub const ROTATION_HEALTHY: &str = "RotationHealthy";

// Reasons of conditions and Events that are not failures.
/// Ready=True, and the Event of a new version written.
pub const SYNCED: &str = "Synced";
/// A previous target Secret given back after target.name changed.
pub const RELEASED: &str = "Released";
/// A workload restarted for a new version.
pub const ROLLED_OUT: &str = "RolledOut";
/// RolloutTargetMissing=True.
pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
/// This installation took over an object another one no longer syncs.
pub const TAKEN_OVER: &str = "TakenOver";
/// Contested=True.
pub const CLAIMED_ELSEWHERE: &str = "ClaimedByAnotherInstallation";
/// RotationHealthy: on schedule (True); overdue or stuck (False); not enabled (Unknown).
pub const ROTATION_ON_SCHEDULE: &str = "RotationOnSchedule";
pub const ROTATION_OVERDUE: &str = "RotationOverdue";
pub const ROTATION_STUCK: &str = "RotationStuck";
pub const ROTATION_DISABLED: &str = "RotationDisabled";
/// Valid=True / Valid=False on a SecretAccessPolicy.
pub const RULES_VALID: &str = "RulesValid";
pub const RULES_IGNORED: &str = "RulesIgnored";

// Reasons of failures (Ready=False or Stale=True, the Warning Event, the failures metric).
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
pub const ACCESS_DENIED: &str = "AccessDenied";
pub const DECRYPTION_FAILED: &str = "DecryptionFailed";
pub const THROTTLED: &str = "Throttled";
pub const AWS_UNAVAILABLE: &str = "AwsUnavailable";
pub const INVALID_JSON: &str = "InvalidJSON";
pub const KEY_NOT_FOUND: &str = "KeyNotFound";
pub const NULL_VALUE: &str = "NullValue";
pub const VALUE_TOO_LARGE: &str = "ValueTooLarge";
pub const INVALID_KEY_NAME: &str = "InvalidKeyName";
pub const INVALID_SPEC: &str = "InvalidSpec";
pub const SECRET_CONFLICT: &str = "SecretConflict";
pub const TARGET_MISSING: &str = "TargetMissing";
pub const KUBERNETES_ERROR: &str = "KubernetesError";
pub const FINALIZER_ERROR: &str = "FinalizerError";
pub const INTERNAL_ERROR: &str = "InternalError";
pub const POLICY_DENIED: &str = "PolicyDenied";
pub const IDENTITY_FAILED: &str = "IdentityFailed";
/// A workload's restart patch failed (Warning Event).
pub const ROLLOUT_FAILED: &str = "RolloutFailed";
/// A Secret could not be released on deletion (Warning Event).
pub const RELEASE_FAILED: &str = "ReleaseFailed";
