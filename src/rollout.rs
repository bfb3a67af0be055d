//! Pure rollout decisions: which workloads use a Secret, which of them a ManagedSecret targets,
//! whether a rollout is due, and the pod-template annotation that triggers it.

use crate::crd::{RolloutRecord, RolloutSpec, WorkloadKind};
use crate::labels::selector_matches;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// The pod-template annotation whose change makes a rollout.
pub const VERSION_ANNOTATION: &str = "managedsecrets.io/secret-version";
/// Workload annotation opting in to restarts when the named Secrets (comma-separated) change.
pub const RELOAD_ANNOTATION: &str = "managedsecrets.io/reload";
/// The same opt-in under the annotation Reloader users know.
pub const RELOADER_ANNOTATION: &str = "secret.reloader.stakater.com/reload";

/// What the rollout logic needs to know of a Deployment, StatefulSet or DaemonSet (not its pod
/// template: only what of it matters here, so thousands of them stay small).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The Secrets the pod template reads (see `referenced_secrets`).
    pub secrets: BTreeSet<String>,
    /// The pod template's `VERSION_ANNOTATION`.
    pub version: Option<String>,
}

impl Workload {
    /// The workload with its `spec.template` (as JSON).
    pub fn new(
        kind: WorkloadKind,
        name: String,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        template: &Value,
    ) -> Self {
        Workload {
            kind,
            name,
            labels,
            annotations,
            secrets: referenced_secrets(template),
            version: template
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(VERSION_ANNOTATION))
                .and_then(Value::as_str)
                .map(String::from),
        }
    }

    pub fn current_version_annotation(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

/// The Secrets a pod template reads: env `secretKeyRef`, `envFrom.secretRef`, a secret volume, or
/// a projected volume source, in any kind of container.
pub fn referenced_secrets(template: &Value) -> BTreeSet<String> {
    let spec = &template["spec"];
    let mut out = BTreeSet::new();
    let mut add = |v: &Value, field: &str| {
        if let Some(n) = v.get(field).and_then(Value::as_str) {
            out.insert(n.to_string());
        }
    };
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                add(&e["valueFrom"]["secretKeyRef"], "name");
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add(&e["secretRef"], "name");
            }
        }
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add(&v["secret"], "secretName");
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(&s["secret"], "name");
        }
    }
    out
}

/// Does the pod template read the Secret?
pub fn references_secret(template: &Value, secret: &str) -> bool {
    referenced_secrets(template).contains(secret)
}

/// Does the workload opt in by annotation to restarts for this Secret?
pub fn opted_in(w: &Workload, secret: &str) -> bool {
    [RELOAD_ANNOTATION, RELOADER_ANNOTATION]
        .iter()
        .filter_map(|a| w.annotations.get(*a))
        .any(|v| v.split(',').any(|s| s.trim() == secret))
}

/// A workload by kind and name.
pub type TargetRef = (WorkloadKind, String);

/// The workloads a ManagedSecret's rollout spec selects, and the named targets that do not exist.
/// Whether a change to workload `w` concerns a ManagedSecret's rollout: it selects `w` now (by name,
/// selector, reference or opt-in), or its status records `w` as a target (it may have stopped
/// matching). Pure; keeps a workload event from waking every ManagedSecret of the namespace.
pub fn concerns(
    spec: &RolloutSpec,
    secret: &str,
    recorded: &[crate::crd::RolloutRecord],
    w: &Workload,
) -> bool {
    spec.targets
        .iter()
        .any(|t| t.kind == w.kind && t.name == w.name)
        || recorded
            .iter()
            .any(|r| r.kind == w.kind && r.name == w.name)
        || !select_targets(spec, secret, std::slice::from_ref(w))
            .0
            .is_empty()
}

pub fn select_targets(
    spec: &RolloutSpec,
    secret: &str,
    workloads: &[Workload],
) -> (Vec<TargetRef>, Vec<TargetRef>) {
    let mut out: Vec<TargetRef> = vec![];
    let mut missing = vec![];
    let mut add = |k: WorkloadKind, n: &str| {
        if !out.iter().any(|(ok, on)| *ok == k && on == n) {
            out.push((k, n.to_string()));
        }
    };
    for t in &spec.targets {
        if workloads
            .iter()
            .any(|w| w.kind == t.kind && w.name == t.name)
        {
            add(t.kind, &t.name);
        } else {
            missing.push((t.kind, t.name.clone()));
        }
    }
    for w in workloads {
        let by_selector = spec
            .selector
            .as_ref()
            .map(|s| selector_matches(s, &w.labels))
            .unwrap_or(false);
        let by_reference = spec.auto && w.secrets.contains(secret);
        if by_selector || by_reference || opted_in(w, secret) {
            add(w.kind, &w.name);
        }
    }
    out.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    (out, missing)
}

/// The annotation value for a workload: the VersionId when one managed Secret feeds it, a hash of
/// all `secret=version` pairs when several do (so any rotation changes it, once).
pub fn annotation_value(versions: &BTreeMap<String, String>) -> String {
    if versions.len() == 1 {
        return versions.values().next().cloned().unwrap_or_default();
    }
    let mut h = Sha256::new();
    for (s, v) in versions {
        h.update(s.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", &hex::encode(h.finalize())[..32])
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// First sight of this target: remember the version it runs with; no restart.
    Baseline,
    /// The synced version differs from the one the target runs with: restart it.
    RollOut,
    /// Up to date.
    Nothing,
}

/// How the synced version relates to what was synced before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sync {
    /// The ManagedSecret's first sync.
    First,
    /// A new AWS version was synced just now.
    NewVersion,
    /// The same version as before.
    Same,
}

/// Whether a target needs a rollout for the synced version. Pure.
pub fn decide(
    record: Option<&RolloutRecord>,
    synced_version: &str,
    sync: Sync,
    on_create: bool,
) -> Decision {
    match (record, sync) {
        (None, Sync::First) if on_create => Decision::RollOut,
        // A target seen for the first time while a new version arrives runs an older one.
        (None, Sync::NewVersion) => Decision::RollOut,
        (None, _) => Decision::Baseline,
        (Some(r), _) if r.version.as_deref() == Some(synced_version) => Decision::Nothing,
        (Some(_), _) => Decision::RollOut,
    }
}

/// Time left in the debounce window, if any. Pure; a window that ends past the representable
/// future has nothing left to wait for (the debounce is bounded long before that).
pub fn debounce_left(
    pending_since: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    debounce: std::time::Duration,
) -> Option<std::time::Duration> {
    let end = chrono::TimeDelta::from_std(debounce)
        .ok()
        .and_then(|d| pending_since.checked_add_signed(d))?;
    (now < end).then(|| (end - now).to_std().unwrap_or_default())
}

/// The records of every selected target for the synced `version` (kept, new baselines, or
/// waiting for a rollout; missing named targets with their error) and the targets due for a
/// rollout. Pure.
pub fn records(
    prev: &[RolloutRecord],
    targets: &[TargetRef],
    missing: &[TargetRef],
    version: &str,
    sync: Sync,
    on_create: bool,
    namespace: &str,
) -> (Vec<RolloutRecord>, Vec<TargetRef>) {
    let mut out = vec![];
    let mut due = vec![];
    for (kind, name) in targets {
        let old = prev.iter().find(|r| r.kind == *kind && &r.name == name);
        let fresh = || RolloutRecord {
            kind: *kind,
            name: name.clone(),
            ..Default::default()
        };
        match decide(old, version, sync, on_create) {
            Decision::Baseline => out.push(RolloutRecord {
                version: Some(version.to_string()),
                ..fresh()
            }),
            Decision::Nothing => out.push(old.cloned().unwrap_or_else(fresh)),
            Decision::RollOut => {
                due.push((*kind, name.clone()));
                out.push(old.cloned().unwrap_or_else(fresh));
            }
        }
    }
    for (kind, name) in missing {
        out.push(RolloutRecord {
            kind: *kind,
            name: name.clone(),
            error: Some(format!(
                "{} {name} not found in namespace {namespace}",
                kind.as_str()
            )),
            ..Default::default()
        });
    }
    (out, due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RolloutTarget;
    use serde_json::json;

    fn wl(kind: WorkloadKind, name: &str, template: Value) -> Workload {
        Workload::new(
            kind,
            name.into(),
            BTreeMap::new(),
            BTreeMap::new(),
            &template,
        )
    }

    #[test]
    fn every_way_a_pod_reads_a_secret_is_found() {
        let env = json!({"spec": {"containers": [{"name": "a", "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}]}});
        let env_from = json!({"spec": {"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "db"}}]}]}});
        let init = json!({"spec": {"containers": [], "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "db"}}]}]}});
        let vol = json!({"spec": {"containers": [{"name": "a"}], "volumes": [{"name": "v", "secret": {"secretName": "db"}}]}});
        let projected = json!({"spec": {"containers": [{"name": "a"}], "volumes": [{"name": "v", "projected": {"sources": [{"configMap": {"name": "db"}}, {"secret": {"name": "db"}}]}}]}});
        for t in [&env, &env_from, &init, &vol, &projected] {
            assert!(references_secret(t, "db"), "{t}");
            assert!(!references_secret(t, "other"), "{t}");
        }
        let cm_only = json!({"spec": {"containers": [{"name": "a", "envFrom": [{"configMapRef": {"name": "db"}}]}]}});
        assert!(!references_secret(&cm_only, "db"));
    }

    #[test]
    fn targets_come_from_names_selectors_references_and_opt_in_annotations() {
        let mut labelled = wl(
            WorkloadKind::StatefulSet,
            "cache",
            json!({"spec": {"containers": []}}),
        );
        labelled.labels.insert("tier".into(), "backend".into());
        let mut opted = wl(
            WorkloadKind::DaemonSet,
            "agent",
            json!({"spec": {"containers": []}}),
        );
        opted
            .annotations
            .insert(RELOADER_ANNOTATION.into(), "other, db".into());
        let user = wl(
            WorkloadKind::Deployment,
            "api",
            json!({"spec": {"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "db"}}]}]}}),
        );
        let unrelated = wl(
            WorkloadKind::Deployment,
            "web",
            json!({"spec": {"containers": [{"name": "a"}]}}),
        );
        let all = vec![labelled, opted, user, unrelated];
        let spec: RolloutSpec = serde_json::from_value(json!({
            "targets": [{"kind": "Deployment", "name": "web"}, {"kind": "Deployment", "name": "ghost"}],
            "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["backend"]}]},
            "auto": true
        }))
        .unwrap();
        let (targets, missing) = select_targets(&spec, "db", &all);
        let names: Vec<String> = targets
            .iter()
            .map(|(k, n)| format!("{}/{n}", k.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                "DaemonSet/agent",
                "Deployment/api",
                "Deployment/web",
                "StatefulSet/cache"
            ]
        );
        assert_eq!(
            missing,
            vec![(WorkloadKind::Deployment, "ghost".to_string())]
        );
        let only_named = RolloutSpec {
            targets: vec![RolloutTarget {
                kind: WorkloadKind::Deployment,
                name: "web".into(),
            }],
            ..Default::default()
        };
        let (targets, _) = select_targets(&only_named, "db", &all);
        assert_eq!(
            targets.len(),
            2,
            "the named one, plus the workload that opted in by annotation"
        );
    }

    #[test]
    fn a_workload_change_concerns_only_the_rollouts_that_select_or_recorded_it() {
        let named = RolloutSpec {
            targets: vec![RolloutTarget {
                kind: WorkloadKind::Deployment,
                name: "api".into(),
            }],
            ..Default::default()
        };
        let auto = RolloutSpec {
            auto: true,
            ..Default::default()
        };
        let reads_db = wl(
            WorkloadKind::Deployment,
            "worker",
            json!({"spec": {"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "db"}}]}]}}),
        );
        let unrelated = wl(
            WorkloadKind::Deployment,
            "web",
            json!({"spec": {"containers": []}}),
        );
        let api = wl(WorkloadKind::Deployment, "api", json!({}));
        assert!(
            concerns(&named, "db", &[], &api),
            "named (even before it existed)"
        );
        assert!(!concerns(&named, "db", &[], &reads_db));
        assert!(concerns(&auto, "db", &[], &reads_db), "reads the Secret");
        assert!(!concerns(&auto, "db", &[], &unrelated));
        assert!(!concerns(&auto, "other", &[], &reads_db));
        let recorded = [RolloutRecord {
            kind: WorkloadKind::Deployment,
            name: "web".into(),
            ..Default::default()
        }];
        assert!(
            concerns(&auto, "db", &recorded, &unrelated),
            "a target that stopped matching"
        );
        assert!(!concerns(
            &auto,
            "db",
            &recorded,
            &wl(WorkloadKind::StatefulSet, "web", json!({}))
        ));
    }

    #[test]
    fn the_annotation_is_the_version_or_a_hash_of_all_versions() {
        let one = BTreeMap::from([("db".to_string(), "v1".to_string())]);
        assert_eq!(annotation_value(&one), "v1");
        let two = BTreeMap::from([
            ("db".to_string(), "v1".to_string()),
            ("api".to_string(), "a1".to_string()),
        ]);
        let two_rotated = BTreeMap::from([
            ("db".to_string(), "v2".to_string()),
            ("api".to_string(), "a1".to_string()),
        ]);
        assert!(annotation_value(&two).starts_with("sha256:"));
        assert_ne!(annotation_value(&two), annotation_value(&two_rotated));
        assert_eq!(annotation_value(&two), annotation_value(&two.clone()));
    }

    #[test]
    fn rollouts_happen_only_when_the_version_moves() {
        let rec = |v: &str| RolloutRecord {
            kind: WorkloadKind::Deployment,
            name: "a".into(),
            version: Some(v.into()),
            ..Default::default()
        };
        assert_eq!(
            decide(None, "v1", Sync::First, false),
            Decision::Baseline,
            "first sync restarts nothing"
        );
        assert_eq!(
            decide(None, "v1", Sync::First, true),
            Decision::RollOut,
            "unless onCreate"
        );
        assert_eq!(
            decide(None, "v1", Sync::Same, true),
            Decision::Baseline,
            "onCreate is for the first sync only"
        );
        assert_eq!(
            decide(Some(&rec("v1")), "v1", Sync::Same, false),
            Decision::Nothing,
            "same version: nothing"
        );
        assert_eq!(
            decide(Some(&rec("v1")), "v2", Sync::NewVersion, false),
            Decision::RollOut
        );
        assert_eq!(
            decide(Some(&rec("v1")), "v2", Sync::Same, false),
            Decision::RollOut,
            "a rollout that waited (debounce, failure) still happens"
        );
        assert_eq!(
            decide(None, "v2", Sync::NewVersion, false),
            Decision::RollOut,
            "a target first seen with a new version"
        );
    }

    #[test]
    fn debounce_holds_rollouts_for_the_window() {
        let t0 = chrono::Utc::now();
        let d = std::time::Duration::from_secs(5);
        assert_eq!(debounce_left(t0, t0, d), Some(d));
        assert!(debounce_left(t0, t0 + chrono::Duration::seconds(5), d).is_none());
        // 4294967295h used to overflow chrono and panic the controller.
        let huge = std::time::Duration::from_secs(4_294_967_295 * 3600);
        assert_eq!(debounce_left(t0, t0, huge), None);
        assert_eq!(debounce_left(t0, t0, std::time::Duration::MAX), None);
    }

    #[test]
    fn records_keep_baselines_and_list_what_is_due_and_missing() {
        let rec = |n: &str, v: &str| RolloutRecord {
            kind: WorkloadKind::Deployment,
            name: n.into(),
            version: Some(v.into()),
            ..Default::default()
        };
        let t = |n: &str| (WorkloadKind::Deployment, n.to_string());
        let prev = vec![rec("api", "v1"), rec("web", "v2"), rec("gone", "v1")];
        let (out, due) = records(
            &prev,
            &[t("api"), t("web"), t("new")],
            &[t("ghost")],
            "v2",
            Sync::NewVersion,
            false,
            "app",
        );
        assert_eq!(due, vec![t("api"), t("new")]);
        assert_eq!(
            out,
            vec![
                rec("api", "v1"),
                rec("web", "v2"),
                RolloutRecord {
                    kind: WorkloadKind::Deployment,
                    name: "new".into(),
                    ..Default::default()
                },
                RolloutRecord {
                    kind: WorkloadKind::Deployment,
                    name: "ghost".into(),
                    error: Some("Deployment ghost not found in namespace app".into()),
                    ..Default::default()
                },
            ]
        );
        let (out, due) = records(&[], &[t("api")], &[], "v1", Sync::First, false, "app");
        assert!(due.is_empty());
        assert_eq!(out, vec![rec("api", "v1")]);
    }
}
