//! The comparison as one self-contained HTML page: the setup, the table and hand-written
//! inline SVG plots (no scripts, no external assets).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::report::{Comparison, shares};

/// Series colours, in pipeline order.
const COLOURS: [&str; 8] = [
    "#9e9e9e", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
];

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 260.0;
/// Plot area margins: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (70.0, 20.0, 30.0, 50.0);

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn colour(i: usize) -> &'static str {
    COLOURS[i % COLOURS.len()]
}

/// A round upper bound for an axis whose data reaches `max`.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * magnitude)
}

/// The frame, title, y grid with labels and an optional x label of a plot whose y axis
/// spans `[0, y_max]`.
fn frame(svg: &mut String, title: &str, y_label: &str, x_label: &str, y_max: f64) {
    let (l, r, t, b) = MARGIN;
    let plot_h = HEIGHT - t - b;
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11"><text x="{}" y="18" font-size="13" font-weight="bold" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = t + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{l}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - r,
            l - 6.0,
            y + 4.0,
            format_value(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        t + plot_h / 2.0,
        t + plot_h / 2.0,
        escape(y_label),
        l + (WIDTH - l - r) / 2.0,
        HEIGHT - 6.0,
        escape(x_label)
    );
}

fn format_value(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Grouped bars: one group per label, one bar per series inside it.
fn bars(title: &str, y_label: &str, series: &[&str], groups: &[(String, Vec<f64>)]) -> String {
    let (l, r, t, b) = MARGIN;
    let max = groups
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0, f64::max);
    let y_max = nice_max(max);
    let mut svg = String::new();
    frame(&mut svg, title, y_label, "", y_max);
    let plot_w = WIDTH - l - r;
    let plot_h = HEIGHT - t - b;
    let group_w = plot_w / groups.len().max(1) as f64;
    let bar_w = group_w * 0.7 / series.len().max(1) as f64;
    for (g, (label, values)) in groups.iter().enumerate() {
        let x0 = l + group_w * g as f64 + group_w * 0.15;
        for (s, v) in values.iter().enumerate() {
            let h = plot_h * (v / y_max).clamp(0.0, 1.0);
            let x = x0 + bar_w * s as f64;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                t + plot_h - h,
                bar_w - 2.0,
                colour(if series.len() > 1 { s + 1 } else { g }),
                escape(series.get(s).copied().unwrap_or("")),
                format_value(*v),
                x + bar_w / 2.0 - 1.0,
                t + plot_h - h - 3.0,
                format_value(*v)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            l + group_w * (g as f64 + 0.5),
            t + plot_h + 16.0,
            escape(label)
        );
    }
    if series.len() > 1 {
        legend(
            &mut svg,
            series.iter().enumerate().map(|(i, s)| (*s, colour(i + 1))),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn legend<'a>(svg: &mut String, items: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut x = MARGIN.0 + 8.0;
    for (name, fill) in items {
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{fill}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            MARGIN.2 + 2.0,
            x + 14.0,
            MARGIN.2 + 11.0,
            escape(name)
        );
        x += 24.0 + 6.5 * name.len() as f64;
    }
}

/// One line per series over a shared numeric x axis.
fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let (l, r, t, b) = MARGIN;
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (x_max, y_max) = points.fold((0.0, 0.0), |(x, y), (px, py)| {
        (f64::max(x, *px), f64::max(y, *py))
    });
    let (x_max, y_max) = (nice_max(x_max), nice_max(y_max));
    let mut svg = String::new();
    frame(&mut svg, title, y_label, x_label, y_max);
    let plot_w = WIDTH - l - r;
    let plot_h = HEIGHT - t - b;
    for i in 0..=4 {
        let v = x_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            l + plot_w * f64::from(i) / 4.0,
            t + plot_h + 16.0,
            format_value(v)
        );
    }
    for (i, (_, pts)) in series.iter().enumerate() {
        let coords: Vec<String> = pts
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    l + plot_w * (x / x_max).clamp(0.0, 1.0),
                    t + plot_h - plot_h * (y / y_max).clamp(0.0, 1.0)
                )
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            colour(i),
            coords.join(" ")
        );
        for c in &coords {
            let (cx, cy) = c.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                svg,
                r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{}"/>"#,
                colour(i)
            );
        }
    }
    legend(
        &mut svg,
        series
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), colour(i))),
    );
    svg.push_str("</svg>");
    svg
}

/// One horizontal bar per row, split by share.
fn stacked(title: &str, rows: &[(String, BTreeMap<String, f64>)]) -> String {
    let keys: BTreeSet<&String> = rows.iter().flat_map(|(_, m)| m.keys()).collect();
    let keys: Vec<&String> = keys.into_iter().collect();
    let row_h = 26.0;
    let height = 60.0 + row_h * rows.len() as f64;
    let label_w = 150.0;
    let bar_w = WIDTH - label_w - 20.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11"><text x="{}" y="18" font-size="13" font-weight="bold" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (r, (label, share)) in rows.iter().enumerate() {
        let y = 30.0 + row_h * r as f64;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_w - 6.0,
            y + 15.0,
            escape(label)
        );
        let mut x = label_w;
        for (k, key) in keys.iter().enumerate() {
            let v = share.get(*key).copied().unwrap_or(0.0);
            let w = bar_w * v.clamp(0.0, 1.0);
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>{}: {:.0}%</title></rect>"#,
                row_h - 6.0,
                colour(k + 1),
                escape(key),
                v * 100.0
            );
            if w > 36.0 {
                let _ = write!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" fill="white" text-anchor="middle">{:.0}%</text>"#,
                    x + w / 2.0,
                    y + 14.0,
                    v * 100.0
                );
            }
            x += w;
        }
    }
    let mut x = label_w;
    for (k, key) in keys.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            height - 22.0,
            colour(k + 1),
            x + 14.0,
            height - 13.0,
            escape(key)
        );
        x += 30.0 + 6.5 * key.len() as f64;
    }
    svg.push_str("</svg>");
    svg
}

impl Comparison {
    /// The self-contained HTML report (inline SVG plots, no external assets).
    pub fn html(&self) -> String {
        render(self)
    }
}

/// The page around the figures; values are escaped by the template engine (HTML
/// auto-escaping), the SVG figures built here (labels escaped) are passed as safe.
const TEMPLATE: &str = include_str!("report.html.j2");

/// One row of the page's table: a pipeline at one offered rate, figures formatted.
#[derive(serde::Serialize)]
struct Row {
    spec: String,
    name: String,
    rate: String,
    errors: u64,
    ttft_p50: String,
    ttft_p90: String,
    itl_p50: String,
    output: String,
    hits: String,
    /// Goodput, cost and vendor share are shown on the headline rate's row only.
    goodput: String,
    cost: String,
    vendors: String,
}

/// The page.
fn render(c: &Comparison) -> String {
    let mut rows = Vec::new();
    for (p, s) in &c.pipelines {
        for point in &s.sweep {
            let headline = point.rate_rps == s.rate_rps;
            let only_headline = |v: String| if headline { v } else { String::new() };
            rows.push(Row {
                spec: s.pipeline.clone(),
                name: p.name.clone(),
                rate: format!("{:.1}", point.rate_rps),
                errors: point.errors,
                ttft_p50: format!("{:.0}", point.ttft_ms.p50),
                ttft_p90: format!("{:.0}", point.ttft_ms.p90),
                itl_p50: format!("{:.1}", point.itl_ms.p50),
                output: format!("{:.0}", point.output_tokens_per_s),
                hits: format!("{:.0}", point.prefix_cache_hit_rate * 100.0),
                goodput: only_headline(format!("{:.2}", s.goodput_rps_at_slo)),
                cost: only_headline(format!("{:.2}", s.cost_per_mtok)),
                vendors: only_headline(shares(&s.vendor_share)),
            });
        }
    }
    let pipelines: Vec<_> = c
        .pipelines
        .iter()
        .map(|(p, _)| minijinja::context! { name => p.name, summary => p.summary })
        .collect();
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    let page = env.add_template("report.html", TEMPLATE).and_then(|()| {
        env.get_template("report.html")?
            .render(minijinja::context! {
                scenario => c.scenario,
                fleet => c.fleet,
                workload => c.workload,
                speed => c.speed,
                duration => c.duration_s,
                rows => rows,
                table => c.table(),
                figures => figures(c),
                pipelines => pipelines,
            })
    });
    page.unwrap_or_else(|e| {
        // NB: the template is fixed at build time and rendered by a test; this is a bug.
        tracing::error!(error = %e, "demo report template failed");
        format!(
            "<!doctype html><p>report template failed: {}</p>\n",
            escape(&e.to_string())
        )
    })
}

/// The page's SVG figures, in order: the headline rate's, then, when several rates
/// were run, the sweeps.
fn figures(c: &Comparison) -> Vec<String> {
    let ttft: Vec<(String, Vec<f64>)> = c
        .pipelines
        .iter()
        .map(|(p, s)| {
            (
                p.name.clone(),
                vec![s.bench.ttft_ms.p50, s.bench.ttft_ms.p90],
            )
        })
        .collect();
    let single = |f: &dyn Fn(&super::PipelineSummary) -> f64| -> Vec<(String, Vec<f64>)> {
        c.pipelines
            .iter()
            .map(|(p, s)| (p.name.clone(), vec![f(s)]))
            .collect()
    };
    let mut figures = vec![
        bars(
            "Time to first token (headline rate)",
            "ms",
            &["p50", "p90"],
            &ttft,
        ),
        bars(
            "Output throughput",
            "tokens/s",
            &["output tokens/s"],
            &single(&|s| s.bench.output_tokens_per_s),
        ),
        bars(
            "Prefix cache hit rate",
            "%",
            &["hit rate"],
            &single(&|s| s.bench.prefix_cache_hit_rate * 100.0),
        ),
        bars(
            "Inter-token latency p50",
            "ms",
            &["ITL p50"],
            &single(&|s| s.bench.itl_ms.p50),
        ),
        stacked(
            "Share of requests per vendor",
            &c.pipelines
                .iter()
                .map(|(p, s)| (p.name.clone(), s.vendor_share.clone()))
                .collect::<Vec<_>>(),
        ),
    ];
    if c.pipelines.iter().any(|(_, s)| s.sweep.len() > 1) {
        let sweep = |f: &dyn Fn(&super::SweepPoint) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
            c.pipelines
                .iter()
                .map(|(p, s)| {
                    (
                        p.name.clone(),
                        s.sweep.iter().map(|pt| (pt.rate_rps, f(pt))).collect(),
                    )
                })
                .collect()
        };
        figures.extend([
            lines(
                "TTFT p50 vs offered rate",
                "offered req/s",
                "ms",
                &sweep(&|p| p.ttft_ms.p50),
            ),
            lines(
                "TTFT p90 vs offered rate",
                "offered req/s",
                "ms",
                &sweep(&|p| p.ttft_ms.p90),
            ),
            lines(
                "Completed req/s vs offered rate",
                "offered req/s",
                "req/s",
                &sweep(&|p| p.requests_per_s),
            ),
            lines(
                "Prefix cache hit rate vs offered rate",
                "offered req/s",
                "%",
                &sweep(&|p| p.prefix_cache_hit_rate * 100.0),
            ),
            bars(
                "Goodput at the TTFT objective",
                "req/s",
                &["goodput"],
                &single(&|s| s.goodput_rps_at_slo),
            ),
            bars(
                "Cost per million output tokens",
                "$",
                &["$/Mtok"],
                &single(&|s| s.cost_per_mtok),
            ),
        ]);
    }
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_bounds_are_round_and_cover_the_data() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(180.0), 200.0);
        assert_eq!(nice_max(2100.0), 2500.0);
    }

    #[test]
    fn plots_are_svg_with_one_bar_per_value_and_escaped_labels() {
        let svg = bars(
            "t",
            "ms",
            &["p50", "p90"],
            &[("a<b".into(), vec![1.0, 2.0]), ("c".into(), vec![3.0, 4.0])],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(
            svg.matches("<rect").count(),
            4 + 2,
            "4 bars and 2 legend keys"
        );
        assert!(svg.contains("a&lt;b"));
        let svg = lines("t", "x", "y", &[("s".into(), vec![(1.0, 2.0), (2.0, 3.0)])]);
        assert_eq!(svg.matches("<circle").count(), 2);
    }
}
