//! Two runs compared: A (pinned) over B (the run on screen). The aligned
//! token strips coloured by each token's change, the target logit's
//! change as one bar per aligned token, both spectra on one plot with the
//! principal angles, both decode tables with the words they share, both
//! layer curves on a depth axis. Every number is the engine's Comparison.

use super::format::{sci, shown};
use super::numbers_table::NumbersTable;
use super::plot::{category, diverging, nice_ticks, px, shown_text, tick_label, Linear};
use crate::classroom::COMPARE_PRESETS;
use crate::view_data::{CompareData, CompareRow, DepthCurve};
use lens_protocol::report::AlignOp;
use leptos::prelude::*;

const W: f64 = 560.0;

fn op_name(op: AlignOp) -> &'static str {
    match op {
        AlignOp::Keep => "keep",
        AlignOp::Substitute => "substitute",
        AlignOp::Insert => "insert",
        AlignOp::Delete => "delete",
    }
}

fn share(x: Option<f64>) -> String {
    x.map(|v| format!("{v:+.4}")).unwrap_or_else(|| "—".into())
}

fn prob(x: Option<f64>) -> String {
    x.map(|p| format!("{:.2} %", p * 100.0))
        .unwrap_or_else(|| "not known here".into())
}

/// The two prompts' tokens, one column per aligned row: A above, B below,
/// each column tinted by its share's change.
fn strips(d: &CompareData) -> impl IntoView {
    let max = d.max_change.max(1e-300);
    let cols = d
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let tint = diverging(r.change / max);
            let most = d.moved_most == Some(i);
            let chip = |t: &Option<String>| match t {
                Some(t) => view! { <span class="tok">{shown(t)}</span> }.into_any(),
                None => view! { <span class="tok gap" aria-label="no token">"·"</span> }.into_any(),
            };
            view! {
                <div class="cmp-col" class:moved-most=most data-op=op_name(r.op)
                    style=format!("background:{tint}")
                    title=format!("{} · change {:+.4}", op_name(r.op), r.change)>
                    {chip(&r.a)}
                    {chip(&r.b)}
                </div>
            }
        })
        .collect_view();
    view! {
        <div class="cmp-strips" data-testid="compare-strips">
            <div class="cmp-col cmp-head"><span>"A"</span><span>"B"</span></div>
            {cols}
        </div>
    }
}

/// One bar per aligned row: `share_B − share_A`, centred on zero. HTML,
/// not SVG: the labels stay legible from a projector to a phone.
fn bars(d: &CompareData) -> impl IntoView {
    let max = d.max_change.max(1e-300);
    let label = |r: &CompareRow| {
        let a = r.a.as_deref().map(shown_text).unwrap_or_else(|| "·".into());
        let b = r.b.as_deref().map(shown_text).unwrap_or_else(|| "·".into());
        if r.op == AlignOp::Keep {
            a
        } else {
            format!("{a} → {b}")
        }
    };
    let rows = d
        .rows
        .iter()
        .map(|r| {
            // Percent of the track: zero in the middle, ±max at the ends.
            let half = 50.0 * r.change.abs() / max;
            let left = if r.change >= 0.0 { 50.0 } else { 50.0 - half };
            let fill = if r.change >= 0.0 { category(0) } else { category(1) };
            let title = format!(
                "{}: A {} → B {} ({:+.4})",
                label(r),
                share(r.share_a),
                share(r.share_b),
                r.change
            );
            view! {
                <div class="cmp-bar-row" data-testid="compare-row" data-op=op_name(r.op)
                    data-a=r.a.clone().unwrap_or_default() data-b=r.b.clone().unwrap_or_default()
                    data-share-a=r.share_a.map(|v| format!("{v:e}")).unwrap_or_default()
                    data-share-b=r.share_b.map(|v| format!("{v:e}")).unwrap_or_default()
                    data-change=format!("{:e}", r.change) title=title>
                    <span class="cmp-bar-label">{super::plot::clip(&label(r), 28)}</span>
                    <span class="cmp-bar-track">
                        <span class="cmp-bar" style=format!("left:{left:.2}%;width:{:.2}%;background:{fill}", half.max(0.3))></span>
                    </span>
                    <span class="cmp-bar-value">{format!("{:+.3}", r.change)}</span>
                </div>
            }
        })
        .collect_view();
    view! {
        <div class="cmp-bars" role="img"
            aria-label="Each aligned token's change of the target's logit share, B minus A">
            {rows}
        </div>
    }
}

/// Both spectra, log scale, A and B in two colours.
fn spectra(d: &CompareData) -> impl IntoView {
    let s = &d.comparison.spectra;
    let (h, pad_l, pad_b) = (200.0, 46.0, 24.0);
    let all: Vec<f64> = s
        .sigma_a
        .iter()
        .chain(&s.sigma_b)
        .copied()
        .filter(|v| *v > 0.0)
        .collect();
    if all.is_empty() {
        return view! { <p class="hint">"No spectrum on one side (a run without the full J)."</p> }
            .into_any();
    }
    let top = all.iter().copied().fold(0.0, f64::max);
    let bottom = all.iter().copied().fold(top, f64::min).max(top * 1e-6);
    let (lo, hi) = (
        (bottom * 0.5).log10().floor(),
        top.log10().ceil().max((bottom * 0.5).log10().floor() + 1.0),
    );
    let n = s.sigma_a.len().max(s.sigma_b.len()).max(2);
    let x = Linear::new((1.0, n as f64), (pad_l + 8.0, W - 12.0));
    let y = move |v: f64| {
        let t = (v.max(1e-300).log10() - lo) / (hi - lo);
        (h - pad_b) - t * (h - pad_b - 12.0)
    };
    let series = |v: &[f64], c: usize, name: &'static str| {
        let pts = v
            .iter()
            .enumerate()
            .filter(|(_, s)| **s > 0.0)
            .map(|(k, s)| format!("{},{}", px(x.at((k + 1) as f64)), px(y(*s))))
            .collect::<Vec<_>>()
            .join(" ");
        let dots = v
            .iter()
            .enumerate()
            .filter(|(_, s)| **s > 0.0)
            .map(|(k, s)| view! { <circle cx=px(x.at((k + 1) as f64)) cy=px(y(*s)) r="3" fill=category(c)><title>{format!("{name}: σ{} = {s:.6e}", k + 1)}</title></circle> })
            .collect_view();
        view! { <polyline points=pts fill="none" stroke=category(c) stroke-width="1.5" />{dots} }
    };
    let decades = ((lo as i32)..=(hi as i32))
        .map(|e| {
            let yy = y(10f64.powi(e));
            view! {
                <line x1=px(pad_l) x2=px(W - 8.0) y1=px(yy) y2=px(yy) class="grid" />
                <text x=px(pad_l - 4.0) y=px(yy + 4.0) text-anchor="end" class="tick">{format!("1e{e}")}</text>
            }
        })
        .collect_view();
    view! {
        <svg class="plot" viewBox=format!("0 0 {W} {h}") role="img"
            aria-label="Singular values of J_cat for A and for B, log scale">
            {decades}
            {series(&s.sigma_a, 0, "A")}
            {series(&s.sigma_b, 1, "B")}
            <text x=px(W - 12.0) y="14" text-anchor="end" class="tick">
                <tspan fill=category(0)>"● A"</tspan>" "<tspan fill=category(1)>"● B"</tspan>
            </text>
            <text x=px((pad_l + W) / 2.0) y=px(h - 4.0) text-anchor="middle" class="tick">"k"</text>
        </svg>
    }
    .into_any()
}

/// Both stable-rank curves over depth (layer / the model's layers).
fn layer_curves(d: &CompareData) -> impl IntoView {
    if d.curves_a.is_empty() && d.curves_b.is_empty() {
        return view! { <p class="hint">"No layer curves: compute some layers for A before pinning it."</p> }.into_any();
    }
    let (h, pad_l, pad_b) = (200.0, 40.0, 28.0);
    let pts = d
        .curves_a
        .iter()
        .chain(&d.curves_b)
        .flat_map(|c| c.points.iter());
    let top = pts.map(|p| p.1).fold(1.0, f64::max);
    let x = Linear::new((0.0, 1.0), (pad_l + 6.0, W - 12.0));
    let y = Linear::new((0.0, top * 1.1), (h - pad_b, 10.0));
    let ticks = nice_ticks(0.0, top * 1.1, 4);
    let step = ticks.get(1).copied().unwrap_or(1.0) - ticks.first().copied().unwrap_or(0.0);
    let draw = |cs: &[DepthCurve], c: usize, side: &'static str, dash: &'static str| {
        cs.iter()
            .map(|curve| {
                let line = curve
                    .points
                    .iter()
                    .map(|p| format!("{},{}", px(x.at(p.0)), px(y.at(p.1))))
                    .collect::<Vec<_>>()
                    .join(" ");
                let dots = curve
                    .points
                    .iter()
                    .map(|p| view! {
                        <circle cx=px(x.at(p.0)) cy=px(y.at(p.1)) r="3" fill=category(c)>
                            <title>{format!("{side} layer {} ({}): stable rank {:.3}", p.2, curve.label, p.1)}</title>
                        </circle>
                    })
                    .collect_view();
                view! { <polyline points=line fill="none" stroke=category(c) stroke-dasharray=dash stroke-width="1.5" />{dots} }
            })
            .collect_view()
    };
    view! {
        <svg class="plot" viewBox=format!("0 0 {W} {h}") role="img" data-testid="compare-layers"
            aria-label="Stable rank of each side's layer Jacobians over depth">
            {ticks.iter().map(|t| view! {
                <line x1=px(pad_l) x2=px(W - 8.0) y1=px(y.at(*t)) y2=px(y.at(*t)) class="grid" />
                <text x=px(pad_l - 4.0) y=px(y.at(*t) + 4.0) text-anchor="end" class="tick">{tick_label(*t, step)}</text>
            }).collect_view()}
            {[0.0, 0.25, 0.5, 0.75, 1.0].map(|t| view! {
                <text x=px(x.at(t)) y=px(h - pad_b + 14.0) text-anchor="middle" class="tick">{format!("{t}")}</text>
            }).into_iter().collect_view()}
            {draw(&d.curves_a, 0, "A", "")}
            {draw(&d.curves_b, 1, "B", "5 3")}
            <text x=px((pad_l + W) / 2.0) y=px(h - 2.0) text-anchor="middle" class="tick">"depth (layer / layers)"</text>
            <text x=px(W - 12.0) y="14" text-anchor="end" class="tick">
                <tspan fill=category(0)>"— A"</tspan>" "<tspan fill=category(1)>"- - B"</tspan>
            </text>
        </svg>
    }
    .into_any()
}

/// The decoded words of both sides, pair by pair, the shared ones marked.
fn words(d: &CompareData) -> impl IntoView {
    let c = &d.comparison;
    let cell = |ws: &[String]| {
        ws.iter()
            .map(|w| {
                let shared = c.shared_words.contains(w);
                view! { <span class="tok" class:shared=shared>{shown(w)}</span>" " }
            })
            .collect_view()
    };
    let rows = c
        .words
        .iter()
        .map(|p| view! { <tr><td class="num">{p.k.to_string()}</td><td>{cell(&p.a)}</td><td>{cell(&p.b)}</td></tr> })
        .collect_view();
    let shared_json = serde_json::to_string(&c.shared_words).unwrap_or_else(|_| "[]".into());
    view! {
        <div class="table-wrap">
            <table class="data-table" data-testid="compare-words" data-shared=shared_json>
                <caption>"Left singular vectors of J_cat read as words; words both sides name are marked"</caption>
                <thead><tr><th scope="col">"k"</th><th scope="col">"A"</th><th scope="col">"B"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
}

/// Where the check of a link's snapshot of side A stands, as a line.
fn snapshot_line(state: Option<(&'static str, String)>) -> impl IntoView {
    state.map(|(state, text)| {
        view! { <p class="notice" data-testid="compare-snapshot-a" data-state=state>{text}</p> }
    })
}

#[component]
pub fn CompareView(
    data: Signal<Option<CompareData>>,
    /// Side A's prompt, once pinned (B not run yet, when `data` is none).
    pinned: Signal<Option<String>>,
    /// A run is on screen that can be pinned.
    can_pin: Signal<bool>,
    on_pin: Callback<()>,
    /// Run a preset pair: A pinned, then B.
    on_pair: Callback<(String, String)>,
    on_clear: Callback<()>,
    /// Attribute another token (by id): A and B run again for it.
    on_target: Callback<u32>,
    /// A link's snapshot of A: its check's state and a sentence.
    snapshot_a: Signal<Option<(&'static str, String)>>,
) -> impl IntoView {
    let pairs = move || {
        COMPARE_PRESETS
            .iter()
            .map(|(a, b)| {
                let (a, b) = (a.to_string(), b.to_string());
                let label = format!("{a} → {b}");
                view! {
                    <button type="button" class="secondary" data-testid="compare-pair"
                        disabled=move || !can_pin.get()
                        on:click=move |_| on_pair.run((a.clone(), b.clone()))>{label}</button>
                }
            })
            .collect_view()
    };
    move || {
        let Some(d) = data.get() else {
            let text = match pinned.get() {
                Some(p) => format!(
                    "A is pinned: “{p}”. Change the prompt (one word is enough), or the model or \
                     the precision, and run it: the page lines the two up."
                ),
                None => "Pin the run on screen as A, then change the prompt and run B; or run \
                         one of these pairs."
                    .into(),
            };
            return view! {
                <section class="card placeholder" data-testid="view-compare">
                    <h2>"Compare A and B"</h2>
                    <p class="hint" data-testid="compare-hint">{text}</p>
                    {snapshot_line(snapshot_a.get())}
                    {match pinned.get() {
                        Some(_) => view! {
                            <button type="button" class="secondary" data-testid="compare-clear"
                                on:click=move |_| on_clear.run(())>"Clear A"</button>
                        }.into_any(),
                        None => view! {
                            <p class="cmp-actions">
                                <button type="button" data-testid="compare-pin"
                                    disabled=move || !can_pin.get()
                                    on:click=move |_| on_pin.run(())>"Pin this run as A"</button>
                                {pairs()}
                            </p>
                        }.into_any(),
                    }}
                </section>
            }
            .into_any();
        };
        let c = &d.comparison;
        let t = &c.target;
        let pa = &c.prediction;
        let top = |v: &[lens_protocol::report::TopToken]| {
            v.first()
                .map(|t| (t.token.clone(), t.prob))
                .unwrap_or_default()
        };
        let ((ta, pta), (tb, ptb)) = (top(&pa.top_a), top(&pa.top_b));
        let angles = d.angles_deg.clone();
        let angles_json = c
            .principal_angles
            .as_ref()
            .map(|v| serde_json::to_string(v).unwrap_or_default())
            .unwrap_or_default();
        let moved = d.moved_most.and_then(|i| d.rows.get(i)).map(|r| {
            let name = r.b.clone().or(r.a.clone()).unwrap_or_default();
            format!("“{}” moved most: {:+.4}", shown_text(&name), r.change)
        });
        let table_rows: Vec<Vec<String>> = d
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.a.clone().map(|t| shown_text(&t)).unwrap_or_default(),
                    r.b.clone().map(|t| shown_text(&t)).unwrap_or_default(),
                    op_name(r.op).into(),
                    r.share_a.map(|v| format!("{v:e}")).unwrap_or_default(),
                    r.share_b.map(|v| format!("{v:e}")).unwrap_or_default(),
                    format!("{:e}", r.change),
                ]
            })
            .collect();
        let models = if c.same_model {
            d.model_a.clone()
        } else {
            format!(
                "A on {}, B on {} (aligned by characters)",
                d.model_a, d.model_b
            )
        };
        view! {
            <section class="card compare-card" data-testid="view-compare"
                data-logit-change=format!("{:e}", c.logit_change)
                data-sum-rel-error=format!("{:e}", c.sum_rel_error)
                data-angles=angles_json data-same-model=c.same_model.to_string()>
                <h2>"Compare A and B"</h2>
                <p class="hint">{models}</p>
                {snapshot_line(snapshot_a.get())}
                <dl class="cmp-prompts">
                    <dt>"A"</dt><dd data-testid="compare-prompt-a">{d.prompt_a.clone()}</dd>
                    <dt>"B"</dt><dd data-testid="compare-prompt-b">{d.prompt_b.clone()}</dd>
                </dl>
                <p data-testid="compare-summary">
                    "The logit of “" <span class="tok">{shown(&t.token)}</span> "”: "
                    {format!("{:.4} in A, {:.4} in B, a change of {:+.4}", t.logit_a, t.logit_b, c.logit_change)}
                    ". The tokens' changes sum to it (relative error " {sci(c.sum_rel_error)} ")."
                    {moved.map(|m| view! { " " <strong data-testid="compare-moved-most">{m}</strong> "." })}
                </p>
                <p data-testid="compare-prediction" data-flipped=pa.flipped.to_string()>
                    {format!("A predicts “{}” ({:.1} %), B predicts “{}” ({:.1} %)", shown_text(&ta), pta * 100.0, shown_text(&tb), ptb * 100.0)}
                    {if pa.flipped { ": the prediction flipped. " } else { ". " }}
                    {format!("A's probability of B's top token: {}; B's of A's: {}.", prob(pa.prob_a_of_top_b), prob(pa.prob_b_of_top_a))}
                </p>
                <p>
                    <label for="compare-target">"The token whose logit is split: "</label>
                    <select id="compare-target" data-testid="compare-target"
                        on:change=move |ev| {
                            if let Ok(id) = event_target_value(&ev).parse() {
                                on_target.run(id);
                            }
                        }>
                        {pa.top_a.iter().map(|x| {
                            let selected = x.id == t.id;
                            view! { <option value=x.id.to_string() selected=selected>{format!("{} (A: {:.1} %)", shown_text(&x.token), x.prob * 100.0)}</option> }
                        }).collect_view()}
                        {(!pa.top_a.iter().any(|x| x.id == t.id)).then(|| view! {
                            <option value=t.id.to_string() selected=true>{shown_text(&t.token)}</option>
                        })}
                    </select>
                </p>
                {strips(&d)}
                <h3>"Each token's share of the logit: B − A"</h3>
                {bars(&d)}
                <NumbersTable caption="Each aligned token's share of the target's logit in A and in B".into()
                    head=vec!["A".into(), "B".into(), "op".into(), "share A".into(), "share B".into(), "change".into()]
                    rows=table_rows />
                <div class="grid2">
                    <div>
                        <h3>"Singular values of J_cat"</h3>
                        {spectra(&d)}
                        <p class="hint" data-testid="compare-angles">{match angles {
                            Some(a) => format!("Principal angles between A's and B's top {} left singular subspaces: {}°.", a.len(),
                                a.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join("°, ")),
                            None => "Two models: their output spaces differ, so no principal angles.".into(),
                        }}</p>
                    </div>
                    <div>
                        <h3>"Layers"</h3>
                        {layer_curves(&d)}
                    </div>
                </div>
                {words(&d)}
                <button type="button" class="secondary" data-testid="compare-clear"
                    on:click=move |_| on_clear.run(())>"Clear A"</button>
            </section>
        }
        .into_any()
    }
}
