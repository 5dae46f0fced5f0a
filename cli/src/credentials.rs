//! The CLI's credentials: every command that connects logs in as `MERIDIAN_USER` with
//! `MERIDIAN_SECRET` when both are set (`docs/security.md`).

use meridian_client::ClientConfig;
use meridian_proto::auth::Credentials;

/// The CLI's connection settings: logs in as `MERIDIAN_USER` with `MERIDIAN_SECRET` when both
/// are set (servers without `[auth]` let such clients in too).
pub fn client_config() -> ClientConfig {
    ClientConfig {
        credentials: credentials_from_env(),
        ..ClientConfig::default()
    }
}

fn credentials_from_env() -> Option<Credentials> {
    let user = std::env::var("MERIDIAN_USER").ok().filter(|user| !user.is_empty())?;
    let secret = std::env::var("MERIDIAN_SECRET")
        .ok()
        .filter(|secret| !secret.is_empty())?;
    Some(Credentials::new(user, secret))
}
