//! A minimal Deployment/StatefulSet/DaemonSet controller: each pod-template change becomes a new
//! revision (ReplicaSet with `pod-template-hash` for Deployments, ControllerRevision for
//! StatefulSets and DaemonSets) and the status says the rollout finished, as if every Pod became
//! ready at once (no nodes run here). Also the API defaults of these kinds.

use crate::store::{md, md_str, Inner, Sub, WriteCtx};
use serde_json::{json, Value};

const MANAGER: &str = "kube-controller-manager";

fn set_default(v: &mut Value, key: &str, d: Value) {
    if let Some(m) = v.as_object_mut() {
        m.entry(key.to_string()).or_insert(d);
    }
}

/// API defaults applied on create and update, as in the recorded Deployment.
pub fn default_workload(plural: &str, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec") else {
        return;
    };
    if plural != "daemonsets" {
        set_default(spec, "replicas", json!(1));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    match plural {
        "deployments" => {
            set_default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            set_default(spec, "progressDeadlineSeconds", json!(600));
        }
        "statefulsets" => {
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
        }
        "daemonsets" => {
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
        }
        _ => {}
    }
    if let Some(t) = spec.get_mut("template") {
        if let Some(m) = t.get_mut("metadata") {
            set_default(m, "creationTimestamp", Value::Null);
        }
        if let Some(ps) = t.get_mut("spec") {
            set_default(ps, "restartPolicy", json!("Always"));
            set_default(ps, "terminationGracePeriodSeconds", json!(30));
            set_default(ps, "dnsPolicy", json!("ClusterFirst"));
            set_default(ps, "securityContext", json!({}));
            set_default(ps, "schedulerName", json!("default-scheduler"));
            for list in ["containers", "initContainers"] {
                if let Some(cs) = ps.get_mut(list).and_then(Value::as_array_mut) {
                    for c in cs {
                        let image = c
                            .get("image")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        let tag = image.rsplit('/').next().unwrap_or("");
                        let pull = if !tag.contains(':') || tag.ends_with(":latest") {
                            "Always"
                        } else {
                            "IfNotPresent"
                        };
                        set_default(c, "resources", json!({}));
                        set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                        set_default(c, "terminationMessagePolicy", json!("File"));
                        set_default(c, "imagePullPolicy", json!(pull));
                    }
                }
            }
        }
    }
}

/// FNV-32a of the template, encoded with the alphabet Kubernetes uses for `pod-template-hash`.
pub fn template_hash(template: &Value, collisions: u64) -> String {
    let mut h: u32 = 0x811c9dc5;
    let data = format!(
        "{}{}",
        canonical(template),
        if collisions > 0 {
            collisions.to_string()
        } else {
            String::new()
        }
    );
    for b in data.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x01000193);
    }
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = h as u64;
    let mut s = String::new();
    while n > 0 {
        s.push(ALPHA[(n % ALPHA.len() as u64) as usize] as char);
        n /= ALPHA.len() as u64;
    }
    if s.is_empty() {
        s.push('b');
    }
    s.chars().take(10).collect()
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{:?}:{}", k, canonical(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

fn strip_hash_label(t: &Value, label: &str) -> Value {
    let mut t = t.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(label);
    }
    t
}

fn owned_by<'a>(inner: &'a Inner, plural_key: &str, ns: &str, uid: &str) -> Vec<&'a Value> {
    inner
        .objects
        .get(plural_key)
        .map(|m| {
            m.iter()
                .filter(|((n, _), _)| n == ns)
                .map(|(_, v)| v)
                .filter(|o| crate::store::owner_uids(o).iter().any(|u| u == uid))
                .collect()
        })
        .unwrap_or_default()
}

fn owner_ref(obj: &Value) -> Value {
    json!([{"apiVersion": "apps/v1", "kind": obj["kind"], "name": md_str(obj, "name"), "uid": md_str(obj, "uid"), "controller": true, "blockOwnerDeletion": true}])
}

fn revision_of(o: &Value) -> i64 {
    md(o, "annotations")
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .or_else(|| o.get("revision").and_then(Value::as_i64))
        .unwrap_or(0)
}

/// Brings one workload's revisions and status up to date with its spec.
pub fn reconcile(inner: &mut Inner, plural: &str, ns: &str, name: &str) {
    let key = format!("apps/{plural}");
    let Some(rt) = inner.types.get(&key).cloned() else {
        return;
    };
    let Some(obj) = inner.get(&rt, ns, name).cloned() else {
        return;
    };
    if md(&obj, "deletionTimestamp").is_some() {
        return;
    }
    match plural {
        "deployments" => reconcile_deployment(inner, &obj),
        "statefulsets" | "daemonsets" => reconcile_revisioned(inner, plural, &obj),
        _ => {}
    }
}

fn reconcile_deployment(inner: &mut Inner, dep: &Value) {
    let ns = md_str(dep, "namespace").to_string();
    let name = md_str(dep, "name").to_string();
    let uid = md_str(dep, "uid").to_string();
    let template = dep
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let replicas = dep
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let rs_rt = inner.types["apps/replicasets"].clone();
    let owned: Vec<Value> = owned_by(inner, "apps/replicasets", &ns, &uid)
        .into_iter()
        .cloned()
        .collect();
    let max_rev = owned.iter().map(revision_of).max().unwrap_or(0);
    let current = owned
        .iter()
        .find(|rs| {
            strip_hash_label(
                rs.pointer("/spec/template").unwrap_or(&Value::Null),
                "pod-template-hash",
            ) == template
        })
        .cloned();
    let (rs_name, revision) = match current {
        Some(rs) if revision_of(&rs) == max_rev => (md_str(&rs, "name").to_string(), max_rev),
        Some(rs) => {
            // Rollback to an older template: that ReplicaSet becomes the newest revision.
            let mut n = rs.clone();
            n["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                json!((max_rev + 1).to_string());
            n["spec"]["replicas"] = json!(replicas);
            let rsn = md_str(&rs, "name").to_string();
            let _ = inner.write(
                &rs_rt,
                "v1",
                &ns,
                &rsn,
                Some(rs),
                n,
                WriteCtx::update(MANAGER, Sub::Main),
            );
            (rsn, max_rev + 1)
        }
        None => {
            let hash = template_hash(&template, 0);
            let rsn = format!("{name}-{hash}");
            let mut t = template.clone();
            t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut labels = template
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            labels["pod-template-hash"] = json!(hash);
            let mut selector = dep.pointer("/spec/selector").cloned().unwrap_or(json!({}));
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rsn, "namespace": ns, "labels": labels,
                    "annotations": {"deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                        "deployment.kubernetes.io/max-replicas": (replicas + 1).to_string(),
                        "deployment.kubernetes.io/revision": (max_rev + 1).to_string()},
                    "ownerReferences": owner_ref(dep)},
                "spec": {"replicas": replicas, "selector": selector, "template": t},
            });
            let old = inner.get(&rs_rt, &ns, &rsn).cloned();
            let _ = inner.write(
                &rs_rt,
                "v1",
                &ns,
                &rsn,
                old,
                rs,
                WriteCtx::update(MANAGER, Sub::Main),
            );
            (rsn, max_rev + 1)
        }
    };
    // Older ReplicaSets are scaled down (the simulated rollout completes at once); history is pruned.
    let mut older: Vec<Value> = owned_by(inner, "apps/replicasets", &ns, &uid)
        .into_iter()
        .filter(|rs| md_str(rs, "name") != rs_name)
        .cloned()
        .collect();
    older.sort_by_key(revision_of);
    let limit = dep
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10)
        .max(0) as usize;
    let excess = older.len().saturating_sub(limit);
    for (i, rs) in older.into_iter().enumerate() {
        let rsn = md_str(&rs, "name").to_string();
        if i < excess {
            let _ = inner.delete(&rs_rt, &ns, &rsn, None, &Value::Null);
        } else if rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(0) {
            let mut n = rs.clone();
            n["spec"]["replicas"] = json!(0);
            let _ = inner.write(
                &rs_rt,
                "v1",
                &ns,
                &rsn,
                Some(rs),
                n,
                WriteCtx::update(MANAGER, Sub::Main),
            );
        }
    }
    if let Some(rs) = inner.get(&rs_rt, &ns, &rs_name).cloned() {
        let mut n = rs.clone();
        n["status"] = json!({"replicas": replicas, "fullyLabeledReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas, "observedGeneration": md(&rs, "generation").cloned().unwrap_or(json!(1))});
        let _ = inner.write(
            &rs_rt,
            "v1",
            &ns,
            &rs_name,
            Some(rs),
            n,
            WriteCtx::update(MANAGER, Sub::Status),
        );
    }
    let dep_rt = inner.types["apps/deployments"].clone();
    let Some(cur) = inner.get(&dep_rt, &ns, &name).cloned() else {
        return;
    };
    let mut n = cur.clone();
    n["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!(revision.to_string());
    if let Ok((after, _)) = inner.write(
        &dep_rt,
        "v1",
        &ns,
        &name,
        Some(cur),
        n,
        WriteCtx::update(MANAGER, Sub::Main),
    ) {
        let now = crate::store::now();
        let prev_conds = after.pointer("/status/conditions").cloned();
        let mut s = after.clone();
        let msg = format!("ReplicaSet {rs_name:?} has successfully progressed.");
        let keep_time = |t: &str, reason: &str| -> Value {
            prev_conds
                .as_ref()
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter().find(|c| {
                        c["type"] == t
                            && c["reason"] == reason
                            && (t != "Progressing" || c["message"] == json!(msg))
                    })
                })
                .map(|c| c["lastTransitionTime"].clone())
                .unwrap_or(json!(now))
        };
        s["status"] = json!({
            "observedGeneration": md(&after, "generation").cloned().unwrap_or(json!(1)),
            "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "lastUpdateTime": keep_time("Available", "MinimumReplicasAvailable"), "lastTransitionTime": keep_time("Available", "MinimumReplicasAvailable"), "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "lastUpdateTime": keep_time("Progressing", "NewReplicaSetAvailable"), "lastTransitionTime": keep_time("Progressing", "NewReplicaSetAvailable"), "reason": "NewReplicaSetAvailable", "message": msg}
            ]
        });
        let _ = inner.write(
            &dep_rt,
            "v1",
            &ns,
            &name,
            Some(after),
            s,
            WriteCtx::update(MANAGER, Sub::Status),
        );
    }
}

fn reconcile_revisioned(inner: &mut Inner, plural: &str, obj: &Value) {
    let ns = md_str(obj, "namespace").to_string();
    let name = md_str(obj, "name").to_string();
    let uid = md_str(obj, "uid").to_string();
    let template = obj
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let cr_rt = inner.types["apps/controllerrevisions"].clone();
    let label = if plural == "statefulsets" {
        "controller.kubernetes.io/hash"
    } else {
        "controller-revision-hash"
    };
    let owned: Vec<Value> = owned_by(inner, "apps/controllerrevisions", &ns, &uid)
        .into_iter()
        .cloned()
        .collect();
    let max_rev = owned.iter().map(revision_of).max().unwrap_or(0);
    let mut data_template = template.clone();
    data_template["$patch"] = json!("replace");
    let data = json!({"spec": {"template": data_template}});
    let existing = owned
        .iter()
        .find(|cr| cr.get("data") == Some(&data))
        .cloned();
    let (cr_name, _rev) = match existing {
        Some(cr) if revision_of(&cr) == max_rev => (md_str(&cr, "name").to_string(), max_rev),
        Some(cr) => {
            let mut n = cr.clone();
            n["revision"] = json!(max_rev + 1);
            let crn = md_str(&cr, "name").to_string();
            let _ = inner.write(
                &cr_rt,
                "v1",
                &ns,
                &crn,
                Some(cr),
                n,
                WriteCtx::update(MANAGER, Sub::Main),
            );
            (crn, max_rev + 1)
        }
        None => {
            let hash = template_hash(&template, 0);
            let crn = format!("{name}-{hash}");
            let mut labels = template
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            labels[label] = json!(hash);
            let cr = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": crn, "namespace": ns, "labels": labels, "ownerReferences": owner_ref(obj)},
                "data": data, "revision": max_rev + 1});
            let old = inner.get(&cr_rt, &ns, &crn).cloned();
            let _ = inner.write(
                &cr_rt,
                "v1",
                &ns,
                &crn,
                old,
                cr,
                WriteCtx::update(MANAGER, Sub::Main),
            );
            (crn, max_rev + 1)
        }
    };
    let rt = inner.types[&format!("apps/{plural}")].clone();
    let Some(cur) = inner.get(&rt, &ns, &name).cloned() else {
        return;
    };
    let gen = md(&cur, "generation").cloned().unwrap_or(json!(1));
    let mut n = cur.clone();
    n["status"] = if plural == "statefulsets" {
        let r = cur
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        json!({"observedGeneration": gen, "replicas": r, "readyReplicas": r, "currentReplicas": r, "updatedReplicas": r, "availableReplicas": r,
               "currentRevision": cr_name, "updateRevision": cr_name, "collisionCount": 0})
    } else {
        json!({"observedGeneration": gen, "currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0, "updatedNumberScheduled": 0})
    };
    let _ = inner.write(
        &rt,
        "v1",
        &ns,
        &name,
        Some(cur),
        n,
        WriteCtx::update(MANAGER, Sub::Status),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_is_stable_and_changes_with_the_template() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web"}]}});
        let b = json!({"metadata": {"labels": {"app": "web"}, "annotations": {"x": "1"}}, "spec": {"containers": [{"name": "web"}]}});
        assert_eq!(template_hash(&a, 0), template_hash(&a.clone(), 0));
        assert_ne!(template_hash(&a, 0), template_hash(&b, 0));
        assert!(template_hash(&a, 0)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
