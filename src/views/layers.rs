//! Layers: the stable rank of the Jacobian to each chosen layer's residual
//! stream, attention output and MLP output, from the embeddings
//! (cumulative) and from the block's input (layerwise), computed on demand;
//! and what each layer's top output direction and its logit lens read as.

use super::format::sci;
use super::plot::{
    category, nice_ceil, nice_step, nice_ticks, px, tick_label, token_chips, tokens_json, Linear,
};
use lens_protocol::report::{LayerRow, TapKind};
use leptos::prelude::*;

const W: f64 = 400.0;
const H: f64 = 250.0;
const PAD_L: f64 = 46.0;
const PAD_R: f64 = 12.0;
const PAD_T: f64 = 12.0;
const PAD_B: f64 = 40.0;

/// How each series is drawn: colour, dash pattern, marker.
fn series(kind: TapKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        TapKind::Layer => (category(0), "", "filled"),
        TapKind::Attn => (category(1), "7 4", "ring"),
        TapKind::Mlp => (category(2), "2 3", "dot"),
    }
}

fn kind_label(kind: TapKind) -> &'static str {
    match kind {
        TapKind::Layer => "residual stream (layer)",
        TapKind::Attn => "attention output (attn)",
        TapKind::Mlp => "MLP output (mlp)",
    }
}

/// The point marker for `kind` (a `<circle>`): radius, fill, stroke, stroke width.
fn marker(kind: TapKind) -> (f64, &'static str, &'static str, f64) {
    let colour = series(kind).0;
    match series(kind).2 {
        "ring" => (4.5, "white", colour, 2.0),
        "dot" => (3.4, colour, "white", 1.2),
        _ => (4.5, colour, colour, 0.0),
    }
}

/// The legend shared by both charts.
fn legend() -> impl IntoView {
    let items = TapKind::ALL
        .into_iter()
        .map(|k| {
            let (colour, dash, _) = series(k);
            let (r, fill, stroke, sw) = marker(k);
            view! {
                <li>
                    <svg class="legend-swatch" viewBox="0 0 30 12" aria-hidden="true">
                        <line x1="1" x2="29" y1="6" y2="6" stroke=colour stroke-width="2"
                            stroke-dasharray=dash></line>
                        <circle cx="15" cy="6" r=r fill=fill stroke=stroke stroke-width=sw></circle>
                    </svg>
                    {kind_label(k)}
                </li>
            }
        })
        .collect_view();
    view! { <ul class="legend" aria-label="series">{items}</ul> }
}

fn chart(rows: &[LayerRow], mode: &'static str, title: &'static str, num_layers: usize) -> AnyView {
    let rows: Vec<&LayerRow> = rows.iter().filter(|r| r.mode == mode).collect();
    if rows.is_empty() {
        return view! {
            <figure class="chart">
                <figcaption>{title}</figcaption>
                <p class="hint chart-empty">"No curves in this mode."</p>
            </figure>
        }
        .into_any();
    }
    let min_l = 1;
    let max_l = rows
        .iter()
        .map(|r| r.layer)
        .max()
        .unwrap_or(1)
        .max(num_layers);
    let (x0, x1) = if min_l == max_l {
        (min_l as f64 - 1.0, max_l as f64 + 1.0)
    } else {
        (min_l as f64 - 0.5, max_l as f64 + 0.5)
    };
    let xs = Linear::new((x0, x1), (PAD_L, W - PAD_R));
    let max_sr = rows
        .iter()
        .map(|r| r.stable_rank)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let y_hi = nice_ceil(0.0, max_sr, 5);
    let ys = Linear::new((0.0, y_hi), (H - PAD_B, PAD_T));
    let y_step = nice_step(0.0, y_hi, 5);
    let y_ticks = nice_ticks(0.0, y_hi, 5)
        .into_iter()
        .map(|v| {
            view! {
                <line class="grid" x1=px(PAD_L) x2=px(W - PAD_R) y1=px(ys.at(v)) y2=px(ys.at(v))></line>
                <text class="axis" x=px(PAD_L - 5.0) y=px(ys.at(v) + 3.5) text-anchor="end">
                    {tick_label(v, y_step)}
                </text>
            }
        })
        .collect_view();
    // Ticks at the layers drawn when they are few, else at round numbers.
    let mut drawn: Vec<usize> = rows.iter().map(|r| r.layer).collect();
    drawn.sort_unstable();
    drawn.dedup();
    let x_ticks: Vec<f64> = if drawn.len() <= 12 {
        drawn.iter().map(|&l| l as f64).collect()
    } else {
        nice_ticks(min_l as f64, max_l as f64, 6)
            .into_iter()
            .filter(|v| v.fract() == 0.0 && *v >= 1.0)
            .collect()
    };
    let x_ticks = x_ticks
        .into_iter()
        .map(|v| {
            view! {
                <line class="tick" x1=px(xs.at(v)) x2=px(xs.at(v)) y1=px(H - PAD_B) y2=px(H - PAD_B + 4.0)></line>
                <text class="axis" x=px(xs.at(v)) y=px(H - PAD_B + 15.0) text-anchor="middle">
                    {format!("{v}")}
                </text>
            }
        })
        .collect_view();
    let lines = TapKind::ALL
        .into_iter()
        .map(|kind| {
            let mut pts: Vec<&&LayerRow> = rows.iter().filter(|r| r.kind == kind).collect();
            pts.sort_by_key(|r| r.layer);
            let (colour, dash, _) = series(kind);
            let path = pts
                .iter()
                .filter(|r| r.stable_rank.is_finite())
                .map(|r| format!("{},{}", px(xs.at(r.layer as f64)), px(ys.at(r.stable_rank))))
                .collect::<Vec<_>>()
                .join(" ");
            let dots = pts
                .iter()
                .filter(|r| r.stable_rank.is_finite())
                .map(|r| {
                    let (cx, cy) = (xs.at(r.layer as f64), ys.at(r.stable_rank));
                    let (rad, fill, stroke, sw) = marker(kind);
                    let tip = format!(
                        "layer {} · {} · {mode}\nstable rank {:.3}\nreconstruction error {}",
                        r.layer,
                        kind_label(kind),
                        r.stable_rank,
                        sci(r.rel_error)
                    );
                    view! {
                        <circle class="layer-point" data-testid="layer-point" data-layer=r.layer
                            data-kind=kind.name() data-mode=mode
                            data-stable-rank=format!("{:e}", r.stable_rank)
                            cx=px(cx) cy=px(cy) r=rad fill=fill stroke=stroke stroke-width=sw>
                            <title>{tip}</title>
                        </circle>
                    }
                })
                .collect_view();
            view! {
                <g class="series" data-kind=kind.name()>
                    <polyline points=path fill="none" stroke=colour stroke-width="2"
                        stroke-dasharray=dash stroke-linejoin="round"></polyline>
                    {dots}
                </g>
            }
        })
        .collect_view();
    view! {
        <figure class="chart">
            <figcaption>{title}</figcaption>
            <svg class="plot" viewBox=format!("0 0 {W} {H}") role="img" data-testid=format!("layers-chart-{mode}")
                aria-label=format!("stable rank against layer, {title}")>
                {y_ticks}
                <line class="axis-line" x1=px(PAD_L) x2=px(W - PAD_R) y1=px(H - PAD_B) y2=px(H - PAD_B)></line>
                <line class="axis-line" x1=px(PAD_L) x2=px(PAD_L) y1=px(PAD_T) y2=px(H - PAD_B)></line>
                {x_ticks}
                <text class="axis-title" x=px((PAD_L + W - PAD_R) / 2.0) y=px(H - 6.0) text-anchor="middle">"layer"</text>
                <text class="axis-title" transform=format!("translate(12 {}) rotate(-90)", px((PAD_T + H - PAD_B) / 2.0))
                    text-anchor="middle">"stable rank ‖J‖²_F / σ₁²"</text>
                {lines}
            </svg>
        </figure>
    }
    .into_any()
}

/// Entries of the layers box that are not a layer of this model.
fn bad_entries(input: &str, num_layers: usize) -> Vec<String> {
    input
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .filter(|t| match t.parse::<usize>() {
            Ok(l) => l == 0 || (num_layers > 0 && l > num_layers),
            Err(_) => true,
        })
        .map(str::to_string)
        .collect()
}

#[component]
pub fn LayersView(
    rows: Signal<Vec<LayerRow>>,
    num_layers: Signal<usize>,
    layers_input: Signal<String>,
    on_layers_input: Callback<String>,
    on_compute: Callback<()>,
    busy: Signal<bool>,
    available: Signal<bool>,
) -> impl IntoView {
    let range = move || match num_layers.get() {
        0 => "1-based block numbers".to_string(),
        l => format!("1–{l}"),
    };
    let warning = move || {
        let bad = bad_entries(&layers_input.get(), num_layers.get());
        (!bad.is_empty()).then(|| {
            view! {
                <p class="field-warning" role="status">
                    {format!("Not a layer of this model ({}): {}", range(), bad.join(", "))}
                </p>
            }
        })
    };
    let body = move || {
        let rows = rows.get();
        if rows.is_empty() {
            let msg = if busy.get() {
                "Computing the layer curves…"
            } else if available.get() {
                "Choose layers and press “Compute layers” to draw the curves."
            } else {
                "Run the prompt first; the layer curves are computed on demand."
            };
            return view! {
                <div class="layers-placeholder" data-testid="layers-placeholder">
                    <p class="hint" class:computing=busy.get()>{msg}</p>
                </div>
            }
            .into_any();
        }
        let l = num_layers.get();
        let mut table: Vec<&LayerRow> = rows
            .iter()
            .filter(|r| r.mode == "cumulative" && r.kind == TapKind::Layer)
            .collect();
        table.sort_by_key(|r| r.layer);
        let table_rows = table
            .iter()
            .map(|r| {
                let u1 = r.u_tokens.first().cloned().unwrap_or_default();
                view! {
                    <tr data-testid="layer-row" data-layer=r.layer data-u-tokens=tokens_json(&u1)
                        data-lens-tokens=tokens_json(&r.logit_lens_tokens)
                        data-rel-error=format!("{:e}", r.rel_error)>
                        <td class="num">{r.layer.to_string()}</td>
                        <td>{token_chips(&u1, "score W_U u₁")}</td>
                        <td>{token_chips(&r.logit_lens_tokens, "logit")}</td>
                        <td class="num" title=format!("{:e}", r.rel_error)>{sci(r.rel_error)}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            {legend()}
            <div class="charts2">
                {chart(&rows, "cumulative", "cumulative (from the embeddings)", l)}
                {chart(&rows, "layerwise", "layerwise (from the block input)", l)}
            </div>
            <div class="table-wrap">
                <table class="data-table layers-table">
                    <caption>"What each layer's residual stream says (cumulative)"</caption>
                    <thead>
                        <tr>
                            <th scope="col" class="num">"layer"</th>
                            <th scope="col">"u₁ → output words"</th>
                            <th scope="col">"logit lens"</th>
                            <th scope="col" class="num">"reconstruction error"</th>
                        </tr>
                    </thead>
                    <tbody>{table_rows}</tbody>
                </table>
            </div>
        }
        .into_any()
    };
    view! {
        <section class="card" data-testid="view-layers"
            data-state=move || if rows.get().is_empty() { "placeholder" } else { "ready" }>
            <h2>"Layers"</h2>
            <form class="inline-form" on:submit=move |ev| {
                ev.prevent_default();
                if available.get_untracked() && !busy.get_untracked() {
                    on_compute.run(());
                }
            }>
                <div class="field field-grow">
                    <label for="layers-input">{move || format!("Layers ({}, comma-separated)", range())}</label>
                    <input id="layers-input" type="text" inputmode="numeric" autocomplete="off"
                        spellcheck="false" data-testid="layers-input" placeholder="3,6,9,12,15,18"
                        prop:value=move || layers_input.get()
                        on:input=move |ev| on_layers_input.run(event_target_value(&ev))/>
                </div>
                <button type="submit" class="primary" data-testid="layers-run"
                    disabled=move || !available.get() || busy.get()>
                    "Compute layers"
                </button>
            </form>
            {warning}
            <p class="explain">
                "Computed on demand: one Jacobian per layer, module (residual stream, attention, MLP) "
                "and mode (from the embeddings, from the block input), six per layer."
            </p>
            {body}
        </section>
    }
}
