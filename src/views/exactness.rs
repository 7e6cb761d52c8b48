//! Exactness: how well each linear reading reconstructs the model's output,
//! as big numbers: the detached Jacobian (exact), the ordinary one (not),
//! and the forward-mode contributions in f64 and f32; on the GPU, the
//! certificate of its `J` against f64 probes on the CPU.

use super::format::sci;
use crate::view_data::ExactnessData;
use lens_protocol::report::Certificate;
use leptos::prelude::*;

/// "GPU vs f64 certificate: 3 probes, max relative error … (on …, 0.8 s)".
fn certificate_row(c: Certificate) -> impl IntoView {
    let good = c.max_rel_error <= 1e-4;
    let device = if c.device.is_empty() {
        "the GPU".to_string()
    } else {
        c.device.clone()
    };
    view! {
        <p class="certificate" class:good=good data-testid="certificate"
            data-max-rel-error=format!("{:e}", c.max_rel_error)
            data-probes=c.probes.to_string()
            data-seed=c.seed.to_string()
            data-device=c.device.clone()
            title=format!(
                "{} random unit probes u (seed {}): max over u of ‖uᵀJ_gpu − uᵀJ_f64‖ / ‖uᵀJ_f64‖, \
                 uᵀJ_f64 by the f64 transpose pass on the CPU",
                c.probes, c.seed
            )>
            {format!(
                "GPU vs f64 certificate: {} probe{}, max relative error {} (on {device}, {:.1} s)",
                c.probes,
                if c.probes == 1 { "" } else { "s" },
                sci(c.max_rel_error),
                c.ms / 1000.0
            )}
        </p>
    }
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
                    {figure("recon-error-contributions", format!("contributions cᵢ ({})", d.precision), d.contributions, "forward mode, no J")}
                    {figure("recon-error-other-precision", format!("contributions cᵢ ({other})"), d.other_precision, "the other precision")}
                </div>
                {d.certificate.map(certificate_row)}
            </section>
        }
    }
}
