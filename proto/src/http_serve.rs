//! Serving an axum router on a bound listener, with or without TLS: the one place every
//! Meridian HTTP listener is served (the broker's, the nameserver's, the tracer's, the query
//! service's and the console's routers; the binary binds and composes them). Feature `http`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tls::{Accepted, MaybeTls, ServerStream, TlsServer};

/// How long an HTTP client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
) -> std::io::Result<()> {
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
