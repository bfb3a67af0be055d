//! The write verbs: create, update, patch (JSON, merge, strategic merge), server-side apply,
//! delete and deletecollection.

use crate::error::ApiError;
use crate::events;
use crate::fields::{self, Schema};
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{qbool, storage, AppState, Target};
use crate::store::{md, md_mut, md_str, Op, Sub, WriteCtx};
use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;

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

pub(crate) fn create(
    state: &AppState,
    rt: &ResourceType,
    t: &Target,
    body: &Bytes,
    ctype: &str,
    manager: &str,
    dry_run: bool,
) -> Result<(Value, bool), ApiError> {
    let mut obj = parse_body(body, ctype)?;
    check_kind(rt, &t.version, &obj)?;
    let ns = t.namespace.clone().unwrap_or_default();
    if let Some(bns) = md(&obj, "namespace").and_then(Value::as_str) {
        if rt.namespaced && !bns.is_empty() && bns != ns {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
    }
    let mut name = md_str(&obj, "name").to_string();
    if name.is_empty() {
        let gen = md_str(&obj, "generateName").to_string();
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
        name = format!("{gen}{suffix}");
        md_mut(&mut obj).insert("name".into(), json!(name));
    }
    let srt = storage(state, rt);
    let obj = events::from_view(rt, obj);
    let mut inner = state.lock();
    if inner.get(&srt, &ns, &name).is_some() {
        return Err(ApiError::already_exists(rt, &name));
    }
    if dry_run {
        return Ok((obj, true));
    }
    let (v, c) = inner.write(
        &srt,
        &t.version,
        &ns,
        &name,
        None,
        obj,
        WriteCtx::update(manager, Sub::Main),
    )?;
    Ok((events::to_view(rt, &t.version, &v), c))
}

pub(crate) fn update(
    state: &AppState,
    rt: &ResourceType,
    t: &Target,
    sub: Sub,
    body: &Bytes,
    manager: &str,
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let obj = parse_body(body, "application/json")?;
    check_kind(rt, &t.version, &obj)?;
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    if md_str(&obj, "name") != name && !md_str(&obj, "name").is_empty() {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let srt = storage(state, rt);
    let obj = events::from_view(rt, obj);
    let mut inner = state.lock();
    let Some(old) = inner.get(&srt, &ns, &name).cloned() else {
        return Err(ApiError::not_found(rt, &name));
    };
    let rv = md_str(&obj, "resourceVersion");
    if !rv.is_empty() && rv != md_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(rt, &name));
    }
    if dry_run {
        return Ok((StatusCode::OK, obj));
    }
    let (v, _) = inner.write(
        &srt,
        &t.version,
        &ns,
        &name,
        Some(old),
        obj,
        WriteCtx::update(manager, sub),
    )?;
    Ok((StatusCode::OK, events::to_view(rt, &t.version, &v)))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn patch(
    state: &AppState,
    rt: &ResourceType,
    t: &Target,
    sub: Sub,
    body: &Bytes,
    ctype: &str,
    manager: &str,
    q: &HashMap<String, String>,
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let srt = storage(state, rt);
    let mut inner = state.lock();
    let old = inner.get(&srt, &ns, &name).cloned();
    let ct = ctype.split(';').next().unwrap_or("").trim();
    if ct == "application/apply-patch+yaml" {
        drop(inner);
        return apply(
            state,
            rt,
            &srt,
            t,
            sub,
            body,
            manager,
            qbool(q, "force"),
            dry_run,
        );
    }
    let Some(old) = old else {
        return Err(ApiError::not_found(rt, &name));
    };
    let view = events::to_view(rt, &t.version, &old);
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let new = match ct {
        "application/merge-patch+json" => {
            let mut n = view.clone();
            json_patch::merge(&mut n, &patch);
            n
        }
        "application/json-patch+json" => {
            // As the API server's JSON Patch library does: `test` for null passes on a missing path.
            let mut patch = patch;
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
            crate::smp::apply(&view, &patch).map_err(ApiError::bad_request)?
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"),
            ))
        }
    };
    if md_str(&new, "resourceVersion") != md_str(&view, "resourceVersion")
        && !md_str(&new, "resourceVersion").is_empty()
    {
        return Err(ApiError::conflict(rt, &name));
    }
    if dry_run {
        return Ok((StatusCode::OK, new));
    }
    let new = events::from_view(rt, new);
    let (v, _) = inner.write(
        &srt,
        &t.version,
        &ns,
        &name,
        Some(old),
        new,
        WriteCtx::update(manager, sub),
    )?;
    Ok((StatusCode::OK, events::to_view(rt, &t.version, &v)))
}

/// Server-side apply.
#[allow(clippy::too_many_arguments)]
fn apply(
    state: &AppState,
    rt: &ResourceType,
    srt: &ResourceType,
    t: &Target,
    sub: Sub,
    body: &Bytes,
    manager: &str,
    force: bool,
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    if manager.is_empty() || manager == "unknown" {
        return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let mut applied = parse_body(body, "yaml")?;
    if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
        return Err(ApiError::bad_request(
            "invalid object type: apiVersion and kind must be set for apply",
        ));
    }
    check_kind(rt, &t.version, &applied)?;
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
    let applied = events::from_view(rt, applied);
    let mut inner = state.lock();
    let schema = Schema {
        rt: srt,
        version: &t.version,
    };
    let only_status = sub == Sub::Status;
    // Fields are tracked as written (a Secret's stringData stays stringData in managedFields).
    let applied_for_fields = applied.clone();
    let new_set: fields::FieldSet =
        fields::collect(&applied_for_fields, &schema, only_status, false);
    let old = inner.get(srt, &ns, &name).cloned();
    let Some(old) = old else {
        if sub == Sub::Status {
            return Err(ApiError::not_found(rt, &name));
        }
        if dry_run {
            return Ok((StatusCode::CREATED, applied));
        }
        let ctx = WriteCtx {
            manager,
            op: Op::Apply,
            sub,
            apply_fields: Some(new_set),
            forced: vec![],
        };
        let (v, _) = inner.write(srt, &t.version, &ns, &name, None, applied, ctx)?;
        return Ok((StatusCode::CREATED, events::to_view(rt, &t.version, &v)));
    };
    if !want_rv.is_empty() && want_rv != md_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(rt, &name));
    }
    let entries: Vec<Value> = md(&old, "managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let sub_name = sub.name();
    let mut conflicts: Vec<(String, String)> = vec![];
    let mut forced: Vec<(usize, fields::FieldSet)> = vec![];
    let mut prev_set = fields::FieldSet::new();
    let mut others: Vec<fields::FieldSet> = vec![];
    for (i, e) in entries.iter().enumerate() {
        let set = fields::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null));
        let e_sub = e.get("subresource").and_then(Value::as_str);
        let e_mgr = e.get("manager").and_then(Value::as_str).unwrap_or("");
        if e_sub != sub_name {
            continue;
        }
        let e_op = e.get("operation").and_then(Value::as_str);
        if e_mgr == manager && e_op == Some("Apply") {
            prev_set = set;
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
        for p in fields::leaves(&new_set) {
            if set.contains(p) && fields::get_at(&old, p) != fields::get_at(&applied_for_fields, p)
            {
                conflicts.push((who.clone(), fields::display_path(p)));
                take.insert(p.clone());
            }
        }
        if !take.is_empty() {
            forced.push((i, take.clone()));
        }
        let mut remaining = set.clone();
        remaining.retain(|p| !take.contains(p));
        others.push(remaining);
    }
    if !conflicts.is_empty() && !force {
        let list: Vec<String> = conflicts
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
        return Err(ApiError {
            details: Some(
                json!({"causes": conflicts.iter().map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": f})).collect::<Vec<_>>()}),
            ),
            ..ApiError::new(409, "Conflict", msg)
        });
    }
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
                    &schema,
                );
            }
        }
    }
    if only_status {
        let st = to_merge.get("status").cloned().unwrap_or(json!({}));
        let mut cur = merged.get("status").cloned().unwrap_or(json!({}));
        fields::merge_apply(&mut cur, &st, &mut vec!["status".into()], &schema);
        merged["status"] = cur;
    } else {
        if let Some(m) = to_merge.as_object_mut() {
            m.remove("status");
        }
        fields::merge_apply(&mut merged, &to_merge, &mut vec![], &schema);
    }
    // Associative-list items this manager applied before and no longer applies go as a whole,
    // unless another manager owns something in them (removing field by field would lose the key
    // fields first and strand the rest).
    for p in prev_set
        .iter()
        .filter(|p| p.len() >= 2 && p[p.len() - 1] == "." && p[p.len() - 2].starts_with("k:"))
    {
        let item = &p[..p.len() - 1];
        let held = |set: &fields::FieldSet| set.iter().any(|q| q.starts_with(item));
        if held(&new_set) || others.iter().any(held) {
            continue;
        }
        fields::remove_at(&mut merged, item);
    }
    // Fields this manager applied before and no longer applies are removed, unless others own them.
    for p in fields::leaves(&prev_set) {
        if new_set.contains(p) || others.iter().any(|s| s.contains(p)) {
            continue;
        }
        // secrets: stringData ownership removes the corresponding data key
        // (unless this apply sets that data key itself, or someone else owns it).
        if srt.plural == "secrets" && p.first().map(String::as_str) == Some("f:stringData") {
            let mut dp = p.clone();
            dp[0] = "f:data".into();
            if !new_set.contains(&dp) && !others.iter().any(|s| s.contains(&dp)) {
                fields::remove_at(&mut merged, &dp);
            }
            continue;
        }
        fields::remove_at(&mut merged, p);
    }
    if dry_run {
        return Ok((StatusCode::OK, merged));
    }
    let ctx = WriteCtx {
        manager,
        op: Op::Apply,
        sub,
        apply_fields: Some(new_set),
        forced,
    };
    let (v, _) = inner.write(srt, &t.version, &ns, &name, Some(old), merged, ctx)?;
    Ok((StatusCode::OK, events::to_view(rt, &t.version, &v)))
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

pub(crate) fn delete(
    state: &AppState,
    rt: &ResourceType,
    t: &Target,
    body: &Bytes,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let (prop, pre) = delete_options(body, q);
    let srt = storage(state, rt);
    let mut inner = state.lock();
    let name = t.name.clone().unwrap_or_default();
    if inner
        .get(&srt, t.namespace.as_deref().unwrap_or(""), &name)
        .is_none()
    {
        return Err(ApiError::not_found(rt, &name));
    }
    let v = inner.delete(
        &srt,
        t.namespace.as_deref().unwrap_or(""),
        &name,
        prop.as_deref(),
        &pre,
    )?;
    Ok(events::to_view(rt, &t.version, &v))
}

pub(crate) fn delete_collection(
    state: &AppState,
    rt: &ResourceType,
    t: &Target,
    body: &Bytes,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let (prop, _) = delete_options(body, q);
    let ls = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fs = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let srt = storage(state, rt);
    let mut inner = state.lock();
    let targets: Vec<(String, String)> = inner
        .list(&srt, t.namespace.as_deref())
        .into_iter()
        .filter(|o| ls.matches(o) && fs.matches(o))
        .map(|o| {
            (
                md_str(o, "namespace").to_string(),
                md_str(o, "name").to_string(),
            )
        })
        .collect();
    let mut items = vec![];
    for (ns, n) in targets {
        if let Ok(v) = inner.delete(&srt, &ns, &n, prop.as_deref(), &Value::Null) {
            items.push(events::to_view(rt, &t.version, &v));
        }
    }
    Ok(
        json!({"apiVersion": rt.api_version_for(&t.version), "kind": format!("{}List", rt.kind), "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}),
    )
}
