//! `meridian dev --tls`: a self-signed CA and a node certificate it signs, made once into
//! DATA_DIR/tls (`ca.pem`, `ca.key`, `node.pem`, `node.key`, keys mode 600) and reused on later
//! starts; the `[tls]` settings every listener of the dev node then uses. Start at [`ensure`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use meridian_proto::tls::{TlsMode, TlsSettings};

/// The files of a dev node's TLS.
#[derive(Debug, Clone)]
pub struct DevTls {
    /// The CA clients trust (`MERIDIAN_TLS_CA`).
    pub ca_file: PathBuf,
    /// The node's settings: `required`, with the node's certificate, verifying peers by the CA.
    pub settings: TlsSettings,
}

/// Makes the CA and node certificate in `data_dir/tls` unless they exist. The node certificate
/// names `localhost`, 127.0.0.1, ::1 and every other listen address in `ips`.
pub fn ensure(data_dir: &Path, ips: &[IpAddr]) -> Result<DevTls> {
    let dir = data_dir.join("tls");
    let ca_file = dir.join("ca.pem");
    let cert_file = dir.join("node.pem");
    let key_file = dir.join("node.key");
    let settings = TlsSettings {
        mode: TlsMode::Required,
        cert_file: Some(cert_file.clone()),
        key_file: Some(key_file.clone()),
        ca_file: Some(ca_file.clone()),
        verify_clients: false,
    };
    if ca_file.exists() && cert_file.exists() && key_file.exists() {
        return Ok(DevTls { ca_file, settings });
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = rcgen::KeyPair::generate().context("generating the dev CA key")?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).context("dev CA parameters")?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "meridian dev CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).context("signing the dev CA")?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    for ip in ips {
        let ip = ip.to_string();
        if !ip.starts_with("0.0.0.0") && ip != "::" && !names.contains(&ip) {
            names.push(ip);
        }
    }
    let node_key = rcgen::KeyPair::generate().context("generating the dev node key")?;
    let mut node_params = rcgen::CertificateParams::new(names).context("dev node certificate parameters")?;
    node_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "meridian dev node");
    node_params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node_cert = node_params
        .signed_by(&node_key, &issuer)
        .context("signing the dev node certificate")?;

    write_private(&dir.join("ca.key"), &issuer.key().serialize_pem())?;
    write_private(&key_file, &node_key.serialize_pem())?;
    std::fs::write(&cert_file, node_cert.pem()).with_context(|| format!("writing {}", cert_file.display()))?;
    // The CA last: its presence means the set is complete.
    std::fs::write(&ca_file, ca_cert.pem()).with_context(|| format!("writing {}", ca_file.display()))?;
    Ok(DevTls { ca_file, settings })
}

/// Writes a key readable by its owner only.
fn write_private(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_tls_makes_a_ca_and_a_node_certificate_servers_and_clients_accept() {
        let dir = std::env::temp_dir().join(format!("meridian-dev-tls-{}", std::process::id()));
        let made = ensure(&dir, &["10.1.2.3".parse().unwrap()]).unwrap();
        assert!(meridian_proto::tls::TlsServer::load(&made.settings).unwrap().is_some());
        assert!(
            meridian_proto::tls::TlsClient::from_settings(&made.settings)
                .unwrap()
                .is_some()
        );
        let mode = std::fs::metadata(dir.join("tls/node.key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        // A second start reuses the files.
        let before = std::fs::read(&made.ca_file).unwrap();
        let again = ensure(&dir, &[]).unwrap();
        assert_eq!(std::fs::read(&again.ca_file).unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
