//! Client SDK identity and the cluster's SDK version policy as brokers enforce it.
//!
//! Every client reports its SDK language and version: consumers in their heartbeats, producers in
//! every send ([`crate::messages::SendRequest::sdk`], `language/version` as raw bytes so the broker
//! reads it without allocating). The nameservers' policy reaches brokers as [`SdkPolicyGrant`] in
//! their metadata; [`judge`] is the one rule a broker applies: a violation is flagged (client
//! listings, logs) and, when the policy says `refuse`, the request is refused with the violation's
//! message, which names the version and the policy.

use std::fmt;

use prost::Message;

/// The language Meridian's own SDK reports.
pub const SDK_LANGUAGE: &str = "rust";

/// `language/version` of this SDK, as producers send it.
pub const SDK_ID: &str = concat!("rust/", env!("CARGO_PKG_VERSION"));

/// The cluster's SDK version policy, as the nameservers send it to brokers.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct SdkPolicyGrant {
    /// Oldest version allowed (`MAJOR.MINOR.PATCH`) for every language; empty: any.
    #[prost(string, tag = "1")]
    pub min_version: String,
    /// Versions refused whatever the minimum says (known-bad releases), compared as written.
    #[prost(string, repeated, tag = "2")]
    pub blocked_versions: Vec<String>,
    /// Refuse offenders' requests; otherwise they are only flagged.
    #[prost(bool, tag = "3")]
    pub refuse: bool,
    /// Oldest version allowed per language (lowercase), instead of `min_version`.
    #[prost(message, repeated, tag = "4")]
    pub language_min_versions: Vec<LanguageMinimum>,
}

/// A minimum version for one SDK language.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct LanguageMinimum {
    /// Lowercase language (`rust`, `java`, `go`, `cpp`, ...).
    #[prost(string, tag = "1")]
    pub language: String,
    /// Oldest version allowed.
    #[prost(string, tag = "2")]
    pub min_version: String,
}

/// Why a client's SDK breaks the policy. `Display` is what the client and operators see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkViolation {
    /// The version is on the blocked list.
    Blocked {
        /// `language/version` as reported.
        sdk: String,
    },
    /// The version is older than the minimum for its language.
    TooOld {
        /// `language/version` as reported.
        sdk: String,
        /// The minimum that applies.
        min_version: String,
    },
    /// The version cannot be compared with the minimum.
    Unparsable {
        /// `language/version` as reported.
        sdk: String,
        /// The minimum that applies.
        min_version: String,
    },
}

impl fmt::Display for SdkViolation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdkViolation::Blocked { sdk } => write!(
                formatter,
                "client SDK {sdk} is blocked by the cluster's SDK policy (blocked versions; `meridian client policy` shows it): upgrade the client to a version that is not blocked"
            ),
            SdkViolation::TooOld { sdk, min_version } => write!(
                formatter,
                "client SDK {sdk} is older than the minimum {min_version} of the cluster's SDK policy (`meridian client policy` shows it): upgrade the client to {min_version} or later"
            ),
            SdkViolation::Unparsable { sdk, min_version } => write!(
                formatter,
                "client SDK {sdk} reports a version that is not MAJOR.MINOR.PATCH, so the cluster's SDK policy (minimum {min_version}) cannot admit it: upgrade the client or have it report its version"
            ),
        }
    }
}

/// `MAJOR[.MINOR[.PATCH]]`, ignoring a `-pre-release` or `+build` suffix for ordering.
pub fn parse_version(version: &str) -> Option<[u64; 3]> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let mut parts = [0_u64; 3];
    let mut split = core.split('.');
    for (slot, part) in parts.iter_mut().zip(split.by_ref()) {
        if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    if split.next().is_some() {
        return None;
    }
    Some(parts)
}

/// Splits a reported `language/version` (a bare version reads as Meridian's language).
pub fn split_sdk(sdk: &str) -> (&str, &str) {
    sdk.split_once('/').unwrap_or((SDK_LANGUAGE, sdk))
}

/// Judges the SDK `language` `version` against `policy`. A client that reports no version (an
/// old Meridian client, or a tool) is not judged: there is nothing to compare.
pub fn judge(policy: &SdkPolicyGrant, language: &str, version: &str) -> Result<(), SdkViolation> {
    if version.is_empty() {
        return Ok(());
    }
    let sdk = || format!("{language}/{version}");
    if policy.blocked_versions.iter().any(|blocked| blocked == version) {
        return Err(SdkViolation::Blocked { sdk: sdk() });
    }
    let min_version = policy
        .language_min_versions
        .iter()
        .find(|minimum| minimum.language.eq_ignore_ascii_case(language))
        .map_or(policy.min_version.as_str(), |minimum| minimum.min_version.as_str());
    if min_version.is_empty() {
        return Ok(());
    }
    let Some(parsed) = parse_version(version) else {
        return Err(SdkViolation::Unparsable {
            sdk: sdk(),
            min_version: min_version.to_owned(),
        });
    };
    // The nameserver validated the minimum when it was set.
    if parsed < parse_version(min_version).unwrap_or([0; 3]) {
        return Err(SdkViolation::TooOld {
            sdk: sdk(),
            min_version: min_version.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SdkPolicyGrant {
        SdkPolicyGrant {
            min_version: "0.3.0".into(),
            blocked_versions: vec!["0.4.1".into()],
            refuse: true,
            language_min_versions: vec![LanguageMinimum {
                language: "java".into(),
                min_version: "4.9.0".into(),
            }],
        }
    }

    #[test]
    fn versions_are_judged_by_their_languages_minimum_and_the_blocked_list() {
        let policy = policy();
        assert_eq!(judge(&policy, "rust", "0.3.0"), Ok(()));
        assert_eq!(judge(&policy, "rust", "1.0.0-rc1"), Ok(()));
        let old = judge(&policy, "rust", "0.2.9").unwrap_err();
        assert_eq!(
            old.to_string(),
            "client SDK rust/0.2.9 is older than the minimum 0.3.0 of the cluster's SDK policy (`meridian client policy` shows it): upgrade the client to 0.3.0 or later"
        );
        assert!(matches!(
            judge(&policy, "rust", "0.4.1"),
            Err(SdkViolation::Blocked { .. })
        ));
        // Java has its own minimum, matched whatever the case.
        assert!(
            matches!(judge(&policy, "JAVA", "4.8.0"), Err(SdkViolation::TooOld { min_version, .. }) if min_version == "4.9.0")
        );
        assert_eq!(judge(&policy, "java", "5.0.0"), Ok(()));
        assert!(matches!(
            judge(&policy, "go", "v2"),
            Err(SdkViolation::Unparsable { .. })
        ));
        assert_eq!(
            judge(&policy, "rust", ""),
            Ok(()),
            "an unreported version is not judged"
        );
        assert_eq!(judge(&SdkPolicyGrant::default(), "rust", "0.0.1"), Ok(()));
    }

    #[test]
    fn reported_ids_split_into_language_and_version() {
        assert_eq!(split_sdk(SDK_ID), ("rust", env!("CARGO_PKG_VERSION")));
        assert_eq!(split_sdk("java/4.9.8"), ("java", "4.9.8"));
        assert_eq!(split_sdk("0.1.0"), ("rust", "0.1.0"));
        assert_eq!(parse_version("1.2"), Some([1, 2, 0]));
        assert_eq!(parse_version("1.2.3.4"), None);
    }
}
