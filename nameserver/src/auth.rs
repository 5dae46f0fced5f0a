//! The nameserver's side of authentication (the `[auth]` table): who may connect to its framed
//! listener, and the node credential it talks to other nameservers with (Raft, forwarded writes).
//!
//! The handshake runs in the shared connection loop ([`meridian_proto::serve`]); users'
//! verifiers are read from the replicated state ([`crate::state::users`]) at each login, so a
//! rotated or deleted user cannot open new connections as soon as this node applied the change.

use std::path::PathBuf;
use std::sync::Arc;

use meridian_proto::auth::{self, Authenticator, Credentials, UserDirectory, Verifier};
use meridian_proto::http_auth::HttpAuthenticator;
use serde::{Deserialize, Serialize};

use crate::error::NameserverError;
use crate::service::NameserverService;

/// Authentication settings (the `[auth]` table). Off by default (and in `meridian dev` unless
/// `--auth`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Every connection must log in first; Raft, broker registration and replica traffic only
    /// from nodes.
    pub enabled: bool,
    /// The cluster's node secret, the same file on every broker and nameserver (at least 32
    /// characters; `meridian user node-secret` makes one). Required with `enabled`.
    pub node_secret_file: Option<PathBuf>,
    /// With `enabled`: admin writes are checked against the cluster's ACL (ADMIN on the topic or
    /// group they name, super user for cluster-wide ones; docs/security.md "Authorization").
    /// `false` lets every logged-in user write anything. Default `true`.
    pub authorization: bool,
    /// The node credential read by [`AuthConfig::load`]; `Debug` hides the secret.
    #[serde(skip)]
    pub node_credentials: Option<Credentials>,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            enabled: false,
            node_secret_file: None,
            authorization: true,
            node_credentials: None,
        }
    }
}

impl AuthConfig {
    /// Whether admin writes are checked against the ACL: `enabled` and `authorization`.
    pub fn authorizes(&self) -> bool {
        self.enabled && self.authorization
    }

    /// Reads the node secret file, when set. With `enabled`, the file is required.
    pub fn load(&mut self) -> Result<(), NameserverError> {
        match &self.node_secret_file {
            Some(path) => {
                let secret = auth::read_node_secret(path).map_err(|message| NameserverError::Config { message })?;
                self.node_credentials = Some(Credentials::node(secret));
            }
            None if self.enabled => {
                return Err(NameserverError::Config {
                    message: "[auth] enabled needs node_secret_file: the cluster's node secret, the same file on every broker and nameserver (`meridian user node-secret > node.secret`)".into(),
                });
            }
            None => {}
        }
        Ok(())
    }
}

struct StateUsers(Arc<NameserverService>);

impl UserDirectory for StateUsers {
    fn verifier(&self, user: &str) -> Option<Verifier> {
        self.0
            .raft()
            .read_state(|state| state.users().get(user).map(|user| user.verifier.to_verifier()))?
            .ok()
    }
}

/// The users of the replicated state, for a process that serves them over HTTP too (`meridian
/// dev`).
pub fn user_directory(service: &Arc<NameserverService>) -> Arc<dyn UserDirectory> {
    Arc::new(StateUsers(service.clone()))
}

/// The authentication of the nameserver's HTTP API: the same users (read at each check) and node
/// secret as its framed listener ([`meridian_proto::http_auth`]); `None` when `[auth]` is off.
/// `config` must be loaded ([`AuthConfig::load`]).
pub fn http_authenticator(config: &AuthConfig, service: &Arc<NameserverService>) -> Option<Arc<HttpAuthenticator>> {
    if !config.enabled {
        return None;
    }
    let node_secret = config
        .node_credentials
        .as_ref()
        .map(|credentials| credentials.secret.as_str());
    Some(Arc::new(HttpAuthenticator::new(
        node_secret,
        Arc::new(StateUsers(service.clone())),
    )))
}

/// The authenticator of the nameserver's framed listener; `None` when `[auth]` is off.
pub fn authenticator(config: &AuthConfig, service: &Arc<NameserverService>) -> Option<Arc<Authenticator>> {
    if !config.enabled {
        return None;
    }
    let node_secret = config
        .node_credentials
        .as_ref()
        .map(|credentials| credentials.secret.as_str());
    Some(Arc::new(Authenticator::new(
        true,
        node_secret,
        Arc::new(StateUsers(service.clone())),
    )))
}

/// The ACL of the nameserver in this process, for the tracer and the query service of
/// `meridian dev`: rebuilt only when the metadata version moved, so a lookup reads an `Arc`.
pub struct LocalAcl {
    service: Arc<NameserverService>,
    cached: std::sync::Mutex<Option<(u64, Arc<meridian_proto::acl::Acl>)>>,
}

impl LocalAcl {
    /// The ACL of `service`'s applied state.
    pub fn new(service: Arc<NameserverService>) -> LocalAcl {
        LocalAcl {
            service,
            cached: std::sync::Mutex::new(None),
        }
    }
}

impl meridian_proto::acl::AclSource for LocalAcl {
    fn acl(&self) -> Arc<meridian_proto::acl::Acl> {
        let version = self.service.raft().read_state(|state| state.metadata_version());
        let mut cached = self.cached.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached_version, acl)) = cached.as_ref()
            && *cached_version == version
        {
            return acl.clone();
        }
        let (version, acl) = self
            .service
            .raft()
            .read_state(|state| (state.metadata_version(), Arc::new(state.acl())));
        *cached = Some((version, acl.clone()));
        acl
    }
}
