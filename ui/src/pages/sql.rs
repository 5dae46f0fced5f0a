//! SQL (`/sql?q=...`): an editor with examples, the result as a table and as a chart, CSV export
//! (`/sql.csv?q=...`), and errors with their line and column marked in the statement. Also the
//! helpers other pages use to chart a query's answer ([`time_points`]).

use std::fmt::Write as _;

use serde_json::Value;

use crate::client::{ApiError, encode};
use crate::html::{Nav, attr, error_box, esc, missing, page, text_of};
use crate::svg;

/// Rows the result table shows; the rest are in the CSV export.
pub const SHOWN_ROWS: usize = 500;

/// Examples under the editor: (label, SQL).
pub const EXAMPLES: [(&str, &str); 6] = [
    (
        "messages per topic",
        "SELECT topic, count(*) AS messages FROM messages GROUP BY topic ORDER BY messages DESC LIMIT 20",
    ),
    (
        "hourly volume",
        "SELECT hour, sum(messages) AS messages FROM hourly_volume GROUP BY hour ORDER BY hour",
    ),
    (
        "consume latency p99",
        "SELECT group_name, hour, p99_ms FROM hourly_consume_latency ORDER BY hour DESC LIMIT 50",
    ),
    (
        "broker load",
        "SELECT timestamp, broker_name, send_tps, disk_used_ratio FROM broker_stats ORDER BY timestamp DESC LIMIT 100",
    ),
    ("tables", "SHOW TABLES"),
    (
        "a constant chart",
        "SELECT * FROM (VALUES ('dc1', 120), ('dc2', 80), ('dc3', 45)) AS t(idc, messages)",
    ),
];

/// What the SQL page shows.
pub struct SqlView<'a> {
    /// The statement, empty before the first run.
    pub sql: &'a str,
    /// The query service's JSON answer, `None` when nothing ran (or no query service).
    pub answer: Option<Result<Value, ApiError>>,
    /// No query service is configured.
    pub unavailable: bool,
}

/// Milliseconds since the epoch of `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.fff]]` or with `T` and an
/// optional `Z`: what the query service prints for dates and timestamps.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut ms = days * 86_400_000;
    if let Some(time) = time {
        let time = time.split(['+']).next().unwrap_or(time);
        let mut fields = time.split(':');
        let hours: i64 = fields.next()?.parse().ok()?;
        let minutes: i64 = fields.next().unwrap_or("0").parse().ok()?;
        let seconds: f64 = fields.next().unwrap_or("0").parse().ok()?;
        ms += hours * 3_600_000 + minutes * 60_000 + (seconds * 1000.0).round() as i64;
    }
    Some(ms)
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64().or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// `(time in ms, value)` of an answer whose first column is a time and second a number, in
/// time order; rows that do not fit are skipped.
pub fn time_points(answer: &Value) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = answer["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| {
            let x = match &row[0] {
                Value::String(text) => parse_time(text)? as f64,
                other => other.as_f64()?,
            };
            Some((x, number(&row[1])?))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// The chart of an answer: a line over time when the first column is a time, else bars of the
/// first numeric column by the first column. `None` when nothing is numeric.
pub fn chart(answer: &Value) -> Option<String> {
    let columns = answer["columns"].as_array()?;
    let rows = answer["rows"].as_array()?;
    if rows.is_empty() {
        return None;
    }
    let is_numeric_type = |t: &str| {
        let t = t.to_ascii_lowercase();
        t.starts_with("int") || t.starts_with("uint") || t.starts_with("float") || t.starts_with("decimal")
    };
    let y = columns
        .iter()
        .enumerate()
        .skip(usize::from(columns.len() > 1))
        .find(|(_, c)| is_numeric_type(c["type"].as_str().unwrap_or_default()))
        .map(|(i, _)| i)?;
    let y_name = columns[y]["name"].as_str().unwrap_or("value");
    let x_type = columns[0]["type"].as_str().unwrap_or_default().to_ascii_lowercase();
    if y > 0 && (x_type.starts_with("timestamp") || x_type.starts_with("date")) {
        let mut points: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|row| Some((parse_time(row[0].as_str()?)? as f64, number(&row[y])?)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        return Some(svg::lines(
            &format!("{y_name} over {}", columns[0]["name"].as_str().unwrap_or("time")),
            &[svg::Series {
                name: y_name,
                points: &points,
                band: &[],
                class: "series-0",
            }],
            true,
        ));
    }
    let shown = rows.len().min(60);
    let labels: Vec<String> = rows[..shown]
        .iter()
        .enumerate()
        .map(|(i, row)| if y == 0 { (i + 1).to_string() } else { text_of(&row[0]) })
        .collect();
    let values: Vec<f64> = rows[..shown].iter().map(|row| number(&row[y]).unwrap_or(0.0)).collect();
    let title = if rows.len() > shown {
        format!("{y_name} (first {shown} of {} rows)", rows.len())
    } else {
        y_name.to_owned()
    };
    Some(svg::bars(&title, &labels, &values))
}

/// The statement with a caret under the error's position.
fn marked(sql: &str, line: u64, column: u64) -> String {
    let mut out = String::new();
    for (index, text) in sql.lines().enumerate() {
        out.push_str(&esc(text));
        out.push('\n');
        if index as u64 + 1 == line {
            let pad = " ".repeat(column.saturating_sub(1) as usize);
            let _ = writeln!(out, "<span class=\"caret\">{pad}^ line {line}, column {column}</span>");
        }
    }
    format!("<pre class=\"sql-error\" id=\"sql-error-position\">{out}</pre>")
}

/// The SQL page.
pub fn render(view: &SqlView<'_>) -> String {
    let mut body = String::new();
    if view.unavailable {
        body.push_str(&missing(
            "No query service is configured: `meridian dev` has one unless started with --no-archive; `meridian ui` needs --query-http ADDR.",
        ));
    }
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/sql\" id=\"sql-form\"><textarea name=\"q\" id=\"sql-editor\" rows=\"6\" spellcheck=\"false\" aria-label=\"SQL\">{}</textarea>\
<div class=\"row\"><button id=\"run\">Run (Ctrl+Enter)</button>",
        esc(view.sql)
    );
    if !view.sql.trim().is_empty() {
        let _ = write!(
            body,
            " <a class=\"button\" id=\"csv\" href=\"/sql.csv?q={}\" download=\"result.csv\">Export CSV</a>",
            attr(&encode(view.sql))
        );
    }
    body.push_str("</div></form><p class=\"examples\">Examples: ");
    for (label, sql) in EXAMPLES {
        let _ = write!(
            body,
            "<a href=\"/sql?q={}\" data-sql=\"{}\">{}</a> ",
            attr(&encode(sql)),
            attr(sql),
            esc(label)
        );
    }
    body.push_str("</p>");
    match &view.answer {
        None => {}
        Some(Err(error)) => {
            body.push_str(&error_box("The query failed:", error));
            if let Some((line, column)) = error.position {
                body.push_str(&marked(view.sql, line, column));
            }
        }
        Some(Ok(answer)) => {
            let columns = answer["columns"].as_array().cloned().unwrap_or_default();
            let rows = answer["rows"].as_array().cloned().unwrap_or_default();
            let _ = write!(
                body,
                "<p id=\"sql-summary\">{} rows in {:.1} ms{}</p>",
                answer["row_count"].as_u64().unwrap_or(rows.len() as u64),
                answer["elapsed_ms"].as_f64().unwrap_or(0.0),
                if rows.len() > SHOWN_ROWS {
                    format!(" (the first {SHOWN_ROWS} shown; the CSV export has them all)")
                } else {
                    String::new()
                }
            );
            if let Some(chart) = chart(answer) {
                body.push_str(&chart);
            }
            body.push_str("<div class=\"scroll\"><table id=\"sql-result\"><thead><tr>");
            for column in &columns {
                let _ = write!(
                    body,
                    "<th title=\"{}\">{}</th>",
                    attr(&text_of(&column["type"])),
                    esc(&text_of(&column["name"]))
                );
            }
            body.push_str("</tr></thead><tbody>");
            for row in rows.iter().take(SHOWN_ROWS) {
                body.push_str("<tr>");
                for cell in row.as_array().into_iter().flatten() {
                    let _ = write!(body, "<td>{}</td>", esc(&text_of(cell)));
                }
                body.push_str("</tr>");
            }
            body.push_str("</tbody></table></div>");
        }
    }
    page("SQL", Nav::Sql, &body)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn times_parse_as_the_query_service_prints_them() {
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_time("2026-11-25T18:20:58.626Z"), Some(1_795_630_858_626));
        assert_eq!(parse_time("2026-11-25 18:20"), Some(1_795_630_800_000));
        assert_eq!(parse_time("orders"), None);
    }

    #[test]
    fn a_result_has_a_table_a_bar_chart_and_escaped_cells() {
        let answer = json!({"columns": [{"name": "topic", "type": "Utf8"}, {"name": "messages", "type": "Int64"}],
            "rows": [["<script>x</script>", 3], ["b", 5]], "row_count": 2, "elapsed_ms": 1.5});
        let html = render(&SqlView {
            sql: "SELECT '<b>'",
            answer: Some(Ok(answer)),
            unavailable: false,
        });
        assert!(html.contains("data-chart=\"bars\""));
        assert!(html.contains("<td>&lt;script&gt;x&lt;/script&gt;</td>") && !html.contains("<script>x"));
        assert!(html.contains("SELECT &#39;&lt;b&gt;&#39;</textarea>"));
        assert!(html.contains("href=\"/sql.csv?q="));
    }

    #[test]
    fn a_time_series_result_is_a_line_chart() {
        let answer = json!({"columns": [{"name": "hour", "type": "Timestamp(Millisecond, None)"}, {"name": "n", "type": "Int64"}],
            "rows": [["2026-11-25T10:00:00", 3], ["2026-11-25T11:00:00", 5]]});
        assert!(chart(&answer).unwrap().contains("data-chart=\"lines\""));
    }

    #[test]
    fn errors_mark_their_position() {
        let error = ApiError {
            service: "query".into(),
            addr: "a".into(),
            request: "POST /api/sql".into(),
            status: Some(400),
            code: "sql".into(),
            message: "table 'mesages' not found".into(),
            position: Some((2, 6)),
        };
        let html = render(&SqlView {
            sql: "SELECT 1\nFROM mesages",
            answer: Some(Err(error)),
            unavailable: false,
        });
        assert!(html.contains("     ^ line 2, column 6"), "{html}");
        assert!(html.contains("table &#39;mesages&#39; not found"));
    }
}
