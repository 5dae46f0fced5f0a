//! Binding and serving an HTTP listener for any service's router. The routers belong to their
//! services (`meridian_broker::http`, `meridian_nameserver::http`, `meridian_query::http`, the
//! tracer's, the console's); this file binds the port with an error that says what to do, and
//! serves it with or without TLS ([`serve_http`], the one place HTTP listeners are served).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use meridian_proto::tls::{Accepted, MaybeTls, ServerStream, TlsServer};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// `/metrics` alone, for processes without a broker (it lives with the broker's HTTP API).
pub use meridian_broker::http::metrics_router;

/// How long an HTTP client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    serve_http(listener, router, None, shutdown).await
}

type HttpStream = ServerStream;

/// Connections that finished their TLS handshake (or were let in as plaintext), for axum.
struct TlsListener {
    accepted: mpsc::Receiver<(HttpStream, SocketAddr)>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = HttpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (HttpStream, SocketAddr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The acceptor stopped: shutdown is under way; axum's graceful shutdown ends the loop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// Serves `router` on `listener` until `shutdown` completes: plaintext without `tls`; with it,
/// as its mode says (`permissive`: TLS and plaintext on the one port, told apart by the first
/// byte; `required`: plaintext clients get a 400 that says to use https). Handshakes run as
/// tasks of their own, so a slow client never holds up the others.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<TlsServer>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The client's address reaches the handlers, for the audit log's "from".
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let Some(tls) = tls else {
        axum::serve(listener, service).with_graceful_shutdown(shutdown).await?;
        return Ok(());
    };
    let local_addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let handshakes = TaskTracker::new();
    let (accepted_tx, accepted) = mpsc::channel(64);
    handshakes.spawn(accept_loop(
        listener,
        tls,
        accepted_tx,
        handshakes.clone(),
        stop.clone(),
    ));
    let stopping = stop.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.cancel();
    };
    // `tap_io` gives the connect info (the client's address) for a custom listener.
    let listener = TlsListener { accepted, local_addr }.tap_io(|_| {});
    let served = axum::serve(listener, service).with_graceful_shutdown(shutdown).await;
    stop.cancel();
    handshakes.close();
    handshakes.wait().await;
    served?;
    Ok(())
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Arc<TlsServer>,
    accepted: mpsc::Sender<(HttpStream, SocketAddr)>,
    handshakes: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            next = listener.accept() => match next {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!(%error, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let tls = tls.clone();
        let accepted = accepted.clone();
        let stop = stop.clone();
        handshakes.spawn(async move {
            let handshake = tokio::select! {
                _ = stop.cancelled() => return,
                handshake = tls.accept(stream, HANDSHAKE_TIMEOUT) => handshake,
            };
            let stream = match handshake {
                Ok(Accepted::Plain(stream)) => MaybeTls::Plain(stream),
                Ok(Accepted::Tls(stream)) => MaybeTls::Tls(stream),
                Ok(Accepted::PlaintextRefused(mut stream)) => {
                    tracing::warn!(%peer, "plaintext http request refused: [tls] mode is required");
                    let body = "this server requires HTTPS ([tls] mode = \"required\"): use https:// and trust the cluster's CA (MERIDIAN_TLS_CA, or curl --cacert)\n";
                    let answer = format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        stream.write_all(answer.as_bytes()).await?;
                        stream.shutdown().await
                    })
                    .await;
                    return;
                }
                Err(error) => {
                    tracing::debug!(%peer, %error, "http tls handshake failed");
                    return;
                }
            };
            let _ = accepted.send((stream, peer)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

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
