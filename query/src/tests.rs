//! The query service over a generated archive with known contents ([`GenerateSpec::test_archive`]):
//! the `.slt` files, the refusals and limits, what is visible, the HTTP API, and forecasts.

use std::sync::Arc;

use meridian_archive::store::ArchiveStore;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use crate::config::QueryConfig;
use crate::error::QueryError;
use crate::forecast;
use crate::generate::{self, GenerateSpec};
use crate::metrics::QueryMetrics;
use crate::service::QueryService;

/// A local archive made from the test spec, and a service over it.
async fn service_with(config: QueryConfig) -> (tempfile::TempDir, ArchiveStore, QueryService) {
    let dir = tempfile::tempdir().unwrap();
    let store = ArchiveStore::local(dir.path()).unwrap();
    let report = generate::generate(&store, &GenerateSpec::test_archive(), |_| {})
        .await
        .unwrap();
    assert_eq!((report.messages, report.trace_events), (2400, 960));
    let service = QueryService::open(store.clone(), config, Arc::new(QueryMetrics::default()))
        .await
        .unwrap();
    (dir, store, service)
}

async fn count(service: &QueryService, sql: &str) -> String {
    let answer = service.sql(sql).await.unwrap_or_else(|error| panic!("{sql}: {error}"));
    crate::slt::rows(&answer).join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_pass_over_the_generated_archive() {
    let (_dir, _store, service) = service_with(QueryConfig::default()).await;
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "slt"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut failures = Vec::new();
    for file in &files {
        failures.extend(crate::slt::run_file(&service, file).await);
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_limits_are_clear_errors_and_the_service_keeps_serving() {
    let config = QueryConfig {
        timeout_secs: 1.5,
        ..QueryConfig::default()
    };
    let (_dir, _store, service) = service_with(config).await;
    let healthy = || async { count(&service, "SELECT count(*) FROM messages").await };
    assert_eq!(healthy().await, "2400");

    for (sql, what) in [
        (
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
            "CREATE EXTERNAL TABLE",
        ),
        ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
        ("DROP VIEW hourly_volume", "DROP VIEW"),
        ("INSERT INTO messages SELECT * FROM messages", "INSERT"),
        ("COPY (SELECT 1) TO '/tmp/meridian-copy.parquet'", "COPY"),
        ("SET datafusion.execution.batch_size = 1", "SET"),
        (
            "EXPLAIN ANALYZE INSERT INTO messages SELECT * FROM messages",
            "EXPLAIN ANALYZE",
        ),
    ] {
        let error = service.sql(sql).await.unwrap_err();
        assert!(matches!(error, QueryError::ReadOnly { .. }), "{sql}: {error}");
        assert_eq!(error.status(), 403);
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("{what} is refused")) && text.contains("read-only"),
            "{sql}: {text}"
        );
    }
    assert!(!std::path::Path::new("/tmp/meridian-copy.parquet").exists());

    // Reads outside the archive: no URL tables, no other store.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/hostname'",
        "SELECT * FROM read_parquet('/etc/x.parquet')",
    ] {
        let error = service.sql(sql).await.unwrap_err();
        assert!(matches!(error, QueryError::Sql { .. }), "{sql}: {error}");
    }

    // Malformed SQL points at the position.
    let error = service
        .sql("SELECT count(*)\nFROM messages\nWHERE topic = = 'x'")
        .await
        .unwrap_err();
    let position = error.position().unwrap_or_else(|| panic!("no position in {error}"));
    assert_eq!(position.line, 3, "{error}");
    assert!(error.to_string().contains('^'), "{error}");
    let error = service.sql("SELECT nope FROM messages").await.unwrap_err();
    assert!(error.to_string().contains("nope"), "{error}");
    assert_eq!(error.status(), 400);

    // A runaway query is cancelled at the timeout.
    let started = std::time::Instant::now();
    let error = service
        .sql("SELECT sum(value % 7) FROM generate_series(1, 1000000000000)")
        .await
        .unwrap_err();
    assert!(matches!(error, QueryError::Timeout { .. }), "{error}");
    assert!(error.to_string().contains("query.timeout_secs"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    // A query over the memory limit that cannot spill fails cleanly.
    let tight = QueryConfig {
        memory_limit_mb: 16,
        timeout_secs: 300.0,
        ..QueryConfig::default()
    };
    let tight = QueryService::open(service.store().clone(), tight, Arc::new(QueryMetrics::default()))
        .await
        .unwrap();
    let error = tight
        // A hash join's build side must fit in memory: it never spills, so
        // this fails the same way on every machine (a grouped aggregate
        // would spill and succeed).
        .sql(
            "SELECT count(*) FROM generate_series(1, 4000000) a \
             JOIN generate_series(1, 4000000) b ON a.value = b.value",
        )
        .await
        .unwrap_err();
    assert!(matches!(error, QueryError::MemoryLimit { .. }), "{error}");
    assert!(error.to_string().contains("memory_limit_mb = 16"), "{error}");
    assert_eq!(count(&tight, "SELECT count(*) FROM messages").await, "2400");
    // A grouped aggregate over the limit spills to disk and answers: 1M groups of an i64 key
    // need far more than 16 MiB. The keys are shuffled (v * 7919 mod the prime 1000003 is one to
    // one), or DataFusion would aggregate the sorted series as a stream, in no memory at all.
    // EXPLAIN ANALYZE shows that it spilled.
    let grouped = "SELECT count(*) FROM (SELECT value * 7919 % 1000003 AS k, count(*) \
                   FROM generate_series(1, 1000000) GROUP BY k)";
    assert_eq!(count(&tight, grouped).await, "1000000");
    let analyzed = count(&tight, &format!("EXPLAIN ANALYZE {grouped}")).await;
    let spilled = analyzed
        .split("spill_count=")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        .sum::<u64>();
    assert!(spilled > 0, "no spill under a 16 MiB limit:\n{analyzed}");

    // Too many rows for one answer.
    let small = QueryConfig {
        max_result_rows: 100,
        ..QueryConfig::default()
    };
    let limited = QueryService::open(service.store().clone(), small, Arc::new(QueryMetrics::default()))
        .await
        .unwrap();
    let error = limited.sql("SELECT msg_id FROM messages").await.unwrap_err();
    assert!(matches!(error, QueryError::TooManyRows { limit: 100 }), "{error}");

    assert_eq!(healthy().await, "2400");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_committed_files_are_visible_and_new_segments_appear() {
    let config = QueryConfig {
        refresh_secs: 0.0,
        ..QueryConfig::default()
    };
    let (_dir, store, service) = service_with(config).await;
    // A crash can leave a torn file no manifest names: queries never see it.
    store
        .inner
        .put(
            &Path::from("messages/topic=topic-0/date=2026-11-25/broker-a-99999999999999999999.parquet"),
            PutPayload::from(b"PAR1 torn".to_vec()),
        )
        .await
        .unwrap();
    store
        .inner
        .put(
            &Path::from("traces/date=2026-11-25/broker-a-99999999999999999999.parquet"),
            PutPayload::from(b"PAR1 torn".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(count(&service, "SELECT count(*) FROM messages").await, "2400");
    assert_eq!(count(&service, "SELECT count(*) FROM traces").await, "960");

    // Another broker's archive committed later shows up on the next query.
    let spec = GenerateSpec {
        broker: "broker-b".into(),
        messages: 300,
        ..GenerateSpec::test_archive()
    };
    generate::generate(&store, &spec, |_| {}).await.unwrap();
    assert_eq!(count(&service, "SELECT count(*) FROM messages").await, "2700");
    assert_eq!(
        count(
            &service,
            "SELECT broker, count(*) FROM messages GROUP BY broker ORDER BY broker"
        )
        .await,
        "broker-a 2400\nbroker-b 300"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_answers_json_csv_and_arrow_and_errors_are_json() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    let (_dir, _store, service) = service_with(QueryConfig::default()).await;
    let router = crate::http::router(Arc::new(service));
    let call = |request: Request<Body>| {
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|value| value.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
            (status, content_type, body)
        }
    };
    let sql = "SELECT topic, count(*) AS n FROM messages GROUP BY topic ORDER BY topic";
    let (status, content_type, body) = call(
        Request::post("/api/sql")
            .header("content-type", "application/json")
            .body(Body::from(serde_json::json!({ "sql": sql }).to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "application/json"));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["rows"],
        serde_json::json!([["topic-0", 800], ["topic-1", 800], ["topic-2", 800]])
    );
    assert_eq!(json["columns"][1]["name"], "n");

    let (status, content_type, body) = call(Request::post("/api/sql?format=csv").body(Body::from(sql)).unwrap()).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::OK, "text/csv; charset=utf-8")
    );
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "topic,n\ntopic-0,800\ntopic-1,800\ntopic-2,800\n"
    );

    let (status, content_type, body) =
        call(Request::post("/api/sql?format=arrow").body(Body::from(sql)).unwrap()).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::OK, "application/vnd.apache.arrow.stream")
    );
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None).unwrap();
    let rows: usize = reader.map(|batch| batch.unwrap().num_rows()).sum();
    assert_eq!(rows, 3);

    let (status, _, body) = call(
        Request::post("/api/sql")
            .body(Body::from("DELETE FROM messages"))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["kind"], "read_only");
    let (status, _, body) = call(Request::post("/api/sql").body(Body::from("SELEC 1")).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["position"]["line"], 1, "{json}");
    let (status, _, _) = call(Request::post("/api/sql?format=xml").body(Body::from(sql)).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A deterministic synthetic hourly series: level, linear trend, daily seasonality, noise.
fn synthetic(hours: usize, seed: u64, noise: f64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut gaussian = move || {
        // Box-Muller on a 64-bit LCG: a normal draw without a dependency.
        let mut uniform = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (u1, u2) = (uniform(), uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    (0..hours)
        .map(|hour| {
            let daily = 300.0 * (2.0 * std::f64::consts::PI * (hour % 24) as f64 / 24.0).sin();
            1000.0 + 2.0 * hour as f64 + daily + noise * gaussian()
        })
        .collect()
}

#[test]
fn forecasts_of_trend_and_daily_season_are_accurate_and_intervals_cover_the_truth() {
    // 20 series of 21 days of hours; forecast the next 24 hours of each.
    let (history, horizon) = (21 * 24, 24);
    let (mut absolute_percent, mut inside, mut total) = (0.0, 0usize, 0usize);
    for seed in 0..20 {
        let series = synthetic(history + horizon, seed, 40.0);
        let (past, future) = series.split_at(history);
        let forecast = forecast::forecast_values(past, 0, 3_600_000, horizon, 0.95).unwrap();
        assert_eq!(forecast.model, "MSTL(24)+AutoETS");
        for (index, truth) in future.iter().enumerate() {
            absolute_percent += ((forecast.prediction[index] - truth) / truth).abs();
            inside += usize::from(forecast.lower[index] <= *truth && *truth <= forecast.upper[index]);
            total += 1;
        }
    }
    let mape = absolute_percent / total as f64;
    let coverage = inside as f64 / total as f64;
    println!(
        "MAPE {:.2}%, 95% interval coverage {:.1}% over {total} forecasts",
        mape * 100.0,
        coverage * 100.0
    );
    assert!(mape <= 0.10, "MAPE {mape}");
    // Nominal 95%: measured 94.6% (and MAPE 1.75%) with these seeds.
    assert!((0.90..=0.99).contains(&coverage), "coverage {coverage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_sql_over_readable_topics_sees_no_other_rows_whatever_the_query_shape() {
    let (_dir, _store, service) = service_with(QueryConfig::default()).await;
    // The generated archive spreads 2400 messages over topic-0, topic-1 and topic-2 evenly.
    assert_eq!(count(&service, "SELECT count(*) FROM messages").await, "2400");
    let readable = vec!["topic-1".to_owned()];
    let over = |sql: &'static str, topics: Option<Vec<String>>| {
        let service = &service;
        async move {
            let answer = service
                .sql_over(sql, topics.as_deref())
                .await
                .unwrap_or_else(|error| panic!("{sql}: {error}"));
            crate::slt::rows(&answer).join("\n")
        }
    };
    for sql in [
        "SELECT count(*) FROM messages WHERE topic <> 'topic-1'",
        "SELECT count(*) FROM (SELECT * FROM messages UNION ALL SELECT * FROM messages) WHERE topic = 'topic-0'",
        "SELECT count(*) FROM messages WHERE msg_id IN (SELECT msg_id FROM messages WHERE topic = 'topic-2')",
        "SELECT count(*) FROM messages a JOIN messages b ON a.msg_id = b.msg_id WHERE b.topic = 'topic-0'",
        "SELECT count(*) FROM hourly_volume WHERE topic = 'topic-2'",
        "SELECT count(*) FROM traces WHERE topic IS NOT NULL AND topic <> 'topic-1'",
        "SELECT count(*) FROM consume_latency WHERE topic = 'topic-0'",
        "SELECT count(*) FROM datafusion.public.messages WHERE topic = 'topic-0'",
    ] {
        assert_eq!(over(sql, Some(readable.clone())).await, "0", "{sql} escaped the filter");
    }
    assert_eq!(
        over("SELECT count(*) FROM messages", Some(readable.clone())).await,
        "800"
    );
    assert_eq!(
        over("SELECT DISTINCT topic FROM messages", Some(readable.clone())).await,
        "topic-1"
    );
    assert_eq!(over("SELECT count(*) FROM messages", Some(Vec::new())).await, "0");
    // Unrestricted callers still see everything, and the shared session was not changed.
    assert_eq!(over("SELECT count(*) FROM messages", None).await, "2400");
    assert_eq!(count(&service, "SELECT count(DISTINCT topic) FROM messages").await, "3");
    // The read-only rule holds in the restricted session too.
    let error = service
        .sql_over("CREATE TABLE t AS SELECT 1", Some(&readable))
        .await
        .unwrap_err();
    assert!(matches!(error, QueryError::ReadOnly { .. }), "{error}");
}
