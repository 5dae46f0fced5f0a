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

pub use meridian_proto::admin::{RocketmqSecret, StoredVerifier, UserView};

/// The sealed form of `rocketmq`, refusing a secret that reached the log unsealed (the service
/// seals before writing, so this is a bug or a hand-made command).
fn sealed_of(rocketmq: Option<RocketmqSecret>) -> Result<Option<String>, CommandError> {
    match rocketmq {
        None => Ok(None),
        Some(RocketmqSecret::Sealed { sealed }) if sealed.starts_with("v1:") => Ok(Some(sealed)),
        Some(RocketmqSecret::Sealed { .. }) => Err(CommandError::Invalid {
            message: "the user's sealed RocketMQ secret is not in the v1 format; give the secret with `meridian user create|rotate NAME --rocketmq`".into(),
        }),
        Some(RocketmqSecret::Plain { .. }) => Err(CommandError::Invalid {
            message: "a RocketMQ secret must be sealed by the nameserver before it is written; send it through a nameserver's admin API (`meridian user create|rotate NAME --rocketmq`)".into(),
        }),
    }
}

/// The verifier `stored` names, checked to be well formed.
pub fn verifier_of(stored: &StoredVerifier) -> Result<Verifier, CommandError> {
    stored.to_verifier().map_err(|what| CommandError::Invalid {
        message: format!(
            "the user's verifier is invalid: {what}; make it with `meridian user create` (it sends salt, iterations, stored_key and server_key in hex, never the secret)"
        ),
    })
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
    /// Its secret sealed for RocketMQ AccessKey signatures
    /// ([`meridian_proto::remoting::acl::AccessKeySealer`]); `None`: no RocketMQ access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rocketmq_sealed: Option<String>,
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
        rocketmq: Option<RocketmqSecret>,
    ) -> Result<(), CommandError> {
        auth::validate_user_name(&name).map_err(|message| CommandError::Invalid { message })?;
        require_person("by", &by)?;
        verifier_of(&verifier)?;
        let rocketmq_sealed = sealed_of(rocketmq)?;
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
                rocketmq_sealed,
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
        rocketmq: Option<RocketmqSecret>,
    ) -> Result<(), CommandError> {
        require_person("by", &by)?;
        verifier_of(&verifier)?;
        let rocketmq_sealed = sealed_of(rocketmq)?;
        let user = self.users.get_mut(&name).ok_or(CommandError::UserNotFound { name })?;
        user.verifier = verifier;
        // The old secret stops working for RocketMQ clients too.
        user.rocketmq_sealed = rocketmq_sealed;
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
            rocketmq: user.rocketmq_sealed.is_some(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, CommandError, MetadataState, Origin};

    fn verifier(secret: &str) -> StoredVerifier {
        StoredVerifier::from_verifier(&Verifier::generate(secret.as_bytes()))
    }

    fn create(name: &str, secret: &str) -> Command {
        Command::CreateUser {
            name: name.into(),
            verifier: verifier(secret),
            by: "ops".into(),
            rocketmq: None,
        }
    }

    #[test]
    fn rocketmq_secrets_are_stored_only_sealed_and_rotation_without_one_ends_access() {
        let mut state = MetadataState::default();
        let plain = Command::CreateUser {
            name: "alice".into(),
            verifier: verifier("s"),
            by: "ops".into(),
            rocketmq: Some(RocketmqSecret::Plain { secret: "s".into() }),
        };
        let error = state.apply(plain, 1).unwrap_err().to_string();
        assert!(error.contains("must be sealed by the nameserver"), "{error}");
        let sealer = meridian_proto::remoting::acl::AccessKeySealer::new("node secret node secret node secret");
        let sealed = sealer.seal("alice", "s");
        let create = Command::CreateUser {
            name: "alice".into(),
            verifier: verifier("s"),
            by: "ops".into(),
            rocketmq: Some(RocketmqSecret::Sealed { sealed: sealed.clone() }),
        };
        state.apply(create, 2).unwrap();
        assert_eq!(state.users()["alice"].rocketmq_sealed.as_deref(), Some(sealed.as_str()));
        assert!(views(state.users())[0].rocketmq);
        let rotate = Command::RotateUser {
            name: "alice".into(),
            verifier: verifier("t"),
            by: "ops".into(),
            rocketmq: None,
        };
        state.apply(rotate, 3).unwrap();
        assert_eq!(
            state.users()["alice"].rocketmq_sealed,
            None,
            "the old secret stops working"
        );
        assert!(!views(state.users())[0].rocketmq);
    }

    #[test]
    fn users_are_created_rotated_and_deleted_as_verifiers_and_brokers_refetch() {
        let mut state = MetadataState::default();
        let version = state.metadata_version();
        state.apply(create("alice", "first"), 10).unwrap();
        assert!(
            state.metadata_version() > version,
            "brokers learn users with their metadata"
        );
        let stored = verifier_of(&state.users()["alice"].verifier).unwrap();
        assert_eq!(stored, Verifier::derive(b"first", &stored.salt, stored.iterations));
        let json = serde_json::to_string(&state).unwrap();
        assert!(!json.contains("first"), "the secret is not stored");

        assert_eq!(
            state.apply(create("alice", "again"), 11),
            Err(CommandError::UserExists { name: "alice".into() })
        );
        let rotate = Command::RotateUser {
            name: "alice".into(),
            verifier: verifier("second"),
            by: "ops".into(),
            rocketmq: None,
        };
        state.apply(rotate, 12).unwrap();
        let user = &state.users()["alice"];
        assert_eq!((user.created_ms, user.rotated_ms), (10, 12));
        let views = views(state.users());
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].name, "alice");

        let delete = |name: &str| Command::DeleteUser {
            name: name.into(),
            by: "ops".into(),
        };
        state.apply(delete("alice"), 13).unwrap();
        assert_eq!(
            state.apply(delete("alice"), 14),
            Err(CommandError::UserNotFound { name: "alice".into() })
        );
    }

    #[test]
    fn users_with_bad_names_verifiers_or_no_author_are_refused() {
        let mut state = MetadataState::default();
        for (command, expected) in [
            (create("$node", "x"), "user name"),
            (create("a b", "x"), "user name"),
            (
                Command::CreateUser {
                    name: "bob".into(),
                    verifier: StoredVerifier {
                        salt: "zz".into(),
                        ..verifier("x")
                    },
                    by: "ops".into(),
                    rocketmq: None,
                },
                "salt is not hex",
            ),
            (
                Command::CreateUser {
                    name: "bob".into(),
                    verifier: StoredVerifier {
                        iterations: 1,
                        ..verifier("x")
                    },
                    by: "ops".into(),
                    rocketmq: None,
                },
                "iterations",
            ),
            (
                Command::CreateUser {
                    name: "bob".into(),
                    verifier: verifier("x"),
                    by: " ".into(),
                    rocketmq: None,
                },
                "by is empty",
            ),
        ] {
            let error = state.apply(command, 1).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        assert!(state.users().is_empty());
    }

    #[test]
    fn users_changes_are_audited_with_the_authenticated_user_or_the_declared_one() {
        let mut state = MetadataState::default();
        let origin = Origin {
            from: "10.0.0.7:5000".into(),
            user: Some("root".into()),
        };
        state
            .apply(
                Command::Audited {
                    origin: origin.clone(),
                    command: Box::new(create("alice", "x")),
                },
                5,
            )
            .unwrap();
        state.apply(create("bob", "y"), 6).unwrap();
        // Refused commands and node activity leave no entry.
        state.apply(create("bob", "z"), 7).unwrap_err();
        state
            .apply(
                Command::Audited {
                    origin: origin.clone(),
                    command: Box::new(Command::Audited {
                        origin,
                        command: Box::new(create("carol", "w")),
                    }),
                },
                8,
            )
            .unwrap_err();
        let entries = state.audit().since(0, 10);
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(
            (
                entries[0].seq,
                entries[0].who.as_str(),
                entries[0].authenticated,
                entries[0].from.as_str()
            ),
            (1, "root", true, "10.0.0.7:5000")
        );
        assert_eq!(entries[0].action, "create_user");
        assert_eq!(entries[0].subject, "user alice");
        assert_eq!(
            (
                entries[1].seq,
                entries[1].who.as_str(),
                entries[1].authenticated,
                entries[1].from.as_str()
            ),
            (2, "ops", false, "")
        );
        assert_eq!(state.audit().since(1, 10).len(), 1);
        let json = serde_json::to_string(&state).unwrap();
        let restored: MetadataState = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, state);
    }
}
