//! AccessKey signatures on the remoting listener when `[auth] enabled`: every request must be
//! signed by a user with RocketMQ access ([`meridian_proto::remoting::acl`]), and is refused with
//! `NO_PERMISSION` (16) and a remark naming the problem otherwise. The result is the same
//! [`Principal`] the framed protocol's login gives, so authorization applies to both alike.
//!
//! Users' sealed secrets come from the nameservers with the broker's metadata
//! ([`crate::registry::Approved::rocketmq_secrets`]); each is opened once with the node secret and
//! kept as an HMAC key until the sealed value changes (rotation) or disappears (deletion).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use meridian_proto::auth::Principal;
use meridian_proto::remoting::RemotingCommand;
use meridian_proto::remoting::acl::{self, AccessKeySealer, SignatureError, SigningKey};

use crate::state::BrokerState;

/// The signature check of one broker's remoting listener.
pub struct AccessCheck {
    sealer: AccessKeySealer,
    /// Opened keys by user: the sealed value they came from, and the key.
    keys: Mutex<HashMap<String, (String, SigningKey)>>,
}

impl AccessCheck {
    /// The check for `state`'s `[auth]` table; `None` when authentication is off.
    pub fn new(state: &BrokerState) -> Option<AccessCheck> {
        if !state.config.auth.enabled {
            return None;
        }
        // `[auth] enabled` without a node secret is refused when the config loads; a broker built
        // around it otherwise (tests) checks against a sealer no user's secret opens.
        let node_secret = state
            .config
            .auth
            .node_credentials
            .as_ref()
            .map_or("", |credentials| credentials.secret.as_str());
        Some(AccessCheck {
            sealer: AccessKeySealer::new(node_secret),
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// Who signed `command`, or why it is refused.
    pub fn authenticate(&self, state: &BrokerState, command: &RemotingCommand) -> Result<Principal, SignatureError> {
        let signed = acl::parse_signed(&command.ext_fields)?;
        let user = signed.access_key;
        let unknown = || SignatureError::UnknownUser(user.to_owned());
        let snapshot = state.governance.as_ref().ok_or_else(unknown)?.snapshot();
        let sealed = snapshot.rocketmq_secrets.get(user).ok_or_else(unknown)?;
        let key = {
            let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            match keys.get(user) {
                Some((opened_from, key)) if opened_from == sealed => key.clone(),
                _ => {
                    let secret = self.sealer.open(user, sealed)?;
                    let key = acl::signing_key(secret.as_bytes());
                    keys.insert(user.to_owned(), (sealed.clone(), key.clone()));
                    key
                }
            }
        };
        acl::verify(
            &key,
            &signed,
            &command.ext_fields,
            &command.body,
            command.version,
            meridian_proto::time::now_millis(),
        )?;
        Ok(Principal::User(user.to_owned()))
    }
}
