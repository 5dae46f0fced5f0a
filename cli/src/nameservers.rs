//! The nameservers as the cli reaches them: [`NameserverAddrs`] (the `--nameserver` flag),
//! [`Who`] (the `--by` flag every decision records) and [`NameserverClient`], the SDK's
//! [`NameserverAdmin`] (failover, election retries) with the nameserver's admin types. A leaf: it imports nothing from the rest of the cli.

use std::time::Duration;

use anyhow::{Result, anyhow};
use bytes::Bytes;
use meridian_client::{ClientConfig, ConnectionPool, NameserverAdmin};
use meridian_proto::RequestCode;
use meridian_proto::admin::read::{Query, Response};
use meridian_proto::admin::{AdminCommand, AdminWrite, AdminWriteRequest};
use meridian_proto::messages::TopicRoute;
use serde::de::DeserializeOwned;

/// Where governance commands find the nameservers.
#[derive(Debug, Clone, clap::Args)]
pub struct NameserverAddrs {
    /// Nameserver addresses, comma-separated; any one will do.
    #[arg(
        long = "nameserver",
        env = "MERIDIAN_NAMESERVER",
        default_value = "127.0.0.1:7800",
        value_delimiter = ','
    )]
    pub nameservers: Vec<String>,
}

/// Who makes a request or a decision; recorded in the history.
#[derive(Debug, Clone, clap::Args)]
pub struct Who {
    /// Who you are, recorded with the request or decision (default: $MERIDIAN_USER, else $USER,
    /// else the OS account running the command).
    #[arg(long = "by")]
    by: Option<String>,
}

impl Who {
    pub(crate) fn name(&self) -> Result<String> {
        let non_empty = |name: String| (!name.trim().is_empty()).then_some(name);
        self.by
            .clone()
            .and_then(non_empty)
            .or_else(|| std::env::var("MERIDIAN_USER").ok().and_then(non_empty))
            .or_else(|| std::env::var("USER").ok().and_then(non_empty))
            .or_else(|| os_account_name().and_then(non_empty))
            .ok_or_else(|| anyhow!("say who you are with --by NAME (or set MERIDIAN_USER): every request and decision records who made it"))
    }
}

/// The name of the OS account this process runs as (containers often leave `USER` unset).
fn os_account_name() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut buffer = vec![0u8; 4096];
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `entry` and `buffer`, both live and of the sizes given;
    // `found` is null or points at `entry`, whose strings point into `buffer`.
    let status = unsafe { libc::getpwuid_r(uid, &mut entry, buffer.as_mut_ptr().cast(), buffer.len(), &mut found) };
    if status != 0 || found.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buffer`, still alive here.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    name.to_str().ok().map(str::to_owned)
}

/// Talks to the nameservers through the SDK's [`NameserverAdmin`] (its address failover and
/// election retries), with the nameserver's admin types.
pub struct NameserverClient {
    admin: NameserverAdmin,
}

/// Longest a membership change may take (adding a node waits until it has caught up).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(125);

impl NameserverClient {
    /// A client of the nameservers at `addrs`.
    pub fn new(addrs: &NameserverAddrs) -> Result<NameserverClient> {
        let admin = NameserverAdmin::new(
            addrs.nameservers.clone(),
            ClientConfig {
                request_timeout: Duration::from_secs(10),
                ..crate::credentials::client_config()
            },
        )?;
        Ok(NameserverClient { admin })
    }

    /// A client of the nameservers at `addrs` logged in with `credentials` (`cluster up` as the
    /// node, to create the administrator).
    pub fn with_credentials(
        addrs: Vec<String>,
        credentials: meridian_proto::auth::Credentials,
    ) -> Result<NameserverClient> {
        let admin = NameserverAdmin::new(
            addrs,
            ClientConfig {
                request_timeout: Duration::from_secs(10),
                credentials: Some(credentials),
                ..ClientConfig::default()
            },
        )?;
        Ok(NameserverClient { admin })
    }

    /// The SDK's admin client underneath.
    pub fn admin(&self) -> &NameserverAdmin {
        &self.admin
    }

    /// Sends a framed request with `body` to the first nameserver that answers; the answer's body.
    pub async fn request_raw(&self, code: RequestCode, body: Bytes) -> Result<Bytes> {
        Ok(self.admin.request(code, body, Duration::from_secs(10)).await?)
    }

    /// Reads `query` as `T`.
    pub async fn read<T: DeserializeOwned>(&self, query: &Query) -> Result<T> {
        Ok(self.admin.read(query).await?)
    }

    /// Applies `op` (an admin write of the contract) through the Raft leader.
    pub async fn write(&self, op: AdminWrite) -> Result<Response> {
        let timeout = match op {
            AdminWrite::Command { .. } => Duration::from_secs(15),
            _ => MEMBERSHIP_TIMEOUT,
        };
        Ok(self
            .admin
            .write(&AdminWriteRequest { op, forwarded: false }, timeout)
            .await?)
    }

    pub(crate) async fn command(&self, command: AdminCommand) -> Result<Response> {
        self.write(AdminWrite::Command { command }).await
    }

    /// The route of `topic`.
    pub async fn route(&self, topic: &str) -> Result<TopicRoute> {
        Ok(self.admin.route(topic).await?)
    }

    /// The connection pool, for requests to the brokers the nameservers name.
    pub fn pool(&self) -> &ConnectionPool {
        self.admin.pool()
    }

    pub async fn shutdown(self) {
        self.admin.shutdown().await;
    }

    /// Runs `run` on `command` with a client of the nameservers at `addrs`, then closes the
    /// client's connections whatever `run` returned.
    pub async fn with<C>(
        addrs: &NameserverAddrs,
        command: C,
        run: impl AsyncFnOnce(&NameserverClient, C) -> Result<()>,
    ) -> Result<()> {
        let client = NameserverClient::new(addrs)?;
        let result = run(&client, command).await;
        client.shutdown().await;
        result
    }
}
