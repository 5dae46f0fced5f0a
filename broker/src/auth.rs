//! The broker's side of authentication (the `[auth]` table): who may connect to its framed
//! listener, and the node credential it logs in to nameservers and masters with.
//!
//! The handshake itself runs in the shared connection loop ([`meridian_proto::serve`]); this
//! module only supplies its [`Authenticator`]: users' verifiers come from the nameservers with the
//! broker's metadata (like approvals and the SDK policy, see [`crate::registry`]), and nodes log
//! in with the cluster's node secret file. Start with [`AuthConfig`], then [`authenticator`].

use std::sync::Arc;

use meridian_proto::auth::{Authenticator, UserDirectory, Verifier};
use meridian_proto::http_auth::HttpAuthenticator;

use crate::registry::Governance;

pub use crate::config::AuthConfig;

/// Users as the broker last learned them from its nameservers.
struct LearnedUsers(Arc<Governance>);

impl UserDirectory for LearnedUsers {
    fn verifier(&self, user: &str) -> Option<Verifier> {
        self.0.snapshot().users.get(user).cloned()
    }
}

/// Nobody but nodes (a standalone broker has no nameserver to learn users from).
struct NoUsers;

impl UserDirectory for NoUsers {
    fn verifier(&self, _user: &str) -> Option<Verifier> {
        None
    }
}

fn users(governance: Option<&Arc<Governance>>) -> Arc<dyn UserDirectory> {
    match governance {
        Some(governance) => Arc::new(LearnedUsers(governance.clone())),
        None => Arc::new(NoUsers),
    }
}

/// The authenticator of the broker's framed listener; `None` when `[auth]` is off.
pub fn authenticator(config: &AuthConfig, governance: Option<&Arc<Governance>>) -> Option<Arc<Authenticator>> {
    if !config.enabled {
        return None;
    }
    let node_secret = config
        .node_credentials
        .as_ref()
        .map(|credentials| credentials.secret.as_str());
    Some(Arc::new(Authenticator::new(true, node_secret, users(governance))))
}

/// The authentication of the broker's HTTP API (the same users and node secret, see
/// [`meridian_proto::http_auth`]); `None` when `[auth]` is off.
pub fn http_authenticator(config: &AuthConfig, governance: Option<&Arc<Governance>>) -> Option<Arc<HttpAuthenticator>> {
    if !config.enabled {
        return None;
    }
    let node_secret = config
        .node_credentials
        .as_ref()
        .map(|credentials| credentials.secret.as_str());
    Some(Arc::new(HttpAuthenticator::new(node_secret, users(governance))))
}
