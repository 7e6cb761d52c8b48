//! The top next tokens with probability bars.

use super::format::shown;
use crate::view_data::PredictionData;
use leptos::prelude::*;

#[component]
pub fn PredictionView(data: Signal<Option<PredictionData>>) -> impl IntoView {
    move || {
        let Some(p) = data.get() else {
            return view! {
                <section class="card placeholder" data-testid="prediction-pending">
                    <h2>"Next token"</h2>
                    <p class="hint">"Run the prompt to see what the model predicts."</p>
                </section>
            }
            .into_any();
        };
        let first = p.top.first().map(|t| t.token.clone()).unwrap_or_default();
        let rows = p
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
            <section class="card" data-testid="view-prediction">
                <h2>"Next token"</h2>
                <p class="headline">
                    "Predicted: "
                    <strong class="token-chip" data-testid="predicted-token">{first}</strong>
                </p>
                <ol class="prediction" data-testid="prediction" data-ms=format!("{:.0}", p.ms)>
                    {rows}
                </ol>
            </section>
        }
        .into_any()
    }
}
