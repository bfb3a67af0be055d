//! The `SecretAccessPolicy` custom resource (`managedsecrets.io/v1alpha1`, cluster-scoped): which
//! namespaces may reference which AWS secrets, and as which AWS identity.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Grants namespaces the right to reference AWS secrets. A ManagedSecret outside every rule of
/// every policy is refused (`PolicyDenied`) before any AWS call.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "managedsecrets.io",
    version = "v1alpha1",
    kind = "SecretAccessPolicy",
    shortname = "sap",
    status = "SecretAccessPolicyStatus",
    printcolumn = r#"{"name":"Rules","type":"integer","jsonPath":".status.rules"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SecretAccessPolicySpec {
    /// Each rule grants the namespaces it selects the secrets it names. At most 64.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<AccessRule>,
}

/// One grant.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRule {
    /// Namespaces by name. A rule applies to a namespace named here or matched by
    /// `namespaceSelector`; with neither, it applies to none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub namespaces: Vec<String>,
    /// Namespaces by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// AWS secret names or ARNs the namespaces may reference: `*` matches any run of characters
    /// (`/` included), `?` one character. `$(namespace)` and `$(labels.<key>)` stand for the
    /// referencing namespace's name and labels (`$(labels.env)/$(namespace)/*`). A name pattern
    /// matches secret names; an ARN pattern (`arn:...`) matches ARNs.
    #[schemars(length(min = 1, max = 64))]
    pub secrets: Vec<String>,
    /// Only in these regions (any, when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub regions: Vec<String>,
    /// Read as this ServiceAccount of the ManagedSecret's own namespace: the operator requests a
    /// token for it (audience `sts.amazonaws.com`) and assumes the IAM role in its
    /// `eks.amazonaws.com/role-arn` annotation with AssumeRoleWithWebIdentity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
    /// Read as this IAM role (AssumeRole, with session tags `managedsecrets.io/namespace` and
    /// `managedsecrets.io/name`); for cross-account and attribute-based access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 20, max = 2048),
        regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$")
    )]
    pub role_arn: Option<String>,
    /// ExternalId for AssumeRole (with `roleArn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1224))]
    pub external_id: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretAccessPolicyStatus {
    /// Rules in effect.
    #[serde(default)]
    pub rules: u32,
    /// `Valid`: False names the rules that grant nothing because they are malformed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
