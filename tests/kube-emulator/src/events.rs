//! events.k8s.io/v1 Events are a view of the core/v1 Events: one storage, fields renamed.

use crate::resources::ResourceType;
use serde_json::{Map, Value};

/// (events.k8s.io/v1 field, core/v1 field)
const RENAMES: [(&str, &str); 7] = [
    ("note", "message"),
    ("regarding", "involvedObject"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn is_new_events(rt: &ResourceType) -> bool {
    rt.group == "events.k8s.io"
}

fn rename(obj: Value, to_core: bool) -> Value {
    let Value::Object(m) = obj else { return obj };
    let mut out = Map::new();
    for (k, v) in m {
        let nk = RENAMES
            .iter()
            .find(|(new, core)| if to_core { k == *new } else { k == *core })
            .map(|(new, core)| {
                if to_core {
                    core.to_string()
                } else {
                    new.to_string()
                }
            })
            .unwrap_or(k);
        out.insert(nk, v);
    }
    Value::Object(out)
}

/// The object as the requested API version presents it.
pub fn to_view(rt: &ResourceType, version: &str, stored: &Value) -> Value {
    if !is_new_events(rt) {
        let mut v = stored.clone();
        if rt.custom {
            v["apiVersion"] = Value::String(rt.api_version_for(version));
        }
        return v;
    }
    let mut v = rename(stored.clone(), false);
    v["apiVersion"] = Value::String(rt.api_version_for(version));
    v["kind"] = Value::String("Event".into());
    v
}

/// The object in its storage form.
pub fn from_view(rt: &ResourceType, view: Value) -> Value {
    if !is_new_events(rt) {
        return view;
    }
    let mut v = rename(view, true);
    v["apiVersion"] = Value::String("v1".into());
    v
}
