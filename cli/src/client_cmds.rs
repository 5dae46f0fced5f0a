//! Client commands: `produce`, `consume`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use meridian_client::{
    ConnectionPool, ConsumeFrom, ConsumeMode, ConsumeResult, ConsumerConfig, Deployment, IdcSettings, Message,
    Producer, ProducerConfig, PushConsumer, TransactionCheckView, TransactionListener, TransactionOutcome,
    TransactionProducer, TransactionProducerConfig,
};
use meridian_proto::record::StoredMessage;
use meridian_proto::time::format_millis;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::target::{ClientTarget, route_source};

/// How `produce` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendMode {
    /// Wait for each acknowledgement.
    Sync,
    /// Pipeline sends and collect acknowledgements as they come.
    Async,
    /// Fire and forget: no acknowledgement.
    Oneway,
}

/// How `produce --transaction` ends each transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransactionEnd {
    /// Deliver the message.
    Commit,
    /// Discard it.
    Rollback,
    /// Leave it undecided: the broker checks back with the producer group (see docs/transactions.md).
    Unknown,
}

impl TransactionEnd {
    fn outcome(self) -> TransactionOutcome {
        match self {
            TransactionEnd::Commit => TransactionOutcome::Commit,
            TransactionEnd::Rollback => TransactionOutcome::Rollback,
            TransactionEnd::Unknown => TransactionOutcome::Unknown,
        }
    }
}

/// Arguments of `meridian produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic to send to.
    #[arg(long)]
    topic: String,
    /// Message key (repeat for several).
    #[arg(long = "key")]
    keys: Vec<String>,
    /// Message tag.
    #[arg(long)]
    tag: Option<String>,
    /// How to send.
    #[arg(long, value_enum, default_value = "sync")]
    mode: SendMode,
    /// The body of a single message; without it, each line of stdin is one message.
    #[arg(long)]
    body: Option<String>,
    /// Deliver after a delay level: 1-18 = 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h.
    #[arg(long, conflicts_with_all = ["deliver_at", "delay"])]
    delay_level: Option<u32>,
    /// Deliver after this long: 5s, 1m30s, 500ms, 2h, 1d (at most 30 days, as the SDK's `with_delay`).
    #[arg(long, conflicts_with = "deliver_at")]
    delay: Option<String>,
    /// Deliver at this time: Unix ms, RFC 3339 UTC (2026-11-25T18:30:00Z) or +DURATION from now
    /// (+5s), at most 30 days ahead.
    #[arg(long)]
    deliver_at: Option<String>,
    /// Ordered message: messages with the same sharding key go to the same queue, in order.
    #[arg(long)]
    sharding_key: Option<String>,
    /// Send each message as a transactional half message, then commit it, roll it back, or leave
    /// it undecided (`unknown`: the broker checks back with --producer-group, and rolls it back
    /// after its `check_max` checks unless a running member of that group decides).
    #[arg(long, value_enum, conflicts_with = "sharding_key")]
    transaction: Option<TransactionEnd>,
    /// Producer group of transactional messages: whom the broker asks about undecided ones.
    #[arg(long, default_value = "meridian-cli", requires = "transaction")]
    producer_group: String,
    #[command(flatten)]
    idc: IdcArgs,
    #[command(flatten)]
    target: ClientTarget,
}

/// Where a client's data center comes from (see docs/near-by.md).
#[derive(Debug, Clone, clap::Args)]
pub struct IdcArgs {
    /// This client's data center (MERIDIAN_IDC wins; else the IDC file, else the IDC map).
    #[arg(long)]
    idc: Option<String>,
    /// The IDC file written at provisioning.
    #[arg(long, default_value = meridian_client::proto::idc::DEFAULT_IDC_FILE)]
    idc_file: std::path::PathBuf,
}

impl IdcArgs {
    fn settings(&self) -> IdcSettings {
        IdcSettings {
            idc: self.idc.clone().unwrap_or_default(),
            // The default path may be absent without a warning; a path given must exist.
            file: (self.idc_file.as_os_str() != meridian_client::proto::idc::DEFAULT_IDC_FILE)
                .then(|| self.idc_file.clone()),
            ip: None,
        }
    }
}

/// Arguments of `meridian consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topic to consume.
    #[arg(long)]
    topic: String,
    /// Consumer group: members share the topic's queues, and the group's offsets are kept.
    #[arg(long)]
    group: String,
    /// Start from the oldest message when the group has no committed offset (default: newest).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this many seconds without a message.
    #[arg(long)]
    timeout: Option<u64>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// How the group spans data centers: `single-side` (queues of a data center without
    /// consumers are shared by all) or `dual-side` (each side consumes only its own).
    #[arg(long, default_value = "single-side")]
    deployment: Deployment,
    /// Only messages with these tags: '*' (default) or tags joined by '||', e.g. 'TagA || TagB'.
    #[arg(long, default_value = "*")]
    tag: String,
    /// Orderly: one member per queue (a broker-side lock), in order, failures retried in place.
    #[arg(long)]
    orderly: bool,
    /// Broadcasting: this member gets every message, with offsets of its own (the group must be
    /// created with --broadcasting; give the member a stable --client-id to resume after a restart).
    #[arg(long)]
    broadcasting: bool,
    /// This member's id in the group (default: host@pid@random).
    #[arg(long)]
    client_id: Option<String>,
    #[command(flatten)]
    idc: IdcArgs,
    #[command(flatten)]
    target: ClientTarget,
}

/// When to deliver, from `--delay DURATION` or `--deliver-at TIME|+DURATION`: relative delays
/// are checked by the same rule as the SDK's `with_delay`, from the time of the command.
fn deliver_at(args: &ProduceArgs) -> Result<Option<i64>> {
    let relative = match (&args.delay, &args.deliver_at) {
        (Some(delay), _) => Some(delay.as_str()),
        (None, Some(at)) if at.trim_start().starts_with('+') => Some(at.as_str()),
        (None, Some(at)) => {
            let at =
                meridian_tracer::http::parse_time("--deliver-at", at).map_err(|error| anyhow::anyhow!("{error}"))?;
            return Ok(Some(at));
        }
        (None, None) => None,
    };
    let Some(relative) = relative else {
        return Ok(None);
    };
    let delay_ms = meridian_proto::delay::parse_delay(relative)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64);
    Ok(Some(now_ms + delay_ms))
}

fn build_message(args: &ProduceArgs, body: String, deliver_at: Option<i64>) -> Message {
    let mut message = Message::new(args.topic.clone(), Bytes::from(body)).with_keys(args.keys.clone());
    if let Some(tag) = &args.tag {
        message = message.with_tag(tag.clone());
    }
    if let Some(level) = args.delay_level {
        message = message.with_delay_level(level);
    }
    if let Some(at) = deliver_at {
        message = message.with_deliver_at(at);
    }
    message
}

/// The local "transaction" of `produce --transaction`: the outcome given on the command line.
struct CommandLineTransaction {
    outcome: TransactionOutcome,
}

impl TransactionListener for CommandLineTransaction {
    async fn execute(&self, _message: &Message) -> TransactionOutcome {
        self.outcome
    }

    // Never asked: this producer does not poll for check-backs (see `produce`). Were it asked, it
    // would know nothing: a check may be about any member's transaction.
    async fn check(&self, _check: &TransactionCheckView) -> TransactionOutcome {
        TransactionOutcome::Unknown
    }
}

/// What `produce` sends with.
enum Sender {
    Plain(Producer),
    Transactional(TransactionProducer<CommandLineTransaction>),
}

/// `meridian produce`.
pub async fn produce(args: ProduceArgs) -> Result<()> {
    if args.transaction.is_some() && args.mode != SendMode::Sync {
        bail!("--transaction sends one message at a time and waits for each: leave out --mode (or use --mode sync)");
    }
    let pool = ConnectionPool::new(crate::credentials::client_config());
    let producer_config = ProducerConfig {
        idc: args.idc.settings(),
        client: crate::credentials::client_config(),
        ..ProducerConfig::default()
    };
    let route = route_source(&args.target, &pool);
    let sender = match args.transaction {
        None => Sender::Plain(Producer::new(route, producer_config)),
        Some(end) => {
            let config = TransactionProducerConfig {
                producer: ProducerConfig {
                    group: args.producer_group.clone(),
                    ..producer_config
                },
                // A one-shot command cannot answer check-backs (it keeps no state and exits), so
                // it does not poll for them: a running member of the group answers, or nobody.
                check_poll_interval: Duration::from_secs(365 * 24 * 3600),
                check_topics: Vec::new(),
            };
            let listener = CommandLineTransaction { outcome: end.outcome() };
            match TransactionProducer::new(route, config, listener) {
                Ok(producer) => Sender::Transactional(producer),
                Err(error) => {
                    pool.shutdown().await;
                    return Err(error).context("--producer-group");
                }
            }
        }
    };
    let result = produce_all(&args, &sender).await;
    match sender {
        Sender::Plain(producer) => producer.shutdown().await,
        Sender::Transactional(producer) => producer.shutdown().await,
    }
    pool.shutdown().await;
    result
}

async fn produce_all(args: &ProduceArgs, sender: &Sender) -> Result<()> {
    let (lines_tx, mut lines_rx) = mpsc::channel::<String>(1024);
    let reader = match &args.body {
        Some(body) => {
            lines_tx.send(body.clone()).await.expect("receiver alive");
            drop(lines_tx);
            None
        }
        None => Some(tokio_util::task::TaskTracker::new().spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if lines_tx.send(line).await.is_err() {
                    break;
                }
            }
        })),
    };
    let deliver_at = deliver_at(args)?;
    let mut pending = std::collections::VecDeque::new();
    let mut undecided = 0u64;
    while let Some(line) = lines_rx.recv().await {
        let message = build_message(args, line, deliver_at);
        let producer = match sender {
            Sender::Plain(producer) => producer,
            Sender::Transactional(producer) => {
                let sent = producer
                    .send(message)
                    .await
                    .with_context(|| format!("sending a transactional message to topic {:?}", args.topic))?;
                if let Some(error) = sent.end_error {
                    return Err(anyhow::Error::new(error).context(format!(
                        "half message {} is stored but the {:?} did not reach the broker; the broker will check back with producer group {:?} and roll it back after transaction.check_max checks unless a running member of the group commits it",
                        sent.send.msg_id, sent.outcome, args.producer_group
                    )));
                }
                if sent.outcome == TransactionOutcome::Unknown {
                    undecided += 1;
                }
                println!("{}", sent.send.msg_id);
                continue;
            }
        };
        if let Some(key) = &args.sharding_key {
            let sent = producer
                .send_ordered(message, key)
                .await
                .with_context(|| format!("sending to topic {:?}", args.topic))?;
            println!("{}", sent.msg_id);
            continue;
        }
        match args.mode {
            SendMode::Sync => {
                let sent = producer
                    .send(message)
                    .await
                    .with_context(|| format!("sending to topic {:?}", args.topic))?;
                println!("{}", sent.msg_id);
            }
            SendMode::Async => {
                pending.push_back(producer.send_async(message));
                // Keep memory bounded while still pipelining.
                if pending.len() >= 1024 {
                    let sent = pending.pop_front().expect("non-empty").await.context("sending")?;
                    println!("{}", sent.msg_id);
                }
            }
            SendMode::Oneway => {
                let msg_id = producer
                    .send_oneway(message)
                    .await
                    .with_context(|| format!("sending to topic {:?}", args.topic))?;
                println!("{msg_id}");
            }
        }
    }
    for sent in pending {
        println!("{}", sent.await.context("sending")?.msg_id);
    }
    if undecided > 0 {
        let what = if undecided == 1 {
            "the transaction is".to_owned()
        } else {
            format!("{undecided} transactions are")
        };
        eprintln!(
            "{what} left undecided: the broker checks back with producer group {:?} every transaction.check_interval_ms and rolls back after transaction.check_max checks unless a running member of the group decides",
            args.producer_group
        );
    }
    if let Some(reader) = reader {
        reader.abort();
    }
    Ok(())
}

fn format_text(message: &StoredMessage) -> String {
    let keys: Vec<&str> = message.keys().collect();
    format!(
        "{} {} queue={} offset={} keys={} tag={} born={} stored={} {}",
        message.msg_id(),
        message.topic,
        message.queue_id,
        message.queue_offset,
        if keys.is_empty() {
            "-".to_owned()
        } else {
            keys.join(",")
        },
        message.tag().unwrap_or("-"),
        format_millis(message.born_timestamp),
        format_millis(message.store_timestamp),
        String::from_utf8_lossy(&message.body)
    )
}

fn format_json(message: &StoredMessage) -> String {
    json!({
        "msg_id": message.msg_id(),
        "topic": message.topic,
        "queue_id": message.queue_id,
        "queue_offset": message.queue_offset,
        "commitlog_offset": message.commitlog_offset,
        "keys": message.keys().collect::<Vec<_>>(),
        "tag": message.tag(),
        "born_timestamp": message.born_timestamp,
        "store_timestamp": message.store_timestamp,
        "born_host": message.born_host.to_string(),
        "store_host": message.store_host.to_string(),
        "reconsume_count": message.reconsume_count,
        "body": String::from_utf8_lossy(&message.body),
    })
    .to_string()
}

/// `meridian consume`.
pub async fn consume(args: ConsumeArgs) -> Result<()> {
    if args.max == Some(0) {
        bail!("--max must be at least 1");
    }
    let pool = ConnectionPool::new(crate::credentials::client_config());
    let mut config = ConsumerConfig::new(args.group.clone(), args.topic.clone());
    config.client = crate::credentials::client_config();
    config.idc = args.idc.settings();
    config.deployment = args.deployment;
    config.consume_from = if args.from_beginning {
        ConsumeFrom::Earliest
    } else {
        ConsumeFrom::Latest
    };
    config.subscription = args.tag.clone();
    config.broadcasting = args.broadcasting;
    if args.orderly {
        config.mode = ConsumeMode::Orderly;
    }
    if let Some(client_id) = &args.client_id {
        config.client_id = client_id.clone();
    }
    let (messages_tx, mut messages_rx) = mpsc::channel::<(StoredMessage, tokio::sync::oneshot::Sender<()>)>(256);
    let consumer = PushConsumer::start(route_source(&args.target, &pool), config, move |message| {
        let messages_tx = messages_tx.clone();
        async move {
            // The message counts as consumed once printed: the printer acknowledges it.
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            if messages_tx.send((message, done_tx)).await.is_err() || done_rx.await.is_err() {
                return ConsumeResult::Retry;
            }
            ConsumeResult::Success
        }
    })
    .await
    .with_context(|| {
        format!(
            "joining group {:?} on topic {:?} via {}",
            args.group, args.topic, args.target
        )
    })?;

    let idle = args.timeout.map(Duration::from_secs);
    let mut printed = 0u64;
    loop {
        let next = match idle {
            Some(idle) => match tokio::time::timeout(idle, messages_rx.recv()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => tokio::select! {
                next = messages_rx.recv() => next,
                _ = crate::signal::shutdown_signal() => break,
            },
        };
        let Some((message, done)) = next else { break };
        println!(
            "{}",
            if args.json {
                format_json(&message)
            } else {
                format_text(&message)
            }
        );
        let _ = done.send(());
        printed += 1;
        if args.max.is_some_and(|max| printed >= max) {
            break;
        }
    }
    // Messages handed over but not printed are not acknowledged, so they are not committed.
    drop(messages_rx);
    consumer.shutdown().await;
    pool.shutdown().await;
    Ok(())
}
