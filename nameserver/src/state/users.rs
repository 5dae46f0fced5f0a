//! Users and their credentials: SCRAM-SHA-256 verifiers ([`meridian_proto::auth::Verifier`]),
//! never secrets. A secret is made by the client (`meridian user create` prints it once) and only
//! its verifier travels and is stored, so neither the HTTP API nor a stolen state nor the Raft
//! log can log anyone in.
//!
//! Changed through the log ([`super::Command::CreateUser`], `RotateUser`, `DeleteUser`); read by
//! the nameservers' connection loop and copied to brokers with their metadata.

use std::collections::BTreeMap;

use meridian_proto::auth::{self, Verifier};
use serde::{Deserialize, Serialize};

use super::error::{CommandError, require_person};

/// A verifier as stored and sent in JSON: hex fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredVerifier {
    /// Salt, hex.
    pub salt: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `StoredKey`, hex.
    pub stored_key: String,
    /// `ServerKey`, hex.
    pub server_key: String,
}

impl StoredVerifier {
    /// The hex form of a verifier.
    pub fn from_verifier(verifier: &Verifier) -> StoredVerifier {
        StoredVerifier {
            salt: auth::to_hex(&verifier.salt),
            iterations: verifier.iterations,
            stored_key: auth::to_hex(&verifier.stored_key),
            server_key: auth::to_hex(&verifier.server_key),
        }
    }

    /// The verifier, checked to be well formed.
    pub fn to_verifier(&self) -> Result<Verifier, CommandError> {
        let invalid = |what: &str| CommandError::Invalid {
            message: format!(
                "the user's verifier is invalid: {what}; make it with `meridian user create` (it sends salt, iterations, stored_key and server_key in hex, never the secret)"
            ),
        };
        let verifier = Verifier {
            salt: auth::from_hex(&self.salt).ok_or_else(|| invalid("salt is not hex"))?,
            iterations: self.iterations,
            stored_key: auth::from_hex(&self.stored_key).ok_or_else(|| invalid("stored_key is not hex"))?,
            server_key: auth::from_hex(&self.server_key).ok_or_else(|| invalid("server_key is not hex"))?,
        };
        verifier.check().map_err(|error| invalid(&error.to_string()))?;
        Ok(verifier)
    }
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Its credential.
    pub verifier: StoredVerifier,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: u64,
    /// Who created it.
    pub created_by: String,
    /// When its secret last changed (creation or rotation).
    pub rotated_ms: u64,
}

/// A user as listed: no credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// User name.
    pub name: String,
    /// When it was created.
    pub created_ms: u64,
    /// Who created it.
    pub created_by: String,
    /// When its secret last changed.
    pub rotated_ms: u64,
}

/// The users, lent by [`super::MetadataState::apply`].
pub(super) struct Users<'a> {
    pub users: &'a mut BTreeMap<String, User>,
}

impl Users<'_> {
    pub fn create(
        &mut self,
        now_ms: u64,
        name: String,
        verifier: StoredVerifier,
        by: String,
    ) -> Result<(), CommandError> {
        auth::validate_user_name(&name).map_err(|message| CommandError::Invalid { message })?;
        require_person("by", &by)?;
        verifier.to_verifier()?;
        if self.users.contains_key(&name) {
            return Err(CommandError::UserExists { name });
        }
        self.users.insert(
            name,
            User {
                verifier,
                created_ms: now_ms,
                created_by: by,
                rotated_ms: now_ms,
            },
        );
        Ok(())
    }

    pub fn rotate(
        &mut self,
        now_ms: u64,
        name: String,
        verifier: StoredVerifier,
        by: String,
    ) -> Result<(), CommandError> {
        require_person("by", &by)?;
        verifier.to_verifier()?;
        let user = self.users.get_mut(&name).ok_or(CommandError::UserNotFound { name })?;
        user.verifier = verifier;
        user.rotated_ms = now_ms;
        Ok(())
    }

    pub fn delete(&mut self, name: String, by: String) -> Result<(), CommandError> {
        require_person("by", &by)?;
        self.users.remove(&name).ok_or(CommandError::UserNotFound { name })?;
        Ok(())
    }
}

/// The users as listed, without credentials.
pub fn views(users: &BTreeMap<String, User>) -> Vec<UserView> {
    users
        .iter()
        .map(|(name, user)| UserView {
            name: name.clone(),
            created_ms: user.created_ms,
            created_by: user.created_by.clone(),
            rotated_ms: user.rotated_ms,
        })
        .collect()
}
