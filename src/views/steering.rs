//! Steering: a source prompt's detached Jacobian to a layer, applied to
//! another text's embeddings and added to its residual stream while it
//! generates; the continuation with and without it.

use super::format::{sci, shown};
use lens_protocol::report::Steering;
use lens_protocol::spec::MAX_STEER_TOKENS;
use lens_protocol::SteerSpec;
use leptos::html::Input;
use leptos::prelude::*;

/// The input's own text while it already means `same` (so typing "1." or
/// "0.50" is not rewritten under the cursor), else `fresh`.
fn keep_text(node: NodeRef<Input>, same: impl Fn(&str) -> bool, fresh: String) -> String {
    match node.get_untracked() {
        Some(el) if same(&el.value()) => el.value(),
        _ => fresh,
    }
}

fn prob_text(p: f64) -> String {
    if (1e-3..=1.0).contains(&p) {
        format!("{:.2}%", p * 100.0)
    } else {
        sci(p)
    }
}

fn outcome(
    testid: &'static str,
    title: &'static str,
    prompt: String,
    continuation: String,
    source_token: &str,
    prob: f64,
) -> impl IntoView {
    let shown_continuation = continuation.clone();
    view! {
        <div class="steer-out" data-kind=testid>
            <h3>{title}</h3>
            <p class="steer-text" data-testid=testid data-text=continuation
                data-source-prob=format!("{prob:e}")>
                <span class="steer-prompt">{prompt}</span>
                <mark class="continuation">{shown_continuation}</mark>
            </p>
            <p class="steer-prob">
                "p("<span class="token-chip">{shown(source_token)}</span>") at the first new token: "
                <strong>{prob_text(prob)}</strong>
            </p>
        </div>
    }
}

#[component]
pub fn SteeringView(
    spec: Signal<SteerSpec>,
    on_change: Callback<SteerSpec>,
    on_run: Callback<()>,
    result: Signal<Option<Steering>>,
    busy: Signal<bool>,
    available: Signal<bool>,
    num_layers: Signal<usize>,
) -> impl IntoView {
    let lambda_ref = NodeRef::<Input>::new();
    let layer_ref = NodeRef::<Input>::new();
    let tokens_ref = NodeRef::<Input>::new();
    let update = move |f: &dyn Fn(&mut SteerSpec)| {
        let mut s = spec.get_untracked();
        f(&mut s);
        if s != spec.get_untracked() {
            on_change.run(s);
        }
    };
    let default_layer = move || match num_layers.get() {
        0 => "⌊2L/3⌋".to_string(),
        l => (2 * l / 3).max(1).to_string(),
    };
    let results = move || {
        let Some(r) = result.get() else {
            let msg = if busy.get() {
                "Generating both continuations…"
            } else if available.get() {
                "Press “Steer” to continue the new text with and without the source's operator."
            } else {
                "Run a prompt first, then steer a text."
            };
            return view! {
                <div class="steer-results steer-placeholder" data-testid="steer-placeholder">
                    <p class="hint" class:computing=busy.get()>{msg}</p>
                </div>
            }
            .into_any();
        };
        let text = spec.get().text;
        view! {
            <p class="steer-used" data-testid="steer-used" data-layer=r.layer data-lambda=format!("{:e}", r.lambda)>
                {format!("Source “{}” at layer {}, λ = {}", r.source, r.layer, r.lambda)}
            </p>
            <div class="steer-results">
                {outcome("steered", "steered", text.clone(), r.steered.clone(),
                    &r.source_token, r.source_token_prob_steered)}
                {outcome("unsteered", "unsteered", text, r.unsteered.clone(),
                    &r.source_token, r.source_token_prob_unsteered)}
            </div>
        }
        .into_any()
    };
    view! {
        <section class="card" data-testid="view-steering"
            data-state=move || if result.get().is_some() { "ready" } else { "placeholder" }>
            <h2>"Steering"</h2>
            <p class="explain">
                "The source prompt's detached Jacobian to layer ℓ is applied to the new text's "
                "embeddings and added, scaled by λ, to its residual stream at that layer while it "
                "generates."
            </p>
            <form class="steer-form" on:submit=move |ev| {
                ev.prevent_default();
                if available.get_untracked() && !busy.get_untracked() {
                    on_run.run(());
                }
            }>
                <div class="field field-wide">
                    <label for="steer-source">"Source prompt (its operator steers)"</label>
                    <input id="steer-source" type="text" data-testid="steer-source" autocomplete="off"
                        prop:value=move || spec.get().source
                        on:input=move |ev| {
                            let v = event_target_value(&ev);
                            update(&|s| s.source = v.clone());
                        }/>
                </div>
                <div class="field field-wide">
                    <label for="steer-text">"New text (is continued)"</label>
                    <input id="steer-text" type="text" data-testid="steer-text" autocomplete="off"
                        prop:value=move || spec.get().text
                        on:input=move |ev| {
                            let v = event_target_value(&ev);
                            update(&|s| s.text = v.clone());
                        }/>
                </div>
                <div class="field">
                    <label for="steer-lambda">"Strength λ"</label>
                    <input id="steer-lambda" type="number" step="0.001" data-testid="steer-lambda"
                        node_ref=lambda_ref
                        prop:value=move || {
                            let v = spec.get().lambda;
                            keep_text(lambda_ref, |t| t.trim().parse::<f64>().ok() == Some(v), v.to_string())
                        }
                        on:input=move |ev| {
                            if let Ok(v) = event_target_value(&ev).trim().parse::<f64>() {
                                if v.is_finite() {
                                    update(&|s| s.lambda = v);
                                }
                            }
                        }/>
                </div>
                <div class="field">
                    <label for="steer-layer">
                        {move || match num_layers.get() {
                            0 => "Layer ℓ".to_string(),
                            l => format!("Layer ℓ (1–{l})"),
                        }}
                    </label>
                    <input id="steer-layer" type="number" step="1" min="1" data-testid="steer-layer"
                        max=move || (num_layers.get() > 0).then(|| num_layers.get().to_string())
                        placeholder=move || format!("default {}", default_layer())
                        node_ref=layer_ref
                        prop:value=move || {
                            let v = spec.get().layer;
                            keep_text(
                                layer_ref,
                                |t| {
                                    let t = t.trim();
                                    if t.is_empty() { v.is_none() } else { t.parse::<usize>().ok() == v }
                                },
                                v.map(|l| l.to_string()).unwrap_or_default(),
                            )
                        }
                        on:input=move |ev| {
                            let t = event_target_value(&ev);
                            let t = t.trim();
                            let l = num_layers.get_untracked();
                            if t.is_empty() {
                                update(&|s| s.layer = None);
                            } else if let Ok(v) = t.parse::<usize>() {
                                let v = if l > 0 { v.clamp(1, l) } else { v.max(1) };
                                update(&|s| s.layer = Some(v));
                            }
                        }/>
                </div>
                <div class="field">
                    <label for="steer-tokens">{format!("New tokens (1–{MAX_STEER_TOKENS})")}</label>
                    <input id="steer-tokens" type="number" step="1" min="1" max=MAX_STEER_TOKENS
                        data-testid="steer-tokens" node_ref=tokens_ref
                        prop:value=move || {
                            let v = spec.get().tokens;
                            keep_text(tokens_ref, |t| t.trim().parse::<usize>().ok() == Some(v), v.to_string())
                        }
                        on:input=move |ev| {
                            if let Ok(v) = event_target_value(&ev).trim().parse::<usize>() {
                                update(&|s| s.tokens = v.clamp(1, MAX_STEER_TOKENS));
                            }
                        }/>
                </div>
                <div class="field field-submit">
                    <button type="submit" class="primary" data-testid="steer-run"
                        disabled=move || !available.get() || busy.get()>
                        "Steer"
                    </button>
                </div>
            </form>
            {results}
        </section>
    }
}
