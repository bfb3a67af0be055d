//! The HTTP side: routing of Kubernetes REST paths, the verbs, watch streams, Table output,
//! discovery, and the admin endpoints for fault injection and request counters.

use crate::auth::{self, Attributes, UserInfo};
use crate::error::ApiError;
use crate::resources::{self, ResourceType};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{md, md_str, Change, Inner, Sub, WriteCtx};
use crate::{events, table, write};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Fault {
    #[serde(default = "star")]
    pub verb: String,
    #[serde(default = "star")]
    pub resource: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default = "one")]
    pub count: u64,
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub latency_ms: Option<u64>,
}
fn star() -> String {
    "*".into()
}
fn one() -> u64 {
    1
}

#[derive(Default)]
pub struct Admin {
    pub faults: Vec<Fault>,
    pub counters: BTreeMap<(String, String, String), u64>,
    /// Requests by who made them: (user, verb, API group, resource[/subresource], namespace,
    /// allowed) -> count. What a ServiceAccount actually did, for checking its RBAC.
    pub audit: BTreeMap<(String, String, String, String, String, bool), u64>,
}

pub struct AppState {
    pub inner: Mutex<Inner>,
    pub admin: Mutex<Admin>,
    /// Tokens issued by the TokenRequest API.
    pub tokens: Mutex<auth::Tokens>,
    pub tx: broadcast::Sender<Arc<Change>>,
    /// Bumped to end every open watch.
    pub watch_epoch: watch::Sender<u64>,
    pub controllers: Notify,
    pub bookmark_interval: Duration,
    /// Most Events kept (the oldest go first; older than an hour go anyway).
    pub max_events: usize,
}

impl AppState {
    pub fn new(bookmark_interval: Duration) -> Arc<Self> {
        let (tx, _) = broadcast::channel(65_536);
        let (we, _) = watch::channel(0);
        Arc::new(AppState {
            inner: Mutex::new(Inner::new(tx.clone())),
            admin: Mutex::new(Admin::default()),
            tokens: Mutex::new(auth::Tokens::default()),
            tx,
            watch_epoch: we,
            controllers: Notify::new(),
            bookmark_interval,
            max_events: 10_000,
        })
    }
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

/// Boolean query parameters as the API server parses them (Go's strconv.ParseBool).
pub(crate) fn qbool(q: &HashMap<String, String>, key: &str) -> bool {
    matches!(
        q.get(key).map(String::as_str),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A parsed resource path.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) namespace: Option<String>,
    pub(crate) plural: String,
    pub(crate) name: Option<String>,
    pub(crate) sub: Option<String>,
}

fn parse_resource_path(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let t = |ns: Option<&str>, plural: &str, name: Option<&&str>, sub: Option<&&str>| Target {
        group: group.into(),
        version: version.into(),
        namespace: ns.map(String::from),
        plural: plural.into(),
        name: name.map(|s| s.to_string()),
        sub: sub.map(|s| s.to_string()),
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..]
            if group.is_empty()
                && (*plural == "status" || *plural == "finalize")
                && tail.is_empty() =>
        {
            Some(t(None, "namespaces", Some(ns), Some(plural)))
        }
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => {
            Some(t(Some(ns), plural, tail.first(), tail.get(1)))
        }
        [plural, tail @ ..] if tail.len() <= 2 => Some(t(None, plural, tail.first(), tail.get(1))),
        _ => None,
    }
}

fn verb_of(method: &Method, t: &Target, q: &HashMap<String, String>) -> &'static str {
    let watch = qbool(q, "watch");
    match (method.as_str(), t.name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

fn default_manager(headers: &HeaderMap) -> String {
    headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

pub async fn handle(
    state: Arc<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    tracing::debug!(%method, %uri, content_type = ?headers.get("content-type"), accept = ?headers.get("accept"), "request");
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let q = query_map(&uri);
    if let ["__admin", rest @ ..] = segs.as_slice() {
        return admin(&state, &method, rest, &body);
    }
    // Authentication, impersonation, then authorization: before anything else is looked at.
    let user = match who(&state, &headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let target = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => parse_resource_path("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => parse_resource_path(g, v, rest),
        _ => None,
    };
    let attrs = match &target {
        Some(t) => resource_attributes(&method, t, &q),
        None => Attributes::path(&method.as_str().to_ascii_lowercase(), &path),
    };
    if let Err(e) = authorize(&state, &user, &attrs) {
        return e.into_response();
    }
    match segs.as_slice() {
        ["version"] => {
            return json_response(
                StatusCode::OK,
                &json!({"major": "1", "minor": "24", "gitVersion": "v1.24.0+emulator", "gitCommit": "emulator", "gitTreeState": "clean",
                        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.19.8", "compiler": "gc", "platform": "linux/amd64"}),
            )
        }
        ["healthz"] | ["readyz"] | ["livez"] => return (StatusCode::OK, "ok").into_response(),
        ["api"] => {
            return json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
            )
        }
        ["apis"] => return json_response(StatusCode::OK, &group_list(&state.lock())),
        ["apis", g] => {
            let gl = group_list(&state.lock());
            return match gl["groups"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == *g))
            {
                Some(grp) => {
                    let mut grp = grp.clone();
                    grp["kind"] = json!("APIGroup");
                    grp["apiVersion"] = json!("v1");
                    json_response(StatusCode::OK, &grp)
                }
                None => ApiError::path_not_found().into_response(),
            };
        }
        ["api", "v1"] => return resource_list(&state.lock(), "", "v1"),
        ["apis", g, v] => return resource_list(&state.lock(), g, v),
        ["openapi", "v3"] => return json_response(StatusCode::OK, &openapi_index(&state.lock())),
        ["openapi", "v3", rest @ ..] => {
            return json_response(StatusCode::OK, &openapi_doc(&state.lock(), &rest.join("/")))
        }
        _ => {}
    }
    let Some(t) = target else {
        return ApiError::path_not_found().into_response();
    };
    let verb = verb_of(&method, &t, &q);
    let res_name = match &t.sub {
        Some(s) => format!("{}/{}", t.plural, s),
        None => t.plural.clone(),
    };
    // Counters and faults.
    let (fault_code, latency) = {
        let mut a = state.admin.lock().unwrap_or_else(|e| e.into_inner());
        *a.counters
            .entry((
                verb.to_string(),
                res_name.clone(),
                t.namespace.clone().unwrap_or_default(),
            ))
            .or_default() += 1;
        let mut code = None;
        let mut latency = None;
        for f in a.faults.iter_mut() {
            let m = (f.verb == "*" || f.verb == verb)
                && (f.resource == "*" || f.resource == res_name || f.resource == t.plural)
                && f.namespace
                    .as_ref()
                    .map(|n| Some(n) == t.namespace.as_ref())
                    .unwrap_or(true)
                && f.count > 0;
            if m {
                f.count -= 1;
                if f.code.is_some() && code.is_none() {
                    code = f.code;
                }
                if f.latency_ms.is_some() {
                    latency = f.latency_ms;
                }
            }
        }
        a.faults.retain(|f| f.count > 0);
        (code, latency)
    };
    if let Some(ms) = latency {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = fault_code {
        return fault_response(code, &user, &attrs);
    }
    if t.group == "authorization.k8s.io" {
        return access_review(&state, &user, &t, verb, &body, &headers, &q);
    }
    if t.group.is_empty() && t.plural == "serviceaccounts" && t.sub.as_deref() == Some("token") {
        return match verb {
            "create" => {
                let manager = q
                    .get("fieldManager")
                    .cloned()
                    .unwrap_or_else(|| default_manager(&headers));
                token_request(&state, &t, &body, &manager)
            }
            _ => ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
            .into_response(),
        };
    }
    let rt = {
        let inner = state.lock();
        inner.find_type(&t.group, &t.version, &t.plural)
    };
    let Some(rt) = rt else {
        return ApiError::path_not_found().into_response();
    };
    if rt.namespaced && t.namespace.is_none() && !matches!(verb, "list" | "watch") {
        return ApiError::path_not_found().into_response();
    }
    if !rt.namespaced && t.namespace.is_some() {
        return ApiError::path_not_found().into_response();
    }
    let sub = match t.sub.as_deref() {
        None => Sub::Main,
        Some("status") if rt.status_subresource => Sub::Status,
        Some(_) => return ApiError::path_not_found().into_response(),
    };
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let want_table = accept.contains("as=Table");
    // Metadata-only clients (kube's metadata watcher, kubectl's PartialObjectMetadata requests).
    let want_meta = accept.contains("as=PartialObjectMetadata");
    let mut ctype = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let mut body = body;
    if ctype.contains("protobuf") && matches!(method, Method::POST | Method::PUT | Method::DELETE) {
        // A typed client's create or update of a built-in kind (see protobuf.rs).
        match crate::protobuf::decode(&body) {
            Ok(v) => {
                body = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
                ctype = "application/json".into();
            }
            Err(e) => {
                return ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})")).into_response();
            }
        }
    }
    if ctype.contains("protobuf") || ctype.contains("cbor") {
        // Only JSON (and YAML for apply) is spoken for the rest; clients fall back to JSON on 415.
        return ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ctype})")).into_response();
    }
    let manager = q
        .get("fieldManager")
        .cloned()
        .unwrap_or_else(|| default_manager(&headers));
    let dry_run = q.get("dryRun").map(|v| v == "All").unwrap_or(false);
    let ns = t.namespace.clone().unwrap_or_default();
    let w = write::WriteReq {
        rt: &rt,
        t: &t,
        sub,
        user: &user,
        manager: &manager,
        q: &q,
        dry_run,
        warnings: Default::default(),
    };
    let result = match verb {
        "watch" => return watch_stream(state.clone(), rt, t, q, want_table, want_meta),
        "get" => {
            let inner = state.lock();
            match inner.get(&rt, &ns, t.name.as_deref().unwrap_or("")) {
                Some(o) => {
                    let view = events::to_view(&rt, &t.version, o);
                    if want_meta {
                        Ok((StatusCode::OK, partial(&view)))
                    } else if want_table {
                        Ok((
                            StatusCode::OK,
                            table::render(&rt, &t.version, &[view], inner.rv, &q),
                        ))
                    } else {
                        Ok((StatusCode::OK, view))
                    }
                }
                None => Err(ApiError::not_found(&rt, t.name.as_deref().unwrap_or(""))),
            }
        }
        "list" => list(&state, &rt, &t, &q, want_table, want_meta).map(|v| (StatusCode::OK, v)),
        "create" => write::create(&state, &w, &body, &ctype).await,
        "update" => write::update(&state, &w, &body).await,
        "patch" => match apply_create_denied(&state, &user, &attrs, &rt, &t, &ctype) {
            Some(e) => Err(e),
            None => write::patch(&state, &w, &body, &ctype).await,
        },
        "delete" => write::delete(&state, &w, &body)
            .await
            .map(|v| (StatusCode::OK, v)),
        "deletecollection" => write::delete_collection(&state, &w, &body)
            .await
            .map(|v| (StatusCode::OK, v)),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    };
    state.controllers.notify_one();
    let mut resp = match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => e.into_response(),
    };
    let warnings = w.warnings.into_inner().unwrap_or_else(|e| e.into_inner());
    for text in warnings {
        let header = crate::admission::review::warning_header(&text);
        if let Ok(v) = axum::http::HeaderValue::from_bytes(header.as_bytes()) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

/// An injected failure, answered as the real server answers it: 403 from the authorizer (with its
/// message naming the user, verb and resource), 429 from priority and fairness (Retry-After header
/// and details.retryAfterSeconds), and the plain 409/500/503/504 bodies.
fn fault_response(code: u16, user: &UserInfo, attrs: &Attributes) -> Response {
    match code {
        403 => auth::forbidden(user, attrs).into_response(),
        429 => {
            let mut e = ApiError::new(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
            );
            e.details = Some(json!({"retryAfterSeconds": 1}));
            let mut r = e.into_response();
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            r
        }
        _ => {
            let reason = match code {
                409 => "Conflict",
                500 => "InternalError",
                503 => "ServiceUnavailable",
                504 => "Timeout",
                _ => "InternalError",
            };
            let what = match &attrs.target {
                auth::AttrTarget::Resource {
                    resource,
                    subresource,
                    ..
                } if !subresource.is_empty() => format!("{resource}/{subresource}"),
                auth::AttrTarget::Resource { resource, .. } => resource.clone(),
                auth::AttrTarget::Path(p) => p.clone(),
            };
            ApiError::new(
                code,
                reason,
                format!("injected fault: {} {what}", attrs.verb),
            )
            .into_response()
        }
    }
}

/// Who a request is from (its bearer token), and who it acts as (impersonation headers).
fn who(state: &AppState, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    // The administrator without impersonation needs no look-up (most test traffic).
    let impersonating = headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-"));
    if !impersonating && auth::is_admin_token(headers) {
        return Ok(UserInfo::admin());
    }
    let inner = state.lock();
    let user = {
        let tokens = state.tokens.lock().unwrap_or_else(|e| e.into_inner());
        auth::authenticate(headers, &tokens, &inner).ok_or_else(auth::unauthorized)?
    };
    auth::impersonate(&inner, user, headers)
}

/// The authorizer's view of a resource request (the API server's RequestInfo): the verb, the
/// namespace (a Namespace's own name for `namespaces`), and the name, which a list or watch takes
/// from a `metadata.name` field selector.
fn resource_attributes(method: &Method, t: &Target, q: &HashMap<String, String>) -> Attributes {
    let verb = verb_of(method, t, q);
    let by_selector = || {
        q.get("fieldSelector")?
            .split(',')
            .find_map(|term| {
                let v = term.trim().strip_prefix("metadata.name")?;
                v.strip_prefix("==").or_else(|| v.strip_prefix('='))
            })
            .map(String::from)
    };
    let name = t
        .name
        .clone()
        .or_else(|| matches!(verb, "list" | "watch").then(by_selector).flatten())
        .unwrap_or_default();
    let namespace = match (&t.namespace, t.group.is_empty() && t.plural == "namespaces") {
        (_, true) => t.name.clone().unwrap_or_default(),
        (ns, false) => ns.clone().unwrap_or_default(),
    };
    Attributes::resource(
        verb,
        &t.group,
        &t.plural,
        t.sub.as_deref().unwrap_or(""),
        &namespace,
        &name,
    )
}

/// RBAC's decision, recorded by user for `/__admin/audit`; a denial is the real 403.
fn authorize(state: &AppState, user: &UserInfo, attrs: &Attributes) -> Result<(), ApiError> {
    let allowed = user.is_master() || auth::authorize(&state.lock(), user, attrs).allowed;
    let (group, resource, ns) = match &attrs.target {
        auth::AttrTarget::Resource {
            group,
            resource,
            subresource,
            namespace,
            ..
        } => {
            let r = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            (group.clone(), r, namespace.clone())
        }
        auth::AttrTarget::Path(p) => (String::new(), p.clone(), String::new()),
    };
    *state
        .admin
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .audit
        .entry((
            user.name.clone(),
            attrs.verb.clone(),
            group,
            resource,
            ns,
            allowed,
        ))
        .or_default() += 1;
    if allowed {
        Ok(())
    } else {
        Err(auth::forbidden(user, attrs))
    }
}

/// A server-side apply of an object that does not exist creates it, and the API server checks
/// `create` for that too (with a 403 whose reason is empty); `patch` alone is not enough.
fn apply_create_denied(
    state: &AppState,
    user: &UserInfo,
    attrs: &Attributes,
    rt: &ResourceType,
    t: &Target,
    ctype: &str,
) -> Option<ApiError> {
    if !ctype.contains("apply-patch") {
        return None;
    }
    let name = t.name.as_deref()?;
    let srt = storage(state, rt);
    let exists = state
        .lock()
        .get(&srt, t.namespace.as_deref().unwrap_or(""), name)
        .is_some();
    if exists {
        return None;
    }
    // Checked (and audited) like a request of its own.
    match authorize(state, user, &attrs.with_verb("create")) {
        Ok(()) => None,
        Err(_) => Some(auth::forbidden_create(&t.group, &t.plural, name)),
    }
}

/// The access review APIs (authorization.k8s.io): create only.
fn access_review(
    state: &AppState,
    user: &UserInfo,
    t: &Target,
    verb: &str,
    body: &Bytes,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Response {
    if verb != "create" || t.name.is_some() {
        return ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .into_response();
    }
    let ctype = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let decoded = if ctype.contains("protobuf") {
        crate::protobuf::decode(body)
    } else {
        serde_json::from_slice(body).map_err(|e| format!("error decoding JSON: {e}"))
    };
    let req: Value = match decoded {
        Ok(v) => v,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    let manager = q
        .get("fieldManager")
        .cloned()
        .unwrap_or_else(|| default_manager(headers));
    match auth::review(
        &state.lock(),
        user,
        &t.plural,
        t.namespace.as_deref(),
        &req,
        &manager,
    ) {
        Ok(v) => json_response(StatusCode::CREATED, &v),
        Err(e) => e.into_response(),
    }
}

/// The storage-side type and object for a request on `rt` (events.k8s.io Events live as core Events).
pub(crate) fn storage(state: &AppState, rt: &ResourceType) -> ResourceType {
    if rt.group == "events.k8s.io" {
        state.lock().types["/events"].clone()
    } else {
        rt.clone()
    }
}

fn list(
    state: &AppState,
    rt: &ResourceType,
    t: &Target,
    q: &HashMap<String, String>,
    want_table: bool,
    want_meta: bool,
) -> Result<Value, ApiError> {
    let ls = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fs = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let start = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c.trim_end_matches('='))
                .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
            let v: Value = serde_json::from_slice(&raw)
                .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
            Some(
                v.get("start")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        }
        None => None,
    };
    let srt = storage(state, rt);
    let inner = state.lock();
    let rv = inner.rv;
    let mut matched: Vec<(String, Value)> = inner
        .list(&srt, t.namespace.as_deref())
        .into_iter()
        .map(|o| events::to_view(rt, &t.version, o))
        .filter(|o| ls.matches(o) && fs.matches(o))
        .map(|o| {
            (
                format!("{}/{}", md_str(&o, "namespace"), md_str(&o, "name")),
                o,
            )
        })
        .filter(|(k, _)| {
            start
                .as_ref()
                .map(|s| k.as_str() >= s.as_str())
                .unwrap_or(true)
        })
        .collect();
    matched.sort_by(|a, b| a.0.cmp(&b.0));
    let total = matched.len();
    let page: Vec<(String, Value)> = matched.into_iter().take(limit).collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if total > page.len() {
        let last = page.last().map(|(k, _)| k.clone()).unwrap_or_default();
        let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{last}\u{0}")});
        meta["continue"] =
            json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string()));
        meta["remainingItemCount"] = json!(total - page.len());
    } else if rt.custom {
        meta["continue"] = json!("");
    }
    let items: Vec<Value> = page.into_iter().map(|(_, o)| o).collect();
    if want_meta {
        let items: Vec<Value> = items.iter().map(partial).collect();
        return Ok(
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": meta, "items": items}),
        );
    }
    if want_table {
        let mut tbl = table::render(rt, &t.version, &items, rv, q);
        tbl["metadata"] = meta;
        return Ok(tbl);
    }
    let items: Vec<Value> = if rt.custom {
        items
    } else {
        items
            .into_iter()
            .map(|mut o| {
                if let Some(m) = o.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
                o
            })
            .collect()
    };
    Ok(
        json!({"apiVersion": rt.api_version_for(&t.version), "kind": format!("{}List", rt.kind), "metadata": meta, "items": items}),
    )
}

/// `POST .../serviceaccounts/NAME/token`: a TokenRequest answered with a JWT-shaped token for the
/// ServiceAccount (audiences and expiry as asked; 10 minutes at least, one hour by default), as the
/// API server's TokenRequest API answers. The token is not signed by a key anyone can check; the
/// emulator remembers it, and it authenticates as the ServiceAccount while that exists (auth.rs).
fn token_request(state: &AppState, t: &Target, body: &Bytes, manager: &str) -> Response {
    let (Some(ns), Some(name)) = (t.namespace.as_deref(), t.name.as_deref()) else {
        return ApiError::path_not_found().into_response();
    };
    let sa = {
        let inner = state.lock();
        inner
            .find_type("", "v1", "serviceaccounts")
            .and_then(|rt| inner.get(&rt, ns, name).cloned())
    };
    let Some(sa) = sa else {
        return ApiError::new(
            404,
            "NotFound",
            format!("serviceaccounts {name:?} not found"),
        )
        .into_response();
    };
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return ApiError::bad_request(format!("bad TokenRequest: {e}")).into_response(),
    };
    let audiences = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .cloned()
        .unwrap_or_else(|| auth::API_AUDIENCES.iter().map(|a| json!(a)).collect());
    let exp = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if exp < 600 {
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("TokenRequest.authentication.k8s.io {name:?} is invalid: spec.expirationSeconds: Invalid value: {exp}: may not specify a duration less than 10 minutes"),
        );
        e.details = Some(
            json!({"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest",
            "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {exp}: may not specify a duration less than 10 minutes"), "field": "spec.expirationSeconds"}]}),
        );
        return e.into_response();
    }
    let now = chrono::Utc::now().timestamp();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = json!({"alg": "RS256", "kid": "kube-emulator"});
    let claims = json!({
        "aud": audiences, "exp": now + exp, "iat": now, "nbf": now,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": md_str(&sa, "uid")}}
    });
    let signing_input = format!("{}.{}", b64(&header), b64(&claims));
    let signature = {
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(signing_input.as_bytes()))
    };
    let token = format!("{signing_input}.{signature}");
    state
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .issue(
            token.clone(),
            auth::IssuedToken {
                namespace: ns.into(),
                name: name.into(),
                uid: md_str(&sa, "uid").into(),
                expires: now + exp,
                audiences: audiences
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
            },
        );
    let expires = chrono::DateTime::from_timestamp(now + exp, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null,
                "managedFields": [{"manager": manager, "operation": "Update",
                    "apiVersion": "authentication.k8s.io/v1", "time": crate::store::now(),
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:expirationSeconds": {}}},
                    "subresource": "token"}]},
            "spec": {"audiences": audiences, "expirationSeconds": exp, "boundObjectRef": null},
            "status": {"token": token, "expirationTimestamp": expires}
        }),
    )
}

/// An object as a PartialObjectMetadata (metadata only), as the server answers
/// `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`.
fn partial(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
}

fn watch_stream(
    state: Arc<AppState>,
    rt: ResourceType,
    t: Target,
    q: HashMap<String, String>,
    want_table: bool,
    want_meta: bool,
) -> Response {
    let ls = match LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
        Ok(l) => l,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    let fs = match FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    let bookmarks = qbool(&q, "allowWatchBookmarks");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    // Streaming lists (WatchList, Kubernetes 1.27+; client-go 1.35 asks for them by default): the
    // current state as synthetic ADDED events, then a bookmark marking the end of them. A 1.24
    // server predates this; the emulator serves it as newer servers do (see the README).
    let initial_events = qbool(&q, "sendInitialEvents");
    let from: Option<u64> = q
        .get("resourceVersion")
        .and_then(|s| s.parse().ok())
        .filter(|_| !initial_events);
    let srt = storage(&state, &rt);
    let key = srt.key();
    let ns_filter = t.namespace.clone();
    let matches = move |o: &Value| -> bool {
        ns_filter
            .as_ref()
            .map(|n| md_str(o, "namespace") == n)
            .unwrap_or(true)
            && ls.matches(o)
            && fs.matches(o)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let mut sub = state.tx.subscribe();
    let mut epoch = state.watch_epoch.subscribe();
    let (initial, mut last_rv, err): (Vec<(String, Value)>, u64, Option<ApiError>) = {
        let inner = state.lock();
        match from {
            Some(rv) if rv > 0 && rv < inner.floor => (
                vec![],
                0,
                Some(ApiError::gone(format!(
                    "too old resource version: {rv} ({})",
                    inner.floor
                ))),
            ),
            Some(rv) if rv > 0 => {
                let evs = inner
                    .history
                    .iter()
                    .filter(|c| c.rv > rv && c.type_key == key)
                    .flat_map(|c| filter_event(c, &matches))
                    .collect();
                (evs, rv.max(inner.floor), None)
            }
            _ => {
                let mut objs: Vec<Value> = inner
                    .list(&srt, t.namespace.as_deref())
                    .into_iter()
                    .filter(|o| matches(o))
                    .cloned()
                    .collect();
                objs.sort_by_key(|o| md_str(o, "resourceVersion").parse::<u64>().unwrap_or(0));
                (
                    objs.into_iter().map(|o| ("ADDED".to_string(), o)).collect(),
                    inner.rv,
                    None,
                )
            }
        }
    };
    let version = t.version.clone();
    let q2 = q.clone();
    let st = state.clone();
    tokio::spawn(async move {
        let render = |ty: &str, o: &Value| -> Bytes {
            let view = events::to_view(&rt, &version, o);
            let obj = if want_meta && ty != "ERROR" {
                partial(&view)
            } else if want_table && ty != "BOOKMARK" && ty != "ERROR" {
                table::render(&rt, &version, &[view], 0, &q2)
            } else {
                view
            };
            Bytes::from(format!("{}\n", json!({"type": ty, "object": obj})))
        };
        if let Some(e) = err {
            let _ = tx
                .send(Ok(Bytes::from(format!(
                    "{}\n",
                    json!({"type": "ERROR", "object": e.to_status()})
                ))))
                .await;
            return;
        }
        for (ty, o) in &initial {
            last_rv = last_rv.max(md_str(o, "resourceVersion").parse().unwrap_or(0));
            if tx.send(Ok(render(ty, o))).await.is_err() {
                return;
            }
        }
        if initial_events && bookmarks {
            let end = json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version_for(&version),
                "metadata": {"resourceVersion": last_rv.to_string(), "creationTimestamp": null,
                             "annotations": {"k8s.io/initial-events-end": "true"}}}});
            if tx.send(Ok(Bytes::from(format!("{end}\n")))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut tick = tokio::time::interval(st.bookmark_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks {
                        let _ = tx.send(Ok(bookmark(&rt, &version, last_rv))).await;
                    }
                    break;
                }
                _ = epoch.changed() => break,
                msg = sub.recv() => match msg {
                    Ok(c) => {
                        if c.rv <= last_rv || c.type_key != key { continue; }
                        last_rv = c.rv;
                        for (ty, o) in filter_event(&c, &matches) {
                            if tx.send(Ok(render(&ty, &o))).await.is_err() { return; }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick(), if bookmarks => {
                    // Everything up to the current resourceVersion is already in the channel: drain it first.
                    let current = st.lock().rv;
                    while let Ok(c) = sub.try_recv() {
                        if c.rv <= last_rv || c.type_key != key { continue; }
                        last_rv = c.rv;
                        for (ty, o) in filter_event(&c, &matches) {
                            if tx.send(Ok(render(&ty, &o))).await.is_err() { return; }
                        }
                    }
                    last_rv = last_rv.max(current);
                    if tx.send(Ok(bookmark(&rt, &version, last_rv))).await.is_err() { return; }
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(Body::from_stream(stream))
        .expect("response")
}

fn bookmark(rt: &ResourceType, version: &str, rv: u64) -> Bytes {
    Bytes::from(format!(
        "{}\n",
        json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version_for(version), "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null}}})
    ))
}

/// A change as a selector-filtered watch sees it: an object that stops matching is DELETED for it.
fn filter_event(c: &Change, matches: &impl Fn(&Value) -> bool) -> Vec<(String, Value)> {
    let now = matches(&c.object);
    let before = c.old.as_ref().map(matches).unwrap_or(false);
    match (c.event, before, now) {
        ("DELETED", true, _) | ("DELETED", _, true) => vec![("DELETED".into(), c.object.clone())],
        ("DELETED", false, false) => vec![],
        (_, _, true) if c.event == "ADDED" || before => {
            vec![(c.event.to_string(), c.object.clone())]
        }
        (_, false, true) => vec![("ADDED".into(), c.object.clone())],
        (_, true, false) => vec![("DELETED".into(), c.object.clone())],
        _ => vec![],
    }
}

fn group_list(inner: &Inner) -> Value {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut order: Vec<String> = vec![];
    for t in inner.types.values() {
        if t.group.is_empty() {
            continue;
        }
        if !groups.contains_key(&t.group) {
            order.push(t.group.clone());
        }
        let e = groups.entry(t.group.clone()).or_default();
        for v in &t.versions {
            if !e.contains(v) {
                e.push(v.clone());
            }
        }
    }
    let gs: Vec<Value> = order
        .iter()
        .map(|g| {
            let vs = &groups[g];
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

fn resource_list(inner: &Inner, group: &str, version: &str) -> Response {
    let types: Vec<&ResourceType> = inner
        .types
        .values()
        .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
        .collect();
    if types.is_empty() {
        return ApiError::path_not_found().into_response();
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut v = json!({"kind": "APIResourceList", "groupVersion": gv, "resources": resources::api_resources(&types, version)});
    if !group.is_empty() {
        v["apiVersion"] = json!("v1");
    }
    json_response(StatusCode::OK, &v)
}

fn openapi_index(inner: &Inner) -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": format!("/openapi/v3/api/v1?hash={}", inner.rv)}),
    );
    for t in inner.types.values() {
        if t.group.is_empty() {
            continue;
        }
        for v in &t.versions {
            let k = format!("apis/{}/{}", t.group, v);
            paths.insert(
                k.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={}", inner.rv)}),
            );
        }
    }
    json!({"paths": paths})
}

fn openapi_doc(inner: &Inner, gv: &str) -> Value {
    // Enough OpenAPI v3 for kubectl: the schemas of custom resources, and paths whose write
    // operations declare the `fieldValidation` parameter (so kubectl leaves validation to the server).
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    let param = json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                       {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                       {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}]);
    for t in inner.types.values() {
        for v in &t.versions {
            let prefix = if t.group.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{}/{}", t.group, v)
            };
            if gv != prefix {
                continue;
            }
            let gvk = json!({"group": t.group, "version": v, "kind": t.kind});
            let op = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": param, "responses": {"200": {"description": "OK"}}});
            let base = if t.namespaced {
                format!("/{prefix}/namespaces/{{namespace}}/{}", t.plural)
            } else {
                format!("/{prefix}/{}", t.plural)
            };
            paths.insert(base.clone(), json!({"post": op("post")}));
            paths.insert(
                format!("{base}/{{name}}"),
                json!({"put": op("put"), "patch": op("patch")}),
            );
            if t.status_subresource {
                paths.insert(
                    format!("{base}/{{name}}/status"),
                    json!({"put": op("put"), "patch": op("patch")}),
                );
            }
            if let Some(sch) = t.schema(v) {
                let mut sch = sch.clone();
                sch["x-kubernetes-group-version-kind"] = json!([gvk]);
                let rev: Vec<&str> = t.group.split('.').rev().collect();
                schemas.insert(format!("{}.{}.{}", rev.join("."), v, t.kind), sch);
            }
        }
    }
    json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.24.0"}, "paths": paths, "components": {"schemas": schemas}})
}

fn admin(state: &AppState, method: &Method, rest: &[&str], body: &Bytes) -> Response {
    match (method.as_str(), rest) {
        ("POST", ["faults"]) => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => {
                state
                    .admin
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .faults
                    .push(f);
                json_response(StatusCode::OK, &json!({"ok": true}))
            }
            Err(e) => ApiError::bad_request(format!("bad fault: {e}")).into_response(),
        },
        ("DELETE", ["faults"]) => {
            state
                .admin
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .faults
                .clear();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        ("GET", ["counters"]) => {
            let a = state.admin.lock().unwrap_or_else(|e| e.into_inner());
            let list: Vec<Value> = a
                .counters
                .iter()
                .map(|((v, r, n), c)| json!({"verb": v, "resource": r, "namespace": n, "count": c}))
                .collect();
            json_response(StatusCode::OK, &json!({"counters": list}))
        }
        ("GET", ["audit"]) => json_response(StatusCode::OK, &audit(state)),
        ("DELETE", ["counters"]) | ("POST", ["counters", "reset"]) => {
            state
                .admin
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .counters
                .clear();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        ("POST", ["watches", "close"]) => {
            state.watch_epoch.send_modify(|e| *e += 1);
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        ("POST", ["history", "expire"]) => {
            state.lock().expire_history();
            state.watch_epoch.send_modify(|e| *e += 1);
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        _ => ApiError::path_not_found().into_response(),
    }
}

/// Every request so far by user, verb, API group, resource, namespace and decision, with counts.
pub fn audit(state: &AppState) -> Value {
    let a = state.admin.lock().unwrap_or_else(|e| e.into_inner());
    let list: Vec<Value> = a
        .audit
        .iter()
        .map(|((u, v, g, r, n, ok), c)| {
            json!({"user": u, "verb": v, "group": g, "resource": r, "namespace": n, "allowed": ok, "count": c})
        })
        .collect();
    json!({ "requests": list })
}

/// Runs the built-in controllers (workloads, CRD status, garbage collection, namespaces).
pub async fn run_controllers(state: Arc<AppState>) {
    let mut rx = state.tx.subscribe();
    let mut last_expiry = std::time::Instant::now();
    loop {
        let mut work: Vec<Arc<Change>> = vec![];
        tokio::select! {
            m = rx.recv() => match m {
                Ok(c) => work.push(c),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            },
            _ = state.controllers.notified() => {},
            _ = tokio::time::sleep(Duration::from_millis(500)) => {},
        }
        while let Ok(c) = rx.try_recv() {
            work.push(c);
        }
        let mut inner = state.lock();
        for c in &work {
            if c.event == "DELETED" {
                continue;
            }
            let name = md_str(&c.object, "name").to_string();
            match c.type_key.as_str() {
                "apps/deployments" | "apps/statefulsets" | "apps/daemonsets" => {
                    let plural = c.type_key.trim_start_matches("apps/").to_string();
                    crate::workloads::reconcile(&mut inner, &plural, &c.namespace, &name);
                }
                "apiextensions.k8s.io/customresourcedefinitions" => {
                    establish_crd(&mut inner, &name)
                }
                _ => {}
            }
        }
        let mut passes = 0;
        while inner.collect_garbage() && passes < 20 {
            passes += 1;
        }
        if last_expiry.elapsed() >= Duration::from_secs(10) {
            last_expiry = std::time::Instant::now();
            inner.expire_events(chrono::Duration::hours(1), state.max_events);
        }
    }
}

fn establish_crd(inner: &mut Inner, name: &str) {
    let rt = inner.types["apiextensions.k8s.io/customresourcedefinitions"].clone();
    let Some(crd) = inner.get(&rt, "", name).cloned() else {
        return;
    };
    if md(&crd, "deletionTimestamp").is_some() {
        return;
    }
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    if crd.pointer("/status/acceptedNames") == Some(&names) {
        return;
    }
    let now = crate::store::now();
    let mut n = crd.clone();
    let versions = resources::stored_versions(&crd);
    n["status"] = json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
        ],
        "acceptedNames": names,
        "storedVersions": versions,
    });
    let _ = inner.write(
        &rt,
        "v1",
        "",
        name,
        Some(crd),
        n,
        WriteCtx::update("kube-apiserver", Sub::Status),
    );
}
