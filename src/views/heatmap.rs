//! `J_i` for the selected token, drawn small (each cell the largest-magnitude
//! entry of its block), with its largest columns (input coordinates, read
//! through the unembedding) and rows (output coordinates, read as the
//! nearest input embeddings).

use super::format::{sci, shown};
use super::numbers_table::NumbersTable;
use super::plot::{
    colour_bar, diverging, nice_step, nice_ticks, px, tick_label, token_chips, tokens_json,
};
use lens_protocol::report::{Columns, Heatmap, Line};
use leptos::prelude::*;

const PAD_L: f64 = 60.0;
const PAD_T: f64 = 8.0;
const PAD_R: f64 = 14.0;
const GRID: f64 = 400.0;
/// Room under the grid for the ticks and the axis title.
const AXIS_B: f64 = 42.0;
const LEGEND_H: f64 = 10.0;

fn matrix_svg(h: &Heatmap) -> impl IntoView {
    let (rows, cols) = (h.rows.max(1), h.cols.max(1));
    let cell = GRID / rows.max(cols) as f64;
    let (gw, gh) = (cols as f64 * cell, rows as f64 * cell);
    let w = PAD_L + GRID + PAD_R;
    let legend_y = PAD_T + gh + AXIS_B;
    let height = legend_y + LEGEND_H + 18.0;
    let scale = if h.max_abs > 0.0 && h.max_abs.is_finite() {
        h.max_abs
    } else {
        1.0
    };
    let (rb, cb) = (h.row_block.max(1), h.col_block.max(1));
    let cells = h
        .values
        .iter()
        .take(h.rows * h.cols)
        .enumerate()
        .map(|(idx, &v)| {
            let (r, c) = (idx / h.cols.max(1), idx % h.cols.max(1));
            let tip = format!(
                "output {}–{}, input {}–{}: {v:.4e}",
                r * rb,
                (r + 1) * rb - 1,
                c * cb,
                (c + 1) * cb - 1
            );
            view! {
                <rect x=px(PAD_L + c as f64 * cell) y=px(PAD_T + r as f64 * cell)
                    width=px(cell + 0.25) height=px(cell + 0.25) fill=diverging(v / scale)>
                    <title>{tip}</title>
                </rect>
            }
        })
        .collect_view();
    let mut head_row = vec!["outputs \\ inputs".to_string()];
    head_row.extend((0..h.cols).map(|c| format!("{}–{}", c * cb, (c + 1) * cb - 1)));
    let table_rows: Vec<Vec<String>> = h
        .values
        .chunks(h.cols.max(1))
        .take(h.rows)
        .enumerate()
        .map(|(r, row)| {
            let mut out = vec![format!("{}–{}", r * rb, (r + 1) * rb - 1)];
            out.extend(row.iter().map(|v| format!("{v:.3e}")));
            out
        })
        .collect();
    let d_in = (cols * cb) as f64;
    let d_out = (rows * rb) as f64;
    let x_step = nice_step(0.0, d_in, 5);
    let x_ticks = nice_ticks(0.0, d_in, 5)
        .into_iter()
        .map(|v| {
            let x = PAD_L + v / cb as f64 * cell;
            view! {
                <line class="tick" x1=px(x) x2=px(x) y1=px(PAD_T + gh) y2=px(PAD_T + gh + 4.0)></line>
                <text class="axis" x=px(x) y=px(PAD_T + gh + 15.0) text-anchor="middle">{tick_label(v, x_step)}</text>
            }
        })
        .collect_view();
    let y_step = nice_step(0.0, d_out, 5);
    let y_ticks = nice_ticks(0.0, d_out, 5)
        .into_iter()
        .map(|v| {
            let y = PAD_T + v / rb as f64 * cell;
            view! {
                <line class="tick" x1=px(PAD_L - 4.0) x2=px(PAD_L) y1=px(y) y2=px(y)></line>
                <text class="axis" x=px(PAD_L - 6.0) y=px(y + 3.5) text-anchor="end">{tick_label(v, y_step)}</text>
            }
        })
        .collect_view();
    let legend_w = 170.0;
    let legend = colour_bar(
        PAD_L + gw - legend_w,
        legend_y,
        legend_w,
        LEGEND_H,
        32,
        -1.0,
        1.0,
        diverging,
        [sci(-scale), "0".into(), sci(scale)],
    );
    view! {
        <svg class="plot heatmap-plot" viewBox=format!("0 0 {w} {}", px(height)) role="img"
            aria-label=format!("J_i of position {} drawn as {} by {} cells", h.position, h.rows, h.cols)
            data-testid="heatmap-matrix" data-position=h.position data-max-abs=format!("{:e}", h.max_abs)
            data-rows=h.rows data-cols=h.cols data-row-block=h.row_block data-col-block=h.col_block>
            {cells}
            <rect class="plot-frame" x=px(PAD_L) y=px(PAD_T) width=px(gw) height=px(gh)></rect>
            {x_ticks}
            {y_ticks}
            <text class="axis-title" x=px(PAD_L + gw / 2.0) y=px(PAD_T + gh + 32.0) text-anchor="middle">
                "input coordinate (xᵢ)"
            </text>
            <text class="axis-title" transform=format!("translate(13 {}) rotate(-90)", px(PAD_T + gh / 2.0))
                text-anchor="middle">"output coordinate (y)"</text>
            {legend}
        </svg>
        <NumbersTable caption=format!("J_{}: each cell the largest entry of its block of {} outputs by {} inputs", h.position, rb, cb)
            head=head_row rows=table_rows />
    }
}

fn line_table(
    lines: &[Line],
    testid: &'static str,
    caption: &'static str,
    index_head: &'static str,
    tokens_head: &'static str,
    score: &'static str,
) -> impl IntoView {
    let rows = lines
        .iter()
        .map(|l| {
            view! {
                <tr data-testid=testid data-index=l.index data-norm=format!("{:e}", l.norm)
                    data-tokens=tokens_json(&l.tokens)>
                    <td class="num">{l.index.to_string()}</td>
                    <td class="num" title=format!("{:e}", l.norm)>{sci(l.norm)}</td>
                    <td>{token_chips(&l.tokens, score)}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap">
            <table class="data-table">
                <caption>{caption}</caption>
                <thead>
                    <tr>
                        <th scope="col" class="num">{index_head}</th>
                        <th scope="col" class="num">"norm"</th>
                        <th scope="col">{tokens_head}</th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
}

#[component]
pub fn HeatmapView(
    data: Signal<Option<(Heatmap, Columns)>>,
    tokens: Signal<Vec<String>>,
    pending: Signal<bool>,
) -> impl IntoView {
    move || {
        let Some((h, c)) = data.get() else {
            let (msg, busy) = if pending.get() {
                ("reading J_i…", true)
            } else {
                (
                    "Select a token in the prompt to see its Jacobian J_i here.",
                    false,
                )
            };
            return view! {
                <section class="card placeholder heatmap-placeholder" data-testid="view-heatmap" data-state=if busy { "pending" } else { "placeholder" }>
                    <h2>"J_i for the selected token"</h2>
                    <p class="hint" class:computing=busy>{msg}</p>
                </section>
            }
            .into_any();
        };
        let toks = tokens.get();
        let token = toks.get(h.position).cloned();
        view! {
            <section class="card" data-testid="view-heatmap" data-state="ready" data-position=h.position
                data-max-abs=format!("{:e}", h.max_abs) data-rows=h.rows data-cols=h.cols>
                <h2>"J_i for the selected token"</h2>
                <p class="headline" data-testid="heatmap-token">
                    {format!("Position {}: ", h.position)}
                    {token.map(|t| view! { <span class="token-chip">{shown(&t)}</span> })}
                    {format!(" — largest |entry| {}", sci(h.max_abs))}
                </p>
                <div class="heatmap-layout">
                    <figure class="chart heatmap-figure">
                        {matrix_svg(&h)}
                    </figure>
                    <div class="heatmap-tables">
                        {line_table(&c.columns, "heatmap-column", "Largest columns (input coordinates)",
                            "input coord.", "→ output words (W_U)", "score W_U column")}
                        {line_table(&c.rows, "heatmap-row", "Largest rows (output coordinates)",
                            "output coord.", "→ nearest input embeddings", "cosine")}
                    </div>
                </div>
                <p class="caption">
                    {format!(
                        "J_i maps the input embedding xᵢ (coordinates across) to the output y \
                         (coordinates down). Each of the {} × {} cells is the largest-magnitude \
                         entry of a {} × {} block of the matrix; blue positive, orange negative, scaled by \
                         the largest |entry| of J_i.",
                        h.rows, h.cols, h.row_block, h.col_block
                    )}
                </p>
            </section>
        }
        .into_any()
    }
}
