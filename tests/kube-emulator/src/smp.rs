//! Strategic merge patch for the built-in types: JSON merge semantics, plus lists merged by their
//! patch-merge key (containers and env by name, ...) and the `$patch`, `$setElementOrder`,
//! `$deleteFromPrimitiveList` and `$retainKeys` directives that kubectl sends.

use crate::resources::{builtin_list_kind, ListKind};
use serde_json::{Map, Value};

pub fn apply(base: &Value, patch: &Value) -> Result<Value, String> {
    let mut out = base.clone();
    merge(&mut out, patch, &mut vec![])?;
    Ok(out)
}

fn merge(base: &mut Value, patch: &Value, keys: &mut Vec<String>) -> Result<(), String> {
    let Some(p) = patch.as_object() else {
        *base = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = p.clone();
            m.remove("$patch");
            *base = Value::Object(m);
            return Ok(());
        }
        Some("delete") => {
            *base = Value::Null;
            return Ok(());
        }
        _ => {}
    }
    if !base.is_object() {
        *base = Value::Object(Map::new());
    }
    let b = base.as_object_mut().expect("object");
    if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        b.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (
                b.get_mut(field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        keys.push(k.clone());
        if pv.is_null() {
            b.remove(k);
        } else if let Some(items) = pv.as_array() {
            let merged = merge_list(b.get(k), items, keys)?;
            b.insert(k.clone(), merged);
        } else if pv.is_object() {
            let entry = b.entry(k.clone()).or_insert(Value::Null);
            merge(entry, pv, keys)?;
            if entry.is_null() {
                b.remove(k);
            }
        } else {
            b.insert(k.clone(), pv.clone());
        }
        keys.pop();
    }
    // $setElementOrder: reorder merged lists as the patch says.
    for (k, order) in p {
        if let (Some(field), Some(order)) = (k.strip_prefix("$setElementOrder/"), order.as_array())
        {
            if let Some(list) = b.get_mut(field).and_then(Value::as_array_mut) {
                let mut kk = keys.clone();
                kk.push(field.to_string());
                reorder(list, order, &builtin_list_kind(&kk));
            }
        }
    }
    Ok(())
}

fn reorder(list: &mut [Value], order: &[Value], kind: &ListKind) {
    let pos = |item: &Value| -> usize {
        order
            .iter()
            .position(|o| match kind {
                ListKind::Map(keys) => keys
                    .iter()
                    .all(|k| o.get(k).is_none() || o.get(k) == item.get(k)),
                _ => o == item,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|i| pos(i));
}

fn merge_list(
    base: Option<&Value>,
    items: &[Value],
    keys: &mut Vec<String>,
) -> Result<Value, String> {
    let kind = builtin_list_kind(keys);
    let existing = base.and_then(Value::as_array).cloned().unwrap_or_default();
    match kind {
        ListKind::Map(mk) => {
            let mut out = existing;
            // A `{"$patch": "replace"}` item replaces the whole list with the other items.
            if items
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Ok(Value::Array(
                    items
                        .iter()
                        .filter(|i| i.get("$patch").is_none())
                        .cloned()
                        .collect(),
                ));
            }
            for item in items {
                let matches = |o: &Value| {
                    mk.iter().all(|k| o.get(k) == item.get(k))
                        && mk.iter().any(|k| item.get(k).is_some())
                };
                let pos = out.iter().position(matches);
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => merge(&mut out[i], item, keys)?,
                    (None, false) => {
                        let mut fresh = Value::Object(Map::new());
                        merge(&mut fresh, item, keys)?;
                        out.push(fresh);
                    }
                }
            }
            Ok(Value::Array(out))
        }
        ListKind::Set => {
            let mut out = existing;
            for item in items {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListKind::Atomic => Ok(Value::Array(items.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let base = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "busybox"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}
        ]}}}});
        let out = apply(&base, &patch).unwrap();
        let cs = out
            .pointer("/spec/template/spec/containers")
            .unwrap()
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["name"], "side");
    }

    #[test]
    fn directives_delete_items_and_null_removes_keys() {
        let base = json!({"metadata": {"annotations": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "x"}, {"name": "y"}]}});
        let patch = json!({"metadata": {"annotations": {"a": null}}, "spec": {"containers": [{"name": "x", "$patch": "delete"}]}});
        let out = apply(&base, &patch).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"annotations": {"b": "2"}}, "spec": {"containers": [{"name": "y"}]}})
        );
    }
}
