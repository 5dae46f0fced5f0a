//! Benchmarks of the storage engine, each next to a plain-file baseline measured in the same run
//! (docs/benchmarks.md explains how to read them).
//!
//! - `append/*`: async flush. One 1 KiB message per append, 32 per append, and a plain
//!   `File::write_all` of the same record-sized bytes (one record, then 32 records, per call).
//! - `sync_flush/*`: sync flush. One round is 64 tasks each appending one message and awaiting
//!   its sync (group commit); the baseline is one 4 KiB append + fdatasync on a plain file.
//!
//! Run with `cargo bench -p meridian-broker --bench store`. Every store lives in a temp dir and is
//! recreated (outside the timed part) once it holds `RESET_AFTER_BYTES`, so disk use stays bounded.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meridian_broker::metrics::BrokerMetrics;
use meridian_broker::store::{FlushMode, MessageStore, StoreConfig};
use meridian_proto::MessageId;
use meridian_proto::messages::MessageData;
use meridian_proto::properties::PropertiesBuilder;
use meridian_proto::record;
use tempfile::TempDir;
use tokio_util::task::TaskTracker;

const TOPIC: &str = "bench";
const BODY_SIZE: usize = 1024;
const BATCH: usize = 32;
const PRODUCERS: usize = 64;
const SEGMENT_SIZE: u64 = 256 << 20;
/// Below the segment size, so no benchmark ever pays for a segment roll inside the timed part.
const RESET_AFTER_BYTES: u64 = 192 << 20;

fn store_host() -> SocketAddr {
    "127.0.0.1:7911".parse().expect("valid address")
}

/// A 1 KiB message carrying a msgId, as the client sends it (so the store does not generate one).
fn message() -> MessageData {
    let mut properties = PropertiesBuilder::new();
    properties.msg_id(&MessageId::generate().to_string());
    MessageData {
        flags: 0,
        born_timestamp: 1_700_000_000_000,
        properties: Bytes::from(properties.finish()),
        body: Bytes::from(vec![b'm'; BODY_SIZE]),
        reconsume_count: 0,
    }
}

/// Bytes one message takes in the commitlog: what the baselines write per message.
fn record_len(message: &MessageData) -> usize {
    record::encoded_len(TOPIC.len(), message.properties.len(), message.body.len())
}

/// A store in its own temp dir, with one single-queue topic, recreated when it gets big.
struct BenchStore {
    flush_mode: FlushMode,
    store: Arc<MessageStore>,
    written: u64,
    // Removed after `store` is shut down (in `drop`) and dropped (fields drop in declaration order).
    _dir: TempDir,
}

impl BenchStore {
    fn open(flush_mode: FlushMode) -> BenchStore {
        let dir = tempfile::Builder::new()
            .prefix("meridian-bench-store")
            .tempdir()
            .expect("creating a temp dir");
        let config = StoreConfig {
            segment_size: SEGMENT_SIZE,
            flush_mode,
            ..StoreConfig::default()
        };
        let store = MessageStore::open(dir.path(), config, store_host(), Arc::new(BrokerMetrics::default()))
            .expect("opening the store");
        store.create_topic(TOPIC, 1).expect("creating the topic");
        BenchStore {
            flush_mode,
            store,
            written: 0,
            _dir: dir,
        }
    }

    /// Recreates the store if it holds `RESET_AFTER_BYTES`. Call outside the timed part.
    fn reset_if_big(&mut self) {
        if self.written >= RESET_AFTER_BYTES {
            // The old store shuts down when it is dropped here.
            *self = BenchStore::open(self.flush_mode);
        }
    }

    fn append(&mut self, messages: &[MessageData], record_len: usize) -> u64 {
        let appended = self
            .store
            .append(TOPIC, Some(0), messages, store_host())
            .expect("append");
        self.written += (record_len * messages.len()) as u64;
        appended.end_offset
    }
}

impl Drop for BenchStore {
    fn drop(&mut self) {
        self.store.shutdown();
    }
}

/// A plain file in its own temp dir, replaced by a new one when it gets big.
struct BaselineFile {
    file: File,
    written: u64,
    _dir: TempDir,
}

impl BaselineFile {
    fn create() -> BaselineFile {
        let dir = tempfile::Builder::new()
            .prefix("meridian-bench-baseline")
            .tempdir()
            .expect("creating a temp dir");
        let file = File::create(dir.path().join("baseline")).expect("creating the baseline file");
        BaselineFile {
            file,
            written: 0,
            _dir: dir,
        }
    }

    /// Starts the file again if it holds `RESET_AFTER_BYTES`. Call outside the timed part.
    fn reset_if_big(&mut self) {
        if self.written >= RESET_AFTER_BYTES {
            *self = BaselineFile::create();
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.file.write_all(bytes).expect("baseline write");
        self.written += bytes.len() as u64;
    }

    fn fdatasync(&self) {
        // SAFETY: plain syscall on an fd we own.
        let result = unsafe { libc::fdatasync(self.file.as_raw_fd()) };
        assert_eq!(result, 0, "fdatasync: {}", std::io::Error::last_os_error());
    }
}

/// Runs `iters` iterations of `step` on `state`, timing only the steps: `reset` runs untimed
/// before each.
fn timed_steps<State>(
    iters: u64,
    state: &mut State,
    mut reset: impl FnMut(&mut State),
    mut step: impl FnMut(&mut State),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        reset(state);
        let started = Instant::now();
        step(state);
        total += started.elapsed();
    }
    total
}

fn append_benches(criterion: &mut Criterion) {
    let message = message();
    let record_len = record_len(&message);
    let batch: Vec<MessageData> = vec![message.clone(); BATCH];
    let single = std::slice::from_ref(&message);
    let one_record = vec![0x5Au8; record_len];
    let batch_records = vec![0x5Au8; record_len * BATCH];

    let mut group = criterion.benchmark_group("append");
    group
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(2))
        .sample_size(20);

    group.throughput(Throughput::Bytes(record_len as u64));
    {
        let mut store = BenchStore::open(FlushMode::Async);
        group.bench_function("unbatched", |bencher| {
            bencher.iter_custom(|iters| {
                timed_steps(iters, &mut store, BenchStore::reset_if_big, |store| {
                    black_box(store.append(single, record_len));
                })
            })
        });
    }
    {
        let mut file = BaselineFile::create();
        group.bench_function("baseline_sequential_write", |bencher| {
            bencher.iter_custom(|iters| {
                timed_steps(iters, &mut file, BaselineFile::reset_if_big, |file| {
                    file.write(&one_record)
                })
            })
        });
    }

    group.throughput(Throughput::Bytes((record_len * BATCH) as u64));
    {
        let mut store = BenchStore::open(FlushMode::Async);
        group.bench_function(format!("batched_{BATCH}"), |bencher| {
            bencher.iter_custom(|iters| {
                timed_steps(iters, &mut store, BenchStore::reset_if_big, |store| {
                    black_box(store.append(&batch, record_len));
                })
            })
        });
    }
    {
        let mut file = BaselineFile::create();
        group.bench_function(format!("baseline_sequential_write_{BATCH}"), |bencher| {
            bencher.iter_custom(|iters| {
                timed_steps(iters, &mut file, BaselineFile::reset_if_big, |file| {
                    file.write(&batch_records)
                })
            })
        });
    }
    group.finish();
}

/// Nearest-rank quantile of durations, in ms.
fn quantile_ms(sorted: &[Duration], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

fn report_latencies(name: &str, latencies: &Mutex<Vec<Duration>>) -> (f64, f64) {
    let mut sorted = std::mem::take(&mut *latencies.lock().expect("latencies lock"));
    sorted.sort_unstable();
    let (p50, p99) = (quantile_ms(&sorted, 0.5), quantile_ms(&sorted, 0.99));
    eprintln!(
        "{name}: {} samples (warm-up included), p50 {p50:.3} ms, p99 {p99:.3} ms",
        sorted.len()
    );
    (p50, p99)
}

fn sync_flush_benches(criterion: &mut Criterion) {
    let message = message();
    let record_len = record_len(&message);
    let block = vec![0xA5u8; 4096];
    // Two workers, like the broker's runtime on the two-core machine of docs/benchmarks.md. The
    // flusher and dispatcher are the store's own threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the runtime");

    let mut group = criterion.benchmark_group("sync_flush");
    group
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(2))
        .sample_size(20);

    // Per round: 64 records. The baseline's 4 KiB per round make its MB/s not comparable; compare
    // the time per round (and the per-ack latencies printed after the run).
    group.throughput(Throughput::Bytes((record_len * PRODUCERS) as u64));
    let ack_latencies = Arc::new(Mutex::new(Vec::new()));
    {
        let mut store = BenchStore::open(FlushMode::Sync);
        group.bench_function(format!("group_commit_{PRODUCERS}"), |bencher| {
            bencher.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    store.reset_if_big();
                    let handle = store.store.clone();
                    let started = Instant::now();
                    runtime.block_on(async {
                        let tasks = TaskTracker::new();
                        for _ in 0..PRODUCERS {
                            let (store, message, latencies) = (handle.clone(), message.clone(), ack_latencies.clone());
                            tasks.spawn(async move {
                                let sent = Instant::now();
                                let appended = store
                                    .append(TOPIC, Some(0), std::slice::from_ref(&message), store_host())
                                    .expect("append");
                                store.wait_flushed(appended.end_offset).await.expect("sync flush");
                                let ack = sent.elapsed();
                                latencies.lock().expect("latencies lock").push(ack);
                            });
                        }
                        tasks.close();
                        tasks.wait().await;
                    });
                    total += started.elapsed();
                    store.written += (record_len * PRODUCERS) as u64;
                }
                total
            })
        });
    }

    group.throughput(Throughput::Bytes(block.len() as u64));
    let fdatasync_latencies = Mutex::new(Vec::new());
    {
        let mut file = BaselineFile::create();
        group.bench_function("baseline_4k_fdatasync", |bencher| {
            bencher.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    file.reset_if_big();
                    let started = Instant::now();
                    file.write(&block);
                    file.fdatasync();
                    let elapsed = started.elapsed();
                    fdatasync_latencies.lock().expect("latencies lock").push(elapsed);
                    total += elapsed;
                }
                total
            })
        });
    }
    group.finish();

    let (ack_p50, _) = report_latencies(&format!("sync_flush/group_commit_{PRODUCERS} ack"), &ack_latencies);
    let (sync_p50, _) = report_latencies("sync_flush/baseline_4k_fdatasync write+fdatasync", &fdatasync_latencies);
    eprintln!(
        "sync_flush: ack p50 / (4 KiB write + fdatasync) p50 = {:.2} (target: at most 2)",
        ack_p50 / sync_p50
    );
}

criterion_group!(benches, append_benches, sync_flush_benches);
criterion_main!(benches);
