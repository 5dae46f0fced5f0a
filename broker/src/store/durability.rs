//! The store's seam to the disk: every call that makes bytes durable (syncing a commitlog
//! segment or consume queue file, syncing a directory, atomically replacing a metadata file)
//! goes through [`Durability`], so a test can stand in a disk that forgets what was not synced.
//!
//! [`RealDisk`] is the production implementation (fdatasync, fsync of the directory, write +
//! fsync + rename). The crash simulator lives in the store's tests (`store/crash_sim.rs`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// How the store makes written bytes durable.
pub trait Durability: Send + Sync + 'static {
    /// Makes the data written to `file` (at `path`) durable: `fdatasync`.
    fn sync_data(&self, path: &Path, file: &File) -> io::Result<()>;
    /// Makes the entries of `dir` (created, renamed, removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Replaces `path` with `bytes` so that a crash leaves either the old or the new content:
    /// write a temp file, sync it, rename it over `path`, sync the directory.
    fn replace_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
}

/// The real disk: `fdatasync`, `fsync` of directories.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealDisk;

impl Durability for RealDisk {
    fn sync_data(&self, _path: &Path, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir).and_then(|handle| handle.sync_all())
    }

    fn replace_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let temp = path.with_extension("tmp");
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        self.sync_dir(dir)
    }
}
