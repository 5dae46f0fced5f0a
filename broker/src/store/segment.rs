//! One pre-allocated commitlog segment file: written with `pwrite`, read through a shared mapping.
//!
//! Writes go through the file, not the mapping: writing mapped pages would fault and zero each
//! fresh page under the writer lock, and make every sync write-protect pages (msync), which cost
//! 3x a plain fdatasync in our benchmarks. The page cache is one, so readers see through the
//! mapping what `pwrite` put there.
//!
//! Readers share the mapping without a lock: the writer only touches bytes at or past the
//! commitlog's published (`committed`) offset, readers only bytes below it, and publication is a
//! Release store that readers Acquire. Recovery writes before any reader exists. That protocol is
//! what makes the `unsafe` slices below sound.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use memmap2::MmapRaw;

use super::durability::Durability;
use crate::error::{BrokerError, Result};

/// A segment file named by the global offset of its first byte.
pub(crate) struct Segment {
    /// Global commitlog offset of byte 0.
    pub start: u64,
    /// Size of the file and the mapping.
    pub len: u64,
    pub path: PathBuf,
    file: File,
    map: MmapRaw,
    disk: Arc<dyn Durability>,
}

/// The file name of the segment starting at `start`: 20 digits, so names sort like offsets.
pub(crate) fn segment_file_name(start: u64) -> String {
    format!("{start:020}")
}

/// Reserves disk blocks so later writes cannot fail for space and do not fragment the file.
fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    // SAFETY: plain syscall on an fd we own; arguments are in range.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        // The filesystem cannot preallocate: a sparse file of the right size still works.
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(len),
        _ => Err(error),
    }
}

impl Segment {
    /// Creates a new zero-filled, preallocated segment.
    pub fn create(disk: &Arc<dyn Durability>, dir: &Path, start: u64, len: u64) -> Result<Segment> {
        let path = dir.join(segment_file_name(start));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(BrokerError::io(format!("creating segment {}", path.display())))?;
        preallocate(&file, len).map_err(BrokerError::io(format!(
            "preallocating {len} bytes for {}",
            path.display()
        )))?;
        let map = MmapRaw::map_raw(&file).map_err(BrokerError::io(format!("mapping {}", path.display())))?;
        crate::store::fsync_dir(disk.as_ref(), dir)?;
        let segment = Segment {
            start,
            len,
            path,
            file,
            map,
            disk: disk.clone(),
        };
        segment.writing();
        Ok(segment)
    }

    /// The writer writes into this segment: no readahead on faults of its mapping. The
    /// dispatcher reads just behind the writer, and readahead past the writer meets the
    /// preallocated (unwritten) extents, which the kernel zero-fills into the page cache: a
    /// quarter of the broker's CPU under produce load. Without it the broker used 12% less CPU per
    /// message and produced 10% more (docs/benchmarks.md). What is read here was just written, so
    /// it is in the page cache anyway. Advice only: where it fails, reads work as before.
    pub fn writing(&self) {
        let _ = self.map.advise(memmap2::Advice::Random);
    }

    /// Opens an existing segment.
    pub fn open(disk: &Arc<dyn Durability>, path: &Path, start: u64) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(BrokerError::io(format!("opening segment {}", path.display())))?;
        let len = file
            .metadata()
            .map_err(BrokerError::io(format!("reading size of {}", path.display())))?
            .len();
        if len == 0 {
            return Err(BrokerError::Corrupt(format!("segment {} is empty", path.display())));
        }
        let map = MmapRaw::map_raw(&file).map_err(BrokerError::io(format!("mapping {}", path.display())))?;
        Ok(Segment {
            start,
            len,
            path: path.to_owned(),
            file,
            map,
            disk: disk.clone(),
        })
    }

    /// The writer moved on to the next segment: reads of this one (consumers catching up, maybe
    /// from disk) get the kernel's normal readahead back.
    pub fn sealed(&self) {
        let _ = self.map.advise(memmap2::Advice::Normal);
    }

    /// Global offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Bytes `[position, position + len)` of this segment.
    ///
    /// # Safety
    /// The range must be below the commitlog's published offset (or the caller must be the only
    /// user of the segment, as in recovery), so no writer touches it while the slice lives.
    pub unsafe fn slice(&self, position: u64, len: usize) -> &[u8] {
        assert!(
            position + len as u64 <= self.len,
            "read past the end of segment {}",
            self.path.display()
        );
        // SAFETY: in bounds (asserted); no concurrent writer by the caller's contract.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(position as usize), len) }
    }

    /// Writes `bytes` at `position` of this segment. Only the appender (holding the writer lock)
    /// calls this, for bytes at or past the published offset.
    pub fn write_at(&self, position: u64, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        assert!(
            position + bytes.len() as u64 <= self.len,
            "write past the end of segment {}",
            self.path.display()
        );
        self.file.write_all_at(bytes, position)
    }

    /// Makes everything written to this segment durable (fdatasync, through the store's
    /// [`Durability`]).
    pub fn sync(&self) -> std::io::Result<()> {
        self.disk.sync_data(&self.path, &self.file)
    }

    /// Zeroes everything from `position` to the end of the segment: a torn write must not be
    /// mistaken for data after the next append. Whole pages are punched out (fast, keeps the
    /// file size) and then reserved again; a filesystem that cannot punch holes gets zeros written.
    ///
    /// Only recovery calls this, before readers exist.
    pub fn zero_from(&self, position: u64) -> Result<()> {
        const PAGE: u64 = 4096;
        let page_end = position.div_ceil(PAGE) * PAGE;
        let head_end = page_end.min(self.len);
        let zero_page = [0u8; PAGE as usize];
        self.write_at(position, &zero_page[..(head_end - position) as usize])
            .map_err(BrokerError::io(format!("zeroing {}", self.path.display())))?;
        if head_end < self.len {
            let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            // SAFETY: plain syscalls on an fd we own, with in-range arguments.
            let punched = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    punch,
                    head_end as libc::off_t,
                    (self.len - head_end) as libc::off_t,
                )
            } == 0;
            if punched {
                // Re-reserve the blocks the hole released; failure only loses the preallocation.
                // SAFETY: as above.
                let _ = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, self.len as libc::off_t) };
            } else {
                let zeros = vec![0u8; 1 << 20];
                let mut at = head_end;
                while at < self.len {
                    let len = ((self.len - at) as usize).min(zeros.len());
                    self.write_at(at, &zeros[..len])
                        .map_err(BrokerError::io(format!("zeroing {}", self.path.display())))?;
                    at += len as u64;
                }
            }
        }
        self.sync()
            .map_err(BrokerError::io(format!("syncing {}", self.path.display())))
    }
}
