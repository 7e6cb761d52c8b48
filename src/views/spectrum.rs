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
use leptos::prelude::*;

#[derive(Clone, Debug, PartialEq)]
pub struct SpectrumData {
    pub singular_values: Vec<f64>,
    pub stable_rank: f64,
    pub fro_norm: f64,
    pub ms: f64,
}

const W: f64 = 560.0;
const H: f64 = 190.0;
const PAD_L: f64 = 46.0;
const PAD_B: f64 = 26.0;

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
                <section class="card placeholder">
                    <h2>"Singular values of J_cat"</h2>
                    <p class="hint">{msg}</p>
                </section>
            }
            .into_any();
        };
        let sv = s.singular_values.clone();
        let top = sv.first().copied().unwrap_or(1.0).max(1e-300);
        let bottom = sv.last().copied().unwrap_or(top).max(top * 1e-6);
        let (lo, hi) = (
            (bottom * 0.5).log10().floor(),
            top.log10().ceil().max((bottom * 0.5).log10().floor() + 1.0),
        );
        let y = move |v: f64| {
            let t = (v.max(1e-300).log10() - lo) / (hi - lo);
            (H - PAD_B) - t * (H - PAD_B - 14.0)
        };
        let n = sv.len().max(1) as f64;
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
                        <title>{format!("σ{} = {v:.6}", k + 1)}</title>
                    </rect>
                    <text class="axis" x=format!("{:.1}", x + (bw - 4.0) / 2.0) y=format!("{:.1}", H - 8.0)
                        text-anchor="middle">{(k + 1).to_string()}</text>
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
        let json = format!(
            "[{}]",
            sv.iter()
                .map(|v| format!("{v:e}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        view! {
            <section class="card" data-testid="view-spectrum-summary">
                <h2>"Singular values of J_cat = [J₁ … Jₙ]"</h2>
                <div class="figures">
                    <div class="figure" data-testid="stable-rank" data-value=format!("{:e}", s.stable_rank)>
                        <div class="figure-label">"stable rank ‖J‖²_F / σ₁²"</div>
                        <div class="figure-value">{format!("{:.3}", s.stable_rank)}</div>
                        <div class="figure-note">"how many directions carry the output"</div>
                    </div>
                    <div class="figure">
                        <div class="figure-label">"σ₁"</div>
                        <div class="figure-value">{format!("{:.4}", top)}</div>
                        <div class="figure-note">{format!("‖J‖_F = {:.4}", s.fro_norm)}</div>
                    </div>
                </div>
                <svg class="spectrum" viewBox=format!("0 0 {W} {H}") role="img"
                    aria-label=format!("the top {} singular values on a log scale", sv.len())
                    data-testid="singular-values" data-values=json>
                    {ticks}
                    {bars}
                </svg>
                <p class="caption">{format!("Top {} singular values, log scale (SVD in {:.1} s).", sv.len(), s.ms / 1000.0)}</p>
            </section>
        }
        .into_any()
    }
}
