//! The results a share link carried, shown at once while the model loads,
//! marked as the link's, then confirmed or flagged against the page's own
//! recomputation. Every value is shown as text.

use super::format::{sci, shown};
use lens_protocol::Snapshot;
use leptos::prelude::*;

/// Where the check of a link's snapshot stands.
#[derive(Clone, Debug, PartialEq)]
pub enum SnapshotCheck {
    /// Not recomputed yet.
    Pending,
    Confirmed,
    /// What disagrees, one line each.
    Mismatch(Vec<String>),
}

#[component]
pub fn SnapshotView(data: Signal<Option<(Snapshot, SnapshotCheck)>>) -> impl IntoView {
    move || {
        let (s, check) = data.get()?;
        if check == SnapshotCheck::Confirmed {
            // Agreed: the views below show the same values; one line is enough.
            return Some(
                view! {
                    <p class="notice snapshot-ok" data-testid="snapshot" data-state="confirmed" role="status">
                        "✓ Recomputed on this device: the link's results agree."
                    </p>
                }
                .into_any(),
            );
        }
        let (state, banner) = match &check {
            SnapshotCheck::Pending => (
                "pending",
                "These results come from the link, not yet from this device: the model is \
                 loading and the page is recomputing them."
                    .to_string(),
            ),
            SnapshotCheck::Confirmed => (
                "confirmed",
                "Recomputed on this device: the link's results agree.".to_string(),
            ),
            SnapshotCheck::Mismatch(d) => (
                "mismatch",
                format!(
                    "The link's results disagree with the recomputation on this device ({} \
                     values): the link may have been edited. The views below show the \
                     recomputed values.",
                    d.len()
                ),
            ),
        };
        let lines = match check {
            SnapshotCheck::Mismatch(d) => d,
            _ => Vec::new(),
        };
        let words = s
            .words
            .iter()
            .enumerate()
            .map(|(k, w)| {
                view! {
                    <li>{format!("u{}: ", k + 1)}
                        {w.iter().map(|t| view! { <span class="tok">{shown(t)}</span>" " }).collect_view()}
                    </li>
                }
            })
            .collect_view();
        Some(view! {
            <section class=format!("card snapshot snapshot-{state}") data-testid="snapshot"
                data-state=state role="status">
                <h2>"From the link"</h2>
                <p class="snapshot-banner" data-testid="snapshot-status" data-state=state>{banner}</p>
                <ul class="snapshot-diff" data-testid="snapshot-diff">
                    {lines.into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}
                </ul>
                <dl class="snapshot-values">
                    <dt>"next token"</dt>
                    <dd data-testid="snapshot-top" data-value=s.top.clone()>{shown(&s.top)}</dd>
                    <dt>"detached error"</dt>
                    <dd data-testid="snapshot-detached">{s.detached.map(sci).unwrap_or_else(|| "—".into())}</dd>
                    <dt>"ordinary error"</dt>
                    <dd>{s.ordinary.map(sci).unwrap_or_else(|| "—".into())}</dd>
                    <dt>"stable rank"</dt>
                    <dd>{s.stable_rank.map(|v| format!("{v:.3}")).unwrap_or_else(|| "—".into())}</dd>
                    <dt>"top σ"</dt>
                    <dd data-testid="snapshot-sigma"
                        data-values=serde_json::to_string(&s.sigma).unwrap_or_default()>
                        {s.sigma.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(", ")}
                    </dd>
                </dl>
                <ul class="snapshot-words">{words}</ul>
            </section>
        }
        .into_any())
    }
}
