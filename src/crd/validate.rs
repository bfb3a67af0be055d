//! Pure: the spec checks beyond the CRD schema (which an older CRD may not have), and their limits.
//! One function, [`validate_spec`], called by the controller before every sync and by `check` and
//! `render`; what it refuses is `Error::InvalidSpec` with a message that names the field.

use super::{ManagedSecret, MANAGED_BY_LABEL};
use crate::error::{Error, Result};
use crate::schedule;
use std::time::Duration;

/// Names of Helm's release storage Secrets (`sh.helm.release.v1.<release>.v<n>`): never a target.
pub const HELM_RELEASE_PREFIX: &str = "sh.helm.release.v1.";

/// Label and annotation keys only the operator writes: `managedsecrets.io/*` (ownership, version,
/// opt-in) and the managed-by label its Secret watch selects by. A spec that sets one could forge
/// ownership, so it is refused, and never copied.
pub fn reserved_key(key: &str) -> bool {
    let prefix = key.split_once('/').map(|(p, _)| p).unwrap_or("");
    prefix == "managedsecrets.io"
        || prefix.ends_with(".managedsecrets.io")
        || key == MANAGED_BY_LABEL
}

/// Is `name` a valid Secret name (a DNS-1123 subdomain)?
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Most labels or annotations a ManagedSecret may put on its Secret (also the CRD's bound).
pub const MAX_TARGET_METADATA: usize = 32;
/// Most named rollout targets (also the CRD's bound).
pub const MAX_ROLLOUT_TARGETS: usize = 64;

/// Spec checks beyond the schema (which an older CRD may not have). Pure. Returns the refresh
/// interval.
pub fn validate_spec(ms: &ManagedSecret, min_refresh: Duration) -> Result<Duration> {
    let spec = &ms.spec;
    let interval = schedule::refresh_interval(spec.refresh_interval.as_deref(), min_refresh)?;
    if spec.secret_id.is_empty() || spec.secret_id.len() > 2048 {
        return Err(Error::InvalidSpec(
            "secretId must be 1 to 2048 characters".into(),
        ));
    }
    let target = ms.target_name();
    if !valid_secret_name(&target) {
        return Err(Error::InvalidSpec(format!(
            "target.name must be a DNS-1123 subdomain (lower case letters, digits, '-' and '.', at most 253 characters); got {} characters",
            target.len()
        )));
    }
    if spec.version_stage.as_deref() == Some("AWSPENDING") {
        return Err(Error::InvalidSpec("versionStage AWSPENDING is refused: a pending value is not yet in use and may never be".into()));
    }
    if spec.version_id.is_some() && spec.version_stage.is_some() {
        return Err(Error::InvalidSpec(
            "set either versionStage or versionId, not both".into(),
        ));
    }
    if target.starts_with(HELM_RELEASE_PREFIX) {
        return Err(Error::InvalidSpec(format!(
            "target.name {}* is Helm's release storage; pick another name",
            HELM_RELEASE_PREFIX
        )));
    }
    for (what, keys) in [
        ("target.labels", &spec.target.labels),
        ("target.annotations", &spec.target.annotations),
    ] {
        if keys.len() > MAX_TARGET_METADATA {
            return Err(Error::InvalidSpec(format!(
                "{what} has {} entries; at most {MAX_TARGET_METADATA}",
                keys.len()
            )));
        }
        if let Some(k) = keys.keys().find(|k| reserved_key(k)) {
            let k: String = k.chars().take(100).collect();
            return Err(Error::InvalidSpec(format!(
                "{what} key {k:?} is reserved for the operator (managedsecrets.io/* and {MANAGED_BY_LABEL})"
            )));
        }
    }
    if let Some(r) = &spec.rollout {
        schedule::debounce(r.debounce.as_deref(), Duration::ZERO)?;
        if let Some(sel) = &r.selector {
            if !crate::labels::selects_by_presence(sel) {
                return Err(Error::InvalidSpec(
                    "rollout.selector selects by no label a workload has (it is empty, or only NotIn/DoesNotExist) and would match nearly every workload in the namespace; give it matchLabels, or an In or Exists expression".into(),
                ));
            }
        }
        if r.targets.len() > MAX_ROLLOUT_TARGETS {
            return Err(Error::InvalidSpec(format!(
                "rollout.targets has {} entries; at most {MAX_ROLLOUT_TARGETS}",
                r.targets.len()
            )));
        }
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(spec: serde_json::Value) -> ManagedSecret {
        let mut s = json!({"secretId": "team/db", "data": {"allKeys": true}});
        if let (Some(base), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(
            json!({"apiVersion": "managedsecrets.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "db", "namespace": "team", "uid": "u1"}, "spec": s}),
        )
        .unwrap()
    }

    fn refused(spec: serde_json::Value) -> String {
        match validate_spec(&ms(spec), Duration::from_secs(10)) {
            Err(Error::InvalidSpec(m)) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn reserved_labels_and_annotations_are_refused() {
        assert_eq!(
            refused(json!({"target": {"annotations": {"managedsecrets.io/owner-uid": "u1"}}})),
            "target.annotations key \"managedsecrets.io/owner-uid\" is reserved for the operator (managedsecrets.io/* and app.kubernetes.io/managed-by)"
        );
        refused(json!({"target": {"annotations": {"x.managedsecrets.io/y": "1"}}}));
        refused(json!({"target": {"labels": {"app.kubernetes.io/managed-by": "managed-secrets"}}}));
        refused(json!({"target": {"labels": {"managedsecrets.io/allow-merge": "db"}}}));
        assert!(validate_spec(
            &ms(json!({"target": {"labels": {"team": "a", "notmanagedsecrets.io/x": "1"}, "annotations": {"example.com/x": "1"}}})),
            Duration::from_secs(10)
        )
        .is_ok());
    }

    #[test]
    fn helm_release_names_and_selectors_that_match_everything_are_refused() {
        assert_eq!(
            refused(json!({"target": {"name": "sh.helm.release.v1.app.v3"}})),
            "target.name sh.helm.release.v1.* is Helm's release storage; pick another name"
        );
        let m = refused(
            json!({"rollout": {"selector": {"matchExpressions": [{"key": "nope", "operator": "DoesNotExist"}]}}}),
        );
        assert!(m.starts_with("rollout.selector selects by no label"), "{m}");
        refused(json!({"rollout": {"selector": {}}}));
        assert!(validate_spec(
            &ms(json!({"rollout": {"selector": {"matchLabels": {"app": "api"}}}})),
            Duration::from_secs(10)
        )
        .is_ok());
    }

    #[test]
    fn secret_names_are_dns_subdomains() {
        for ok in ["db", "db-credentials", "a.b-c", "0x"] {
            assert!(valid_secret_name(ok), "{ok}");
        }
        for bad in ["", "Db", "-db", "db-", "a..b", "a_b", &"a".repeat(254)] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
    }
}
