//! The per-installation key of `status.dataHash`. The hash is an HMAC, so that whoever may read
//! ManagedSecrets (but not Secrets) cannot test guesses of a low-entropy value against it. The key
//! lives in a Secret of the operator's namespace, created on first start (replicas that race both
//! end up with the first one's key).

use crate::error::{Error, Result};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

/// The data key holding the HMAC key.
pub const KEY: &str = "hmac-key";

/// The key in Secret `name` of `namespace`, created with 32 random bytes if it does not exist.
pub async fn load_or_create(client: &Client, namespace: &str, name: &str) -> Result<Vec<u8>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..3 {
        if let Some(s) = api.get_opt(name).await.map_err(Error::Kube)? {
            return s
                .data
                .as_ref()
                .and_then(|d| d.get(KEY))
                .map(|b| b.0.clone())
                .filter(|k| k.len() >= 16)
                .ok_or_else(|| {
                    Error::InvalidSpec(format!(
                        "Secret {namespace}/{name} has no {KEY} of at least 16 bytes; delete it to have a new key made"
                    ))
                });
        }
        let key: [u8; 32] = rand::random();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "managed-secrets", "app.kubernetes.io/component": "hash-key"}},
            "type": "Opaque",
            "data": {KEY: base64::engine::general_purpose::STANDARD.encode(key)}
        }))
        .map_err(|_| Error::Internal("hash key Secret".into()))?;
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(key.to_vec()),
            // Another replica made it first: read theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    Err(Error::Internal("the hash key Secret kept changing".into()))
}
