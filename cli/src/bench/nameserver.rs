//! Nameserver benchmarks: route lookups per second, and registering many brokers with many topics
//! (time, bytes, and the steady heartbeat traffic afterwards). Each reports a baseline measured in
//! the same run: lookups against the framed round trip of a request the nameserver refuses at
//! once, registration bytes against the uncompressed topic lists.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use meridian_client::{ClientConfig, ConnectionPool};
use meridian_proto::RequestCode;
use meridian_proto::admin::read::{Query, TopicDetail};
use meridian_proto::admin::{AdminCommand, AdminWrite};
use meridian_proto::admin::{PERM_READ_WRITE, TopicRequest};
use meridian_proto::compress::compress;
use meridian_proto::messages::{
    BrokerHeartbeat, BrokerHeartbeatResponse, BrokerRegistration, TopicList, TopicQueues, TopicRoute,
    TopicRouteRequest, registration_digest, role,
};
use meridian_proto::transport::TransportError;
use prost::Message;
use serde_json::json;
use tokio_util::task::TaskTracker;

use super::measure::{micros, new_histogram, progress};
use crate::nameservers::{NameserverAddrs, NameserverClient};

/// Arguments of `meridian bench routes`.
#[derive(Debug, clap::Args)]
pub struct RoutesBench {
    /// Distinct topics looked up (created and approved on broker group `bench-routes` if missing).
    #[arg(long, default_value_t = 100)]
    topics: u32,
    /// Seconds to run each phase (the baseline, then the lookups).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Requests in flight at once, spread over the nameservers.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    addrs: NameserverAddrs,
}

/// Arguments of `meridian bench registration`.
#[derive(Debug, clap::Args)]
pub struct RegistrationBench {
    /// Broker groups to register (one master each).
    #[arg(long, default_value_t = 100)]
    groups: u32,
    /// Topics in total, spread evenly over the groups.
    #[arg(long, default_value_t = 100_000)]
    topics: u32,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds of steady heartbeats after registering.
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Heartbeat interval of the simulated brokers, in ms (the broker default is 3000).
    #[arg(long, default_value_t = 3000)]
    heartbeat_interval_ms: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    addrs: NameserverAddrs,
}

fn pool() -> ConnectionPool {
    ConnectionPool::new(ClientConfig {
        request_timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    })
}

/// Runs `concurrency` workers for `duration`, each calling `request(worker, n)` in a loop; returns
/// (requests done, per-request latency histogram).
async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    label: &str,
    request: F,
) -> Result<(u64, hdrhistogram::Histogram<u64>, Duration)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let request = Arc::new(request);
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress(None, label);
    let tasks = TaskTracker::new();
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (request, done) = (request.clone(), done.clone());
            tasks.spawn(async move {
                let mut histogram = new_histogram();
                let mut count = 0_u64;
                while Instant::now() < deadline {
                    let began = Instant::now();
                    request(worker, count).await?;
                    let _ = histogram.record(began.elapsed().as_nanos().max(1) as u64);
                    count += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, anyhow::Error>(histogram)
            })
        })
        .collect();
    tasks.close();
    while Instant::now() < deadline {
        bar.set_position(done.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut histogram = new_histogram();
    for worker in workers {
        histogram.add(&worker.await??)?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok((done.load(Ordering::Relaxed), histogram, elapsed))
}

/// `meridian bench routes`.
pub async fn routes(args: RoutesBench) -> Result<()> {
    if args.topics == 0 || args.concurrency == 0 || args.duration == 0 {
        bail!("--topics, --concurrency and --duration must be at least 1");
    }
    let client = NameserverClient::new(&args.addrs)?;
    let setup = progress(Some(u64::from(args.topics)), "topics ready");
    for index in 0..args.topics {
        let name = format!("bench-route-{index}");
        let exists = client
            .read::<TopicDetail>(&Query::Topic { name: name.clone() })
            .await
            .is_ok_and(|detail| detail.topic.is_some());
        if !exists {
            client
                .write(AdminWrite::Command {
                    command: AdminCommand::RequestTopic(TopicRequest {
                        name: name.clone(),
                        owner: "bench".into(),
                        description: String::new(),
                        queues: [("bench-routes".to_owned(), 8)].into(),
                        perm: PERM_READ_WRITE,
                        produce_limit: None,
                        requested_by: "meridian-bench".into(),
                    }),
                })
                .await?;
            client
                .write(AdminWrite::Command {
                    command: AdminCommand::ApproveTopic {
                        name,
                        decided_by: "meridian-bench".into(),
                        reason: None,
                    },
                })
                .await?;
        }
        setup.inc(1);
    }
    setup.finish_and_clear();
    // Every node must have applied the topics before lookups are counted.
    for addr in &args.addrs.nameservers {
        let pool = pool();
        let last = format!("bench-route-{}", args.topics - 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer: Result<TopicRoute, _> = pool
                .call(
                    addr,
                    RequestCode::TopicRoute,
                    &TopicRouteRequest { topic: last.clone() },
                    Duration::from_secs(5),
                )
                .await;
            if answer.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("nameserver {addr} did not apply the benchmark topics within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pool.shutdown().await;
    }

    let addrs = Arc::new(args.addrs.nameservers.clone());
    let duration = Duration::from_secs(args.duration);
    // Baseline: the same round trip, for a request the nameserver refuses without any work.
    let baseline_pool = pool();
    let (baseline_count, baseline_histogram, baseline_elapsed) = {
        let (pool, addrs) = (baseline_pool.clone(), addrs.clone());
        closed_loop(args.concurrency, duration, "refused requests", move |worker, _| {
            let (pool, addrs) = (pool.clone(), addrs.clone());
            async move {
                let addr = &addrs[worker % addrs.len()];
                match pool
                    .request(addr, RequestCode::Pull, Bytes::new(), Duration::from_secs(10))
                    .await
                {
                    Err(TransportError::Remote { .. }) => Ok(()),
                    Ok(_) => bail!("{addr} answered a pull; is it a nameserver?"),
                    Err(error) => Err(error.into()),
                }
            }
        })
        .await?
    };
    baseline_pool.shutdown().await;

    let lookup_pool = pool();
    let topics = args.topics;
    let (count, histogram, elapsed) = {
        let (pool, addrs) = (lookup_pool.clone(), addrs.clone());
        closed_loop(args.concurrency, duration, "route lookups", move |worker, n| {
            let (pool, addrs) = (pool.clone(), addrs.clone());
            async move {
                let addr = &addrs[worker % addrs.len()];
                let topic = format!("bench-route-{}", (worker as u64 * 7919 + n) % u64::from(topics));
                let route: TopicRoute = pool
                    .call(
                        addr,
                        RequestCode::TopicRoute,
                        &TopicRouteRequest { topic },
                        Duration::from_secs(10),
                    )
                    .await
                    .with_context(|| format!("route lookup at {addr}"))?;
                if route.brokers.is_empty() {
                    bail!("{addr} answered an empty route");
                }
                Ok(())
            }
        })
        .await?
    };
    lookup_pool.shutdown().await;
    client.shutdown().await;

    let rate = count as f64 / elapsed.as_secs_f64();
    let baseline_rate = baseline_count as f64 / baseline_elapsed.as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "bench": "routes",
                "nameservers": args.addrs.nameservers,
                "topics": args.topics,
                "concurrency": args.concurrency,
                "lookups": count,
                "lookups_per_sec": rate,
                "p50_us": micros(&histogram, 0.5),
                "p99_us": micros(&histogram, 0.99),
                "baseline_requests_per_sec": baseline_rate,
                "baseline_p50_us": micros(&baseline_histogram, 0.5),
                "ratio_to_baseline": rate / baseline_rate,
            })
        );
    } else {
        println!(
            "route lookups: {count} in {:.1} s = {rate:.0}/s over {} nameservers, concurrency {}; latency p50 {:.0} µs, p99 {:.0} µs",
            elapsed.as_secs_f64(),
            args.addrs.nameservers.len(),
            args.concurrency,
            micros(&histogram, 0.5),
            micros(&histogram, 0.99)
        );
        println!(
            "baseline (refused request, same round trip): {baseline_rate:.0}/s, p50 {:.0} µs; lookups / baseline = {:.2}",
            micros(&baseline_histogram, 0.5),
            rate / baseline_rate
        );
    }
    Ok(())
}

/// One simulated broker: its heartbeat and its compressed registration.
struct SimulatedBroker {
    heartbeat: BrokerHeartbeat,
    registration: Bytes,
    raw_topic_bytes: usize,
}

fn simulated_broker(group: u32, topics_per_group: u32) -> SimulatedBroker {
    let topics: Vec<TopicQueues> = (0..topics_per_group)
        .map(|index| TopicQueues {
            name: format!("bench-g{group:03}-topic-{index:06}"),
            queues: 8,
        })
        .collect();
    let mut heartbeat = BrokerHeartbeat {
        group: format!("bench-group-{group:03}"),
        name: format!("bench-group-{group:03}-0"),
        addr: format!("10.{}.{}.1:7911", group / 250, group % 250),
        idc: if group.is_multiple_of(2) { "dc1" } else { "dc2" }.into(),
        role: role::MASTER,
        epoch: 0,
        max_offset: 0,
        registration_digest: 0,
        in_sync: Vec::new(),
        remoting_addr: String::new(),
        confirmed_offset: 0,
        degraded: String::new(),
        ack_policy: String::new(),
        ack_replicas: 0,
        left_out: Vec::new(),
    };
    heartbeat.registration_digest = registration_digest(&heartbeat, &topics);
    let list = TopicList { topics }.encode_to_vec();
    let registration = BrokerRegistration {
        heartbeat: Some(heartbeat.clone()),
        topics_compressed: Bytes::from(compress(&list)),
    };
    SimulatedBroker {
        heartbeat,
        registration: Bytes::from(registration.encode_to_vec()),
        raw_topic_bytes: list.len(),
    }
}

/// `meridian bench registration`.
pub async fn registration(args: RegistrationBench) -> Result<()> {
    if args.groups == 0 || args.topics < args.groups || args.concurrency == 0 {
        bail!("--groups and --concurrency must be at least 1, and --topics at least --groups");
    }
    let per_group = args.topics / args.groups;
    let brokers: Vec<SimulatedBroker> = (0..args.groups)
        .map(|group| simulated_broker(group, per_group))
        .collect();
    let raw_bytes: usize = brokers.iter().map(|broker| broker.raw_topic_bytes).sum();
    let sent_bytes: usize = brokers.iter().map(|broker| broker.registration.len()).sum();
    let addrs = args.addrs.nameservers.clone();
    let pool = pool();

    // Register every broker with every nameserver, as brokers do.
    let bar = progress(Some(u64::from(args.groups) * addrs.len() as u64), "registrations");
    let started = Instant::now();
    let brokers = Arc::new(brokers);
    let next = Arc::new(AtomicU64::new(0));
    let tasks = TaskTracker::new();
    let total = brokers.len() * addrs.len();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (pool, brokers, next, addrs, bar) =
                (pool.clone(), brokers.clone(), next.clone(), addrs.clone(), bar.clone());
            tasks.spawn(async move {
                let mut latencies = new_histogram();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if index >= total {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    let (broker, addr) = (&brokers[index / addrs.len()], &addrs[index % addrs.len()]);
                    let began = Instant::now();
                    let frame = pool
                        .request(
                            addr,
                            RequestCode::RegisterBroker,
                            broker.registration.clone(),
                            Duration::from_secs(60),
                        )
                        .await
                        .with_context(|| format!("registering {} at {addr}", broker.heartbeat.name))?;
                    let answer = BrokerHeartbeatResponse::decode(frame.body)?;
                    if !answer.registered {
                        bail!("{addr} did not accept the registration of {}", broker.heartbeat.name);
                    }
                    let _ = latencies.record(began.elapsed().as_nanos().max(1) as u64);
                    bar.inc(1);
                }
            })
        })
        .collect();
    tasks.close();
    let mut latencies = new_histogram();
    for worker in workers {
        latencies.add(&worker.await??)?;
    }
    let registration_time = started.elapsed();
    bar.finish_and_clear();

    // Steady state: each broker heartbeats each nameserver once per interval; count the bytes.
    let interval = Duration::from_millis(args.heartbeat_interval_ms.max(100));
    let heartbeat_bytes = Arc::new(AtomicU64::new(0));
    let not_registered = Arc::new(AtomicU64::new(0));
    let steady_until = Instant::now() + Duration::from_secs(args.heartbeat_seconds);
    let beats = TaskTracker::new();
    for index in 0..brokers.len() {
        let (pool, brokers, addrs) = (pool.clone(), brokers.clone(), addrs.clone());
        let (heartbeat_bytes, not_registered) = (heartbeat_bytes.clone(), not_registered.clone());
        beats.spawn(async move {
            // Spread the brokers over the interval, as real ones drift apart.
            tokio::time::sleep(interval.mul_f64(index as f64 / brokers.len() as f64)).await;
            let mut ticker = tokio::time::interval(interval);
            while Instant::now() < steady_until {
                ticker.tick().await;
                let body = Bytes::from(brokers[index].heartbeat.encode_to_vec());
                for addr in addrs.iter() {
                    heartbeat_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    let answer: Result<BrokerHeartbeatResponse, _> = pool
                        .call(
                            addr,
                            RequestCode::BrokerHeartbeat,
                            &brokers[index].heartbeat,
                            Duration::from_secs(10),
                        )
                        .await;
                    if !answer.is_ok_and(|answer| answer.registered) {
                        not_registered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    beats.close();
    let spinner = progress(None, "steady heartbeats");
    while !beats.is_empty() && Instant::now() < steady_until + interval * 2 {
        spinner.tick();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if beats.is_empty() {
            break;
        }
    }
    beats.wait().await;
    spinner.finish_and_clear();
    pool.shutdown().await;
    let steady_seconds = args.heartbeat_seconds.max(1) as f64;
    let heartbeat_rate = heartbeat_bytes.load(Ordering::Relaxed) as f64 / steady_seconds;
    let not_registered = not_registered.load(Ordering::Relaxed);

    let client = NameserverClient::new(&args.addrs)?;
    let groups: Vec<serde_json::Value> = client.read(&Query::Brokers).await?;
    client.shutdown().await;
    let registered_groups = groups
        .iter()
        .filter(|group| {
            group["name"]
                .as_str()
                .is_some_and(|name| name.starts_with("bench-group-"))
        })
        .count();

    if args.json {
        println!(
            "{}",
            json!({
                "bench": "registration",
                "nameservers": addrs,
                "groups": args.groups,
                "topics": per_group * args.groups,
                "registration_seconds": registration_time.as_secs_f64(),
                "registration_p50_ms": micros(&latencies, 0.5) / 1000.0,
                "registration_p99_ms": micros(&latencies, 0.99) / 1000.0,
                "topic_list_bytes_raw": raw_bytes,
                "registration_bytes_sent_per_nameserver": sent_bytes,
                "compression_ratio": raw_bytes as f64 / sent_bytes as f64,
                "heartbeat_bytes_per_sec": heartbeat_rate,
                "heartbeat_interval_ms": interval.as_millis() as u64,
                "heartbeats_not_registered": not_registered,
                "registered_groups": registered_groups,
            })
        );
    } else {
        println!(
            "registered {} broker groups with {} topics at {} nameservers in {:.2} s (per registration p50 {:.1} ms, p99 {:.1} ms)",
            args.groups,
            per_group * args.groups,
            addrs.len(),
            registration_time.as_secs_f64(),
            micros(&latencies, 0.5) / 1000.0,
            micros(&latencies, 0.99) / 1000.0
        );
        println!(
            "topic lists: {raw_bytes} bytes raw, {sent_bytes} bytes sent per nameserver (compressed {:.1}x)",
            raw_bytes as f64 / sent_bytes as f64
        );
        println!(
            "steady heartbeats every {} ms: {heartbeat_rate:.0} bytes/s to all nameservers; {not_registered} asked for a new registration",
            interval.as_millis()
        );
    }
    if registered_groups < args.groups as usize {
        bail!(
            "only {registered_groups} of {} broker groups are registered",
            args.groups
        );
    }
    Ok(())
}
