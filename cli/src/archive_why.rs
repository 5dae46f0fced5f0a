//! Why `meridian archive run` archived nothing: said plainly, with what would change it.
//! Called after a run that found no segment to archive; start at [`nothing_archived`].

use std::path::Path;

/// The reason a run over the commitlog in `commitlog_dir` (segments of `segment_size` bytes)
/// archived nothing, `already` segments being archived before.
pub fn nothing_archived(commitlog_dir: &Path, segment_size: u64, already: usize) -> String {
    let segments = meridian_archive::archiver::list_segments(commitlog_dir).unwrap_or_default();
    let open: Vec<u64> = segments
        .iter()
        .filter(|(_, sealed)| !sealed)
        .map(|(segment, _)| segment.start)
        .collect();
    let open_text = match open.first() {
        Some(start) => format!(
            "the open segment (from commitlog offset {start}) is still being written: a segment is archived only once it is full (segment_size = {segment_size} bytes) and sealed"
        ),
        None => format!("no commitlog segment is in {}", commitlog_dir.display()),
    };
    format!(
        "nothing to archive: {already} sealed segment(s) were archived before; {open_text}; messages not archived yet are still served by the broker, and SQL in `meridian dev` reads them from its live log"
    )
}
