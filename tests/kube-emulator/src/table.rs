//! `Table` output (what `kubectl get` asks for): the Name column, a CRD's printer columns or a few
//! built-in columns, and an Age column.

use crate::resources::{PrinterColumn, ResourceType};
use crate::store::md;
use serde_json::{json, Value};
use std::collections::HashMap;

fn col(name: &str, ty: &str, path: &str, desc: &str) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: ty.into(),
        json_path: path.into(),
        priority: 0,
        description: desc.into(),
    }
}

fn columns(rt: &ResourceType, version: &str) -> Vec<PrinterColumn> {
    if rt.custom {
        let cols = rt.printer_columns.get(version).cloned().unwrap_or_default();
        if cols.is_empty() {
            return vec![col("Age", "date", ".metadata.creationTimestamp", "")];
        }
        return cols
            .into_iter()
            .map(|mut c| {
                if c.description.is_empty() {
                    c.description = format!(
                        "Custom resource definition column (in JSONPath format): {}",
                        c.json_path
                    );
                }
                c
            })
            .collect();
    }
    match rt.plural.as_str() {
        "secrets" => vec![
            col("Type", "string", ".type", ""),
            col("Data", "integer", "__count_data", ""),
            col("Age", "date", ".metadata.creationTimestamp", ""),
        ],
        "deployments" => vec![
            col("Ready", "string", "__ready", ""),
            col("Up-to-date", "integer", ".status.updatedReplicas", ""),
            col("Available", "integer", ".status.availableReplicas", ""),
            col("Age", "date", ".metadata.creationTimestamp", ""),
        ],
        "events" => vec![
            col("Type", "string", ".type", ""),
            col("Reason", "string", ".reason", ""),
            col("Object", "string", "__object", ""),
            col("Message", "string", "__message", ""),
        ],
        "validatingwebhookconfigurations" => vec![
            col("Webhooks", "integer", "__count_webhooks", ""),
            col("Age", "date", ".metadata.creationTimestamp", ""),
        ],
        "namespaces" => vec![
            col("Status", "string", ".status.phase", ""),
            col("Age", "date", ".metadata.creationTimestamp", ""),
        ],
        _ => vec![col("Age", "date", ".metadata.creationTimestamp", "")],
    }
}

pub fn human_age(ts: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "<unknown>".into();
    };
    let s = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        format!("{m}m{}s", s % 60)
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24)
    } else {
        format!("{d}d")
    }
}

fn cell(obj: &Value, c: &PrinterColumn) -> Value {
    match c.json_path.as_str() {
        "__count_data" => {
            return json!(obj
                .get("data")
                .and_then(Value::as_object)
                .map(|m| m.len())
                .unwrap_or(0))
        }
        "__count_webhooks" => {
            return json!(obj
                .get("webhooks")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0))
        }
        "__object" => {
            let r = obj
                .get("involvedObject")
                .or_else(|| obj.get("regarding"))
                .cloned()
                .unwrap_or_default();
            return json!(format!(
                "{}/{}",
                r["kind"].as_str().unwrap_or("").to_lowercase(),
                r["name"].as_str().unwrap_or("")
            ));
        }
        "__message" => {
            return obj
                .get("message")
                .or_else(|| obj.get("note"))
                .cloned()
                .unwrap_or(json!(""))
        }
        "__ready" => {
            let r = obj
                .pointer("/status/readyReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let w = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            return json!(format!("{r}/{w}"));
        }
        _ => {}
    }
    let Ok(path) = serde_json_path::JsonPath::parse(&format!("${}", c.json_path)) else {
        return Value::Null;
    };
    let found: Vec<&Value> = path.query(obj).all();
    if found.is_empty() {
        return if c.type_ == "date" || c.type_ == "string" {
            json!("")
        } else {
            Value::Null
        };
    }
    if c.type_ == "date" {
        return json!(found[0].as_str().map(human_age).unwrap_or_default());
    }
    if found.len() == 1 && c.type_ != "string" {
        return found[0].clone();
    }
    let parts: Vec<String> = found
        .iter()
        .map(|v| {
            v.as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string())
        })
        .collect();
    json!(parts.join(","))
}

pub fn render(
    rt: &ResourceType,
    version: &str,
    objs: &[Value],
    rv: u64,
    q: &HashMap<String, String>,
) -> Value {
    let cols = columns(rt, version);
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: http://kubernetes.io/docs/user-guide/identifiers#names", "priority": 0}),
    ];
    for c in &cols {
        defs.push(json!({"name": c.name, "type": c.type_, "format": "", "description": c.description, "priority": c.priority}));
    }
    let include = q
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata");
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut cells = vec![md(o, "name").cloned().unwrap_or(json!(""))];
            cells.extend(cols.iter().map(|c| cell(o, c)));
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))}),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string()}, "columnDefinitions": defs, "rows": rows})
}
