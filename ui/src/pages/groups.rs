//! Consumer groups (`/groups`, `/groups/{name}`): the paginated, searchable list with each group's
//! lag in messages and in time and its status (from every broker's `/api/broker/lag`, one call per
//! broker), and one group with its approval, history, lag per queue (`/api/broker/lag` and
//! `/api/broker/offsets`), its lag history as a chart ([`crate::lag::LagHistory`]), its members per
//! data center with their queues, and its dead letters ([`crate::pages::members`]).

use std::fmt::Write as _;

use serde_json::Value;

use crate::client::{ApiError, encode};
use crate::html::{
    Nav, attr, badge, by_field, error_box, esc, flash, group_link, missing, page, pager, text_of, time_of, topic_link,
};
use crate::lag::{Sample, duration_text, summarize};
use crate::pages::members;
use crate::svg;

/// Groups per page of the list.
pub const PAGE: usize = 50;

/// What the list shows.
pub struct GroupList<'a> {
    /// Search text.
    pub q: &'a str,
    /// The page's first group.
    pub offset: usize,
    /// `GET /api/groups?q=&offset=&limit=`.
    pub page: Result<Value, ApiError>,
    /// `GET /api/broker/lag` of every configured broker.
    pub lag: Vec<Result<Value, ApiError>>,
}

/// A lag status as a badge (`OK` green, `WARN` amber, `STALL`/`STOP`/`REWIND` red).
pub fn lag_badge(status: &str) -> String {
    let class = match status {
        "OK" => "good",
        "WARN" => "warn",
        "STALL" | "STOP" | "REWIND" => "bad",
        _ => "info",
    };
    format!(
        "<span class=\"badge {class}\" data-lag-status=\"{}\">{}</span>",
        attr(status),
        esc(status)
    )
}

/// The list page.
pub fn render_list(list: &GroupList<'_>) -> String {
    let mut body = format!(
        "<form class=\"search\" method=\"get\" action=\"/groups\"><input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"name or owner\" aria-label=\"search groups\"><button>Search</button></form>",
        attr(list.q)
    );
    match &list.page {
        Err(error) => body.push_str(&error_box("Could not list consumer groups:", error)),
        Ok(answer) => {
            let empty = Vec::new();
            let groups = answer["groups"].as_array().unwrap_or(&empty);
            let total = answer["total"].as_u64().unwrap_or(groups.len() as u64) as usize;
            for error in list.lag.iter().filter_map(|lag| lag.as_ref().err()) {
                body.push_str(&error_box("Lag (this broker's groups show no lag below):", error));
            }
            let lags = summarize(list.lag.iter().filter_map(|lag| lag.as_ref().ok()));
            body.push_str("<table id=\"groups\"><thead><tr><th>group</th><th>status</th><th>lag</th><th>lag (messages)</th><th>lag (time)</th><th>owner</th><th>topics</th><th>mode</th><th>max retries</th><th>requested</th></tr></thead><tbody>");
            for group in groups {
                let topics: Vec<String> = group["topics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| topic_link(&text_of(t)))
                    .collect();
                let name = text_of(&group["name"]);
                let (lag_status, lag_messages, lag_time) = match lags.get(&name) {
                    Some(lag) => (
                        lag_badge(&lag.status),
                        lag.lag_messages.to_string(),
                        duration_text(lag.lag_ms),
                    ),
                    None => ("—".to_owned(), "—".to_owned(), "—".to_owned()),
                };
                let _ = write!(
                    body,
                    "<tr data-group=\"{}\"><td>{}</td><td>{}</td><td class=\"lag-status\">{lag_status}</td><td class=\"lag-messages\">{lag_messages}</td><td class=\"lag-time\">{lag_time}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    attr(&name),
                    group_link(&name),
                    badge(group["status"].as_str().unwrap_or("unknown")),
                    esc(&text_of(&group["owner"])),
                    topics.join(", "),
                    esc(&text_of(&group["consume_mode"])),
                    text_of(&group["max_retries"]),
                    time_of(&group["requested_at_ms"]),
                );
            }
            body.push_str("</tbody></table>");
            if list.lag.is_empty() {
                body.push_str(&missing(
                    "The console knows no broker HTTP API (meridian ui --broker-http ADDR), so it shows no lag.",
                ));
            }
            body.push_str(&pager(
                &format!("/groups?q={}", encode(list.q)),
                list.offset,
                groups.len(),
                total,
                PAGE,
            ));
        }
    }
    page("Consumer groups", Nav::Groups, &body)
}

/// What one group's page shows.
pub struct GroupDetail<'a> {
    /// From the URL.
    pub name: &'a str,
    /// `GET /api/groups/{name}`.
    pub detail: Result<Value, ApiError>,
    /// `GET /api/broker/offsets?group=&topic=` per topic of the group and broker.
    pub offsets: Vec<Result<Value, ApiError>>,
    /// `GET /api/broker/lag` of every broker, with the broker's address.
    pub lag: Vec<(String, Result<Value, ApiError>)>,
    /// The group's lag as the console sampled it on each view, oldest first.
    pub history: Vec<Sample>,
    /// Whether the console knows any broker HTTP API.
    pub has_brokers: bool,
    /// `GET /api/broker/allocation?group=&topic=`, per topic of the group (the fullest broker's).
    pub allocation: Vec<Result<Value, ApiError>>,
    /// `GET /api/broker/dead-letters?group=&offset=` of every broker.
    pub dead_letters: Vec<Result<Value, ApiError>>,
    /// Where the dead-letter page starts in each broker's dead-letter queue.
    pub dlq_offset: u64,
    /// `ok=` / `error=` of a redirect.
    pub ok: Option<&'a str>,
    /// See `ok`.
    pub error: Option<&'a str>,
}

/// One group's page.
pub fn render_detail(view: &GroupDetail<'_>) -> String {
    let mut body = flash(view.ok, view.error);
    let path = format!("/groups/{}", encode(view.name));
    match &view.detail {
        Err(error) => body.push_str(&error_box(&format!("Could not read group {:?}:", view.name), error)),
        Ok(detail) => {
            let group = &detail["group"];
            let status = group["status"].as_str().unwrap_or("unknown");
            let topics: Vec<String> = group["topics"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| topic_link(&text_of(t)))
                .collect();
            let _ = write!(
                body,
                "<dl class=\"facts\"><dt>status</dt><dd id=\"group-status\">{}</dd><dt>owner</dt><dd>{}</dd><dt>description</dt><dd>{}</dd><dt>topics</dt><dd>{}</dd>\
<dt>mode</dt><dd>{}</dd><dt>max retries</dt><dd>{}</dd><dt>decided</dt><dd>{} {}</dd></dl>",
                badge(status),
                esc(&text_of(&group["owner"])),
                esc(&text_of(&group["description"])),
                topics.join(", "),
                esc(&text_of(&group["consume_mode"])),
                text_of(&group["max_retries"]),
                esc(&text_of(&group["decided_by"])),
                time_of(&group["decided_at_ms"]),
            );
            if status == "requested" {
                let _ = write!(
                    body,
                    "<section class=\"decide\"><form class=\"panel\" method=\"post\" action=\"{p}/approve\"><h3>Approve</h3>{by}<label>reason (optional) <input name=\"reason\"></label><button>Approve</button></form>\
<form class=\"panel\" method=\"post\" action=\"{p}/reject\"><h3>Reject</h3>{by}<label>reason <input name=\"reason\" required></label><button class=\"danger\">Reject</button></form></section>",
                    p = attr(&path),
                    by = by_field()
                );
            }
            body.push_str(&lag_section(view));
            body.push_str("<h2>Offsets per queue</h2>");
            if !view.has_brokers {
                body.push_str(&missing(
                    "The console knows no broker HTTP API (meridian ui --broker-http ADDR), so it cannot read this group's offsets.",
                ));
            }
            let mut labels = Vec::new();
            let mut lags = Vec::new();
            let mut table = String::from(
                "<table id=\"lag\"><thead><tr><th>broker</th><th>topic</th><th>queue</th><th>min</th><th>max</th><th>group offset</th><th>lag (messages)</th></tr></thead><tbody>",
            );
            let mut errors = String::new();
            for answer in &view.offsets {
                match answer {
                    Err(error) if error.status == Some(404) => {}
                    Err(error) => errors.push_str(&error_box("Offsets:", error)),
                    Ok(offsets) => {
                        for queue in offsets["queues"].as_array().into_iter().flatten() {
                            let label = format!(
                                "{} {}/q{}",
                                text_of(&offsets["broker"]),
                                text_of(&offsets["topic"]),
                                text_of(&queue["queue_id"])
                            );
                            labels.push(label);
                            lags.push(queue["lag"].as_f64().unwrap_or(0.0));
                            let _ = write!(
                                table,
                                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                                esc(&text_of(&offsets["broker"])),
                                esc(&text_of(&offsets["topic"])),
                                text_of(&queue["queue_id"]),
                                text_of(&queue["min_offset"]),
                                text_of(&queue["max_offset"]),
                                queue["consumer_offset"]
                                    .as_u64()
                                    .map_or_else(|| "none yet".to_owned(), |o| o.to_string()),
                                text_of(&queue["lag"]),
                            );
                        }
                    }
                }
            }
            table.push_str("</tbody></table>");
            if !labels.is_empty() {
                body.push_str(&svg::bars("lag in messages per queue", &labels, &lags));
            }
            body.push_str(&table);
            body.push_str(&errors);
            if view.has_brokers && !topics.is_empty() {
                let _ = write!(
                    body,
                    "<form class=\"panel\" id=\"reset\" method=\"post\" action=\"{}/reset\"><h3>Reset offsets</h3><label>topic <select name=\"topic\">",
                    attr(&path)
                );
                for topic in group["topics"].as_array().into_iter().flatten() {
                    let topic = text_of(topic);
                    let _ = write!(body, "<option value=\"{}\">{}</option>", attr(&topic), esc(&topic));
                }
                let _ = write!(
                    body,
                    "</select></label><label>to <select name=\"to\" id=\"reset-to\"><option value=\"latest\">latest (skip the backlog)</option>\
<option value=\"earliest\">earliest (consume everything again)</option>\
<option value=\"timestamp\">a time: the first message stored at or after it</option></select></label>\
<label>time (UTC, with \"a time\") <input type=\"datetime-local\" name=\"at\" id=\"reset-at\" step=\"1\"></label>\
<label>type the group's name to confirm <input name=\"confirm\" required autocomplete=\"off\"></label>{}\
<button class=\"danger\">Reset</button></form>",
                    by_field()
                );
            }
            if view.has_brokers {
                body.push_str(&members::allocation_section(&view.allocation));
            }
            body.push_str(&members::dead_letters_section(
                view.name,
                &view.dead_letters,
                view.dlq_offset,
            ));
            body.push_str("<h2>History</h2><table><thead><tr><th>when</th><th>what</th><th>by</th><th>detail</th><th>reason</th></tr></thead><tbody>");
            for entry in detail["history"].as_array().into_iter().flatten() {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    time_of(&entry["at_ms"]),
                    esc(&text_of(&entry["action"])),
                    esc(&text_of(&entry["by"])),
                    esc(&text_of(&entry["detail"])),
                    esc(&text_of(&entry["reason"])),
                );
            }
            body.push_str("</tbody></table>");
        }
    }
    page(&format!("Group {}", view.name), Nav::Groups, &body)
}

/// The group's status, its lag per broker, topic and queue in messages and in time, and its lag
/// history as a chart.
fn lag_section(view: &GroupDetail<'_>) -> String {
    let mut out = String::from("<h2>Lag</h2>");
    let mut errors = String::new();
    let mut rows = String::new();
    let mut status = String::new();
    for (broker, answer) in &view.lag {
        match answer {
            Err(error) => errors.push_str(&error_box("Lag:", error)),
            Ok(answer) => {
                for entry in answer["groups"].as_array().into_iter().flatten() {
                    if entry["group"].as_str() != Some(view.name) {
                        continue;
                    }
                    let entry_status = entry["status"].as_str().unwrap_or("OK");
                    if status.is_empty() || crate::lag::severity(entry_status) > crate::lag::severity(&status) {
                        status = entry_status.to_owned();
                    }
                    for queue in entry["queues"].as_array().into_iter().flatten() {
                        let _ = write!(
                            rows,
                            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"lag-time\">{}</td><td>{}</td></tr>",
                            esc(broker),
                            esc(&text_of(&entry["topic"])),
                            text_of(&queue["queue_id"]),
                            text_of(&queue["committed_offset"]),
                            text_of(&queue["max_offset"]),
                            text_of(&queue["lag_messages"]),
                            duration_text(queue["lag_ms"].as_u64().unwrap_or(0)),
                            lag_badge(queue["status"].as_str().unwrap_or("OK")),
                        );
                    }
                }
            }
        }
    }
    let summary = summarize(view.lag.iter().filter_map(|(_, answer)| answer.as_ref().ok()));
    match summary.get(view.name) {
        Some(lag) => {
            let _ = write!(
                out,
                "<dl class=\"facts\" id=\"lag-summary\"><dt>lag status</dt><dd id=\"lag-status\">{}</dd><dt>lag (messages)</dt><dd id=\"lag-messages\">{}</dd><dt>lag (time)</dt><dd id=\"lag-time\">{}</dd></dl>",
                lag_badge(&status),
                lag.lag_messages,
                duration_text(lag.lag_ms),
            );
        }
        None if view.has_brokers => out.push_str(
            "<p id=\"lag-summary\">No broker holds an offset of this group yet: it has not consumed anything.</p>",
        ),
        None => {}
    }
    out.push_str(&errors);
    if !rows.is_empty() {
        out.push_str("<table id=\"lag-queues\"><thead><tr><th>broker</th><th>topic</th><th>queue</th><th>committed</th><th>max</th><th>lag (messages)</th><th>lag (time)</th><th>status</th></tr></thead><tbody>");
        out.push_str(&rows);
        out.push_str("</tbody></table>");
    }
    out.push_str("<h3>Lag history</h3>");
    if view.history.len() < 2 {
        out.push_str("<p class=\"hint\" id=\"lag-history\">The console samples the lag each time a Groups page is viewed and keeps the last 120 samples per group in memory; the chart appears from the second sample.</p>");
    } else {
        let messages: Vec<(f64, f64)> = view
            .history
            .iter()
            .map(|s| (s.at_ms as f64, s.lag_messages as f64))
            .collect();
        let seconds: Vec<(f64, f64)> = view
            .history
            .iter()
            .map(|s| (s.at_ms as f64, s.lag_ms as f64 / 1_000.0))
            .collect();
        let _ = write!(
            out,
            "<div id=\"lag-history\">{}{}</div>",
            svg::lines(
                "lag in messages (sampled on each view)",
                &[svg::Series {
                    name: "messages",
                    points: &messages,
                    band: &[],
                    class: "series-0",
                }],
                true,
            ),
            svg::lines(
                "lag in time, seconds (sampled on each view)",
                &[svg::Series {
                    name: "seconds",
                    points: &seconds,
                    band: &[],
                    class: "series-1",
                }],
                true,
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_list_escapes_and_pages() {
        let html = render_list(&GroupList {
            q: "",
            offset: 50,
            page: Ok(
                json!({"total": 51, "groups": [{"name": "<script>g</script>", "owner": "o", "topics": ["t"], "status": "approved"}]}),
            ),
            lag: vec![Ok(
                json!({"groups": [{"group": "<script>g</script>", "topic": "t", "status": "WARN", "lag_messages": 12, "lag_ms": 2500}]}),
            )],
        });
        assert!(html.contains("<td class=\"lag-time\">2.5 s</td>") && html.contains("data-lag-status=\"WARN\""));
        assert!(!html.contains("<script>g") && html.contains("&lt;script&gt;g"));
        assert!(html.contains("51–51 of 51") && html.contains("rel=\"prev\""));
    }

    #[test]
    fn a_group_shows_lag_per_queue_as_a_table_and_a_chart() {
        let html = render_detail(&GroupDetail {
            name: "billing",
            detail: Ok(
                json!({"group": {"name": "billing", "status": "approved", "topics": ["orders"]}, "history": []}),
            ),
            offsets: vec![Ok(
                json!({"broker": "broker-a", "topic": "orders", "lag": 5, "queues": [
                {"queue_id": 0, "min_offset": 0, "max_offset": 7, "consumer_offset": 2, "lag": 5}]}),
            )],
            lag: vec![(
                "127.0.0.1:8081".into(),
                Ok(
                    json!({"groups": [{"group": "billing", "topic": "orders", "status": "STALL", "lag_messages": 5, "lag_ms": 65_000,
                    "queues": [{"queue_id": 0, "committed_offset": 2, "max_offset": 7, "lag_messages": 5, "lag_ms": 65_000, "status": "STALL"}]},
                    {"group": "other", "topic": "orders", "status": "STOP", "lag_messages": 9, "lag_ms": 1, "queues": []}]}),
                ),
            )],
            history: vec![
                Sample {
                    at_ms: 1_000,
                    lag_messages: 9,
                    lag_ms: 70_000,
                },
                Sample {
                    at_ms: 5_000,
                    lag_messages: 5,
                    lag_ms: 65_000,
                },
            ],
            has_brokers: true,
            allocation: Vec::new(),
            dead_letters: Vec::new(),
            dlq_offset: 0,
            ok: None,
            error: None,
        });
        assert!(html.contains("data-chart=\"bars\""));
        assert!(html.contains("<td>5</td>"));
        // Lag in time and the status, from /api/broker/lag; another group's STOP does not leak in.
        assert!(html.contains("<dd id=\"lag-time\">1 min 5 s</dd>"), "{html}");
        assert!(html.contains("data-lag-status=\"STALL\"") && !html.contains("data-lag-status=\"STOP\""));
        assert!(html.contains("id=\"lag-history\"><svg"), "two samples draw the history");
    }
}
