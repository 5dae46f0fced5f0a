//! `meridian query` (the SQL service over the archive), `meridian sql` (one statement, or a shell
//! with history when none is given) and `meridian bench archive-gen`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use meridian_archive::store::{ArchiveConfig, ArchiveStore};
use meridian_query::{QueryConfig, QueryMetrics, QueryService, QueryServiceConfig};
use prometheus_client::registry::Registry;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::{config, http};

/// `meridian query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Config file (TOML); defaults apply to anything it leaves out.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Archive to query: a folder, file:///abs/path, s3://, gs:// or az://bucket/prefix (overrides
    /// archive.store; default ./meridian-data/archive, where `meridian dev` archives).
    #[arg(long)]
    store: Option<String>,
    /// HTTP listen address (overrides http_listen; default 127.0.0.1:8090).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// Opens the query service over `archive` (the folder `default_dir` when its store is empty).
pub async fn open_service(
    archive: &ArchiveConfig,
    default_dir: &Path,
    limits: QueryConfig,
    registry: &mut Registry,
    tail: Vec<meridian_query::tail::TailSource>,
) -> Result<Arc<QueryService>> {
    let store = ArchiveStore::open(archive, default_dir).context("opening the archive store")?;
    let metrics = Arc::new(QueryMetrics::register(registry));
    let service = QueryService::open_with_tail(store, limits, metrics, tail)
        .await
        .context("starting the query service (reading the archive's manifests)")?;
    Ok(Arc::new(service))
}

/// `meridian query`: serves `POST /api/sql` until stopped.
pub async fn query(args: QueryArgs) -> Result<()> {
    let mut service_config: QueryServiceConfig = config::load("query", args.config.as_deref())?;
    if let Some(store) = args.store {
        service_config.archive.store = store;
    }
    if let Some(listen) = args.listen {
        service_config.http_listen = listen;
    }
    let mut registry = Registry::default();
    let service = open_service(
        &service_config.archive,
        Path::new("meridian-data/archive"),
        service_config.query.clone(),
        &mut registry,
        Vec::new(),
    )
    .await?;
    let listener = http::bind(service_config.http_listen).await?;
    println!("meridian query {}: SQL over the archive", env!("CARGO_PKG_VERSION"));
    println!(
        "  archive    {} ({} files committed)",
        service.store().url,
        service.visible_files()
    );
    println!(
        "  limits     memory {} MiB, timeout {} s, {} rows per answer",
        service_config.query.memory_limit_mb, service_config.query.timeout_secs, service_config.query.max_result_rows
    );
    println!(
        "  http       http://{}  (POST /api/sql, /metrics)",
        listener.local_addr()?
    );
    println!("ready; press Ctrl-C to stop");
    let router = meridian_query::http::router(service).merge(http::metrics_router(Arc::new(registry)));
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let signal = async move {
        crate::signal::shutdown_signal().await;
        stopped.cancel();
    };
    tokio::select! {
        served = http::serve(listener, router, stop.cancelled_owned()) => served,
        _ = signal => Ok(()),
    }
}

/// `meridian sql`.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The statement; without one, a shell: statements end with `;`; on a terminal, line editing
    /// and history (~/.meridian_sql_history, up arrow and Ctrl-R).
    sql: Option<String>,
    /// How to print the answer.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv"])]
    format: String,
    /// The query service (`meridian query`, or `meridian dev`'s HTTP address). Default: where
    /// the nameservers say it is.
    #[arg(long, env = "MERIDIAN_QUERY")]
    server: Option<String>,
    #[command(flatten)]
    addrs: crate::nameservers::NameserverAddrs,
}

/// `POST /api/sql?format=F` with `sql` as the body: the status and the body. HTTP/1.0, so the
/// answer ends when the connection closes.
async fn post_sql(server: &str, sql: &str, format: &str) -> Result<(u16, Option<String>, Vec<u8>)> {
    let addr = server
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| {
        format!("connecting to the query service at {addr} (start `meridian dev` or `meridian query`, or set --server / MERIDIAN_QUERY)")
    })?;
    let tls = crate::credentials::tls_from_env();
    let mut stream = meridian_proto::tls::connect_maybe_tls(tls.as_deref(), addr, stream).await?;
    let request = format!(
        "POST /api/sql?format={format} HTTP/1.0\r\nHost: {addr}\r\n{}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{sql}",
        crate::credentials::authorization_line(),
        sql.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    meridian_proto::tls::read_to_close(&mut stream, &mut response).await?;
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .context("the query service's answer has no body")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse::<u16>().ok())
        .context("the query service's answer has no status")?;
    let empty_reason = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(meridian_query::http::EMPTY_REASON)
            .then(|| value.trim().to_owned())
    });
    Ok((status, empty_reason, response[split + 4..].to_vec()))
}

/// Runs one statement and prints the answer; an error answer becomes an error naming its kind.
async fn run_one(server: &str, sql: &str, format: &str) -> Result<()> {
    let (status, empty_reason, body) = post_sql(server, sql, format).await?;
    if status == 200 {
        std::io::stdout().write_all(&body)?;
        if format == "json" {
            println!();
        }
        if let Some(reason) = empty_reason {
            eprintln!("note: {reason}");
        }
        return Ok(());
    }
    let error: serde_json::Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "the query service answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    // The query service's `{"error", "kind"}`, or the auth layer's `{"error": {"code", "message"}}`.
    bail!(
        "{} ({}, HTTP {status})",
        error["error"]
            .as_str()
            .or_else(|| error["error"]["message"].as_str())
            .unwrap_or("unknown error"),
        error["kind"]
            .as_str()
            .or_else(|| error["error"]["code"].as_str())
            .unwrap_or("?")
    )
}

/// `meridian sql`.
pub async fn sql(args: SqlArgs) -> Result<()> {
    let server =
        crate::env_cmds::service_addr(args.server.clone(), &args.addrs, crate::env_cmds::Service::Query).await?;
    if let Some(statement) = &args.sql {
        return run_one(&server, statement, &args.format).await;
    }
    shell(&args, &server).await
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".meridian_sql_history"))
}

/// Collects the lines of a statement: statements end with `;` and may span lines.
#[derive(Default)]
struct StatementBuffer {
    pending: String,
}

impl StatementBuffer {
    /// Whether a statement has begun and not ended (the prompt shows it).
    fn continues(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Adds a line; returns the statement it ends, without its `;` (blank ones are skipped).
    fn push(&mut self, line: &str) -> Option<String> {
        self.pending.push_str(line);
        self.pending.push('\n');
        if !line.trim_end().ends_with(';') {
            return None;
        }
        let statement = std::mem::take(&mut self.pending);
        let statement = statement.trim().trim_end_matches(';').trim();
        (!statement.is_empty()).then(|| statement.to_owned())
    }
}

/// The shell: reads statements ending with `;`, runs each, keeps going after errors. On a
/// terminal it edits lines (arrow keys, Ctrl-R search) and keeps every statement in
/// ~/.meridian_sql_history, recalled by the up arrow in later sessions too; `\history` lists them.
/// Piped input is read as is and adds nothing to the history, and the exit status says whether
/// every statement succeeded.
async fn shell(args: &SqlArgs, server: &str) -> Result<()> {
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!(
            "meridian sql: connected to {server}; end statements with ';', up arrow and \\history recall past ones, Ctrl-D quits"
        );
    }
    let history = history_path().filter(|_| interactive);
    let (statement_tx, mut statement_rx) = tokio::sync::mpsc::channel::<String>(1);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // The editor blocks on the terminal: a thread of its own reads statements and waits until
    // each has been answered before it prompts again.
    let reader = std::thread::spawn(move || read_statements(history.as_deref(), &statement_tx, &done_rx));
    let mut failures = 0usize;
    while let Some(statement) = statement_rx.recv().await {
        if let Err(error) = run_one(server, &statement, &args.format).await {
            failures += 1;
            eprintln!("error: {error:#}");
        }
        if done_tx.send(()).is_err() {
            break;
        }
    }
    drop(done_tx);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the line editor's thread panicked"))?
        .context("reading statements")?;
    if failures > 0 && !interactive {
        bail!("{failures} statements failed");
    }
    Ok(())
}

/// Reads lines with the line editor until end of input, sending each whole statement and
/// waiting on `answered` before reading on. Ctrl-C drops the statement being typed.
fn read_statements(
    history: Option<&Path>,
    statements: &tokio::sync::mpsc::Sender<String>,
    answered: &std::sync::mpsc::Receiver<()>,
) -> rustyline::Result<()> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new()?;
    if let Some(path) = history
        && path.exists()
        && let Err(error) = editor.load_history(path)
    {
        eprintln!("warning: could not read the history {}: {error}", path.display());
    }
    let mut buffer = StatementBuffer::default();
    loop {
        let prompt = if buffer.continues() { "  -> " } else { "sql> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer = StatementBuffer::default();
                continue;
            }
            Err(ReadlineError::Eof) => return Ok(()),
            Err(error) => return Err(error),
        };
        if !buffer.continues() && line.trim() == "\\history" {
            for (number, past) in editor.history().iter().enumerate() {
                println!("{:>5}  {past}", number + 1);
            }
            continue;
        }
        let Some(statement) = buffer.push(&line) else {
            continue;
        };
        if let Some(path) = history {
            // One entry per statement, on one line, so the up arrow brings back all of it.
            editor.add_history_entry(format!("{};", statement.replace('\n', " ")))?;
            if let Err(error) = editor.append_history(path) {
                eprintln!("warning: could not write the history {}: {error}", path.display());
            }
        }
        if statements.blocking_send(statement).is_err() || answered.recv().is_err() {
            return Ok(());
        }
    }
}

/// `meridian bench archive-gen`.
#[derive(Debug, clap::Args)]
pub struct ArchiveGenArgs {
    /// Archive to write into: a folder, file:///abs/path, s3://, gs:// or az://bucket/prefix.
    #[arg(long)]
    store: String,
    /// Messages.
    #[arg(long, default_value_t = 20_000_000)]
    messages: u64,
    /// Topics.
    #[arg(long, default_value_t = 10)]
    topics: u32,
    /// Queues per topic.
    #[arg(long, default_value_t = 8)]
    queues: u32,
    /// Body size in bytes (about; JSON-like).
    #[arg(long, default_value_t = 200)]
    body_size: usize,
    /// One message in this many is traced (Pub, Store, SubBefore, SubAfter).
    #[arg(long, default_value_t = 10)]
    trace_every: u64,
    /// Messages per segment.
    #[arg(long, default_value_t = 1_000_000)]
    messages_per_segment: u64,
    /// Milliseconds between messages' store times (default: 20M messages over 3 days).
    #[arg(long, default_value_t = 13)]
    step_ms: i64,
}

/// Writes a generated archive with a progress bar.
pub async fn archive_gen(args: ArchiveGenArgs) -> Result<()> {
    let archive = ArchiveConfig {
        store: args.store.clone(),
        ..ArchiveConfig::default()
    };
    let store = ArchiveStore::open(&archive, Path::new(&args.store)).context("opening the archive store")?;
    let spec = meridian_query::generate::GenerateSpec {
        messages: args.messages,
        topics: args.topics,
        queues: args.queues,
        // 2026-11-23T00:00:00Z
        first_store_time: 1_795_392_000_000,
        step_ms: args.step_ms,
        body_size: args.body_size,
        trace_every: args.trace_every,
        messages_per_segment: args.messages_per_segment,
        broker: "broker-a".into(),
    };
    let bar = indicatif::ProgressBar::new(args.messages).with_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} messages ({per_sec})",
        )
        .expect("progress template"),
    );
    let started = std::time::Instant::now();
    let report = meridian_query::generate::generate(&store, &spec, |done| bar.set_position(done)).await?;
    bar.finish();
    println!(
        "archived {} messages and {} trace events in {} segments into {} in {:.1} s: {:.1} MB of records as {:.1} MB of Parquet",
        report.messages,
        report.trace_events,
        report.segments,
        store.url,
        started.elapsed().as_secs_f64(),
        report.record_bytes as f64 / 1e6,
        report.parquet_bytes as f64 / 1e6
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::StatementBuffer;

    #[test]
    fn statements_end_with_a_semicolon_and_may_span_lines() {
        let mut buffer = StatementBuffer::default();
        assert_eq!(buffer.push("SELECT count(*)"), None);
        assert!(buffer.continues());
        assert_eq!(
            buffer.push("  FROM messages ;  ").as_deref(),
            Some("SELECT count(*)\n  FROM messages")
        );
        assert!(!buffer.continues());
        assert_eq!(buffer.push(";"), None, "an empty statement is skipped");
        assert_eq!(buffer.push("   "), None);
        assert_eq!(buffer.push("SELECT 1;").as_deref(), Some("SELECT 1"));
    }
}
