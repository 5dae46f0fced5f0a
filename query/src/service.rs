//! The query service: one DataFusion session over the archive, with the tables `messages` and
//! `traces`, the views built on them, the forecasting functions, and the limits every query runs
//! under (read-only, memory, time, answer size, concurrency).
//!
//! Authorization: [`QueryService::sql_over`] answers over the topics a caller may SQL only. It
//! plans the query in a session of its own whose tables (`messages`, `archived_messages`,
//! `live_messages`, `traces`) are the service's tables behind `topic IN (readable)`, and whose
//! views are defined again on those; the unfiltered tables are not registered there under any
//! name, so no query shape (joins, subqueries, unions, views, forecasts) can reach them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::config::TableParquetOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures_util::StreamExt;
use meridian_archive::store::ArchiveStore;
use meridian_archive::{layout, schema as message_schema, traces as trace_schema};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::committed::{ARCHIVE_URL, ArchiveOnlyRegistry, ArchiveView, CommittedIndex};
use crate::config::QueryConfig;
use crate::error::{QueryError, Result, SqlPosition};
use crate::forecast;
use crate::metrics::{QueryMetrics, RowCount};
use crate::read_only::check_read_only;
use crate::tail::{LiveTail, TailSource};
use crate::udf;

/// Views registered beside the tables: the common questions, named.
pub const VIEWS: &[(&str, &str)] = &[
    (
        "hourly_volume",
        "SELECT topic, date_trunc('hour', store_timestamp) AS hour, count(*) AS messages, \
         sum(CAST(body_size AS BIGINT)) AS bytes \
         FROM messages GROUP BY topic, date_trunc('hour', store_timestamp)",
    ),
    (
        "consume_latency",
        "SELECT date, timestamp, group_name, topic, msg_id, status, reconsume_count, store_timestamp, \
         consume_start_timestamp, consume_end_timestamp, \
         CAST(consume_end_timestamp AS BIGINT) - CAST(store_timestamp AS BIGINT) AS latency_ms, cost_us \
         FROM traces WHERE trace_type = 'SubAfter' AND store_timestamp IS NOT NULL AND consume_end_timestamp IS NOT NULL",
    ),
    (
        "hourly_consume_latency",
        "SELECT group_name, topic, date_trunc('hour', consume_end_timestamp) AS hour, count(*) AS consumed, \
         approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms, \
         approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99_ms, max(latency_ms) AS max_ms \
         FROM consume_latency GROUP BY group_name, topic, date_trunc('hour', consume_end_timestamp)",
    ),
    (
        "broker_stats",
        "SELECT timestamp, date, broker_name, broker_member, broker_host, idc, send_tps, pull_tps, cpu_load, \
         disk_used_ratio, flush_latency_us, replication_latency_us \
         FROM traces WHERE send_tps IS NOT NULL",
    ),
];

/// An answer: the schema and the batches of rows.
#[derive(Debug, Clone)]
pub struct QueryAnswer {
    /// Columns.
    pub schema: SchemaRef,
    /// Rows.
    pub batches: Vec<RecordBatch>,
    /// Number of rows.
    pub rows: usize,
    /// Time from the request to the last row.
    pub elapsed: Duration,
}

/// The query service. Cheap to share behind an `Arc`; queries run concurrently up to
/// `max_concurrent_queries`.
pub struct QueryService {
    ctx: SessionContext,
    store: ArchiveStore,
    index: Arc<CommittedIndex>,
    config: QueryConfig,
    permits: Semaphore,
    metrics: Arc<QueryMetrics>,
    /// Every running query is a task of this tracker, on `cpu`: the caller waits on it with the
    /// timeout from its own runtime, so a query that keeps its threads busy (an operator that
    /// does not yield) cannot hold the answer, the HTTP listener or other services past it.
    tasks: TaskTracker,
    cpu: CpuRuntime,
    /// Held for reading while a query is planned (when tables list their files and the live
    /// tail reads its segments) and for writing while the committed index refreshes, so the
    /// archive and the tail of one query see the same committed segments.
    snapshot: Arc<tokio::sync::RwLock<()>>,
    /// Brokers whose live tail `messages` includes.
    tail_brokers: Vec<String>,
    /// Where the HTTP API reads who may SQL which topic ([`QueryService::set_acl_source`]).
    acl: std::sync::RwLock<Option<Arc<dyn meridian_proto::acl::AclSource>>>,
}

/// The runtime queries execute on, apart from the one serving requests (DataFusion's advice for
/// CPU-bound work next to I/O). Shut down in the background on drop, since dropping a runtime
/// from async code would panic.
struct CpuRuntime(Option<tokio::runtime::Runtime>);

impl CpuRuntime {
    fn new(threads: usize) -> Result<CpuRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("meridian-query")
            .enable_all()
            .build()
            .map_err(|error| QueryError::Execution(format!("starting the query threads: {error}")))?;
        Ok(CpuRuntime(Some(runtime)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("runtime until drop").handle()
    }
}

impl Drop for CpuRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("QueryService")
            .field("store", &self.store.url)
            .finish()
    }
}

/// Top-level string and binary columns as DataFusion reads them from Parquet (view types, which
/// filter and group without copying).
fn with_view_types(schema: &Schema, drop: &[&str]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|field| !drop.contains(&field.name().as_str()))
        .map(|field| {
            let data_type = match field.data_type() {
                DataType::Utf8 => DataType::Utf8View,
                DataType::Binary => DataType::BinaryView,
                other => other.clone(),
            };
            field.as_ref().clone().with_data_type(data_type)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

impl QueryService {
    /// Opens a session over `store` with `config`'s limits, and registers the tables, views and
    /// functions. Reads the manifests once.
    pub async fn open(store: ArchiveStore, config: QueryConfig, metrics: Arc<QueryMetrics>) -> Result<QueryService> {
        QueryService::open_with_tail(store, config, metrics, Vec::new()).await
    }

    /// [`QueryService::open`], and with `tail` not empty, `messages` is the archive
    /// (`archived_messages`) plus the messages of these brokers not archived yet
    /// (`live_messages`, see [`crate::tail`]).
    pub async fn open_with_tail(
        store: ArchiveStore,
        config: QueryConfig,
        metrics: Arc<QueryMetrics>,
        tail: Vec<TailSource>,
    ) -> Result<QueryService> {
        config.validate().map_err(QueryError::BadRequest)?;
        let index = Arc::new(CommittedIndex::default());
        let view: Arc<dyn object_store::ObjectStore> = Arc::new(ArchiveView::new(&store, index.clone()));

        let mut session_config = SessionConfig::new().with_information_schema(true);
        if config.target_partitions > 0 {
            session_config = session_config.with_target_partitions(config.target_partitions);
        }
        {
            let options = session_config.options_mut();
            // Partial aggregation pays when it shrinks the rows a lot; DataFusion keeps it unless
            // it keeps over 80% of them. Over high-cardinality keys (msgIds, order keys: 75%
            // kept) it hashed every row twice: top keys of 20M messages took 5.6 s, 3.5 s
            // without it. Half is where it is worth hashing twice.
            options.execution.skip_partial_aggregation_probe_ratio_threshold = 0.5;
            // Spans let errors point at the position in the SQL.
            options.sql_parser.collect_spans = true;
        }
        let disk = match config.spill_dir.trim() {
            "" => DiskManagerMode::OsTmpDirectory,
            dir => DiskManagerMode::Directories(vec![dir.into()]),
        };
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit((config.memory_limit_mb as usize) << 20, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(disk)
                    .with_max_temp_directory_size(config.max_spill_mb << 20),
            )
            .with_object_store_registry(Arc::new(ArchiveOnlyRegistry::new(view)))
            // Listings are never cached: the committed index decides what is visible, and a new
            // segment must show up on the next query.
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()
            .map_err(|error| QueryError::Execution(error.strip_backtrace()))?;
        let ctx = SessionContext::new_with_config_rt(session_config, runtime);
        // Before the views, which resolve their functions when they are defined.
        udf::register(&ctx);
        let threads = match config.target_partitions {
            0 => std::thread::available_parallelism().map(usize::from).unwrap_or(2),
            partitions => partitions,
        };
        let cpu = CpuRuntime::new(threads)?;

        // A listing table reads with its format's options, not the session's `execution.parquet`
        // (only `pushdown_filters` is or-ed with the session's), so each table gets its own.
        let parquet = |pushdown_filters: bool| {
            let mut options = TableParquetOptions::default();
            options.global.pushdown_filters = pushdown_filters;
            options.global.reorder_filters = pushdown_filters;
            Arc::new(ParquetFormat::default().with_options(options))
        };
        // Messages: filters run inside the scan (late materialization), so a lookup by key or
        // msgId decodes the bodies of matching rows only: a key lookup over 20M messages took
        // 0.5 s with it, 1.7 to 4 s without.
        let messages = ListingOptions::new(parquet(true))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("topic".into(), DataType::Utf8), ("date".into(), DataType::Utf8)]);
        let messages_schema = with_view_types(&message_schema::message_schema(), &[message_schema::columns::TOPIC]);
        let tail_brokers: Vec<String> = tail.iter().map(|source| source.broker.clone()).collect();
        if tail.is_empty() {
            register_listing(&ctx, "messages", layout::MESSAGES, messages, messages_schema)?;
        } else {
            register_listing(&ctx, "archived_messages", layout::MESSAGES, messages, messages_schema)?;
            let archived = ctx
                .table_provider("archived_messages")
                .await
                .map_err(|error| QueryError::Execution(error.strip_backtrace()))?;
            let live = LiveTail::new(tail, index.clone(), archived.schema());
            ctx.register_table("live_messages", Arc::new(live))
                .map_err(|error| QueryError::Execution(error.strip_backtrace()))?;
            ctx.sql("CREATE VIEW messages AS SELECT * FROM archived_messages UNION ALL SELECT * FROM live_messages")
                .await
                .map_err(|error| {
                    QueryError::Execution(format!("defining view messages: {}", error.strip_backtrace()))
                })?;
        }
        // Traces: no bodies to skip, and the usual filter (`trace_type = 'SubAfter'`) keeps every
        // fourth row; decoding the few narrow columns whole and filtering after is faster than
        // row selections that fine (latency percentiles over 8M events: 0.2 s against 0.35 s).
        let traces = ListingOptions::new(parquet(false))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("date".into(), DataType::Utf8)]);
        let traces_schema = with_view_types(&trace_schema::trace_schema(), &[]);
        register_listing(&ctx, "traces", layout::TRACES, traces, traces_schema)?;
        for (name, sql) in VIEWS {
            ctx.sql(&format!("CREATE VIEW {name} AS {sql}"))
                .await
                .map_err(|error| QueryError::Execution(format!("defining view {name}: {}", error.strip_backtrace())))?;
        }
        forecast::register(&ctx);

        let service = QueryService {
            ctx,
            store,
            index,
            permits: Semaphore::new(config.max_concurrent_queries),
            config,
            metrics,
            tasks: TaskTracker::new(),
            cpu,
            snapshot: Arc::default(),
            tail_brokers,
            acl: std::sync::RwLock::new(None),
        };
        service.refresh(true).await?;
        Ok(service)
    }

    /// The DataFusion session (tests, and embedding).
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// The archive read.
    pub fn store(&self) -> &ArchiveStore {
        &self.store
    }

    /// The limits.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// Committed files currently visible to queries.
    pub fn visible_files(&self) -> usize {
        self.index.len()
    }

    /// Why an answer may have no rows, for the people asking: what the archive holds and
    /// whether the not-yet-archived messages are read too.
    pub fn empty_reason(&self) -> String {
        let entries = self.index.entries();
        let archived = if entries.is_empty() {
            format!(
                "the archive ({}) holds no committed segment yet: an archiver commits a commitlog segment once it is sealed (full) and older than archive_after_secs",
                self.store.url
            )
        } else {
            let newest = entries.iter().map(|entry| entry.max_store_time).max().unwrap_or(0);
            format!(
                "the archive ({}) holds {} segment(s), {} message(s) stored until {}",
                self.store.url,
                entries.len(),
                entries.iter().map(|entry| entry.records).sum::<u64>(),
                meridian_proto::time::format_millis(newest)
            )
        };
        let live = if self.tail_brokers.is_empty() {
            "messages not archived yet are not read here (this query service reads the archive only; `meridian dev` also reads its broker's live log)".to_owned()
        } else {
            format!(
                "messages not archived yet are read from the live log of broker {}",
                self.tail_brokers.join(", ")
            )
        };
        format!("no rows: {archived}; {live}")
    }

    /// Reads new manifest entries (at most every `refresh_secs` unless `force`).
    pub async fn refresh(&self, force: bool) -> Result<()> {
        let interval = if force {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(self.config.refresh_secs)
        };
        let _writing = self.snapshot.write().await;
        self.index.refresh(&self.store, interval).await
    }

    /// Sets where the HTTP API reads the cluster's ACL (`GET /api/acl` of the nameservers, or the
    /// nameserver in the same process); without one, callers are not filtered.
    pub fn set_acl_source(&self, source: Arc<dyn meridian_proto::acl::AclSource>) {
        *self.acl.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(source);
    }

    /// The topics `principal` may SQL, or `None` when not restricted (no ACL source, a node or a
    /// super user). Topics are those approved (the ACL's owners).
    pub fn readable_topics(&self, principal: &meridian_proto::auth::Principal) -> Option<Vec<String>> {
        let source = self
            .acl
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()?;
        let acl = source.acl();
        if principal.is_node()
            || matches!(principal, meridian_proto::auth::Principal::User(user) if acl.is_super_user(user))
        {
            return None;
        }
        Some(
            acl.permitted_topics(
                principal,
                meridian_proto::acl::Action::Sql,
                acl.topic_owners.keys().map(String::as_str),
            )
            .into_iter()
            .map(str::to_owned)
            .collect(),
        )
    }

    /// Runs one SQL statement under the service's limits and returns the whole answer.
    pub async fn sql(&self, sql: &str) -> Result<QueryAnswer> {
        self.sql_over(sql, None).await
    }

    /// [`QueryService::sql`] over the messages and traces of `topics` only (`None`: every
    /// topic); see the module doc for why no query can read past them.
    pub async fn sql_over(&self, sql: &str, topics: Option<&[String]>) -> Result<QueryAnswer> {
        let started = Instant::now();
        let outcome = self.sql_inner(sql, topics, started).await;
        self.metrics.observe(&outcome, started.elapsed());
        match &outcome {
            Ok(answer) => tracing::info!(
                rows = answer.rows,
                elapsed_ms = answer.elapsed.as_millis() as u64,
                "query answered"
            ),
            Err(error) => tracing::info!(kind = error.kind(), %error, "query refused or failed"),
        }
        outcome
    }

    /// A session like the service's whose tables hold only the rows of `topics`.
    async fn restricted_session(&self, topics: &[String]) -> Result<SessionContext> {
        use datafusion::catalog::{
            CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
            MemorySchemaProvider,
        };
        use datafusion::execution::SessionStateBuilder;
        use datafusion::prelude::{col, lit};
        let failed = |error: DataFusionError| QueryError::Execution(error.strip_backtrace());
        let options = self.ctx.copied_config();
        let catalog_options = &options.options().catalog;
        let catalog = MemoryCatalogProvider::new();
        catalog
            .register_schema(&catalog_options.default_schema, Arc::new(MemorySchemaProvider::new()))
            .map_err(failed)?;
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(catalog_options.default_catalog.clone(), Arc::new(catalog));
        let state = SessionStateBuilder::new_from_existing(self.ctx.state())
            .with_catalog_list(Arc::new(catalogs))
            .build();
        let restricted = SessionContext::new_with_state(state);
        let readable = if topics.is_empty() {
            lit(false)
        } else {
            col(message_schema::columns::TOPIC).in_list(topics.iter().map(|topic| lit(topic.as_str())).collect(), false)
        };
        let tables: &[&str] = if self.tail_brokers.is_empty() {
            &["messages", "traces"]
        } else {
            &["archived_messages", "live_messages", "traces"]
        };
        for name in tables {
            let table = self.ctx.table_provider(*name).await.map_err(failed)?;
            let filtered = restricted
                .read_table(table)
                .and_then(|frame| frame.filter(readable.clone()))
                .map_err(failed)?
                .into_view();
            restricted.register_table(*name, filtered).map_err(failed)?;
        }
        let mut views: Vec<(&str, &str)> = Vec::new();
        if !self.tail_brokers.is_empty() {
            views.push((
                "messages",
                "SELECT * FROM archived_messages UNION ALL SELECT * FROM live_messages",
            ));
        }
        views.extend(VIEWS.iter().copied());
        for (name, sql) in views {
            restricted
                .sql(&format!("CREATE VIEW {name} AS {sql}"))
                .await
                .map_err(|error| QueryError::Execution(format!("defining view {name}: {}", error.strip_backtrace())))?;
        }
        Ok(restricted)
    }

    async fn sql_inner(&self, sql: &str, topics: Option<&[String]>, started: Instant) -> Result<QueryAnswer> {
        if sql.trim().is_empty() {
            return Err(QueryError::BadRequest(
                "no SQL given: send one statement, e.g. SELECT count(*) FROM messages".into(),
            ));
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| QueryError::Execution("the query service is shutting down".into()))?;
        self.refresh(false).await?;
        let ctx = match topics {
            Some(topics) => self.restricted_session(topics).await?,
            None => self.ctx.clone(),
        };
        let timeout = Duration::from_secs_f64(self.config.timeout_secs);
        let mut task = self.tasks.spawn_on(
            run_query(
                ctx,
                sql.to_owned(),
                self.config.max_result_rows,
                self.config.memory_limit_mb,
                self.snapshot.clone(),
            ),
            self.cpu.handle(),
        );
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(Ok((schema, batches, rows)))) => Ok(QueryAnswer {
                schema,
                batches,
                rows,
                elapsed: started.elapsed(),
            }),
            Ok(Ok(Err(error))) => Err(error),
            // A panic inside DataFusion fails this query, not the process.
            Ok(Err(join_error)) => Err(QueryError::Execution(format!(
                "the query stopped unexpectedly: {join_error}"
            ))),
            Err(_) => {
                // Aborting drops the query's streams at its next await, which stops every task
                // it started and frees its memory.
                task.abort();
                Err(QueryError::Timeout {
                    seconds: self.config.timeout_secs,
                })
            }
        }
    }
}

/// Plans, checks and runs one statement, collecting at most `max_rows` rows.
async fn run_query(
    ctx: SessionContext,
    sql: String,
    max_rows: usize,
    memory_limit_mb: u64,
    snapshot: Arc<tokio::sync::RwLock<()>>,
) -> Result<(SchemaRef, Vec<RecordBatch>, usize)> {
    let classify = |error: DataFusionError| classify(error, &sql, memory_limit_mb);
    let plan = ctx.state().create_logical_plan(&sql).await.map_err(classify)?;
    check_read_only(&plan, &sql)?;
    let frame = ctx.execute_logical_plan(plan).await.map_err(classify)?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let mut stream = {
        // Planning lists the archive's files and reads the live tail: one index snapshot.
        let _reading = snapshot.read().await;
        frame.execute_stream().await.map_err(classify)?
    };
    let (mut batches, mut rows) = (Vec::new(), 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(classify)?;
        rows += batch.num_rows();
        if rows > max_rows {
            return Err(QueryError::TooManyRows { limit: max_rows });
        }
        batches.push(batch);
    }
    Ok((schema, batches, rows))
}

fn register_listing(
    ctx: &SessionContext,
    name: &str,
    folder: &str,
    options: ListingOptions,
    schema: SchemaRef,
) -> Result<()> {
    let url = ListingTableUrl::parse(format!("{ARCHIVE_URL}/{folder}/"))
        .map_err(|error| QueryError::Execution(error.strip_backtrace()))?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    // The session's file statistics cache, as DataFusion's own `register_listing_table` sets it:
    // without it every query recomputed each file's statistics from its Parquet footer (the
    // embedded Arrow schema decoded again and again), most of the planning time. Entries are
    // checked against the file's size and time, which the committed index gives per file.
    let table = ListingTable::try_new(config)
        .map_err(|error| QueryError::Execution(error.strip_backtrace()))?
        .with_cache(ctx.runtime_env().cache_manager.get_file_statistic_cache());
    ctx.register_table(name, Arc::new(table))
        .map_err(|error| QueryError::Execution(error.strip_backtrace()))?;
    Ok(())
}

/// The position a parser message names (`... at Line: 1, Column: 8`).
fn position_in_message(message: &str) -> Option<SqlPosition> {
    let rest = &message[message.find("Line: ")? + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(SqlPosition {
        line: line.trim().parse().ok()?,
        column: column.parse().ok()?,
    })
}

/// Turns a DataFusion error into a [`QueryError`]: memory exhaustion, SQL mistakes with their
/// position, or an execution failure.
pub fn classify(error: DataFusionError, sql: &str, memory_limit_mb: u64) -> QueryError {
    let position = error
        .diagnostic()
        .and_then(|diagnostic| diagnostic.span)
        .filter(|span| span.start.line > 0)
        .map(|span| SqlPosition {
            line: span.start.line,
            column: span.start.column,
        });
    let root = error.find_root();
    let message = root.strip_backtrace();
    match root {
        DataFusionError::ResourcesExhausted(detail) => QueryError::MemoryLimit {
            limit_mb: memory_limit_mb,
            detail: detail.clone(),
        },
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => {
            let position = position.or_else(|| position_in_message(&message));
            let message = match position {
                Some(at) => format!("{message}\n{}", caret(sql, at)),
                None => message,
            };
            QueryError::Sql { message, position }
        }
        DataFusionError::External(inner) if inner.downcast_ref::<QueryError>().is_some() => {
            match inner.downcast_ref::<QueryError>() {
                Some(QueryError::Forecast(text)) => QueryError::Forecast(text.clone()),
                Some(QueryError::ReadOnly { what }) => QueryError::ReadOnly { what: what.clone() },
                Some(other) => QueryError::Execution(other.to_string()),
                None => QueryError::Execution(message),
            }
        }
        _ => QueryError::Execution(message),
    }
}

/// The SQL line of `at` with a caret under the column.
fn caret(sql: &str, at: SqlPosition) -> String {
    let line = sql.lines().nth(at.line.saturating_sub(1) as usize).unwrap_or("");
    format!("  {line}\n  {}^", " ".repeat(at.column.saturating_sub(1) as usize))
}

impl RowCount for QueryAnswer {
    fn row_count(&self) -> usize {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_positions_are_found() {
        let at = position_in_message("sql parser error: Expected: end of statement, found: x at Line: 2, Column: 14");
        assert_eq!(at, Some(SqlPosition { line: 2, column: 14 }));
        assert_eq!(position_in_message("no position"), None);
        assert_eq!(caret("SELEC 1", SqlPosition { line: 1, column: 3 }), "  SELEC 1\n    ^");
    }
}
