//! The path of the top two output directions across layers: where each
//! chosen layer's `u₁`, `u₂` (cumulative, residual stream) point, as
//! coordinates on the output's own `u₁(L)`, `u₂(L)`.

use super::numbers_table::NumbersTable;
use super::plot::{clip, nice_ticks, place_labels, px, sequential, shown_text, tick_label, Linear};
use lens_protocol::report::PathPoint;
use leptos::prelude::*;

const W: f64 = 380.0;
const H: f64 = 374.0;
const PAD_L: f64 = 48.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 14.0;
const PAD_B: f64 = 44.0;
const LIM: f64 = 1.08;
const R: f64 = 5.0;

#[component]
pub fn PathView(points: Signal<Vec<PathPoint>>) -> impl IntoView {
    move || {
        let mut pts = points.get();
        if pts.is_empty() {
            return view! {
                <section class="card placeholder path-placeholder" data-testid="view-path" data-state="placeholder">
                    <h2>"Path of the top singular vectors across layers"</h2>
                    <p class="hint">
                        "The path needs the layer curves: compute them in “Layers”, and each chosen "
                        "layer's top two output directions are placed here against the output's."
                    </p>
                </section>
            }
            .into_any();
        }
        pts.sort_by_key(|p| p.layer);
        let xs = Linear::new((-LIM, LIM), (PAD_L, W - PAD_R));
        let ys = Linear::new((-LIM, LIM), (H - PAD_B, PAD_T));
        let ticks = nice_ticks(-1.0, 1.0, 4);
        let grid = ticks
            .iter()
            .map(|&v| {
                let cls = if v == 0.0 { "zero-line" } else { "grid" };
                view! {
                    <line class=cls x1=px(xs.at(v)) x2=px(xs.at(v)) y1=px(PAD_T) y2=px(H - PAD_B)></line>
                    <line class=cls x1=px(PAD_L) x2=px(W - PAD_R) y1=px(ys.at(v)) y2=px(ys.at(v))></line>
                    <text class="axis" x=px(xs.at(v)) y=px(H - PAD_B + 14.0) text-anchor="middle">{tick_label(v, 0.5)}</text>
                    <text class="axis" x=px(PAD_L - 5.0) y=px(ys.at(v) + 3.5) text-anchor="end">{tick_label(v, 0.5)}</text>
                }
            })
            .collect_view();
        let finite: Vec<&PathPoint> = pts
            .iter()
            .filter(|p| p.x.is_finite() && p.y.is_finite())
            .collect();
        let n = finite.len();
        let shade = move |i: usize| {
            if n > 1 {
                0.15 + 0.8 * i as f64 / (n - 1) as f64
            } else {
                0.6
            }
        };
        let arrows = finite
            .windows(2)
            .filter_map(|w| {
                let (a, b) = (w[0], w[1]);
                let (ax, ay, bx, by) = (xs.at(a.x), ys.at(a.y), xs.at(b.x), ys.at(b.y));
                let len = ((bx - ax).powi(2) + (by - ay).powi(2)).sqrt();
                if len < 3.0 * R {
                    return None;
                }
                let (ux, uy) = ((bx - ax) / len, (by - ay) / len);
                Some(view! {
                    <line class="path-step" x1=px(ax + ux * R) y1=px(ay + uy * R)
                        x2=px(bx - ux * (R + 1.5)) y2=px(by - uy * (R + 1.5))
                        marker-end="url(#path-arrowhead)"></line>
                })
            })
            .collect_view();
        let labels: Vec<String> = finite
            .iter()
            .map(|p| format!("{} {}", p.layer, clip(&shown_text(&p.label), 12)))
            .collect();
        let spots = place_labels(
            &finite
                .iter()
                .map(|p| (xs.at(p.x), ys.at(p.y)))
                .collect::<Vec<_>>(),
            &labels
                .iter()
                .map(|l| l.chars().count() as f64 * 6.1 + 2.0)
                .collect::<Vec<_>>(),
            R,
            (2.0, W - 2.0, 0.0, H - PAD_B),
        );
        let dots = finite
            .iter()
            .zip(labels)
            .zip(spots)
            .enumerate()
            .map(|(i, ((p, label), (lx, ly, anchor)))| {
                let (cx, cy) = (xs.at(p.x), ys.at(p.y));
                let tip = format!(
                    "layer {}: u₁·u₁(L) = {:.4}, u₂·u₂(L) = {:.4}\nu₁ reads “{}”",
                    p.layer,
                    p.x,
                    p.y,
                    shown_text(&p.label)
                );
                view! {
                    <g class="path-node">
                        <circle class="path-point" data-testid="path-point" data-layer=p.layer
                            data-x=format!("{:e}", p.x) data-y=format!("{:e}", p.y) data-label=p.label.clone()
                            cx=px(cx) cy=px(cy) r=R fill=sequential(shade(i))>
                            <title>{tip}</title>
                        </circle>
                        <text class="point-label" x=px(lx) y=px(ly) text-anchor=anchor>{label}</text>
                    </g>
                }
            })
            .collect_view();
        let skipped = pts.len() - n;
        let table_rows: Vec<Vec<String>> = pts
            .iter()
            .map(|p| {
                vec![
                    p.layer.to_string(),
                    format!("{:.4}", p.x),
                    format!("{:.4}", p.y),
                    shown_text(&p.label),
                ]
            })
            .collect();
        view! {
            <section class="card" data-testid="view-path" data-state="ready">
                <h2>"Path of the top singular vectors across layers"</h2>
                <svg class="plot path-plot" viewBox=format!("0 0 {W} {H}") role="img"
                    aria-label=format!("the top two output directions of {n} layers against the output's")>
                    <defs>
                        <marker id="path-arrowhead" viewBox="0 0 10 10" refX="9" refY="5"
                            markerWidth="7" markerHeight="7" orient="auto-start-reverse">
                            <path d="M0,1 L10,5 L0,9 z" class="path-arrowhead"></path>
                        </marker>
                    </defs>
                    {grid}
                    <rect class="plot-frame" x=px(xs.at(-1.0)) y=px(ys.at(1.0))
                        width=px(xs.at(1.0) - xs.at(-1.0)) height=px(ys.at(-1.0) - ys.at(1.0))></rect>
                    <circle class="path-ref" cx=px(xs.at(1.0)) cy=px(ys.at(1.0)) r={R + 4.0}>
                        <title>"the output itself: u₁(L), u₂(L) at (1, 1)"</title>
                    </circle>
                    {arrows}
                    {dots}
                    <text class="axis-title" x=px((PAD_L + W - PAD_R) / 2.0) y=px(H - 8.0) text-anchor="middle">"u₁(ℓ)·u₁(L)"</text>
                    <text class="axis-title" transform=format!("translate(13 {}) rotate(-90)", px((PAD_T + H - PAD_B) / 2.0))
                        text-anchor="middle">"u₂(ℓ)·u₂(L)"</text>
                </svg>
                <p class="caption">
                    "Each point is a layer ℓ (labelled with its number and the word its u₁ reads as), "
                    "placed by how far its top two output directions already agree with the output's: "
                    "(1, 1) is the output itself (ringed). Arrows follow the layers in order, dark to light."
                    {(skipped > 0).then(|| format!(" {skipped} point(s) with non-finite coordinates are not drawn."))}
                </p>
                <NumbersTable caption="Each layer's top two output directions against the output's".to_string()
                    head=vec!["layer".into(), "u₁(ℓ)·u₁(L)".into(), "u₂(ℓ)·u₂(L)".into(), "u₁ reads".into()]
                    rows=table_rows />
            </section>
        }
        .into_any()
    }
}
