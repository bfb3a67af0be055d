//! The finalizer's cleanup when a ManagedSecret is deleted: the Secret is given back per the
//! deletion policy. It never blocks the deletion forever: a spec that names no valid Secret, or a
//! refusal that retrying cannot fix, ends with a Warning Event and the finalizer removed.

use super::{uid, Context};
use crate::crd::ManagedSecret;
use crate::error::Result;
use crate::k8s;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::{info, warn};

pub(super) async fn cleanup(ms: &ManagedSecret, ctx: &Context) -> Result<Action> {
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &ms.namespace().unwrap_or_default());
    let mut names = vec![ms.target_name()];
    if let Some(old) = ms.status.as_ref().and_then(|s| s.secret_name.clone()) {
        if !names.contains(&old) {
            names.push(old);
        }
    }
    for name in names {
        if !crate::crd::validate::valid_secret_name(&name) {
            // Nothing this spec names can exist.
            continue;
        }
        match k8s::secret::release_secret(&secrets, ms, &name).await {
            Ok(()) => {
                info!(secret = %name, policy = ?k8s::secret::deletion_policy(ms), "released the Secret")
            }
            Err(e) if e.is_transient() => {
                ctx.event(
                    ms,
                    EventType::Warning,
                    crate::reason::RELEASE_FAILED,
                    format!("Secret {name} could not be released yet: {e}; retrying"),
                )
                .await;
                return Err(e);
            }
            Err(e) => {
                warn!(secret = %name, error = %e, "could not release the Secret; deletion goes on");
                ctx.event(
                    ms,
                    EventType::Warning,
                    crate::reason::RELEASE_FAILED,
                    format!("Secret {name} could not be released ({e}); it was left as it is so that the deletion completes"),
                )
                .await;
            }
        }
    }
    ctx.forget(&uid(ms));
    Ok(Action::await_change())
}
