//! Exactness: how well each linear reading reconstructs the model's output,
//! as big numbers: the detached Jacobian (exact), the ordinary one (not),
//! and the forward-mode contributions in f64 and f32.

use super::format::sci;
use leptos::prelude::*;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExactnessData {
    pub precision: &'static str,
    /// From the contributions `c_i` at the run's precision and the other one.
    pub contributions: Option<(f64, f64)>,
    pub detached: Option<f64>,
    pub ordinary: Option<f64>,
}

fn figure(
    testid: &'static str,
    label: String,
    value: Option<f64>,
    note: &'static str,
) -> impl IntoView {
    let good = value.is_some_and(|v| v < 1e-4);
    view! {
        <div class="figure" class:good=good data-testid=testid
            data-value=value.map(|v| format!("{v:e}"))>
            <div class="figure-label">{label}</div>
            <div class="figure-value">{value.map(sci).unwrap_or_else(|| "…".into())}</div>
            <div class="figure-note">{note}</div>
        </div>
    }
}

#[component]
pub fn ExactnessView(data: Signal<ExactnessData>) -> impl IntoView {
    move || {
        let d = data.get();
        let other = if d.precision == "f64" { "f32" } else { "f64" };
        view! {
            <section class="card" data-testid="view-exactness">
                <h2>"Exactness: ‖Σᵢ Jᵢ xᵢ − y‖ / ‖y‖"</h2>
                <p class="explain">
                    "Freeze the norms, gates and attention at their values for this prompt and the "
                    "network is linear in its input: the detached Jacobian rebuilds the output to "
                    "rounding error. The ordinary Jacobian (nothing frozen) does not."
                </p>
                <div class="figures">
                    {figure("recon-error-detached", format!("detached, full J ({})", d.precision), d.detached, "exact: rounding only")}
                    {figure("recon-error-ordinary", "ordinary Jacobian".into(), d.ordinary, "not a linear map of the input")}
                    {figure("recon-error-contributions", format!("contributions cᵢ ({})", d.precision), d.contributions.map(|c| c.0), "forward mode, no J")}
                    {figure("recon-error-other-precision", format!("contributions cᵢ ({other})"), d.contributions.map(|c| c.1), "the other precision")}
                </div>
            </section>
        }
    }
}
