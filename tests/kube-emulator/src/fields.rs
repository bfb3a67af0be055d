//! Field sets in the `fieldsV1` notation of `metadata.managedFields` (`f:name`, `k:{"name":"web"}`,
//! `v:"value"`), and the tree operations server-side apply needs: collect, look up, remove, merge.

use crate::resources::{ListKind, ResourceType};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// One path from the object root to an owned field; elements are in fieldsV1 notation.
pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Resolves how lists are merged at a given path of object keys.
pub struct Schema<'a> {
    pub rt: &'a ResourceType,
    pub version: &'a str,
}

impl Schema<'_> {
    pub fn list_kind(&self, keys: &[String]) -> ListKind {
        self.rt.list_kind(self.version, keys)
    }
}

fn key_elem(item: &Value, keys: &[String]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    if m.is_empty() {
        return None;
    }
    Some(format!("k:{}", Value::Object(m)))
}

/// Top-level metadata fields that are tracked in managedFields.
const TRACKED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

/// The set of leaf fields (and, with `nodes`, the map/list-item nodes) present in `obj`.
/// `status` is left out unless `only_status`; everything but status when not.
pub fn collect(obj: &Value, schema: &Schema, only_status: bool, nodes: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" => continue,
            "status" if !only_status => continue,
            _ if only_status && k != "status" => continue,
            "metadata" => {
                if let Some(md) = v.as_object() {
                    for (mk, mv) in md {
                        if TRACKED_METADATA.contains(&mk.as_str()) {
                            let path = vec!["f:metadata".to_string(), format!("f:{mk}")];
                            walk(
                                mv,
                                &mut vec!["metadata".into(), mk.clone()],
                                path,
                                schema,
                                nodes,
                                &mut out,
                            );
                        }
                    }
                }
            }
            _ => {
                walk(
                    v,
                    &mut vec![k.clone()],
                    vec![format!("f:{k}")],
                    schema,
                    nodes,
                    &mut out,
                );
            }
        }
    }
    out
}

fn walk(
    v: &Value,
    keys: &mut Vec<String>,
    path: FieldPath,
    schema: &Schema,
    nodes: bool,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            if nodes {
                let mut p = path.clone();
                p.push(".".into());
                out.insert(p);
            }
            for (k, child) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                keys.push(k.clone());
                walk(child, keys, p, schema, nodes, out);
                keys.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match schema.list_kind(keys) {
            ListKind::Map(mk) => {
                if nodes {
                    let mut p = path.clone();
                    p.push(".".into());
                    out.insert(p);
                }
                for item in items {
                    match key_elem(item, &mk) {
                        Some(e) => {
                            let mut p = path.clone();
                            p.push(e);
                            if let Some(m) = item.as_object() {
                                let mut pn = p.clone();
                                pn.push(".".into());
                                out.insert(pn);
                                for (k, child) in m {
                                    let mut pc = p.clone();
                                    pc.push(format!("f:{k}"));
                                    keys.push(k.clone());
                                    walk(child, keys, pc, schema, nodes, out);
                                    keys.pop();
                                }
                            }
                        }
                        None => {
                            out.insert(path.clone());
                        }
                    }
                }
            }
            ListKind::Set => {
                if nodes {
                    let mut p = path.clone();
                    p.push(".".into());
                    out.insert(p);
                }
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
            }
            ListKind::Atomic => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

/// Converts a field set to the nested `fieldsV1` JSON form.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for elem in path {
            node = node
                .entry(elem.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// Reads a `fieldsV1` tree back into its set of paths (leaves and `.` markers).
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn rec(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    rec(child, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    rec(v, &mut vec![], &mut out);
    out
}

fn find_item(items: &[Value], elem: &str) -> Option<usize> {
    if let Some(k) = elem.strip_prefix("k:") {
        let keys: Map<String, Value> = serde_json::from_str(k).ok()?;
        items
            .iter()
            .position(|it| keys.iter().all(|(kk, kv)| it.get(kk) == Some(kv)))
    } else if let Some(v) = elem.strip_prefix("v:") {
        let val: Value = serde_json::from_str(v).ok()?;
        let _ = &items;
        items.iter().position(|it| *it == val)
    } else {
        None
    }
}

/// The value at a field path (`.` markers address the node itself).
pub fn get_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for elem in path {
        if elem == "." {
            return Some(cur);
        }
        if let Some(f) = elem.strip_prefix("f:") {
            cur = cur.as_object()?.get(f)?;
        } else {
            let items = cur.as_array()?;
            cur = &items[find_item(items, elem)?];
        }
    }
    Some(cur)
}

/// Removes the field at `path`; empty parent maps left behind are removed too (as SSA does).
pub fn remove_at(obj: &mut Value, path: &[String]) {
    if path.is_empty() || path.last().map(String::as_str) == Some(".") {
        return;
    }
    fn rec(cur: &mut Value, path: &[String]) -> bool {
        let elem = &path[0];
        if path.len() == 1 {
            if let Some(f) = elem.strip_prefix("f:") {
                if let Some(m) = cur.as_object_mut() {
                    m.remove(f);
                }
            } else if let Some(items) = cur.as_array_mut() {
                if let Some(i) = find_item(items, elem) {
                    items.remove(i);
                }
            }
        } else if let Some(f) = elem.strip_prefix("f:") {
            let emptied = cur
                .as_object_mut()
                .and_then(|m| m.get_mut(f))
                .map(|child| rec(child, &path[1..]))
                .unwrap_or(false);
            if emptied {
                if let Some(m) = cur.as_object_mut() {
                    m.remove(f);
                }
            }
        } else if let Some(items) = cur.as_array_mut() {
            // Remember the position: the item may lose its key fields on the way down.
            if let Some(i) = find_item(items, elem) {
                if rec(&mut items[i], &path[1..]) {
                    items.remove(i);
                }
            }
        }
        match cur {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }
    rec(obj, path);
}

/// Merges `patch` into `base` with apply semantics: maps recursively, associative lists by key,
/// sets by value, everything else replaced.
pub fn merge_apply(base: &mut Value, patch: &Value, keys: &mut Vec<String>, schema: &Schema) {
    if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
        for (k, pv) in p {
            keys.push(k.clone());
            match b.get_mut(k) {
                Some(bv) if !pv.is_null() => merge_apply(bv, pv, keys, schema),
                _ => {
                    b.insert(k.clone(), pv.clone());
                }
            }
            keys.pop();
        }
        return;
    }
    if let (Some(b), Some(p)) = (base.as_array(), patch.as_array()) {
        match schema.list_kind(keys) {
            ListKind::Map(mk) => {
                let mut out = b.clone();
                for item in p {
                    let pos = key_elem(item, &mk).and_then(|e| find_item(&out, &e));
                    match pos {
                        Some(i) => merge_apply(&mut out[i], item, keys, schema),
                        None => out.push(item.clone()),
                    }
                }
                *base = Value::Array(out);
                return;
            }
            ListKind::Set => {
                let mut out = b.clone();
                for item in p {
                    if !out.contains(item) {
                        out.push(item.clone());
                    }
                }
                *base = Value::Array(out);
                return;
            }
            ListKind::Atomic => {}
        }
    }
    *base = patch.clone();
}

/// Leaf paths (no `.` markers) of a set.
pub fn leaves(set: &FieldSet) -> impl Iterator<Item = &FieldPath> {
    set.iter()
        .filter(|p| p.last().map(String::as_str) != Some("."))
}

/// Renders a field path the way conflict messages do: `.spec.size`, `.spec.containers[name="web"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            if let Ok(m) = serde_json::from_str::<Map<String, Value>>(k) {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}
