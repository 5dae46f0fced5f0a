//! Topics (`/topics`, `/topics/{name}`): the paginated, searchable list with the request form, and
//! one topic with its approval, rejection, produce limit, history and volume chart.

use std::fmt::Write as _;

use serde_json::Value;

use crate::client::{ApiError, encode};
use crate::html::{Nav, attr, badge, by_field, error_box, esc, flash, page, pager, text_of, time_of, topic_link};
use crate::svg;

/// Topics per page of the list.
pub const PAGE: usize = 50;

/// What the list shows.
pub struct TopicList<'a> {
    /// The search text.
    pub q: &'a str,
    /// The status filter (`requested`, `approved`, `rejected`, or empty).
    pub status: &'a str,
    /// The page's first topic.
    pub offset: usize,
    /// `GET /api/topics?q=&status=&offset=&limit=`.
    pub page: Result<Value, ApiError>,
    /// Broker group names, to suggest where a new topic's queues go.
    pub broker_groups: Vec<String>,
    /// `ok=` / `error=` of a redirect after an action.
    pub ok: Option<&'a str>,
    /// See `ok`.
    pub error: Option<&'a str>,
}

fn queues_text(queues: &Value) -> String {
    match queues.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(group, count)| format!("{group}={}", text_of(count)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "not placed".to_owned(),
    }
}

fn limit_text(limit: &Value) -> String {
    limit
        .as_u64()
        .map_or_else(|| "none".to_owned(), |n| format!("{n} msg/s"))
}

/// The list page.
pub fn render_list(list: &TopicList<'_>) -> String {
    let mut body = flash(list.ok, list.error);
    let _ = write!(
        body,
        "<form class=\"search\" method=\"get\" action=\"/topics\"><input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"name or owner\" aria-label=\"search topics\">\
<select name=\"status\" aria-label=\"status\">",
        attr(list.q)
    );
    for status in ["", "requested", "approved", "rejected"] {
        let _ = write!(
            body,
            "<option value=\"{status}\"{}>{}</option>",
            if status == list.status { " selected" } else { "" },
            if status.is_empty() { "any status" } else { status }
        );
    }
    body.push_str("</select><button>Search</button></form>");
    match &list.page {
        Err(error) => body.push_str(&error_box("Could not list topics:", error)),
        Ok(answer) => {
            let empty = Vec::new();
            let topics = answer["topics"].as_array().unwrap_or(&empty);
            let total = answer["total"].as_u64().unwrap_or(topics.len() as u64) as usize;
            body.push_str("<table id=\"topics\"><thead><tr><th>topic</th><th>status</th><th>owner</th><th>queues</th><th>produce limit</th><th>requested by</th><th>requested</th></tr></thead><tbody>");
            for topic in topics {
                let _ = write!(
                    body,
                    "<tr data-topic=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    attr(&text_of(&topic["name"])),
                    topic_link(&text_of(&topic["name"])),
                    badge(topic["status"].as_str().unwrap_or("unknown")),
                    esc(&text_of(&topic["owner"])),
                    esc(&queues_text(&topic["queues"])),
                    limit_text(&topic["produce_limit"]),
                    esc(&text_of(&topic["requested_by"])),
                    time_of(&topic["requested_at_ms"]),
                );
            }
            body.push_str("</tbody></table>");
            let base = format!("/topics?q={}&status={}", encode(list.q), encode(list.status));
            body.push_str(&pager(&base, list.offset, topics.len(), total, PAGE));
        }
    }
    let suggestion = list
        .broker_groups
        .iter()
        .map(|group| format!("{group}=4"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        body,
        "<h2>Request a topic</h2><form class=\"panel\" id=\"request-topic\" method=\"post\" action=\"/topics\">\
<label>name <input name=\"name\" required maxlength=\"127\" pattern=\"[A-Za-z0-9_%|-]+\"></label>\
<label>owner (team) <input name=\"owner\" required maxlength=\"64\"></label>\
<label>queues <input name=\"queues\" value=\"{}\" placeholder=\"broker-a=4, broker-b=4\"></label>\
<label>produce limit (msg/s, empty: none) <input name=\"produce_limit\" type=\"number\" min=\"1\"></label>\
<label class=\"wide\">description <input name=\"description\" maxlength=\"512\"></label>\
{}<button>Request</button></form>",
        attr(&suggestion),
        by_field().replace("name=\"by\"", "name=\"requested_by\""),
    );
    page("Topics", Nav::Topics, &body)
}

/// What one topic's page shows.
pub struct TopicDetail<'a> {
    /// The topic's name (from the URL).
    pub name: &'a str,
    /// `GET /api/topics/{name}`: `{topic, history}`.
    pub detail: Result<Value, ApiError>,
    /// Messages per hour from the archive (`hourly_volume`), `None` without a query service.
    pub volume: Option<Result<Value, ApiError>>,
    /// Each configured broker's address and its `GET /api/broker/stats?topic=` (the topic's put
    /// rate every few seconds over the last minutes).
    pub rates: Vec<(String, Result<Value, ApiError>)>,
    /// `ok=` / `error=` of a redirect.
    pub ok: Option<&'a str>,
    /// See `ok`.
    pub error: Option<&'a str>,
}

/// The topic's put rate on each broker over the last minutes, as a line per broker and a table.
fn live_rates(body: &mut String, rates: &[(String, Result<Value, ApiError>)]) {
    body.push_str("<h2>Messages per second, live</h2>");
    if rates.is_empty() {
        body.push_str(&crate::html::missing(
            "The console was started without broker HTTP addresses (meridian ui --broker-http ADDR): no live rates to show.",
        ));
        return;
    }
    let mut errors = String::new();
    let mut names = Vec::new();
    let mut all_points: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut table = String::from(
        "<table id=\"live-tps\"><thead><tr><th>broker</th><th>now (msg/s)</th><th>peak (msg/s)</th><th>samples</th></tr></thead><tbody>",
    );
    for (addr, answer) in rates {
        match answer {
            Err(error) => errors.push_str(&error_box("Live rates (this broker's are missing):", error)),
            Ok(report) => {
                let points: Vec<(f64, f64)> = report["topic"]["samples"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|sample| Some((sample["at_ms"].as_f64()?, sample["put_tps"].as_f64()?)))
                    .collect();
                let peak = points.iter().map(|p| p.1).fold(0.0, f64::max);
                let now = points.last().map_or(0.0, |p| p.1);
                let name = format!("{} ({addr})", text_of(&report["broker"]));
                let _ = write!(
                    table,
                    "<tr data-broker=\"{}\"><td>{}</td><td class=\"now\">{now}</td><td class=\"peak\">{peak}</td><td>{}</td></tr>",
                    attr(&text_of(&report["broker"])),
                    esc(&name),
                    points.len(),
                );
                names.push(name);
                all_points.push(points);
            }
        }
    }
    table.push_str("</tbody></table>");
    let classes = ["series-0", "series-1", "series-2", "series-3"];
    let series: Vec<svg::Series<'_>> = names
        .iter()
        .zip(&all_points)
        .enumerate()
        .filter(|(_, (_, points))| !points.is_empty())
        .map(|(index, (name, points))| svg::Series {
            name,
            points,
            band: &[],
            class: classes[index % classes.len()],
        })
        .collect();
    if series.is_empty() {
        if errors.is_empty() {
            body.push_str(
                "<p id=\"live-tps-empty\">No rate yet: the brokers sample every 2 seconds and need two samples.</p>",
            );
        }
    } else {
        body.push_str("<div id=\"live-tps-chart\">");
        body.push_str(&svg::lines(
            "messages stored per second, per broker, last 5 minutes (sampled by the brokers)",
            &series,
            true,
        ));
        body.push_str("</div>");
    }
    body.push_str(&table);
    body.push_str(&errors);
}

/// One topic's page.
pub fn render_detail(view: &TopicDetail<'_>) -> String {
    let mut body = flash(view.ok, view.error);
    let path = format!("/topics/{}", encode(view.name));
    match &view.detail {
        Err(error) => body.push_str(&error_box(&format!("Could not read topic {:?}:", view.name), error)),
        Ok(detail) => {
            let topic = &detail["topic"];
            let status = topic["status"].as_str().unwrap_or("unknown");
            let _ = write!(
                body,
                "<dl class=\"facts\" id=\"topic-facts\"><dt>status</dt><dd id=\"topic-status\">{}</dd><dt>owner</dt><dd>{}</dd><dt>description</dt><dd>{}</dd>\
<dt>queues</dt><dd>{}</dd><dt>permission</dt><dd>{}</dd><dt>produce limit</dt><dd id=\"topic-limit\">{}</dd>\
<dt>requested</dt><dd>by {} at {}</dd><dt>decided</dt><dd>{} {}{}</dd></dl>",
                badge(status),
                esc(&text_of(&topic["owner"])),
                esc(&text_of(&topic["description"])),
                esc(&queues_text(&topic["queues"])),
                match topic["perm"].as_u64() {
                    Some(1) => "read",
                    Some(2) => "write",
                    _ => "read and write",
                },
                limit_text(&topic["produce_limit"]),
                esc(&text_of(&topic["requested_by"])),
                time_of(&topic["requested_at_ms"]),
                esc(&text_of(&topic["decided_by"])),
                time_of(&topic["decided_at_ms"]),
                topic["decision_reason"]
                    .as_str()
                    .map(|reason| format!(" — {}", esc(reason)))
                    .unwrap_or_default(),
            );
            if status == "requested" {
                let _ = write!(
                    body,
                    "<section class=\"decide\"><form class=\"panel\" id=\"approve\" method=\"post\" action=\"{p}/approve\"><h3>Approve</h3>{by}\
<label>reason (optional) <input name=\"reason\" maxlength=\"512\"></label><button>Approve</button></form>\
<form class=\"panel\" id=\"reject\" method=\"post\" action=\"{p}/reject\"><h3>Reject</h3>{by}\
<label>reason <input name=\"reason\" required maxlength=\"512\"></label><button class=\"danger\">Reject</button></form></section>",
                    p = attr(&path),
                    by = by_field(),
                );
            }
            let _ = write!(
                body,
                "<form class=\"panel\" id=\"limit\" method=\"post\" action=\"{}/limit\"><h3>Throttle</h3>\
<label>produce limit (msg/s, empty: no limit) <input name=\"produce_limit\" type=\"number\" min=\"1\" value=\"{}\"></label>{}\
<label>reason (optional) <input name=\"reason\" maxlength=\"512\"></label><button>Set limit</button></form>",
                attr(&path),
                topic["produce_limit"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                by_field(),
            );
            body.push_str("<h2>History</h2><table id=\"history\"><thead><tr><th>when</th><th>what</th><th>by</th><th>detail</th><th>reason</th></tr></thead><tbody>");
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
    live_rates(&mut body, &view.rates);
    body.push_str("<h2>Volume</h2>");
    match &view.volume {
        None => body.push_str(&crate::html::missing(
            "No query service is configured, so there is no volume history (meridian ui --query-http ADDR).",
        )),
        Some(Err(error)) => body.push_str(&error_box("Volume from the archive:", error)),
        Some(Ok(answer)) => {
            let points = super::sql::time_points(answer);
            if points.is_empty() {
                body.push_str(
                    "<p>The archive holds no messages of this topic yet (only sealed segments are archived).</p>",
                );
            } else {
                let per_second: Vec<(f64, f64)> = points.iter().map(|(x, y)| (*x, y / 3600.0)).collect();
                body.push_str(&svg::lines(
                    "messages per second, hourly average (archive)",
                    &[svg::Series {
                        name: "TPS",
                        points: &per_second,
                        band: &[],
                        class: "series-0",
                    }],
                    true,
                ));
            }
        }
    }
    page(&format!("Topic {}", view.name), Nav::Topics, &body)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_list_escapes_names_and_owners_and_pages() {
        let list = TopicList {
            q: "<q>",
            status: "",
            offset: 0,
            page: Ok(json!({"total": 120, "offset": 0, "limit": 50, "topics": [
                {"name": "<script>alert(1)</script>", "owner": "<b>team</b>", "status": "requested", "queues": {"broker-a": 4}, "produce_limit": 10}
            ]})),
            broker_groups: vec!["broker-a".into()],
            ok: Some("requested <x>"),
            error: None,
        };
        let html = render_list(&list);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;b&gt;team&lt;/b&gt;"));
        assert!(html.contains("value=\"&lt;q&gt;\""));
        assert!(html.contains("requested &lt;x&gt;"));
        assert!(html.contains("1–1 of 120") && html.contains("rel=\"next\""));
        assert!(html.contains("value=\"broker-a=4\""));
    }

    #[test]
    fn a_requested_topic_offers_approve_and_reject_and_escapes_its_description() {
        let view = TopicDetail {
            name: "t<1>",
            detail: Ok(
                json!({"topic": {"name": "t<1>", "status": "requested", "description": "<script>x</script>", "owner": "o", "queues": {}}, "history": [
                {"action": "requested", "at_ms": 0, "by": "<i>alice</i>", "detail": null, "reason": null}]}),
            ),
            volume: None,
            rates: vec![(
                "127.0.0.1:1".into(),
                Ok(json!({"broker": "broker-a", "topic": {"name": "t<1>", "samples": [
                    {"at_ms": 1_000, "put_tps": 0.0}, {"at_ms": 3_000, "put_tps": 12.5}, {"at_ms": 5_000, "put_tps": 2.0}]}})),
            )],
            ok: None,
            error: Some("<err>"),
        };
        let html = render_detail(&view);
        assert!(html.contains("id=\"live-tps-chart\"") && html.contains("<td class=\"peak\">12.5</td>"));
        assert!(html.contains("<td class=\"now\">2</td>"));
        assert!(html.contains("id=\"approve\"") && html.contains("id=\"reject\""));
        assert!(html.contains("action=\"/topics/t%3C1%3E/approve\""));
        assert!(!html.contains("<script>x") && html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(html.contains("&lt;i&gt;alice") && html.contains("&lt;err&gt;"));
        assert!(html.contains("<h1>Topic t&lt;1&gt;</h1>"));
    }
}
