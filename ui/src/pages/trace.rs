//! Message & Trace (`/trace?q=...`): search by msgId (Meridian's or a RocketMQ client's), by
//! offset id (`broker:0000...`) or by key; one message's journey as a picture (hops on a time axis,
//! a lane per data center, each hop's latency) and as a table of steps.

use std::fmt::Write as _;

use serde_json::Value;

use crate::client::{ApiError, encode};
use crate::html::{Nav, attr, error_box, esc, page, pager, text_of};
use crate::svg;

/// Messages per page of a key search.
pub const PAGE: usize = 20;

/// What was searched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Nothing yet.
    Nothing,
    /// A msgId (32 hex digits) or an offset id (`broker:16 hex digits`).
    Id(String),
    /// A key.
    Key(String),
}

/// Whether `q` names one message (msgId or offset id) or is a key.
pub fn classify(q: &str) -> Lookup {
    let q = q.trim();
    if q.is_empty() {
        return Lookup::Nothing;
    }
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let is_msg_id = q.len() == 32 && hex(q);
    let is_offset_id = q
        .rsplit_once(':')
        .is_some_and(|(broker, offset)| !broker.is_empty() && offset.len() == 16 && hex(offset));
    if is_msg_id || is_offset_id {
        Lookup::Id(q.to_owned())
    } else {
        Lookup::Key(q.to_owned())
    }
}

/// What the page shows.
pub struct TraceView<'a> {
    /// The search box.
    pub q: &'a str,
    /// What `q` is.
    pub lookup: Lookup,
    /// The page of a key search.
    pub offset: usize,
    /// The tracer's answer: a timeline (id) or `{total, messages}` (key).
    pub answer: Option<Result<Value, ApiError>>,
    /// The message's row in the archive ([`archive_sql`]), when looked up by msgId with a query
    /// service.
    pub archived: Option<Result<Value, ApiError>>,
    /// The message from its broker (`GET /api/broker/message?offset_id=`), when its offset id is
    /// known (searched for, or from the timeline) and the console knows broker HTTP APIs.
    pub from_broker: Option<Result<Value, ApiError>>,
}

/// Body characters the page shows; the rest is cut (the archive and SQL have it whole).
pub const BODY_SHOWN: usize = 4096;

/// The SQL that reads a message's properties and body from the archive by msgId.
pub fn archive_sql(msg_id: &str) -> String {
    format!(
        "SELECT broker, queue_id, queue_offset, store_timestamp, properties, body_size, encode(body, 'base64') AS body \
FROM messages WHERE msg_id = {} LIMIT 1",
        crate::pages::others::sql_string(msg_id)
    )
}

/// Standard base64 (with or without padding) to bytes; other characters are skipped.
pub fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// The message from its broker, or else from the archive, saying which.
fn message_section(
    body: &mut String,
    from_broker: &Option<Result<Value, ApiError>>,
    archived: &Option<Result<Value, ApiError>>,
) {
    body.push_str("<h2>Message</h2>");
    match from_broker {
        Some(Ok(message)) => {
            let text = message["body"].as_str().unwrap_or_default();
            let shown: String = text.chars().take(BODY_SHOWN).collect();
            let cut = text.chars().count() > BODY_SHOWN || message["body_truncated"].as_bool() == Some(true);
            let _ = write!(
                body,
                "<dl class=\"facts\" id=\"from-broker\"><dt>source</dt><dd id=\"body-source\" data-source=\"broker\">broker {} (its log, read now)</dd>\
<dt>stored</dt><dd>{} in {} queue {} offset {}</dd><dt>properties</dt><dd><code>{}</code></dd>\
<dt>body ({} bytes{})</dt><dd><pre id=\"body\">{}</pre></dd></dl>",
                esc(&text_of(&message["broker"])),
                crate::html::time_of(&message["store_timestamp"]),
                esc(&text_of(&message["topic"])),
                text_of(&message["queue_id"]),
                text_of(&message["queue_offset"]),
                esc(&text_of(&message["properties"])),
                text_of(&message["body_size"]),
                if cut {
                    format!(", first {} characters", shown.chars().count())
                } else {
                    String::new()
                },
                esc(&shown),
            );
        }
        Some(Err(error)) if error.status == Some(404) => body.push_str(&crate::html::notice(&format!(
            "Its broker does not hold it now ({}); reading it from the archive.",
            error.message
        ))),
        Some(Err(error)) => body.push_str(&error_box(
            "Reading the message from its broker (trying the archive):",
            error,
        )),
        None => {}
    }
    if !matches!(from_broker, Some(Ok(_))) {
        archived_section(body, archived, from_broker.is_some());
    }
}

fn archived_section(body: &mut String, archived: &Option<Result<Value, ApiError>>, broker_asked: bool) {
    match archived {
        None if broker_asked => {}
        None => body.push_str(&crate::html::missing(
            "The console knows no broker HTTP API (meridian ui --broker-http ADDR) and no query service for the archive (search by msgId), so the body cannot be shown.",
        )),
        Some(Err(error)) => body.push_str(&error_box("Reading the message from the archive:", error)),
        Some(Ok(answer)) => match answer["rows"].as_array().and_then(|rows| rows.first()) {
            None => body.push_str(&crate::html::missing(
                "Not found by SQL yet: a cluster's query service reads only the archive, which holds sealed segments (meridian dev also reads the live log).",
            )),
            Some(row) => {
                let bytes = decode_base64(row[6].as_str().unwrap_or_default());
                let text = String::from_utf8_lossy(&bytes);
                let shown: String = text.chars().take(BODY_SHOWN).collect();
                let _ = write!(
                    body,
                    "<dl class=\"facts\" id=\"archived\"><dt>source</dt><dd id=\"body-source\" data-source=\"archive\">the archive (SQL over <code>messages</code>)</dd><dt>stored</dt><dd>{} on {} queue {} offset {}</dd><dt>properties</dt><dd><code>{}</code></dd>\
<dt>body ({} bytes{})</dt><dd><pre id=\"body\">{}</pre></dd></dl>",
                    esc(&text_of(&row[3])),
                    esc(&text_of(&row[0])),
                    text_of(&row[1]),
                    text_of(&row[2]),
                    esc(&text_of(&row[4])),
                    text_of(&row[5]),
                    if text.chars().count() > BODY_SHOWN {
                        format!(", first {BODY_SHOWN} characters")
                    } else {
                        String::new()
                    },
                    esc(&shown),
                );
            }
        },
    }
}

fn steps_of(timeline: &Value) -> Vec<svg::Step> {
    timeline["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|step| svg::Step {
            kind: text_of(&step["type"]),
            at_ms: step["timestamp"].as_i64().unwrap_or(0),
            host: step["host"]
                .as_str()
                .filter(|h| !h.is_empty())
                .or_else(|| step["broker"].as_str())
                .or_else(|| step["client_host"].as_str())
                .unwrap_or("")
                .to_owned(),
            idc: step["idc"].as_str().unwrap_or_default().to_owned(),
            since_previous_ms: step["since_previous_ms"].as_f64(),
            status: step["status"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

fn timeline_section(body: &mut String, timeline: &Value) {
    let _ = write!(
        body,
        "<dl class=\"facts\" id=\"message-facts\"><dt>msgId</dt><dd><code>{}</code></dd><dt>offset id</dt><dd><code>{}</code></dd>\
<dt>topic</dt><dd>{}</dd><dt>keys</dt><dd>{}</dd><dt>tags</dt><dd>{}</dd><dt>body size</dt><dd>{} bytes</dd></dl>",
        esc(&text_of(&timeline["msg_id"])),
        esc(&text_of(&timeline["offset_id"])),
        crate::html::topic_link(&text_of(&timeline["topic"])),
        esc(&text_of(&timeline["keys"])),
        esc(&text_of(&timeline["tags"])),
        text_of(&timeline["body_size"]),
    );
    let hops = &timeline["hops"];
    body.push_str("<section class=\"cards\" id=\"hops\">");
    for (field, label) in [
        ("born_to_stored_ms", "born → stored"),
        ("stored_to_replicated_ms", "stored → replicated"),
        ("stored_to_delivered_ms", "stored → delivered"),
        ("delivered_to_consumed_ms", "delivered → consumed"),
        ("total_ms", "total"),
    ] {
        let value = hops[field]
            .as_f64()
            .map_or_else(|| "not traced".to_owned(), |ms| format!("{ms} ms"));
        let _ = write!(
            body,
            "<div class=\"card\"><div class=\"card-label\">{label}</div><div class=\"card-value\">{value}</div></div>"
        );
    }
    body.push_str("</section>");
    body.push_str(&svg::timeline(&steps_of(timeline)));
    body.push_str("<h2>Steps</h2><div class=\"scroll\"><table id=\"steps\"><thead><tr><th>step</th><th>time (UTC)</th><th>+ms</th><th>host</th><th>data center</th><th>broker</th><th>group / client</th><th>topic · queue · offset</th><th>status</th></tr></thead><tbody>");
    for step in timeline["steps"].as_array().into_iter().flatten() {
        let _ = write!(
            body,
            "<tr data-step=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{} · {} · {}</td><td>{}{}</td></tr>",
            attr(&text_of(&step["type"])),
            esc(&text_of(&step["type"])),
            esc(&text_of(&step["time"])),
            text_of(&step["since_previous_ms"]),
            esc(&text_of(&step["host"])),
            esc(&text_of(&step["idc"])),
            esc(&text_of(&step["broker"])),
            esc(&text_of(&step["group"])),
            esc(&text_of(&step["client_id"])),
            esc(&text_of(&step["topic"])),
            text_of(&step["queue_id"]),
            text_of(&step["queue_offset"]),
            esc(&text_of(&step["status"])),
            step["error"]
                .as_str()
                .filter(|e| !e.is_empty())
                .map(|e| format!(" — {}", esc(e)))
                .unwrap_or_default(),
        );
    }
    body.push_str("</tbody></table></div>");
}

/// The Message & Trace page.
pub fn render(view: &TraceView<'_>) -> String {
    let mut body = format!(
        "<form class=\"search\" method=\"get\" action=\"/trace\"><input type=\"search\" name=\"q\" id=\"trace-q\" value=\"{}\" size=\"60\" \
placeholder=\"msgId (32 hex digits), offset id (broker-a:00000000000001F4) or key\" aria-label=\"msgId or key\"><button id=\"trace-search\">Find</button></form>",
        attr(view.q)
    );
    match (&view.lookup, &view.answer) {
        (Lookup::Nothing, _) | (_, None) => body.push_str(
            "<p>Find a message by the msgId a producer printed, by its offset id, or by its key. Its timeline shows every hop from producer to consumer.</p>",
        ),
        (Lookup::Id(id), Some(Err(error))) if error.status == Some(404) => {
            let _ = write!(
                body,
                "<div class=\"error\" role=\"alert\" data-error-code=\"not_found\"><strong>Nothing traced for {}.</strong> \
The tracer indexes a message a moment after it is stored; if it was just sent, search again. ({})</div>",
                esc(id),
                esc(&error.to_string())
            );
            message_section(&mut body, &view.from_broker, &view.archived);
        }
        (lookup, Some(Err(error))) => {
            body.push_str(&error_box("The trace lookup failed:", error));
            // The body does not need the tracer: the broker and the archive may still have it.
            if matches!(lookup, Lookup::Id(_)) {
                message_section(&mut body, &view.from_broker, &view.archived);
            }
        }
        (Lookup::Id(_), Some(Ok(timeline))) => {
            timeline_section(&mut body, timeline);
            message_section(&mut body, &view.from_broker, &view.archived);
        }
        (Lookup::Key(key), Some(Ok(answer))) => {
            let empty = Vec::new();
            let messages = answer["messages"].as_array().unwrap_or(&empty);
            let total = answer["total"].as_u64().unwrap_or(messages.len() as u64) as usize;
            let _ = write!(body, "<h2>Messages with key {}</h2>", esc(key));
            body.push_str("<table id=\"key-results\"><thead><tr><th>msgId</th><th>topic</th><th>first step</th><th>steps</th><th>total</th></tr></thead><tbody>");
            for message in messages {
                let id = text_of(&message["msg_id"]);
                let _ = write!(
                    body,
                    "<tr><td><a href=\"/trace?q={}\"><code>{}</code></a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    attr(&encode(&id)),
                    esc(&id),
                    esc(&text_of(&message["topic"])),
                    esc(&text_of(&message["steps"][0]["time"])),
                    message["steps"].as_array().map_or(0, Vec::len),
                    message["hops"]["total_ms"]
                        .as_f64()
                        .map_or_else(|| "—".to_owned(), |ms| format!("{ms} ms")),
                );
            }
            body.push_str("</tbody></table>");
            body.push_str(&pager(
                &format!("/trace?q={}", encode(key)),
                view.offset,
                messages.len(),
                total,
                PAGE,
            ));
            if messages.len() == 1 {
                timeline_section(&mut body, &messages[0]);
            }
        }
    }
    page("Message & Trace", Nav::Trace, &body)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("aGk="), b"hi");
        assert_eq!(decode_base64("aGk"), b"hi");
        assert_eq!(decode_base64("aGVsbG8gY29uc29sZQ=="), b"hello console");
    }

    #[test]
    fn ids_and_keys_are_told_apart() {
        assert_eq!(
            classify("0A0B0C0D0E0F00112233445566778899"),
            Lookup::Id("0A0B0C0D0E0F00112233445566778899".into())
        );
        assert_eq!(
            classify("broker-a:00000000000001F4"),
            Lookup::Id("broker-a:00000000000001F4".into())
        );
        assert_eq!(classify(" order-42 "), Lookup::Key("order-42".into()));
        assert_eq!(classify(""), Lookup::Nothing);
    }

    #[test]
    fn a_timeline_draws_every_step_and_escapes_what_clients_sent() {
        let timeline = json!({"msg_id": "AB", "topic": "<t>", "keys": "<script>k</script>", "body_size": 3,
            "hops": {"born_to_stored_ms": 2, "total_ms": 9},
            "steps": [
                {"type": "Pub", "timestamp": 1000, "time": "t0", "host": "10.0.0.1", "idc": "dc1", "status": "ok"},
                {"type": "Store", "timestamp": 1002, "since_previous_ms": 2, "broker": "broker-a", "host": "b", "idc": "dc1", "status": "ok"},
                {"type": "Sub", "timestamp": 1009, "since_previous_ms": 7, "host": "c", "idc": "dc2", "group": "<g>", "status": "ok"}]});
        let html = render(&TraceView {
            q: "AB",
            lookup: Lookup::Id("AB".into()),
            offset: 0,
            answer: Some(Ok(timeline)),
            archived: Some(Ok(
                json!({"rows": [["broker-a", 0, 7, "2026-11-25T10:00:00", "{KEYS: k}", 31,
                "PHNjcmlwdD5ib2R5PC9zY3JpcHQ+"]]}),
            )),
            from_broker: None,
        });
        assert!(html.contains("data-source=\"archive\""));
        // The broker's copy wins over the archive's, and says so.
        let from_broker = render(&TraceView {
            q: "AB",
            lookup: Lookup::Id("AB".into()),
            offset: 0,
            answer: Some(Ok(
                json!({"msg_id": "AB", "offset_id": "broker-a:0000000000000000", "steps": []}),
            )),
            archived: None,
            from_broker: Some(Ok(
                json!({"broker": "broker-a", "topic": "t", "queue_id": 0, "queue_offset": 7,
                "properties": {"KEYS": "k"}, "body_size": 9, "body": "<b>live</b>"}),
            )),
        });
        assert!(from_broker.contains("data-source=\"broker\">broker broker-a"));
        assert!(from_broker.contains("<pre id=\"body\">&lt;b&gt;live&lt;/b&gt;</pre>"));
        assert!(
            html.contains("<pre id=\"body\">&lt;script&gt;body&lt;/script&gt;</pre>"),
            "{html}"
        );
        for kind in ["Pub", "Store", "Sub"] {
            assert!(html.contains(&format!("data-step-type=\"{kind}\"")), "{kind}");
        }
        assert!(html.contains("data-hop-ms=\"7\""));
        assert!(!html.contains("<script>k") && html.contains("&lt;script&gt;k"));
        assert!(html.contains("&lt;g&gt;"));
    }
}
