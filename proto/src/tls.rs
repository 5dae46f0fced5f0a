//! TLS for every Meridian listener and client: the `[tls]` config table ([`TlsSettings`]), shared
//! by the broker, the nameserver and every HTTP listener; the server side ([`TlsServer`]: loads
//! the certificate, sniffs the first byte of each connection in `permissive` mode, reloads the
//! files when they change); and the client side ([`TlsClient`]: verifies servers against a CA).
//!
//! Start reading at [`TlsServer::accept`], which every accept path calls (the framed loop in
//! [`crate::serve`], the RocketMQ remoting listeners, the HTTP listeners), and
//! [`TlsClient::connect`], which [`crate::transport`] and the HTTP clients call.
//!
//! Certificates and keys are PEM files. A [`TlsServer`] checks their modification times every
//! [`RELOAD_INTERVAL`] ([`TlsServer::watch`], run in its owner's task tracker): new connections
//! get the new certificate; a file that does not load keeps the old one and logs why.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// How often a server checks its certificate files for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The environment variable naming the CA file clients verify servers against.
pub const CA_ENV: &str = "MERIDIAN_TLS_CA";

/// The first byte of a TLS connection (a handshake record), as RocketMQ sniffs it.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Whether a server speaks TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plaintext only.
    #[default]
    Off,
    /// TLS and plaintext on the same port, told apart by the first byte.
    Permissive,
    /// TLS only: plaintext connections are refused.
    Required,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Off => "off",
            TlsMode::Permissive => "permissive",
            TlsMode::Required => "required",
        })
    }
}

/// The `[tls]` table of every server's config (the same on every node of a cluster, each with
/// its own certificate).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// `off`, `permissive` or `required`.
    pub mode: TlsMode,
    /// This node's certificate chain (PEM), leaf first. Needed unless `mode = "off"`.
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The CA (PEM) this node verifies the servers it connects to against (other brokers,
    /// nameservers) and, with `verify_clients`, its clients. Unset: outgoing connections are
    /// plaintext.
    pub ca_file: Option<PathBuf>,
    /// Require every TLS client to present a certificate signed by `ca_file` (mutual TLS).
    pub verify_clients: bool,
}

/// Why TLS could not be set up. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A setting is missing or contradicts another.
    #[error("[tls] {0}")]
    Settings(String),
    /// A file could not be read or holds nothing usable.
    #[error("[tls] {what} {path}: {problem}")]
    File {
        /// Which setting (`cert_file`, `key_file`, `ca_file`, or `MERIDIAN_TLS_CA`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it and what to do.
        problem: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("[tls] {context}: {source}")]
    Rustls {
        /// What was being built.
        context: String,
        /// Why rustls refused it.
        source: rustls::Error,
    },
}

impl TlsSettings {
    /// Checks the settings without reading the files: a server with TLS on needs a certificate
    /// and a key, and verifying clients needs a CA.
    pub fn validate(&self) -> Result<(), TlsError> {
        if self.mode == TlsMode::Off {
            if self.verify_clients {
                return Err(TlsError::Settings(
                    "verify_clients = true needs mode = \"permissive\" or \"required\"".into(),
                ));
            }
            return Ok(());
        }
        if self.cert_file.is_none() || self.key_file.is_none() {
            return Err(TlsError::Settings(format!(
                "mode = \"{}\" needs cert_file and key_file (PEM files of this node's certificate and key); set both, or mode = \"off\"",
                self.mode
            )));
        }
        if self.verify_clients && self.ca_file.is_none() {
            return Err(TlsError::Settings(
                "verify_clients = true needs ca_file, the CA that signed the clients' certificates".into(),
            ));
        }
        Ok(())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(what: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Reads a PEM certificate chain: at least one certificate.
pub fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|error| {
            file_error(
                what,
                path,
                format!("cannot read it ({error}); check the path and permissions"),
            )
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(what, path, format!("not a PEM certificate file ({error})")))?;
    if certs.is_empty() {
        return Err(file_error(
            what,
            path,
            "holds no certificate (no -----BEGIN CERTIFICATE----- block)",
        ));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| {
        file_error(
            "key_file",
            path,
            format!("no usable private key ({error}); expected a PEM PKCS#8, PKCS#1 or SEC1 key"),
        )
    })
}

fn load_roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        roots
            .add(cert)
            .map_err(|error| file_error(what, path, format!("not a usable CA certificate ({error})")))?;
    }
    Ok(roots)
}

/// Builds a server config from the files `settings` names.
fn server_config(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    settings.validate()?;
    let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
        return Err(TlsError::Settings("cert_file and key_file are needed".into()));
    };
    let certs = load_certs("cert_file", cert_file)?;
    let key = load_key(key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            context: "protocol versions".into(),
            source,
        })?;
    let builder = match (&settings.ca_file, settings.verify_clients) {
        (Some(ca_file), true) => {
            let roots = load_roots("ca_file", ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|error| file_error("ca_file", ca_file, format!("cannot verify clients with it ({error})")))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            context: format!(
                "certificate {} with key {} (does the key belong to the certificate?)",
                cert_file.display(),
                key_file.display()
            ),
            source,
        })?;
    config.alpn_protocols.clear();
    Ok(config)
}

/// Modification times and sizes of the files a config was built from: a change means reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamps(Vec<Option<(SystemTime, u64)>>);

impl Stamps {
    fn of(settings: &TlsSettings) -> Stamps {
        let stamp = |path: &Option<PathBuf>| {
            let metadata = std::fs::metadata(path.as_ref()?).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        };
        Stamps(vec![
            stamp(&settings.cert_file),
            stamp(&settings.key_file),
            stamp(&settings.ca_file),
        ])
    }
}

/// A server's TLS: the current [`ServerConfig`] (swapped on reload) and its mode. Shared by all of
/// a process's listeners.
pub struct TlsServer {
    settings: TlsSettings,
    config: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Stamps>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer").field("settings", &self.settings).finish()
    }
}

/// What [`TlsServer::accept`] made of a new connection.
pub enum Accepted {
    /// A plaintext connection the mode allows.
    Plain(TcpStream),
    /// A TLS connection, handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A plaintext connection in `required` mode: the caller may answer it in plaintext, once,
    /// with why it is refused, then must close it.
    PlaintextRefused(TcpStream),
}

impl TlsServer {
    /// Loads the certificate and key `settings` name; `None` when `mode = "off"`.
    pub fn load(settings: &TlsSettings) -> Result<Option<Arc<TlsServer>>, TlsError> {
        settings.validate()?;
        if settings.mode == TlsMode::Off {
            return Ok(None);
        }
        let stamps = Stamps::of(settings);
        let config = server_config(settings)?;
        Ok(Some(Arc::new(TlsServer {
            settings: settings.clone(),
            config: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
        })))
    }

    /// `permissive` or `required`.
    pub fn mode(&self) -> TlsMode {
        self.settings.mode
    }

    /// The config new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reloads the files if any changed since the last load: `Ok(true)` when a new config is in
    /// place; on an error the old config stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps = Stamps::of(&self.settings);
        {
            let mut last = self.stamps.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if *last == stamps {
                return Ok(false);
            }
            // A bad file is reported once per change, not every interval.
            *last = stamps;
        }
        let config = server_config(&self.settings)?;
        *self.config.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config);
        Ok(true)
    }

    /// Checks the files every `every` until `stop`, reloading on change. Run it in the owning
    /// component's task tracker.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            let settings = self.settings.clone();
            let this = self.clone();
            let reloaded = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
            match reloaded {
                Ok(Ok(true)) => tracing::info!(
                    cert_file = ?settings.cert_file,
                    key_file = ?settings.key_file,
                    "tls certificate reloaded; new connections use it"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(error)) => tracing::error!(%error, "tls certificate not reloaded; keeping the previous one"),
                Err(error) => tracing::error!(%error, "tls reload task failed"),
            }
        }
    }

    /// Sniffs and, for TLS, handshakes a new connection, within `timeout` (a client that sends
    /// nothing or stalls the handshake is dropped).
    pub async fn accept(&self, stream: TcpStream, timeout: Duration) -> io::Result<Accepted> {
        let work = async {
            let mut first = [0u8; 1];
            let read = stream.peek(&mut first).await?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before sending anything",
                ));
            }
            if first[0] != TLS_HANDSHAKE_BYTE {
                return Ok(match self.mode() {
                    TlsMode::Required => Accepted::PlaintextRefused(stream),
                    _ => Accepted::Plain(stream),
                });
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(self.current());
            let tls = acceptor.accept(stream).await?;
            Ok(Accepted::Tls(Box::new(tls)))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no TLS handshake or first request within {timeout:?} (handshake_timeout_secs)"),
            )),
        }
    }
}

/// A client's TLS: the CA it verifies servers against (and, for nodes with mutual TLS, the
/// certificate it presents).
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    ca_file: PathBuf,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").field("ca_file", &self.ca_file).finish()
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &TlsClient) -> bool {
        self.ca_file == other.ca_file && Arc::ptr_eq(self.connector.config(), other.connector.config())
    }
}

impl Eq for TlsClient {}

impl TlsClient {
    /// Verifies servers against the CA in `ca_file`, presenting `identity` (certificate and key
    /// files) when a server asks for a client certificate.
    pub fn new(
        what: &'static str,
        ca_file: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Arc<TlsClient>, TlsError> {
        let roots = load_roots(what, ca_file)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                context: "protocol versions".into(),
                source,
            })?
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert_file, key_file)) => builder
                .with_client_auth_cert(load_certs("cert_file", cert_file)?, load_key(key_file)?)
                .map_err(|source| TlsError::Rustls {
                    context: format!("client certificate {}", cert_file.display()),
                    source,
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            ca_file: ca_file.to_owned(),
        }))
    }

    /// A node's client TLS from its `[tls]` table: `None` without `ca_file`. The node presents its
    /// own certificate, so servers that verify clients accept it.
    pub fn from_settings(settings: &TlsSettings) -> Result<Option<Arc<TlsClient>>, TlsError> {
        let Some(ca_file) = &settings.ca_file else {
            return Ok(None);
        };
        let identity = match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        TlsClient::new("ca_file", ca_file, identity).map(Some)
    }

    /// A user's client TLS from `MERIDIAN_TLS_CA`: `None` when it is unset or empty.
    pub fn from_env() -> Result<Option<Arc<TlsClient>>, TlsError> {
        match std::env::var_os(CA_ENV) {
            Some(path) if !path.is_empty() => TlsClient::new(CA_ENV, Path::new(&path), None).map(Some),
            _ => Ok(None),
        }
    }

    /// The CA file servers are verified against.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Runs the TLS handshake on `stream`, opened to `addr` (`host:port`): the server's
    /// certificate must be signed by the CA and name `host` (a DNS name or an IP address).
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = server_name(addr)?;
        self.connector.connect(name, stream).await.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "TLS handshake with {addr} failed: {error} (is its certificate signed by the CA in {} and issued for this host?)",
                    self.ca_file.display()
                ),
            )
        })
    }
}

/// The name a server's certificate must carry for `addr` (`host:port`, `[v6]:port` or `host`).
pub fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) && !host.ends_with(':') => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} is not a host name TLS can verify ({error})"),
        )
    })
}

/// A stream that is either plaintext or TLS: the HTTP listeners and clients use it.
pub enum MaybeTls<T> {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS over TCP (a server's or a client's side).
    Tls(Box<T>),
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_flush(cx),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(stream) => stream.is_write_vectored(),
            MaybeTls::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

/// A server's side of a plaintext or TLS connection.
pub type ServerStream = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// A client's side of a plaintext or TLS connection.
pub type ClientStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// A client stream to `addr`: TLS when `tls` is set, else plaintext.
pub async fn connect_maybe_tls(tls: Option<&TlsClient>, addr: &str, stream: TcpStream) -> io::Result<ClientStream> {
    match tls {
        Some(tls) => Ok(MaybeTls::Tls(Box::new(tls.connect(addr, stream).await?))),
        None => Ok(MaybeTls::Plain(stream)),
    }
}

/// Reads `stream` to its end (an HTTP/1.0 answer ends when the server closes): a TLS server
/// that closes without `close_notify` after sending its answer is not an error.
pub async fn read_to_close<R: AsyncRead + Unpin>(stream: &mut R, into: &mut Vec<u8>) -> io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let start = into.len();
    match stream.read_to_end(into).await {
        Ok(read) => Ok(read),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof && into.len() > start => Ok(into.len() - start),
        Err(error) => Err(error),
    }
}

/// Test certificates: a CA and node certificates it signs, written as PEM files.
#[cfg(test)]
pub(crate) mod test_certs {
    use std::path::{Path, PathBuf};

    use super::{TlsMode, TlsSettings};

    /// A CA that signs node certificates.
    pub struct TestCa {
        pub issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        pub cert_pem: String,
    }

    impl TestCa {
        pub fn new(name: &str) -> TestCa {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            TestCa {
                cert_pem: cert.pem(),
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        /// Writes `ca.pem`, and `<name>.pem`/`<name>.key` for 127.0.0.1 and localhost, into `dir`.
        pub fn write_node(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let ca = dir.join("ca.pem");
            let cert_file = dir.join(format!("{name}.pem"));
            let key_file = dir.join(format!("{name}.key"));
            std::fs::write(&ca, &self.cert_pem).unwrap();
            std::fs::write(&cert_file, cert.pem()).unwrap();
            std::fs::write(&key_file, key.serialize_pem()).unwrap();
            (ca, cert_file, key_file)
        }

        pub fn settings(&self, dir: &Path, mode: TlsMode) -> TlsSettings {
            let (ca, cert, key) = self.write_node(dir, "node");
            TlsSettings {
                mode,
                cert_file: Some(cert),
                key_file: Some(key),
                ca_file: Some(ca),
                verify_clients: false,
            }
        }
    }

    /// A fresh temporary directory, removed on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "meridian-tls-{tag}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_certs::{TempDir, TestCa};
    use super::*;

    #[test]
    fn tls_settings_errors_name_the_setting_and_the_file() {
        let missing = TlsSettings {
            mode: TlsMode::Required,
            ..TlsSettings::default()
        };
        let error = TlsServer::load(&missing).unwrap_err().to_string();
        assert!(error.contains("cert_file and key_file"), "{error}");

        let dir = TempDir::new("errors");
        let bogus = dir.0.join("bogus.pem");
        std::fs::write(&bogus, "not pem").unwrap();
        let settings = TlsSettings {
            mode: TlsMode::Required,
            cert_file: Some(bogus.clone()),
            key_file: Some(dir.0.join("absent.key")),
            ..TlsSettings::default()
        };
        let error = TlsServer::load(&settings).unwrap_err().to_string();
        assert!(error.contains("cert_file") && error.contains("bogus.pem"), "{error}");
        assert!(error.contains("no certificate"), "{error}");

        let ca = TestCa::new("errors ca");
        let (_, cert, _) = ca.write_node(&dir.0, "node");
        let settings = TlsSettings {
            cert_file: Some(cert),
            ..settings
        };
        let error = TlsServer::load(&settings).unwrap_err().to_string();
        assert!(error.contains("key_file") && error.contains("absent.key"), "{error}");
        assert!(TlsServer::load(&TlsSettings::default()).unwrap().is_none());
    }

    #[test]
    fn tls_server_names_come_from_host_and_port() {
        assert!(matches!(
            server_name("127.0.0.1:7911").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(server_name("[::1]:7911").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(
            server_name("broker-a.example:7911").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(server_name("localhost").unwrap(), ServerName::DnsName(_)));
    }

    #[test]
    fn tls_reload_keeps_the_old_config_when_the_new_files_are_bad() {
        let dir = TempDir::new("reload-bad");
        let ca = TestCa::new("reload ca");
        let settings = ca.settings(&dir.0, TlsMode::Required);
        let server = TlsServer::load(&settings).unwrap().unwrap();
        let before = server.current();
        assert!(!server.reload_if_changed().unwrap());
        std::fs::write(settings.key_file.as_ref().unwrap(), "garbage, not a key").unwrap();
        let error = server.reload_if_changed().unwrap_err().to_string();
        assert!(error.contains("key_file"), "{error}");
        assert!(
            Arc::ptr_eq(&before, &server.current()),
            "a bad file must keep the old config"
        );
        // A good pair again is picked up.
        ca.write_node(&dir.0, "node");
        assert!(server.reload_if_changed().unwrap());
        assert!(!Arc::ptr_eq(&before, &server.current()));
    }
}
