//! The prompt bar: the prompt (typing shows its prediction and shares after
//! a pause), precision, SVD mode, backend, Run, and the comparison's pin.
//! It reads the rooms' state from their contexts and asks the `Session`
//! (and `Typing`) for what it does.

use crate::compare::Compare;
use crate::jobs::Jobs;
use crate::loading::Model;
use crate::run_state::{run_precision, Results};
use crate::session::Session;
use crate::typing::Typing;
use crate::url_sync::Link;
use crate::views::backend::{BackendSelect, GpuPrecisionNote, PrecisionSelect};
use lens_protocol::{BackendChoice, Precision, SvdMode};
use leptos::prelude::*;

/// A finished run on screen that can be pinned as a comparison's side A.
pub(crate) fn can_pin(jobs: Jobs, model: Model) -> Signal<bool> {
    Signal::derive(move || {
        model.is_ready() && jobs.running.get().is_none() && jobs.results.with(Results::has_spectrum)
    })
}

#[component]
pub(crate) fn PromptBar() -> impl IntoView {
    let link = Link::get();
    let model = Model::get();
    let jobs = Jobs::get();
    let session = Session::get();
    let spec = link.spec;
    let on_webgpu = Signal::derive(move || spec.get().backend == BackendChoice::Webgpu);
    let precision = Signal::derive(move || run_precision(&spec.get()));
    let on_precision = Callback::new(move |p: Precision| spec.update(|s| s.precision = p));
    let choice = Signal::derive(move || spec.get().backend);
    let on_backend = Callback::new(move |b: BackendChoice| {
        spec.update(|s| s.backend = b);
        link.sync_url();
    });
    let compare = Compare::get();
    let pinned = Signal::derive(move || compare.pinned.with(Option::is_some));
    let can_pin = can_pin(jobs, model);
    let typing = Typing::get();
    view! {
        <form class="prompt-bar" on:submit=move |ev| { ev.prevent_default(); session.start_run(); }>
            <label for="prompt">"Prompt"</label>
            <div class="prompt-row">
                <input id="prompt" type="text" data-testid="prompt-input" autocomplete="off"
                    spellcheck="false" maxlength="4000"
                    prop:value=move || spec.get().prompt
                    on:input=move |ev| {
                        spec.update(|s| s.prompt = event_target_value(&ev));
                        typing.typed();
                    } />
                <PrecisionSelect precision=precision gpu=on_webgpu on_change=on_precision />
                <select data-testid="svd-select" aria-label="how the SVD is found"
                    prop:value=move || spec.get().svd.as_str()
                    on:change=move |ev| {
                        if let Some(m) = SvdMode::parse(&event_target_value(&ev)) {
                            spec.update(|s| s.svd = m);
                        }
                    }>
                    <option value="auto" selected=move || spec.get().svd == SvdMode::Auto>"SVD: auto"</option>
                    <option value="full" selected=move || spec.get().svd == SvdMode::Full>"SVD: full J"</option>
                    <option value="krylov" selected=move || spec.get().svd == SvdMode::Krylov>"SVD: matrix-free"</option>
                </select>
                <BackendSelect choice=choice on_change=on_backend />
                <button type="submit" data-testid="run-button"
                    disabled=move || !model.is_ready() || jobs.running.get().is_some()>
                    {move || match (jobs.running.get().is_some(), pinned.get()) {
                        (true, _) => "Computing…",
                        (false, true) => "Run B",
                        (false, false) => "Run",
                    }}
                </button>
                {move || if pinned.get() {
                    view! {
                        <button type="button" class="secondary" data-testid="compare-clear-bar"
                            title="Drop side A and show one analysis again"
                            on:click=move |_| session.clear_pin()>"Clear A"</button>
                    }.into_any()
                } else {
                    view! {
                        <button type="button" class="secondary" data-testid="compare-button"
                            title="Pin this analysis as A, then change the prompt or the model and run B"
                            disabled=move || !can_pin.get()
                            on:click=move |_| session.pin()>"Compare"</button>
                    }.into_any()
                }}
            </div>
            <GpuPrecisionNote gpu=on_webgpu />
        </form>
    }
}
