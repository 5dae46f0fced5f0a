//! HTML building blocks shared by every page: escaping ([`esc`]), the page frame with its
//! navigation ([`page`]), error and notice boxes, tables, pagers and time formatting.
//!
//! Every text that comes from a service or a person goes through [`esc`] (or [`attr`] inside
//! attribute values) exactly once, where it is put into HTML; page renderers never build markup
//! from unescaped input.

use std::fmt::Write as _;

use crate::client::{ApiError, encode};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Same as [`esc`]; named for attribute values so call sites read as what they are.
pub fn attr(text: &str) -> String {
    esc(text)
}

/// The console's pages, in the navigation's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/`
    Overview,
    /// `/topics`
    Topics,
    /// `/groups`
    Groups,
    /// `/trace`
    Trace,
    /// `/sql`
    Sql,
    /// `/forecasts`
    Forecasts,
    /// `/drills`
    Drills,
    /// `/clients`
    Clients,
    /// `/alerts`
    Alerts,
    /// `/login`: not in the navigation.
    Login,
}

const NAV: [(Nav, &str, &str); 9] = [
    (Nav::Overview, "/", "Overview"),
    (Nav::Topics, "/topics", "Topics"),
    (Nav::Groups, "/groups", "Groups"),
    (Nav::Trace, "/trace", "Message & Trace"),
    (Nav::Sql, "/sql", "SQL"),
    (Nav::Forecasts, "/forecasts", "Forecasts"),
    (Nav::Drills, "/drills", "Drills"),
    (Nav::Clients, "/clients", "Clients"),
    (Nav::Alerts, "/alerts", "Alerts"),
];

/// A whole page: head, navigation with `active` marked, then `body` (already HTML).
pub fn page(title: &str, active: Nav, body: &str) -> String {
    let mut nav = String::new();
    for (item, href, label) in NAV {
        let current = if item == active {
            " aria-current=\"page\" class=\"current\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{label}</a>");
    }
    // With `[auth]` on: who is logged in, and the way out.
    let account = match crate::session::current_user() {
        Some(user) => format!(
            "<form class=\"account\" method=\"post\" action=\"/logout\">{}<span class=\"user\">{}</span> <button>Log out</button></form>",
            crate::session::csrf_field(),
            esc(&user)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Meridian</title><link rel=\"stylesheet\" href=\"/assets/console.css\">\
<script src=\"/assets/console.js\" defer></script></head>\
<body><header><a class=\"brand\" href=\"/\">Meridian</a><nav>{nav}</nav>{account}</header>\
<main id=\"main\"><h1>{title}</h1>{body}</main>\
<footer>Meridian console {version} · every view reads the services' HTTP APIs (docs/api.md)</footer>\
</body></html>\n",
        title = esc(title),
        version = env!("CARGO_PKG_VERSION"),
    )
}

/// A red box naming what failed: the service, its address, the request and its answer.
pub fn error_box(what: &str, error: &ApiError) -> String {
    format!(
        "<div class=\"error\" role=\"alert\" data-error-code=\"{code}\"><strong>{what}</strong> {message}</div>",
        code = attr(&error.code),
        what = esc(what),
        message = esc(&error.to_string()),
    )
}

/// A red box with a plain message.
pub fn error_text(message: &str) -> String {
    format!("<div class=\"error\" role=\"alert\">{}</div>", esc(message))
}

/// A green box: what an action did.
pub fn notice(message: &str) -> String {
    format!("<div class=\"notice\" role=\"status\">{}</div>", esc(message))
}

/// The notices a redirect after an action carries in its query string (`ok=` and `error=`).
pub fn flash(ok: Option<&str>, error: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(ok) = ok.filter(|text| !text.is_empty()) {
        out.push_str(&notice(ok));
    }
    if let Some(error) = error.filter(|text| !text.is_empty()) {
        out.push_str(&error_text(error));
    }
    out
}

/// A grey box saying which API a view would need and does not have yet.
pub fn missing(what: &str) -> String {
    format!("<div class=\"missing\">{}</div>", esc(what))
}

/// "Showing a–b of n" and previous/next links for a list at `base` (a path with a query string
/// that does not yet hold `offset`).
pub fn pager(base: &str, offset: usize, shown: usize, total: usize, limit: usize) -> String {
    let join = if base.contains('?') { '&' } else { '?' };
    let mut out = String::from("<nav class=\"pager\">");
    if total == 0 {
        out.push_str("<span>nothing matches</span>");
    } else {
        let _ = write!(out, "<span>{}–{} of {}</span>", offset + 1, offset + shown, total);
    }
    if offset > 0 {
        let previous = offset.saturating_sub(limit);
        let href = format!("{base}{join}offset={previous}");
        let _ = write!(out, " <a rel=\"prev\" href=\"{}\">← previous</a>", attr(&href));
    }
    if offset + shown < total {
        let href = format!("{base}{join}offset={}", offset + shown);
        let _ = write!(out, " <a rel=\"next\" href=\"{}\">next →</a>", attr(&href));
    }
    out.push_str("</nav>");
    out
}

/// A link to a topic's page.
pub fn topic_link(name: &str) -> String {
    format!("<a href=\"/topics/{}\">{}</a>", attr(&encode(name)), esc(name))
}

/// A link to a group's page.
pub fn group_link(name: &str) -> String {
    format!("<a href=\"/groups/{}\">{}</a>", attr(&encode(name)), esc(name))
}

/// A status word as a coloured badge (`approved`, `requested`, `rejected`, `alive`, ...).
pub fn badge(word: &str) -> String {
    let class = match word {
        "approved" | "ok" | "alive" | "master" | "leader" | "Leader" | "serving" => "good",
        "requested" | "slave" | "Follower" | "Learner" | "Candidate" => "info",
        "rejected" | "dead" | "evacuated" | "no_leader" | "stalled" | "unhealthy" => "bad",
        _ => "info",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(word))
}

/// A JSON value as display text: strings bare, null as an em dash, the rest as JSON.
pub fn text_of(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "—".to_owned(),
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` UTC.
pub fn time_ms(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// A JSON time in Unix ms as text, `—` when absent.
pub fn time_of(value: &serde_json::Value) -> String {
    value.as_i64().map_or_else(|| "—".to_owned(), time_ms)
}

/// The form fields every change carries: who makes it (remembered by the page script; the
/// logged-in user when there is a session) and the session's CSRF token.
pub fn by_field() -> String {
    match crate::session::current_user() {
        Some(user) => format!(
            "<label>your name <input name=\"by\" value=\"{}\" readonly maxlength=\"64\"></label>{}",
            attr(&user),
            crate::session::csrf_field()
        ),
        None => "<label>your name <input name=\"by\" required maxlength=\"64\" data-remember=\"by\" autocomplete=\"username\"></label>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(time_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(time_ms(1_795_630_858_626), "2026-11-25 18:20:58.626");
        assert_eq!(time_ms(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn pagers_link_both_ways_and_say_where_they_are() {
        let pager = pager("/topics?q=a", 50, 50, 120, 50);
        assert!(pager.contains("51–100 of 120"), "{pager}");
        assert!(pager.contains("href=\"/topics?q=a&amp;offset=0\""), "{pager}");
        assert!(pager.contains("href=\"/topics?q=a&amp;offset=100\""), "{pager}");
    }

    #[test]
    fn a_page_marks_its_navigation_entry_and_escapes_its_title() {
        let html = page("<b>", Nav::Sql, "");
        assert!(html.contains("<h1>&lt;b&gt;</h1>"));
        assert!(html.contains("href=\"/sql\" aria-current=\"page\""));
    }
}
