//! The registry of served resource types: the built-in kinds the operator and its tests touch, plus
//! every CustomResourceDefinition created through the API. Discovery documents are rendered from it.

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// How the server treats the items of a list field (server-side apply and strategic merge).
#[derive(Clone, Debug, PartialEq)]
pub enum ListKind {
    /// Replaced as a whole.
    Atomic,
    /// Items are maps identified by these keys.
    Map(Vec<String>),
    /// Items are scalars, each owned separately.
    Set,
}

#[derive(Clone, Debug)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub priority: i64,
    pub description: String,
}

#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    /// All versions served for this resource (CRDs may serve several; no conversion is done).
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    pub scale_subresource: bool,
    /// `metadata.generation` is maintained (objects with a spec).
    pub has_generation: bool,
    /// openAPIV3Schema per version, for custom resources.
    pub schemas: BTreeMap<String, Value>,
    pub printer_columns: BTreeMap<String, Vec<PrinterColumn>>,
    pub custom: bool,
    pub verbs: Vec<&'static str>,
}

pub const ALL_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn api_version_for(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }
    /// The name used in error messages: `widgets.reference.test`, or `secrets` for the core group.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// `Widget.reference.test` or `Secret` (as used in 422 messages).
    pub fn kind_qualified(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
    /// Registry key: group and plural.
    pub fn type_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }
    /// Storage key: group and plural, independent of the version.
    pub fn key(&self) -> String {
        // events.k8s.io/v1 Events are a second view of the core/v1 Events (one storage).
        if self.group == "events.k8s.io" {
            return "/events".into();
        }
        format!("{}/{}", self.group, self.plural)
    }
    pub fn schema(&self, version: &str) -> Option<&Value> {
        self.schemas.get(version)
    }

    /// How a list found at `path` (object keys from the root) is merged.
    pub fn list_kind(&self, version: &str, path: &[String]) -> ListKind {
        if let Some(schema) = self.schema(version) {
            let mut node = schema;
            for seg in path {
                let next = node
                    .get("properties")
                    .and_then(|p| p.get(seg))
                    .or_else(|| node.get("additionalProperties").filter(|v| v.is_object()))
                    .or_else(|| {
                        node.get("items")
                            .and_then(|i| i.get("properties"))
                            .and_then(|p| p.get(seg))
                    });
                match next {
                    Some(n) => node = n,
                    None => {
                        // Fall back to the built-in conventions (metadata).
                        return builtin_list_kind(path);
                    }
                }
            }
            return match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("map") => ListKind::Map(
                    node.get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                Some("set") => ListKind::Set,
                _ => builtin_list_kind_metadata_only(path),
            };
        }
        builtin_list_kind(path)
    }
}

fn builtin_list_kind_metadata_only(path: &[String]) -> ListKind {
    if path.first().map(String::as_str) == Some("metadata") {
        builtin_list_kind(path)
    } else {
        ListKind::Atomic
    }
}

/// The patch-merge keys of the built-in types (as in their OpenAPI `x-kubernetes-patch-merge-key`).
pub fn builtin_list_kind(path: &[String]) -> ListKind {
    let last = path.last().map(String::as_str).unwrap_or("");
    let parent = if path.len() >= 2 {
        path[path.len() - 2].as_str()
    } else {
        ""
    };
    let key = |k: &str| ListKind::Map(vec![k.to_string()]);
    match last {
        "containers" | "initContainers" | "ephemeralContainers" => key("name"),
        "env" | "volumes" | "imagePullSecrets" => key("name"),
        "hostAliases" => key("ip"),
        "ports" if parent.ends_with("ontainers") => {
            ListKind::Map(vec!["containerPort".into(), "protocol".into()])
        }
        "ports" => ListKind::Map(vec!["port".into(), "protocol".into()]),
        "volumeMounts" => key("mountPath"),
        "volumeDevices" => key("devicePath"),
        "conditions" => key("type"),
        "ownerReferences" => key("uid"),
        "finalizers" => ListKind::Set,
        // ValidatingWebhookConfiguration (patchMergeKey and listMapKey `name`).
        "webhooks" => key("name"),
        _ => ListKind::Atomic,
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    generation: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        versions: vec![version.into()],
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        status_subresource: status,
        scale_subresource: false,
        has_generation: generation,
        schemas: BTreeMap::new(),
        printer_columns: BTreeMap::new(),
        custom: false,
        verbs: ALL_VERBS.to_vec(),
    }
}

pub fn builtins() -> Vec<ResourceType> {
    let mut v = vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            false,
        ),
        builtin("", "v1", "secrets", "Secret", true, &[], false, false),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            false,
        ),
        builtin("", "v1", "events", "Event", true, &["ev"], false, false),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            false,
        ),
        builtin("", "v1", "pods", "Pod", true, &["po"], true, false),
        builtin("", "v1", "services", "Service", true, &["svc"], true, false),
        builtin(
            "",
            "v1",
            "endpoints",
            "Endpoints",
            true,
            &["ep"],
            false,
            false,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "daemonsets",
            "DaemonSet",
            true,
            &["ds"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "controllerrevisions",
            "ControllerRevision",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            true,
        ),
        builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            true,
            true,
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
            &["netpol"],
            false,
            true,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
            false,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            false,
            &[],
            false,
            true,
        ),
        builtin(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
            &[],
            false,
            false,
        ),
        builtin(
            "authorization.k8s.io",
            "v1",
            "subjectaccessreviews",
            "SubjectAccessReview",
            false,
            &[],
            false,
            false,
        ),
        builtin(
            "authorization.k8s.io",
            "v1",
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "authorization.k8s.io",
            "v1",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            false,
            &[],
            false,
            false,
        ),
    ];
    for r in v.iter_mut() {
        if [
            "deployments",
            "statefulsets",
            "daemonsets",
            "replicasets",
            "pods",
            "services",
        ]
        .contains(&r.plural.as_str())
        {
            r.categories = vec!["all".into()];
        }
        if ["deployments", "statefulsets", "replicasets"].contains(&r.plural.as_str()) {
            r.scale_subresource = true;
        }
        if r.plural == "customresourcedefinitions" || r.plural == "validatingwebhookconfigurations"
        {
            r.categories = vec!["api-extensions".into()];
        }
        if r.group == "authorization.k8s.io" {
            r.verbs = vec!["create"];
        }
        if r.plural == "namespaces" {
            r.verbs = vec![
                "create", "delete", "get", "list", "patch", "update", "watch",
            ];
        }
    }
    v
}

/// Builds the served resource type of a CRD object; `None` when the CRD is malformed.
pub fn from_crd(crd: &Value) -> Option<ResourceType> {
    let spec = crd.get("spec")?;
    let group = spec.get("group")?.as_str()?.to_string();
    let names = spec.get("names")?;
    let plural = names.get("plural")?.as_str()?.to_string();
    let kind = names.get("kind")?.as_str()?.to_string();
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| kind.to_lowercase());
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let mut versions = vec![];
    let mut storage_version = None;
    let mut schemas = BTreeMap::new();
    let mut printer_columns = BTreeMap::new();
    let mut status = false;
    let mut scale = false;
    for v in spec.get("versions")?.as_array()? {
        let name = v.get("name")?.as_str()?.to_string();
        if v.get("served").and_then(Value::as_bool) != Some(false) {
            versions.push(name.clone());
        }
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage_version = Some(name.clone());
        }
        if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
            schemas.insert(name.clone(), s.clone());
        }
        if v.pointer("/subresources/status").is_some() {
            status = true;
        }
        if v.pointer("/subresources/scale").is_some() {
            scale = true;
        }
        let cols = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| {
                        Some(PrinterColumn {
                            name: c.get("name")?.as_str()?.into(),
                            type_: c
                                .get("type")
                                .and_then(Value::as_str)
                                .unwrap_or("string")
                                .into(),
                            json_path: c.get("jsonPath")?.as_str()?.into(),
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                            description: c
                                .get("description")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .into(),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        printer_columns.insert(name, cols);
    }
    let version = storage_version.or_else(|| versions.first().cloned())?;
    Some(ResourceType {
        group,
        version,
        versions,
        plural,
        singular,
        kind,
        namespaced,
        short_names: strs(names.get("shortNames")),
        categories: strs(names.get("categories")),
        status_subresource: status,
        scale_subresource: scale,
        has_generation: true,
        schemas,
        printer_columns,
        custom: true,
        verbs: vec![
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "create",
            "update",
            "watch",
        ],
    })
}

/// `APIResourceList` entries for one group/version.
pub fn api_resources(types: &[&ResourceType], version: &str) -> Vec<Value> {
    let mut out = vec![];
    for t in types {
        let mut r = json!({
            "name": t.plural,
            "singularName": if t.custom { t.singular.clone() } else { String::new() },
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": t.verbs,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        r["storageVersionHash"] = json!(storage_hash(&t.api_version_for(version), &t.kind));
        out.push(r);
        if t.status_subresource {
            out.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if t.group.is_empty() && t.plural == "serviceaccounts" {
            out.push(json!({
                "name": "serviceaccounts/token",
                "singularName": "",
                "namespaced": true,
                "group": "authentication.k8s.io",
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            }));
        }
        if t.scale_subresource {
            out.push(json!({
                "name": format!("{}/scale", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    out
}

fn storage_hash(api_version: &str, kind: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{api_version}/{kind}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&d[..8])
}

/// The versions a CRD stores (`status.storedVersions`).
pub fn stored_versions(crd: &Value) -> Vec<Value> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|v| v["storage"] == json!(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default()
}
