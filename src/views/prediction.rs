//! The prompt's tokens and the top next tokens with probability bars.

use lens_engine::Prediction;
use leptos::prelude::*;

#[derive(Clone, Debug)]
pub enum Run {
    Idle,
    Computing { prompt: String },
    Done { prediction: Prediction, ms: f64 },
    Failed(String),
}

/// A token as text, its spaces and newlines shown as faint marks.
fn shown(token: &str) -> AnyView {
    if token.is_empty() {
        return view! { <span class="mark">"∅"</span> }.into_any();
    }
    token
        .chars()
        .map(|c| match c {
            ' ' => view! { <span class="mark">"␣"</span> }.into_any(),
            '\n' => view! { <span class="mark">"⏎"</span> }.into_any(),
            c => c.to_string().into_any(),
        })
        .collect_view()
        .into_any()
}

#[component]
pub fn PredictionView(run: ReadSignal<Run>) -> impl IntoView {
    move || match run.get() {
        Run::Idle => {
            view! { <p class="hint">"Press Predict to run the model on the prompt."</p> }.into_any()
        }
        Run::Computing { prompt } => view! {
            <p class="hint computing" data-testid="computing">
                "Computing the next token after “" {prompt} "”…"
            </p>
        }
        .into_any(),
        Run::Failed(msg) => {
            view! { <p class="error" role="alert" data-testid="error">{msg}</p> }.into_any()
        }
        Run::Done { prediction, ms } => {
            let n = prediction.tokens.len();
            let tokens = prediction
                .tokens
                .iter()
                .zip(&prediction.token_ids)
                .map(|(t, id)| {
                    view! { <li class="token" title=format!("id {id}") data-token=t.clone()>{shown(t)}</li> }
                })
                .collect_view();
            let rows = prediction
                .top
                .iter()
                .map(|t| {
                    let pct = 100.0 * t.prob;
                    view! {
                        <li class="row" data-token=t.token.clone() data-prob=format!("{:.6}", t.prob)>
                            <span class="next-token" title=format!("id {} · logit {:.3}", t.id, t.logit)>
                                {shown(&t.token)}
                            </span>
                            <span class="bar-track">
                                <span class="bar" style=format!("width: {pct:.2}%")></span>
                            </span>
                            <span class="prob">{format!("{pct:.1}%")}</span>
                        </li>
                    }
                })
                .collect_view();
            view! {
                <section class="result">
                    <h2>{format!("Prompt tokens ({n})")}</h2>
                    <ol class="tokens" data-testid="tokens">{tokens}</ol>
                    <h2>"Most likely next tokens"</h2>
                    <ol class="prediction" data-testid="prediction" data-ms=format!("{ms:.0}")>{rows}</ol>
                    <p class="timing">{format!("Computed in {:.2} s (f32).", ms / 1000.0)}</p>
                </section>
            }
            .into_any()
        }
    }
}
