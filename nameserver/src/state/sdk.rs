//! The client SDK version policy: the oldest version allowed and known-bad versions refused.
//! Set through the log ([`super::Command::SetSdkPolicy`]); checked when a client connects.

use super::error::{CommandError, SdkVersionError};

/// The policy as clients read it, defined in the admin contract.
pub use meridian_proto::admin::SdkPolicy;

/// The policy's rules, on the record the admin contract defines.
pub trait SdkPolicyRules: Sized {
    /// A policy from its parts, each version checked to parse and each language lowercased.
    fn validated(policy: SdkPolicy) -> Result<SdkPolicy, CommandError>;
    /// Whether a client reporting `version` may connect.
    fn check(&self, version: &str) -> Result<(), SdkVersionError>;
}

impl SdkPolicyRules for SdkPolicy {
    /// A policy from its parts, each version checked to parse and each language lowercased.
    fn validated(mut policy: SdkPolicy) -> Result<SdkPolicy, CommandError> {
        policy.language_min_versions = std::mem::take(&mut policy.language_min_versions)
            .into_iter()
            .map(|(language, version)| (language.to_ascii_lowercase(), version))
            .collect();
        let versions = policy.min_version.iter().chain(&policy.blocked_versions);
        for version in versions.chain(policy.language_min_versions.values()) {
            if parse_version(version).is_none() {
                return Err(CommandError::Invalid {
                    message: format!("SDK version {version:?} is invalid: write it as MAJOR.MINOR.PATCH, e.g. 1.4.2"),
                });
            }
        }
        Ok(policy)
    }

    /// Whether a client reporting `version` may connect.
    fn check(&self, version: &str) -> Result<(), SdkVersionError> {
        if self.blocked_versions.contains(version) {
            return Err(SdkVersionError::Blocked {
                version: version.to_owned(),
            });
        }
        let Some(min_version) = &self.min_version else {
            return Ok(());
        };
        let parsed = parse_version(version).ok_or_else(|| SdkVersionError::Unparsable {
            version: version.to_owned(),
        })?;
        // The policy was validated when it was set, so its minimum parses.
        let min = parse_version(min_version).unwrap_or([0; 3]);
        if parsed < min {
            return Err(SdkVersionError::TooOld {
                version: version.to_owned(),
                min_version: min_version.clone(),
            });
        }
        Ok(())
    }
}

/// The one version rule: the brokers judge clients with it too ([`meridian_proto::sdk`]).
pub use meridian_proto::sdk::parse_version;
