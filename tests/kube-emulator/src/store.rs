//! The object store: a generic JSON store keyed by resource type, namespace and name, with one
//! cluster-wide resourceVersion counter, a bounded event history for watches, and the write pipeline
//! every verb goes through (metadata stamping, subresource masking, validation, generation,
//! managedFields, no-op detection, finalizers).

use crate::error::ApiError;
use crate::fields::{self, FieldPath, FieldSet, Schema};
use crate::resources::{self, ResourceType};
use crate::validate;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

pub const HISTORY_LIMIT: usize = 20_000;

#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub type_key: String,
    pub namespace: String,
    pub event: &'static str,
    pub object: Value,
    pub old: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sub {
    Main,
    Status,
}

impl Sub {
    pub fn name(self) -> Option<&'static str> {
        match self {
            Sub::Main => None,
            Sub::Status => Some("status"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Update,
    Apply,
}

pub struct WriteCtx<'a> {
    pub manager: &'a str,
    pub op: Op,
    pub sub: Sub,
    /// For server-side apply: the applier's new field set.
    pub apply_fields: Option<FieldSet>,
    /// Managers whose fields were taken over by a forced apply: fields to drop from them.
    pub forced: Vec<(usize, FieldSet)>,
}

pub struct Inner {
    pub rv: u64,
    pub types: BTreeMap<String, ResourceType>,
    pub objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    pub history: VecDeque<Arc<Change>>,
    /// Watches may start from any resourceVersion >= floor.
    pub floor: u64,
    pub tx: broadcast::Sender<Arc<Change>>,
    /// uid -> where the object lives (type key, namespace, name).
    uids: HashMap<String, ObjKey>,
    /// owner uid -> the objects naming it in their ownerReferences.
    dependents: HashMap<String, BTreeSet<ObjKey>>,
    /// Objects the garbage collector must look at (a change made them candidates).
    gc_queue: BTreeSet<ObjKey>,
}

/// (type key, namespace, name).
pub type ObjKey = (String, String, String);

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn md<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get("metadata").and_then(|m| m.get(key))
}

pub fn md_str<'a>(obj: &'a Value, key: &str) -> &'a str {
    md(obj, key).and_then(Value::as_str).unwrap_or("")
}

pub fn md_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").map(Value::is_object).unwrap_or(false) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata object")
}

/// The object without the parts that change on every write, for no-op detection.
fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    let m = md_mut(&mut o);
    m.remove("resourceVersion");
    if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
        for e in mf {
            if let Some(e) = e.as_object_mut() {
                e.remove("time");
            }
        }
    }
    o
}

impl Inner {
    pub fn new(tx: broadcast::Sender<Arc<Change>>) -> Self {
        let mut inner = Inner {
            rv: 100,
            types: BTreeMap::new(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            floor: 100,
            tx,
            uids: HashMap::new(),
            dependents: HashMap::new(),
            gc_queue: BTreeSet::new(),
        };
        for t in resources::builtins() {
            inner.types.insert(t.type_key(), t);
        }
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let rt = inner.types["/namespaces"].clone();
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            inner
                .write(
                    &rt,
                    "v1",
                    "",
                    ns,
                    None,
                    obj,
                    WriteCtx::update("kube-apiserver", Sub::Main),
                )
                .expect("namespace bootstrap");
        }
        for (plural, obj) in crate::auth::bootstrap_policy() {
            let rt = inner.types[&format!("rbac.authorization.k8s.io/{plural}")].clone();
            let name = md_str(&obj, "name").to_string();
            inner
                .write(
                    &rt,
                    "v1",
                    "",
                    &name,
                    None,
                    obj,
                    WriteCtx::update("kube-apiserver", Sub::Main),
                )
                .expect("RBAC bootstrap");
        }
        inner
    }

    /// Finds a served type by group, version and plural.
    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .get(&format!("{group}/{plural}"))
            .filter(|t| t.versions.iter().any(|v| v == version))
            .cloned()
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&rt.key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
    }

    /// The objects of a type, in one namespace (a range of the type's index, not a scan) or all.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<&Value> {
        let Some(m) = self.objects.get(&rt.key()) else {
            return vec![];
        };
        match ns {
            None => m.values().collect(),
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v)
                .collect(),
        }
    }

    /// Expires Events as the API server's TTL does (default one hour), and keeps at most `cap` of
    /// them, oldest first out; returns how many went.
    pub fn expire_events(&mut self, ttl: chrono::Duration, cap: usize) -> usize {
        let Some(rt) = self.types.get("/events").cloned() else {
            return 0;
        };
        let cutoff = chrono::Utc::now() - ttl;
        let mut all: Vec<(String, String, String, Value)> = self
            .objects
            .get("/events")
            .map(|m| {
                m.iter()
                    .map(|((ns, n), v)| {
                        (
                            md_str(v, "creationTimestamp").to_string(),
                            ns.clone(),
                            n.clone(),
                            v.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let over = all.len().saturating_sub(cap);
        let mut gone = 0;
        for (i, (created, ns, n, v)) in all.into_iter().enumerate() {
            let old = chrono::DateTime::parse_from_rfc3339(&created)
                .map(|t| t < cutoff)
                .unwrap_or(false);
            if i < over || old {
                self.remove_now(&rt, &ns, &n, v);
                gone += 1;
            } else {
                break;
            }
        }
        gone
    }

    fn record(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        event: &'static str,
        object: Value,
        old: Option<Value>,
    ) {
        let change = Arc::new(Change {
            rv: self.rv,
            type_key: rt.key(),
            namespace: ns.to_string(),
            event,
            object,
            old,
        });
        self.history.push_back(change.clone());
        while self.history.len() > HISTORY_LIMIT {
            if let Some(c) = self.history.pop_front() {
                self.floor = c.rv;
            }
        }
        let _ = self.tx.send(change);
    }

    /// Drops the whole event history: watches from an older resourceVersion get 410 Gone.
    pub fn expire_history(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .get("/namespaces")
            .map(|m| m.contains_key(&(String::new(), ns.to_string())))
            .unwrap_or(false)
    }

    /// The write pipeline shared by create, update, patch, apply and the built-in controllers:
    /// [`Inner::prepare_write`] then [`Inner::commit_write`]. Returns the stored object and whether
    /// it was created.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        old: Option<Value>,
        new: Value,
        ctx: WriteCtx,
    ) -> Result<(Value, bool), ApiError> {
        let new = self.prepare_write(rt, version, ns, name, old.as_ref(), new, &ctx)?;
        Ok(self.commit_write(rt, ns, name, old, new))
    }

    /// Everything a write checks and computes before it stores: metadata stamped, subresource
    /// masking, name and namespace checks, type rules (defaults, validation, schema), generation,
    /// uid and creationTimestamp for a create, managedFields. Returns the object as it would be
    /// stored (an update keeps the old resourceVersion, as admission sees it); stores nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_write(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        old: Option<&Value>,
        mut new: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        let created = old.is_none();
        new["apiVersion"] = json!(rt.api_version_for(version));
        new["kind"] = json!(rt.kind);
        {
            let m = md_mut(&mut new);
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            for k in ["selfLink", "resourceVersion"] {
                m.remove(k);
            }
        }
        // Subresource masking.
        if let Some(old) = old {
            if ctx.sub == Sub::Status {
                let status = new.get("status").cloned();
                let mut base = old.clone();
                match status {
                    Some(s) => base["status"] = s,
                    None => {
                        base.as_object_mut().expect("object").remove("status");
                    }
                }
                new = base;
            } else {
                if rt.status_subresource {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            new.as_object_mut().expect("object").remove("status");
                        }
                    }
                }
                let m = md_mut(&mut new);
                for k in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                ] {
                    match md(old, k) {
                        Some(v) => {
                            m.insert(k.into(), v.clone());
                        }
                        None => {
                            m.remove(k);
                        }
                    }
                }
            }
        } else {
            if rt.status_subresource && rt.custom {
                new.as_object_mut().expect("object").remove("status");
            }
            let m = md_mut(&mut new);
            for k in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "uid",
                "creationTimestamp",
            ] {
                m.remove(k);
            }
        }
        if created {
            let invalid = if rt.group == "rbac.authorization.k8s.io" {
                validate::validate_path_segment_name(name)
            } else {
                validate::validate_name(name, rt.plural == "namespaces")
            };
            if let Some(c) = invalid {
                return Err(ApiError::invalid(rt, name, vec![c]));
            }
            if rt.namespaced && !self.namespace_exists(ns) {
                return Err(ApiError::not_found_ns(ns));
            }
            if rt.namespaced {
                if let Some(nso) = self.get(&self.types["/namespaces"].clone(), "", ns) {
                    if md(nso, "deletionTimestamp").is_some() {
                        return Err(ApiError::forbidden_terminating(rt, name, ns));
                    }
                }
            }
        }
        self.type_rules(rt, version, old, &mut new, name)?;
        if rt.group.is_empty() && rt.plural == "namespaces" {
            // Set on every write since 1.21 (NamespaceDefaultLabelName): namespaceSelectors can
            // name a namespace by it.
            let m = md_mut(&mut new);
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }

        // generation
        if rt.has_generation {
            let old_gen = old
                .as_ref()
                .and_then(|o| md(o, "generation"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let spec_changed = match old {
                None => true,
                Some(o) => spec_part(o, rt) != spec_part(&new, rt),
            };
            let g = if spec_changed { old_gen + 1 } else { old_gen };
            md_mut(&mut new).insert("generation".into(), json!(g));
        }
        if created {
            let m = md_mut(&mut new);
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
        }
        // Go's omitempty: empty metadata lists and maps are not stored.
        let m = md_mut(&mut new);
        for k in ["labels", "annotations", "finalizers", "ownerReferences"] {
            let empty = match m.get(k) {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                m.remove(k);
            }
        }
        self.update_managed_fields(rt, version, old, &mut new, ctx);
        if let Some(o) = old {
            let rv = md_str(o, "resourceVersion").to_string();
            md_mut(&mut new).insert("resourceVersion".into(), json!(rv));
        }
        Ok(new)
    }

    /// Stores what [`Inner::prepare_write`] made of a write against `old` (still the stored object):
    /// nothing for a no-op, removal for an object being deleted whose last finalizer went, else a
    /// new resourceVersion and the watch event. Returns the stored object and whether it was
    /// created.
    pub fn commit_write(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        old: Option<Value>,
        mut new: Value,
    ) -> (Value, bool) {
        let created = old.is_none();
        if let Some(o) = &old {
            if comparable(o) == comparable(&new) {
                return (o.clone(), false);
            }
        }
        // Finalizers emptied on an object being deleted: it goes now.
        let deleting = md(&new, "deletionTimestamp").is_some();
        let finalizers_empty = md(&new, "finalizers")
            .and_then(Value::as_array)
            .map(Vec::is_empty)
            .unwrap_or(true);
        if deleting && finalizers_empty {
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("finalizers");
            }
            md_mut(&mut new).insert(
                "resourceVersion".into(),
                json!(old
                    .as_ref()
                    .map(|o| md_str(o, "resourceVersion").to_string())
                    .unwrap_or_default()),
            );
            self.remove_now(rt, ns, name, new.clone());
            return (new, false);
        }
        self.rv += 1;
        md_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.put(rt, ns, name, new.clone());
        let ev = if created { "ADDED" } else { "MODIFIED" };
        self.record(rt, ns, ev, new.clone(), old);
        if rt.plural == "customresourcedefinitions" {
            self.register_crd(&new);
        }
        (new, created)
    }

    /// Removes an object from the store immediately and records DELETED.
    pub fn remove_now(&mut self, rt: &ResourceType, ns: &str, name: &str, mut last: Value) {
        let old = self
            .objects
            .get_mut(&rt.key())
            .and_then(|m| m.remove(&(ns.to_string(), name.to_string())));
        let Some(gone) = &old else {
            return;
        };
        self.unindex(rt, ns, name, gone);
        // Its dependents may now be garbage; a terminating namespace may now be empty.
        let uid = md_str(gone, "uid").to_string();
        if let Some(deps) = self.dependents.get(&uid) {
            self.gc_queue.extend(deps.iter().cloned());
        }
        let terminating = !ns.is_empty()
            && self
                .objects
                .get("/namespaces")
                .and_then(|m| m.get(&(String::new(), ns.to_string())))
                .is_some_and(|n| md(n, "deletionTimestamp").is_some());
        if terminating {
            self.gc_queue
                .insert(("/namespaces".into(), String::new(), ns.to_string()));
        }
        self.rv += 1;
        md_mut(&mut last).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.record(rt, ns, "DELETED", last, old);
        if rt.plural == "customresourcedefinitions" {
            self.unregister_crd(name);
        }
    }

    fn type_rules(
        &self,
        rt: &ResourceType,
        version: &str,
        old: Option<&Value>,
        new: &mut Value,
        name: &str,
    ) -> Result<(), ApiError> {
        let mut causes = vec![];
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "secrets") => {
                validate::fold_string_data(new);
                causes.extend(validate::validate_secret(new, old));
            }
            ("", "configmaps") => {}
            ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => {
                causes.extend(crate::admission::config::default_and_validate(new)?);
            }
            ("", "events") if new.get("source").is_none() => {
                new["source"] = json!({});
            }
            ("", "namespaces") => {
                if new.pointer("/spec/finalizers").is_none() {
                    new["spec"] = json!({"finalizers": ["kubernetes"]});
                }
                if new.pointer("/status/phase").is_none() {
                    new["status"] = json!({"phase": "Active"});
                }
            }
            ("apps", "deployments")
            | ("apps", "statefulsets")
            | ("apps", "daemonsets")
            | ("apps", "replicasets") => {
                crate::workloads::default_workload(&rt.plural, new);
                if old.is_none() {
                    new["status"] = match rt.plural.as_str() {
                        "statefulsets" => json!({"replicas": 0, "availableReplicas": 0}),
                        "daemonsets" => {
                            json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0})
                        }
                        _ => json!({}),
                    };
                }
                if rt.plural == "daemonsets" {
                    // The DaemonSet controller's template generation, bumped on each template change.
                    let prev: i64 = old
                        .and_then(|o| {
                            o.pointer(
                                "/metadata/annotations/deprecated.daemonset.template.generation",
                            )
                        })
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let changed = old
                        .map(|o| o.pointer("/spec/template") != new.pointer("/spec/template"))
                        .unwrap_or(true);
                    let g = if changed { prev + 1 } else { prev };
                    let m = md_mut(new);
                    let ann = m.entry("annotations").or_insert_with(|| json!({}));
                    ann["deprecated.daemonset.template.generation"] = json!(g.to_string());
                }
                if new.pointer("/spec/template").is_none()
                    || new.pointer("/spec/selector").is_none()
                {
                    causes.push(validate::Cause {
                        reason: "FieldValueRequired",
                        message: "Required value".into(),
                        field: "spec.selector".into(),
                    });
                }
                if let Some(o) = old {
                    if o.pointer("/spec/selector") != new.pointer("/spec/selector") {
                        causes.push(validate::Cause {
                            reason: "FieldValueInvalid",
                            message: "Invalid value: field is immutable".into(),
                            field: "spec.selector".into(),
                        });
                    }
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                if resources::from_crd(new).is_none() {
                    causes.push(validate::Cause {
                        reason: "FieldValueRequired",
                        message: "Required value".into(),
                        field: "spec".into(),
                    });
                } else {
                    let spec = new.get_mut("spec").expect("spec");
                    let kind = spec
                        .pointer("/names/kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    if spec.pointer("/names/listKind").is_none() {
                        spec["names"]["listKind"] = json!(format!("{kind}List"));
                    }
                    if spec.pointer("/names/singular").is_none() {
                        spec["names"]["singular"] = json!(kind.to_lowercase());
                    }
                    if spec.get("conversion").is_none() {
                        spec["conversion"] = json!({"strategy": "None"});
                    }
                    let expect = format!(
                        "{}.{}",
                        spec.pointer("/names/plural")
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                        spec.get("group").and_then(Value::as_str).unwrap_or("")
                    );
                    if expect != name {
                        causes.push(validate::Cause {
                            reason: "FieldValueInvalid",
                            message: format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
                            field: "metadata.name".into(),
                        });
                    }
                }
                if old.is_none() && new.get("status").is_none() {
                    let stored = resources::stored_versions(new);
                    new["status"] = json!({"conditions": null, "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": stored});
                }
            }
            _ => {}
        }
        if let Some(schema) = rt.schema(version) {
            validate::prune_and_default(schema, new, true);
            causes.extend(validate::validate_schema(schema, new));
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(rt, name, causes))
        }
    }

    fn update_managed_fields(
        &self,
        rt: &ResourceType,
        version: &str,
        old: Option<&Value>,
        new: &mut Value,
        ctx: &WriteCtx,
    ) {
        let schema = Schema { rt, version };
        let only_status = ctx.sub == Sub::Status;
        // Managed fields the request itself carries replace the stored ones (how clients migrate
        // or clear ownership), for a create, update or patch of the main resource, as the real
        // server decodes them: `[]` or `[{}]` resets them; a list that does not decode (an entry
        // that is no object, an operation other than Apply or Update, a fieldsType other than
        // FieldsV1) or none keeps the stored ones (clients unaware of the field never strip it).
        let given: Option<Vec<Value>> = (ctx.op == Op::Update && ctx.sub == Sub::Main)
            .then(|| md(new, "managedFields").and_then(Value::as_array).cloned())
            .flatten()
            .and_then(|l| {
                let reset = l.is_empty() || (l.len() == 1 && l[0] == json!({}));
                let decodes = l.iter().all(|e| {
                    e.is_object()
                        && matches!(
                            e.get("operation").and_then(Value::as_str),
                            Some("Apply" | "Update")
                        )
                        && e.get("fieldsType").and_then(Value::as_str) == Some("FieldsV1")
                });
                if reset {
                    Some(vec![])
                } else {
                    decodes.then_some(l)
                }
            });
        let mut entries: Vec<Value> = given.unwrap_or_else(|| {
            old.and_then(|o| md(o, "managedFields"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        });
        let sub_name = ctx.sub.name();
        let sub_of = |e: &Value| {
            e.get("subresource")
                .and_then(Value::as_str)
                .map(String::from)
        };
        let mut sets: Vec<FieldSet> = entries
            .iter()
            .map(|e| fields::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null)))
            .collect();
        for (i, drop) in &ctx.forced {
            if let Some(s) = sets.get_mut(*i) {
                s.retain(|p| !drop.contains(p));
            }
        }
        let (mine_op, mine_set) = match ctx.op {
            Op::Apply => ("Apply", ctx.apply_fields.clone().unwrap_or_default()),
            Op::Update => {
                let before = old
                    .map(|o| fields::collect(o, &schema, only_status, true))
                    .unwrap_or_default();
                let after = fields::collect(new, &schema, only_status, true);
                let changed: FieldSet = after
                    .iter()
                    .filter(|p| {
                        let is_node = p.last().map(String::as_str) == Some(".");
                        if is_node {
                            !before.contains(*p)
                        } else {
                            old.and_then(|o| fields::get_at(o, p)) != fields::get_at(new, p)
                        }
                    })
                    .cloned()
                    .collect();
                // Changed fields move to this manager.
                for (i, e) in entries.iter().enumerate() {
                    if e.get("manager").and_then(Value::as_str) != Some(ctx.manager)
                        || e.get("operation").and_then(Value::as_str) != Some("Update")
                    {
                        sets[i].retain(|p| {
                            !changed.contains(p) || p.last().map(String::as_str) == Some(".")
                        });
                    }
                }
                let prev = entries
                    .iter()
                    .position(|e| {
                        e.get("manager").and_then(Value::as_str) == Some(ctx.manager)
                            && e.get("operation").and_then(Value::as_str) == Some("Update")
                            && sub_of(e).as_deref() == sub_name
                    })
                    .map(|i| sets[i].clone())
                    .unwrap_or_default();
                ("Update", prev.union(&changed).cloned().collect())
            }
        };
        let idx = entries.iter().position(|e| {
            e.get("manager").and_then(Value::as_str) == Some(ctx.manager)
                && e.get("operation").and_then(Value::as_str) == Some(mine_op)
                && sub_of(e).as_deref() == sub_name
        });
        let mine_changed = idx.map(|i| sets[i] != mine_set).unwrap_or(true);
        match idx {
            Some(i) => sets[i] = mine_set,
            None => {
                let mut e = json!({"manager": ctx.manager, "operation": mine_op, "apiVersion": rt.api_version_for(version), "time": now(), "fieldsType": "FieldsV1"});
                if let Some(s) = sub_name {
                    e["subresource"] = json!(s);
                }
                entries.push(e);
                sets.push(mine_set);
            }
        }
        // Drop fields that no longer exist in the object (a Secret's stringData is kept as
        // written, though folded into data, as the real server keeps it).
        let string_data = |p: &FieldPath| {
            rt.plural == "secrets" && p.first().map(String::as_str) == Some("f:stringData")
        };
        let mut out = vec![];
        for (i, mut e) in entries.into_iter().enumerate() {
            let set: FieldSet = sets[i]
                .iter()
                .filter(|p| fields::get_at(new, p).is_some() || string_data(p))
                .cloned()
                .collect();
            if set.is_empty() {
                continue;
            }
            let is_mine = Some(i) == idx || (idx.is_none() && i == sets.len() - 1);
            let prev_fields = e.get("fieldsV1").cloned();
            let fv1 = fields::to_fields_v1(&set);
            if is_mine && (mine_changed || prev_fields.as_ref() != Some(&fv1)) {
                e["time"] = json!(now());
            }
            e["fieldsV1"] = fv1;
            out.push(e);
        }
        out.sort_by(|a, b| {
            let k = |e: &Value| {
                (
                    e.get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    e.get("subresource").is_some(),
                )
            };
            k(a).cmp(&k(b))
        });
        let m = md_mut(new);
        if out.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(out));
        }
    }

    fn register_crd(&mut self, crd: &Value) {
        if md(crd, "deletionTimestamp").is_some() {
            return;
        }
        if let Some(rt) = resources::from_crd(crd) {
            self.types.insert(rt.type_key(), rt);
        }
    }

    fn unregister_crd(&mut self, name: &str) {
        let Some((plural, group)) = name.split_once('.') else {
            return;
        };
        let key = format!("{group}/{plural}");
        if let Some(rt) = self.types.get(&key).cloned() {
            if !rt.custom {
                return;
            }
            let objs: Vec<((String, String), Value)> = self
                .objects
                .get(&key)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            for ((ns, n), v) in objs {
                self.remove_now(&rt, &ns, &n, v);
            }
            self.types.remove(&key);
        }
    }

    /// DELETE: finalizers keep the object (with deletionTimestamp) until they are removed.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        propagation: Option<&str>,
        pre: &Value,
    ) -> Result<Value, ApiError> {
        let Some(old) = self.get(rt, ns, name).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        delete_preconditions(rt, name, &old, pre)?;
        let mut new = old.clone();
        let mut finalizers: Vec<Value> = md(&old, "finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let extra = match propagation {
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Orphan") => Some("orphan"),
            _ => None,
        };
        let has_dependents = self.has_dependents(md_str(&old, "uid"));
        if let Some(f) = extra {
            if has_dependents && !finalizers.iter().any(|x| x == f) {
                finalizers.push(json!(f));
            }
        }
        if rt.plural == "namespaces" && !self.namespace_empty(name) {
            // Namespaces are finalized by the namespace controller once their contents are gone.
            let m = md_mut(&mut new);
            if !m.contains_key("deletionTimestamp") {
                m.insert("deletionTimestamp".into(), json!(now()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                new["status"] = json!({"phase": "Terminating"});
                self.rv += 1;
                md_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
                self.put(rt, ns, name, new.clone());
                self.record(rt, ns, "MODIFIED", new.clone(), Some(old));
            }
            return Ok(new);
        }
        if finalizers.is_empty() {
            self.remove_now(rt, ns, name, new.clone());
            return Ok(new);
        }
        let m = md_mut(&mut new);
        m.insert("finalizers".into(), Value::Array(finalizers));
        if m.contains_key("deletionTimestamp") && md(&old, "finalizers") == md(&new, "finalizers") {
            return Ok(old);
        }
        let m = md_mut(&mut new);
        if !m.contains_key("deletionTimestamp") {
            m.insert("deletionTimestamp".into(), json!(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if rt.has_generation {
                let g = m.get("generation").and_then(Value::as_i64).unwrap_or(0);
                m.insert("generation".into(), json!(g + 1));
            }
        }
        self.rv += 1;
        md_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.put(rt, ns, name, new.clone());
        self.record(rt, ns, "MODIFIED", new.clone(), Some(old));
        Ok(new)
    }

    pub fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// The objects of a namespace (every namespaced type), without scanning other namespaces.
    fn namespace_contents(&self, ns: &str) -> Vec<ObjKey> {
        let lo = (ns.to_string(), String::new());
        let mut out = vec![];
        for (k, m) in &self.objects {
            if k == "/namespaces" {
                continue;
            }
            for ((n, name), _) in m.range(lo.clone()..) {
                if n != ns {
                    break;
                }
                out.push((k.clone(), n.clone(), name.clone()));
            }
        }
        out
    }

    fn namespace_empty(&self, ns: &str) -> bool {
        self.namespace_contents(ns).is_empty()
    }

    /// Stores an object and keeps the garbage collector's indexes (uids, dependents) current.
    fn put(&mut self, rt: &ResourceType, ns: &str, name: &str, obj: Value) {
        let prev = self
            .objects
            .entry(rt.key())
            .or_default()
            .insert((ns.to_string(), name.to_string()), obj);
        if let Some(p) = prev {
            self.unindex(rt, ns, name, &p);
        }
        let key: ObjKey = (rt.key(), ns.to_string(), name.to_string());
        let Some(obj) = self.get(rt, ns, name).cloned() else {
            return;
        };
        self.uids
            .insert(md_str(&obj, "uid").to_string(), key.clone());
        let owners = owner_uids(&obj);
        for o in &owners {
            self.dependents
                .entry(o.clone())
                .or_default()
                .insert(key.clone());
        }
        // A candidate when an owner may be gone or it is being deleted.
        if md(&obj, "deletionTimestamp").is_some()
            || owners.iter().any(|o| !self.uids.contains_key(o))
        {
            self.gc_queue.insert(key);
        }
    }

    fn unindex(&mut self, rt: &ResourceType, ns: &str, name: &str, obj: &Value) {
        let key: ObjKey = (rt.key(), ns.to_string(), name.to_string());
        let uid = md_str(obj, "uid");
        if self.uids.get(uid) == Some(&key) {
            self.uids.remove(uid);
        }
        for o in owner_uids(obj) {
            if let Some(d) = self.dependents.get_mut(&o) {
                d.remove(&key);
                if d.is_empty() {
                    self.dependents.remove(&o);
                }
            }
        }
    }

    /// Objects the collector still has to look at (for tests and the micro-benchmark).
    pub fn gc_pending(&self) -> usize {
        self.gc_queue.len()
    }

    /// One pass of the garbage collector and namespace finalizer over the objects that changes made
    /// candidates (not the whole store); returns whether it changed anything.
    pub fn collect_garbage(&mut self) -> bool {
        let mut changed = false;
        let queue = std::mem::take(&mut self.gc_queue);
        for (key, ns, name) in queue {
            let Some(rt) = self.types.get(&key).cloned() else {
                continue;
            };
            let Some(obj) = self.get(&rt, &ns, &name).cloned() else {
                continue;
            };
            let uid = md_str(&obj, "uid").to_string();
            let owners = owner_uids(&obj);
            let deleting = md(&obj, "deletionTimestamp").is_some();
            if !owners.is_empty() && owners.iter().all(|u| !self.uids.contains_key(u)) && !deleting
            {
                let _ = self.delete(&rt, &ns, &name, Some("Background"), &Value::Null);
                changed = true;
                continue;
            }
            if !deleting {
                continue;
            }
            let fins: Vec<String> = md(&obj, "finalizers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let deps: Vec<ObjKey> = self
                .dependents
                .get(&uid)
                .map(|d| d.iter().cloned().collect())
                .unwrap_or_default();
            if fins.iter().any(|f| f == "foregroundDeletion") {
                let mut remaining = false;
                for (dk, dns, dn) in &deps {
                    if let Some(drt) = self.types.get(dk).cloned() {
                        if self.get(&drt, dns, dn).is_some() {
                            remaining = true;
                            let _ = self.delete(&drt, dns, dn, Some("Foreground"), &Value::Null);
                            changed = true;
                        }
                    }
                }
                if remaining {
                    // Look again once the dependents are gone (their removal queues us too).
                    self.gc_queue
                        .insert((key.clone(), ns.clone(), name.clone()));
                } else {
                    self.drop_finalizer(&rt, &ns, &name, "foregroundDeletion");
                    changed = true;
                }
            }
            if fins.iter().any(|f| f == "orphan") {
                for (dk, dns, dn) in &deps {
                    let (Some(drt), Some(d)) = (
                        self.types.get(dk).cloned(),
                        self.types
                            .get(dk)
                            .and_then(|t| self.get(t, dns, dn))
                            .cloned(),
                    ) else {
                        continue;
                    };
                    let mut nd = d.clone();
                    if let Some(refs) = md_mut(&mut nd)
                        .get_mut("ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(&uid));
                    }
                    let _ = self.write(
                        &drt,
                        &drt.version.clone(),
                        dns,
                        dn,
                        Some(d),
                        nd,
                        WriteCtx::update("kube-controller-manager", Sub::Main),
                    );
                }
                self.drop_finalizer(&rt, &ns, &name, "orphan");
                changed = true;
            }
            if rt.plural == "namespaces" {
                let contents = self.namespace_contents(&name);
                if contents.is_empty() {
                    self.remove_now(&rt, "", &name, obj.clone());
                } else {
                    for (dk, dns, dn) in contents {
                        if let Some(drt) = self.types.get(&dk).cloned() {
                            if self
                                .get(&drt, &dns, &dn)
                                .map(|o| md(o, "deletionTimestamp").is_none())
                                .unwrap_or(false)
                            {
                                let _ =
                                    self.delete(&drt, &dns, &dn, Some("Background"), &Value::Null);
                            }
                        }
                    }
                }
                changed = true;
            }
        }
        changed
    }

    fn drop_finalizer(&mut self, rt: &ResourceType, ns: &str, name: &str, fin: &str) {
        let Some(old) = self.get(rt, ns, name).cloned() else {
            return;
        };
        let mut new = old.clone();
        if let Some(f) = md_mut(&mut new)
            .get_mut("finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x != fin);
        }
        let _ = self.write(
            rt,
            &rt.version.clone(),
            ns,
            name,
            Some(old),
            new,
            WriteCtx::update("kube-controller-manager", Sub::Main),
        );
    }
}

/// A DELETE's preconditions (`uid`, `resourceVersion`) against the stored object: 409 when one
/// does not hold.
pub fn delete_preconditions(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    pre: &Value,
) -> Result<(), ApiError> {
    for (key, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        let Some(want) = pre.get(key).and_then(Value::as_str) else {
            continue;
        };
        let got = md_str(old, key);
        if want != got {
            return Err(ApiError::conflict_precondition(rt, name, what, want, got));
        }
    }
    Ok(())
}

pub fn owner_uids(o: &Value) -> Vec<String> {
    md(o, "ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// What counts as "spec" for metadata.generation.
fn spec_part(o: &Value, rt: &ResourceType) -> Value {
    if rt.plural == "validatingwebhookconfigurations" {
        return o.get("webhooks").cloned().unwrap_or(Value::Null);
    }
    if rt.custom {
        let mut c = o.clone();
        if let Some(m) = c.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        c
    } else {
        o.get("spec").cloned().unwrap_or(Value::Null)
    }
}

impl WriteCtx<'_> {
    pub fn update(manager: &str, sub: Sub) -> WriteCtx<'_> {
        WriteCtx {
            manager,
            op: Op::Update,
            sub,
            apply_fields: None,
            forced: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner() -> Inner {
        let (tx, _) = broadcast::channel(1024);
        Inner::new(tx)
    }

    fn cm(inner: &mut Inner, ns: &str, name: &str, owner: Option<&str>) -> Value {
        let rt = inner.types["/configmaps"].clone();
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}});
        if let Some(o) = owner {
            obj["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": o}]);
        }
        inner
            .write(
                &rt,
                "v1",
                ns,
                name,
                None,
                obj,
                WriteCtx::update("test", Sub::Main),
            )
            .unwrap()
            .0
    }

    #[test]
    fn garbage_collection_looks_only_at_what_changes_made_candidates() {
        let mut s = inner();
        let owner = cm(&mut s, "default", "owner", None);
        let uid = md_str(&owner, "uid").to_string();
        cm(&mut s, "default", "dependent", Some(&uid));
        for i in 0..500 {
            cm(&mut s, "default", &format!("unrelated-{i}"), None);
        }
        assert_eq!(s.gc_pending(), 0, "writes with live owners queue nothing");
        assert!(s.has_dependents(&uid));
        let rt = s.types["/configmaps"].clone();
        s.delete(&rt, "default", "owner", None, &Value::Null)
            .unwrap();
        assert_eq!(
            s.gc_pending(),
            1,
            "only the owner's dependent is a candidate"
        );
        assert!(s.collect_garbage());
        assert!(s.get(&rt, "default", "dependent").is_none());
        assert!(!s.collect_garbage(), "nothing left to look at");
        assert_eq!(s.list(&rt, Some("default")).len(), 500);
        assert_eq!(s.list(&rt, Some("kube-system")).len(), 0);
    }

    #[test]
    fn events_expire_like_the_api_servers_ttl_and_are_capped() {
        let mut s = inner();
        let rt = s.types["/events"].clone();
        for i in 0..30 {
            let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": format!("e{i:02}"), "namespace": "default"},
                            "involvedObject": {"kind": "ConfigMap", "name": "x"}, "reason": "R", "message": "m"});
            s.write(
                &rt,
                "v1",
                "default",
                &format!("e{i:02}"),
                None,
                ev,
                WriteCtx::update("test", Sub::Main),
            )
            .unwrap();
        }
        assert_eq!(s.expire_events(chrono::Duration::hours(1), 20), 10);
        assert_eq!(s.list(&rt, None).len(), 20);
        assert_eq!(
            s.expire_events(chrono::Duration::zero() - chrono::Duration::seconds(5), 100),
            20,
            "older than the TTL"
        );
    }
}
