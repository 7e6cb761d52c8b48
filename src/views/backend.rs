//! Where the passes run: the backend choice beside the precision select
//! (WebGPU computes in f32, so it fixes the precision), the footer's engine
//! label from the worker's latest `Backend` reply, and the note when auto
//! fell back to the CPU.

use super::message::{MessageBox, Tone};
use crate::messages;
use crate::run_state::BackendInfo;
use crate::worker_client::EngineBuild;
use lens_protocol::{BackendChoice, Precision};
use leptos::prelude::*;

/// The backend choice select: auto (the worker decides), WebGPU (f32), CPU.
#[component]
pub fn BackendSelect(
    choice: Signal<BackendChoice>,
    on_change: Callback<BackendChoice>,
) -> impl IntoView {
    let option = move |b: BackendChoice, label: &'static str| {
        view! { <option value=b.as_str() selected=move || choice.get() == b>{label}</option> }
    };
    view! {
        <select data-testid="backend-select" aria-label="where the passes run"
            title="auto: WebGPU when this browser offers it, the CPU otherwise"
            prop:value=move || choice.get().as_str()
            on:change=move |ev| {
                if let Some(b) = BackendChoice::parse(&event_target_value(&ev)) {
                    on_change.run(b);
                }
            }>
            {option(BackendChoice::Auto, "Backend: auto")}
            {option(BackendChoice::Webgpu, "WebGPU (f32)")}
            {option(BackendChoice::Cpu, "CPU")}
        </select>
    }
}

/// The precision select; fixed at f32 (and disabled) when WebGPU is chosen.
#[component]
pub fn PrecisionSelect(
    /// The precision the run will use (f32 on WebGPU).
    precision: Signal<Precision>,
    /// WebGPU chosen: the GPU computes in f32, the select is disabled.
    gpu: Signal<bool>,
    on_change: Callback<Precision>,
) -> impl IntoView {
    view! {
        <select data-testid="precision-select" aria-label="precision"
            disabled=move || gpu.get()
            title=move || gpu.get().then_some("WebGPU computes in f32")
            prop:value=move || precision.get().name()
            on:change=move |ev| {
                if let Some(p) = Precision::parse(&event_target_value(&ev)) {
                    on_change.run(p);
                }
            }>
            <option value="f64" selected=move || precision.get() == Precision::F64>"f64 (exact)"</option>
            <option value="f32" selected=move || precision.get() == Precision::F32>"f32 (faster)"</option>
        </select>
    }
}

/// The line under the prompt when WebGPU is chosen.
#[component]
pub fn GpuPrecisionNote(gpu: Signal<bool>) -> impl IntoView {
    move || {
        gpu.get().then(|| {
            view! {
                <p class="explain" data-testid="backend-precision-note">
                    "WebGPU computes in f32 (the precision select is fixed at f32); a "
                    "certificate checks the GPU's J against f64 passes on the CPU."
                </p>
            }
        })
    }
}

/// Why auto fell back to the CPU, when it did.
#[component]
pub fn BackendFallback(info: Signal<BackendInfo>) -> impl IntoView {
    move || {
        info.get().fallback.map(|reason| {
            let m = messages::backend_fallback(&reason);
            view! { <MessageBox message=m tone=Tone::Notice testid="backend-fallback" /> }
        })
    }
}

/// The footer's engine: `WebGPU` or `CPU` (the label's exact text), the
/// adapter in `data-adapter`, the worker's build in `data-build` (`fma`
/// or `simd128`), a fallback reason in its title.
#[component]
pub fn EngineLabel(info: Signal<BackendInfo>) -> impl IntoView {
    let on_gpu = move || info.with(|i| i.device.is_gpu());
    let adapter = move || info.with(|i| i.adapter.clone().filter(|a| !a.is_empty()));
    view! {
        "Engine: "
        <span data-testid="backend-label"
            data-build=EngineBuild::get().as_str()
            data-adapter=move || info.with(|i| i.adapter.clone())
            title=move || info.with(|i| i.fallback.clone().map(|r| format!("WebGPU unavailable: {r}")))>
            {move || info.with(|i| i.device.label())}
        </span>
        {move || match (on_gpu(), adapter()) {
            (true, Some(a)) => format!(" (WebGPU compute shaders on {a}, in a Web Worker)"),
            (true, None) => " (WebGPU compute shaders, in a Web Worker)".to_string(),
            (false, _) => format!(" ({}, in a Web Worker)", EngineBuild::get().label()),
        }}
    }
}

/// The engine details of a run on the GPU: what forming J asked of the
/// device (dispatches, submits, passes, what was created, moved and waited
/// for), folded under the footer's engine label.
#[component]
pub fn GpuWorkDetails(rows: Signal<Option<Vec<(&'static str, String)>>>) -> impl IntoView {
    move || {
        rows.get().map(|rows| {
            view! {
                <details class="gpu-work" data-testid="gpu-work">
                    <summary>"GPU work for J"</summary>
                    <table>
                        <caption>"What forming J asked of the GPU"</caption>
                        <tbody>
                            {rows.into_iter().map(|(what, n)| view! {
                                <tr data-what=what><th scope="row">{what}</th><td>{n}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                </details>
            }
        })
    }
}
