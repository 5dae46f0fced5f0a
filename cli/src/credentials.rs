//! The CLI's credentials: every command that connects logs in as `MERIDIAN_USER` with
//! `MERIDIAN_SECRET` when both are set, and connects with TLS verifying servers against
//! `MERIDIAN_TLS_CA` when it is set (`docs/security.md`).

use meridian_client::ClientConfig;
use meridian_proto::auth::Credentials;

/// The CLI's connection settings: logs in as `MERIDIAN_USER` with `MERIDIAN_SECRET` when both
/// are set (servers without `[auth]` let such clients in too).
pub fn client_config() -> ClientConfig {
    ClientConfig {
        credentials: credentials_from_env(),
        tls: tls_from_env(),
        ..ClientConfig::default()
    }
}

/// TLS from `MERIDIAN_TLS_CA`; a CA file that cannot be used stops the command (falling back to
/// plaintext would surprise).
pub fn tls_from_env() -> Option<std::sync::Arc<meridian_proto::tls::TlsClient>> {
    match meridian_proto::tls::TlsClient::from_env() {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
    }
}

fn credentials_from_env() -> Option<Credentials> {
    let user = std::env::var("MERIDIAN_USER").ok().filter(|user| !user.is_empty())?;
    let secret = std::env::var("MERIDIAN_SECRET")
        .ok()
        .filter(|secret| !secret.is_empty())?;
    Some(Credentials::new(user, secret))
}
