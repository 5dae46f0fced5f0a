//! Benchmarks of the storage engine, each next to a plain-file baseline measured in the same run
//! (docs/benchmarks.md explains how to read them).
//!
//! - `append/*`: async flush. One 1 KiB message per append, 32 per append, and a plain
//!   `File::write_all` of the same record-sized bytes (one record, then 32 records, per call).
//! - `sync_flush/*`: group commit. One round is 1, 64 or 1024 tasks each appending one message
//!   and awaiting its acknowledgement, under async flush and then sync flush (the sync that covers
//!   it), in the same run; printed at the end as sync/async ratios, with the 1-writer ack p50
//!   against a 4 KiB append + fdatasync on a plain file (the baseline) plus the async ack p50.
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

/// What the rounds of one group-commit benchmark took: messages acknowledged, time, and each
/// acknowledgement's latency.
#[derive(Default)]
struct Rounds {
    messages: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Rounds {
    fn msgs_per_s(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// One round: `writers` tasks each append one message and await its acknowledgement (under sync
/// flush, the sync that covers it: group commit). Returns the round's time.
fn round(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<MessageStore>,
    message: &MessageData,
    writers: usize,
    latencies: &Arc<Mutex<Vec<Duration>>>,
) -> Duration {
    let started = Instant::now();
    runtime.block_on(async {
        let tasks = TaskTracker::new();
        for _ in 0..writers {
            let (store, message, latencies) = (store.clone(), message.clone(), latencies.clone());
            tasks.spawn(async move {
                let sent = Instant::now();
                let appended = store
                    .append(TOPIC, Some(0), std::slice::from_ref(&message), store_host())
                    .expect("append");
                if store.config().flush_mode == FlushMode::Sync {
                    store.wait_flushed(appended.end_offset).await.expect("sync flush");
                }
                let ack = sent.elapsed();
                latencies.lock().expect("latencies lock").push(ack);
            });
        }
        tasks.close();
        tasks.wait().await;
    });
    started.elapsed()
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
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10);

    // Sync against async with the same writers, measured one after the other in the same run:
    // the ratio is what `flush = "sync"` costs at that concurrency.
    let mut results: Vec<(usize, FlushMode, Rounds)> = Vec::new();
    for writers in WRITERS {
        group.throughput(Throughput::Elements(writers as u64));
        for flush_mode in [FlushMode::Async, FlushMode::Sync] {
            let mut store = BenchStore::open(flush_mode);
            let latencies = Arc::new(Mutex::new(Vec::new()));
            let mut rounds = Rounds::default();
            let name = format!("{}_{writers}_writers", mode_name(flush_mode));
            group.bench_function(&name, |bencher| {
                bencher.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        store.reset_if_big();
                        total += round(&runtime, &store.store, &message, writers, &latencies);
                        store.written += (record_len * writers) as u64;
                    }
                    rounds.messages += iters * writers as u64;
                    rounds.elapsed += total;
                    total
                })
            });
            rounds.latencies = std::mem::take(&mut *latencies.lock().expect("latencies lock"));
            results.push((writers, flush_mode, rounds));
        }
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

    eprintln!("\ngroup commit, same run (warm-up included; a shared machine is noisy: compare ratios, not figures):");
    eprintln!("writers  async msgs/s  sync msgs/s  sync/async  async ack p50 ms  sync ack p50 ms");
    let mut ack_p50 = |writers: usize, flush_mode: FlushMode| -> (f64, f64) {
        let rounds = &mut results
            .iter_mut()
            .find(|(w, mode, _)| *w == writers && *mode == flush_mode)
            .expect("measured")
            .2;
        rounds.latencies.sort_unstable();
        (rounds.msgs_per_s(), quantile_ms(&rounds.latencies, 0.5))
    };
    for writers in WRITERS {
        let (async_rate, async_p50) = ack_p50(writers, FlushMode::Async);
        let (sync_rate, sync_p50) = ack_p50(writers, FlushMode::Sync);
        eprintln!(
            "{writers:>7}  {async_rate:>12.0}  {sync_rate:>11.0}  {:>9.2}x  {async_p50:>16.3}  {sync_p50:>15.3}",
            sync_rate / async_rate
        );
    }
    let (_, async_p50) = ack_p50(1, FlushMode::Async);
    let (_, sync_p50) = ack_p50(1, FlushMode::Sync);
    let (fdatasync_p50, _) = report_latencies("sync_flush/baseline_4k_fdatasync write+fdatasync", &fdatasync_latencies);
    eprintln!(
        "1 writer: sync ack p50 {sync_p50:.3} ms against (4 KiB write + fdatasync) p50 {fdatasync_p50:.3} ms + async ack p50 {async_p50:.3} ms = {:.3} ms ({})",
        fdatasync_p50 + async_p50,
        if sync_p50 <= fdatasync_p50 + async_p50 {
            "within"
        } else {
            "over"
        }
    );
}

/// Concurrent writers of the group-commit benchmarks: one, the 64 and 1024 in flight.
const WRITERS: [usize; 3] = [1, 64, 1024];

fn mode_name(flush_mode: FlushMode) -> &'static str {
    match flush_mode {
        FlushMode::Async => "async",
        FlushMode::Sync => "sync",
    }
}

criterion_group!(benches, append_benches, sync_flush_benches);
criterion_main!(benches);
