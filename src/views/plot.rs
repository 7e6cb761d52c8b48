//! What the chart views share: axis ticks, linear scales, colour scales
//! (colour-blind safe), token text for SVG labels and `data-*` JSON.
//!
//! The top of this file is plain Rust (no Leptos) so that its tests run
//! natively (`tests/plot_helpers.rs` includes it); the small view pieces at
//! the bottom are built for the page only.

use lens_protocol::report::TokenScore;

/// About `n` evenly spaced "nice" values (steps of 1, 2 or 5 × 10ᵏ) inside
/// `[lo, hi]`, ascending. Empty for non-finite bounds; `[lo]` when `lo == hi`.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !lo.is_finite() || !hi.is_finite() {
        return Vec::new();
    }
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    if lo == hi {
        return vec![lo];
    }
    let (nice, e) = nice_step_parts(hi - lo, n);
    let step = nice * 10f64.powi(e);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    if last < first || last - first > 10_000 {
        return vec![lo, hi];
    }
    (first..=last)
        .map(|k| {
            // k·nice / 10^-e rounds better than k·step (0.3, not 0.30000000000000004).
            let v = if e < 0 {
                (k as f64 * nice) / 10f64.powi(-e)
            } else {
                k as f64 * nice * 10f64.powi(e)
            };
            if v == 0.0 {
                0.0
            } else {
                v
            }
        })
        .collect()
}

/// The step [`nice_ticks`] uses for `[lo, hi]`.
pub fn nice_step(lo: f64, hi: f64, n: usize) -> f64 {
    let span = (hi - lo).abs();
    if !span.is_finite() || span == 0.0 {
        return 1.0;
    }
    let (nice, e) = nice_step_parts(span, n);
    nice * 10f64.powi(e)
}

/// `(m, e)` with the step `m × 10^e`, `m ∈ {1, 2, 5}`.
fn nice_step_parts(span: f64, n: usize) -> (f64, i32) {
    let raw = span / n.max(1) as f64;
    let mut e = raw.log10().floor() as i32;
    let f = raw / 10f64.powi(e);
    // Round to the nearest of 1, 2, 5, 10 on a log scale (as d3 does), so
    // the count stays near `n`.
    let nice = if f >= 50f64.sqrt() {
        e += 1;
        1.0
    } else if f >= 10f64.sqrt() {
        5.0
    } else if f >= 2f64.sqrt() {
        2.0
    } else {
        1.0
    };
    (nice, e)
}

/// `hi` rounded up to a multiple of the nice step for `[lo, hi]` (an axis end).
pub fn nice_ceil(lo: f64, hi: f64, n: usize) -> f64 {
    let step = nice_step(lo, hi, n);
    (hi / step - 1e-9).ceil() * step
}

/// A tick value with as many decimals as its step needs: `0.5`, `2`, `0.25`.
pub fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step > 0.0 && step.is_finite() {
        (-(step.log10() + 1e-9).floor()).max(0.0) as usize
    } else {
        0
    };
    let s = format!("{v:.decimals$}");
    if s.strip_prefix('-')
        .is_some_and(|r| r.chars().all(|c| c == '0' || c == '.'))
    {
        s[1..].to_string()
    } else {
        s
    }
}

/// A linear map from a domain onto a range of SVG user units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Linear {
    pub d0: f64,
    pub d1: f64,
    pub r0: f64,
    pub r1: f64,
}

impl Linear {
    pub fn new(domain: (f64, f64), range: (f64, f64)) -> Self {
        Self {
            d0: domain.0,
            d1: domain.1,
            r0: range.0,
            r1: range.1,
        }
    }

    pub fn at(&self, v: f64) -> f64 {
        let span = self.d1 - self.d0;
        if span == 0.0 || !span.is_finite() {
            return (self.r0 + self.r1) / 2.0;
        }
        self.r0 + (v - self.d0) / span * (self.r1 - self.r0)
    }
}

/// An SVG coordinate, one decimal.
pub fn px(v: f64) -> String {
    format!("{v:.1}")
}

/// The Okabe–Ito palette (safe for the common colour-vision deficiencies),
/// ordered for contrast on white; yellow, the faintest, last.
pub const OKABE_ITO: [&str; 8] = [
    "#0072B2", // blue
    "#D55E00", // vermillion
    "#009E73", // bluish green
    "#CC79A7", // reddish purple
    "#E69F00", // orange
    "#56B4E9", // sky blue
    "#000000", // black
    "#F0E442", // yellow
];

/// The `i`-th categorical colour (cycles after eight).
pub fn category(i: usize) -> &'static str {
    OKABE_ITO[i % OKABE_ITO.len()]
}

/// Viridis at nine evenly spaced points.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (0x44, 0x01, 0x54),
    (0x47, 0x2d, 0x7b),
    (0x3b, 0x52, 0x8b),
    (0x2c, 0x72, 0x8e),
    (0x21, 0x91, 0x8c),
    (0x28, 0xae, 0x80),
    (0x5d, 0xc8, 0x63),
    (0xaa, 0xdc, 0x32),
    (0xfd, 0xe7, 0x25),
];

/// Orange (negative) – white – blue (positive), from ColorBrewer's PuOr
/// and RdBu ends: the blue/orange axis reads under red-green deficiencies,
/// and matches the token strip (blue raises, orange lowers).
const DIVERGING: [(u8, u8, u8); 11] = [
    (0x7f, 0x3b, 0x08),
    (0xb3, 0x58, 0x06),
    (0xe0, 0x82, 0x14),
    (0xfd, 0xb8, 0x63),
    (0xfe, 0xe0, 0xb6),
    (0xf7, 0xf7, 0xf7),
    (0xd1, 0xe5, 0xf0),
    (0x92, 0xc5, 0xde),
    (0x43, 0x93, 0xc3),
    (0x21, 0x66, 0xac),
    (0x05, 0x30, 0x61),
];

/// Piecewise-linear interpolation through evenly spaced stops, `t ∈ [0, 1]`.
fn through(stops: &[(u8, u8, u8)], t: f64) -> (u8, u8, u8) {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let x = t * (stops.len() - 1) as f64;
    let i = (x.floor() as usize).min(stops.len() - 2);
    let f = x - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (stops[i], stops[i + 1]);
    (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn rgb((r, g, b): (u8, u8, u8)) -> String {
    format!("rgb({r}, {g}, {b})")
}

/// Sequential (viridis-like) colour for `t ∈ [0, 1]` (clamped): dark purple
/// at 0, yellow at 1.
pub fn sequential(t: f64) -> String {
    rgb(through(&VIRIDIS, t))
}

/// Diverging colour for `t ∈ [-1, 1]` (clamped): orange below 0, white at
/// 0, blue above.
pub fn diverging(t: f64) -> String {
    let t = if t.is_nan() { 0.0 } else { t.clamp(-1.0, 1.0) };
    rgb(through(&DIVERGING, (t + 1.0) / 2.0))
}

/// Where each point's label goes, as `(x, y, text-anchor)` of its baseline:
/// the first of a few spots around the point (right/left, above/below/level)
/// that overlaps no label placed before it and no other point, and stays
/// inside `bounds` `(x0, x1, y0, y1)`; labels are `widths[i]` units wide
/// and about 11 tall, points `r` in radius.
pub fn place_labels(
    points: &[(f64, f64)],
    widths: &[f64],
    r: f64,
    bounds: (f64, f64, f64, f64),
) -> Vec<(f64, f64, &'static str)> {
    type Box4 = (f64, f64, f64, f64);
    let overlaps = |a: Box4, b: Box4| a.0 < b.1 && b.0 < a.1 && a.2 < b.3 && b.2 < a.3;
    let dots: Vec<Box4> = points
        .iter()
        .map(|&(x, y)| (x - r, x + r, y - r, y + r))
        .collect();
    let inside = |b: Box4| b.0 >= bounds.0 && b.1 <= bounds.1 && b.2 >= bounds.2 && b.3 <= bounds.3;
    let mut placed: Vec<Box4> = Vec::new();
    let mut out = Vec::with_capacity(points.len());
    for (i, (&(cx, cy), &w)) in points.iter().zip(widths).enumerate() {
        let spots = [
            (cx + r + 3.0, cy - r - 1.0, "start"),
            (cx - r - 3.0, cy - r - 1.0, "end"),
            (cx + r + 3.0, cy + r + 10.0, "start"),
            (cx - r - 3.0, cy + r + 10.0, "end"),
            (cx + r + 3.0, cy + 3.5, "start"),
            (cx - r - 3.0, cy + 3.5, "end"),
        ];
        let bbox = |&(x, y, anchor): &(f64, f64, &str)| -> Box4 {
            let (x0, x1) = if anchor == "end" {
                (x - w, x)
            } else {
                (x, x + w)
            };
            (x0, x1, y - 9.0, y + 2.0)
        };
        let free = |b: Box4| {
            inside(b)
                && !placed.iter().any(|&p| overlaps(b, p))
                && !dots
                    .iter()
                    .enumerate()
                    .any(|(j, &d)| j != i && overlaps(b, d))
        };
        let spot = spots
            .iter()
            .find(|s| free(bbox(s)))
            .or_else(|| spots.iter().find(|s| inside(bbox(s))))
            .copied()
            .unwrap_or(spots[0]);
        placed.push(bbox(&spot));
        out.push(spot);
    }
    out
}

/// A token for an SVG label or tooltip: spaces and newlines as `␣` / `⏎`,
/// tabs as `⇥`, the empty token as `∅`.
pub fn shown_text(token: &str) -> String {
    if token.is_empty() {
        return "∅".into();
    }
    token
        .chars()
        .map(|c| match c {
            ' ' => '␣',
            '\n' => '⏎',
            '\t' => '⇥',
            c => c,
        })
        .collect()
}

/// At most `max` characters, `…` marking a cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The tokens of a decoded vector as a JSON array of their strings.
pub fn tokens_json(tokens: &[TokenScore]) -> String {
    let v: Vec<&str> = tokens.iter().map(|t| t.token.as_str()).collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

#[cfg(target_arch = "wasm32")]
pub use page::*;

/// View pieces several views use (the page only).
#[cfg(target_arch = "wasm32")]
mod page {
    use super::*;
    use crate::views::format::shown;
    use leptos::prelude::*;

    /// Decoded tokens as chips, each with its score on hover
    /// (`what`: "W_U u", "cosine", …).
    pub fn token_chips(tokens: &[TokenScore], what: &'static str) -> AnyView {
        if tokens.is_empty() {
            return view! { <span class="muted">"—"</span> }.into_any();
        }
        let chips = tokens
            .iter()
            .map(|t| {
                let title = format!(
                    "“{}” (id {}): {what} = {:.4}",
                    shown_text(&t.token),
                    t.id,
                    t.score
                );
                view! { <span class="tok" title=title>{shown(&t.token)}</span> }
            })
            .collect_view();
        view! { <span class="tok-list">{chips}</span> }.into_any()
    }

    /// A horizontal colour bar in SVG user units at `(x, y)`, `w × h`,
    /// `steps` bands of `colour(t)` for `t` from `t0` to `t1`, with end
    /// (and middle) labels below.
    #[allow(clippy::too_many_arguments)]
    pub fn colour_bar(
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        steps: usize,
        t0: f64,
        t1: f64,
        colour: fn(f64) -> String,
        labels: [String; 3],
    ) -> AnyView {
        let bw = w / steps as f64;
        let bands = (0..steps)
            .map(|k| {
                let t = t0 + (t1 - t0) * (k as f64 + 0.5) / steps as f64;
                view! {
                    <rect x=px(x + k as f64 * bw) y=px(y) width=px(bw + 0.3) height=px(h)
                        fill=colour(t)></rect>
                }
            })
            .collect_view();
        let [l0, l1, l2] = labels;
        view! {
            <g class="colour-bar" aria-hidden="true">
                {bands}
                <rect x=px(x) y=px(y) width=px(w) height=px(h) class="colour-bar-frame"></rect>
                <text class="axis" x=px(x) y=px(y + h + 12.0) text-anchor="start">{l0}</text>
                <text class="axis" x=px(x + w / 2.0) y=px(y + h + 12.0) text-anchor="middle">{l1}</text>
                <text class="axis" x=px(x + w) y=px(y + h + 12.0) text-anchor="end">{l2}</text>
            </g>
        }
        .into_any()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn ticks_are_nice_and_inside() {
        assert!(close(
            &nice_ticks(0.0, 10.0, 5),
            &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        ));
        assert!(close(
            &nice_ticks(-1.0, 1.0, 4),
            &[-1.0, -0.5, 0.0, 0.5, 1.0]
        ));
        assert!(close(
            &nice_ticks(1.0, 18.0, 6),
            &[2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0]
        ));
        assert!(close(&nice_ticks(1.0, 18.0, 3), &[5.0, 10.0, 15.0]));
        assert!(close(
            &nice_ticks(0.13, 0.61, 5),
            &[0.2, 0.3, 0.4, 0.5, 0.6]
        ));
        assert_eq!(nice_ticks(0.1, 0.3, 2)[1], 0.2);
        assert_eq!(nice_ticks(0.0, 0.3, 3), vec![0.0, 0.1, 0.2, 0.3]);
        let t = nice_ticks(3.7, 1234.0, 5);
        assert!(t.iter().all(|v| (3.7..=1234.0).contains(v)));
        assert!(t.len() >= 3 && t.len() <= 10, "{t:?}");
    }

    #[test]
    fn ticks_degenerate_and_reversed() {
        assert_eq!(nice_ticks(2.0, 2.0, 5), vec![2.0]);
        assert!(nice_ticks(f64::NAN, 1.0, 5).is_empty());
        assert!(nice_ticks(0.0, f64::INFINITY, 5).is_empty());
        assert!(close(&nice_ticks(10.0, 0.0, 5), &nice_ticks(0.0, 10.0, 5)));
        assert!(close(&nice_ticks(0.0, 1.0, 0), &[0.0, 1.0]));
        assert!(nice_ticks(-0.5, 0.5, 2)
            .iter()
            .all(|v| !(v.is_sign_negative() && *v == 0.0)));
    }

    #[test]
    fn axis_ends_and_labels() {
        assert_eq!(nice_step(0.0, 10.0, 5), 2.0);
        assert_eq!(nice_ceil(0.0, 3.3, 5), 3.5);
        assert_eq!(nice_ceil(0.0, 3.3, 2), 4.0);
        assert_eq!(nice_ceil(0.0, 3.3, 10), 3.5);
        assert_eq!(nice_ceil(0.0, 4.0, 4), 4.0);
        assert_eq!(tick_label(0.5, 0.5), "0.5");
        assert_eq!(tick_label(10.0, 5.0), "10");
        assert_eq!(tick_label(3.0, 1.0), "3");
        assert_eq!(tick_label(0.3, 0.1), "0.3");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(-0.0001, 0.5), "0.0");
        assert_eq!(tick_label(-1.0, 0.5), "-1.0");
    }

    #[test]
    fn linear_scale() {
        let s = Linear::new((0.0, 10.0), (100.0, 0.0));
        assert_eq!(s.at(0.0), 100.0);
        assert_eq!(s.at(10.0), 0.0);
        assert_eq!(s.at(2.5), 75.0);
        assert_eq!(Linear::new((1.0, 1.0), (0.0, 8.0)).at(1.0), 4.0);
    }

    #[test]
    fn palette() {
        assert_eq!(category(0), "#0072B2");
        assert_eq!(category(8), category(0));
        let mut seen: Vec<&str> = (0..8).map(category).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn colour_scales() {
        assert_eq!(sequential(0.0), "rgb(68, 1, 84)");
        assert_eq!(sequential(1.0), "rgb(253, 231, 37)");
        assert_eq!(sequential(0.5), "rgb(33, 145, 140)");
        assert_eq!(sequential(-3.0), sequential(0.0));
        assert_eq!(sequential(f64::NAN), sequential(0.0));
        assert_eq!(sequential(7.0), sequential(1.0));
        assert_eq!(diverging(0.0), "rgb(247, 247, 247)");
        assert_eq!(diverging(1.0), "rgb(5, 48, 97)");
        assert_eq!(diverging(-1.0), "rgb(127, 59, 8)");
        assert_eq!(diverging(2.0), diverging(1.0));
        assert_eq!(diverging(f64::NAN), diverging(0.0));
        // Positive is blue (b > r), negative orange (r > b).
        let parse = |s: String| -> Vec<u32> {
            s.trim_start_matches("rgb(")
                .trim_end_matches(')')
                .split(", ")
                .map(|x| x.parse().unwrap())
                .collect()
        };
        let p = parse(diverging(0.5));
        let n = parse(diverging(-0.5));
        assert!(p[2] > p[0] && n[0] > n[2]);
        // Monotone lightness towards white from both ends.
        let sum = |t: f64| parse(diverging(t)).iter().sum::<u32>();
        assert!(sum(0.9) < sum(0.5) && sum(0.5) < sum(0.1) && sum(0.1) < sum(0.0));
        assert!(sum(-0.9) < sum(-0.5) && sum(-0.5) < sum(-0.1) && sum(-0.1) < sum(0.0));
    }

    #[test]
    fn labels_avoid_each_other() {
        let bounds = (0.0, 300.0, 0.0, 300.0);
        // Far apart: all to the upper right.
        let spots = place_labels(&[(50.0, 50.0), (200.0, 200.0)], &[40.0, 40.0], 5.0, bounds);
        assert_eq!(spots[0], (58.0, 44.0, "start"));
        assert_eq!(spots[1], (208.0, 194.0, "start"));
        // Two points close together: the second label moves.
        let spots = place_labels(
            &[(100.0, 100.0), (104.0, 100.0)],
            &[60.0, 60.0],
            5.0,
            bounds,
        );
        assert_ne!((spots[0].0, spots[0].1), (spots[1].0, spots[1].1));
        // At the right edge: the label goes left.
        let spots = place_labels(&[(295.0, 100.0)], &[60.0], 5.0, bounds);
        assert_eq!(spots[0].2, "end");
        assert!(place_labels(&[], &[], 5.0, bounds).is_empty());
    }

    #[test]
    fn token_text() {
        assert_eq!(shown_text(" Paris\n"), "␣Paris⏎");
        assert_eq!(shown_text(""), "∅");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
        let toks = vec![
            TokenScore {
                id: 1,
                token: " Paris".into(),
                score: 2.0,
            },
            TokenScore {
                id: 2,
                token: "<\"x\">".into(),
                score: -1.5,
            },
        ];
        assert_eq!(tokens_json(&toks), r#"[" Paris","<\"x\">"]"#);
    }
}
