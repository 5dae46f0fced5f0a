//! Binding and serving an HTTP listener for any service's router. The routers belong to their
//! services (`meridian_broker::http`, `meridian_nameserver::http`, `meridian_query::http`, the
//! tracer's, the console's); this file only binds the port with an error that says what to do.

use std::net::SocketAddr;

use axum::Router;

/// `/metrics` alone, for processes without a broker (it lives with the broker's HTTP API).
pub use meridian_broker::http::metrics_router;

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
    // The client's address reaches the handlers, for the audit log's "from".
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
