//! The broker's own rates and disk use, for the console's Overview and topic pages
//! (`GET /api/broker/stats`, and the `stats` of `GET /api/health`): every [`STATS_INTERVAL`] the
//! [`sample_loop`] reads the counters that exist anyway (messages stored and pulled, each queue's
//! max offset) into a small ring of [`STATS_SAMPLES`] samples, so a rate costs nothing per message.
//! Per-topic put counts are kept only for topics that had traffic in the sample, at most
//! [`STATS_TOPICS_PER_SAMPLE`] of them (the busiest). Every [`DISK_EVERY`] samples it also walks the
//! data directory for the bytes it holds and asks the filesystem (statvfs) for its size and free
//! space.
//!
//! Start at [`BrokerStats::record`] (pure, unit-tested) and [`BrokerStats::report`].

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::metrics::BrokerMetrics;
use crate::store::MessageStore;

/// How often the counters are sampled.
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept: five minutes at [`STATS_INTERVAL`].
pub const STATS_SAMPLES: usize = 150;
/// Topics whose put count one sample keeps at most (the busiest ones).
pub const STATS_TOPICS_PER_SAMPLE: usize = 200;
/// The data directory is walked every this many samples (one minute).
pub const DISK_EVERY: u64 = 30;
/// Samples the one-minute rates average over.
const MINUTE_SAMPLES: usize = (60_000 / STATS_INTERVAL.as_millis()) as usize;

/// Disk use of the broker's data directory and the filesystem holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes allocated on disk by the data directory's files (preallocated segments count whole).
    pub used_bytes: u64,
    /// Bytes free for the broker on the filesystem.
    pub free_bytes: u64,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// When it was measured (Unix ms).
    pub at_ms: u64,
}

/// One sample: what changed since the previous one.
#[derive(Debug, Clone)]
struct Sample {
    at_ms: u64,
    /// Milliseconds since the previous sample.
    span_ms: u64,
    put: u64,
    get: u64,
    /// Messages stored per topic in the span, topics with traffic only.
    topics: Vec<(Arc<str>, u64)>,
}

#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    /// Counter values at the last sample (`None` before the first).
    last: Option<(u64, u64, u64)>,
    /// Each topic's stored count at the last sample.
    topic_totals: HashMap<Arc<str>, u64>,
    disk: Option<DiskUsage>,
}

/// The ring of recent samples; shared by the sampler and the HTTP API.
#[derive(Debug, Default)]
pub struct BrokerStats {
    ring: Mutex<Ring>,
}

fn rate(count: u64, span_ms: u64) -> f64 {
    if span_ms == 0 {
        return 0.0;
    }
    ((count as f64 * 1000.0 / span_ms as f64) * 100.0).round() / 100.0
}

impl BrokerStats {
    /// Records the counters at `at_ms`: messages stored and pulled so far, each topic's stored
    /// count (the sum of its queues' max offsets), and the disk use when it was measured. The
    /// first call only sets the baseline.
    pub fn record<'a>(
        &self,
        at_ms: u64,
        stored: u64,
        pulled: u64,
        topics: impl IntoIterator<Item = (&'a str, u64)>,
        disk: Option<DiskUsage>,
    ) {
        let mut ring = self.ring.lock().expect("stats lock");
        if disk.is_some() {
            ring.disk = disk;
        }
        let mut moved: Vec<(Arc<str>, u64)> = Vec::new();
        for (topic, total) in topics {
            match ring.topic_totals.get_key_value(topic) {
                Some((name, before)) => {
                    if total > *before {
                        moved.push((Arc::clone(name), total - *before));
                    }
                    if total != *before {
                        let name = Arc::clone(name);
                        ring.topic_totals.insert(name, total);
                    }
                }
                None => {
                    let name: Arc<str> = Arc::from(topic);
                    // A topic created since the last sample: its first messages are traffic too.
                    if ring.last.is_some() && total > 0 {
                        moved.push((Arc::clone(&name), total));
                    }
                    ring.topic_totals.insert(name, total);
                }
            }
        }
        moved.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        moved.truncate(STATS_TOPICS_PER_SAMPLE);
        if let Some((last_at, last_stored, last_pulled)) = ring.last {
            let sample = Sample {
                at_ms,
                span_ms: at_ms.saturating_sub(last_at),
                put: stored.saturating_sub(last_stored),
                get: pulled.saturating_sub(last_pulled),
                topics: moved,
            };
            if ring.samples.len() == STATS_SAMPLES {
                ring.samples.pop_front();
            }
            ring.samples.push_back(sample);
        }
        ring.last = Some((at_ms, stored, pulled));
    }

    /// Forgets topics the store no longer has (called by the sampler with the store's list).
    fn retain_topics(&self, exists: impl Fn(&str) -> bool) {
        self.ring
            .lock()
            .expect("stats lock")
            .topic_totals
            .retain(|topic, _| exists(topic));
    }

    /// The summary `GET /api/health` carries: the latest rates, the one-minute rates and the disk.
    pub fn summary(&self) -> Value {
        let ring = self.ring.lock().expect("stats lock");
        summary_of(&ring)
    }

    /// `GET /api/broker/stats`: the summary, every sample's rates, and with `topic` that topic's
    /// put rate per sample (0 where it had no traffic).
    pub fn report(&self, topic: Option<&str>) -> Value {
        let ring = self.ring.lock().expect("stats lock");
        let mut report = summary_of(&ring);
        report["samples"] = ring
            .samples
            .iter()
            .map(|sample| {
                json!({
                    "at_ms": sample.at_ms,
                    "put_tps": rate(sample.put, sample.span_ms),
                    "get_tps": rate(sample.get, sample.span_ms),
                })
            })
            .collect();
        if let Some(topic) = topic {
            let points: Vec<Value> = ring
                .samples
                .iter()
                .map(|sample| {
                    let count = sample
                        .topics
                        .iter()
                        .find(|(name, _)| &**name == topic)
                        .map_or(0, |(_, count)| *count);
                    json!({"at_ms": sample.at_ms, "put_tps": rate(count, sample.span_ms)})
                })
                .collect();
            report["topic"] = json!({
                "name": topic,
                "known": ring.topic_totals.contains_key(topic),
                "samples": points,
            });
        }
        report
    }
}

fn summary_of(ring: &Ring) -> Value {
    let latest = ring.samples.back();
    let minute: Vec<&Sample> = ring.samples.iter().rev().take(MINUTE_SAMPLES).collect();
    let minute_span: u64 = minute.iter().map(|s| s.span_ms).sum();
    let disk = ring.disk.as_ref().map(|disk| {
        json!({
            "used_bytes": disk.used_bytes,
            "free_bytes": disk.free_bytes,
            "total_bytes": disk.total_bytes,
            "at_ms": disk.at_ms,
        })
    });
    json!({
        "interval_ms": STATS_INTERVAL.as_millis() as u64,
        "sampled_at_ms": latest.map(|s| s.at_ms),
        "put_tps": latest.map(|s| rate(s.put, s.span_ms)),
        "get_tps": latest.map(|s| rate(s.get, s.span_ms)),
        "put_tps_1m": latest.map(|_| rate(minute.iter().map(|s| s.put).sum(), minute_span)),
        "get_tps_1m": latest.map(|_| rate(minute.iter().map(|s| s.get).sum(), minute_span)),
        "disk": disk,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Bytes allocated by the files under `dir` (the data directory: a few hundred files, plus a
/// handful per queue).
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total = total.saturating_add(metadata.blocks().saturating_mul(512));
            }
        }
    }
    total
}

/// The data directory's disk use, `None` when the filesystem cannot be read.
pub fn disk_usage(dir: &Path) -> Option<DiskUsage> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a buffer of the right type.
    if unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so it filled the buffer.
    let stats = unsafe { stats.assume_init() };
    // The field types differ between platforms (u64 on 64-bit Linux).
    #[allow(clippy::unnecessary_cast)]
    let (free, total) = (
        (stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64),
        (stats.f_blocks as u64).saturating_mul(stats.f_frsize as u64),
    );
    Some(DiskUsage {
        used_bytes: allocated_bytes(dir),
        free_bytes: free,
        total_bytes: total,
        at_ms: now_ms(),
    })
}

/// One sample of the store's counters (blocking: reads every queue's max offset and, with
/// `disk`, walks the data directory).
fn sample_once(stats: &BrokerStats, metrics: &BrokerMetrics, store: &MessageStore, disk: Option<&Path>) {
    let topics = store.topics();
    let totals: Vec<(&str, u64)> = topics
        .iter()
        .map(|(name, queues)| {
            let total = (0..*queues)
                .filter_map(|queue_id| store.consume_queue(name, queue_id).ok())
                .map(|queue| queue.max_offset())
                .sum();
            (name.as_str(), total)
        })
        .collect();
    let disk = disk.and_then(disk_usage);
    stats.record(
        now_ms(),
        metrics.messages_stored.get(),
        metrics.messages_pulled.get(),
        totals.iter().copied(),
        disk,
    );
    if stats.knows_more_topics_than(topics.len()) {
        let names: std::collections::HashSet<&str> = topics.iter().map(|(name, _)| name.as_str()).collect();
        stats.retain_topics(|topic| names.contains(topic));
    }
}

impl BrokerStats {
    /// Whether a topic was deleted since it was last seen.
    fn knows_more_topics_than(&self, topics: usize) -> bool {
        self.ring.lock().expect("stats lock").topic_totals.len() > topics
    }
}

/// Samples the counters every [`STATS_INTERVAL`] until `stop`; owned by the broker's
/// background tasks (`Broker::run`).
pub async fn sample_loop(
    stats: Arc<BrokerStats>,
    metrics: Arc<BrokerMetrics>,
    store: Arc<MessageStore>,
    data_dir: PathBuf,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(STATS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let with_disk = round.is_multiple_of(DISK_EVERY);
        round += 1;
        let (stats, metrics, store, dir) = (stats.clone(), metrics.clone(), store.clone(), data_dir.clone());
        let sampled = tokio::task::spawn_blocking(move || {
            sample_once(&stats, &metrics, &store, with_disk.then_some(dir.as_path()));
        })
        .await;
        if let Err(error) = sampled {
            tracing::warn!(%error, "stats sample failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_samples_and_only_busy_topics_are_kept() {
        let stats = BrokerStats::default();
        assert!(stats.summary()["put_tps"].is_null(), "no rate from one sample");
        stats.record(10_000, 100, 50, [("orders", 60), ("idle", 40)], None);
        assert!(stats.summary()["put_tps"].is_null());
        stats.record(12_000, 120, 54, [("orders", 80), ("idle", 40), ("new", 3)], None);
        let summary = stats.summary();
        assert_eq!(summary["put_tps"], json!(10.0));
        assert_eq!(summary["get_tps"], json!(2.0));
        assert_eq!(summary["put_tps_1m"], json!(10.0));
        let report = stats.report(Some("orders"));
        assert_eq!(report["topic"]["samples"], json!([{"at_ms": 12_000, "put_tps": 10.0}]));
        assert_eq!(report["samples"].as_array().unwrap().len(), 1);
        let idle = stats.report(Some("idle"));
        assert_eq!(idle["topic"]["samples"][0]["put_tps"], json!(0.0));
        assert_eq!(idle["topic"]["known"], json!(true));
        assert_eq!(stats.report(Some("new"))["topic"]["samples"][0]["put_tps"], json!(1.5));
        let ring = stats.ring.lock().unwrap();
        assert_eq!(
            ring.samples[0].topics.len(),
            2,
            "the idle topic is not kept in the sample"
        );
    }

    #[test]
    fn the_ring_and_the_topics_per_sample_are_bounded() {
        let stats = BrokerStats::default();
        let names: Vec<String> = (0..STATS_TOPICS_PER_SAMPLE + 50).map(|i| format!("t{i}")).collect();
        for round in 0..(STATS_SAMPLES as u64 + 10) {
            stats.record(
                round * 2000,
                round * 10,
                0,
                names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (name.as_str(), round * (i as u64 + 1))),
                None,
            );
        }
        let ring = stats.ring.lock().unwrap();
        assert_eq!(ring.samples.len(), STATS_SAMPLES);
        assert!(ring.samples.iter().all(|s| s.topics.len() == STATS_TOPICS_PER_SAMPLE));
        // The busiest topics are the ones kept.
        assert_eq!(&*ring.samples[0].topics[0].0, names.last().unwrap().as_str());
    }

    #[test]
    fn the_disk_use_of_a_directory_counts_its_files_and_the_filesystem() {
        let dir = std::env::temp_dir().join(format!("meridian-stats-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub").join("f"), vec![7u8; 64 * 1024]).unwrap();
        let usage = disk_usage(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(usage.used_bytes >= 64 * 1024, "{usage:?}");
        assert!(
            usage.total_bytes >= usage.free_bytes && usage.total_bytes > 0,
            "{usage:?}"
        );
    }
}
