//! The NATS JetStream driver of `scripts/bench-peers.sh`: publishes `--count` messages of
//! `--size` bytes to a file-store stream, one message per publish, with `--in-flight` publishes
//! awaiting their acks at any time (each of that many tasks publishes, awaits the ack, publishes
//! again), and prints one line: `msgs_per_s=… p50_ms=… p99_ms=… count=…` (ack latency per
//! publish). The same shape as `meridian bench produce --concurrency N --batch 1`.
//!
//! Usage: `nats-driver --url nats://127.0.0.1:4222 --in-flight 64 --count 100000 --size 1024`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use hdrhistogram::Histogram;

struct Args {
    url: String,
    in_flight: usize,
    count: u64,
    size: usize,
    stream: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "nats://127.0.0.1:4222".into(),
        in_flight: 64,
        count: 100_000,
        size: 1024,
        stream: "BENCH".into(),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |value: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} {value}: not a whole number"))
        };
        match flag.as_str() {
            "--url" => args.url = value,
            "--in-flight" => args.in_flight = number(&value)?.max(1) as usize,
            "--count" => args.count = number(&value)?,
            "--size" => args.size = number(&value)? as usize,
            "--stream" => args.stream = value,
            _ => return Err(format!("unknown flag {flag}; flags: --url --in-flight --count --size --stream")),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("nats-driver: {error}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(args).await {
        eprintln!("nats-driver: {error}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = async_nats::connect(&args.url).await?;
    let context = jetstream::new(client);
    let subject = format!("{}.publish", args.stream.to_lowercase());
    // A fresh file-store stream per run, so every run starts from an empty store.
    let _ = context.delete_stream(&args.stream).await;
    context
        .create_stream(stream::Config {
            name: args.stream.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;

    let payload = Bytes::from(vec![b'n'; args.size]);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.in_flight {
        let (context, subject, payload, next, count) =
            (context.clone(), subject.clone(), payload.clone(), next.clone(), args.count);
        workers.spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let sent = Instant::now();
                context.publish(subject.clone(), payload.clone()).await?.await?;
                histogram.record(sent.elapsed().as_micros().max(1) as u64).ok();
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(histogram)
        });
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while let Some(worker) = workers.join_next().await {
        histogram.add(worker??)?;
    }
    let elapsed = started.elapsed().max(Duration::from_micros(1));
    println!(
        "msgs_per_s={:.0} p50_ms={:.3} p99_ms={:.3} count={}",
        histogram.len() as f64 / elapsed.as_secs_f64(),
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.len()
    );
    let _ = context.delete_stream(&args.stream).await;
    Ok(())
}
