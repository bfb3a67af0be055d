//! Authentication, impersonation and RBAC authorization as kube-apiserver does them with
//! `--authorization-mode RBAC` (recorded in `reference/http/10-authorization.json`):
//!
//! - who is asking: a bearer token (the static admin token of the emulator's kubeconfig, in group
//!   `system:masters`; or a token the TokenRequest API issued for a ServiceAccount, which
//!   authenticates as `system:serviceaccount:<ns>:<name>` while the ServiceAccount exists), no
//!   token (`system:anonymous`), or an unknown, expired or orphaned token (401);
//! - who they act as: `Impersonate-User` / `Impersonate-Group` / `Impersonate-Uid`, each checked as
//!   the `impersonate` verb on users, serviceaccounts, groups or uids;
//! - what they may do: Roles, ClusterRoles, RoleBindings and ClusterRoleBindings (verbs, apiGroups,
//!   `resource/subresource`, `*`, `*/subresource`, resourceNames, nonResourceURLs with a trailing
//!   `*`), `system:masters` allowed everything, and the bootstrap policy every cluster starts with
//!   (discovery, public info, self access reviews);
//! - the answers: 401 and 403 bodies as the real server writes them, and the access review APIs
//!   (`SelfSubjectAccessReview`, `SubjectAccessReview`, `LocalSubjectAccessReview`,
//!   `SelfSubjectRulesReview`) so that `kubectl auth can-i` works.
//!
//! Not emulated: aggregated ClusterRoles (`aggregationRule`), the Node authorizer, webhook
//! authorizers, client certificates, legacy Secret-based ServiceAccount tokens.

use crate::error::ApiError;
use crate::store::{md_str, Inner};
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::collections::HashMap;

/// The bearer token of the emulator's kubeconfig: a cluster administrator (`system:masters`).
pub const ADMIN_TOKEN: &str = "emulator";
/// The administrator's user name.
pub const ADMIN_USER: &str = "admin";
/// The audiences the API server accepts, and gives a TokenRequest that names none (as recorded).
pub const API_AUDIENCES: [&str; 2] = ["https://kubernetes.default.svc", "sts.amazonaws.com"];

const MASTERS: &str = "system:masters";
const AUTHENTICATED: &str = "system:authenticated";
const UNAUTHENTICATED: &str = "system:unauthenticated";
const ANONYMOUS: &str = "system:anonymous";
const SA_PREFIX: &str = "system:serviceaccount:";

/// An authenticated (or anonymous) user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn admin() -> Self {
        UserInfo {
            name: ADMIN_USER.into(),
            uid: String::new(),
            groups: vec![MASTERS.into(), AUTHENTICATED.into()],
        }
    }
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS.into(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED.into()],
        }
    }
    pub fn service_account(ns: &str, name: &str, uid: &str) -> Self {
        UserInfo {
            name: format!("{SA_PREFIX}{ns}:{name}"),
            uid: uid.into(),
            groups: sa_groups(ns)
                .into_iter()
                .chain([AUTHENTICATED.to_string()])
                .collect(),
        }
    }
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }
}

fn sa_groups(ns: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{ns}"),
    ]
}

/// `system:serviceaccount:<ns>:<name>` split into (ns, name).
fn split_sa(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix(SA_PREFIX)?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// A token the TokenRequest API issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub namespace: String,
    pub name: String,
    /// The ServiceAccount's uid: a token outlives neither its ServiceAccount nor a re-creation.
    pub uid: String,
    /// Unix seconds.
    pub expires: i64,
    pub audiences: Vec<String>,
}

/// Tokens issued by the TokenRequest API, by their text.
#[derive(Debug, Default)]
pub struct Tokens {
    issued: HashMap<String, IssuedToken>,
}

impl Tokens {
    pub fn issue(&mut self, token: String, t: IssuedToken) {
        let now = chrono::Utc::now().timestamp();
        self.issued.retain(|_, t| t.expires > now);
        self.issued.insert(token, t);
    }
    fn get(&self, token: &str) -> Option<&IssuedToken> {
        self.issued.get(token)
    }
}

/// Whether the request carries the administrator's token.
pub fn is_admin_token(headers: &HeaderMap) -> bool {
    bearer(headers) == Some(ADMIN_TOKEN)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

/// What authentication found: a user, or 401.
pub fn authenticate(headers: &HeaderMap, tokens: &Tokens, inner: &Inner) -> Option<UserInfo> {
    if headers.get("authorization").is_none() {
        return Some(UserInfo::anonymous());
    }
    let token = bearer(headers)?;
    if token == ADMIN_TOKEN {
        return Some(UserInfo::admin());
    }
    let t = tokens.get(token)?;
    let now = chrono::Utc::now().timestamp();
    let audience_ok = t
        .audiences
        .iter()
        .any(|a| API_AUDIENCES.contains(&a.as_str()));
    let sa = inner
        .find_type("", "v1", "serviceaccounts")
        .and_then(|rt| inner.get(&rt, &t.namespace, &t.name).cloned())?;
    (t.expires > now && audience_ok && md_str(&sa, "uid") == t.uid)
        .then(|| UserInfo::service_account(&t.namespace, &t.name, &t.uid))
}

/// The 401 body.
pub fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// What a request asks to do, as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub target: AttrTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrTarget {
    Resource {
        group: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
    },
    Path(String),
}

impl Attributes {
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Attributes {
            verb: verb.into(),
            target: AttrTarget::Resource {
                group: group.into(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: namespace.into(),
                name: name.into(),
            },
        }
    }
    pub fn path(verb: &str, path: &str) -> Self {
        Attributes {
            verb: verb.into(),
            target: AttrTarget::Path(path.into()),
        }
    }
    /// The same request with another verb (a server-side apply that creates is also a `create`).
    pub fn with_verb(&self, verb: &str) -> Self {
        Attributes {
            verb: verb.into(),
            target: self.target.clone(),
        }
    }
}

/// The authorizer's answer; `reason` says which binding allowed it (as the review APIs report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether one PolicyRule allows the request (RBAC's `RuleAllows`).
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !has(&strs(rule, "verbs"), &a.verb) {
        return false;
    }
    match &a.target {
        AttrTarget::Resource {
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            let resources = strs(rule, "resources");
            if resources.is_empty() || !has(&strs(rule, "apiGroups"), group) {
                return false;
            }
            let combined = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let resource_ok = resources.iter().any(|r| {
                r == "*"
                    || *r == combined
                    || (!subresource.is_empty() && *r == format!("*/{subresource}"))
            });
            let names = strs(rule, "resourceNames");
            resource_ok && (names.is_empty() || (!name.is_empty() && names.contains(name)))
        }
        AttrTarget::Path(path) => strs(rule, "nonResourceURLs").iter().any(|u| {
            u == "*"
                || u == path
                || u.strip_suffix('*')
                    .map(|p| path.starts_with(p))
                    .unwrap_or(false)
        }),
    }
}

/// The subject of a binding that names this user, described as the review APIs describe it.
fn applies_to(user: &UserInfo, subject: &Value, binding_ns: &str) -> Option<String> {
    let name = subject.get("name").and_then(Value::as_str).unwrap_or("");
    match subject.get("kind").and_then(Value::as_str).unwrap_or("") {
        "User" => (user.name == name).then(|| format!("User {name:?}")),
        "Group" => user
            .groups
            .iter()
            .any(|g| g == name)
            .then(|| format!("Group {name:?}")),
        "ServiceAccount" => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            (user.name == format!("{SA_PREFIX}{ns}:{name}"))
                .then(|| format!("ServiceAccount \"{name}/{ns}\""))
        }
        _ => None,
    }
}

/// One binding that applies to the user, with its role's rules.
struct Grant {
    /// `ClusterRoleBinding "x"` or `RoleBinding "x/ns"`.
    binding: String,
    /// `ClusterRole "x"` or `Role "x"`.
    role: String,
    subject: String,
    rules: Vec<Value>,
}

fn objects<'a>(inner: &'a Inner, plural: &str, ns: Option<&str>) -> Vec<&'a Value> {
    inner
        .find_type("rbac.authorization.k8s.io", "v1", plural)
        .map(|rt| inner.list(&rt, ns))
        .unwrap_or_default()
}

fn role_rules(inner: &Inner, kind: &str, name: &str, ns: &str) -> Option<Vec<Value>> {
    let (plural, ns) = match kind {
        "ClusterRole" => ("clusterroles", ""),
        "Role" => ("roles", ns),
        _ => return None,
    };
    let rt = inner.find_type("rbac.authorization.k8s.io", "v1", plural)?;
    let role = inner.get(&rt, ns, name)?;
    Some(role["rules"].as_array().cloned().unwrap_or_default())
}

/// The bindings that apply to `user`: every ClusterRoleBinding, then the RoleBindings of
/// `namespace` (the order the real authorizer visits them in).
fn grants(inner: &Inner, user: &UserInfo, namespace: &str) -> Vec<Grant> {
    let mut out = vec![];
    let mut visit = |b: &Value, binding: String, ns: &str| {
        let subject = b["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|s| applies_to(user, s, ns));
        let Some(subject) = subject else { return };
        let kind = b
            .pointer("/roleRef/kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = b
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(rules) = role_rules(inner, kind, name, ns) {
            out.push(Grant {
                binding,
                role: format!("{kind} {name:?}"),
                subject,
                rules,
            });
        }
    };
    for b in objects(inner, "clusterrolebindings", None) {
        visit(b, format!("ClusterRoleBinding {:?}", md_str(b, "name")), "");
    }
    if !namespace.is_empty() {
        for b in objects(inner, "rolebindings", Some(namespace)) {
            let binding = format!("RoleBinding \"{}/{namespace}\"", md_str(b, "name"));
            visit(b, binding, namespace);
        }
    }
    out
}

/// The RBAC decision for a request.
pub fn authorize(inner: &Inner, user: &UserInfo, a: &Attributes) -> Decision {
    if user.is_master() {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let ns = match &a.target {
        AttrTarget::Resource { namespace, .. } => namespace.as_str(),
        AttrTarget::Path(_) => "",
    };
    for g in grants(inner, user, ns) {
        if g.rules.iter().any(|r| rule_allows(r, a)) {
            return Decision {
                allowed: true,
                reason: format!(
                    "RBAC: allowed by {} of {} to {}",
                    g.binding, g.role, g.subject
                ),
            };
        }
    }
    Decision {
        allowed: false,
        reason: String::new(),
    }
}

/// The 403 the real server answers a denied request with.
pub fn forbidden(user: &UserInfo, a: &Attributes) -> ApiError {
    match &a.target {
        AttrTarget::Path(path) => {
            let mut e = ApiError::new(
                403,
                "Forbidden",
                format!(
                    "forbidden: User {:?} cannot {} path {path:?}",
                    user.name, a.verb
                ),
            );
            e.details = Some(json!({}));
            e
        }
        AttrTarget::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            let combined = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {namespace:?}")
            };
            let what = format!(
                "User {:?} cannot {} resource {combined:?} in API group {group:?} {scope}",
                user.name, a.verb
            );
            forbidden_body(group, resource, name, &what)
        }
    }
}

/// `<resource>[.<group>] ["<name>"] is forbidden: <why>` with its details.
fn forbidden_body(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
    let gr = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let named = if name.is_empty() {
        String::new()
    } else {
        format!(" {name:?}")
    };
    let mut e = ApiError::new(403, "Forbidden", format!("{gr}{named} is forbidden: {why}"));
    let mut d = json!({"kind": resource});
    if !name.is_empty() {
        d["name"] = json!(name);
    }
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    e.details = Some(d);
    e
}

/// The 403 of a write that would create an object the caller may patch or update but not
/// create (a server-side apply of a new object): the handler's own check, with no reason text.
pub fn forbidden_create(group: &str, resource: &str, name: &str) -> ApiError {
    forbidden_body(group, resource, name, "")
}

/// Applies `Impersonate-*` headers: the user the request then acts as, or 403/400.
pub fn impersonate(
    inner: &Inner,
    requester: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(String::from)
            .collect()
    };
    let user = values("impersonate-user").into_iter().next();
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid").into_iter().next();
    let extras = headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-extra-"));
    let Some(user) = user else {
        if !groups.is_empty() || uid.is_some() || extras {
            return Err(ApiError::bad_request(
                "requested [{Group  } {Uid  } {UserExtra  }] without impersonating a user",
            ));
        }
        return Ok(requester);
    };
    let check = |a: Attributes| -> Result<(), ApiError> {
        if authorize(inner, &requester, &a).allowed {
            Ok(())
        } else {
            Err(forbidden(&requester, &a))
        }
    };
    match split_sa(&user) {
        Some((ns, name)) => check(Attributes::resource(
            "impersonate",
            "",
            "serviceaccounts",
            "",
            ns,
            name,
        ))?,
        None => check(Attributes::resource(
            "impersonate",
            "",
            "users",
            "",
            "",
            &user,
        ))?,
    }
    for g in &groups {
        check(Attributes::resource("impersonate", "", "groups", "", "", g))?;
    }
    if let Some(u) = &uid {
        check(Attributes::resource(
            "impersonate",
            "authentication.k8s.io",
            "uids",
            "",
            "",
            u,
        ))?;
    }
    let mut out_groups = groups.clone();
    if groups.is_empty() {
        if let Some((ns, _)) = split_sa(&user) {
            out_groups = sa_groups(ns);
        }
    }
    if user == ANONYMOUS {
        if !out_groups.iter().any(|g| g == UNAUTHENTICATED) {
            out_groups.push(UNAUTHENTICATED.into());
        }
    } else if !out_groups.iter().any(|g| g == AUTHENTICATED) {
        out_groups.push(AUTHENTICATED.into());
    }
    Ok(UserInfo {
        name: user,
        uid: uid.unwrap_or_default(),
        groups: out_groups,
    })
}

/// The rules a user has in a namespace (SelfSubjectRulesReview): resource rules and
/// non-resource rules, in the order the bindings are visited.
pub fn rules_for(inner: &Inner, user: &UserInfo, namespace: &str) -> (Vec<Value>, Vec<Value>) {
    let (mut res, mut non) = (vec![], vec![]);
    for g in grants(inner, user, namespace) {
        for r in g.rules {
            let mut out = serde_json::Map::new();
            out.insert("verbs".into(), r.get("verbs").cloned().unwrap_or(json!([])));
            if r.get("nonResourceURLs").is_some() && r.get("resources").is_none() {
                out.insert("nonResourceURLs".into(), r["nonResourceURLs"].clone());
                non.push(Value::Object(out));
                continue;
            }
            for k in ["apiGroups", "resources", "resourceNames"] {
                if let Some(v) = r.get(k).filter(|v| !v.is_null()) {
                    out.insert(k.into(), v.clone());
                }
            }
            res.push(Value::Object(out));
        }
    }
    (res, non)
}

/// The policy every cluster starts with (kube-apiserver's bootstrap policy, the parts a client
/// meets): cluster-admin for `system:masters`, discovery and public info for everyone signed in
/// (public info also for anonymous), self access reviews, and the ServiceAccount issuer documents.
pub fn bootstrap_policy() -> Vec<(&'static str, Value)> {
    let meta = |name: &str| {
        json!({"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
               "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
    };
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": meta(name), "rules": rules})
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": meta(name),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": subjects})
    };
    let get = |urls: &[&str]| json!([{"verbs": ["get"], "nonResourceURLs": urls}]);
    vec![
        (
            "clusterroles",
            role(
                "cluster-admin",
                json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                       {"verbs": ["*"], "nonResourceURLs": ["*"]}]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:basic-user",
                json!([{"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:discovery",
                get(&[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:public-info-viewer",
                get(&["/healthz", "/livez", "/readyz", "/version", "/version/"]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:service-account-issuer-discovery",
                get(&["/.well-known/openid-configuration", "/openid/v1/jwks"]),
            ),
        ),
        ("clusterrolebindings", binding("cluster-admin", &[MASTERS])),
        (
            "clusterrolebindings",
            binding("system:basic-user", &[AUTHENTICATED]),
        ),
        (
            "clusterrolebindings",
            binding("system:discovery", &[AUTHENTICATED]),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:public-info-viewer",
                &[AUTHENTICATED, UNAUTHENTICATED],
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:service-account-issuer-discovery",
                &["system:serviceaccounts"],
            ),
        ),
    ]
}

/// The attributes of a review's `spec` (resourceAttributes or nonResourceAttributes).
fn review_attributes(spec: &Value) -> Result<Attributes, String> {
    if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
        return Ok(Attributes::resource(
            s("verb"),
            s("group"),
            s("resource"),
            s("subresource"),
            s("namespace"),
            s("name"),
        ));
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("");
        return Ok(Attributes::path(s("verb"), s("path")));
    }
    Err("exactly one of nonResourceAttributes or resourceAttributes must be specified".into())
}

fn invalid_review(kind: &str, field: &str, value: &str, msg: &str) -> ApiError {
    let mut e = ApiError::new(
        422,
        "Invalid",
        format!(
            "{kind}.authorization.k8s.io \"\" is invalid: {field}: Invalid value: {value}: {msg}"
        ),
    );
    e.details = Some(json!({"group": "authorization.k8s.io", "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {value}: {msg}"), "field": field}]}));
    e
}

/// The fieldsV1 form of a plain object (`f:` for each key, `.` for a nested object's own node).
fn fields_of(v: &Value, nested: bool) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(m) = v.as_object() {
        if nested {
            out.insert(".".into(), json!({}));
        }
        for (k, x) in m {
            let node = if x.is_object() {
                fields_of(x, true)
            } else {
                json!({})
            };
            out.insert(format!("f:{k}"), node);
        }
    }
    Value::Object(out)
}

/// `POST /apis/authorization.k8s.io/v1/...`: the access review APIs. `namespace` is the path's
/// (LocalSubjectAccessReview only). Answers the request object with its status filled in.
pub fn review(
    inner: &Inner,
    requester: &UserInfo,
    plural: &str,
    namespace: Option<&str>,
    body: &Value,
    manager: &str,
) -> Result<Value, ApiError> {
    let kind = match plural {
        "selfsubjectaccessreviews" => "SelfSubjectAccessReview",
        "subjectaccessreviews" => "SubjectAccessReview",
        "localsubjectaccessreviews" => "LocalSubjectAccessReview",
        "selfsubjectrulesreviews" => "SelfSubjectRulesReview",
        _ => return Err(ApiError::path_not_found()),
    };
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let mut out = json!({
        "kind": kind, "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null, "managedFields": [{
            "manager": manager, "operation": "Update", "apiVersion": "authorization.k8s.io/v1",
            "time": crate::store::now(), "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": fields_of(&spec, false)}}]},
        "spec": spec,
    });
    if kind == "SelfSubjectRulesReview" {
        let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
        let (res, non) = rules_for(inner, requester, ns);
        out["metadata"] = json!({"creationTimestamp": null});
        out["spec"] = json!({});
        out["status"] = json!({"resourceRules": res, "nonResourceRules": non, "incomplete": false});
        return Ok(out);
    }
    let attrs = review_attributes(&spec)
        .map_err(|m| invalid_review(kind, "spec.resourceAttributes", "\"null\"", &m))?;
    let subject = match kind {
        "SelfSubjectAccessReview" => requester.clone(),
        _ => {
            let user = spec.get("user").and_then(Value::as_str).unwrap_or("");
            let groups = strs(&spec, "groups");
            if user.is_empty() && groups.is_empty() {
                return Err(invalid_review(
                    kind,
                    "spec.user",
                    "\"\"",
                    "at least one of user or group must be specified",
                ));
            }
            if let (Some(path_ns), AttrTarget::Resource { namespace, .. }) =
                (namespace, &attrs.target)
            {
                if path_ns != namespace {
                    return Err(invalid_review(
                        kind,
                        "spec.resourceAttributes.namespace",
                        &format!("{namespace:?}"),
                        "must match metadata.namespace",
                    ));
                }
            }
            UserInfo {
                name: user.into(),
                uid: spec.get("uid").and_then(Value::as_str).unwrap_or("").into(),
                groups,
            }
        }
    };
    let d = authorize(inner, &subject, &attrs);
    out["status"] = if d.reason.is_empty() {
        json!({"allowed": d.allowed})
    } else {
        json!({"allowed": d.allowed, "reason": d.reason})
    };
    if let Some(ns) = namespace {
        out["metadata"]["namespace"] = json!(ns);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> Value {
        v
    }

    #[test]
    fn rules_match_verbs_groups_subresources_names_and_paths() {
        let secrets =
            rule(json!({"verbs": ["get", "patch"], "apiGroups": [""], "resources": ["secrets"]}));
        let get = Attributes::resource("get", "", "secrets", "", "ns", "a");
        assert!(rule_allows(&secrets, &get));
        assert!(!rule_allows(&secrets, &get.with_verb("create")));
        assert!(!rule_allows(
            &secrets,
            &Attributes::resource("get", "apps", "secrets", "", "ns", "a")
        ));
        // A subresource needs its own rule, or `*/status`, or `*`.
        let status = Attributes::resource("patch", "apps", "deployments", "status", "ns", "d");
        let deployments =
            rule(json!({"verbs": ["patch"], "apiGroups": ["apps"], "resources": ["deployments"]}));
        assert!(!rule_allows(&deployments, &status));
        assert!(rule_allows(
            &rule(
                json!({"verbs": ["patch"], "apiGroups": ["apps"], "resources": ["deployments/status"]})
            ),
            &status
        ));
        assert!(rule_allows(
            &rule(json!({"verbs": ["patch"], "apiGroups": ["*"], "resources": ["*/status"]})),
            &status
        ));
        // resourceNames narrow a rule to named requests: a list (no name) is not one of them.
        let named = rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["named"]}),
        );
        assert!(rule_allows(
            &named,
            &Attributes::resource("get", "", "configmaps", "", "ns", "named")
        ));
        assert!(!rule_allows(
            &named,
            &Attributes::resource("get", "", "configmaps", "", "ns", "other")
        ));
        assert!(!rule_allows(
            &named,
            &Attributes::resource("list", "", "configmaps", "", "ns", "")
        ));
        // Non-resource URLs: exact, or a prefix ending in `*`; never a resource request.
        let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/version", "/apis/*"]}));
        assert!(rule_allows(&urls, &Attributes::path("get", "/version")));
        assert!(rule_allows(
            &urls,
            &Attributes::path("get", "/apis/apps/v1")
        ));
        assert!(!rule_allows(&urls, &Attributes::path("get", "/metrics")));
        assert!(!rule_allows(&urls, &Attributes::path("post", "/version")));
        assert!(!rule_allows(&urls, &get));
        assert!(!rule_allows(&secrets, &Attributes::path("get", "/version")));
    }

    #[test]
    fn forbidden_messages_are_the_real_servers() {
        let sa = UserInfo::service_account("authz", "op", "u");
        let e = forbidden(
            &sa,
            &Attributes::resource("patch", "apps", "deployments", "status", "authz", "d"),
        );
        assert_eq!(e.message, "deployments.apps \"d\" is forbidden: User \"system:serviceaccount:authz:op\" cannot patch resource \"deployments/status\" in API group \"apps\" in the namespace \"authz\"");
        assert_eq!(
            e.details,
            Some(json!({"kind": "deployments", "name": "d", "group": "apps"}))
        );
        let e = forbidden(
            &sa,
            &Attributes::resource("list", "", "secrets", "", "", ""),
        );
        assert_eq!(e.message, "secrets is forbidden: User \"system:serviceaccount:authz:op\" cannot list resource \"secrets\" in API group \"\" at the cluster scope");
        let e = forbidden(&sa, &Attributes::path("get", "/metrics"));
        assert_eq!(
            e.message,
            "forbidden: User \"system:serviceaccount:authz:op\" cannot get path \"/metrics\""
        );
        assert_eq!(
            forbidden_create("", "secrets", "s1").message,
            "secrets \"s1\" is forbidden: "
        );
    }

    #[test]
    fn service_account_user_names_split_into_namespace_and_name() {
        assert_eq!(split_sa("system:serviceaccount:ns:op"), Some(("ns", "op")));
        assert_eq!(split_sa("system:serviceaccount:ns"), None);
        assert_eq!(split_sa("jane"), None);
    }
}
