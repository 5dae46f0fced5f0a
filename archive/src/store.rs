//! The archive's object store, chosen by URL: a local folder (the default, embedded), `memory://`
//! (tests), `s3://bucket/prefix` for S3 and S3-compatible servers, `gs://bucket/prefix` for Google
//! Cloud Storage and `az://container/prefix` for Azure Blob Storage. Settings come from the
//! `[archive.s3]`, `[archive.gcs]` or `[archive.azure]` config or, where it leaves them out, the
//! usual `AWS_*`, `GOOGLE_*` or `AZURE_*` environment variables.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::error::{ArchiveError, Result};

/// S3 settings (`[archive.s3]`). Anything left out falls back to `AWS_*` environment variables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`); empty for AWS.
    pub endpoint: Option<String>,
    /// Region (else `AWS_REGION` or `AWS_DEFAULT_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Access key id (else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (else `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints (a server on loopback).
    pub allow_http: bool,
}

/// Google Cloud Storage settings (`[archive.gcs]`). Anything left out falls back to `GOOGLE_*`
/// environment variables, then to the machine's default credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcsConfig {
    /// Path of a service account JSON key (else `GOOGLE_SERVICE_ACCOUNT` or
    /// `GOOGLE_APPLICATION_CREDENTIALS`).
    pub service_account_path: Option<String>,
    /// Base URL of a GCS-compatible server (`http://127.0.0.1:4443`); empty for Google's.
    pub endpoint: Option<String>,
    /// Allow plain `http://` endpoints (a server on loopback).
    pub allow_http: bool,
}

/// Azure Blob Storage settings (`[archive.azure]`). Anything left out falls back to `AZURE_*`
/// environment variables (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureConfig {
    /// Storage account (else `AZURE_STORAGE_ACCOUNT_NAME`).
    pub account: Option<String>,
    /// Account key (else `AZURE_STORAGE_ACCOUNT_KEY`).
    pub access_key: Option<String>,
    /// Blob endpoint of the account, for Azurite or a sovereign cloud
    /// (`http://127.0.0.1:10000/devstoreaccount1`); empty: `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    /// Allow plain `http://` endpoints (a server on loopback).
    pub allow_http: bool,
}

/// The `[archive]` table of the broker config: whether and when segments are archived, where,
/// and how long the broker and the archive keep them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Archive sealed segments, serve old offsets from the archive, and delete local segments
    /// once archived (default false: nothing is archived and nothing is ever deleted locally).
    pub enabled: bool,
    /// Where the archive lives: a folder path or `file:///abs/path`, `memory://`,
    /// `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`. Empty: the folder
    /// `archive` beside the broker's data dir.
    pub store: String,
    /// A sealed segment is archived once its last write is this old, in seconds (default 3600).
    pub archive_after_secs: u64,
    /// An archived segment stays on the broker's disk this long after its last write, in
    /// seconds (default 3 days); then the broker deletes it and serves it from the archive.
    pub local_retention_secs: u64,
    /// How often the archiver and the broker's retention look for work, in seconds (default 60).
    pub interval_secs: u64,
    /// Days archived messages are kept (by day partition); absent: forever.
    pub retention_days: Option<u32>,
    /// Per-topic archive retention in days, overriding `retention_days`; 0 means forever.
    pub topic_retention_days: BTreeMap<String, u32>,
    /// zstd level of message files (1 to 22; default 1).
    pub zstd_level: i32,
    /// Attempts per object store request before an archive run gives up (it retries on its next
    /// interval); default 3.
    pub max_retries: usize,
    /// Timeout of one object store request, in seconds (default 30).
    pub request_timeout_secs: u64,
    /// S3 settings for an `s3://` store.
    pub s3: S3Config,
    /// Google Cloud Storage settings for a `gs://` store.
    pub gcs: GcsConfig,
    /// Azure Blob Storage settings for an `az://` store.
    pub azure: AzureConfig,
}

impl Default for ArchiveConfig {
    fn default() -> ArchiveConfig {
        ArchiveConfig {
            enabled: false,
            store: String::new(),
            archive_after_secs: 3600,
            local_retention_secs: 3 * 86_400,
            interval_secs: 60,
            retention_days: None,
            topic_retention_days: BTreeMap::new(),
            zstd_level: 1,
            max_retries: 3,
            request_timeout_secs: 30,
            s3: S3Config::default(),
            gcs: GcsConfig::default(),
            azure: AzureConfig::default(),
        }
    }
}

impl ArchiveConfig {
    /// Checks values that would make archiving unusable.
    pub fn validate(&self) -> Result<()> {
        if !(1..=22).contains(&self.zstd_level) {
            return Err(ArchiveError::Config(format!(
                "archive.zstd_level = {} is out of range: 1 to 22",
                self.zstd_level
            )));
        }
        if self.interval_secs == 0 || self.request_timeout_secs == 0 {
            return Err(ArchiveError::Config(
                "archive.interval_secs and archive.request_timeout_secs must be at least 1".into(),
            ));
        }
        for topic in self.topic_retention_days.keys() {
            meridian_proto::validate::validate_topic(topic)?;
        }
        Ok(())
    }

    /// Days the archive keeps `topic` (`None`: forever).
    pub fn retention_days_of(&self, topic: &str) -> Option<u32> {
        match self.topic_retention_days.get(topic) {
            Some(0) => None,
            Some(days) => Some(*days),
            None => self.retention_days,
        }
    }
}

/// An object store with the URL it was opened from (for messages; never holds credentials).
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    /// The store.
    pub inner: Arc<dyn ObjectStore>,
    /// Where it points, as configured.
    pub url: String,
}

impl ArchiveStore {
    /// Wraps an existing store (tests, or an embedder's own).
    pub fn new(inner: Arc<dyn ObjectStore>, url: impl Into<String>) -> ArchiveStore {
        ArchiveStore { inner, url: url.into() }
    }

    /// A fresh in-memory store.
    pub fn in_memory() -> ArchiveStore {
        ArchiveStore::new(Arc::new(InMemory::new()), "memory://")
    }

    /// Opens the store `config.store` names; `default_dir` when it is empty.
    pub fn open(config: &ArchiveConfig, default_dir: &FsPath) -> Result<ArchiveStore> {
        let url = config.store.trim();
        if url.is_empty() {
            return ArchiveStore::local(default_dir);
        }
        if url == "memory://" {
            return Ok(ArchiveStore::in_memory());
        }
        for (scheme, cloud) in [("s3://", Cloud::S3), ("gs://", Cloud::Gcs), ("az://", Cloud::Azure)] {
            if let Some(rest) = url.strip_prefix(scheme) {
                return ArchiveStore::cloud(url, rest, cloud, config);
            }
        }
        if let Some(path) = url.strip_prefix("file://") {
            return ArchiveStore::local(FsPath::new(path));
        }
        if url.contains("://") {
            return Err(ArchiveError::Config(format!(
                "archive.store = {url:?} has an unknown scheme: use a folder path, file:///abs/path, memory://, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
            )));
        }
        ArchiveStore::local(FsPath::new(url))
    }

    /// A folder on the local filesystem (created if missing).
    pub fn local(dir: &FsPath) -> Result<ArchiveStore> {
        std::fs::create_dir_all(dir).map_err(ArchiveError::io(format!("creating archive folder {}", dir.display())))?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|source| ArchiveError::Store {
            store: dir.display().to_string(),
            context: "opening the folder".into(),
            source,
        })?;
        let absolute: PathBuf = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        Ok(ArchiveStore::new(
            Arc::new(store),
            format!("file://{}", absolute.display()),
        ))
    }

    /// An object store service: `rest` is `bucket[/prefix]` (an Azure container for `az://`).
    fn cloud(url: &str, rest: &str, cloud: Cloud, config: &ArchiveConfig) -> Result<ArchiveStore> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            let scheme = &url[..url.find("://").map_or(0, |at| at + 3)];
            return Err(ArchiveError::Config(format!(
                "archive.store = {url:?} names no {}: use {scheme}{0} or {scheme}{0}/prefix",
                cloud.bucket_word()
            )));
        }
        let configuring = |source| ArchiveError::Store {
            store: url.to_owned(),
            context: format!("configuring {}", cloud.settings()),
            source,
        };
        let store: Arc<dyn ObjectStore> = match cloud {
            Cloud::S3 => Arc::new(s3_builder(bucket, config).build().map_err(configuring)?),
            Cloud::Gcs => Arc::new(gcs_builder(bucket, config).build().map_err(configuring)?),
            Cloud::Azure => Arc::new(azure_builder(bucket, config).build().map_err(configuring)?),
        };
        let inner: Arc<dyn ObjectStore> = match prefix.trim_matches('/') {
            "" => store,
            prefix => Arc::new(PrefixStore::new(store, prefix)),
        };
        Ok(ArchiveStore::new(inner, url))
    }

    /// An error of this store, with what was being done.
    pub fn error(&self, context: impl Into<String>) -> impl FnOnce(object_store::Error) -> ArchiveError + '_ {
        let context = context.into();
        move |source| ArchiveError::Store {
            store: self.url.clone(),
            context,
            source,
        }
    }
}

/// The object store services an archive URL can name.
#[derive(Debug, Clone, Copy)]
enum Cloud {
    S3,
    Gcs,
    Azure,
}

impl Cloud {
    /// What the first part of the URL names.
    fn bucket_word(self) -> &'static str {
        match self {
            Cloud::S3 | Cloud::Gcs => "bucket",
            Cloud::Azure => "container",
        }
    }

    /// What a failing build of the client got wrong, for the error.
    fn settings(self) -> &'static str {
        match self {
            Cloud::S3 => "S3 (bucket, region, endpoint, credentials in [archive.s3] or AWS_*)",
            Cloud::Gcs => "Google Cloud Storage (bucket, credentials in [archive.gcs] or GOOGLE_*)",
            Cloud::Azure => "Azure Blob Storage (account, key, endpoint in [archive.azure] or AZURE_*)",
        }
    }
}

/// How often and how long a request to the archive's store is retried.
fn retry_config(config: &ArchiveConfig) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: config.max_retries,
        retry_timeout: Duration::from_secs(config.request_timeout_secs),
    }
}

/// The HTTP client settings of a request to the archive's store.
fn client_options(config: &ArchiveConfig, allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout(Duration::from_secs(config.request_timeout_secs))
        .with_connect_timeout(Duration::from_secs(config.request_timeout_secs.min(5)))
}

/// The S3 client settings of an archive in `bucket`: `[archive.s3]` first, then the `AWS_*`
/// environment (credentials, region, endpoint) for whatever it leaves out.
pub(crate) fn s3_builder(bucket: &str, config: &ArchiveConfig) -> AmazonS3Builder {
    let s3 = &config.s3;
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_allow_http(s3.allow_http)
        .with_retry(retry_config(config))
        .with_client_options(client_options(config, s3.allow_http));
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    // Without one here, `AWS_REGION` or `AWS_DEFAULT_REGION` (read by `from_env`), else
    // object_store's us-east-1.
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &s3.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    builder
}

/// The Google Cloud Storage client settings of an archive in `bucket`: `[archive.gcs]` first,
/// then the `GOOGLE_*` environment.
pub(crate) fn gcs_builder(bucket: &str, config: &ArchiveConfig) -> GoogleCloudStorageBuilder {
    let gcs = &config.gcs;
    let mut builder = GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry_config(config))
        .with_client_options(client_options(config, gcs.allow_http));
    if let Some(path) = &gcs.service_account_path {
        builder = builder.with_service_account_path(path);
    }
    if let Some(endpoint) = &gcs.endpoint {
        builder = builder.with_base_url(endpoint);
    }
    builder
}

/// The Azure Blob Storage client settings of an archive in `container`: `[archive.azure]` first,
/// then the `AZURE_*` environment.
pub(crate) fn azure_builder(container: &str, config: &ArchiveConfig) -> MicrosoftAzureBuilder {
    let azure = &config.azure;
    let mut builder = MicrosoftAzureBuilder::from_env()
        .with_container_name(container)
        .with_retry(retry_config(config))
        .with_client_options(client_options(config, azure.allow_http));
    if let Some(account) = &azure.account {
        builder = builder.with_account(account);
    }
    if let Some(key) = &azure.access_key {
        builder = builder.with_access_key(key);
    }
    if let Some(endpoint) = &azure.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    builder
}
