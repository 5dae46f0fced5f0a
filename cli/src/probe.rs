//! A minimal HTTP/1.0 `GET` over loopback or the LAN, for health probes and the JSON admin reads
//! of `cluster status`, `alerts` and `client` commands: two seconds at most, `None` when the
//! service cannot be reached. Over TLS when `MERIDIAN_TLS_CA` is set.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over HTTP/1.0: the status and the body. None when it cannot be reached in time.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let tls = crate::credentials::tls_from_env();
        let mut stream = meridian_proto::tls::connect_maybe_tls(tls.as_deref(), &addr.to_string(), stream)
            .await
            .ok()?;
        stream
            .write_all(
                format!(
                    "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{}\r\n",
                    crate::credentials::authorization_line()
                )
                .as_bytes(),
            )
            .await
            .ok()?;
        let mut response = Vec::new();
        match stream.read_to_end(&mut response).await {
            Ok(_) => {}
            // A TLS peer that closes without close_notify after a complete answer.
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
            Err(_) => return None,
        }
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), fetch).await.ok().flatten()
}

pub async fn http_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let (status, body) = http_get(addr, path).await?;
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}
