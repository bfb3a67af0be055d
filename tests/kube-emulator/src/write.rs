//! The write verbs: create, update, patch (JSON, merge, strategic merge), server-side apply,
//! delete and deletecollection. Each write is prepared under the store lock (the object read,
//! merged or patched, defaulted and validated as it would be stored), admitted by the validating
//! webhooks with the lock released, and committed under the lock again, as the API server's
//! GuaranteedUpdate does: a write that lost a race to another writer while its webhooks ran is
//! prepared and admitted again from what is stored now.

use crate::admission::{self, Operation};
use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::events;
use crate::fields::{self, Schema};
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{qbool, storage, AppState, Target};
use crate::store::{self, md, md_mut, md_str, Inner, Op, Sub, WriteCtx};
use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;

/// A write request as the verbs see it.
pub(crate) struct WriteReq<'a> {
    /// The type as requested (events.k8s.io Events are stored as core Events).
    pub rt: &'a ResourceType,
    pub t: &'a Target,
    pub sub: Sub,
    pub user: &'a UserInfo,
    /// The field manager: `fieldManager`, or the client's name from its user agent.
    pub manager: &'a str,
    pub q: &'a HashMap<String, String>,
    pub dry_run: bool,
    /// Warnings from admission webhooks, for the response's `Warning` headers.
    pub warnings: std::sync::Mutex<Vec<String>>,
}

impl WriteReq<'_> {
    fn ns(&self) -> &str {
        self.t.namespace.as_deref().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.t.name.as_deref().unwrap_or("")
    }
    fn view(&self, stored: &Value) -> Value {
        events::to_view(self.rt, &self.t.version, stored)
    }
    /// The options admission is shown (CreateOptions, UpdateOptions or DeleteOptions).
    fn options(&self, kind: &str) -> Value {
        let mut o = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
        if self.dry_run {
            o["dryRun"] = json!(["All"]);
        }
        if let Some(m) = self
            .q
            .get("fieldManager")
            .filter(|_| kind != "DeleteOptions")
        {
            o["fieldManager"] = json!(m);
        }
        o
    }
    /// Admission's view of this request; a Namespace's requests carry its name as namespace.
    fn attributes(
        &self,
        op: Operation,
        name: &str,
        new: Option<Value>,
        old: Option<Value>,
    ) -> admission::Attributes {
        let is_namespace = self.t.group.is_empty() && self.t.plural == "namespaces";
        let namespace = if is_namespace { self.name() } else { self.ns() };
        let options = match op {
            Operation::Create => self.options("CreateOptions"),
            Operation::Update => self.options("UpdateOptions"),
            Operation::Delete => self.options("DeleteOptions"),
        };
        admission::Attributes {
            operation: op,
            group: self.t.group.clone(),
            version: self.t.version.clone(),
            versions: self.rt.versions.clone(),
            resource: self.t.plural.clone(),
            subresource: self.t.sub.clone().unwrap_or_default(),
            kind: self.rt.kind.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            object: new.map(|o| self.view(&o)),
            old_object: old.map(|o| self.view(&o)),
            user: self.user.clone(),
            dry_run: self.dry_run,
            options,
        }
    }
    /// Runs the webhooks, if any are configured, on what `attrs` makes; their warnings are kept
    /// for the response.
    async fn admit(
        &self,
        state: &AppState,
        attrs: impl FnOnce() -> admission::Attributes,
    ) -> Result<(), ApiError> {
        if !admission::configured(&state.lock()) {
            return Ok(());
        }
        let decision = admission::validate(state, &attrs()).await;
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(decision.warnings);
        decision.denied.map_or(Ok(()), Err)
    }
}

/// A write prepared under the store lock and not made yet.
struct Planned {
    /// The stored object it was computed from (none for a create).
    old: Option<Value>,
    /// The object as it would be stored.
    new: Value,
    /// The name admission is told: a create's as sent (empty for generateName), else the URL's.
    name: String,
    code: StatusCode,
}

/// How often a write that keeps losing races to other writers is prepared again before it gives
/// up with 409 Conflict.
const MAX_ATTEMPTS: usize = 10;

/// Prepare (under the lock), admit (without it), commit (under it again, unless a dry run).
async fn admitted(
    state: &AppState,
    w: &WriteReq<'_>,
    srt: &ResourceType,
    name: &str,
    prepare: impl Fn(&Inner) -> Result<Planned, ApiError>,
) -> Result<(StatusCode, Value), ApiError> {
    for _ in 0..MAX_ATTEMPTS {
        let p = prepare(&state.lock())?;
        let op = if p.old.is_some() {
            Operation::Update
        } else {
            Operation::Create
        };
        w.admit(state, || {
            w.attributes(op, &p.name, Some(p.new.clone()), p.old.clone())
        })
        .await?;
        if w.dry_run {
            return Ok((p.code, w.view(&p.new)));
        }
        let mut inner = state.lock();
        if still_current(&inner, srt, w.ns(), name, p.old.as_ref()) {
            let (v, _) = inner.commit_write(srt, w.ns(), name, p.old, p.new);
            return Ok((p.code, w.view(&v)));
        }
    }
    Err(ApiError::conflict(w.rt, name))
}

/// Whether the store still holds what a write was prepared from (nothing, for a create, in a
/// namespace that still exists).
fn still_current(
    inner: &Inner,
    srt: &ResourceType,
    ns: &str,
    name: &str,
    old: Option<&Value>,
) -> bool {
    let rv = |o| md_str(o, "resourceVersion");
    match (inner.get(srt, ns, name), old) {
        (None, None) => !srt.namespaced || inner.namespace_exists(ns),
        (Some(cur), Some(old)) => rv(cur) == rv(old),
        _ => false,
    }
}

/// The name a create stores under: the object's, or one made from its generateName.
fn name_for_create(rt: &ResourceType, obj: &mut Value) -> Result<String, ApiError> {
    let name = md_str(obj, "name").to_string();
    if !name.is_empty() {
        return Ok(name);
    }
    let gen = md_str(obj, "generateName").to_string();
    if gen.is_empty() {
        return Err(ApiError::invalid(
            rt,
            "",
            vec![crate::validate::Cause {
                reason: "FieldValueRequired",
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            }],
        ));
    }
    let suffix: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect();
    let name = format!("{gen}{suffix}");
    md_mut(obj).insert("name".into(), json!(name));
    Ok(name)
}

pub(crate) async fn create(
    state: &AppState,
    w: &WriteReq<'_>,
    body: &Bytes,
    ctype: &str,
) -> Result<(StatusCode, Value), ApiError> {
    let mut obj = parse_body(body, ctype)?;
    check_kind(w.rt, &w.t.version, &obj)?;
    if let Some(bns) = md(&obj, "namespace").and_then(Value::as_str) {
        if w.rt.namespaced && !bns.is_empty() && bns != w.ns() {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
    }
    let sent_name = md_str(&obj, "name").to_string();
    let name = name_for_create(w.rt, &mut obj)?;
    let srt = storage(state, w.rt);
    let obj = events::from_view(w.rt, obj);
    admitted(state, w, &srt, &name, |inner| {
        if inner.get(&srt, w.ns(), &name).is_some() {
            return Err(ApiError::already_exists(w.rt, &name));
        }
        let ctx = WriteCtx::update(w.manager, Sub::Main);
        let version = &w.t.version;
        let new = inner.prepare_write(&srt, version, w.ns(), &name, None, obj.clone(), &ctx)?;
        let (name, code) = (sent_name.clone(), StatusCode::CREATED);
        Ok(Planned {
            old: None,
            new,
            name,
            code,
        })
    })
    .await
}

pub(crate) async fn update(
    state: &AppState,
    w: &WriteReq<'_>,
    body: &Bytes,
) -> Result<(StatusCode, Value), ApiError> {
    let obj = parse_body(body, "application/json")?;
    check_kind(w.rt, &w.t.version, &obj)?;
    let name = w.name();
    if md_str(&obj, "name") != name && !md_str(&obj, "name").is_empty() {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let srt = storage(state, w.rt);
    let obj = events::from_view(w.rt, obj);
    admitted(state, w, &srt, name, |inner| {
        let Some(old) = inner.get(&srt, w.ns(), name).cloned() else {
            return Err(ApiError::not_found(w.rt, name));
        };
        let rv = md_str(&obj, "resourceVersion");
        if !rv.is_empty() && rv != md_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(w.rt, name));
        }
        let ctx = WriteCtx::update(w.manager, w.sub);
        let version = &w.t.version;
        let new =
            inner.prepare_write(&srt, version, w.ns(), name, Some(&old), obj.clone(), &ctx)?;
        let (name, code) = (name.to_string(), StatusCode::OK);
        Ok(Planned {
            old: Some(old),
            new,
            name,
            code,
        })
    })
    .await
}

pub(crate) async fn patch(
    state: &AppState,
    w: &WriteReq<'_>,
    body: &Bytes,
    ctype: &str,
) -> Result<(StatusCode, Value), ApiError> {
    let ct = ctype.split(';').next().unwrap_or("").trim();
    if ct == "application/apply-patch+yaml" {
        return apply(state, w, body).await;
    }
    let srt = storage(state, w.rt);
    let name = w.name();
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    admitted(state, w, &srt, name, |inner| {
        let Some(old) = inner.get(&srt, w.ns(), name).cloned() else {
            return Err(ApiError::not_found(w.rt, name));
        };
        let view = w.view(&old);
        let new = patched(w.rt, ct, &view, &patch)?;
        if md_str(&new, "resourceVersion") != md_str(&view, "resourceVersion")
            && !md_str(&new, "resourceVersion").is_empty()
        {
            return Err(ApiError::conflict(w.rt, name));
        }
        let new = events::from_view(w.rt, new);
        let ctx = WriteCtx::update(w.manager, w.sub);
        let version = &w.t.version;
        let new = inner.prepare_write(&srt, version, w.ns(), name, Some(&old), new, &ctx)?;
        let (name, code) = (name.to_string(), StatusCode::OK);
        Ok(Planned {
            old: Some(old),
            new,
            name,
            code,
        })
    })
    .await
}

/// `view` with a JSON Patch, JSON merge patch or strategic merge patch applied.
fn patched(rt: &ResourceType, ct: &str, view: &Value, patch: &Value) -> Result<Value, ApiError> {
    let new = match ct {
        "application/merge-patch+json" => {
            let mut n = view.clone();
            json_patch::merge(&mut n, patch);
            n
        }
        "application/json-patch+json" => {
            // As the API server's JSON Patch library does: `test` for null passes on a missing path.
            let mut patch = patch.clone();
            if let Some(ops) = patch.as_array_mut() {
                ops.retain(|op| {
                    !(op["op"] == "test" && op["value"].is_null() && op["path"].as_str().map(|p| view.pointer(p).is_none()).unwrap_or(false))
                });
            }
            let p: json_patch::Patch = serde_json::from_value(patch).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let mut n = view.clone();
            json_patch::patch(&mut n, &p).map_err(|_| ApiError { details: Some(json!({})), ..ApiError::new(422, "Invalid", "the server rejected our request due to an error in our request") })?;
            n
        }
        "application/strategic-merge-patch+json" => {
            if rt.custom {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            crate::smp::apply(view, patch).map_err(ApiError::bad_request)?
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"),
            ))
        }
    };
    Ok(new)
}

pub(crate) fn parse_body(body: &Bytes, ctype: &str) -> Result<Value, ApiError> {
    if ctype.contains("yaml") {
        let s = std::str::from_utf8(body)
            .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
        serde_yaml::from_str::<Value>(s)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    }
}

fn check_kind(rt: &ResourceType, version: &str, obj: &Value) -> Result<(), ApiError> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if (!kind.is_empty() && kind != rt.kind)
        || (!av.is_empty() && av != rt.api_version_for(version))
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rt.api_version_for(version)
        )));
    }
    Ok(())
}

/// Server-side apply.
async fn apply(
    state: &AppState,
    w: &WriteReq<'_>,
    body: &Bytes,
) -> Result<(StatusCode, Value), ApiError> {
    if w.manager.is_empty() || w.manager == "unknown" {
        return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
    }
    let name = w.name();
    let mut applied = parse_body(body, "yaml")?;
    if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
        return Err(ApiError::bad_request(
            "invalid object type: apiVersion and kind must be set for apply",
        ));
    }
    check_kind(w.rt, &w.t.version, &applied)?;
    if !md_str(&applied, "name").is_empty() && md_str(&applied, "name") != name {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let want_rv = md_str(&applied, "resourceVersion").to_string();
    {
        let m = md_mut(&mut applied);
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
    let applied = events::from_view(w.rt, applied);
    let srt = storage(state, w.rt);
    let force = qbool(w.q, "force");
    admitted(state, w, &srt, name, |inner| {
        plan_apply(inner, w, &srt, &applied, &want_rv, force)
    })
    .await
}

/// An apply against what is stored now: a create, or the applied fields merged into the stored
/// object with ownership (conflicts unless forced, fields this manager stopped applying removed).
fn plan_apply(
    inner: &Inner,
    w: &WriteReq<'_>,
    srt: &ResourceType,
    applied: &Value,
    want_rv: &str,
    force: bool,
) -> Result<Planned, ApiError> {
    let (ns, name, version) = (w.ns(), w.name(), &w.t.version);
    let schema = Schema { rt: srt, version };
    // Fields are tracked as written (a Secret's stringData stays stringData in managedFields).
    let new_set = fields::collect(applied, &schema, w.sub == Sub::Status, false);
    let ctx = |forced| WriteCtx {
        manager: w.manager,
        op: Op::Apply,
        sub: w.sub,
        apply_fields: Some(new_set.clone()),
        forced,
    };
    let Some(old) = inner.get(srt, ns, name).cloned() else {
        if w.sub == Sub::Status {
            return Err(ApiError::not_found(w.rt, name));
        }
        let new =
            inner.prepare_write(srt, version, ns, name, None, applied.clone(), &ctx(vec![]))?;
        let (name, code) = (name.to_string(), StatusCode::CREATED);
        return Ok(Planned {
            old: None,
            new,
            name,
            code,
        });
    };
    if !want_rv.is_empty() && want_rv != md_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(w.rt, name));
    }
    let owners = Ownership::of(&old, applied, &new_set, w.manager, w.sub);
    if !owners.conflicts.is_empty() && !force {
        return Err(owners.conflict_error());
    }
    let merged = merge_applied(srt, &schema, &old, applied, w.sub, &owners, &new_set);
    let new = inner.prepare_write(
        srt,
        version,
        ns,
        name,
        Some(&old),
        merged,
        &ctx(owners.forced),
    )?;
    let (name, code) = (name.to_string(), StatusCode::OK);
    Ok(Planned {
        old: Some(old),
        new,
        name,
        code,
    })
}

/// Who owns what an apply sets, from the stored object's managedFields.
struct Ownership {
    /// (manager, field) the apply would change against another manager's ownership.
    conflicts: Vec<(String, String)>,
    /// The fields a forced apply takes from each entry.
    forced: Vec<(usize, fields::FieldSet)>,
    /// What this manager applied last time.
    prev_set: fields::FieldSet,
    /// What the other managers keep.
    others: Vec<fields::FieldSet>,
}

impl Ownership {
    fn of(
        old: &Value,
        applied: &Value,
        new_set: &fields::FieldSet,
        manager: &str,
        sub: Sub,
    ) -> Ownership {
        let entries: Vec<Value> = md(old, "managedFields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut o = Ownership {
            conflicts: vec![],
            forced: vec![],
            prev_set: fields::FieldSet::new(),
            others: vec![],
        };
        for (i, e) in entries.iter().enumerate() {
            let set = fields::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null));
            let e_sub = e.get("subresource").and_then(Value::as_str);
            let e_mgr = e.get("manager").and_then(Value::as_str).unwrap_or("");
            if e_sub != sub.name() {
                continue;
            }
            let e_op = e.get("operation").and_then(Value::as_str);
            if e_mgr == manager && e_op == Some("Apply") {
                o.prev_set = set;
                continue;
            }
            // A manager is its name and operation (and, for updates, API version): an entry the same
            // client wrote by create, update or patch is another manager to its apply, as on the
            // real server (it conflicts, and keeps the fields it holds).
            let who = match e_op {
                Some("Update") => format!(
                    "{e_mgr:?} using {}",
                    e.get("apiVersion").and_then(Value::as_str).unwrap_or("")
                ),
                _ => format!("{e_mgr:?}"),
            };
            let mut take = fields::FieldSet::new();
            for p in fields::leaves(new_set) {
                if set.contains(p) && fields::get_at(old, p) != fields::get_at(applied, p) {
                    o.conflicts.push((who.clone(), fields::display_path(p)));
                    take.insert(p.clone());
                }
            }
            if !take.is_empty() {
                o.forced.push((i, take.clone()));
            }
            let mut remaining = set.clone();
            remaining.retain(|p| !take.contains(p));
            o.others.push(remaining);
        }
        o
    }

    fn conflict_error(&self) -> ApiError {
        let list: Vec<String> = self
            .conflicts
            .iter()
            .map(|(m, f)| format!("conflict with {m}: {f}"))
            .collect();
        let msg = if list.len() == 1 {
            format!("Apply failed with 1 conflict: {}", list[0])
        } else {
            format!(
                "Apply failed with {} conflicts: {}",
                list.len(),
                list.join("\n")
            )
        };
        ApiError {
            details: Some(
                json!({"causes": self.conflicts.iter().map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": f})).collect::<Vec<_>>()}),
            ),
            ..ApiError::new(409, "Conflict", msg)
        }
    }
}

/// The stored object with the applied fields merged in and the fields this manager no longer
/// applies (and nobody else owns) removed.
fn merge_applied(
    srt: &ResourceType,
    schema: &Schema,
    old: &Value,
    applied: &Value,
    sub: Sub,
    owners: &Ownership,
    new_set: &fields::FieldSet,
) -> Value {
    let mut merged = old.clone();
    let mut to_merge = applied.clone();
    if let Some(m) = to_merge.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|k, _| {
            ["labels", "annotations", "finalizers", "ownerReferences"].contains(&k.as_str())
        });
    }
    if srt.plural == "secrets" {
        if let Some(sd) = to_merge
            .as_object_mut()
            .and_then(|m| m.remove("stringData"))
        {
            let mut tmp = json!({"stringData": sd});
            crate::validate::fold_string_data(&mut tmp);
            if let Some(d) = tmp.get("data") {
                fields::merge_apply(
                    merged
                        .as_object_mut()
                        .map(|m| m.entry("data").or_insert(json!({})))
                        .expect("object"),
                    d,
                    &mut vec!["data".into()],
                    schema,
                );
            }
        }
    }
    if sub == Sub::Status {
        let st = to_merge.get("status").cloned().unwrap_or(json!({}));
        let mut cur = merged.get("status").cloned().unwrap_or(json!({}));
        fields::merge_apply(&mut cur, &st, &mut vec!["status".into()], schema);
        merged["status"] = cur;
    } else {
        if let Some(m) = to_merge.as_object_mut() {
            m.remove("status");
        }
        fields::merge_apply(&mut merged, &to_merge, &mut vec![], schema);
    }
    remove_unapplied(srt, &mut merged, owners, new_set);
    merged
}

/// Removes what this manager applied before and no longer applies, unless others own it.
fn remove_unapplied(
    srt: &ResourceType,
    merged: &mut Value,
    owners: &Ownership,
    new_set: &fields::FieldSet,
) {
    let Ownership {
        prev_set, others, ..
    } = owners;
    // Associative-list items go as a whole, unless another manager owns something in them
    // (removing field by field would lose the key fields first and strand the rest).
    for p in prev_set
        .iter()
        .filter(|p| p.len() >= 2 && p[p.len() - 1] == "." && p[p.len() - 2].starts_with("k:"))
    {
        let item = &p[..p.len() - 1];
        let held = |set: &fields::FieldSet| set.iter().any(|q| q.starts_with(item));
        if held(new_set) || others.iter().any(held) {
            continue;
        }
        fields::remove_at(merged, item);
    }
    for p in fields::leaves(prev_set) {
        if new_set.contains(p) || others.iter().any(|s| s.contains(p)) {
            continue;
        }
        // secrets: stringData ownership removes the corresponding data key
        // (unless this apply sets that data key itself, or someone else owns it).
        if srt.plural == "secrets" && p.first().map(String::as_str) == Some("f:stringData") {
            let mut dp = p.clone();
            dp[0] = "f:data".into();
            if !new_set.contains(&dp) && !others.iter().any(|s| s.contains(&dp)) {
                fields::remove_at(merged, &dp);
            }
            continue;
        }
        fields::remove_at(merged, p);
    }
}

fn delete_options(body: &Bytes, q: &HashMap<String, String>) -> (Option<String>, Value) {
    let opts: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let prop = q
        .get("propagationPolicy")
        .cloned()
        .or_else(|| {
            opts.get("propagationPolicy")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .or_else(
            || match opts.get("orphanDependents").and_then(Value::as_bool) {
                Some(true) => Some("Orphan".into()),
                _ => None,
            },
        );
    (
        prop,
        opts.get("preconditions").cloned().unwrap_or(Value::Null),
    )
}

/// The DeleteOptions admission is shown: the body's, with what the query sets.
fn delete_options_shown(body: &Bytes, w: &WriteReq<'_>) -> Value {
    let mut o = w.options("DeleteOptions");
    if let Ok(Value::Object(given)) = serde_json::from_slice::<Value>(body) {
        for (k, v) in given
            .into_iter()
            .filter(|(k, _)| k != "kind" && k != "apiVersion")
        {
            o[k] = v;
        }
    }
    for key in ["propagationPolicy", "gracePeriodSeconds"] {
        if let Some(v) = w.q.get(key) {
            o[key] = v
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| json!(v));
        }
    }
    o
}

/// DELETE: the stored object, its preconditions checked, is admitted (the webhooks see it as
/// oldObject), then deleted.
pub(crate) async fn delete(
    state: &AppState,
    w: &WriteReq<'_>,
    body: &Bytes,
) -> Result<Value, ApiError> {
    let (prop, pre) = delete_options(body, w.q);
    let srt = storage(state, w.rt);
    let name = w.name();
    let old = {
        let inner = state.lock();
        let Some(old) = inner.get(&srt, w.ns(), name).cloned() else {
            return Err(ApiError::not_found(w.rt, name));
        };
        store::delete_preconditions(w.rt, name, &old, &pre)?;
        old
    };
    w.admit(state, || {
        let mut a = w.attributes(Operation::Delete, name, None, Some(old.clone()));
        a.options = delete_options_shown(body, w);
        a
    })
    .await?;
    if w.dry_run {
        return Ok(w.view(&old));
    }
    let v = state
        .lock()
        .delete(&srt, w.ns(), name, prop.as_deref(), &pre)?;
    Ok(w.view(&v))
}

/// DELETE of a collection: each object is admitted (with no name, as the API server's
/// deletecollection tells its webhooks) and deleted; the first refusal ends it.
pub(crate) async fn delete_collection(
    state: &AppState,
    w: &WriteReq<'_>,
    body: &Bytes,
) -> Result<Value, ApiError> {
    let (prop, _) = delete_options(body, w.q);
    let selector = |k: &str| w.q.get(k).map(String::as_str).unwrap_or("");
    let ls = LabelSelector::parse(selector("labelSelector")).map_err(ApiError::bad_request)?;
    let fs = FieldSelector::parse(selector("fieldSelector")).map_err(ApiError::bad_request)?;
    let srt = storage(state, w.rt);
    let targets: Vec<Value> = state
        .lock()
        .list(&srt, w.t.namespace.as_deref())
        .into_iter()
        .filter(|o| ls.matches(o) && fs.matches(o))
        .cloned()
        .collect();
    let mut items = vec![];
    for old in targets {
        let (ns, n) = (md_str(&old, "namespace"), md_str(&old, "name"));
        w.admit(state, || {
            let mut a = w.attributes(Operation::Delete, "", None, Some(old.clone()));
            a.options = delete_options_shown(body, w);
            a
        })
        .await?;
        if w.dry_run {
            items.push(w.view(&old));
        } else if let Ok(v) = state
            .lock()
            .delete(&srt, ns, n, prop.as_deref(), &Value::Null)
        {
            items.push(w.view(&v));
        }
    }
    let rv = state.lock().rv;
    Ok(
        json!({"apiVersion": w.rt.api_version_for(&w.t.version), "kind": format!("{}List", w.rt.kind), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    )
}
