//! Drills (`/drills`): evacuate one data center and restore it, each confirmed by typing what it
//! acts on, and the drill log with who, when and why.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

use crate::client::ApiError;
use crate::html::{Nav, attr, badge, by_field, error_box, esc, flash, page, text_of, time_of};

/// What the page shows.
pub struct DrillView<'a> {
    /// `GET /api/drill`.
    pub drill: Result<Value, ApiError>,
    /// `GET /api/brokers`, for the data centers and which have a master.
    pub brokers: Result<Value, ApiError>,
    /// `ok=` / `error=` of a redirect.
    pub ok: Option<&'a str>,
    /// See `ok`.
    pub error: Option<&'a str>,
}

/// The Drills page.
pub fn render(view: &DrillView<'_>) -> String {
    let mut body = flash(view.ok, view.error);
    let mut idcs = BTreeSet::new();
    match &view.brokers {
        Ok(groups) => {
            for group in groups.as_array().into_iter().flatten() {
                for member in group["members"].as_array().into_iter().flatten() {
                    if let Some(idc) = member["idc"].as_str().filter(|idc| !idc.is_empty()) {
                        idcs.insert(idc.to_owned());
                    }
                }
            }
        }
        Err(error) => body.push_str(&error_box("Broker groups (for the data centers):", error)),
    }
    match &view.drill {
        Err(error) => body.push_str(&error_box("Could not read the drill state:", error)),
        Ok(drill) => {
            match drill["evacuated"].as_str() {
                Some(idc) => {
                    let _ = write!(
                        body,
                        "<p id=\"drill-state\">{} data center <strong>{}</strong> is evacuated: its brokers refuse writes and its consumers handed their queues over.</p>\
<form class=\"panel\" id=\"restore\" method=\"post\" action=\"/drills/restore\"><h3>Restore</h3>\
<label>type <code>restore {}</code> to confirm <input name=\"confirm\" required autocomplete=\"off\"></label>{}\
<label>reason (optional) <input name=\"reason\"></label><button>Restore</button></form>",
                        badge("evacuated"),
                        esc(idc),
                        esc(idc),
                        by_field()
                    );
                }
                None => {
                    let _ = write!(
                        body,
                        "<p id=\"drill-state\">{} every data center serves.</p>\
<form class=\"panel\" id=\"evacuate\" method=\"post\" action=\"/drills/evacuate\"><h3>Evacuate a data center</h3>\
<label>data center <select name=\"idc\" required>",
                        badge("serving")
                    );
                    for idc in &idcs {
                        let _ = write!(body, "<option value=\"{}\">{}</option>", attr(idc), esc(idc));
                    }
                    let _ = write!(
                        body,
                        "</select></label><label>type the data center's name again to confirm <input name=\"confirm\" required autocomplete=\"off\"></label>{}\
<label>reason <input name=\"reason\" placeholder=\"quarterly drill\"></label><button class=\"danger\">Evacuate</button></form>",
                        by_field()
                    );
                }
            }
            body.push_str("<h2>Drill log</h2><table id=\"drill-log\"><thead><tr><th>when</th><th>action</th><th>data center</th><th>by</th><th>reason</th></tr></thead><tbody>");
            let steps = drill["steps"].as_array().cloned().unwrap_or_default();
            for step in steps.iter().rev() {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    time_of(&step["at_ms"]),
                    esc(&text_of(&step["action"])),
                    esc(&text_of(&step["idc"])),
                    esc(&text_of(&step["by"])),
                    esc(&text_of(&step["reason"])),
                );
            }
            if steps.is_empty() {
                body.push_str("<tr><td colspan=\"5\">no drill yet</td></tr>");
            }
            body.push_str("</tbody></table>");
        }
    }
    page("Drills", Nav::Drills, &body)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_evacuation_offers_restore_and_the_log_is_escaped() {
        let html = render(&DrillView {
            drill: Ok(
                json!({"evacuated": "dc1", "steps": [{"at_ms": 0, "action": "evacuate", "idc": "dc1", "by": "<script>a</script>", "reason": null}]}),
            ),
            brokers: Ok(json!([])),
            ok: None,
            error: None,
        });
        assert!(html.contains("id=\"restore\"") && !html.contains("id=\"evacuate\""));
        assert!(!html.contains("<script>a") && html.contains("&lt;script&gt;a"));
    }

    #[test]
    fn without_an_evacuation_every_data_center_can_be_chosen() {
        let html = render(&DrillView {
            drill: Ok(json!({"evacuated": null, "steps": []})),
            brokers: Ok(json!([{"members": [{"idc": "dc1"}, {"idc": "dc2"}]}])),
            ok: None,
            error: None,
        });
        assert!(html.contains("<option value=\"dc1\">") && html.contains("<option value=\"dc2\">"));
        assert!(html.contains("no drill yet"));
    }
}
