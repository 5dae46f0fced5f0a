//! Overview (`/`): the data centers side by side with their nameservers and broker members, the
//! broker groups with master and slave roles, each broker's own health, the totals and the firing
//! alerts.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

use crate::client::ApiError;
use crate::html::{Nav, badge, error_box, esc, missing, page, text_of, time_of};

/// What the overview reads: a fixed number of calls, whatever the cluster's size.
pub struct OverviewData {
    /// `GET /api/cluster` of the nameserver.
    pub cluster: Result<Value, ApiError>,
    /// `GET /api/brokers`.
    pub brokers: Result<Value, ApiError>,
    /// `GET /api/drill`.
    pub drill: Result<Value, ApiError>,
    /// `GET /api/topics?limit=1` (for `total`).
    pub topics: Result<Value, ApiError>,
    /// `GET /api/groups?limit=1`.
    pub groups: Result<Value, ApiError>,
    /// `GET /api/health` of each broker HTTP API the console was given.
    pub broker_health: Vec<Result<Value, ApiError>>,
    /// `GET /api/alerts?status=firing`.
    pub alerts: Result<Value, ApiError>,
}

/// Bytes as `1.2 GiB`.
pub fn bytes_text(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// A rate as `12.5/s`, `—` when the broker has no two samples yet.
fn rate_text(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "—".to_owned(), |rate| format!("{rate}/s"))
}

/// Put and get rates (last minute) and disk of the brokers of one data center, summed.
#[derive(Default)]
struct Load {
    brokers: usize,
    put: f64,
    get: f64,
    used: u64,
    free: u64,
    /// Whether any broker had two samples (else the rates are unknown, not zero).
    sampled: bool,
}

fn load_of<'a>(healths: impl Iterator<Item = &'a Value>) -> Load {
    let mut load = Load::default();
    for health in healths {
        let stats = &health["stats"];
        load.brokers += 1;
        if let (Some(put), Some(get)) = (stats["put_tps_1m"].as_f64(), stats["get_tps_1m"].as_f64()) {
            load.put += put;
            load.get += get;
            load.sampled = true;
        }
        load.used += stats["disk"]["used_bytes"].as_u64().unwrap_or(0);
        load.free += stats["disk"]["free_bytes"].as_u64().unwrap_or(0);
    }
    load
}

fn load_text(load: &Load) -> String {
    if load.brokers == 0 {
        return "no broker HTTP API of this data center is configured (meridian ui --broker-http): no rates or disk"
            .to_owned();
    }
    format!(
        "put <strong class=\"put\">{}</strong> · get <strong class=\"get\">{}</strong> (last minute) · data <strong class=\"used\">{}</strong> · free {}",
        if load.sampled {
            format!("{:.1}/s", load.put)
        } else {
            "—".to_owned()
        },
        if load.sampled {
            format!("{:.1}/s", load.get)
        } else {
            "—".to_owned()
        },
        bytes_text(load.used),
        bytes_text(load.free),
    )
}

fn card(label: &str, value: &str, id: &str) -> String {
    format!(
        "<div class=\"card\" id=\"{id}\"><div class=\"card-label\">{}</div><div class=\"card-value\">{value}</div></div>",
        esc(label)
    )
}

/// The overview page.
pub fn render(data: &OverviewData) -> String {
    let mut body = String::new();
    let mut errors = String::new();
    for (what, result) in [
        ("Cluster:", &data.cluster),
        ("Broker groups:", &data.brokers),
        ("Drill state:", &data.drill),
        ("Topic count:", &data.topics),
        ("Group count:", &data.groups),
    ] {
        if let Err(error) = result {
            errors.push_str(&error_box(what, error));
        }
    }
    body.push_str(&errors);

    let leader = data.cluster.as_ref().ok().and_then(|c| c["leader"].as_u64());
    let evacuated = data
        .drill
        .as_ref()
        .ok()
        .and_then(|d| d["evacuated"].as_str())
        .map(str::to_owned);
    let empty = Vec::new();
    let groups = data.brokers.as_ref().ok().and_then(Value::as_array).unwrap_or(&empty);
    let nodes = data
        .cluster
        .as_ref()
        .ok()
        .and_then(|c| c["nodes"].as_array())
        .unwrap_or(&empty);

    // Totals.
    body.push_str("<section class=\"cards\">");
    body.push_str(&card(
        "Raft leader",
        &match (leader, &data.cluster) {
            (Some(id), Ok(cluster)) => format!("node {id} · term {}", text_of(&cluster["term"])),
            (None, Ok(_)) => badge("no_leader"),
            (_, Err(_)) => "unknown".to_owned(),
        },
        "card-leader",
    ));
    let total = |result: &Result<Value, ApiError>| {
        result
            .as_ref()
            .ok()
            .and_then(|v| v["total"].as_u64())
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string())
    };
    body.push_str(&card("Topics", &total(&data.topics), "card-topics"));
    body.push_str(&card("Consumer groups", &total(&data.groups), "card-groups"));
    body.push_str(&card("Broker groups", &groups.len().to_string(), "card-broker-groups"));
    let live = groups
        .iter()
        .flat_map(|g| g["members"].as_array().into_iter().flatten())
        .filter(|m| m["alive"].as_bool() == Some(true))
        .count();
    let members = groups
        .iter()
        .flat_map(|g| g["members"].as_array().into_iter().flatten())
        .count();
    body.push_str(&card("Brokers alive", &format!("{live} / {members}"), "card-alive"));
    body.push_str(&card(
        "Drill",
        &match &evacuated {
            Some(idc) => format!("{} {}", badge("evacuated"), esc(idc)),
            None => badge("serving"),
        },
        "card-drill",
    ));
    body.push_str("</section>");
    // What needs someone now comes before the topology.
    body.push_str(&crate::pages::alerts::firing_box(&data.alerts));

    // Data centers side by side.
    let mut idcs = BTreeSet::new();
    for group in groups {
        for member in group["members"].as_array().into_iter().flatten() {
            idcs.insert(member["idc"].as_str().unwrap_or_default().to_owned());
        }
    }
    for node in nodes {
        idcs.insert(node["idc"].as_str().unwrap_or_default().to_owned());
    }
    body.push_str("<h2>Data centers</h2><section class=\"idcs\">");
    if idcs.is_empty() {
        body.push_str("<p>No nameserver or broker has reported a data center yet.</p>");
    }
    for idc in &idcs {
        let name = if idc.is_empty() {
            "(no data center)"
        } else {
            idc.as_str()
        };
        let is_evacuated = evacuated.as_deref() == Some(idc.as_str());
        let _ = write!(
            body,
            "<div class=\"idc{}\" data-idc=\"{}\"><h3>{} {}</h3>",
            if is_evacuated { " evacuated" } else { "" },
            esc(idc),
            esc(name),
            if is_evacuated {
                badge("evacuated")
            } else {
                badge("serving")
            }
        );
        let here = load_of(
            data.broker_health
                .iter()
                .filter_map(|health| health.as_ref().ok())
                .filter(|health| health["broker"]["idc"].as_str().unwrap_or_default() == idc),
        );
        let _ = write!(
            body,
            "<p class=\"idc-load\" data-idc-load=\"{}\">{}</p><h4>Nameservers</h4><ul>",
            crate::html::attr(idc),
            load_text(&here)
        );
        let mut any = false;
        for node in nodes.iter().filter(|n| n["idc"].as_str().unwrap_or_default() == idc) {
            any = true;
            let id = node["id"].as_u64();
            let role = if id.is_some() && id == leader {
                badge("leader")
            } else {
                badge("Follower")
            };
            let _ = write!(
                body,
                "<li>node {} <code>{}</code> {role}{}</li>",
                text_of(&node["id"]),
                esc(&text_of(&node["addr"])),
                if node["voter"].as_bool() == Some(false) {
                    " (learner)"
                } else {
                    ""
                }
            );
        }
        if !any {
            body.push_str("<li class=\"dim\">none here</li>");
        }
        body.push_str("</ul><h4>Brokers</h4><table><thead><tr><th>group</th><th>member</th><th>role</th><th>state</th><th>max offset</th><th>behind master</th><th>heartbeat</th></tr></thead><tbody>");
        for group in groups {
            let master_offset = group["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["role"] == "master")
                .and_then(|m| m["max_offset"].as_u64());
            for member in group["members"].as_array().into_iter().flatten() {
                if member["idc"].as_str().unwrap_or_default() != idc {
                    continue;
                }
                let behind = match (member["role"].as_str(), master_offset, member["max_offset"].as_u64()) {
                    (Some("slave"), Some(master), Some(own)) => format!("{} bytes", master.saturating_sub(own)),
                    _ => "—".to_owned(),
                };
                let alive = member["alive"].as_bool() == Some(true);
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{behind}</td><td>{}</td></tr>",
                    esc(&text_of(&group["name"])),
                    esc(&text_of(&member["name"])),
                    badge(member["role"].as_str().unwrap_or("slave")),
                    badge(if alive { "alive" } else { "dead" }),
                    text_of(&member["max_offset"]),
                    member["last_heartbeat_ago_ms"]
                        .as_u64()
                        .map_or_else(|| "—".to_owned(), |ms| format!("{ms} ms ago")),
                );
            }
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("</section>");

    // Broker groups with their roles.
    body.push_str("<h2>Broker groups</h2><table id=\"broker-groups\"><thead><tr><th>group</th><th>epoch</th><th>master</th><th>in sync</th><th>switchover</th><th>last change</th></tr></thead><tbody>");
    for group in groups {
        let in_sync: Vec<String> = group["in_sync"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| esc(&text_of(s)))
            .collect();
        let last = group["history"].as_array().and_then(|h| h.last());
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text_of(&group["name"])),
            text_of(&group["epoch"]),
            match group["master"].as_str() {
                Some(master) => esc(master),
                None => badge("no master"),
            },
            if in_sync.is_empty() {
                "—".to_owned()
            } else {
                in_sync.join(", ")
            },
            esc(&text_of(&group["preferred"])),
            last.map_or_else(
                || "—".to_owned(),
                |l| format!(
                    "{} {} by {} ({})",
                    esc(&text_of(&l["action"])),
                    esc(&text_of(&l["master"])),
                    esc(&text_of(&l["by"])),
                    time_of(&l["at_ms"])
                )
            ),
        );
    }
    body.push_str("</tbody></table>");

    // Each broker's own health.
    body.push_str("<h2>Broker health</h2>");
    if data.broker_health.is_empty() {
        body.push_str(&missing(
            "The console was started without broker HTTP addresses (meridian ui --broker-http ADDR): no broker health to show.",
        ));
    } else {
        body.push_str("<div class=\"scroll\"><table id=\"broker-health\"><thead><tr><th>broker</th><th>data center</th><th>status</th><th>role</th><th>writable</th><th>put/s now · 1 min</th><th>get/s now · 1 min</th><th>data dir</th><th>disk free</th><th>committed</th><th>flushed</th><th>confirmed</th><th>flush</th><th>in sync</th><th>store</th></tr></thead><tbody>");
        let mut failures = String::new();
        for health in &data.broker_health {
            match health {
                Ok(h) => {
                    // A broker whose store failed (a disk error) answers 503 with the reason.
                    let store = match h["store_failure"].as_str() {
                        Some(reason) => format!(
                            "<span class=\"badge bad\">failed</span> <span class=\"store-failure\">{}</span> (restart the broker once the disk is fixed)",
                            esc(reason)
                        ),
                        None => badge("ok"),
                    };
                    let row_class = if h["store_failure"].is_string() {
                        " class=\"failed\""
                    } else {
                        ""
                    };
                    let _ = write!(
                        body,
                        "<tr{row_class} data-broker=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"put\">{} · {}</td><td class=\"get\">{} · {}</td><td class=\"used\">{}</td><td class=\"free\">{}</td><td>{}</td><td>{}</td><td class=\"confirmed\">{}</td><td>{}</td><td>{}</td><td>{store}</td></tr>",
                        crate::html::attr(&text_of(&h["broker"]["name"])),
                        esc(&text_of(&h["broker"]["name"])),
                        esc(&text_of(&h["broker"]["idc"])),
                        badge(h["status"].as_str().unwrap_or("unknown")),
                        esc(&text_of(&h["replication"]["role"])),
                        text_of(&h["replication"]["writable"]),
                        rate_text(&h["stats"]["put_tps"]),
                        rate_text(&h["stats"]["put_tps_1m"]),
                        rate_text(&h["stats"]["get_tps"]),
                        rate_text(&h["stats"]["get_tps_1m"]),
                        h["stats"]["disk"]["used_bytes"]
                            .as_u64()
                            .map_or_else(|| "—".to_owned(), bytes_text),
                        match (
                            h["stats"]["disk"]["free_bytes"].as_u64(),
                            h["stats"]["disk"]["total_bytes"].as_u64()
                        ) {
                            (Some(free), Some(total)) => format!("{} of {}", bytes_text(free), bytes_text(total)),
                            _ => "—".to_owned(),
                        },
                        text_of(&h["broker"]["committed_offset"]),
                        text_of(&h["broker"]["flushed_offset"]),
                        text_of(&h["broker"]["confirmed_offset"]),
                        esc(&text_of(&h["broker"]["flush_mode"])),
                        esc(&text_of(&h["replication"]["in_sync"])),
                    );
                }
                Err(error) => failures.push_str(&error_box("Broker health:", error)),
            }
        }
        body.push_str("</tbody></table></div>");
        body.push_str(&failures);
    }
    page("Overview", Nav::Overview, &body)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn failed() -> ApiError {
        ApiError {
            service: "nameserver".into(),
            addr: "127.0.0.1:1".into(),
            request: "GET /api/cluster".into(),
            status: None,
            code: "unreachable".into(),
            message: "cannot connect".into(),
            position: None,
        }
    }

    #[test]
    fn data_centers_stand_side_by_side_with_roles_and_the_leader() {
        let data = OverviewData {
            cluster: Ok(
                json!({"leader": 1, "term": 3, "nodes": [{"id": 1, "addr": "127.0.0.1:7800", "idc": "dc1", "voter": true}]}),
            ),
            brokers: Ok(
                json!([{"name": "broker-a", "epoch": 2, "master": "a-0", "in_sync": ["a-1"], "history": [], "members": [
                {"name": "a-0", "idc": "dc1", "role": "master", "alive": true, "max_offset": 100},
                {"name": "a-1<script>", "idc": "dc2", "role": "slave", "alive": true, "max_offset": 90}]}]),
            ),
            drill: Ok(json!({"evacuated": "dc2", "steps": []})),
            topics: Ok(json!({"total": 12})),
            groups: Err(failed()),
            broker_health: vec![
                Err(failed()),
                Ok(
                    json!({"status": "unhealthy", "store_failure": "fsync of 00000000000000000000 failed: <EIO>",
                    "broker": {"name": "broker-b", "idc": "dc2", "committed_offset": 300, "flushed_offset": 290, "confirmed_offset": 280},
                    "replication": {"role": "master"},
                    "stats": {"put_tps": 4.5, "put_tps_1m": 3.3, "get_tps": 1.0, "get_tps_1m": 0.5,
                        "disk": {"used_bytes": 3_221_225_472u64, "free_bytes": 1_048_576, "total_bytes": 2_097_152}}}),
                ),
            ],
            alerts: Ok(
                json!({"firing": 1, "alerts": [{"key": "lag/group=g", "status": "firing", "owner": "team-a", "severity": "warning"}]}),
            ),
        };
        let html = render(&data);
        assert!(html.contains("data-idc=\"dc1\"") && html.contains("data-idc=\"dc2\""));
        assert!(html.contains("10 bytes"), "a slave's distance from its master");
        assert!(html.contains("node 1 · term 3"));
        assert!(html.contains("a-1&lt;script&gt;") && !html.contains("a-1<script>"));
        assert!(html.contains("class=\"idc evacuated\""));
        assert!(html.contains("Group count:") && html.contains("role=\"alert\""));
        // A broker whose disk failed shows red with the reason, and its confirmed offset.
        assert!(
            html.contains("<tr class=\"failed\" data-broker=\"broker-b\">")
                && html.contains("<span class=\"badge bad\">unhealthy</span>")
        );
        assert!(html.contains("failed: &lt;EIO&gt;") && html.contains("<td class=\"confirmed\">280</td>"));
        assert!(html.contains("id=\"firing-alerts\"") && html.contains("team-a"));
        // TPS and disk per broker, and summed per data center.
        assert!(
            html.contains("<td class=\"put\">4.5/s · 3.3/s</td>") && html.contains("<td class=\"used\">3.0 GiB</td>")
        );
        assert!(html.contains("<td class=\"free\">1.0 MiB of 2.0 MiB</td>"));
        assert!(
            html.contains("data-idc-load=\"dc2\">put <strong class=\"put\">3.3/s</strong>"),
            "{html}"
        );
        assert!(html.contains("data-idc-load=\"dc1\">no broker HTTP API"));
    }
}
