//! The broker's side of authentication (the `[auth]` table): who may connect to its framed
//! listener, and the node credential it logs in to nameservers and masters with.
//!
//! The handshake itself runs in the shared connection loop ([`meridian_proto::serve`]); this
//! module only supplies its [`Authenticator`]: users' verifiers come from the nameservers with the
//! broker's metadata (like approvals and the SDK policy, see [`crate::registry`]), and nodes log
//! in with the cluster's node secret file. Start with [`AuthConfig`], then [`authenticator`].

use std::path::PathBuf;
use std::sync::Arc;

use meridian_proto::auth::{self, Authenticator, Credentials, UserDirectory, Verifier};
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};
use crate::registry::Governance;

/// Authentication settings (the `[auth]` table). Off by default (and in `meridian dev` unless
/// `--auth`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Every connection to the framed listener must log in first (a user made with
    /// `meridian user create`, or a node with the node secret); replica fetches and other
    /// node-only requests are refused from users.
    pub enabled: bool,
    /// The cluster's node secret, shared by every broker and nameserver (at least 32
    /// characters; `meridian user node-secret` makes one). Required with `enabled`.
    pub node_secret_file: Option<PathBuf>,
    /// The node credential read from `node_secret_file` by [`AuthConfig::load`]; never written
    /// back, and `Debug` hides the secret.
    #[serde(skip)]
    pub node_credentials: Option<Credentials>,
}

impl AuthConfig {
    /// Reads the node secret file, when set. With `enabled`, the file is required.
    pub fn load(&mut self) -> Result<()> {
        match &self.node_secret_file {
            Some(path) => {
                let secret = auth::read_node_secret(path).map_err(BrokerError::Config)?;
                self.node_credentials = Some(Credentials::node(secret));
            }
            None if self.enabled => {
                return Err(BrokerError::Config(
                    "[auth] enabled needs node_secret_file: the cluster's node secret, the same file on every broker and nameserver (`meridian user node-secret > node.secret`)".into(),
                ));
            }
            None => {}
        }
        Ok(())
    }
}

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

/// The authenticator of the broker's framed listener; `None` when `[auth]` is off.
pub fn authenticator(config: &AuthConfig, governance: Option<&Arc<Governance>>) -> Option<Arc<Authenticator>> {
    if !config.enabled {
        return None;
    }
    let users: Arc<dyn UserDirectory> = match governance {
        Some(governance) => Arc::new(LearnedUsers(governance.clone())),
        None => Arc::new(NoUsers),
    };
    let node_secret = config
        .node_credentials
        .as_ref()
        .map(|credentials| credentials.secret.as_str());
    Some(Arc::new(Authenticator::new(true, node_secret, users)))
}
