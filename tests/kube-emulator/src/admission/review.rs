//! The AdmissionReview a webhook is sent and how its answer is read, and the errors a client
//! gets, in the words of kube-apiserver 1.24: a denial (`webhookerrors.ToStatusErr`), a failed call
//! under failurePolicy Fail (`apierrors.NewInternalError` of `ErrCallingWebhook`), a dry run a
//! webhook with side effects cannot take.

use super::Attributes;
use crate::error::ApiError;
use serde_json::{json, Value};

/// What a webhook answered, once its answer was a usable AdmissionReview.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub allowed: bool,
    /// `response.status`, as the webhook set it.
    pub status: Option<Value>,
    pub warnings: Vec<String>,
}

/// The AdmissionReview request for `a`, at `version` of the resource (another than the request's
/// for a matchPolicy `Equivalent` match), in the `review_version` of admission.k8s.io.
pub fn request(a: &Attributes, version: &str, uid: &str, review_version: &str) -> Value {
    let at_version = |o: &Option<Value>| match o {
        Some(o) if version != a.version => {
            let mut o = o.clone();
            let av = if a.group.is_empty() {
                version.to_string()
            } else {
                format!("{}/{version}", a.group)
            };
            o["apiVersion"] = json!(av);
            o
        }
        Some(o) => o.clone(),
        None => Value::Null,
    };
    let mut user = json!({"username": a.user.name});
    if !a.user.uid.is_empty() {
        user["uid"] = json!(a.user.uid);
    }
    if !a.user.groups.is_empty() {
        user["groups"] = json!(a.user.groups);
    }
    let gvk = |v: &str| json!({"group": a.group, "version": v, "kind": a.kind});
    let gvr = |v: &str| json!({"group": a.group, "version": v, "resource": a.resource});
    let mut req = serde_json::Map::new();
    req.insert("uid".into(), json!(uid));
    req.insert("kind".into(), gvk(version));
    req.insert("resource".into(), gvr(version));
    if !a.subresource.is_empty() {
        req.insert("subResource".into(), json!(a.subresource));
    }
    req.insert("requestKind".into(), gvk(&a.version));
    req.insert("requestResource".into(), gvr(&a.version));
    if !a.subresource.is_empty() {
        req.insert("requestSubResource".into(), json!(a.subresource));
    }
    if !a.name.is_empty() {
        req.insert("name".into(), json!(a.name));
    }
    if !a.namespace.is_empty() {
        req.insert("namespace".into(), json!(a.namespace));
    }
    req.insert("operation".into(), json!(a.operation.as_str()));
    req.insert("userInfo".into(), user);
    req.insert("object".into(), at_version(&a.object));
    req.insert("oldObject".into(), at_version(&a.old_object));
    req.insert("dryRun".into(), json!(a.dry_run));
    req.insert("options".into(), a.options.clone());
    json!({
        "kind": "AdmissionReview",
        "apiVersion": format!("admission.k8s.io/{review_version}"),
        "request": req,
    })
}

/// Reads a webhook's HTTP answer. `Err` is why the call failed (the text after `failed calling
/// webhook "<name>": `).
pub fn read(
    uid: &str,
    review_version: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<Answer, String> {
    if !(200..=206).contains(&status) {
        return Err(format!(
            "failed to call webhook: {}",
            http_error(status, content_type, body)
        ));
    }
    let review: Value = serde_json::from_slice(body).map_err(|e| {
        format!("failed to call webhook: couldn't get version/kind; json parse error: {e}")
    })?;
    let kind = review.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        let text = String::from_utf8_lossy(body);
        return Err(format!(
            "failed to call webhook: Object 'Kind' is missing in '{}'",
            text.trim()
        ));
    }
    let invalid = |why: String| format!("received invalid webhook response: {why}");
    let av = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let want = format!("admission.k8s.io/{review_version}");
    if av != want || kind != "AdmissionReview" {
        let (group, version) = av.rsplit_once('/').unwrap_or(("", av));
        return Err(invalid(format!("expected webhook response of {want}, Kind=AdmissionReview, got {group}/{version}, Kind={kind}")));
    }
    let Some(resp) = review.get("response").filter(|r| r.is_object()) else {
        return Err(invalid("webhook response was absent".into()));
    };
    let got = resp.get("uid").and_then(Value::as_str).unwrap_or("");
    if got != uid {
        return Err(invalid(format!(
            "expected response.uid={uid:?}, got {got:?}"
        )));
    }
    let warnings = resp
        .get("warnings")
        .and_then(Value::as_array)
        .map(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(Answer {
        allowed: resp
            .get("allowed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        status: resp.get("status").filter(|s| s.is_object()).cloned(),
        warnings,
    })
}

/// client-go's error for an HTTP answer that is no success: a Status body's message, or its
/// generic words for the code (`NewGenericServerResponse`).
fn http_error(code: u16, content_type: &str, body: &[u8]) -> String {
    if let Ok(s) = serde_json::from_slice::<Value>(body) {
        if s["kind"] == "Status" && s["status"] == "Failure" {
            return s["message"].as_str().unwrap_or("").to_string();
        }
    }
    let text = if content_type.starts_with("text/") {
        String::from_utf8_lossy(body).trim().to_string()
    } else {
        "unknown".to_string()
    };
    match code {
        400 => "the server rejected our request for an unknown reason".into(),
        401 => "the server has asked for the client to provide credentials".into(),
        403 => text,
        404 => "the server could not find the requested resource".into(),
        405 => "the server does not allow this method on the requested resource".into(),
        409 => "the server reported a conflict".into(),
        422 => "the server rejected our request due to an error in our request".into(),
        429 => "the server has received too many requests and has asked us to try again later".into(),
        503 => "the server is currently unable to handle the request".into(),
        504 => "the server was unable to return a response in the time allotted, but may still be processing the request".into(),
        c if c >= 500 => format!("an error on the server ({text:?}) has prevented the request from succeeding"),
        c => format!("the server responded with the status code {c} but did not return more information"),
    }
}

/// A webhook's denial as the client sees it (`ToStatusErr` of 1.24): the webhook's status with
/// its code (400 unless it set one of 400 or more), its reason (possibly none) and details, and
/// the message prefixed with who denied.
pub fn denied(hook: &str, status: Option<&Value>) -> ApiError {
    let status = status.cloned().unwrap_or(json!({}));
    let by = format!("admission webhook {hook:?} denied the request");
    let text = |k: &str| {
        status
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (message, reason) = (text("message"), text("reason"));
    let message = match (message.is_empty(), reason.is_empty()) {
        (false, _) => format!("{by}: {message}"),
        (true, false) => format!("{by}: {reason}"),
        (true, true) => format!("{by} without explanation"),
    };
    let code = status.get("code").and_then(Value::as_u64).unwrap_or(0);
    let code = u16::try_from(code)
        .ok()
        .filter(|c| *c >= 400)
        .unwrap_or(400);
    ApiError {
        details: status.get("details").filter(|d| d.is_object()).cloned(),
        ..ApiError::new(code, &reason, message)
    }
}

/// A failed call under failurePolicy Fail: 500 InternalError.
pub fn call_failed(hook: &str, why: &str) -> ApiError {
    let err = format!("failed calling webhook {hook:?}: {why}");
    ApiError {
        details: Some(json!({"causes": [{"message": err}]})),
        ..ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {err}"),
        )
    }
}

/// A dry run reaching a webhook whose sideEffects are not None or NoneOnDryRun (v1 configurations
/// cannot have others; kept as the API server's dispatcher checks it).
pub fn dry_run_unsupported(hook: &str) -> ApiError {
    ApiError::bad_request(format!(
        "admission webhook {hook:?} does not support dry run"
    ))
}

/// A `Warning` header value as the API server writes one (code 299, no agent, text quoted).
pub fn warning_header(text: &str) -> String {
    format!(
        "299 - \"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

#[cfg(test)]
mod tests {
    use super::super::Operation;
    use super::*;
    use crate::auth::UserInfo;

    fn attrs() -> Attributes {
        Attributes {
            operation: Operation::Update,
            group: "".into(),
            version: "v1".into(),
            versions: vec!["v1".into()],
            resource: "configmaps".into(),
            subresource: "".into(),
            kind: "ConfigMap".into(),
            namespace: "ns".into(),
            name: "cm".into(),
            object: Some(json!({"apiVersion": "v1", "kind": "ConfigMap"})),
            old_object: Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {}})),
            user: UserInfo::service_account("ns", "sa", "u-1"),
            dry_run: true,
            options: json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}),
        }
    }

    #[test]
    fn the_request_is_an_admission_review_v1_with_the_callers_identity() {
        let r = request(&attrs(), "v1", "u", "v1");
        assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
        let req = &r["request"];
        assert_eq!(
            req["kind"],
            json!({"group": "", "version": "v1", "kind": "ConfigMap"})
        );
        assert_eq!(
            req["resource"],
            json!({"group": "", "version": "v1", "resource": "configmaps"})
        );
        assert_eq!(req["requestKind"], req["kind"]);
        assert_eq!(req.get("subResource"), None);
        assert_eq!(req["operation"], "UPDATE");
        assert_eq!(req["userInfo"]["username"], "system:serviceaccount:ns:sa");
        assert_eq!(req["userInfo"]["uid"], "u-1");
        assert_eq!(req["dryRun"], true);
        assert_eq!(req["oldObject"]["data"], json!({}));
        let mut create = attrs();
        create.old_object = None;
        assert_eq!(
            request(&create, "v1", "u", "v1")["request"]["oldObject"],
            Value::Null
        );
    }

    #[test]
    fn an_answer_must_be_an_admission_review_for_this_uid() {
        let ok = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "u", "allowed": true, "warnings": ["w"]}}"#;
        let a = read("u", "v1", 200, "application/json", ok).unwrap();
        assert!(a.allowed);
        assert_eq!(a.warnings, ["w"]);
        assert_eq!(
            read("other", "v1", 200, "application/json", ok).unwrap_err(),
            "received invalid webhook response: expected response.uid=\"other\", got \"u\""
        );
        let absent = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#;
        assert_eq!(
            read("u", "v1", 200, "application/json", absent).unwrap_err(),
            "received invalid webhook response: webhook response was absent"
        );
        assert_eq!(
            read("u", "v1", 500, "text/plain", b"boom\n").unwrap_err(),
            "failed to call webhook: an error on the server (\"boom\") has prevented the request from succeeding"
        );
        assert!(read("u", "v1", 200, "application/json", b"<html>")
            .unwrap_err()
            .starts_with("failed to call webhook: couldn't get version/kind; json parse error"));
    }

    #[test]
    fn denials_and_failures_read_as_the_api_servers() {
        let e = denied(
            "deny.example.com",
            Some(&json!({"message": "no", "code": 403, "reason": "Forbidden"})),
        );
        assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "admission webhook \"deny.example.com\" denied the request: no"
        );
        let e = denied("deny.example.com", Some(&json!({"code": 200})));
        assert_eq!((e.code, e.reason.as_str()), (400, ""));
        assert_eq!(
            e.message,
            "admission webhook \"deny.example.com\" denied the request without explanation"
        );
        let e = call_failed("h.example.com", "failed to call webhook: x");
        assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
        assert_eq!(e.message, "Internal error occurred: failed calling webhook \"h.example.com\": failed to call webhook: x");
        assert_eq!(warning_header("say \"hi\""), "299 - \"say \\\"hi\\\"\"");
    }
}
