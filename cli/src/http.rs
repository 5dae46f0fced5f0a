//! Binding and serving an HTTP listener for any service's router. The routers belong to their
//! services (`meridian_broker::http`, `meridian_nameserver::http`, `meridian_query::http`, the
//! tracer's, the console's), and serving them with or without TLS to `meridian_proto::http_serve`;
//! this file binds the port with an error that names the flag to change.

use std::net::SocketAddr;

use axum::Router;
/// Serves a router with or without TLS (the one place HTTP listeners are served).
pub use meridian_proto::http_serve::serve_http;

/// `/metrics` alone, for processes without a broker (it lives with the broker's HTTP API).
pub use meridian_broker::http::metrics_router;

/// Binds the HTTP listener, with an error that says what to do when the port is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|error| {
        anyhow::anyhow!("binding HTTP listener on {addr}: {error} (is another meridian running? choose another port with --http-listen)")
    })
}

/// Serves `router` on `listener` until `shutdown` completes, without TLS.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Ok(serve_http(listener, router, None, shutdown).await?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meridian_proto::tls::TlsServer;
    use tokio::io::AsyncWriteExt;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;

    /// `GET /hello` over TLS trusting `ca`: the status line, or why it failed.
    async fn get(addr: SocketAddr, ca: &std::path::Path) -> Result<String, String> {
        let tls = meridian_proto::tls::TlsClient::new("ca", ca, None).map_err(|error| error.to_string())?;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|error| error.to_string())?;
        let mut stream = meridian_proto::tls::connect_maybe_tls(Some(&tls), &addr.to_string(), stream)
            .await
            .map_err(|error| error.to_string())?;
        stream
            .write_all(format!("GET /hello HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(|error| error.to_string())?;
        let mut answer = Vec::new();
        meridian_proto::tls::read_to_close(&mut stream, &mut answer)
            .await
            .map_err(|error| error.to_string())?;
        Ok(String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_owned())
    }

    #[tokio::test]
    async fn serve_http_reloads_its_certificate_without_restart() {
        let root = std::env::temp_dir().join(format!("meridian-http-tls-{}", std::process::id()));
        let first = crate::dev_tls::ensure(&root.join("first"), &[]).unwrap();
        let second = crate::dev_tls::ensure(&root.join("second"), &[]).unwrap();
        let server = TlsServer::load(&first.settings).unwrap().unwrap();
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(server.clone().watch(Duration::from_millis(50), stop.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
        let stopped = stop.clone();
        tasks.spawn(serve_http(listener, router, Some(server), stopped.cancelled_owned()));
        tasks.close();
        assert!(get(addr, &first.ca_file).await.unwrap().contains("200"));
        assert!(
            get(addr, &second.ca_file).await.is_err(),
            "the second CA does not sign the first certificate"
        );

        // Swap in the second node certificate in place, key first.
        for file in ["node.key", "node.pem"] {
            std::fs::copy(root.join("second/tls").join(file), root.join("first/tls").join(file)).unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while get(addr, &second.ca_file).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new certificate was never served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(get(addr, &first.ca_file).await.is_err());
        stop.cancel();
        tasks.wait().await;
        std::fs::remove_dir_all(&root).unwrap();
    }
}
