//! Which data center (IDC) a node or client is in, decided the same way by every process.
//!
//! Sources, first match wins:
//! 1. the `MERIDIAN_IDC` environment variable;
//! 2. the `idc` setting of the process's config (or client settings);
//! 3. the IDC file written at provisioning (default [`DEFAULT_IDC_FILE`]; the first line that is
//!    neither empty nor a `#` comment);
//! 4. the nameservers' CIDR → IDC map, looked up by the process's own IP.
//!
//! Every other source that names a different IDC, an invalid name, an unreadable file and an IDC
//! the cluster does not know each give a warning that says which source won and why; with no
//! source at all the process has no IDC (empty), which means "no preference": producers send to
//! any data center and consumers share every data center's queues.

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};

use crate::validate::validate_idc;

/// Environment variable naming the IDC; it wins over every other source.
pub const IDC_ENV: &str = "MERIDIAN_IDC";

/// Where provisioning writes the IDC file when no other path is configured.
pub const DEFAULT_IDC_FILE: &str = "/etc/meridian/idc";

/// Where an IDC came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdcSource {
    /// The `MERIDIAN_IDC` environment variable.
    Env,
    /// The `idc` setting of the config.
    Config,
    /// The IDC file at this path.
    File(PathBuf),
    /// The nameservers' IDC map: `ip` matched rule `cidr`.
    IpMap {
        /// The address looked up.
        ip: IpAddr,
        /// The rule that matched.
        cidr: String,
    },
    /// No source named one.
    None,
}

impl fmt::Display for IdcSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdcSource::Env => write!(formatter, "{IDC_ENV}"),
            IdcSource::Config => formatter.write_str("the idc setting"),
            IdcSource::File(path) => write!(formatter, "IDC file {}", path.display()),
            IdcSource::IpMap { ip, cidr } => write!(formatter, "the nameservers' IDC map ({ip} in {cidr})"),
            IdcSource::None => formatter.write_str("no source"),
        }
    }
}

/// The local sources of a process: its environment, its config and its IDC file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdcSettings {
    /// The `idc` setting; empty when not set.
    pub idc: String,
    /// The IDC file; `None` means [`DEFAULT_IDC_FILE`], whose absence is normal (no warning).
    pub file: Option<PathBuf>,
    /// The address to look up in the IDC map; `None`: the local address used to reach the
    /// nameservers ([`local_ip_towards`]).
    pub ip: Option<IpAddr>,
}

/// What the local sources said, before the IDC map is asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalIdc {
    /// Valid names in source order.
    candidates: Vec<(IdcSource, String)>,
    /// Problems found on the way.
    warnings: Vec<String>,
}

impl LocalIdc {
    /// Reads the environment and the IDC file of `settings`.
    pub fn read(settings: &IdcSettings) -> LocalIdc {
        let env = std::env::var(IDC_ENV).ok();
        let explicit = settings.file.is_some();
        let path = settings.file.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_IDC_FILE));
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => FileRead::Text(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !explicit => FileRead::Absent,
            Err(error) => FileRead::Failed(error.to_string()),
        };
        LocalIdc::from_sources(env.as_deref(), &settings.idc, &path, file)
    }

    /// The decision's inputs as plain values (what [`LocalIdc::read`] found), for tests.
    pub fn from_sources(env: Option<&str>, config: &str, path: &Path, file: FileRead) -> LocalIdc {
        let mut local = LocalIdc::default();
        if let Some(env) = env {
            local.offer(IdcSource::Env, env);
        }
        local.offer(IdcSource::Config, config);
        let source = IdcSource::File(path.to_owned());
        match file {
            FileRead::Absent => {}
            FileRead::Failed(error) => local.warnings.push(format!(
                "cannot read the IDC file {}: {error}; fix its path or permissions (idc_file), or set {IDC_ENV}",
                path.display()
            )),
            FileRead::Text(text) => {
                let mut lines = text
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'));
                match lines.next() {
                    None => local.warnings.push(format!(
                        "the IDC file {} is empty: write the data center's name on its first line",
                        path.display()
                    )),
                    Some(first) => {
                        if lines.next().is_some() {
                            local.warnings.push(format!(
                                "the IDC file {} has more than one line; using the first, {first:?}",
                                path.display()
                            ));
                        }
                        local.offer(source, first);
                    }
                }
            }
        }
        local
    }

    fn offer(&mut self, source: IdcSource, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        match validate_idc(value) {
            Ok(()) => self.candidates.push((source, value.to_owned())),
            Err(error) => self.warnings.push(format!("{source}: {error}; ignored")),
        }
    }

    /// The IDC a local source names, if any (the map is not asked when this is enough to go on,
    /// but asking it still reveals conflicts and unknown names).
    pub fn first(&self) -> Option<&str> {
        self.candidates.first().map(|(_, idc)| idc.as_str())
    }

    /// Decides with the IDC map's answer for this process's IP (`None`: no nameserver asked, or no
    /// rule matched) and the data centers the cluster knows (empty: unknown, not checked).
    pub fn decide(mut self, map: Option<(IpAddr, String, String)>, known: &[String]) -> DetectedIdc {
        if let Some((ip, cidr, idc)) = map {
            self.offer(IdcSource::IpMap { ip, cidr }, &idc);
        }
        let mut warnings = self.warnings;
        let Some((source, idc)) = self.candidates.first().cloned() else {
            warnings.push(format!(
                "no data center is known for this process: set {IDC_ENV} or the idc setting, write the IDC file, or add an IDC rule for its address (`meridian idc set CIDR IDC`); until then it prefers no data center"
            ));
            return DetectedIdc {
                idc: String::new(),
                source: IdcSource::None,
                warnings,
            };
        };
        for (other, other_idc) in &self.candidates[1..] {
            if *other_idc != idc {
                warnings.push(format!(
                    "{source} says data center {idc:?} but {other} says {other_idc:?}; using {idc:?} ({IDC_ENV} comes first, then the idc setting, the IDC file, the IDC map)"
                ));
            }
        }
        if !known.is_empty() && !known.contains(&idc) {
            warnings.push(format!(
                "data center {idc:?} (from {source}) is not one the cluster knows ({}): no broker is local to it; check the name",
                known.join(", ")
            ));
        }
        DetectedIdc { idc, source, warnings }
    }
}

/// What reading the IDC file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRead {
    /// The default file does not exist (normal where provisioning writes none).
    Absent,
    /// It could not be read (missing at a configured path, permissions, not UTF-8).
    Failed(String),
    /// Its text.
    Text(String),
}

/// The decision: the IDC (empty for none), where it came from, and what to warn about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedIdc {
    /// The data center; empty when no source named one.
    pub idc: String,
    /// Where it came from.
    pub source: IdcSource,
    /// Conflicts, unusable sources, unknown names: each says what was chosen and what to fix.
    pub warnings: Vec<String>,
}

impl DetectedIdc {
    /// Logs the warnings and the result, naming `who` (e.g. "broker a-0", "producer").
    pub fn log(&self, who: &str) {
        for warning in &self.warnings {
            tracing::warn!(who, "{warning}");
        }
        if !self.idc.is_empty() {
            tracing::info!(who, idc = %self.idc, source = %self.source, "data center");
        }
    }
}

/// The local address this host would use to reach `addr` (`host:port`): its own IP as the
/// network sees it, for the IDC map. Nothing is sent (a UDP socket is only connected).
pub fn local_ip_towards(addr: &str) -> Option<IpAddr> {
    let target = addr.to_socket_addrs().ok()?.next()?;
    let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> PathBuf {
        PathBuf::from("/etc/meridian/idc")
    }

    fn map(idc: &str) -> Option<(IpAddr, String, String)> {
        Some(("10.1.2.3".parse().unwrap(), "10.1.0.0/16".into(), idc.into()))
    }

    #[test]
    fn the_environment_wins_then_config_then_file_then_map() {
        let text = || FileRead::Text("# written by provisioning\ndc-file\n".into());
        let all = LocalIdc::from_sources(Some("dc-env"), "dc-config", &path(), text());
        let detected = all.decide(map("dc-map"), &[]);
        assert_eq!(
            (detected.idc.as_str(), detected.source.clone()),
            ("dc-env", IdcSource::Env)
        );
        assert_eq!(detected.warnings.len(), 3, "{:?}", detected.warnings);
        assert!(
            detected.warnings[0]
                .contains("MERIDIAN_IDC says data center \"dc-env\" but the idc setting says \"dc-config\"")
        );

        let detected = LocalIdc::from_sources(None, "dc-config", &path(), text()).decide(None, &[]);
        assert_eq!(detected.source, IdcSource::Config);
        let detected = LocalIdc::from_sources(None, "", &path(), text()).decide(None, &[]);
        assert_eq!(
            (detected.idc.as_str(), detected.source),
            ("dc-file", IdcSource::File(path()))
        );
        assert!(detected.warnings.is_empty(), "{:?}", detected.warnings);
        let detected = LocalIdc::from_sources(None, "", &path(), FileRead::Absent).decide(map("dc-map"), &[]);
        assert_eq!(detected.idc, "dc-map");
        assert!(matches!(detected.source, IdcSource::IpMap { .. }));
        assert!(detected.warnings.is_empty());
    }

    #[test]
    fn agreeing_sources_give_no_warning() {
        let local = LocalIdc::from_sources(Some("dc1"), "dc1", &path(), FileRead::Text("dc1".into()));
        let detected = local.decide(map("dc1"), &["dc1".into(), "dc2".into()]);
        assert_eq!(detected.idc, "dc1");
        assert!(detected.warnings.is_empty(), "{:?}", detected.warnings);
    }

    #[test]
    fn a_missing_unreadable_empty_or_invalid_file_is_warned_about_and_skipped() {
        let failed = FileRead::Failed("No such file or directory (os error 2)".into());
        let detected = LocalIdc::from_sources(None, "", &path(), failed).decide(map("dc2"), &[]);
        assert_eq!(detected.idc, "dc2");
        assert!(detected.warnings[0].starts_with("cannot read the IDC file /etc/meridian/idc: No such file"));

        let empty = LocalIdc::from_sources(None, "", &path(), FileRead::Text("\n# nothing\n".into()));
        let detected = empty.decide(None, &[]);
        assert_eq!(detected.idc, "");
        assert!(detected.warnings[0].contains("is empty"), "{:?}", detected.warnings);
        assert!(
            detected.warnings[1].starts_with("no data center is known"),
            "{:?}",
            detected.warnings
        );

        let invalid = LocalIdc::from_sources(None, "", &path(), FileRead::Text("dc one".into()));
        let detected = invalid.decide(map("dc2"), &[]);
        assert_eq!(detected.idc, "dc2", "an invalid name falls through to the next source");
        assert!(detected.warnings[0].contains("IDC file /etc/meridian/idc: IDC name \"dc one\" is invalid"));
    }

    #[test]
    fn an_unknown_idc_is_kept_with_a_warning() {
        let local = LocalIdc::from_sources(None, "", &path(), FileRead::Text("logicIdcUK".into()));
        let detected = local.decide(None, &["dc1".into(), "dc2".into()]);
        assert_eq!(detected.idc, "logicIdcUK");
        assert_eq!(
            detected.warnings,
            [
                "data center \"logicIdcUK\" (from IDC file /etc/meridian/idc) is not one the cluster knows (dc1, dc2): no broker is local to it; check the name"
            ]
        );
    }

    #[test]
    fn the_same_inputs_always_give_the_same_answer() {
        let decide = || {
            LocalIdc::from_sources(Some("dc2"), "dc1", &path(), FileRead::Text("dc3".into()))
                .decide(map("dc4"), &["dc1".into()])
        };
        assert_eq!(decide(), decide());
    }

    #[test]
    fn reading_a_real_file() {
        let dir = std::env::temp_dir().join(format!("meridian-idc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("idc");
        std::fs::write(&file, "dc7\n").unwrap();
        let settings = IdcSettings {
            file: Some(file.clone()),
            ..IdcSettings::default()
        };
        // The environment of the test process may name an IDC; only the file is checked here.
        let local = LocalIdc::read(&settings);
        assert!(
            local
                .candidates
                .iter()
                .any(|(source, idc)| *source == IdcSource::File(file.clone()) && idc == "dc7")
        );
        std::fs::remove_file(&file).unwrap();
        let local = LocalIdc::read(&settings);
        assert!(
            local
                .warnings
                .iter()
                .any(|warning| warning.starts_with("cannot read the IDC file"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_own_ip_towards_a_loopback_address_is_loopback() {
        assert!(local_ip_towards("127.0.0.1:9").is_some_and(|ip| ip.is_loopback()));
        assert_eq!(local_ip_towards("not an address"), None);
    }
}
