//! Spectrum summary: the top singular values of `J_cat` (log scale) and
//! its stable rank.

/// A power of ten as an axis label: `0.01`, `1`, `100`, `1e5`.
fn tick(e: i32) -> String {
    match e {
        -3..=-1 => format!("{:.*}", (-e) as usize, 10f64.powi(e)),
        0..=4 => format!("{}", 10i64.pow(e as u32)),
        _ => format!("1e{e}"),
    }
}
use super::format::{sci, shown};
use super::numbers_table::NumbersTable;
use crate::view_data::SpectrumData;
use leptos::prelude::*;

const W: f64 = 560.0;
const H: f64 = 210.0;
const PAD_L: f64 = 46.0;
const PAD_B: f64 = 26.0;

fn json(v: &[f64]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|v| format!("{v:e}"))
            .collect::<Vec<_>>()
            .join(",")
    )
}

#[component]
pub fn SpectrumView(data: Signal<Option<SpectrumData>>, pending: Signal<bool>) -> impl IntoView {
    move || {
        let Some(s) = data.get() else {
            let msg = if pending.get() {
                "The singular values come once the full Jacobian is formed…"
            } else {
                "Run the prompt to see the spectrum of the Jacobian."
            };
            return view! {
                <section class="card placeholder spectrum-card" data-testid="view-spectrum">
                    <h2>"Singular values"</h2>
                    <p class="hint">{msg}</p>
                </section>
            }
            .into_any();
        };
        let sv = s.singular_values.clone();
        let tok = s.token.clone();
        let tv: Vec<f64> = tok
            .as_ref()
            .map(|t| t.2.singular_values.clone())
            .unwrap_or_default();
        let table_rows: Vec<Vec<String>> = (0..sv.len().max(tv.len()))
            .map(|k| {
                let cell = |v: Option<&f64>| v.map(|v| format!("{v:.6e}")).unwrap_or_default();
                vec![(k + 1).to_string(), cell(sv.get(k)), cell(tv.get(k))]
            })
            .collect();
        let mut head = vec!["k".to_string(), "σₖ of J_cat".to_string()];
        if let Some(t) = &tok {
            head.push(format!("σₖ of J_{} ({})", t.0, t.1.trim()));
        }
        let caption_text = "Singular values, largest first".to_string();
        let top = sv.first().copied().unwrap_or(1.0).max(1e-300);
        let smallest = sv
            .iter()
            .chain(&tv)
            .copied()
            .filter(|v| *v > 0.0)
            .fold(top, f64::min);
        let bottom = smallest.max(top * 1e-6);
        let (lo, hi) = (
            (bottom * 0.5).log10().floor(),
            top.log10().ceil().max((bottom * 0.5).log10().floor() + 1.0),
        );
        let y = move |v: f64| {
            let t = (v.max(1e-300).log10() - lo) / (hi - lo);
            (H - PAD_B) - t * (H - PAD_B - 14.0)
        };
        let n = sv.len().max(tv.len()).max(1) as f64;
        let bw = (W - PAD_L - 8.0) / n;
        let bars = sv
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let x = PAD_L + k as f64 * bw + 2.0;
                let top_y = y(v);
                view! {
                    <rect class="sv-bar" x=format!("{x:.1}") y=format!("{top_y:.1}")
                        width=format!("{:.1}", bw - 4.0) height=format!("{:.1}", (H - PAD_B) - top_y)>
                        <title>{format!("J_cat: σ{} = {v:.6}", k + 1)}</title>
                    </rect>
                    <text class="axis" x=format!("{:.1}", x + (bw - 4.0) / 2.0) y=format!("{:.1}", H - 8.0)
                        text-anchor="middle">{(k + 1).to_string()}</text>
                }
            })
            .collect_view();
        let pos = tok.as_ref().map(|t| t.0).unwrap_or(0);
        let token_pts: Vec<(f64, f64)> = tv
            .iter()
            .enumerate()
            .map(|(k, &v)| (PAD_L + k as f64 * bw + bw / 2.0, y(v)))
            .collect();
        let token_line = (!token_pts.is_empty()).then(|| {
            let d = token_pts
                .iter()
                .enumerate()
                .map(|(k, (x, y))| format!("{}{x:.1},{y:.1}", if k == 0 { "M" } else { "L" }))
                .collect::<String>();
            view! { <path class="sv-token-line" d=d></path> }
        });
        let token_dots = token_pts
            .iter()
            .zip(&tv)
            .enumerate()
            .map(|(k, ((x, yy), v))| {
                view! {
                    <rect class="sv-token" x=format!("{:.1}", x - 4.0) y=format!("{:.1}", yy - 4.0)
                        width="8" height="8" transform=format!("rotate(45 {x:.1} {yy:.1})")>
                        <title>{format!("J_{pos}: σ{} = {v:.6}", k + 1)}</title>
                    </rect>
                }
            })
            .collect_view();
        let ticks = (lo as i32..=hi as i32)
            .map(|e| {
                let v = 10f64.powi(e);
                view! {
                    <line class="grid" x1=PAD_L x2=W - 4.0 y1=format!("{:.1}", y(v)) y2=format!("{:.1}", y(v))></line>
                    <text class="axis" x=PAD_L - 6.0 y=format!("{:.1}", y(v) + 4.0) text-anchor="end">{tick(e)}</text>
                }
            })
            .collect_view();
        let caption = match &s.matrix_free {
            Some(mf) => format!(
                "Top {} singular values of J_cat found without forming J: {} ({} products in {} blocks; \
                 residuals ‖Jv − σu‖ up to {}), in {:.1} s.",
                sv.len(),
                mf.method,
                mf.products,
                mf.blocks,
                sci(mf.residuals.iter().copied().fold(0.0, f64::max)),
                s.ms / 1000.0
            ),
            None => format!(
                "Top {} singular values, log scale (SVD in {:.1} s). Bars: J_cat; diamonds: the \
                 selected token's J_i (click a token to change it).",
                sv.len(),
                s.ms / 1000.0
            ),
        };
        let token_figure = tok.map(|(i, t, sp)| {
            view! {
                <div class="figure" data-testid="token-stable-rank" data-index=i
                    data-value=format!("{:e}", sp.stable_rank)
                    data-values=json(&sp.singular_values)>
                    <div class="figure-label">"stable rank of J"{i}" "<span class="tok">{shown(&t)}</span></div>
                    <div class="figure-value">{format!("{:.3}", sp.stable_rank)}</div>
                    <div class="figure-note">{format!("σ₁ = {:.4}", sp.singular_values.first().copied().unwrap_or(0.0))}</div>
                </div>
            }
        });
        view! {
            <section class="card spectrum-card" data-testid="view-spectrum">
                <h2>"Singular values of J_cat = [J₁ … Jₙ]"</h2>
                <div class="figures">
                    <div class="figure" data-testid="stable-rank" data-value=s.stable_rank.map(|v| format!("{v:e}"))>
                        <div class="figure-label">"stable rank ‖J‖²_F / σ₁²"</div>
                        <div class="figure-value">{s.stable_rank.map(|v| format!("{v:.3}")).unwrap_or_else(|| "needs full J".into())}</div>
                        <div class="figure-note">"how many directions carry the output"</div>
                    </div>
                    <div class="figure">
                        <div class="figure-label">"σ₁"</div>
                        <div class="figure-value">{format!("{:.4}", top)}</div>
                        <div class="figure-note">{s.fro_norm.map(|f| format!("‖J‖_F = {f:.4}")).unwrap_or_default()}</div>
                    </div>
                    {token_figure}
                </div>
                <svg class="spectrum" viewBox=format!("0 0 {W} {H}") role="img"
                    aria-label=format!("the top {} singular values on a log scale", sv.len())
                    data-testid="singular-values" data-values=json(&sv)>
                    {ticks}
                    {bars}
                    {token_line}
                    {token_dots}
                    <text class="axis-title" x=PAD_L y="10">"σ (log)"</text>
                    <text class="axis-title" x=W - 4.0 y=H - 8.0 text-anchor="end">"k"</text>
                </svg>
                <p class="caption">{caption}</p>
                <NumbersTable caption=caption_text head=head rows=table_rows />
            </section>
        }
        .into_any()
    }
}
