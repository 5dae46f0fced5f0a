//! The console's HTTP client: one request per connection (`Connection: close`) to a service's
//! JSON API, with a deadline, and every failure turned into an [`ApiError`] that names the service,
//! its address, the request and what the service said. A few dozen lines of HTTP/1.1 keep an HTTP
//! client crate out of the tree; the services are ours and speak plain HTTP/1.1 on loopback or a
//! private network.
//!
//! Start at [`Upstream::get_json`].

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest answer the console reads from a service (a page of 1,000 topics is ~400 kB).
const MAX_ANSWER: usize = 32 << 20;

/// One service the console talks to.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// What it is, for error messages: `nameserver`, `tracer`, `query`, `broker`.
    pub service: &'static str,
    /// `host:port` of its HTTP API.
    pub addr: String,
    /// How long one request may take, connect to last byte.
    pub timeout: Duration,
    /// TLS to the service, verified against a CA; `None`: plaintext.
    pub tls: Option<std::sync::Arc<meridian_proto::tls::TlsClient>>,
}

/// A failed call to a service, with everything a person needs to see what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The service's kind (`nameserver`, ...).
    pub service: String,
    /// Its address.
    pub addr: String,
    /// `METHOD /path`.
    pub request: String,
    /// The HTTP status, `None` when no answer came.
    pub status: Option<u16>,
    /// The service's error code (`failed_precondition`, `sql`, ...), or `unreachable`, `timeout`,
    /// `malformed`.
    pub code: String,
    /// What the service said, or why there was no answer.
    pub message: String,
    /// Line and column in the SQL, for query errors that have one.
    pub position: Option<(u64, u64)>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(
                f,
                "the {} at {} answered {} ({}) to {}: {}",
                self.service, self.addr, status, self.code, self.request, self.message
            ),
            None => write!(
                f,
                "the {} at {} did not answer {}: {}",
                self.service, self.addr, self.request, self.message
            ),
        }
    }
}

/// A service's answer: status, content type and body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The `Content-Type` header, empty when absent.
    pub content_type: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Upstream {
    /// A service at `addr` (`host:port`) with a request deadline.
    pub fn new(service: &'static str, addr: impl Into<String>, timeout: Duration) -> Upstream {
        Upstream {
            service,
            addr: addr.into(),
            timeout,
            tls: None,
        }
    }

    /// The same service over TLS (when `tls` is set).
    pub fn with_tls(mut self, tls: Option<std::sync::Arc<meridian_proto::tls::TlsClient>>) -> Upstream {
        self.tls = tls;
        self
    }

    fn error(&self, request: &str, status: Option<u16>, code: &str, message: String) -> ApiError {
        ApiError {
            service: self.service.to_owned(),
            addr: self.addr.clone(),
            request: request.to_owned(),
            status,
            code: code.to_owned(),
            message,
            position: None,
        }
    }

    /// `GET path`, parsed as JSON; any status but 2xx is an error.
    pub async fn get_json(&self, path: &str) -> Result<Value, ApiError> {
        let reply = self.request("GET", path, None).await?;
        self.json_of("GET", path, reply)
    }

    /// `GET path` where the service answers a JSON body also with some error statuses (a broker's
    /// `/api/health` is 503 with its state once its store failed): those answers are `Ok` too.
    pub async fn get_json_also(&self, path: &str, also: &[u16]) -> Result<Value, ApiError> {
        let reply = self.request("GET", path, None).await?;
        if also.contains(&reply.status)
            && let Ok(value) = serde_json::from_slice::<Value>(&reply.body)
            && value.is_object()
        {
            return Ok(value);
        }
        self.json_of("GET", path, reply)
    }

    /// `method path` with a JSON body, the answer parsed as JSON; any status but 2xx is an error.
    pub async fn send_json(&self, method: &str, path: &str, body: &Value) -> Result<Value, ApiError> {
        let bytes = body.to_string().into_bytes();
        let reply = self.request(method, path, Some(("application/json", bytes))).await?;
        self.json_of(method, path, reply)
    }

    /// `method path` with any body; the raw answer, whatever its status.
    pub async fn request(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<Reply, ApiError> {
        let request = format!("{method} {path}");
        match tokio::time::timeout(self.timeout, self.exchange(method, path, body)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(message)) => Err(self.error(&request, None, "unreachable", message)),
            Err(_) => Err(self.error(
                &request,
                None,
                "timeout",
                format!(
                    "no answer within {} ms: is the service overloaded or stuck? (its log says more)",
                    self.timeout.as_millis()
                ),
            )),
        }
    }

    async fn exchange(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<Reply, String> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|error| format!("cannot connect ({error}): is it running, and is the address right?"))?;
        let mut stream = meridian_proto::tls::connect_maybe_tls(self.tls.as_deref(), &self.addr, stream)
            .await
            .map_err(|error| error.to_string())?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: meridian-console\r\n",
            self.addr
        );
        // The logged-in user's session (or the login call's Basic): the APIs see who acts.
        if let Some(authorization) = crate::session::authorization() {
            head.push_str(&format!("Authorization: {authorization}\r\n"));
        }
        let body = match body {
            Some((content_type, bytes)) => {
                head.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                    bytes.len()
                ));
                bytes
            }
            None => Vec::new(),
        };
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|error| format!("sending the request failed: {error}"))?;
        stream
            .write_all(&body)
            .await
            .map_err(|error| format!("sending the request body failed: {error}"))?;
        let mut raw = Vec::new();
        let mut limited = (&mut stream).take(MAX_ANSWER as u64 + 1);
        match limited.read_to_end(&mut raw).await {
            Ok(_) => {}
            // A TLS peer that closes without close_notify after a complete answer.
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(error) => return Err(format!("reading the answer failed: {error}")),
        }
        if raw.len() > MAX_ANSWER {
            return Err(format!(
                "the answer is larger than the console's limit of {} MB: ask for a smaller page",
                MAX_ANSWER >> 20
            ));
        }
        parse_response(&raw)
    }

    fn json_of(&self, method: &str, path: &str, reply: Reply) -> Result<Value, ApiError> {
        let request = format!("{method} {path}");
        let parsed: Option<Value> = serde_json::from_slice(&reply.body).ok();
        if (200..300).contains(&reply.status) {
            return parsed.ok_or_else(|| {
                self.error(
                    &request,
                    Some(reply.status),
                    "malformed",
                    format!(
                        "the answer is not JSON: {}",
                        String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)])
                    ),
                )
            });
        }
        Err(self.status_error(&request, reply.status, parsed, &reply.body))
    }

    /// The error of a non-2xx answer in any of the services' error shapes: the nameserver's and
    /// the broker's `{"error": {"code", "message"}}`, the tracer's `{"error", "code"}`, the query
    /// service's `{"error", "kind", "position"}`.
    pub fn status_error(&self, request: &str, status: u16, parsed: Option<Value>, body: &[u8]) -> ApiError {
        let mut error = self.error(request, Some(status), "error", String::new());
        match parsed {
            Some(value) if value["error"].is_object() => {
                error.code = value["error"]["code"].as_str().unwrap_or("error").to_owned();
                error.message = value["error"]["message"].as_str().unwrap_or_default().to_owned();
            }
            Some(value) if value["error"].is_string() => {
                error.message = value["error"].as_str().unwrap_or_default().to_owned();
                error.code = value["code"]
                    .as_str()
                    .or_else(|| value["kind"].as_str())
                    .unwrap_or("error")
                    .to_owned();
                if let (Some(line), Some(column)) =
                    (value["position"]["line"].as_u64(), value["position"]["column"].as_u64())
                {
                    error.position = Some((line, column));
                }
            }
            _ => {
                error.message = String::from_utf8_lossy(&body[..body.len().min(500)]).trim().to_owned();
                if error.message.is_empty() {
                    error.message = "(an empty answer)".to_owned();
                }
            }
        }
        error
    }
}

/// Splits a whole HTTP/1.1 response into status, content type and (de-chunked) body.
fn parse_response(raw: &[u8]) -> Result<Reply, String> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| "the answer ended before its headers did".to_owned())?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("the answer's status line is not HTTP: {status_line:?}"))?;
    let mut content_type = String::new();
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-type") {
            content_type = value.to_owned();
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or_else(|| "a chunked answer ended inside a chunk header".to_owned())?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|_| format!("a chunk size is not hex: {size_text:?}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if raw.len() < size + 2 {
            return Err("a chunked answer ended inside a chunk".to_owned());
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Percent-encodes `text` for a path segment or a query value (everything but unreserved bytes).
pub fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Decodes an `application/x-www-form-urlencoded` body or query string into pairs.
pub fn decode_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(name), decode_component(value))
        })
        .collect()
}

fn decode_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_percent_and_broken_escapes() {
        assert_eq!(
            decode_form("name=a+b&reason=%3Cscript%3E&x=100%25&bad=%zz&end=%4"),
            vec![
                ("name".to_owned(), "a b".to_owned()),
                ("reason".to_owned(), "<script>".to_owned()),
                ("x".to_owned(), "100%".to_owned()),
                ("bad".to_owned(), "%zz".to_owned()),
                ("end".to_owned(), "%4".to_owned()),
            ]
        );
        assert_eq!(encode("a b/<c>"), "a%20b%2F%3Cc%3E");
    }

    #[test]
    fn chunked_answers_are_joined() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/csv\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let reply = parse_response(raw).unwrap();
        assert_eq!(
            (reply.status, reply.content_type.as_str(), reply.body.as_slice()),
            (200, "text/csv", &b"abcde"[..])
        );
    }

    #[tokio::test]
    async fn an_unreachable_service_is_named_with_its_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let upstream = Upstream::new("nameserver", addr.to_string(), Duration::from_secs(2));
        let error = upstream.get_json("/api/cluster").await.unwrap_err();
        assert_eq!(error.code, "unreachable");
        let text = error.to_string();
        assert!(
            text.contains("nameserver") && text.contains(&addr.to_string()) && text.contains("GET /api/cluster"),
            "{text}"
        );
    }
}
