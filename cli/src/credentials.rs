//! The CLI's credentials: every command that connects logs in as `MERIDIAN_USER` with
//! `MERIDIAN_SECRET` (or the first line of `MERIDIAN_SECRET_FILE`) when both are set
//! (`docs/security.md`): on the framed protocol through the client's handshake, on HTTP as
//! `Authorization: Basic` through [`authorization_line`], the one place HTTP requests get it;
//! and connects with TLS verifying servers against `MERIDIAN_TLS_CA` when it is set.

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

/// The `Authorization` header line, CRLF included, for the CLI's HTTP requests; empty without
/// credentials. Servers without `[auth]` ignore it.
pub fn authorization_line() -> String {
    match credentials_from_env() {
        Some(credentials) => format!(
            "Authorization: {}\r\n",
            meridian_proto::http_auth::basic_authorization(&credentials.user, &credentials.secret)
        ),
        None => String::new(),
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
        .filter(|secret| !secret.is_empty())
        .or_else(|| {
            // `cluster up` writes the admin's secret to a 0600 file and prints its path.
            let path = std::env::var_os("MERIDIAN_SECRET_FILE")?;
            let text = std::fs::read_to_string(path).ok()?;
            let secret = text.lines().next()?.trim().to_owned();
            (!secret.is_empty()).then_some(secret)
        })?;
    Some(Credentials::new(user, secret))
}
