//! Charts drawn on the server as SVG: bars per label, and a timeline of dots per lane. No
//! script, no style attribute (the Content-Security-Policy forbids inline style): classes from
//! the stylesheet. Labels come from the trail, so they go through `html::esc` like any text.

use super::html::esc;
use std::fmt::Write as _;

const BAR_W: u32 = 26;
const H: u32 = 170;
const TOP: u32 = 16;
const BOTTOM: u32 = 64;
const LEFT: u32 = 60;

/// A bar chart: one bar per `(label, value)`, scaled to the largest, its value above it.
pub fn bars(title: &str, data: &[(String, u64)]) -> String {
    let max = data.iter().map(|d| d.1).max().unwrap_or(0).max(1);
    // Room on the left for the first label, which slants down and left from its bar.
    let width = (data.len() as u32 * BAR_W).max(120) + LEFT + 10;
    let plot = H - TOP - BOTTOM;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg role="img" width="{width}" height="{H}" viewBox="0 0 {width} {H}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        esc(title)
    );
    let _ = write!(
        s,
        r#"<line class="axis" x1="10" y1="{y}" x2="{x2}" y2="{y}"/>"#,
        y = H - BOTTOM,
        x2 = width - 10
    );
    for (i, (label, value)) in data.iter().enumerate() {
        let h = (*value as f64 / max as f64 * f64::from(plot)).round() as u32;
        let x = LEFT + i as u32 * BAR_W;
        let _ = write!(
            s,
            r#"<rect class="bar" x="{}" y="{}" width="{}" height="{h}"><title>{}: {value}</title></rect>"#,
            x + 3,
            H - BOTTOM - h,
            BAR_W - 6,
            esc(label)
        );
        let _ = write!(
            s,
            r#"<text class="lbl" x="{}" y="{}" text-anchor="middle">{value}</text>"#,
            x + BAR_W / 2,
            H - BOTTOM - h - 3
        );
        let _ = write!(
            s,
            r#"<text class="lbl" x="{}" y="{}" text-anchor="end" transform="rotate(-45 {} {})">{}</text>"#,
            x + BAR_W / 2,
            H - BOTTOM + 12,
            x + BAR_W / 2,
            H - BOTTOM + 12,
            esc(short(label))
        );
    }
    s.push_str("</svg>");
    s
}

/// A timeline: one lane per name, a dot per event at its time (unix µs), from the first event
/// to the last.
pub fn timeline(title: &str, lanes: &[(String, Vec<i64>)]) -> String {
    let all = lanes.iter().flat_map(|l| l.1.iter().copied());
    let (lo, hi) = all.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let span = (hi - lo).max(1) as f64;
    let (left, width, lane_h) = (150u32, 720u32, 22u32);
    let height = lanes.len() as u32 * lane_h + 24;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg role="img" width="{}" height="{height}" viewBox="0 0 {} {height}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        left + width + 20,
        left + width + 20,
        esc(title)
    );
    for (i, (name, times)) in lanes.iter().enumerate() {
        let y = 14 + i as u32 * lane_h;
        let _ = write!(
            s,
            r#"<text class="lbl" x="4" y="{}">{}</text><line class="axis" x1="{left}" y1="{y}" x2="{}" y2="{y}"/>"#,
            y + 4,
            esc(short(name)),
            left + width
        );
        for t in times {
            let x = f64::from(left) + (*t - lo) as f64 / span * f64::from(width);
            let _ = write!(s, r#"<circle class="bar2" cx="{x:.1}" cy="{y}" r="4"/>"#);
        }
    }
    let (a, b) = (super::pages::when(lo), super::pages::when(hi));
    let _ = write!(
        s,
        r#"<text class="lbl" x="{left}" y="{}">{}</text><text class="lbl" x="{}" y="{}" text-anchor="end">{}</text></svg>"#,
        height - 4,
        esc(&a),
        left + width,
        height - 4,
        esc(&b)
    );
    s
}

/// Labels longer than a chart has room for are cut (the full text is in the bar's tooltip).
fn short(s: &str) -> &str {
    match s.char_indices().nth(20) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let s = bars("t", &[("<script>x</script>".into(), 3)]);
        assert!(!s.contains("<script>"));
        assert!(s.contains("&lt;script&gt;"));
    }
}
