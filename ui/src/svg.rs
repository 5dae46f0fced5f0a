//! Inline SVG pictures, drawn on the server: a bar chart ([`bars`]), a line chart with an optional
//! band ([`lines`]) and a message's journey on a time axis ([`timeline`]). No script, no fonts to
//! load: they render in any browser and in screenshots.

use std::fmt::Write as _;

use crate::html::esc;

const WIDTH: f64 = 1180.0;

fn fmt_number(value: f64) -> String {
    if value.abs() >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value.abs() >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// A bar per label, scaled to the largest value (negative values draw as zero-height bars).
pub fn bars(title: &str, labels: &[String], values: &[f64]) -> String {
    let count = labels.len().min(values.len());
    let height = 260.0;
    let (left, bottom, top) = (60.0, 60.0, 24.0);
    let plot_height = height - bottom - top;
    let max = values.iter().take(count).copied().fold(0.0_f64, f64::max);
    let scale = if max > 0.0 { plot_height / max } else { 0.0 };
    let slot = (WIDTH - left - 10.0) / count.max(1) as f64;
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{title}\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" data-chart=\"bars\">\
<text x=\"{left}\" y=\"16\" class=\"title\">{title}</text>\
<line x1=\"{left}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\" class=\"axis\"/>\
<text x=\"{lx}\" y=\"{ty}\" class=\"tick\" text-anchor=\"end\">{max_label}</text>\
<text x=\"{lx}\" y=\"{base}\" class=\"tick\" text-anchor=\"end\">0</text>",
        title = esc(title),
        base = height - bottom,
        right = WIDTH - 10.0,
        lx = left - 6.0,
        ty = top + 4.0,
        max_label = fmt_number(max),
    );
    for (index, (label, value)) in labels.iter().zip(values).take(count).enumerate() {
        let bar_height = value.max(0.0) * scale;
        let x = left + index as f64 * slot + slot * 0.1;
        let y = height - bottom - bar_height;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{bar_height:.1}\"><title>{label}: {value}</title></rect>",
            w = slot * 0.8,
            label = esc(label),
            value = fmt_number(*value),
        );
        if count <= 40 {
            let room = if count <= 20 { 28 } else { 14 };
            let short: String = if label.chars().count() > room {
                // The end tells bars apart (a queue number, a date's day) more often than the start.
                let tail: String = label
                    .chars()
                    .rev()
                    .take(room - 1)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                format!("…{tail}")
            } else {
                label.clone()
            };
            let _ = write!(
                svg,
                "<text class=\"tick\" x=\"{cx:.1}\" y=\"{ly}\" text-anchor=\"end\" transform=\"rotate(-30 {cx:.1} {ly})\">{short}</text>",
                cx = x + slot * 0.4,
                ly = height - bottom + 14.0,
                short = esc(&short),
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// One series of a line chart: `(x, y)` points in x order, with an optional `(x, low, high)` band.
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// The points.
    pub points: &'a [(f64, f64)],
    /// A band drawn under the line (a forecast's interval).
    pub band: &'a [(f64, f64, f64)],
    /// CSS class of the line (`series-0`, `series-1`, `forecast`).
    pub class: &'a str,
}

/// Lines over a shared x axis; `x_is_time` labels the axis with UTC times (x in Unix ms).
pub fn lines(title: &str, series: &[Series<'_>], x_is_time: bool) -> String {
    let height = 280.0;
    let (left, right, bottom, top) = (70.0, 20.0, 40.0, 30.0);
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0).chain(s.band.iter().map(|b| b.0)));
    let ys = series.iter().flat_map(|s| {
        s.points
            .iter()
            .map(|p| p.1)
            .chain(s.band.iter().flat_map(|b| [b.1, b.2]))
    });
    let (x_min, x_max) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (mut y_min, mut y_max) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{title}\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" data-chart=\"lines\">\
<text x=\"{left}\" y=\"18\" class=\"title\">{title}</text>",
        title = esc(title)
    );
    if !x_min.is_finite() || !y_min.is_finite() {
        let _ = write!(
            svg,
            "<text x=\"{left}\" y=\"120\" class=\"tick\">no points to draw</text></svg>"
        );
        return svg;
    }
    y_min = y_min.min(0.0);
    if y_max <= y_min {
        y_max = y_min + 1.0;
    }
    let x_span = if x_max > x_min { x_max - x_min } else { 1.0 };
    let plot_w = WIDTH - left - right;
    let plot_h = height - top - bottom;
    let sx = |x: f64| left + (x - x_min) / x_span * plot_w;
    let sy = |y: f64| top + plot_h - (y - y_min) / (y_max - y_min) * plot_h;
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/><line class=\"axis\" x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{b}\"/>\
<text class=\"tick\" x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{ymax}</text><text class=\"tick\" x=\"{lx}\" y=\"{b}\" text-anchor=\"end\">{ymin}</text>",
        b = top + plot_h,
        r = WIDTH - right,
        lx = left - 6.0,
        ty = top + 4.0,
        ymax = fmt_number(y_max),
        ymin = fmt_number(y_min),
    );
    let x_label = |x: f64| {
        if x_is_time {
            esc(&crate::html::time_ms(x as i64)[..16])
        } else {
            fmt_number(x)
        }
    };
    let _ = write!(
        svg,
        "<text class=\"tick\" x=\"{left}\" y=\"{y}\">{a}</text><text class=\"tick\" x=\"{r}\" y=\"{y}\" text-anchor=\"end\">{b}</text>",
        y = height - 12.0,
        r = WIDTH - right,
        a = x_label(x_min),
        b = x_label(x_max),
    );
    for (index, s) in series.iter().enumerate() {
        if !s.band.is_empty() {
            let mut path = String::new();
            for (i, (x, _, high)) in s.band.iter().enumerate() {
                let _ = write!(
                    path,
                    "{}{:.1},{:.1} ",
                    if i == 0 { "M" } else { "L" },
                    sx(*x),
                    sy(*high)
                );
            }
            for (x, low, _) in s.band.iter().rev() {
                let _ = write!(path, "L{:.1},{:.1} ", sx(*x), sy(*low));
            }
            let _ = write!(svg, "<path class=\"band\" d=\"{path}Z\"/>");
        }
        if !s.points.is_empty() {
            let mut path = String::new();
            for (i, (x, y)) in s.points.iter().enumerate() {
                let _ = write!(path, "{}{:.1},{:.1} ", if i == 0 { "M" } else { "L" }, sx(*x), sy(*y));
            }
            let _ = write!(svg, "<path class=\"line {}\" d=\"{path}\"/>", esc(s.class));
            if s.points.len() <= 60 {
                for (x, y) in s.points {
                    let _ = write!(
                        svg,
                        "<circle class=\"dot {}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"><title>{}: {}</title></circle>",
                        esc(s.class),
                        sx(*x),
                        sy(*y),
                        x_label(*x),
                        fmt_number(*y)
                    );
                }
            }
        }
        let _ = write!(
            svg,
            "<text class=\"legend {}\" x=\"{:.1}\" y=\"18\">■ {}</text>",
            esc(s.class),
            WIDTH - right - 220.0 + index as f64 * 110.0,
            esc(s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One step of a message's journey, as the timeline draws it.
pub struct Step {
    /// `Pub`, `Store`, `Replicate`, `Sub`, ...
    pub kind: String,
    /// Unix ms.
    pub at_ms: i64,
    /// Host (or broker) where it happened.
    pub host: String,
    /// Its data center; empty when unknown.
    pub idc: String,
    /// Milliseconds since the step before.
    pub since_previous_ms: Option<f64>,
    /// `ok`, an error, ...
    pub status: String,
}

/// A message's journey: one lane per data center, each step a dot on a shared time axis with its
/// host under it, and each hop's latency over the line joining two steps.
pub fn timeline(steps: &[Step]) -> String {
    if steps.is_empty() {
        return "<p>No steps were traced for this message.</p>".to_owned();
    }
    let mut lanes: Vec<&str> = Vec::new();
    for step in steps {
        let lane = if step.idc.is_empty() {
            "unknown data center"
        } else {
            step.idc.as_str()
        };
        if !lanes.contains(&lane) {
            lanes.push(lane);
        }
    }
    let (left, right, top, lane_h) = (170.0, 140.0, 40.0, 110.0);
    let height = top + lane_h * lanes.len() as f64 + 40.0;
    let first = steps.iter().map(|s| s.at_ms).min().unwrap_or(0);
    let last = steps.iter().map(|s| s.at_ms).max().unwrap_or(0);
    let span = (last - first).max(1) as f64;
    let plot_w = WIDTH - left - right;
    // Steps at the same millisecond would overlap: spread them by order when time alone cannot.
    let n = steps.len().max(2) as f64 - 1.0;
    let xs: Vec<f64> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let by_time = (s.at_ms - first) as f64 / span;
            let by_order = i as f64 / n;
            left + (0.7 * by_time + 0.3 * by_order) * plot_w
        })
        .collect();
    let lane_of = |step: &Step| {
        let lane = if step.idc.is_empty() {
            "unknown data center"
        } else {
            step.idc.as_str()
        };
        lanes.iter().position(|l| *l == lane).unwrap_or(0)
    };
    let mut svg = format!(
        "<svg class=\"chart timeline\" role=\"img\" aria-label=\"message timeline\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" data-chart=\"timeline\">"
    );
    for (index, lane) in lanes.iter().enumerate() {
        let y = top + index as f64 * lane_h;
        let _ = write!(
            svg,
            "<rect class=\"lane\" x=\"0\" y=\"{y}\" width=\"{WIDTH}\" height=\"{lane_h}\"/><text class=\"lane-label\" x=\"8\" y=\"{ly}\">{name}</text>",
            ly = y + lane_h / 2.0,
            name = esc(lane),
        );
    }
    let axis_y = height - 30.0;
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{axis_y}\" x2=\"{r}\" y2=\"{axis_y}\"/>\
<text class=\"tick\" x=\"{left}\" y=\"{ty}\">{start}</text><text class=\"tick\" x=\"{r}\" y=\"{ty}\" text-anchor=\"end\">+{total} ms</text>",
        r = WIDTH - right,
        ty = axis_y + 16.0,
        start = esc(&crate::html::time_ms(first)),
        total = last - first,
    );
    let y_of = |step: &Step, i: usize| {
        top + lane_of(step) as f64 * lane_h + 40.0 + if i.is_multiple_of(2) { 0.0 } else { 22.0 }
    };
    for i in 1..steps.len() {
        let (x1, y1) = (xs[i - 1], y_of(&steps[i - 1], i - 1));
        let (x2, y2) = (xs[i], y_of(&steps[i], i));
        let latency = steps[i]
            .since_previous_ms
            .unwrap_or((steps[i].at_ms - steps[i - 1].at_ms) as f64);
        let _ = write!(
            svg,
            "<line class=\"hop\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\"/>\
<text class=\"hop-label\" x=\"{mx:.1}\" y=\"{my:.1}\" text-anchor=\"middle\" data-hop-ms=\"{latency}\">{latency} ms</text>",
            mx = (x1 + x2) / 2.0,
            my = (y1 + y2) / 2.0 - 8.0,
            latency = fmt_number(latency),
        );
    }
    for (i, step) in steps.iter().enumerate() {
        let (x, y) = (xs[i], y_of(step, i));
        let failed = !(step.status.is_empty() || step.status == "ok" || step.status == "success");
        let _ = write!(
            svg,
            "<g class=\"step{bad}\" data-step-type=\"{kind}\"><circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"7\"><title>{kind} at {time} on {host}</title></circle>\
<text class=\"step-label\" x=\"{x:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\">{kind}</text>\
<text class=\"step-host\" x=\"{x:.1}\" y=\"{hy:.1}\" text-anchor=\"middle\">{host}</text></g>",
            bad = if failed { " failed" } else { "" },
            kind = esc(&step.kind),
            time = esc(&crate::html::time_ms(step.at_ms)),
            host = esc(&step.host),
            ty = y - 12.0,
            hy = y + 20.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_escape_labels_and_scale_to_the_largest() {
        let svg = bars("t<", &["<script>".to_owned(), "b".to_owned()], &[10.0, 5.0]);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 2);
    }

    #[test]
    fn a_timeline_has_a_lane_per_data_center_and_a_label_per_hop() {
        let step = |kind: &str, at_ms, idc: &str| Step {
            kind: kind.to_owned(),
            at_ms,
            host: "h".to_owned(),
            idc: idc.to_owned(),
            since_previous_ms: None,
            status: "ok".to_owned(),
        };
        let svg = timeline(&[
            step("Pub", 1000, "dc1"),
            step("Store", 1003, "dc1"),
            step("Sub", 1010, "dc2"),
        ]);
        assert_eq!(svg.matches("class=\"lane\"").count(), 2);
        assert_eq!(svg.matches("data-step-type=").count(), 3);
        assert!(
            svg.contains("data-hop-ms=\"3\"") && svg.contains("data-hop-ms=\"7\""),
            "{svg}"
        );
    }

    #[test]
    fn lines_with_no_points_say_so() {
        let svg = lines(
            "empty",
            &[Series {
                name: "a",
                points: &[],
                band: &[],
                class: "series-0",
            }],
            false,
        );
        assert!(svg.contains("no points to draw"));
    }
}
