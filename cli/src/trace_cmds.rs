//! `meridian tracer` (run the tracer) and `meridian trace` (look a message's timeline up).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use meridian_tracer::{Tracer, TracerConfig, TracerMetrics};
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{config, http};

/// Arguments of `meridian tracer`.
#[derive(Debug, clap::Args)]
pub struct TracerArgs {
    /// Tracer config file (TOML); defaults apply to anything it leaves out.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// `meridian tracer --config FILE`: index the trace topic and serve lookups. An `[archive]` table
/// in the file (as in the broker's config) adds archive steps to timelines.
pub async fn tracer(args: TracerArgs) -> Result<()> {
    let mut table = config::load_table("tracer", args.config.as_deref())?;
    let archive = table
        .remove("archive")
        .map(|archive| {
            let archive: meridian_archive::store::ArchiveConfig = archive
                .try_into()
                .context("invalid [archive] table in the tracer config")?;
            let store =
                meridian_archive::store::ArchiveStore::open(&archive, std::path::Path::new("meridian-data/archive"))
                    .context("opening the archive store named by [archive]")?;
            anyhow::Ok(crate::archive_steps::ManifestSteps::new(store))
        })
        .transpose()?;
    let config: TracerConfig = config::from_table("tracer", args.config.as_deref(), table)?;
    let mut registry = Registry::default();
    let metrics = Arc::new(TracerMetrics::register(&mut registry));
    let http_listen = config.http_listen;
    let (group, data_dir) = (config.group.clone(), config.data_dir.clone());
    let mut tracer = Tracer::open(config, metrics).context("opening the trace index")?;
    let listener = match http_listen {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    if let Some(steps) = archive {
        tracer = tracer.with_archive(steps.clone());
        tasks.spawn(steps.run(stop.clone()));
    }
    if let Some(listener) = listener {
        println!("meridian tracer: group {group}, index in {}", data_dir.display());
        println!(
            "  http http://{}  (/api/traces/{{msgId}}, /api/traces?key=K, /metrics)",
            listener.local_addr()?
        );
        let router = tracer.router().merge(http::metrics_router(Arc::new(registry)));
        let stopped = stop.clone();
        tasks.spawn(async move {
            if let Err(error) = http::serve(listener, router, stopped.cancelled_owned()).await {
                tracing::error!(%error, "http listener failed");
            }
        });
    } else {
        println!("meridian tracer: no http_listen, lookups are off");
    }
    tasks.close();
    let result = tracer.run(crate::signal::shutdown_signal()).await;
    stop.cancel();
    tasks.wait().await;
    result.context("tracer failed")
}

/// Arguments of `meridian trace`.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// A msgId (32 hex digits), a broker-assigned offset id (BROKER:OFFSET), or a RocketMQ offset
    /// msgId (32 hex digits: the broker's RocketMQ address and commitlog offset, what RocketMQ
    /// sends answer with; that broker is asked which message it is).
    #[arg(required_unless_present = "key", conflicts_with = "key")]
    id: Option<String>,
    /// Every message with this key instead.
    #[arg(long)]
    key: Option<String>,
    /// With --key: only this topic.
    #[arg(long, requires = "key")]
    topic: Option<String>,
    /// With --key: only messages with events at or after this time (Unix ms or RFC 3339 UTC).
    #[arg(long, requires = "key")]
    from: Option<String>,
    /// With --key: only messages with events before this time.
    #[arg(long, requires = "key")]
    to: Option<String>,
    /// With --key: messages per page (1 to 1000).
    #[arg(long, default_value_t = 20, requires = "key")]
    limit: usize,
    /// With --key: messages to skip (the `next_offset` of the page before).
    #[arg(long, default_value_t = 0, requires = "key")]
    offset: usize,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The tracer's HTTP address (`meridian dev` serves it on its one listener). Default: where
    /// the nameservers say it is.
    #[arg(long, env = "MERIDIAN_TRACER")]
    tracer: Option<String>,
    #[command(flatten)]
    addrs: crate::nameservers::NameserverAddrs,
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The msgId (`UNIQ_KEY`) of the message at commitlog `offset` of the broker whose RocketMQ
/// listener is `broker`, read with `VIEW_MESSAGE_BY_ID` as RocketMQ's admin tools read it.
async fn msg_id_at(broker: std::net::SocketAddr, offset: u64) -> Result<String> {
    use meridian_proto::remoting::codes::{request, response};
    use meridian_proto::remoting::{Decoded, RemotingCommand};

    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(broker),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connecting to {broker} timed out after 5 s"))?
    .with_context(|| format!("connecting to {broker}"))?;
    let command = RemotingCommand::request(request::VIEW_MESSAGE_BY_ID, 1).with("offset", offset);
    let mut frame = bytes::BytesMut::new();
    command.encode(&mut frame);
    stream.write_all(&frame).await?;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let len = stream.read_u32().await?;
            let mut frame = vec![0u8; len as usize];
            stream.read_exact(&mut frame).await?;
            match meridian_proto::remoting::command::decode_frame(bytes::Bytes::from(frame))? {
                Decoded::Command(answer) if answer.is_response() && answer.opaque == 1 => return anyhow::Ok(answer),
                Decoded::Command(_) => continue,
                Decoded::BadHeader { error, .. } => bail!("its answer is unreadable: {error}"),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("{broker} did not answer VIEW_MESSAGE_BY_ID within 10 s"))??;
    if answer.code != response::SUCCESS {
        bail!(
            "{broker} answered code {}: {}",
            answer.code,
            answer.remark.as_deref().unwrap_or("no remark")
        );
    }
    let messages = meridian_proto::remoting::message::decode_all_stored(&answer.body)?;
    let message = messages.first().context("its answer holds no message")?;
    meridian_proto::properties::get(message.properties, meridian_proto::properties::MSG_ID)
        .map(str::to_owned)
        .context("the message there has no UNIQ_KEY")
}

/// `GET path` on the tracer: the status and the JSON body. HTTP/1.0, so a dozen lines do.
async fn get(addr: &str, path: &str) -> Result<(u16, Value)> {
    let addr = addr
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the tracer at {addr} (set --tracer or MERIDIAN_TRACER)"))?;
    let tls = crate::credentials::tls_from_env();
    let mut stream = meridian_proto::tls::connect_maybe_tls(tls.as_deref(), addr, stream).await?;
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{}\r\n",
                crate::credentials::authorization_line()
            )
            .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    meridian_proto::tls::read_to_close(&mut stream, &mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("the tracer's answer has no body")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse::<u16>().ok())
        .context("the tracer's answer has no status")?;
    let value =
        serde_json::from_str(body).with_context(|| format!("the tracer answered {status} without JSON: {body}"))?;
    Ok((status, value))
}

/// `meridian trace MSGID` or `meridian trace --key K`.
pub async fn trace(args: TraceArgs) -> Result<()> {
    let path = match (&args.id, &args.key) {
        (Some(id), _) => format!("/api/traces/{}", encode(id)),
        (None, Some(key)) => {
            let mut path = format!(
                "/api/traces?key={}&limit={}&offset={}",
                encode(key),
                args.limit,
                args.offset
            );
            for (name, value) in [("topic", &args.topic), ("from", &args.from), ("to", &args.to)] {
                if let Some(value) = value {
                    path.push_str(&format!("&{name}={}", encode(value)));
                }
            }
            path
        }
        (None, None) => bail!("give a msgId or offset id, or --key K"),
    };
    let tracer =
        crate::env_cmds::service_addr(args.tracer.clone(), &args.addrs, crate::env_cmds::Service::Tracer).await?;
    let (mut status, mut body) = get(&tracer, &path).await?;
    // A RocketMQ offset msgId (what RocketMQ brokers answer a send with, and what ali-ons calls the
    // msgId) is 32 hex digits like a msgId; when the tracer knows no message by it, it names the
    // broker's RocketMQ address and a commitlog offset, and that broker says which message is there.
    if (status == 404 || status == 400)
        && let Some(id) = &args.id
        && let Ok((broker, offset)) = meridian_proto::remoting::message::parse_offset_msg_id(id)
    {
        let msg_id = msg_id_at(broker, offset).await.with_context(|| {
            format!(
                "no message is traced with msgId {id}; read as a RocketMQ offset msgId it names commitlog offset {offset} on the broker whose RocketMQ listener is {broker}, which could not tell the message there"
            )
        })?;
        if !args.json {
            println!("offset msgId {id} is msgId {msg_id} (broker {broker}, commitlog offset {offset})");
        }
        (status, body) = get(&tracer, &format!("/api/traces/{}", encode(&msg_id))).await?;
    }
    if status != 200 {
        bail!(
            "{}",
            body.get("error")
                .and_then(|error| error.as_str().or_else(|| error["message"].as_str()))
                .unwrap_or("the tracer refused the lookup")
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    if args.id.is_some() {
        print_timeline(&body);
    } else {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let total = body.get("total").and_then(Value::as_u64).unwrap_or(0);
        println!(
            "key {}: {total} message(s); showing {} from {}",
            args.key.as_deref().unwrap_or(""),
            messages.len(),
            args.offset
        );
        for message in &messages {
            println!();
            print_timeline(message);
        }
        if let Some(next) = body.get("next_offset").and_then(Value::as_u64) {
            println!(
                "\nmore: meridian trace --key {} --offset {next}",
                args.key.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
}

fn print_timeline(timeline: &Value) {
    let keys: Vec<&str> = timeline
        .get("keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!(
        "msgId {}  topic {}  keys {}  tag {}  offset id {}",
        text(timeline, "msg_id"),
        text(timeline, "topic"),
        if keys.is_empty() {
            "-".to_owned()
        } else {
            keys.join(",")
        },
        Some(text(timeline, "tags"))
            .filter(|tag| !tag.is_empty())
            .unwrap_or("-"),
        Some(text(timeline, "offset_id"))
            .filter(|id| !id.is_empty())
            .unwrap_or("-"),
    );
    println!(
        "{:<25} {:<13} {:>8} {:<8} {:<14} {:<6} {:<12} {:<40} DETAIL",
        "TIME", "STEP", "+MS", "STATUS", "BROKER", "IDC", "GROUP", "WHERE"
    );
    for step in timeline.get("steps").and_then(Value::as_array).into_iter().flatten() {
        let since = step
            .get("since_previous_ms")
            .and_then(Value::as_i64)
            .map_or_else(|| "-".to_owned(), |ms| ms.to_string());
        let cost = step.get("cost_us").and_then(Value::as_u64).unwrap_or(0);
        let mut detail = Vec::new();
        let topic = text(step, "topic");
        if !topic.is_empty() && topic != text(timeline, "topic") {
            detail.push(topic.to_owned());
        }
        // Pub names the topic the producer sent to; where the message went is Store's to say.
        if text(step, "type") != "Pub" {
            detail.push(format!(
                "queue {} offset {}",
                step.get("queue_id").and_then(Value::as_u64).unwrap_or(0),
                step.get("queue_offset").and_then(Value::as_u64).unwrap_or(0)
            ));
        }
        if let Some(due) = step.get("deliver_at").and_then(Value::as_i64) {
            detail.push(format!("due {}", meridian_proto::time::format_millis(due)));
        }
        if cost > 0 {
            detail.push(format!("cost {:.3} ms", cost as f64 / 1000.0));
        }
        let reconsume = step.get("reconsume_count").and_then(Value::as_u64).unwrap_or(0);
        if reconsume > 0 {
            detail.push(format!("reconsume {reconsume}"));
        }
        if !text(step, "error").is_empty() {
            detail.push(format!("error: {}", text(step, "error")));
        }
        let detail = detail.join(" ");
        let dash = |value: &str| {
            if value.is_empty() {
                "-".to_owned()
            } else {
                value.to_owned()
            }
        };
        println!(
            "{:<25} {:<13} {:>8} {:<8} {:<14} {:<6} {:<12} {:<40} {}",
            text(step, "time"),
            text(step, "type"),
            since,
            text(step, "status"),
            dash(text(step, "broker")),
            dash(text(step, "idc")),
            dash(text(step, "group")),
            text(step, "host"),
            detail
        );
    }
    if let Some(hops) = timeline.get("hops") {
        let hop = |field: &str| {
            hops.get(field)
                .and_then(Value::as_i64)
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"))
        };
        println!(
            "hops: born→stored {}, stored→replicated {}, stored→delivered {}, delivered→consumed {}, total {}",
            hop("born_to_stored_ms"),
            hop("stored_to_replicated_ms"),
            hop("stored_to_delivered_ms"),
            hop("delivered_to_consumed_ms"),
            hop("total_ms")
        );
    }
}
