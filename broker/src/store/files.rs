//! Small metadata files written atomically: write a temp file, fsync it, rename it over the old
//! one, fsync the directory (through [`Durability::replace_file`]). A crash leaves either the old
//! or the new content, never a mix.

use std::fs;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::durability::Durability;
use crate::error::{BrokerError, Result};

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(crate) fn fsync_dir(disk: &dyn Durability, dir: &Path) -> Result<()> {
    disk.sync_dir(dir)
        .map_err(BrokerError::io(format!("syncing directory {}", dir.display())))
}

/// Writes `value` as JSON to `path` atomically.
pub(crate) fn write_json<T: Serialize>(disk: &dyn Durability, path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().expect("metadata files live in a directory");
    fs::create_dir_all(dir).map_err(BrokerError::io(format!("creating {}", dir.display())))?;
    let bytes = serde_json::to_vec_pretty(value).expect("metadata serializes");
    disk.replace_file(path, &bytes)
        .map_err(BrokerError::io(format!("writing {}", path.display())))
}

/// Reads JSON from `path`; `None` if the file does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| BrokerError::Corrupt(format!("{} is not valid: {error}", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(BrokerError::Io {
            context: format!("reading {}", path.display()),
            source: error,
        }),
    }
}
