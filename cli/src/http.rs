//! The HTTP listener: `/metrics` (Prometheus) and the JSON admin API (`docs/api.md`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meridian_broker::Broker;
use meridian_broker::replication::{Replication, Role};
use meridian_broker::store::MessageStore;
use prometheus_client::registry::Registry;
use serde_json::json;

#[derive(Clone)]
struct HttpState {
    broker_name: String,
    store: Arc<MessageStore>,
    replication: Arc<Replication>,
}

/// The routes of a broker process: its health (with its place in its group), its local topics
/// and `/metrics`.
pub fn router(registry: Arc<Registry>, broker_name: String, broker: &Broker) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/broker/topics", get(topics))
        .with_state(HttpState {
            broker_name,
            store: broker.store(),
            replication: broker.replication(),
        })
        .merge(metrics_router(registry))
}

/// `/metrics` alone, for processes without a broker.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(registry)
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {error}"),
        )
            .into_response(),
    }
}

/// The broker's state; 503 once its store failed (a disk error: restart it).
async fn health(State(state): State<HttpState>) -> (StatusCode, Json<serde_json::Value>) {
    let replication = &state.replication;
    let role = replication.role();
    let master = match &role {
        Role::Slave {
            master, master_addr, ..
        } => json!({"name": master, "addr": master_addr}),
        _ => serde_json::Value::Null,
    };
    let config = replication.config();
    let failure = state.store.failure();
    let status = if failure.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({
            "status": if failure.is_some() { "unhealthy" } else { "ok" },
            "store_failure": failure,
            "version": env!("CARGO_PKG_VERSION"),
            "broker": {
                "name": state.broker_name,
                "committed_offset": state.store.committed_offset(),
                "flushed_offset": state.store.flushed_offset(),
                "confirmed_offset": state.store.confirmed_offset(),
                "dispatched_offset": state.store.dispatched_offset(),
                "flush_mode": state.store.config().flush_mode,
            },
            "replication": {
                "role": role.name(),
                "epoch": role.epoch(),
                "master": master,
                "writable": replication.check_writable().is_ok(),
                "lease_remaining_ms": replication.lease_remaining().map(|lease| lease.as_millis() as u64),
                "ack_policy": config.ack_policy,
                "replicas": config.replicas,
                "in_sync": replication.in_sync(),
                "slaves": replication.slaves(),
                "epochs": state.store.epochs().iter().map(|entry| json!({"epoch": entry.epoch, "start_offset": entry.start_offset})).collect::<Vec<_>>(),
            }
        })),
    )
}

async fn topics(State(state): State<HttpState>) -> Json<serde_json::Value> {
    let topics: Vec<_> = state
        .store
        .topics()
        .into_iter()
        .map(|(name, queues)| {
            let queues: Vec<_> = (0..queues)
                .filter_map(|queue_id| state.store.queue_bounds(&name, queue_id).ok().map(|bounds| (queue_id, bounds)))
                .map(|(queue_id, bounds)| json!({"queue_id": queue_id, "min_offset": bounds.min_offset, "max_offset": bounds.max_offset}))
                .collect();
            json!({"name": name, "queues": queues})
        })
        .collect();
    Json(json!({ "topics": topics }))
}

/// Binds the HTTP listener, with an error that says what to do when the port is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|error| {
        anyhow::anyhow!("binding HTTP listener on {addr}: {error} (is another meridian running? choose another port with --http-listen)")
    })
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
