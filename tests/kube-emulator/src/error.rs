//! `Status` error bodies with the codes, reasons and messages of the real API server.

use crate::resources::ResourceType;
use crate::validate::Cause;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

fn details(rt: &ResourceType, name: &str, kind_is_kind: bool) -> Value {
    let mut d = json!({"name": name, "kind": if kind_is_kind { rt.kind.clone() } else { rt.plural.clone() }});
    if !rt.group.is_empty() {
        d["group"] = json!(rt.group);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        ApiError {
            details: Some(details(rt, name, false)),
            ..Self::new(
                404,
                "NotFound",
                format!("{} {name:?} not found", rt.qualified()),
            )
        }
    }
    pub fn not_found_ns(ns: &str) -> Self {
        ApiError {
            details: Some(json!({"name": ns, "kind": "namespaces"})),
            ..Self::new(404, "NotFound", format!("namespaces {ns:?} not found"))
        }
    }
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        ApiError {
            details: Some(details(rt, name, false)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} {name:?} already exists", rt.qualified()),
            )
        }
    }
    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        ApiError {
            details: Some(details(rt, name, false)),
            ..Self::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again", rt.qualified()),
            )
        }
    }
    pub fn conflict_precondition(
        rt: &ResourceType,
        name: &str,
        what: &str,
        want: &str,
        got: &str,
    ) -> Self {
        ApiError {
            details: Some(details(rt, name, false)),
            ..Self::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {} {name:?}: Precondition failed: {what} in precondition: {want}, {what} in object meta: {got}", rt.qualified()),
            )
        }
    }
    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        let summary = if causes.len() == 1 {
            causes[0].summary()
        } else {
            format!(
                "[{}]",
                causes
                    .iter()
                    .map(Cause::summary)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut d = details(rt, name, true);
        d["causes"] = Value::Array(causes.iter().map(Cause::to_json).collect());
        ApiError {
            details: Some(d),
            ..Self::new(
                422,
                "Invalid",
                format!("{} {name:?} is invalid: {summary}", rt.kind_qualified()),
            )
        }
    }
    pub fn forbidden_terminating(rt: &ResourceType, name: &str, ns: &str) -> Self {
        ApiError {
            details: Some(details(rt, name, false)),
            ..Self::new(403, "Forbidden", format!("{} {name:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated", rt.qualified()))
        }
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    pub fn to_status(&self) -> Value {
        let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code});
        if self.reason.is_empty() {
            // Go's omitempty: a webhook's denial may carry no reason.
            s.as_object_mut().expect("object").remove("reason");
        }
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            code,
            [("content-type", "application/json")],
            self.to_status().to_string(),
        )
            .into_response();
        if self.code == 429 || self.code == 503 {
            resp.headers_mut()
                .insert("retry-after", "1".parse().expect("header"));
        }
        resp
    }
}
