//! `meridian bench delay` and `meridian bench retry`: the messaging measurements of issue 6
//! (docs/benchmarks.md, "Messaging").
//!
//! - [`delay`] sends delayed messages at a steady rate (delivery times and delay levels mixed),
//!   consumes them with a push consumer and checks each delivery against its due time: none early,
//!   how late, none lost or doubled.
//! - [`retry`] stores messages once, then consumes them with a fresh group per pass whose handler
//!   fails a given fraction of first deliveries (they come back through `%RETRY%<group>`), and
//!   compares each pass with a pass that fails nothing, in the same run.
//!
//! Every message body starts with the run's id and the message's sequence number, so deliveries
//! are matched to sends exactly and anything left over from an earlier run is told apart.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::MultiProgress;
use meridian_client::{
    Admin, ConnectionPool, ConsumeFrom, ConsumeResult, ConsumerConfig, Message, Producer, ProducerConfig, PushConsumer,
    StoredMessage,
};
use meridian_proto::delay::LEVELS_MS;
use meridian_proto::properties::DELIVER_AT;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::measure::{micros, new_histogram, progress};
use crate::governance::{ensure_group, ensure_topic};
use crate::target::ClientTarget;
use crate::target::route_source;

/// Arguments of `meridian bench delay`.
#[derive(Debug, clap::Args)]
pub struct DelayBench {
    /// Topic (created with --queues queues if missing).
    #[arg(long, default_value = "bench-delay")]
    topic: String,
    /// Queues of the topic when it is created.
    #[arg(long, default_value_t = 8)]
    queues: u32,
    /// Consumer group reading the topic (created if missing).
    #[arg(long, default_value = "meridian-bench-delay")]
    group: String,
    /// Delayed messages to send.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Seconds to spread the sends over, evenly (the rate is count / duration).
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Shortest delay of a message with a delivery time, in ms.
    #[arg(long, default_value_t = 1_000)]
    min_delay_ms: u64,
    /// Longest delay of a message with a delivery time, in ms (uniform between the two).
    #[arg(long, default_value_t = 300_000)]
    max_delay_ms: u64,
    /// Share of the messages sent with a delay level instead of a delivery time (0 to 1).
    #[arg(long, default_value_t = 0.2)]
    level_share: f64,
    /// Delay levels those messages take, in equal shares (1-18 = 1s 5s 10s 30s 1m 2m 3m 4m 5m ...).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,7,8,9")]
    levels: Vec<u32>,
    /// Body size in bytes (at least 28: the run id and sequence number).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Sends in flight at most (each send is one delayed message: they cannot be batched).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to wait past the last due time for deliveries still missing.
    #[arg(long, default_value_t = 60)]
    grace: u64,
    /// Do not report consume-side trace events (the SDK reports them by default).
    #[arg(long)]
    no_trace: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: ClientTarget,
}

/// Arguments of `meridian bench retry`.
#[derive(Debug, clap::Args)]
pub struct RetryBench {
    /// Topic name prefix: each run stores its messages in a new topic PREFIX-RUNID.
    #[arg(long, default_value = "bench-retry")]
    topic_prefix: String,
    /// Queues of the topic.
    #[arg(long, default_value_t = 8)]
    queues: u32,
    /// Messages stored once and consumed by every pass.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Body size in bytes (at least 28).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Fractions of first deliveries the handler fails, one pass each (0 is added as the
    /// baseline when missing).
    #[arg(long, value_delimiter = ',', default_value = "0,0.01,0.1")]
    fail: Vec<f64>,
    /// Times the whole list of passes runs (alternating, so drift shows as scatter, not as a bias).
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Leave out the uncounted pass (failing none) that warms up caches and connections first.
    #[arg(long)]
    no_warmup: bool,
    /// Delay level of the redelivery from the retry topic (1 = 1 s; 0: the broker's back-off,
    /// 10 s for a first retry).
    #[arg(long, default_value_t = 1)]
    retry_delay_level: u32,
    /// Messages per pull of the consumer.
    #[arg(long, default_value_t = 32)]
    pull_batch: u32,
    /// Seconds a pass may take before the benchmark gives up.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Do not report consume-side trace events (the SDK reports them by default).
    #[arg(long)]
    no_trace: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: ClientTarget,
}

/// Bytes of a body taken by the run id (16 hex digits) and sequence number (12 digits).
const BODY_HEADER: usize = 28;

/// The body of message `seq` of run `run`, padded to `size` bytes.
fn encode_body(run: u64, seq: u64, size: usize) -> Bytes {
    let mut body = format!("{run:016x}{seq:012}").into_bytes();
    body.resize(size.max(BODY_HEADER), b'm');
    Bytes::from(body)
}

/// The run id and sequence number a body starts with; `None` for a body not written by a bench.
fn decode_body(body: &[u8]) -> Option<(u64, u64)> {
    let header = std::str::from_utf8(body.get(..BODY_HEADER)?).ok()?;
    let run = u64::from_str_radix(&header[..16], 16).ok()?;
    let seq = header[16..].parse().ok()?;
    Some((run, seq))
}

/// A well-mixed 64-bit hash (splitmix64): the benchmarks' choices of delay and of which messages
/// fail are functions of the sequence number, so they are the same in every run and every pass.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `mix(value)` as a fraction in [0, 1).
fn unit_fraction(value: u64) -> f64 {
    (mix(value) >> 11) as f64 / (1u64 << 53) as f64
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0)
}

fn unix_millis() -> i64 {
    unix_micros() / 1000
}

/// Creates the topic if missing: through the nameservers (requested and approved, as
/// `bench produce` does), or directly on a standalone broker.
async fn ensure_bench_topic(target: &ClientTarget, pool: &ConnectionPool, topic: &str, queues: u32) -> Result<()> {
    match &target.broker {
        Some(broker) => {
            let admin = Admin::new(route_source(target, pool), crate::credentials::client_config());
            match admin.create_topic(broker, topic, queues).await {
                // An existing topic with another queue count is fine for a benchmark.
                Err(error) if !error.to_string().contains("already exists") => Err(error.into()),
                _ => Ok(()),
            }
        }
        None => ensure_topic(&target.nameservers, topic, queues).await,
    }
}

/// Quantiles of a histogram of microseconds, in ms.
fn quantiles_ms(histogram: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": micros(histogram, 0.5),
        "p99": micros(histogram, 0.99),
        "p999": micros(histogram, 0.999),
        "max": histogram.max() as f64 / 1000.0,
        "mean": histogram.mean() / 1000.0,
    })
}

/// Lateness histograms: microseconds up to an hour (a larger value is recorded as an hour).
fn lateness_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Refreshes progress bars every 200 ms until stopped.
fn spawn_ticker(
    tasks: &TaskTracker,
    bars: Vec<(indicatif::ProgressBar, Arc<AtomicU64>)>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let handle = tasks.spawn(async move {
        loop {
            for (bar, value) in &bars {
                bar.set_position(value.load(Ordering::Relaxed));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stopped.cancelled() => break,
            }
        }
        for (bar, value) in &bars {
            bar.set_position(value.load(Ordering::Relaxed));
        }
    });
    (stop, handle)
}

/// How message `seq` of a delay run is delayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlannedDelay {
    /// A delivery time this many ms after the send starts.
    AfterMs(u64),
    /// A delay level.
    Level(u32),
}

fn plan_delay(args: &DelayBench, seq: u64) -> PlannedDelay {
    if unit_fraction(seq) < args.level_share {
        let level = args.levels[(mix(seq ^ 0x5EED) % args.levels.len() as u64) as usize];
        PlannedDelay::Level(level)
    } else {
        let span = args.max_delay_ms - args.min_delay_ms + 1;
        PlannedDelay::AfterMs(args.min_delay_ms + mix(seq ^ 0xDE1A) % span)
    }
}

/// What the consumer of a delay run saw, message by message.
struct DelayTracker {
    run: u64,
    /// Per message, the earliest its delivery may come as the producer knows it (Unix ms): the
    /// delivery time it set, or the start of the send plus the level's delay (the broker counts a
    /// level from when it stores the message, which is later). 0 until the send starts.
    due_floor: Vec<AtomicI64>,
    /// Deliveries per message.
    deliveries_of: Vec<AtomicU32>,
    /// Messages delivered at least once.
    delivered: Arc<AtomicU64>,
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    early: AtomicU64,
    /// Deliveries from another run (a rerun against the same node) or not from a bench at all.
    foreign: AtomicU64,
    /// Deliveries whose due time (the broker's `TIMER_DELIVER_MS`) is missing, differs from the
    /// delivery time sent, or comes before the level's delay counted from the send.
    due_mismatches: AtomicU64,
    /// Lateness at the consumer (µs) and in the store (store time of the delivered copy, ms → µs).
    histograms: Mutex<(Histogram<u64>, Histogram<u64>)>,
    /// The first problems seen, for the report.
    problems: Mutex<Vec<String>>,
}

impl DelayTracker {
    fn new(run: u64, count: u64) -> DelayTracker {
        DelayTracker {
            run,
            due_floor: (0..count).map(|_| AtomicI64::new(0)).collect(),
            deliveries_of: (0..count).map(|_| AtomicU32::new(0)).collect(),
            delivered: Arc::new(AtomicU64::new(0)),
            deliveries: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            early: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            due_mismatches: AtomicU64::new(0),
            histograms: Mutex::new((lateness_histogram(), lateness_histogram())),
            problems: Mutex::new(Vec::new()),
        }
    }

    fn note_problem(&self, problem: String) {
        let mut problems = self.problems.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if problems.len() < 10 {
            problems.push(problem);
        }
    }

    fn record(&self, message: &StoredMessage) {
        let received_us = unix_micros();
        let seq = match decode_body(&message.body) {
            Some((run, seq)) if run == self.run && seq < self.due_floor.len() as u64 => seq as usize,
            _ => {
                self.foreign.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        if self.deliveries_of[seq].fetch_add(1, Ordering::Relaxed) == 0 {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        let floor = self.due_floor[seq].load(Ordering::SeqCst);
        let due_opt = message.property(DELIVER_AT).and_then(|due| due.parse::<i64>().ok());
        let due = match due_opt {
            Some(due) if due >= floor => due,
            _ => {
                self.due_mismatches.fetch_add(1, Ordering::Relaxed);
                self.note_problem(format!(
                    "message {} (seq {seq}): due time {due_opt:?} from the broker, at least {floor} expected",
                    message.msg_id()
                ));
                due_opt.unwrap_or(floor).max(floor)
            }
        };
        let lateness_us = received_us - due * 1000;
        if lateness_us < 0 {
            self.early.fetch_add(1, Ordering::Relaxed);
            self.note_problem(format!(
                "message {} (seq {seq}) received {:.3} ms before its due time {due}",
                message.msg_id(),
                -lateness_us as f64 / 1000.0
            ));
        }
        let stored_lateness_us = (message.store_timestamp - due) * 1000;
        let mut histograms = self.histograms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        histograms.0.saturating_record(lateness_us.max(0) as u64);
        histograms.1.saturating_record(stored_lateness_us.max(0) as u64);
    }
}

/// `meridian bench delay`.
pub async fn delay(args: DelayBench) -> Result<()> {
    if args.count == 0 || args.duration == 0 || args.concurrency == 0 {
        bail!("--count, --duration and --concurrency must be at least 1");
    }
    if args.min_delay_ms < 1 || args.max_delay_ms < args.min_delay_ms {
        bail!("--min-delay-ms must be at least 1 and at most --max-delay-ms");
    }
    if !(0.0..=1.0).contains(&args.level_share) {
        bail!(
            "--level-share {} is not a fraction: give a number from 0 to 1",
            args.level_share
        );
    }
    if args.level_share > 0.0 && args.levels.is_empty() {
        bail!("--levels is empty: give levels (1-18) for the --level-share of messages");
    }
    if let Some(level) = args.levels.iter().find(|level| !(1..=18).contains(*level)) {
        bail!(
            "delay level {level} is invalid: levels are 1 to 18 (1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h)"
        );
    }
    let run = mix(unix_micros() as u64);
    let consumer_pool = ConnectionPool::new(crate::credentials::client_config());
    let producer_pool = ConnectionPool::new(crate::credentials::client_config());
    ensure_bench_topic(&args.target, &producer_pool, &args.topic, args.queues).await?;
    if args.target.broker.is_none() {
        ensure_group(&args.target.nameservers, &args.group, &args.topic).await?;
    }

    let tracker = Arc::new(DelayTracker::new(run, args.count));
    let consumer = {
        let tracker = tracker.clone();
        let config = ConsumerConfig {
            consume_from: ConsumeFrom::Latest,
            trace: !args.no_trace,
            ..ConsumerConfig::new(args.group.clone(), args.topic.clone())
        };
        PushConsumer::start(route_source(&args.target, &consumer_pool), config, move |message| {
            tracker.record(&message);
            async { ConsumeResult::Success }
        })
        .await
        .with_context(|| format!("joining group {:?} on topic {:?}", args.group, args.topic))?
    };

    let producer = Producer::new(route_source(&args.target, &producer_pool), ProducerConfig::default());
    let args = Arc::new(args);
    let period_ns = (args.duration as u128 * 1_000_000_000 / args.count as u128) as u64;
    let claimed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let max_behind_ns = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let bars = MultiProgress::new();
    let sent_bar = bars.add(progress(Some(args.count), "sent"));
    let delivered_bar = bars.add(progress(Some(args.count), "delivered"));
    let tasks = TaskTracker::new();
    let ticker = spawn_ticker(
        &tasks,
        vec![
            (sent_bar.clone(), sent.clone()),
            (delivered_bar.clone(), tracker.delivered.clone()),
        ],
    );
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (producer, args, tracker, claimed, sent, max_behind_ns, failed) = (
            producer.clone(),
            args.clone(),
            tracker.clone(),
            claimed.clone(),
            sent.clone(),
            max_behind_ns.clone(),
            failed.clone(),
        );
        workers.push(tasks.spawn(async move {
            let mut histogram = new_histogram();
            while !failed.load(Ordering::Relaxed) {
                let seq = claimed.fetch_add(1, Ordering::Relaxed);
                if seq >= args.count {
                    break;
                }
                let scheduled = started + Duration::from_nanos(seq * period_ns);
                let now = Instant::now();
                if scheduled > now {
                    tokio::time::sleep_until(scheduled.into()).await;
                } else {
                    max_behind_ns.fetch_max((now - scheduled).as_nanos() as u64, Ordering::Relaxed);
                }
                let send_started = Instant::now();
                let now_ms = unix_millis();
                let message = Message::new(args.topic.clone(), encode_body(tracker.run, seq, args.size));
                let message = match plan_delay(&args, seq) {
                    PlannedDelay::AfterMs(delay_ms) => {
                        let at = now_ms + delay_ms as i64;
                        tracker.due_floor[seq as usize].store(at, Ordering::SeqCst);
                        message.with_deliver_at(at)
                    }
                    PlannedDelay::Level(level) => {
                        let floor = now_ms + LEVELS_MS[level as usize - 1];
                        tracker.due_floor[seq as usize].store(floor, Ordering::SeqCst);
                        message.with_delay_level(level)
                    }
                };
                if let Err(error) = producer.send(message).await {
                    failed.store(true, Ordering::Relaxed);
                    return Err(anyhow::Error::new(error).context(format!("sending delayed message {seq}")));
                }
                let _ = histogram.record(send_started.elapsed().as_nanos().max(1) as u64);
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(histogram)
        }));
    }
    let mut send_latency = new_histogram();
    let mut first_error = None;
    for worker in workers {
        match worker.await? {
            Ok(histogram) => send_latency.add(&histogram)?,
            Err(error) => first_error = first_error.or(Some(error)),
        }
    }
    let produce_seconds = started.elapsed().as_secs_f64();
    producer.shutdown().await;
    producer_pool.shutdown().await;
    let total_sent = sent.load(Ordering::Relaxed);

    // Wait for every message sent, or until the grace period past the last due time is over.
    let last_due_ms = tracker
        .due_floor
        .iter()
        .map(|due| due.load(Ordering::SeqCst))
        .max()
        .unwrap_or(0);
    let give_up_ms = last_due_ms + args.grace as i64 * 1000;
    if first_error.is_none() {
        while tracker.delivered.load(Ordering::Relaxed) < total_sent && unix_millis() < give_up_ms {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let finished_seconds = started.elapsed().as_secs_f64();
    consumer.shutdown().await;
    consumer_pool.shutdown().await;
    ticker.0.cancel();
    ticker.1.await?;
    tasks.close();
    tasks.wait().await;
    sent_bar.finish_and_clear();
    delivered_bar.finish_and_clear();
    if let Some(error) = first_error {
        return Err(error.context("a send failed; the benchmark stopped"));
    }

    let delivered = tracker.delivered.load(Ordering::Relaxed);
    let missing = total_sent - delivered;
    let early = tracker.early.load(Ordering::Relaxed);
    let due_mismatches = tracker.due_mismatches.load(Ordering::Relaxed);
    let (received, stored) = {
        let histograms = tracker
            .histograms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        histograms.clone()
    };
    let within_1s = if received.is_empty() {
        0.0
    } else {
        received.count_between(0, 1_000_000) as f64 / received.len() as f64
    };
    let level_messages = (0..total_sent)
        .filter(|seq| matches!(plan_delay(&args, *seq), PlannedDelay::Level(_)))
        .count();
    let problems = tracker
        .problems
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let summary = json!({
        "messages": total_sent,
        "topic": args.topic,
        "delays": {"min_ms": args.min_delay_ms, "max_ms": args.max_delay_ms, "level_share": args.level_share,
                   "levels": args.levels, "level_messages": level_messages},
        "produce": {
            "seconds": produce_seconds,
            "msgs_per_s": total_sent as f64 / produce_seconds,
            "target_msgs_per_s": args.count as f64 / args.duration as f64,
            "max_behind_schedule_ms": max_behind_ns.load(Ordering::Relaxed) as f64 / 1e6,
            "send_latency_ms": {"p50": micros(&send_latency, 0.5) / 1000.0, "p99": micros(&send_latency, 0.99) / 1000.0,
                                "max": send_latency.max() as f64 / 1e6},
        },
        "run_seconds": finished_seconds,
        "delivered": delivered,
        "deliveries": tracker.deliveries.load(Ordering::Relaxed),
        "early": early,
        "duplicates": tracker.duplicates.load(Ordering::Relaxed),
        "missing": missing,
        "foreign": tracker.foreign.load(Ordering::Relaxed),
        "due_mismatches": due_mismatches,
        "lateness_ms": quantiles_ms(&received),
        "stored_lateness_ms": quantiles_ms(&stored),
        "within_1s": within_1s,
        "problems": problems,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "sent {total_sent} delayed messages in {produce_seconds:.1} s: {:.0} msgs/s (target {:.0}); send p50 {:.3} ms, p99 {:.3} ms; at most {:.1} ms behind schedule",
            total_sent as f64 / produce_seconds,
            args.count as f64 / args.duration as f64,
            micros(&send_latency, 0.5) / 1000.0,
            micros(&send_latency, 0.99) / 1000.0,
            max_behind_ns.load(Ordering::Relaxed) as f64 / 1e6,
        );
        println!(
            "delays: {level_messages} by level ({:?}), the others at a time {}..{} ms ahead",
            args.levels, args.min_delay_ms, args.max_delay_ms
        );
        println!(
            "delivered {delivered} of {total_sent} ({} deliveries): early {early}, duplicates {}, missing {missing}, due-time mismatches {due_mismatches}, from other runs {}",
            tracker.deliveries.load(Ordering::Relaxed),
            tracker.duplicates.load(Ordering::Relaxed),
            tracker.foreign.load(Ordering::Relaxed),
        );
        for (name, histogram) in [("received", &received), ("stored", &stored)] {
            println!(
                "lateness ({name} - due): p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms, max {:.1} ms",
                micros(histogram, 0.5),
                micros(histogram, 0.99),
                micros(histogram, 0.999),
                histogram.max() as f64 / 1000.0
            );
        }
        println!("received within 1 s of the due time: {:.4}%", within_1s * 100.0);
        for problem in &problems {
            println!("problem: {problem}");
        }
    }
    if early > 0 || missing > 0 || due_mismatches > 0 {
        bail!(
            "delayed delivery failed its checks: {early} early, {missing} missing, {due_mismatches} with a wrong due time"
        );
    }
    Ok(())
}

/// One consuming pass of a retry run.
struct RetryPass {
    run: u64,
    fail_fraction: f64,
    /// Whether a first delivery (reconsume count 0) of each message was seen.
    first_seen: Vec<AtomicBool>,
    /// Whether each message was handled successfully.
    succeeded: Vec<AtomicBool>,
    first_deliveries: AtomicU64,
    successes: Arc<AtomicU64>,
    deliveries: AtomicU64,
    failed: AtomicU64,
    /// Deliveries of a message already handled successfully.
    duplicates: AtomicU64,
    foreign: AtomicU64,
    /// First delivery, last first delivery, last success.
    times: Mutex<PassTimes>,
}

#[derive(Debug, Default, Clone, Copy)]
struct PassTimes {
    first_delivery: Option<Instant>,
    first_pass_done: Option<Instant>,
    all_done: Option<Instant>,
}

/// Whether the handler fails the first delivery of message `seq` at `fraction`. The failing set
/// at 1% is part of the one at 10%, and the same in every round.
fn fails_first_delivery(seq: u64, fraction: f64) -> bool {
    unit_fraction(seq ^ 0xFA11) < fraction
}

impl RetryPass {
    fn new(run: u64, count: u64, fail_fraction: f64) -> RetryPass {
        RetryPass {
            run,
            fail_fraction,
            first_seen: (0..count).map(|_| AtomicBool::new(false)).collect(),
            succeeded: (0..count).map(|_| AtomicBool::new(false)).collect(),
            first_deliveries: AtomicU64::new(0),
            successes: Arc::new(AtomicU64::new(0)),
            deliveries: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            times: Mutex::new(PassTimes::default()),
        }
    }

    fn times(&self) -> std::sync::MutexGuard<'_, PassTimes> {
        self.times.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn handle(&self, message: &StoredMessage) -> ConsumeResult {
        let now = Instant::now();
        let count = self.first_seen.len() as u64;
        let seq = match decode_body(&message.body) {
            Some((run, seq)) if run == self.run && seq < count => seq,
            _ => {
                self.foreign.fetch_add(1, Ordering::Relaxed);
                return ConsumeResult::Success;
            }
        };
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        self.times().first_delivery.get_or_insert(now);
        let first = message.reconsume_count == 0;
        if first
            && !self.first_seen[seq as usize].swap(true, Ordering::Relaxed)
            && self.first_deliveries.fetch_add(1, Ordering::Relaxed) + 1 == count
        {
            self.times().first_pass_done = Some(now);
        }
        if first && fails_first_delivery(seq, self.fail_fraction) {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return ConsumeResult::Retry;
        }
        if self.succeeded[seq as usize].swap(true, Ordering::Relaxed) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else if self.successes.fetch_add(1, Ordering::Relaxed) + 1 == count {
            self.times().all_done = Some(now);
        }
        ConsumeResult::Success
    }
}

/// The figures of one pass.
#[derive(Debug, Clone)]
struct PassResult {
    round: u32,
    fail_fraction: f64,
    group: String,
    failed: u64,
    deliveries: u64,
    duplicates: u64,
    foreign: u64,
    first_pass_seconds: f64,
    all_consumed_seconds: f64,
}

impl PassResult {
    fn first_pass_msgs_per_s(&self, count: u64) -> f64 {
        count as f64 / self.first_pass_seconds
    }
}

async fn run_retry_pass(
    args: &RetryBench,
    run: u64,
    topic: &str,
    group: String,
    round: u32,
    fail_fraction: f64,
) -> Result<PassResult> {
    if args.target.broker.is_none() {
        ensure_group(&args.target.nameservers, &group, topic).await?;
    }
    let pass = Arc::new(RetryPass::new(run, args.count, fail_fraction));
    let pool = ConnectionPool::new(crate::credentials::client_config());
    let config = ConsumerConfig {
        consume_from: ConsumeFrom::Earliest,
        retry_delay_level: args.retry_delay_level,
        pull_batch: args.pull_batch,
        trace: !args.no_trace,
        ..ConsumerConfig::new(group.clone(), topic.to_owned())
    };
    let bar = progress(
        Some(args.count),
        &format!("consumed, {:.1}% failing", fail_fraction * 100.0),
    );
    let tasks = TaskTracker::new();
    let ticker = spawn_ticker(&tasks, vec![(bar.clone(), pass.successes.clone())]);
    let handler_pass = pass.clone();
    let consumer = PushConsumer::start(route_source(&args.target, &pool), config, move |message| {
        let result = handler_pass.handle(&message);
        async move { result }
    })
    .await
    .with_context(|| format!("joining group {group:?} on topic {topic:?}"));
    let waited = match consumer {
        Ok(consumer) => {
            let deadline = Instant::now() + Duration::from_secs(args.timeout);
            while pass.successes.load(Ordering::Relaxed) < args.count && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            consumer.shutdown().await;
            Ok(())
        }
        Err(error) => Err(error),
    };
    pool.shutdown().await;
    ticker.0.cancel();
    ticker.1.await?;
    tasks.close();
    tasks.wait().await;
    bar.finish_and_clear();
    waited?;
    let times = *pass.times();
    let (Some(first_delivery), Some(first_pass_done), Some(all_done)) =
        (times.first_delivery, times.first_pass_done, times.all_done)
    else {
        bail!(
            "pass at {:.1}% failing: {} of {} messages consumed within {} s (--timeout)",
            fail_fraction * 100.0,
            pass.successes.load(Ordering::Relaxed),
            args.count,
            args.timeout
        );
    };
    Ok(PassResult {
        round,
        fail_fraction,
        group,
        failed: pass.failed.load(Ordering::Relaxed),
        deliveries: pass.deliveries.load(Ordering::Relaxed),
        duplicates: pass.duplicates.load(Ordering::Relaxed),
        foreign: pass.foreign.load(Ordering::Relaxed),
        first_pass_seconds: (first_pass_done - first_delivery).as_secs_f64(),
        all_consumed_seconds: (all_done - first_delivery).as_secs_f64(),
    })
}

/// Stores `count` messages in `topic`, 32 per request, 16 requests in flight.
async fn store_messages(args: &RetryBench, run: u64, topic: &str) -> Result<f64> {
    const BATCH: u64 = 32;
    let pool = ConnectionPool::new(crate::credentials::client_config());
    let producer = Producer::new(route_source(&args.target, &pool), ProducerConfig::default());
    let claimed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let bar = progress(Some(args.count), "stored");
    let tasks = TaskTracker::new();
    let ticker = spawn_ticker(&tasks, vec![(bar.clone(), sent.clone())]);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (producer, claimed, sent, topic) = (producer.clone(), claimed.clone(), sent.clone(), topic.to_owned());
        let (count, size) = (args.count, args.size);
        workers.push(tasks.spawn(async move {
            loop {
                let first = claimed.fetch_add(BATCH, Ordering::Relaxed);
                if first >= count {
                    return anyhow::Ok(());
                }
                let messages: Vec<Message> = (first..(first + BATCH).min(count))
                    .map(|seq| Message::new(topic.clone(), encode_body(run, seq, size)))
                    .collect();
                let len = messages.len() as u64;
                producer.send_batch(messages).await.context("storing the messages")?;
                sent.fetch_add(len, Ordering::Relaxed);
            }
        }));
    }
    let mut result = Ok(());
    for worker in workers {
        result = result.and(worker.await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    ticker.0.cancel();
    ticker.1.await?;
    tasks.close();
    tasks.wait().await;
    bar.finish_and_clear();
    producer.shutdown().await;
    pool.shutdown().await;
    result.map(|()| args.count as f64 / seconds)
}

/// `meridian bench retry`.
pub async fn retry(mut args: RetryBench) -> Result<()> {
    if args.count == 0 || args.rounds == 0 || args.pull_batch == 0 {
        bail!("--count, --rounds and --pull-batch must be at least 1");
    }
    if let Some(fraction) = args.fail.iter().find(|fraction| !(0.0..1.0).contains(*fraction)) {
        bail!("--fail {fraction} is not a fraction below 1: give numbers from 0 to 0.99");
    }
    if args.retry_delay_level > 18 {
        bail!(
            "--retry-delay-level {} is invalid: 0 (the broker's back-off) or a level 1 to 18",
            args.retry_delay_level
        );
    }
    if !args.fail.contains(&0.0) {
        args.fail.insert(0, 0.0);
    }
    let run = mix(unix_micros() as u64);
    // A topic of its own per run: earlier runs' messages would be consumed by every pass too.
    let run_id = format!("{:x}", unix_millis());
    let topic = format!("{}-{run_id}", args.topic_prefix);
    {
        let pool = ConnectionPool::new(crate::credentials::client_config());
        let created = ensure_bench_topic(&args.target, &pool, &topic, args.queues).await;
        pool.shutdown().await;
        created?;
    }
    let store_rate = store_messages(&args, run, &topic).await?;
    let warmup = if args.no_warmup {
        None
    } else {
        let group = format!("meridian-bench-retry-{run_id}-warmup");
        let pass = run_retry_pass(&args, run, &topic, group, 0, 0.0).await?;
        if !args.json {
            eprintln!(
                "warm-up pass (not counted): {:.2} s ({:.0} msgs/s)",
                pass.first_pass_seconds,
                pass.first_pass_msgs_per_s(args.count)
            );
        }
        Some(pass.first_pass_msgs_per_s(args.count))
    };
    let mut passes = Vec::new();
    for round in 1..=args.rounds {
        for (index, fraction) in args.fail.iter().enumerate() {
            let group = format!("meridian-bench-retry-{run_id}-{round}-{index}");
            let pass = run_retry_pass(&args, run, &topic, group, round, *fraction).await?;
            if !args.json {
                eprintln!(
                    "round {round}, {:.1}% failing: first pass {:.2} s ({:.0} msgs/s), all consumed after {:.2} s, {} failed",
                    fraction * 100.0,
                    pass.first_pass_seconds,
                    pass.first_pass_msgs_per_s(args.count),
                    pass.all_consumed_seconds,
                    pass.failed
                );
            }
            passes.push(pass);
        }
    }

    // Medians over the rounds: one pass slowed by something else on the machine moves a mean.
    let median = |fraction: f64, figure: &dyn Fn(&PassResult) -> f64| {
        let mut of: Vec<f64> = passes
            .iter()
            .filter(|pass| pass.fail_fraction == fraction)
            .map(figure)
            .collect();
        of.sort_by(f64::total_cmp);
        match of.len() {
            0 => f64::NAN,
            len if len % 2 == 1 => of[len / 2],
            len => (of[len / 2 - 1] + of[len / 2]) / 2.0,
        }
    };
    let count = args.count;
    let base_rate = median(0.0, &|pass| pass.first_pass_msgs_per_s(count));
    let base_first = median(0.0, &|pass| pass.first_pass_seconds);
    let base_total = median(0.0, &|pass| pass.all_consumed_seconds);
    let summary: Vec<serde_json::Value> = args
        .fail
        .iter()
        .map(|fraction| {
            let rate = median(*fraction, &|pass| pass.first_pass_msgs_per_s(count));
            let first = median(*fraction, &|pass| pass.first_pass_seconds);
            let total = median(*fraction, &|pass| pass.all_consumed_seconds);
            let failed = median(*fraction, &|pass| pass.failed as f64);
            json!({
                "fail_fraction": fraction,
                "failed": failed,
                "first_pass_msgs_per_s": rate,
                "first_pass_ratio": rate / base_rate,
                "all_consumed_seconds": total,
                "all_consumed_ratio": total / base_total,
                "added_ms_per_failure": if failed > 0.0 { json!((first - base_first) * 1000.0 / failed) } else { json!(null) },
            })
        })
        .collect();
    if args.json {
        let passes: Vec<serde_json::Value> = passes
            .iter()
            .map(|pass| {
                json!({
                    "round": pass.round, "fail_fraction": pass.fail_fraction, "group": pass.group,
                    "failed": pass.failed, "deliveries": pass.deliveries, "duplicates": pass.duplicates,
                    "foreign": pass.foreign, "first_pass_seconds": pass.first_pass_seconds,
                    "first_pass_msgs_per_s": pass.first_pass_msgs_per_s(count),
                    "all_consumed_seconds": pass.all_consumed_seconds,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "messages": count, "size": args.size, "topic": topic, "queues": args.queues,
                "retry_delay_level": args.retry_delay_level, "pull_batch": args.pull_batch,
                "store_msgs_per_s": store_rate, "warmup_msgs_per_s": warmup, "consumer_trace": !args.no_trace,
                "passes": passes, "summary": "medians over the rounds", "medians": summary,
            })
        );
    } else {
        println!(
            "{count} messages of {} B in {topic} ({} queues; stored at {store_rate:.0} msgs/s); retry delay level {}, pull batch {}, consume-side tracing {}; medians over {} round(s)",
            args.size,
            args.queues,
            args.retry_delay_level,
            args.pull_batch,
            if args.no_trace { "off" } else { "on" },
            args.rounds
        );
        println!("failing  failed  first pass msgs/s  ratio  all consumed s  ratio  added ms per failure");
        for row in &summary {
            println!(
                "{:>6.1}%  {:>6.0}  {:>17.0}  {:>5.3}  {:>14.2}  {:>5.2}  {}",
                row["fail_fraction"].as_f64().unwrap_or_default() * 100.0,
                row["failed"].as_f64().unwrap_or_default(),
                row["first_pass_msgs_per_s"].as_f64().unwrap_or_default(),
                row["first_pass_ratio"].as_f64().unwrap_or_default(),
                row["all_consumed_seconds"].as_f64().unwrap_or_default(),
                row["all_consumed_ratio"].as_f64().unwrap_or_default(),
                row["added_ms_per_failure"]
                    .as_f64()
                    .map_or("-".to_owned(), |ms| format!("{ms:.3}")),
            );
        }
        let duplicates: u64 = passes.iter().map(|pass| pass.duplicates).sum();
        println!("duplicate deliveries over all passes: {duplicates}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_run_and_sequence() {
        let body = encode_body(0xABCD_EF01_2345_6789, 42, 64);
        assert_eq!(body.len(), 64);
        assert_eq!(decode_body(&body), Some((0xABCD_EF01_2345_6789, 42)));
        assert_eq!(encode_body(1, 2, 3).len(), BODY_HEADER);
        assert_eq!(decode_body(b"not a bench body at all, really"), None);
        assert_eq!(decode_body(b"short"), None);
    }

    #[test]
    fn failing_sets_nest_and_have_the_asked_size() {
        let count = 100_000u64;
        let at = |fraction| (0..count).filter(|seq| fails_first_delivery(*seq, fraction)).count() as f64 / count as f64;
        assert_eq!(at(0.0), 0.0);
        assert!((at(0.01) - 0.01).abs() < 0.002, "{}", at(0.01));
        assert!((at(0.1) - 0.1).abs() < 0.005, "{}", at(0.1));
        assert!((0..count).all(|seq| !fails_first_delivery(seq, 0.01) || fails_first_delivery(seq, 0.1)));
    }

    #[test]
    fn lateness_histogram_takes_zero_and_saturates() {
        let mut histogram = lateness_histogram();
        histogram.saturating_record(0);
        histogram.saturating_record(u64::MAX);
        assert_eq!(histogram.len(), 2);
        assert!(histogram.max() >= 3_600_000_000);
    }
}
