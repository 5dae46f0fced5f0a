//! Forecasts (`/forecasts`) and Clients (`/clients`): what the APIs have today, and a plain
//! statement of what they do not.

use std::fmt::Write as _;

use serde_json::Value;

use crate::client::{ApiError, encode};
use crate::html::{Nav, attr, badge, error_box, esc, group_link, missing, page, pager, text_of};
use crate::pages::sql::time_points;
use crate::svg;

/// What the forecast page was asked.
pub struct ForecastView<'a> {
    /// `topic` or `group`.
    pub kind: &'a str,
    /// The topic or group name.
    pub name: &'a str,
    /// `30s`, `15m`, `1h`, `1d`.
    pub step: &'a str,
    /// Steps ahead.
    pub horizon: u32,
    /// The history (topic volume per step), when asked.
    pub history: Option<Result<Value, ApiError>>,
    /// The forecast's answer: `timestamp, prediction, lower, upper`.
    pub forecast: Option<Result<Value, ApiError>>,
    /// No query service configured.
    pub unavailable: bool,
}

/// Quotes `text` as an SQL string literal.
pub fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The Forecasts page.
pub fn render_forecasts(view: &ForecastView<'_>) -> String {
    let mut body = String::new();
    if view.unavailable {
        body.push_str(&missing(
            "No query service is configured: forecasts are SQL table functions of the query service (meridian ui --query-http ADDR).",
        ));
    }
    let _ = write!(
        body,
        "<form class=\"search\" method=\"get\" action=\"/forecasts\"><select name=\"kind\" aria-label=\"what\">\
<option value=\"topic\"{}>topic volume</option><option value=\"group\"{}>group backlog</option></select>\
<input name=\"name\" required value=\"{}\" placeholder=\"topic or group\" aria-label=\"name\">\
<select name=\"step\" aria-label=\"step\">",
        if view.kind == "group" { "" } else { " selected" },
        if view.kind == "group" { " selected" } else { "" },
        attr(view.name)
    );
    for step in ["30s", "15m", "1h", "1d"] {
        let _ = write!(
            body,
            "<option{}>{step}</option>",
            if step == view.step { " selected" } else { "" }
        );
    }
    let _ = write!(
        body,
        "</select><input name=\"horizon\" type=\"number\" min=\"1\" max=\"1000\" value=\"{}\" aria-label=\"horizon\"><button>Forecast</button></form>",
        view.horizon
    );
    if let Some(Err(error)) = &view.history {
        body.push_str(&error_box("History:", error));
    }
    match &view.forecast {
        None => body.push_str(
            "<p>Volume forecasts per topic and backlog forecasts per group, with their intervals, from the archive (docs/query.md, \"Forecasting\").</p>",
        ),
        Some(Err(error)) => body.push_str(&error_box("The forecast failed:", error)),
        Some(Ok(answer)) => {
            let rows = answer["rows"].as_array().cloned().unwrap_or_default();
            let mut points = Vec::new();
            let mut band = Vec::new();
            for row in &rows {
                let Some(x) = (match &row[0] {
                    Value::String(text) => crate::pages::sql::parse_time(text).map(|ms| ms as f64),
                    other => other.as_f64(),
                }) else {
                    continue;
                };
                if let (Some(p), Some(lo), Some(hi)) = (row[1].as_f64(), row[2].as_f64(), row[3].as_f64()) {
                    points.push((x, p));
                    band.push((x, lo, hi));
                }
            }
            let history = view
                .history
                .as_ref()
                .and_then(|h| h.as_ref().ok())
                .map(time_points)
                .unwrap_or_default();
            let series = [
                svg::Series {
                    name: "history",
                    points: &history,
                    band: &[],
                    class: "series-0",
                },
                svg::Series {
                    name: "forecast",
                    points: &points,
                    band: &band,
                    class: "forecast",
                },
            ];
            body.push_str(&svg::lines(
                &format!("{} {} per {}", view.kind, view.name, view.step),
                &series,
                true,
            ));
            body.push_str("<table id=\"forecast\"><thead><tr><th>time</th><th>prediction</th><th>lower</th><th>upper</th></tr></thead><tbody>");
            for row in rows.iter().take(200) {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&text_of(&row[0])),
                    forecast_number(&row[1]),
                    forecast_number(&row[2]),
                    forecast_number(&row[3])
                );
            }
            body.push_str("</tbody></table>");
        }
    }
    page("Forecasts", Nav::Forecasts, &body)
}

/// A forecast's value to two decimals (its model's precision is far coarser than the 15 digits
/// an `f64` prints).
fn forecast_number(value: &Value) -> String {
    match value.as_f64() {
        Some(number) => format!("{number:.2}"),
        None => esc(&text_of(value)),
    }
}

/// Clients per page.
pub const CLIENTS_PAGE: usize = 100;

/// What the Clients page shows.
pub struct ClientsView<'a> {
    /// `GET /api/sdk-policy` of the nameserver.
    pub policy: Result<Value, ApiError>,
    /// `GET /api/broker/clients` of every broker, with the broker's address.
    pub brokers: Vec<(String, Result<Value, ApiError>)>,
    /// Search text (group, client id, data center, SDK or version).
    pub q: &'a str,
    /// `offenders` to list only clients the policy flags.
    pub verdict: &'a str,
    /// The page's first client.
    pub offset: usize,
}

/// Microseconds as `1.5 ms`; `—` when absent.
fn millis(value: &Value) -> String {
    value
        .as_u64()
        .map_or_else(|| "—".to_owned(), |us| format!("{:.1} ms", us as f64 / 1000.0))
}

/// The Clients page: the SDK policy, then every client the brokers know (consumers, and producers
/// that broke the policy), with SDK, version, data center, the policy's verdict and a consumer's
/// handler time per message (p50/p99), paginated.
pub fn render_clients(view: &ClientsView<'_>) -> String {
    let mut body = String::from("<h2>SDK policy</h2>");
    match &view.policy {
        Ok(policy) => {
            let blocked: Vec<String> = policy["blocked_versions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| esc(&text_of(v)))
                .collect();
            let _ = write!(
                body,
                "<dl class=\"facts\" id=\"sdk-policy\"><dt>minimum version</dt><dd>{}</dd><dt>blocked versions</dt><dd>{}</dd></dl>",
                esc(&policy["min_version"]
                    .as_str()
                    .map_or_else(|| "any".to_owned(), str::to_owned)),
                if blocked.is_empty() {
                    "none".to_owned()
                } else {
                    blocked.join(", ")
                }
            );
        }
        Err(error) => body.push_str(&error_box("Could not read the SDK policy:", error)),
    }
    body.push_str("<h2>Connected clients</h2>");
    let _ = write!(
        body,
        "<form class=\"search\" method=\"get\" action=\"/clients\"><input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"group, client, data center, SDK or version\" aria-label=\"search clients\">\
<label><input type=\"checkbox\" name=\"verdict\" value=\"offenders\"{}> only policy offenders</label><button>Search</button></form>",
        attr(view.q),
        if view.verdict == "offenders" { " checked" } else { "" }
    );
    if view.brokers.is_empty() {
        body.push_str(&missing(
            "The console knows no broker HTTP API (meridian ui --broker-http ADDR), so it cannot list connected clients.",
        ));
        return page("Clients", Nav::Clients, &body);
    }
    let needle = view.q.to_lowercase();
    let mut matching = Vec::new();
    for (broker, answer) in &view.brokers {
        match answer {
            Err(error) => body.push_str(&error_box("Clients (this broker's are missing below):", error)),
            Ok(answer) => {
                for client in answer["clients"].as_array().into_iter().flatten() {
                    if view.verdict == "offenders" && client["sdk_violation"].is_null() {
                        continue;
                    }
                    let fields = ["group", "client_id", "idc", "sdk_language", "sdk_version", "kind"];
                    if !needle.is_empty()
                        && !fields.iter().any(|field| {
                            client[*field]
                                .as_str()
                                .is_some_and(|v| v.to_lowercase().contains(&needle))
                        })
                    {
                        continue;
                    }
                    matching.push((broker.as_str(), client));
                }
            }
        }
    }
    let total = matching.len();
    body.push_str("<table id=\"clients\"><thead><tr><th>kind</th><th>group</th><th>client</th><th>data center</th><th>SDK</th><th>version</th><th>verdict</th><th>consume p50</th><th>consume p99</th><th>broker</th></tr></thead><tbody>");
    for (broker, client) in matching.iter().skip(view.offset).take(CLIENTS_PAGE) {
        let verdict = match client["sdk_violation"].as_str() {
            None => badge("ok"),
            Some(violation) => format!("<span class=\"badge bad\">violates</span> {}", esc(violation)),
        };
        let empty_dash = |field: &str| {
            let text = text_of(&client[field]);
            if text.is_empty() { "—".to_owned() } else { esc(&text) }
        };
        let _ = write!(
            body,
            "<tr data-client=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"verdict\">{verdict}</td><td class=\"consume\">{}</td><td class=\"consume\">{}</td><td>{}</td></tr>",
            attr(&text_of(&client["client_id"])),
            empty_dash("kind"),
            match client["group"].as_str() {
                Some(group) if !group.is_empty() => group_link(group),
                _ => "—".to_owned(),
            },
            empty_dash("client_id"),
            empty_dash("idc"),
            empty_dash("sdk_language"),
            empty_dash("sdk_version"),
            millis(&client["consume_p50_us"]),
            millis(&client["consume_p99_us"]),
            esc(broker),
        );
    }
    body.push_str("</tbody></table>");
    body.push_str(&pager(
        &format!("/clients?q={}&verdict={}", encode(view.q), encode(view.verdict)),
        view.offset,
        total.saturating_sub(view.offset).min(CLIENTS_PAGE),
        total,
        CLIENTS_PAGE,
    ));
    body.push_str(&render_producer_stats(view));
    page("Clients", Nav::Clients, &body)
}

/// Producers' own reports (send latency, message sizes, large messages with a hint), from every
/// broker that answered (consumers' handler times are columns of the clients table).
fn render_producer_stats(view: &ClientsView<'_>) -> String {
    let mut rows = String::new();
    for (broker, answer) in &view.brokers {
        let Ok(answer) = answer else { continue };
        for producer in answer["producers"].as_array().into_iter().flatten() {
            let large = producer["large_messages"].as_u64().unwrap_or(0);
            let _ = write!(
                rows,
                "<tr data-producer=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"verdict\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"large\">{}</td><td>{}</td></tr>",
                attr(&text_of(&producer["client_id"])),
                esc(&text_of(&producer["client_id"])),
                esc(&text_of(&producer["host"])),
                match text_of(&producer["idc"]) {
                    idc if idc.is_empty() => "—".to_owned(),
                    idc => esc(&idc),
                },
                esc(&text_of(&producer["sdk"])),
                match producer["sdk_violation"].as_str() {
                    None => badge("ok"),
                    Some(violation) => format!("<span class=\"badge bad\">violates</span> {}", esc(violation)),
                },
                millis(&producer["send_p50_us"]),
                millis(&producer["send_p99_us"]),
                esc(&text_of(&producer["sends"])),
                esc(&text_of(&producer["message_p50_bytes"])),
                if large == 0 {
                    badge("ok")
                } else {
                    format!(
                        "<span class=\"badge bad\">{large} large</span> {}",
                        esc(&text_of(&producer["hint"]))
                    )
                },
                esc(broker),
            );
        }
    }
    if rows.is_empty() {
        return missing("No producer reported its send latency and message sizes (Meridian's SDK reports every 10 s).");
    }
    format!(
        "<h2>Producer latency and message size</h2><table id=\"producers\"><thead><tr><th>producer</th><th>host</th><th>data center</th><th>SDK</th><th>verdict</th><th>send p50</th><th>send p99</th><th>sends</th><th>size p50 (bytes)</th><th>large messages</th><th>broker</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_forecast_draws_its_band_and_escapes_the_name() {
        let html = render_forecasts(&ForecastView {
            kind: "topic",
            name: "<script>t</script>",
            step: "1h",
            horizon: 2,
            history: Some(Ok(json!({"rows": [["2026-11-25T10:00:00", 5]]}))),
            forecast: Some(Ok(
                json!({"rows": [["2026-11-25T11:00:00", 6.0, 4.0, 8.0], ["2026-11-25T12:00:00", 7.0, 4.5, 9.5]]}),
            )),
            unavailable: false,
        });
        assert!(html.contains("class=\"band\""));
        assert!(!html.contains("<script>t") && html.contains("&lt;script&gt;t"));
        assert_eq!(sql_string("o'k"), "'o''k'");
    }

    #[test]
    fn clients_say_what_is_missing() {
        let view = |q: &'static str, verdict: &'static str| ClientsView {
            policy: Ok(json!({"min_version": "1.2.0", "blocked_versions": ["<1.3.1>"]})),
            brokers: vec![
                (
                    "127.0.0.1:8081".into(),
                    Ok(json!({"refuse": false, "clients": [
                        {"kind": "consumer", "group": "billing", "client_id": "c1@host", "idc": "dc1", "sdk_language": "rust", "sdk_version": "0.1.0", "sdk_violation": null,
                         "consumed": 100, "consume_p50_us": 32767, "consume_p99_us": 1048575},
                        {"kind": "producer", "group": "", "client_id": "127.0.0.1:5000", "idc": "", "sdk_language": "java", "sdk_version": "<1.0>", "sdk_violation": "below the minimum 1.2.0: upgrade"}],
                        "producers": [{"client_id": "uploader-1", "host": "10.0.0.8", "idc": "dc2", "sdk": "rust/0.1.0", "send_p50_us": 2047, "send_p99_us": 131071,
                                       "sends": 100, "message_p50_bytes": 32767, "large_messages": 5, "hint": "5 messages over 10240 bytes: compress",
                                       "sdk_violation": "below the minimum 1.2.0: upgrade"},
                                      {"client_id": "uploader-2", "host": "10.0.0.9", "idc": "", "sdk": "rust/1.3.0", "sdk_violation": null}]})),
                ),
                (
                    "127.0.0.1:8181".into(),
                    Err(ApiError {
                        service: "broker".into(),
                        addr: "127.0.0.1:8181".into(),
                        request: "GET /api/broker/clients".into(),
                        status: None,
                        code: "unreachable".into(),
                        message: "refused".into(),
                        position: None,
                    }),
                ),
            ],
            q,
            verdict,
            offset: 0,
        };
        let html = render_clients(&view("", ""));
        assert!(html.contains("1.2.0") && html.contains("&lt;1.3.1&gt;"));
        assert!(html.contains("c1@host") && html.contains("<td>dc1</td>") && html.contains("&lt;1.0&gt;"));
        assert!(
            html.contains("below the minimum 1.2.0") && html.contains("127.0.0.1:8181"),
            "{html}"
        );
        let offenders = render_clients(&view("", "offenders"));
        assert!(!offenders.contains("c1@host") && offenders.contains("127.0.0.1:5000"));
        let searched = render_clients(&view("BILL", ""));
        assert!(searched.contains("c1@host") && !searched.contains("127.0.0.1:5000"));
        assert!(
            html.contains("data-producer=\"uploader-1\"")
                && html.contains("<td>dc2</td><td>rust/0.1.0</td><td class=\"verdict\"><span class=\"badge bad\">violates</span> below the minimum 1.2.0: upgrade</td>")
                && html.contains("<td>—</td><td>rust/1.3.0</td><td class=\"verdict\"><span class=\"badge good\">ok</span></td>")
                && html.contains("<td>2.0 ms</td><td>131.1 ms</td>")
                && html.contains("5 large</span> 5 messages over 10240 bytes: compress"),
            "{html}"
        );
        // A consumer's handler time per message; a producer has none.
        assert!(
            html.contains("<td class=\"consume\">32.8 ms</td><td class=\"consume\">1048.6 ms</td>")
                && html.contains("<td class=\"consume\">—</td><td class=\"consume\">—</td>"),
            "{html}"
        );
    }
}
