//! Alerts (`/alerts`) and the Overview's firing-alerts box: the alerts the nameservers recorded
//! (`GET /api/alerts`, evaluated by the Raft leader from the rules in the nameserver config),
//! firing first, each with its owner, severity, subject and history of state changes.
//!
//! The API filters by owner and status; severity is filtered here. The API keeps at most 1,000
//! alerts, so one call per page view is bounded whatever the cluster's size, and the page shows
//! them [`PAGE`] at a time.

use std::fmt::Write as _;

use serde_json::Value;

use crate::client::{ApiError, encode};
use crate::html::{Nav, attr, badge, error_box, esc, page, pager, text_of, time_of};

/// Alerts per page.
pub const PAGE: usize = 100;

/// Severities a rule may have (the nameserver's `alerts::SEVERITIES`).
pub const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

/// What the Alerts page was asked and what the nameserver answered.
pub struct AlertsView<'a> {
    /// `GET /api/alerts?owner=&status=`.
    pub answer: Result<Value, ApiError>,
    /// Only this owner's alerts (empty: everyone's).
    pub owner: &'a str,
    /// `firing`, `resolved` or empty.
    pub status: &'a str,
    /// `info`, `warning`, `critical` or empty.
    pub severity: &'a str,
    /// The page's first alert.
    pub offset: usize,
}

/// The API path for an owner and status filter (both optional).
pub fn api_path(owner: &str, status: &str) -> String {
    let mut query = Vec::new();
    if !owner.is_empty() {
        query.push(format!("owner={}", encode(owner)));
    }
    if status == "firing" || status == "resolved" {
        query.push(format!("status={status}"));
    }
    if query.is_empty() {
        "/api/alerts".to_owned()
    } else {
        format!("/api/alerts?{}", query.join("&"))
    }
}

fn severity_badge(severity: &str) -> String {
    let class = match severity {
        "critical" => "bad",
        "warning" => "warn",
        _ => "info",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(severity))
}

fn status_badge(status: &str) -> String {
    match status {
        "firing" => format!("<span class=\"badge bad\">{}</span>", esc(status)),
        "resolved" => format!("<span class=\"badge good\">{}</span>", esc(status)),
        other => badge(other),
    }
}

fn owner_cell(alert: &Value) -> String {
    match alert["owner"].as_str() {
        Some(owner) if !owner.is_empty() => {
            format!("<a href=\"/alerts?owner={}\">{}</a>", attr(&encode(owner)), esc(owner))
        }
        _ => "<span class=\"dim\">nobody</span>".to_owned(),
    }
}

/// One alert as a table row; with `history`, its state changes in a `<details>` under the message.
fn row(out: &mut String, alert: &Value, history: bool) {
    let status = alert["status"].as_str().unwrap_or_default();
    let _ = write!(
        out,
        "<tr data-alert=\"{key}\" data-status=\"{status_attr}\"><td class=\"status\">{status}</td><td class=\"severity\">{severity}</td>\
<td>{rule}</td><td class=\"subject\">{subject}</td><td class=\"owner\">{owner}</td><td>{since}</td><td class=\"message\">{message}",
        key = attr(&text_of(&alert["key"])),
        status_attr = attr(status),
        status = status_badge(status),
        severity = severity_badge(alert["severity"].as_str().unwrap_or_default()),
        rule = esc(&text_of(&alert["rule"])),
        subject = esc(&text_of(&alert["subject"])),
        owner = owner_cell(alert),
        since = time_of(&alert["last_change_ms"]),
        message = esc(&text_of(&alert["message"])),
    );
    let changes = alert["history"].as_array().map_or(&[][..], Vec::as_slice);
    if history && !changes.is_empty() {
        let _ = write!(
            out,
            "<details class=\"history\"><summary>history ({} changes, first fired {})</summary><ol>",
            changes.len(),
            time_of(&alert["first_fired_ms"])
        );
        for change in changes {
            let _ = write!(
                out,
                "<li data-change=\"{}\">{} {} {}</li>",
                attr(change["status"].as_str().unwrap_or_default()),
                time_of(&change["at_ms"]),
                status_badge(change["status"].as_str().unwrap_or_default()),
                esc(&text_of(&change["message"])),
            );
        }
        out.push_str("</ol></details>");
    }
    out.push_str("</td></tr>");
}

const HEAD: &str = "<thead><tr><th>status</th><th>severity</th><th>rule</th><th>subject</th><th>owner</th><th>since</th><th>message</th></tr></thead>";

/// The Alerts page.
pub fn render(view: &AlertsView<'_>) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<form class=\"search\" id=\"alert-filter\" method=\"get\" action=\"/alerts\">\
<input type=\"search\" name=\"owner\" value=\"{}\" placeholder=\"owner (team)\" aria-label=\"owner\">\
<select name=\"status\" aria-label=\"status\"><option value=\"\">firing and resolved</option>",
        attr(view.owner)
    );
    for status in ["firing", "resolved"] {
        let _ = write!(
            body,
            "<option{}>{status}</option>",
            if status == view.status { " selected" } else { "" }
        );
    }
    body.push_str(
        "</select><select name=\"severity\" aria-label=\"severity\"><option value=\"\">any severity</option>",
    );
    for severity in SEVERITIES {
        let _ = write!(
            body,
            "<option{}>{severity}</option>",
            if severity == view.severity { " selected" } else { "" }
        );
    }
    body.push_str("</select><button>Filter</button></form>");
    let answer = match &view.answer {
        Ok(answer) => answer,
        Err(error) => {
            body.push_str(&error_box("Could not read the alerts:", error));
            return page("Alerts", Nav::Alerts, &body);
        }
    };
    let matching: Vec<&Value> = answer["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|alert| view.severity.is_empty() || alert["severity"] == view.severity)
        .collect();
    let firing = matching.iter().filter(|alert| alert["status"] == "firing").count();
    let _ = write!(
        body,
        "<p id=\"alert-summary\"><strong>{firing}</strong> firing, {} resolved{}. Rules and webhooks live in the nameserver config (<code>[alerts]</code>, docs/governance.md).</p>",
        matching.len() - firing,
        if view.owner.is_empty() {
            String::new()
        } else {
            format!(" for owner {}", esc(view.owner))
        }
    );
    if matching.is_empty() {
        body.push_str("<p class=\"dim\">No alert matches: nothing has fired.</p>");
        return page("Alerts", Nav::Alerts, &body);
    }
    let _ = write!(body, "<table id=\"alerts\">{HEAD}<tbody>");
    for alert in matching.iter().skip(view.offset).take(PAGE) {
        row(&mut body, alert, true);
    }
    body.push_str("</tbody></table>");
    body.push_str(&pager(
        &format!(
            "/alerts?owner={}&status={}&severity={}",
            encode(view.owner),
            encode(view.status),
            encode(view.severity)
        ),
        view.offset,
        matching.len().saturating_sub(view.offset).min(PAGE),
        matching.len(),
        PAGE,
    ));
    page("Alerts", Nav::Alerts, &body)
}

/// Firing alerts shown on the Overview at most.
pub const OVERVIEW_MAX: usize = 10;

/// The Overview's box of firing alerts, from `GET /api/alerts?status=firing`.
pub fn firing_box(answer: &Result<Value, ApiError>) -> String {
    let mut out = String::from("<h2>Firing alerts</h2>");
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            out.push_str(&error_box("Alerts:", error));
            return out;
        }
    };
    let firing: Vec<&Value> = answer["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|alert| alert["status"] == "firing")
        .collect();
    if firing.is_empty() {
        out.push_str(
            "<p id=\"firing-none\">Nothing is firing. <a href=\"/alerts\">All alerts and their history</a></p>",
        );
        return out;
    }
    let _ = write!(out, "<table id=\"firing-alerts\">{HEAD}<tbody>");
    for alert in firing.iter().take(OVERVIEW_MAX) {
        row(&mut out, alert, false);
    }
    out.push_str("</tbody></table>");
    let _ = write!(
        out,
        "<p><a href=\"/alerts?status=firing\">{} firing{}: see them all with their history</a></p>",
        firing.len(),
        if firing.len() > OVERVIEW_MAX {
            format!(", {OVERVIEW_MAX} shown")
        } else {
            String::new()
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer() -> Value {
        json!({"firing": 1, "alerts": [
            {"key": "backlog/group=auditors topic=ledger", "rule": "backlog", "subject": "group=auditors topic=ledger",
             "severity": "warning", "owner": "payments<team>", "status": "firing", "message": "18 messages behind",
             "first_fired_ms": 1_795_630_858_626_u64, "last_change_ms": 1_795_630_858_626_u64,
             "history": [{"at_ms": 1_795_630_858_626_u64, "status": "firing", "message": "18 messages behind"}]},
            {"key": "down/broker=b", "rule": "down", "subject": "broker=b", "severity": "critical", "owner": "",
             "status": "resolved", "message": "heard again", "first_fired_ms": 1, "last_change_ms": 2,
             "history": [{"at_ms": 1, "status": "firing", "message": "silent"}, {"at_ms": 2, "status": "resolved", "message": "heard again"}]}
        ]})
    }

    #[test]
    fn alerts_list_firing_and_resolved_with_owner_severity_and_history() {
        let html = render(&AlertsView {
            answer: Ok(answer()),
            owner: "",
            status: "",
            severity: "",
            offset: 0,
        });
        assert!(html.contains("<strong>1</strong> firing, 1 resolved"), "{html}");
        assert!(html.contains("data-status=\"firing\"") && html.contains("data-status=\"resolved\""));
        assert!(html.contains("payments&lt;team&gt;") && !html.contains("payments<team>"));
        assert!(html.contains("href=\"/alerts?owner=payments%3Cteam%3E\""), "{html}");
        assert!(html.contains("history (2 changes"));
        assert!(html.contains("<span class=\"badge bad\">critical</span>"));
        let critical = render(&AlertsView {
            answer: Ok(answer()),
            owner: "",
            status: "",
            severity: "critical",
            offset: 0,
        });
        assert!(!critical.contains("auditors") && critical.contains("broker=b"));
        assert_eq!(api_path("a b", "firing"), "/api/alerts?owner=a%20b&status=firing");
        assert_eq!(api_path("", "bogus"), "/api/alerts");
    }

    #[test]
    fn the_overview_box_lists_only_firing_alerts() {
        let html = firing_box(&Ok(answer()));
        assert!(html.contains("id=\"firing-alerts\"") && html.contains("auditors") && !html.contains("broker=b"));
        assert!(firing_box(&Ok(json!({"firing": 0, "alerts": []}))).contains("Nothing is firing"));
    }
}
