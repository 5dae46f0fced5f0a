//! The archive's errors. Each names the thing that failed and, where there is one, the fix.

/// Everything that can go wrong archiving, reading or checking the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The object store refused or could not be reached (after its own retries).
    #[error("object store {store}: {context}: {source}")]
    Store {
        /// The store's URL as configured (credentials never appear here).
        store: String,
        /// What was being done.
        context: String,
        /// The object_store error.
        #[source]
        source: object_store::Error,
    },
    /// A local file (a commitlog segment) could not be read.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The archive configuration is unusable.
    #[error("archive config: {0}")]
    Config(String),
    /// A name that would become part of an archive path breaks the shared name rule.
    #[error("refusing to archive: {0}")]
    InvalidName(#[from] meridian_proto::validate::ValidationError),
    /// A segment holds bytes that are not records.
    #[error("segment {segment}: unreadable record at offset {offset}: {error}")]
    Segment {
        /// Start offset of the segment.
        segment: u64,
        /// Commitlog offset of the bad bytes.
        offset: u64,
        /// Why the bytes are not a record.
        error: meridian_proto::record::RecordError,
    },
    /// Parquet encoding or decoding failed.
    #[error("parquet {path}: {source}")]
    Parquet {
        /// The archive file.
        path: String,
        /// The parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow failed while building or reading columns.
    #[error("arrow {context}: {source}")]
    Arrow {
        /// What was being done.
        context: String,
        /// The arrow error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// A test crash point was reached.
    #[error("archiver stopped at test crash point {0:?}")]
    Crashed(CrashPoint),
    /// An archive file or manifest does not hold what it should.
    #[error("archive is corrupt: {0}")]
    Corrupt(String),
    /// The broker may not archive for its group now (see [`crate::group::Refusal`]).
    #[error("not archiving: {0}")]
    Refused(String),
}

/// The first I/O error in `error`'s chain of causes.
fn io_cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cause: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = current.source();
    }
    None
}

/// The archive's result type.
pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

impl ArchiveError {
    /// Whether retrying cannot help until an operator acts: a full disk or quota, a read-only
    /// or forbidden location, bad config, or a store that lacks a needed operation. Everything
    /// else (an unreachable store, a timeout) may pass by itself.
    pub fn is_fatal(&self) -> bool {
        match self {
            ArchiveError::Config(_) | ArchiveError::InvalidName(_) => true,
            ArchiveError::Store {
                source: object_store::Error::NotImplemented { .. } | object_store::Error::PermissionDenied { .. },
                ..
            } => true,
            _ => io_cause(self).is_some_and(|error| {
                matches!(
                    error.kind(),
                    std::io::ErrorKind::StorageFull
                        | std::io::ErrorKind::QuotaExceeded
                        | std::io::ErrorKind::ReadOnlyFilesystem
                        | std::io::ErrorKind::PermissionDenied
                )
            }),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiveError {
        let context = context.into();
        move |source| ArchiveError::Io { context, source }
    }
}

/// A step of an archive run where tests make the archiver crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashPoint {
    /// Half of the first file uploaded, under its final name.
    MidFile,
    /// Every file uploaded, the manifest entry not written.
    AfterFiles,
    /// The manifest entry written (the broker has not deleted anything yet).
    AfterManifest,
}

impl std::str::FromStr for CrashPoint {
    type Err = String;
    fn from_str(text: &str) -> Result<CrashPoint, String> {
        match text {
            "mid_file" => Ok(CrashPoint::MidFile),
            "after_files" => Ok(CrashPoint::AfterFiles),
            "after_manifest" => Ok(CrashPoint::AfterManifest),
            other => Err(format!(
                "unknown crash point {other:?}: mid_file, after_files or after_manifest"
            )),
        }
    }
}
