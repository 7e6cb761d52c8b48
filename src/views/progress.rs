//! The progress bar of whatever is running (a download or a stage), with
//! its cancel button. Present only while something runs.

use crate::run_state::ProgressInfo;
use leptos::prelude::*;

#[component]
pub fn ProgressView(info: Signal<Option<ProgressInfo>>, on_cancel: Callback<()>) -> impl IntoView {
    move || {
        let p = info.get()?;
        let pct = p.fraction.map(|f| (100.0 * f).clamp(0.0, 100.0));
        Some(view! {
            <div class="progress" data-testid="progress" role="progressbar"
                aria-label=p.label.clone()
                aria-valuemin="0" aria-valuemax="100"
                aria-valuenow=pct.map(|v| format!("{v:.1}"))>
                <div class="progress-head">
                    <span class="progress-label">{p.label.clone()}</span>
                    <button type="button" class="secondary" data-testid="cancel-button"
                        on:click=move |_| on_cancel.run(())>"Cancel"</button>
                </div>
                <div class="progress-track" class:indeterminate=pct.is_none()>
                    <div class="progress-fill" style=format!("width: {:.1}%", pct.unwrap_or(30.0))></div>
                </div>
                <div class="progress-detail">{p.detail.clone()}</div>
            </div>
        })
    }
}
