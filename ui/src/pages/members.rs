//! Two sections of a group's page (`/groups/{name}`): its live members per data center with the
//! queues each holds (the brokers' `GET /api/broker/allocation`, one call per topic of the group),
//! and its dead letters, browsed a page at a time and resent with a typed confirmation (the
//! brokers' `GET /api/broker/dead-letters` and, through the console, `POST
//! /api/broker/dead-letters/resend`).
//!
//! Pure functions from the brokers' JSON to HTML; [`crate::pages::groups::render_detail`] places
//! them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::client::{ApiError, encode};
use crate::html::{attr, by_field, error_box, esc, missing, text_of, time_of};

/// Dead letters per broker and page.
pub const DEAD_LETTER_PAGE: u64 = 50;

fn queue_name(queue: &Value) -> String {
    format!("{}#{}", text_of(&queue["broker"]), text_of(&queue["queue_id"]))
}

/// Members per data center, side by side, each with its queues; then the queues nobody holds.
pub fn allocation_section(answers: &[Result<Value, ApiError>]) -> String {
    let mut out = String::from("<h2>Consumers and queue allocation</h2>");
    let mut errors = String::new();
    // data center -> rows of (topic, member, queues).
    let mut by_idc: BTreeMap<String, Vec<(String, &Value)>> = BTreeMap::new();
    let mut orphans: Vec<(String, String, String)> = Vec::new();
    let mut facts = Vec::new();
    let mut retry_drawn = false;
    for answer in answers {
        match answer {
            Err(error) => errors.push_str(&error_box("Allocation:", error)),
            Ok(report) => {
                let topic = text_of(&report["topic"]);
                let count = report["members"].as_array().map_or(0, Vec::len);
                facts.push(format!(
                    "{}: {} ({count} member{}){}{}",
                    esc(&topic),
                    esc(&text_of(&report["deployment"])),
                    if count == 1 { "" } else { "s" },
                    match report["evacuated_idcs"].as_array() {
                        Some(idcs) if !idcs.is_empty() =>
                            format!(", evacuated {}", esc(&text_of(&report["evacuated_idcs"]))),
                        _ => String::new(),
                    },
                    match report["unserved_idcs"].as_array() {
                        Some(idcs) if !idcs.is_empty() => format!(
                            ", <strong>no consumer in {}</strong>: their queues wait",
                            esc(&text_of(&report["unserved_idcs"]))
                        ),
                        _ => String::new(),
                    },
                ));
                for member in report["members"].as_array().into_iter().flatten() {
                    let idc = member["idc"].as_str().unwrap_or_default().to_owned();
                    by_idc.entry(idc).or_default().push((topic.clone(), member));
                }
                for queue in report["queues"].as_array().into_iter().flatten() {
                    if queue["client_id"].is_null() {
                        orphans.push((topic.clone(), queue_name(queue), text_of(&queue["idc"])));
                    }
                }
                // The group's retry topic, shared by all its topics' consumers: drawn once, from
                // the first topic's answer (queue 0 of each of its brokers).
                if !retry_drawn && report["retry"].is_object() {
                    retry_drawn = true;
                    let retry = &report["retry"];
                    let retry_topic = text_of(&retry["topic"]);
                    for member in retry["members"].as_array().into_iter().flatten() {
                        let idc = member["idc"].as_str().unwrap_or_default().to_owned();
                        by_idc.entry(idc).or_default().push((retry_topic.clone(), member));
                    }
                    for queue in retry["queues"].as_array().into_iter().flatten() {
                        if queue["client_id"].is_null() {
                            orphans.push((retry_topic.clone(), queue_name(queue), text_of(&queue["idc"])));
                        }
                    }
                }
            }
        }
    }
    out.push_str(&errors);
    if !facts.is_empty() {
        let _ = write!(out, "<p id=\"allocation-facts\">{}</p>", facts.join("; "));
    }
    if by_idc.is_empty() {
        if errors.is_empty() {
            out.push_str("<p class=\"dim\" id=\"no-members\">No live member: nobody consumes this group now.</p>");
        }
    } else {
        out.push_str("<section class=\"idcs\" id=\"allocation\">");
        for (idc, rows) in &by_idc {
            let _ = write!(
                out,
                "<div class=\"idc\" data-idc=\"{}\"><h3>{}</h3><table><thead><tr><th>client</th><th>topic</th><th>queues</th><th>SDK</th></tr></thead><tbody>",
                attr(idc),
                if idc.is_empty() {
                    "(no data center)".to_owned()
                } else {
                    esc(idc)
                }
            );
            for (topic, member) in rows {
                let queues: Vec<String> = member["queues"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|queue| format!("<code>{}</code>", esc(&queue_name(queue))))
                    .collect();
                let _ = write!(
                    out,
                    "<tr data-client=\"{}\" data-topic=\"{}\"><td>{}</td><td>{}</td><td class=\"queues\">{}</td><td>{} {}</td></tr>",
                    attr(&text_of(&member["client_id"])),
                    attr(topic),
                    esc(&text_of(&member["client_id"])),
                    esc(topic),
                    if queues.is_empty() {
                        "none".to_owned()
                    } else {
                        queues.join(" ")
                    },
                    if topic.starts_with("%RETRY%") {
                        "retry queues: failed".to_owned()
                    } else {
                        esc(&text_of(&member["sdk_version"]))
                    },
                    if topic.starts_with("%RETRY%") {
                        "messages come back here".to_owned()
                    } else {
                        esc(&text_of(&member["allocation"]))
                    },
                );
            }
            out.push_str("</tbody></table></div>");
        }
        out.push_str("</section>");
    }
    if !orphans.is_empty() {
        out.push_str("<p class=\"error\" id=\"unassigned\">Queues no member holds: ");
        let listed: Vec<String> = orphans
            .iter()
            .map(|(topic, queue, idc)| format!("{} <code>{}</code> ({})", esc(topic), esc(queue), esc(idc)))
            .collect();
        out.push_str(&listed.join(", "));
        out.push_str("</p>");
    }
    out
}

/// The group's dead letters on every broker, `offset` into each broker's dead-letter queue, with
/// the resend form.
pub fn dead_letters_section(group: &str, answers: &[Result<Value, ApiError>], offset: u64) -> String {
    let mut out = String::from("<h2>Dead letters</h2>");
    let mut errors = String::new();
    let mut rows = String::new();
    let (mut total, mut shown, mut more) = (0u64, 0u64, false);
    for answer in answers {
        match answer {
            Err(error) => errors.push_str(&error_box("Dead letters (this broker's are missing below):", error)),
            Ok(page) => {
                total += page["total"].as_u64().unwrap_or(0);
                more |= !page["next_offset"].is_null();
                for letter in page["letters"].as_array().into_iter().flatten() {
                    shown += 1;
                    let msg_id = text_of(&letter["msg_id"]);
                    let body = text_of(&letter["body"]);
                    let preview: String = body.chars().take(80).collect();
                    let _ = write!(
                        rows,
                        "<tr data-msg-id=\"{id}\"><td><input type=\"checkbox\" name=\"msg_id\" value=\"{id}\" form=\"resend\" aria-label=\"resend {id}\"></td>\
<td><code>{id_text}</code></td><td>{topic}</td><td>{failures}</td><td>{dead}</td><td>{keys}</td><td>{broker}</td>\
<td><details><summary>{preview}</summary><pre class=\"body\">{body}</pre><pre class=\"properties\">{properties}</pre></details></td></tr>",
                        id = attr(&msg_id),
                        id_text = esc(&msg_id),
                        topic = esc(&text_of(&letter["topic"])),
                        failures = text_of(&letter["reconsume_count"]),
                        dead = time_of(&letter["dead_lettered_at"]),
                        keys = esc(&text_of(&letter["keys"])),
                        broker = esc(&text_of(&page["broker"])),
                        preview = esc(&preview),
                        body = esc(&body),
                        properties = esc(&letter["properties"]
                            .as_object()
                            .map(|properties| {
                                properties
                                    .iter()
                                    .map(|(name, value)| format!("{name} = {}", text_of(value)))
                                    .collect::<Vec<_>>()
                                    .join("\n")
                            })
                            .unwrap_or_default()),
                    );
                }
            }
        }
    }
    out.push_str(&errors);
    if answers.is_empty() {
        out.push_str(&missing(
            "The console knows no broker HTTP API (meridian ui --broker-http ADDR), so it cannot read dead letters.",
        ));
        return out;
    }
    let _ = write!(
        out,
        "<p id=\"dead-letter-count\"><strong>{total}</strong> dead letters (messages that failed every retry), {shown} shown.</p>"
    );
    if total == 0 && shown == 0 {
        return out;
    }
    let _ = write!(
        out,
        "<table id=\"dead-letters\"><thead><tr><th></th><th>message id</th><th>first topic</th><th>failures</th><th>dead-lettered</th><th>keys</th><th>broker</th><th>body</th></tr></thead><tbody>{rows}</tbody></table>"
    );
    let path = format!("/groups/{}", encode(group));
    let mut pager = String::from("<nav class=\"pager\">");
    if offset > 0 {
        let _ = write!(
            pager,
            "<a rel=\"prev\" href=\"{}\">← previous dead letters</a> ",
            attr(&format!(
                "{path}?dlq_offset={}",
                offset.saturating_sub(DEAD_LETTER_PAGE)
            ))
        );
    }
    if more {
        let _ = write!(
            pager,
            "<a rel=\"next\" href=\"{}\">next dead letters →</a>",
            attr(&format!("{path}?dlq_offset={}", offset + DEAD_LETTER_PAGE))
        );
    }
    pager.push_str("</nav>");
    out.push_str(&pager);
    let _ = write!(
        out,
        "<form class=\"panel\" id=\"resend\" method=\"post\" action=\"{}/dead-letters/resend\"><h3>Resend to the retry topic</h3>\
<p class=\"hint\">The ticked dead letters (or, with none ticked, every one) go back on the group's retry topic with their failure count at 0; its consumers get them again.</p>\
<label>type the group's name to confirm <input name=\"confirm\" required autocomplete=\"off\"></label>{}\
<button class=\"danger\">Resend</button></form>",
        attr(&path),
        by_field()
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn members_stand_per_data_center_with_their_queues() {
        let html = allocation_section(&[Ok(json!({
            "topic": "orders", "deployment": "single-side", "evacuated_idcs": [], "unserved_idcs": [],
            "members": [
                {"client_id": "c1<x>", "idc": "dc1", "allocation": "idc-aware/1", "sdk_version": "0.1.0",
                 "queues": [{"broker": "broker-a", "queue_id": 0}, {"broker": "broker-a", "queue_id": 1}]},
                {"client_id": "c2", "idc": "dc2", "queues": []}],
            "queues": [{"broker": "broker-a", "queue_id": 0, "idc": "dc1", "client_id": "c1<x>"},
                       {"broker": "broker-b", "queue_id": 0, "idc": "dc2", "client_id": null}],
            "retry": {"topic": "%RETRY%billing",
                "members": [{"client_id": "c1<x>", "idc": "dc1", "queues": [{"broker": "broker-a", "queue_id": 0}]}],
                "queues": [{"broker": "broker-a", "queue_id": 0, "idc": "dc1", "client_id": "c1<x>"}]}
        }))]);
        // The retry topic's allocation stands next to the topic's.
        assert!(html.contains("data-topic=\"%RETRY%billing\""), "{html}");
        assert!(
            html.contains("data-idc=\"dc1\"") && html.contains("data-idc=\"dc2\""),
            "{html}"
        );
        assert!(html.contains("<code>broker-a#0</code> <code>broker-a#1</code>"));
        assert!(html.contains("c1&lt;x&gt;") && !html.contains("c1<x>"));
        assert!(html.contains("id=\"unassigned\"") && html.contains("broker-b#0"));
        assert!(
            allocation_section(&[Ok(json!({"topic": "t", "members": [], "queues": []}))]).contains("No live member")
        );
    }

    #[test]
    fn dead_letters_list_with_a_confirmed_resend_form_and_escape_bodies() {
        let html = dead_letters_section(
            "billing",
            &[Ok(
                json!({"broker": "broker-a", "total": 51, "next_offset": 50, "letters": [
                {"msg_id": "AB12", "topic": "orders", "reconsume_count": 3, "dead_lettered_at": 0,
                 "keys": ["k"], "properties": {"RETRY_TOPIC": "orders"}, "body": "<img src=x onerror=1>"}]}),
            )],
            0,
        );
        assert!(html.contains("<strong>51</strong> dead letters"));
        assert!(html.contains("tr data-msg-id=\"AB12\"") && html.contains("value=\"AB12\" form=\"resend\""));
        assert!(html.contains("&lt;img src=x") && !html.contains("<img src=x"));
        assert!(html.contains("action=\"/groups/billing/dead-letters/resend\"") && html.contains("name=\"confirm\""));
        assert!(html.contains("dlq_offset=50"));
        let none = dead_letters_section("billing", &[Ok(json!({"total": 0, "letters": []}))], 0);
        assert!(none.contains("<strong>0</strong>") && !none.contains("id=\"resend\""));
    }
}
