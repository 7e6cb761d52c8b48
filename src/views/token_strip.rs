//! The prompt's tokens, each coloured by its exact share of the predicted
//! token's logit (`w_t · c_i`, which sum to the logit); values on hover;
//! clicking a token selects it.

use super::format::shown;
use super::numbers_table::NumbersTable;
use crate::view_data::StripData;
use leptos::prelude::*;

/// Blue for positive, orange for negative (readable with colour-blindness),
/// the strength by `|v| / max`.
fn colour(v: f64, max: f64) -> String {
    let a = (v.abs() / max.max(1e-300)).clamp(0.0, 1.0);
    let (r, g, b) = if v >= 0.0 {
        (33, 102, 172)
    } else {
        (230, 97, 1)
    };
    format!("background: rgba({r}, {g}, {b}, {:.3})", 0.08 + 0.72 * a)
}

#[component]
pub fn TokenStrip(
    data: Signal<Option<StripData>>,
    selected: Signal<Option<usize>>,
    on_select: Callback<usize>,
) -> impl IntoView {
    move || {
        let Some(d) = data.get() else {
            return ().into_any();
        };
        let max = d
            .rows
            .as_ref()
            .map(|r| r.iter().map(|t| t.attribution.abs()).fold(0.0, f64::max))
            .unwrap_or(1.0);
        let chips = d
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let row = d.rows.as_ref().and_then(|r| r.get(i).cloned());
                let fro = d.fro_norms.as_ref().and_then(|f| f.get(i).copied());
                let style = row
                    .as_ref()
                    .map(|r| colour(r.attribution, max))
                    .unwrap_or_default();
                let title = match &row {
                    Some(r) => format!(
                        "{:?} (id {}): {:+.4} of the logit {:.4}{}{}",
                        r.token,
                        r.id,
                        r.attribution,
                        d.logit,
                        r.contribution
                            .map(|(n, p)| format!("\n‖cᵢ‖ = {n:.4}, cᵢ·y/‖y‖ = {p:+.4}"))
                            .unwrap_or_default(),
                        fro.map(|f| format!(", ‖Jᵢ‖_F = {f:.4}"))
                            .unwrap_or_default()
                    ),
                    None => format!("{t:?}"),
                };
                view! {
                    <button
                        type="button"
                        class="strip-token"
                        class:selected=move || selected.get() == Some(i)
                        style=style
                        title=title
                        aria-pressed=move || (selected.get() == Some(i)).to_string()
                        data-index=i
                        data-token=t.clone()
                        data-attribution=row.as_ref().map(|r| format!("{:e}", r.attribution))
                        on:click=move |_| on_select.run(i)
                    >
                        {shown(t)}
                    </button>
                }
            })
            .collect_view();
        let detail = move || {
            let d = data.get()?;
            let i = selected.get()?;
            let t = d.tokens.get(i)?.clone();
            let row = d.rows.as_ref().and_then(|r| r.get(i).cloned());
            Some(view! {
                <p class="selected-detail" data-testid="selected-token">
                    {format!("Token {i}: {t:?}")}
                    {row.map(|r| format!(
                        " — adds {:+.4} to the logit of {:?} (of {:.4}){}",
                        r.attribution,
                        d.target_token,
                        d.logit,
                        r.contribution
                            .map(|(n, _)| format!("; ‖cᵢ‖ = {n:.4}"))
                            .unwrap_or_default()
                    ))}
                </p>
            })
        };
        let table = d.rows.as_ref().map(|rows| {
            let table_rows: Vec<Vec<String>> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    vec![
                        i.to_string(),
                        format!("{:?}", r.token),
                        format!("{:+.4}", r.attribution),
                        r.contribution
                            .map_or("…".to_string(), |(n, _)| format!("{n:.4}")),
                    ]
                })
                .collect();
            view! {
                <NumbersTable caption=format!("Each token's share of the logit of {:?} ({:.4})", d.target_token, d.logit)
                    head=vec!["position".into(), "token".into(), "share of the logit".into(), "‖cᵢ‖".into()]
                    rows=table_rows />
            }
        });
        let caption = if d.rows.is_some() {
            format!(
                "Each token's exact share of the logit of {:?} ({:.3}): blue raises it, orange lowers it.",
                d.target_token, d.logit
            )
        } else {
            "Computing each token's contribution…".to_string()
        };
        view! {
            <section class="card" data-testid="token-strip">
                <h2>{format!("Prompt tokens ({})", d.tokens.len())}</h2>
                <div class="strip" data-testid="tokens">{chips}</div>
                <p class="caption">{caption}</p>
                {detail}
                {table}
            </section>
        }
        .into_any()
    }
}
