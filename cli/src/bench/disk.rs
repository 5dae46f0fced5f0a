//! `meridian bench disk`: the disk baselines (sequential write rate, fdatasync latency) a
//! broker's figures are compared with; `bench produce --baseline-dir` prints them too.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::measure::new_histogram;

/// Arguments of `meridian bench disk`.
#[derive(Debug, clap::Args)]
pub struct DiskBench {
    /// Directory on the disk to measure.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Bytes to write sequentially.
    #[arg(long, default_value_t = 256 << 20)]
    pub bytes: u64,
    /// fdatasync rounds (4 KiB appended before each).
    #[arg(long, default_value_t = 2000)]
    pub syncs: u32,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `meridian bench disk`: measures and prints the baselines.
pub async fn disk(args: DiskBench) -> Result<()> {
    let baseline = tokio::task::spawn_blocking(move || disk_baseline(&args.dir, args.bytes, args.syncs)).await??;
    print_disk(&baseline, args.json);
    Ok(())
}

/// Disk figures the broker's are compared with.
#[derive(Debug, Clone, Copy)]
pub struct DiskBaseline {
    /// Sequential write rate (buffered writes of 1 MiB, one fdatasync at the end), MB/s.
    pub sequential_mb_s: f64,
    /// fdatasync latency after a 4 KiB append, p50 in ms.
    pub fdatasync_p50_ms: f64,
    /// Same, p99.
    pub fdatasync_p99_ms: f64,
}

fn fdatasync(file: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: plain syscall on an fd we own.
    if unsafe { libc::fdatasync(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Measures the disk under `dir`: a plain sequential write of `bytes`, then `syncs` rounds of
/// 4 KiB append + fdatasync.
pub fn disk_baseline(dir: &std::path::Path, bytes: u64, syncs: u32) -> Result<DiskBaseline> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!(".meridian-disk-baseline-{}", std::process::id()));
    let chunk = vec![0x5Au8; 1 << 20];
    let result = (|| -> Result<DiskBaseline> {
        let mut file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let started = Instant::now();
        let mut written = 0u64;
        while written < bytes {
            let len = (bytes - written).min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..len])?;
            written += len as u64;
        }
        fdatasync(&file)?;
        let sequential_mb_s = bytes as f64 / 1e6 / started.elapsed().as_secs_f64();

        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let block = vec![0xA5u8; 4096];
        let mut histogram = new_histogram();
        for _ in 0..syncs {
            file.write_all(&block)?;
            let started = Instant::now();
            fdatasync(&file)?;
            histogram.record(started.elapsed().as_nanos().max(1) as u64)?;
        }
        Ok(DiskBaseline {
            sequential_mb_s,
            fdatasync_p50_ms: histogram.value_at_quantile(0.5) as f64 / 1e6,
            fdatasync_p99_ms: histogram.value_at_quantile(0.99) as f64 / 1e6,
        })
    })();
    let _ = std::fs::remove_file(&path);
    result
}

pub fn print_disk(baseline: &DiskBaseline, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({"sequential_mb_s": baseline.sequential_mb_s, "fdatasync_p50_ms": baseline.fdatasync_p50_ms, "fdatasync_p99_ms": baseline.fdatasync_p99_ms})
        );
    } else {
        println!(
            "disk baseline: sequential write {:.0} MB/s; 4 KiB append + fdatasync p50 {:.3} ms, p99 {:.3} ms",
            baseline.sequential_mb_s, baseline.fdatasync_p50_ms, baseline.fdatasync_p99_ms
        );
    }
}
