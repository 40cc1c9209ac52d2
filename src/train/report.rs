//! Report rendering: Markdown tables and SVG charts written directly (no plotting dependency).
//!
//! ```text
//!   Chart { title, axes labels, bands (x, lo, hi), lines (x, y) } ──svg()──> <svg>…</svg>
//!     bands: translucent polygons (intervals); lines: polylines, broken at missing values
//! ```

use std::fmt::Write;

/// A line of a chart: name, CSS colour, points (NaN `y` breaks the line).
#[derive(Clone, Debug)]
pub struct Line {
    /// Legend name.
    pub name: String,
    /// CSS colour.
    pub color: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
    /// Dashed line.
    pub dashed: bool,
}

/// A band of a chart: name, CSS colour, (x, lower, upper) (NaN breaks the band).
#[derive(Clone, Debug)]
pub struct Band {
    /// Legend name.
    pub name: String,
    /// CSS colour.
    pub color: String,
    /// Points.
    pub points: Vec<(f64, f64, f64)>,
}

/// A chart.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Labels of x ticks: (x, text). Empty: numeric ticks.
    pub x_ticks: Vec<(f64, String)>,
    /// Bands, drawn first.
    pub bands: Vec<Band>,
    /// Lines.
    pub lines: Vec<Line>,
}

const W: f64 = 900.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A "nice" tick step for a range.
fn tick_step(range: f64) -> f64 {
    let raw = (range / 6.0).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    mag * if n < 1.5 {
        1.0
    } else if n < 3.5 {
        2.0
    } else if n < 7.5 {
        5.0
    } else {
        10.0
    }
}

impl Chart {
    /// Renders the chart as a standalone SVG document.
    pub fn svg(&self) -> String {
        let xs = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .chain(self.bands.iter().flat_map(|b| b.points.iter().map(|p| p.0)))
            .filter(|v| v.is_finite());
        let ys = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .chain(self.bands.iter().flat_map(|b| b.points.iter().flat_map(|p| [p.1, p.2])))
            .filter(|v| v.is_finite());
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let (x0, x1) = if x0.is_finite() && x1 > x0 { (x0, x1) } else { (0.0, 1.0) };
        if !(y0.is_finite() && y1 > y0) {
            (y0, y1) = (y0.clamp(-1.0, 0.0), y0.max(1.0));
        }
        let pad = (y1 - y0) * 0.05;
        let (y0, y1) = (y0 - pad, y1 + pad);
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let py = |y: f64| TOP + (y1 - y) / (y1 - y0) * (H - TOP - BOTTOM);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = write!(
            s,
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            esc(&self.title)
        );
        // Grid and ticks.
        let step = tick_step(y1 - y0);
        let mut y = (y0 / step).ceil() * step;
        while y <= y1 {
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
                W - RIGHT,
                py(y),
                py(y)
            );
            let _ = write!(
                s,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                py(y) + 4.0,
                fmt_tick(y, step)
            );
            y += step;
        }
        let ticks: Vec<(f64, String)> = if self.x_ticks.is_empty() {
            let step = tick_step(x1 - x0);
            let mut v = Vec::new();
            let mut x = (x0 / step).ceil() * step;
            while x <= x1 {
                v.push((x, fmt_tick(x, step)));
                x += step;
            }
            v
        } else {
            self.x_ticks.clone()
        };
        for (x, label) in ticks {
            let _ = write!(
                s,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{TOP}" y2="{}" stroke="#eee"/>"##,
                px(x),
                px(x),
                H - BOTTOM
            );
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                px(x),
                H - BOTTOM + 16.0,
                esc(&label)
            );
        }
        let _ = write!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black"/>"#,
            W - LEFT - RIGHT,
            H - TOP - BOTTOM
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            H - 10.0,
            esc(&self.x_label)
        );
        let _ = write!(
            s,
            r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
            (TOP + H - BOTTOM) / 2.0,
            (TOP + H - BOTTOM) / 2.0,
            esc(&self.y_label)
        );
        // Bands: one polygon per run of finite points.
        for b in &self.bands {
            for run in b.points.split(|p| !(p.0.is_finite() && p.1.is_finite() && p.2.is_finite())) {
                if run.len() < 2 {
                    continue;
                }
                let mut pts: Vec<String> = run.iter().map(|p| format!("{:.1},{:.1}", px(p.0), py(p.2))).collect();
                pts.extend(run.iter().rev().map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1))));
                let _ = write!(
                    s,
                    r#"<polygon points="{}" fill="{}" fill-opacity="0.25" stroke="none"/>"#,
                    pts.join(" "),
                    b.color
                );
            }
        }
        for l in &self.lines {
            for run in l.points.split(|p| !(p.0.is_finite() && p.1.is_finite())) {
                if run.is_empty() {
                    continue;
                }
                let pts: Vec<String> = run.iter().map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1))).collect();
                let dash = if l.dashed { r#" stroke-dasharray="6 4""# } else { "" };
                let _ = write!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.8"{dash}/>"#,
                    pts.join(" "),
                    l.color
                );
            }
        }
        // Legend.
        let mut ly = TOP + 10.0;
        for b in &self.bands {
            let _ = write!(
                s,
                r#"<rect x="{}" y="{:.1}" width="18" height="10" fill="{}" fill-opacity="0.25"/>"#,
                W - RIGHT + 12.0,
                ly - 8.0,
                b.color
            );
            let _ = write!(s, r#"<text x="{}" y="{:.1}">{}</text>"#, W - RIGHT + 36.0, ly + 1.0, esc(&b.name));
            ly += 18.0;
        }
        for l in &self.lines {
            let dash = if l.dashed { r#" stroke-dasharray="6 4""# } else { "" };
            let _ = write!(
                s,
                r#"<line x1="{}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
                W - RIGHT + 12.0,
                W - RIGHT + 30.0,
                ly - 3.0,
                ly - 3.0,
                l.color
            );
            let _ = write!(s, r#"<text x="{}" y="{:.1}">{}</text>"#, W - RIGHT + 36.0, ly + 1.0, esc(&l.name));
            ly += 18.0;
        }
        s.push_str("</svg>\n");
        s
    }
}

fn fmt_tick(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else if step >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A Markdown table from a header and rows.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(s, "|{}", header.iter().map(|_| "---|").collect::<String>());
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

/// Formats a number with `d` decimals, "-" for NaN.
pub fn num(v: f64, d: usize) -> String {
    if v.is_finite() {
        format!("{v:.d$}")
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_lines_bands_and_breaks_at_gaps() {
        let c = Chart {
            title: "a < b".into(),
            x_label: "lead".into(),
            y_label: "degC".into(),
            x_ticks: vec![],
            bands: vec![Band {
                name: "90 %".into(),
                color: "#36c".into(),
                points: vec![
                    (0.0, 1.0, 3.0),
                    (1.0, 1.5, 3.5),
                    (2.0, f64::NAN, 1.0),
                    (3.0, 1.0, 2.0),
                    (4.0, 1.0, 2.0),
                ],
            }],
            lines: vec![Line {
                name: "model".into(),
                color: "black".into(),
                points: vec![(0.0, 2.0), (1.0, f64::NAN), (2.0, 2.5), (3.0, 2.0)],
                dashed: true,
            }],
        };
        let svg = c.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polygon").count(), 2, "band broken at the NaN");
        assert_eq!(svg.matches("<polyline").count(), 2, "line broken at the NaN");
        assert!(svg.contains("a &lt; b"));
        assert!(Chart::default().svg().contains("</svg>"), "an empty chart still renders");
        let t = markdown_table(&["a", "b"], &[vec!["1".into(), num(f64::NAN, 2)]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | - |\n");
    }
}
