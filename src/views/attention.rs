//! Attention (frozen P): one layer's and head's attention probabilities,
//! the coefficients the detached Jacobian holds fixed, as a heatmap of
//! query × key positions.

use super::numbers_table::NumbersTable;
use super::plot::{clip, colour_bar, px, sequential, shown_text};
use leptos::prelude::*;

/// The frozen attention probabilities `[layer][head][query][key]`.
pub type AttentionProbs = Vec<Vec<Vec<Vec<f64>>>>;

const PAD_L: f64 = 96.0;
const PAD_T: f64 = 24.0;
const GRID: f64 = 400.0;
const PAD_R: f64 = 16.0;
/// Room under the grid for the rotated key labels.
const LABELS_B: f64 = 84.0;
const LEGEND_H: f64 = 10.0;
const W: f64 = PAD_L + GRID + PAD_R;
const H: f64 = PAD_T + GRID + LABELS_B + LEGEND_H + 18.0;

fn token_label(tokens: &[String], i: usize) -> String {
    match tokens.get(i) {
        Some(t) => clip(&shown_text(t), 12),
        None => format!("#{i}"),
    }
}

fn matrix_svg(m: &[Vec<f64>], tokens: &[String], layer: usize, head: usize) -> impl IntoView {
    let n = m.len().max(1);
    let cell = GRID / n as f64;
    // One label per `every` positions, at a font size that fits.
    let every = (8.0 / cell).ceil().max(1.0) as usize;
    let font = (cell * every as f64 * 0.85).clamp(6.0, 11.0);
    let cells = m
        .iter()
        .enumerate()
        .flat_map(|(q, row)| {
            row.iter().enumerate().filter_map(move |(k, &p)| {
                // Masked (exactly 0) cells show the grey background.
                (p != 0.0).then_some((q, k, p))
            })
        })
        .map(|(q, k, p)| {
            let tip = format!(
                "query {q} “{}” → key {k} “{}”: {p:.4}",
                token_label(tokens, q),
                token_label(tokens, k)
            );
            view! {
                <rect x=px(PAD_L + k as f64 * cell) y=px(PAD_T + q as f64 * cell)
                    width=px(cell + 0.25) height=px(cell + 0.25) fill=sequential(p)>
                    <title>{tip}</title>
                </rect>
            }
        })
        .collect_view();
    let row_labels = (0..m.len())
        .filter(|i| i % every == 0)
        .map(|i| {
            let y = PAD_T + (i as f64 + 0.5) * cell;
            view! {
                <text class="axis token-label" x=px(PAD_L - 4.0) y=px(y) text-anchor="end"
                    dominant-baseline="middle" style=format!("font-size: {}px", px(font))>{token_label(tokens, i)}</text>
            }
        })
        .collect_view();
    let col_labels = (0..m.len())
        .filter(|i| i % every == 0)
        .map(|i| {
            let x = PAD_L + (i as f64 + 0.5) * cell;
            let y = PAD_T + GRID + 4.0;
            view! {
                <text class="axis token-label" text-anchor="end" dominant-baseline="middle"
                    style=format!("font-size: {}px", px(font))
                    transform=format!("translate({} {}) rotate(-60)", px(x), px(y))>
                    {token_label(tokens, i)}
                </text>
            }
        })
        .collect_view();
    let json = serde_json::to_string(m).unwrap_or_else(|_| "[]".into());
    let mut head_row = vec!["query \\ key".to_string()];
    head_row.extend((0..m.len()).map(|i| token_label(tokens, i)));
    let table_rows: Vec<Vec<String>> = m
        .iter()
        .enumerate()
        .map(|(q, row)| {
            let mut r = vec![token_label(tokens, q)];
            r.extend(row.iter().map(|p| format!("{p:.3}")));
            r
        })
        .collect();
    let legend_w = 170.0;
    let legend = colour_bar(
        PAD_L + GRID - legend_w,
        PAD_T + GRID + LABELS_B,
        legend_w,
        LEGEND_H,
        24,
        0.0,
        1.0,
        sequential,
        ["0".into(), "0.5".into(), "1".into()],
    );
    view! {
        <svg class="plot attn-plot" viewBox=format!("0 0 {W} {H}") role="img"
            aria-label=format!("attention probabilities of layer {layer}, head {head}: {} queries by {} keys", m.len(), m.len())
            data-testid="attention-matrix" data-layer=layer data-head=head data-values=json>
            <rect class="attn-masked" x=px(PAD_L) y=px(PAD_T) width=px(GRID) height=px(GRID)></rect>
            {cells}
            <rect class="plot-frame" x=px(PAD_L) y=px(PAD_T) width=px(GRID) height=px(GRID)></rect>
            {row_labels}
            {col_labels}
            <text class="axis-title" x=px(PAD_L - 4.0) y=px(PAD_T - 8.0) text-anchor="end">"query ↓"</text>
            <text class="axis-title" x=px(PAD_L) y=px(PAD_T - 8.0)>"key →"</text>
            <text class="axis" x=px(PAD_L + GRID - legend_w - 6.0) y=px(PAD_T + GRID + LABELS_B + LEGEND_H - 1.0)
                text-anchor="end">"p"</text>
            {legend}
        </svg>
        <NumbersTable caption=format!("Attention probabilities of layer {layer}, head {head}: a row per query, a column per key")
            head=head_row rows=table_rows />
    }
}

#[component]
pub fn AttentionView(
    attention: Signal<Option<AttentionProbs>>,
    tokens: Signal<Vec<String>>,
    layer: Signal<usize>,
    head: Signal<usize>,
    on_select: Callback<(usize, usize)>,
) -> impl IntoView {
    move || {
        let att = attention.get();
        let Some(att) = att.filter(|a| a.iter().any(|l| !l.is_empty())) else {
            return view! {
                <section class="card placeholder attention-placeholder" data-testid="view-attention" data-state="placeholder">
                    <h2>"Attention (frozen P)"</h2>
                    <p class="hint">
                        "The attention probabilities the Jacobian holds fixed appear here once the "
                        "prompt has run: one query × key matrix per layer and head (for prompts "
                        "of up to 64 tokens; the CLI's analyze --json has them for any length)."
                    </p>
                </section>
            }
            .into_any();
        };
        let num_layers = att.len();
        let l = layer.get().clamp(1, num_layers);
        let num_heads = att[l - 1].len().max(1);
        let h = head.get().min(num_heads - 1);
        let empty = Vec::new();
        let m = att[l - 1].get(h).unwrap_or(&empty);
        let toks = tokens.get();
        let layer_options = (1..=num_layers)
            .map(|i| view! { <option value=i selected=i == l>{i.to_string()}</option> })
            .collect_view();
        let head_options = (0..att[l - 1].len())
            .map(|i| view! { <option value=i selected=i == h>{i.to_string()}</option> })
            .collect_view();
        let heads_of = {
            let att_heads: Vec<usize> = att.iter().map(Vec::len).collect();
            move |layer: usize| {
                att_heads
                    .get(layer.wrapping_sub(1))
                    .copied()
                    .unwrap_or(1)
                    .max(1)
            }
        };
        view! {
            <section class="card" data-testid="view-attention" data-state="ready">
                <h2>"Attention (frozen P)"</h2>
                <div class="inline-form">
                    <div class="field">
                        <label for="attn-layer">{format!("Layer (1–{num_layers})")}</label>
                        <select id="attn-layer" data-testid="attn-layer"
                            on:change=move |ev| {
                                if let Ok(new) = event_target_value(&ev).parse::<usize>() {
                                    on_select.run((new, h.min(heads_of(new) - 1)));
                                }
                            }>
                            {layer_options}
                        </select>
                    </div>
                    <div class="field">
                        <label for="attn-head">{format!("Head (0–{})", num_heads - 1)}</label>
                        <select id="attn-head" data-testid="attn-head"
                            on:change=move |ev| {
                                if let Ok(new) = event_target_value(&ev).parse::<usize>() {
                                    on_select.run((l, new));
                                }
                            }>
                            {head_options}
                        </select>
                    </div>
                </div>
                {matrix_svg(m, &toks, l, h)}
                <p class="caption">
                    {format!(
                        "Layer {l}, head {h}: row q shows how query token q's attention spreads over the key \
                         tokens (each row sums to 1). Freezing these probabilities at their values for this \
                         prompt is what makes the network linear in its input. Grey cells are exactly 0 \
                         (masked); hover a cell for its value."
                    )}
                </p>
            </section>
        }
        .into_any()
    }
}
