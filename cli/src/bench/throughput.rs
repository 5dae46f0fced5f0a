//! `meridian bench produce` and `bench consume`: the broker's throughput and latency through the
//! SDK, sends paced or as fast as acknowledgements allow, pulls from the start of a topic.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use meridian_client::{Admin, ConnectionPool, Message, Producer, ProducerConfig, PullConsumer};
use serde_json::json;
use tokio_util::task::TaskTracker;

use super::disk::{disk_baseline, print_disk};
use super::measure::{micros, new_histogram, progress};
use crate::governance::{ensure_group, ensure_topic};
use crate::target::{ClientTarget, route_source};

/// Arguments of `meridian bench produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceBench {
    /// Topic (created with --queues queues if missing).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Queues of the topic when it is created.
    #[arg(long, default_value_t = 8)]
    queues: u32,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages to send (ignored with --duration).
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Send for this many seconds instead of a count.
    #[arg(long)]
    duration: Option<u64>,
    /// Sends in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Target rate in messages per second, paced evenly (0: as fast as acknowledgements allow).
    /// A send that starts behind its schedule counts its latency from its scheduled time, so a
    /// broker falling behind shows.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Messages per send request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Measure the disk baselines in this directory first (use the broker's data dir).
    #[arg(long)]
    baseline_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: ClientTarget,
}

/// Arguments of `meridian bench consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeBench {
    /// Topic to read.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Stop after this many messages (default: everything there is).
    #[arg(long)]
    count: Option<u64>,
    /// Messages per pull.
    #[arg(long, default_value_t = 256)]
    batch: u32,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: ClientTarget,
}

pub async fn produce(args: ProduceBench) -> Result<()> {
    if args.concurrency == 0 || args.batch == 0 || args.size == 0 {
        bail!("--concurrency, --batch and --size must be at least 1");
    }
    let baseline = match args.baseline_dir.clone() {
        Some(dir) => Some(tokio::task::spawn_blocking(move || disk_baseline(&dir, 256 << 20, 2000)).await??),
        None => None,
    };
    let pool = ConnectionPool::new(crate::credentials::client_config());
    let route = route_source(&args.target, &pool);
    match &args.target.broker {
        Some(broker) => {
            let admin = Admin::new(route.clone(), crate::credentials::client_config());
            let created = admin.create_topic(broker, &args.topic, args.queues).await;
            created.or_else(|error| {
                // An existing topic with another queue count is fine for a benchmark.
                if error.to_string().contains("already exists") {
                    Ok(())
                } else {
                    Err(error)
                }
            })?;
        }
        None => ensure_topic(&args.target.nameservers, &args.topic, args.queues).await?,
    }
    let producer = Producer::new(route, ProducerConfig::default());
    let body = Bytes::from(vec![b'm'; args.size]);
    let target = if args.duration.is_some() {
        None
    } else {
        Some(args.count)
    };
    let deadline = args
        .duration
        .map(|seconds| Instant::now() + Duration::from_secs(seconds));
    let sent = Arc::new(AtomicU64::new(0));
    let claimed = Arc::new(AtomicU64::new(0));
    // With --rate, each send takes the next slot of an even schedule.
    let period_ns = 1_000_000_000u64.checked_div(args.rate).unwrap_or(0);
    let next_slot = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let bar = progress(target, "msgs");
    let tasks = TaskTracker::new();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (producer, body, topic, sent, claimed, failed, next_slot) = (
            producer.clone(),
            body.clone(),
            args.topic.clone(),
            sent.clone(),
            claimed.clone(),
            failed.clone(),
            next_slot.clone(),
        );
        let batch = args.batch as u64;
        workers.push(tasks.spawn(async move {
            let mut histogram = new_histogram();
            let mut error = None;
            loop {
                if failed.load(Ordering::Relaxed) || deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    break;
                }
                let count = match target {
                    Some(target) => {
                        let first = claimed.fetch_add(batch, Ordering::Relaxed);
                        if first >= target {
                            break;
                        }
                        batch.min(target - first)
                    }
                    None => batch,
                };
                let request_started = if period_ns == 0 {
                    Instant::now()
                } else {
                    let slot = next_slot.fetch_add(period_ns * count, Ordering::Relaxed);
                    let scheduled = started + Duration::from_nanos(slot);
                    if scheduled > Instant::now() {
                        // On schedule: time from the wake-up, not counting the timer's lateness
                        // (tokio's timer has 1 ms granularity).
                        tokio::time::sleep_until(scheduled.into()).await;
                        Instant::now()
                    } else {
                        // Behind schedule: the wait for a free sender counts (no coordinated omission).
                        scheduled
                    }
                };
                let result = if count == 1 {
                    producer
                        .send(Message::new(topic.clone(), body.clone()))
                        .await
                        .map(|_| ())
                } else {
                    let messages = (0..count).map(|_| Message::new(topic.clone(), body.clone())).collect();
                    producer.send_batch(messages).await.map(|_| ())
                };
                if let Err(failure) = result {
                    failed.store(true, Ordering::Relaxed);
                    error = Some(failure);
                    break;
                }
                let _ = histogram.record(request_started.elapsed().as_nanos().max(1) as u64);
                sent.fetch_add(count, Ordering::Relaxed);
            }
            (histogram, error)
        }));
    }
    tasks.close();
    let ticker = {
        let (bar, sent) = (bar.clone(), sent.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let handle = tasks.spawn(async move {
            while !stopped.is_cancelled() {
                bar.set_position(sent.load(Ordering::Relaxed));
                tokio::select! { _ = tokio::time::sleep(Duration::from_millis(200)) => {}, _ = stopped.cancelled() => {} }
            }
        });
        (stop, handle)
    };
    let mut histogram = new_histogram();
    let mut first_error = None;
    for worker in workers {
        let (worker_histogram, error) = worker.await?;
        histogram.add(&worker_histogram)?;
        first_error = first_error.or(error);
    }
    let elapsed = started.elapsed();
    ticker.0.cancel();
    ticker.1.await?;
    bar.finish_and_clear();
    producer.shutdown().await;
    pool.shutdown().await;
    if let Some(error) = first_error {
        return Err(error).context("a send failed; the benchmark stopped");
    }
    let total = sent.load(Ordering::Relaxed);
    let rate = total as f64 / elapsed.as_secs_f64();
    let megabytes = rate * args.size as f64 / 1e6;
    let summary = json!({
        "messages": total, "seconds": elapsed.as_secs_f64(), "msgs_per_s": rate, "mb_per_s": megabytes,
        "size": args.size, "batch": args.batch, "concurrency": args.concurrency, "target_rate": args.rate,
        "latency_ms": {"p50": micros(&histogram, 0.5) / 1000.0, "p90": micros(&histogram, 0.9) / 1000.0,
                        "p99": micros(&histogram, 0.99) / 1000.0, "p999": micros(&histogram, 0.999) / 1000.0},
        "baseline": baseline.map(|baseline| json!({
            "sequential_mb_s": baseline.sequential_mb_s,
            "fdatasync_p50_ms": baseline.fdatasync_p50_ms,
            "produce_mb_s_over_sequential": megabytes / baseline.sequential_mb_s,
            "ack_p50_over_fdatasync_p50": micros(&histogram, 0.5) / 1000.0 / baseline.fdatasync_p50_ms,
        })),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "produced {total} messages of {} B in {:.2} s: {rate:.0} msgs/s, {megabytes:.1} MB/s (batch {}, concurrency {})",
            args.size,
            elapsed.as_secs_f64(),
            args.batch,
            args.concurrency
        );
        println!(
            "request latency: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms",
            micros(&histogram, 0.5) / 1000.0,
            micros(&histogram, 0.9) / 1000.0,
            micros(&histogram, 0.99) / 1000.0,
            micros(&histogram, 0.999) / 1000.0
        );
        if let Some(baseline) = baseline {
            print_disk(&baseline, false);
            println!(
                "ratios: produce MB/s / sequential write MB/s = {:.2}; ack p50 / fdatasync p50 = {:.2}",
                megabytes / baseline.sequential_mb_s,
                micros(&histogram, 0.5) / 1000.0 / baseline.fdatasync_p50_ms
            );
        }
    }
    Ok(())
}

/// The consumer group `bench consume` reads with.
const BENCH_GROUP: &str = "meridian-bench";

pub async fn consume(args: ConsumeBench) -> Result<()> {
    let pool = ConnectionPool::new(crate::credentials::client_config());
    if args.target.broker.is_none() {
        ensure_group(&args.target.nameservers, BENCH_GROUP, &args.topic).await?;
    }
    let route = route_source(&args.target, &pool);
    let consumer = Arc::new(PullConsumer::new(
        route,
        crate::credentials::client_config(),
        BENCH_GROUP,
    ));
    let queues = consumer
        .queues(&args.topic)
        .await
        .with_context(|| format!("reading the route of {:?}", args.topic))?;
    let mut available = 0;
    for (_, queue_id) in &queues {
        let (min, max) = consumer.queue_info(&args.topic, *queue_id).await?;
        available += max - min;
    }
    let target = args.count.unwrap_or(available).min(available);
    let bar = progress(Some(target), "msgs");
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let tasks = TaskTracker::new();
    let started = Instant::now();
    let mut workers = Vec::new();
    for (_, queue_id) in queues {
        let (consumer, topic, received, bytes, bar) = (
            consumer.clone(),
            args.topic.clone(),
            received.clone(),
            bytes.clone(),
            bar.clone(),
        );
        let batch = args.batch;
        workers.push(tasks.spawn(async move {
            let mut histogram = new_histogram();
            let (mut offset, max) = consumer.queue_info(&topic, queue_id).await?;
            while offset < max && received.load(Ordering::Relaxed) < target {
                let pull_started = Instant::now();
                let result = consumer.pull(&topic, queue_id, offset, batch, Duration::ZERO).await?;
                let _ = histogram.record(pull_started.elapsed().as_nanos().max(1) as u64);
                let count = result.messages.len() as u64;
                bytes.fetch_add(
                    result.messages.iter().map(|message| message.body.len() as u64).sum(),
                    Ordering::Relaxed,
                );
                received.fetch_add(count, Ordering::Relaxed);
                bar.inc(count);
                if count == 0 {
                    break;
                }
                offset = result.next_offset;
            }
            anyhow::Ok(histogram)
        }));
    }
    tasks.close();
    let mut histogram = new_histogram();
    for worker in workers {
        histogram.add(&worker.await??)?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    consumer.shutdown().await;
    pool.shutdown().await;
    let total = received.load(Ordering::Relaxed);
    let rate = total as f64 / elapsed.as_secs_f64();
    let megabytes = bytes.load(Ordering::Relaxed) as f64 / 1e6 / elapsed.as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({"messages": total, "seconds": elapsed.as_secs_f64(), "msgs_per_s": rate, "mb_per_s": megabytes,
            "pull_latency_ms": {"p50": micros(&histogram, 0.5) / 1000.0, "p99": micros(&histogram, 0.99) / 1000.0, "p999": micros(&histogram, 0.999) / 1000.0}})
        );
    } else {
        println!(
            "consumed {total} messages in {:.2} s: {rate:.0} msgs/s, {megabytes:.1} MB/s of bodies",
            elapsed.as_secs_f64()
        );
        println!(
            "pull latency: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms",
            micros(&histogram, 0.5) / 1000.0,
            micros(&histogram, 0.9) / 1000.0,
            micros(&histogram, 0.99) / 1000.0,
            micros(&histogram, 0.999) / 1000.0
        );
    }
    Ok(())
}
