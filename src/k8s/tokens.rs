//! ServiceAccount identities on the Kubernetes side: the role a ServiceAccount names
//! (`eks.amazonaws.com/role-arn`) and a short-lived token for it from the TokenRequest API, the way
//! EKS gives Pods their roles.

use crate::error::{Error, Result};
use crate::source::identity::{TokenIssuer, ROLE_ANNOTATION};
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::Client;

/// Tokens live this long (the API server's minimum is 10 minutes); STS credentials then last
/// their own hour.
pub const TOKEN_SECONDS: i64 = 600;

pub struct KubeTokens {
    pub client: Client,
}

impl TokenIssuer for KubeTokens {
    fn role_and_token<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<(String, String)>> {
        Box::pin(async move {
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
            let who = format!("ServiceAccount {namespace}/{service_account}");
            let sa = api
                .get_opt(service_account)
                .await
                .map_err(Error::Kube)?
                .ok_or_else(|| Error::IdentityFailed(format!("{who} does not exist")))?;
            let role = sa
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ROLE_ANNOTATION))
                .cloned()
                .ok_or_else(|| {
                    Error::IdentityFailed(format!(
                        "{who} has no {ROLE_ANNOTATION} annotation naming the IAM role to read as"
                    ))
                })?;
            let req = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![audience.to_string()],
                    expiration_seconds: Some(TOKEN_SECONDS),
                    bound_object_ref: None,
                },
                ..Default::default()
            };
            let out = api
                .create_token_request(service_account, &PostParams::default(), &req)
                .await
                .map_err(Error::Kube)?;
            let token = out
                .status
                .map(|s| s.token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    Error::IdentityFailed(format!("{who}: the API server returned no token"))
                })?;
            Ok((role, token))
        })
    }
}
