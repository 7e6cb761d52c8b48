//! The page's layout: masthead, model picker, prompt bar, progress and
//! messages, the views (full page, classroom walkthrough, or one embedded
//! view), exports, share links, footer. Every part reads the page state
//! from context ([`Page::get`]); the views in `views/` only draw.

use crate::browser;
use crate::classroom::{ClassroomBar, ClassroomNav, EmbeddingBars, STEPS};
use crate::export::ExportBar;
use crate::messages::{self, Message};
use crate::page::Page;
use crate::run_state::{run_precision, Results, APP_VERSION};
use crate::url_sync::LinkKind;
use crate::views::attention::AttentionView;
use crate::views::backend::{
    BackendFallback, BackendSelect, EngineLabel, GpuPrecisionNote, GpuWorkDetails, PrecisionSelect,
};
use crate::views::decode::DecodeView;
use crate::views::exactness::ExactnessView;
use crate::views::heatmap::HeatmapView;
use crate::views::layers::LayersView;
use crate::views::message::{MessageBox, Tone};
use crate::views::model_picker::ModelPicker;
use crate::views::path::PathView;
use crate::views::prediction::PredictionView;
use crate::views::progress::ProgressView;
use crate::views::snapshot::SnapshotView;
use crate::views::spectrum::SpectrumView;
use crate::views::steering::SteeringView;
use crate::views::token_strip::TokenStrip;
use lens_protocol::spec::parse_layers;
use lens_protocol::{BackendChoice, Precision, SteerSpec, SvdMode, View};
use leptos::prelude::*;
use leptos::task::spawn_local;

pub(crate) fn view_title(v: View) -> &'static str {
    match v {
        View::Prediction => "Next token",
        View::Exactness => "Exactness",
        View::Tokens => "Tokens",
        View::Spectrum => "Spectrum",
        View::Decode => "Decode",
        View::Layers => "Layers",
        View::Path => "Path",
        View::Attention => "Attention",
        View::Heatmap => "Heatmap",
        View::Steering => "Steering",
    }
}

impl Page {
    fn ready(&self) -> bool {
        matches!(
            self.model_state.get(),
            crate::run_state::ModelState::Ready { .. }
        )
    }

    /// A run or an on-demand job is in progress.
    fn busy(&self) -> Signal<bool> {
        let running = self.running;
        Signal::derive(move || running.get().is_some())
    }

    /// A run has a Report and the model is ready: on-demand stages may go.
    fn analysed(&self) -> Signal<bool> {
        let page = *self;
        Signal::derive(move || page.results.with(|r| r.report.is_some()) && page.ready())
    }

    /// A part of the Report, derived for a view's signal: `None` until a
    /// run has a Report and, where the part is optional, it has arrived.
    fn report_signal<T: Send + Sync + 'static>(
        &self,
        f: impl Fn(&lens_protocol::report::Report) -> Option<T> + Send + Sync + 'static,
    ) -> Signal<Option<T>> {
        let results = self.results;
        Signal::derive(move || results.with(|r| r.report.as_ref().and_then(&f)))
    }
}

/// One view by name: the page's slots, the embed mode and the classroom
/// steps all draw through this.
fn render(page: Page, v: View) -> AnyView {
    let results = page.results;
    let spec = page.spec;
    let tokens = Signal::derive(move || results.with(Results::tokens));
    let num_layers = Signal::derive(move || page.num_layers.get());
    match v {
        View::Prediction => {
            let data = Signal::derive(move || results.with(Results::prediction));
            view! { <PredictionView data=data /> }.into_any()
        }
        View::Exactness => {
            let data = Signal::derive(move || results.with(Results::exactness));
            view! { <ExactnessView data=data /> }.into_any()
        }
        View::Tokens => {
            let data = Signal::derive(move || results.with(Results::strip));
            let selected = Signal::derive(move || spec.get().token);
            let select = Callback::new(move |i: usize| {
                spec.update(|s| s.token = Some(i));
                page.sync_url();
                page.inspect(i);
            });
            view! { <TokenStrip data=data selected=selected on_select=select /> }.into_any()
        }
        View::Spectrum => {
            let data = Signal::derive(move || {
                let selected = spec.get().token;
                results.with(|r| r.spectrum(selected))
            });
            view! { <SpectrumView data=data pending=page.busy() /> }.into_any()
        }
        View::Decode => {
            let decode = page.report_signal(|r| r.decode.clone());
            let matrix_free = page.report_signal(|r| r.matrix_free.as_ref().map(|_| true));
            let matrix_free = Signal::derive(move || matrix_free.get().unwrap_or(false));
            view! { <DecodeView decode=decode tokens=tokens matrix_free=matrix_free /> }.into_any()
        }
        View::Layers => {
            let rows = page.report_signal(|r| Some(r.layers.clone()));
            let rows = Signal::derive(move || rows.get().unwrap_or_default());
            let input = Signal::derive(move || page.layers_input.get());
            let on_input = Callback::new(move |text: String| page.layers_input.set(text));
            let on_compute = Callback::new(move |()| {
                let wanted = parse_layers(&page.layers_input.get_untracked());
                let max = page.num_layers.get_untracked();
                let bad: Vec<usize> = wanted.iter().copied().filter(|&l| l > max).collect();
                if wanted.is_empty() || !bad.is_empty() {
                    page.error.set(Some(messages::bad_layers(max, &bad)));
                    return;
                }
                page.error.set(None);
                spec.update(|s| s.layers = wanted);
                page.sync_url();
                page.compute_layers();
            });
            view! {
                <LayersView rows=rows num_layers=num_layers layers_input=input
                    on_layers_input=on_input on_compute=on_compute busy=page.busy() available=page.analysed() />
            }
            .into_any()
        }
        View::Path => {
            let points = page.report_signal(|r| Some(r.path.clone()));
            let points = Signal::derive(move || points.get().unwrap_or_default());
            view! { <PathView points=points /> }.into_any()
        }
        View::Attention => {
            let attention = page.report_signal(|r| r.attention.clone());
            let layer = Signal::derive(move || spec.get().attn_layer);
            let head = Signal::derive(move || spec.get().attn_head);
            let on_select = Callback::new(move |(l, h): (usize, usize)| {
                spec.update(|s| {
                    s.attn_layer = l;
                    s.attn_head = h;
                });
                page.sync_url();
            });
            view! {
                <AttentionView attention=attention tokens=tokens layer=layer head=head on_select=on_select />
            }
            .into_any()
        }
        View::Heatmap => {
            let data = Signal::derive(move || results.with(|r| r.inspect.clone()));
            let pending = Signal::derive(move || {
                results.with(|r| r.inspect.is_none()) && page.running.get().is_some()
            });
            view! { <HeatmapView data=data tokens=tokens pending=pending /> }.into_any()
        }
        View::Steering => {
            let steer = Signal::derive(move || spec.get().steer);
            let on_change = Callback::new(move |st: SteerSpec| {
                spec.update(|s| s.steer = st);
                page.sync_url();
            });
            let on_run = Callback::new(move |()| {
                spec.update(|s| s.steer_run = true);
                page.sync_url();
                page.run_steering();
            });
            let result = page.report_signal(|r| r.steering.clone());
            // Steering folds into the run's Report: it follows a run.
            view! {
                <SteeringView spec=steer on_change=on_change on_run=on_run result=result
                    busy=page.busy() available=page.analysed() num_layers=num_layers />
            }
            .into_any()
        }
    }
}

fn slot(page: Page, v: View) -> impl IntoView {
    view! {
        <div id=format!("view-{}", v.as_str()) class="view-slot"
            class:focused=move || page.spec.get().view == v>
            {render(page, v)}
        </div>
    }
}

/// The progress bar, the messages, the backend's fallback note and a
/// link's snapshot check.
#[component]
fn ProgressAndErrors() -> impl IntoView {
    let page = Page::get();
    let progress = Signal::derive(move || match page.running.get() {
        Some(r) => Some(r.progress(browser::now_ms())),
        None => page.model_state.get().progress(),
    });
    let cancel = Callback::new(move |()| page.cancel());
    let long_prompt = Signal::derive(move || page.results.with(|r| r.long_prompt.clone()));
    let backend = Signal::derive(move || page.backend.get());
    let snapshot = Signal::derive(move || page.snapshot.get());
    view! {
        <ProgressView info=progress on_cancel=cancel />
        {move || page.error.get().map(|m| view! {
            <MessageBox message=m tone=Tone::Error testid="error-message" />
        })}
        {move || long_prompt.get().map(|m| view! {
            <p class="notice" role="status" data-testid="long-prompt-notice">{m}</p>
        })}
        <BackendFallback info=backend />
        {move || page.pool_note.get().map(|m| view! {
            <MessageBox message=m tone=Tone::Notice testid="pool-note" />
        })}
        {move || page.load_note.get().map(|m| view! {
            <MessageBox message=m tone=Tone::Notice testid="load-note" />
        })}
        {move || page.link_note.get().map(|m| view! {
            <MessageBox message=Message::from_text(&m) tone=Tone::Notice testid="link-note" />
        })}
        <SnapshotView data=snapshot />
    }
}

#[component]
fn PromptBar() -> impl IntoView {
    let page = Page::get();
    let spec = page.spec;
    let on_webgpu = Signal::derive(move || spec.get().backend == BackendChoice::Webgpu);
    let precision = Signal::derive(move || run_precision(&spec.get()));
    let on_precision = Callback::new(move |p: Precision| spec.update(|s| s.precision = p));
    let choice = Signal::derive(move || spec.get().backend);
    let on_backend = Callback::new(move |b: BackendChoice| {
        spec.update(|s| s.backend = b);
        page.sync_url();
    });
    view! {
        <form class="prompt-bar" on:submit=move |ev| { ev.prevent_default(); page.start_run(); }>
            <label for="prompt">"Prompt"</label>
            <div class="prompt-row">
                <input id="prompt" type="text" data-testid="prompt-input" autocomplete="off"
                    spellcheck="false" maxlength="4000"
                    prop:value=move || spec.get().prompt
                    on:input=move |ev| spec.update(|s| s.prompt = event_target_value(&ev)) />
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
                    disabled=move || !page.ready() || page.running.get().is_some()>
                    {move || if page.running.get().is_some() { "Computing…" } else { "Run" }}
                </button>
            </div>
            <GpuPrecisionNote gpu=on_webgpu />
        </form>
    }
}

/// The classroom's first screen, all of it the lesson: one line of
/// controls (model, preset, run), a slim progress bar and any message, the
/// step bar, and the step's text beside its picture, sized to the screen
/// (a projector's 1280×720 shows it all without scrolling).
#[component]
fn Classroom(step: Memo<usize>) -> impl IntoView {
    let page = Page::get();
    let spec = page.spec;
    let step_sig = Signal::derive(move || step.get());
    let on_step = Callback::new(move |s: usize| page.classroom_step(s));
    let on_preset = Callback::new(move |p: String| {
        spec.update(|s| s.prompt = p);
        page.start_run();
    });
    let on_exit = Callback::new(move |()| {
        spec.update(|s| s.classroom = None);
        page.sync_url();
    });
    let on_pick = Callback::new(move |id: String| page.pick(id));
    let on_run = Callback::new(move |()| page.start_run());
    let can_run = Signal::derive(move || page.ready() && page.running.get().is_none());
    let status = Signal::derive(move || page.model_state.get().status());
    let current_model = Signal::derive(move || spec.get().model);
    let models = page.catalog.with_value(|c| {
        c.models
            .iter()
            .map(|m| (m.id.clone(), m.name.clone()))
            .collect::<Vec<_>>()
    });
    // The layer curves are computed on demand; the Layers step asks for
    // them (the default layers) so that its picture is there when shown.
    Effect::new(move |_| {
        let at_layers = STEPS[step.get()].view == Some(View::Layers);
        let missing = page
            .results
            .with(|r| r.report.as_ref().is_some_and(|x| x.layers.is_empty()));
        if at_layers
            && missing
            && page.analysed().get_untracked()
            && page.running.get_untracked().is_none()
        {
            if spec.with_untracked(|s| s.layers.is_empty()) {
                let wanted = parse_layers(&page.layers_input.get_untracked());
                spec.update(|s| s.layers = wanted);
            }
            page.compute_layers();
        }
    });
    let prompt = Signal::derive(move || spec.get().prompt);
    let embed_rows = Signal::derive(move || {
        page.results.with(|r| {
            r.report
                .as_ref()
                .filter(|r| !r.per_token.is_empty())
                .map(|r| r.per_token.clone())
        })
    });
    view! {
        <div class="classroom-screen">
            <ClassroomBar models=models current=current_model on_pick=on_pick prompt=prompt
                on_preset=on_preset on_run=on_run can_run=can_run status=status on_exit=on_exit />
            <ProgressAndErrors />
            <div class="classroom-layout">
            <ClassroomNav step=step_sig on_step=on_step />
            <div class="classroom-picture" data-testid="classroom-picture">
                {move || match STEPS[step.get()].view {
                    Some(v) => slot(page, v).into_any(),
                    None => view! { <div id="view-embed" class="view-slot"><EmbeddingBars rows=embed_rows /></div> }.into_any(),
                }}
            </div>
            </div>
        </div>
    }
}

/// Every view, in the full page's order, with the view bar above.
#[component]
fn AllViews() -> impl IntoView {
    let page = Page::get();
    let focus = move |v: View| {
        page.spec.update(|s| s.view = v);
        page.sync_url();
        browser::scroll_to(&format!("view-{}", v.as_str()));
    };
    view! {
        <nav class="view-nav" aria-label="views">
            {View::ALL.into_iter().map(|v| view! {
                <button type="button" class="view-tab" data-testid=format!("view-tab-{}", v.as_str())
                    aria-current=move || (page.spec.get().view == v).then_some("true")
                    on:click=move |_| focus(v)>
                    {view_title(v)}
                </button>
            }).collect_view()}
        </nav>
        {slot(page, View::Tokens)}
        <div class="grid2">
            {slot(page, View::Prediction)}
            {slot(page, View::Spectrum)}
        </div>
        {slot(page, View::Exactness)}
        {slot(page, View::Decode)}
        {slot(page, View::Layers)}
        <div class="grid2">
            {slot(page, View::Path)}
            {slot(page, View::Attention)}
        </div>
        {slot(page, View::Heatmap)}
        {slot(page, View::Steering)}
    }
}

/// Exports, share links and the copy button.
#[component]
fn ShareBar() -> impl IntoView {
    let page = Page::get();
    let on_export_error =
        Callback::new(move |e: String| page.error.set(Some(messages::export_failed(&e))));
    let view_in_focus = Signal::derive(move || page.spec.get().view);
    let (copied, set_copied) = signal(false);
    view! {
        <ExportBar results=page.results view=view_in_focus on_error=on_export_error />
        <p class="share">
            <a data-testid="share-link" href=move || page.link(LinkKind::Analysis)>"Link to this analysis"</a>
            " · "
            <a data-testid="share-link-snapshot" href=move || page.link(LinkKind::Snapshot)>"Link with results"</a>
            " · "
            <a data-testid="embed-link" href=move || page.link(LinkKind::Embed)>"Embed this view"</a>
            " "
            <button type="button" class="secondary" data-testid="copy-link"
                on:click=move |_| {
                    let url = page.link(LinkKind::Snapshot);
                    spawn_local(async move {
                        set_copied.set(browser::copy_text(&url).await.is_ok());
                    });
                }>
                {move || if copied.get() { "Copied" } else { "Copy link with results" }}
            </button>
            <span class="timing">{move || page.results.with(|r| r.done_ms).map(|ms| format!(" · all stages in {:.1} s", ms / 1000.0))}</span>
        </p>
    }
}

/// An embed link: one view, nothing around it.
#[component]
fn Embedded(v: View) -> impl IntoView {
    let page = Page::get();
    view! {
        <div class="page embed" data-testid="embed" data-view=v.as_str()>
            <ProgressAndErrors />
            {slot(page, v)}
            <p class="embed-foot">
                <span data-testid="model-status" class="hint">{move || page.model_state.get().status()}</span>
                " · "
                <a href=move || page.link(LinkKind::FullPage) target="_blank" rel="noopener">"Linear Lens: open the full analysis"</a>
            </p>
        </div>
    }
}

/// The whole page (or, for an embed link, the one view).
#[component]
pub fn Layout() -> impl IntoView {
    let page = Page::get();
    if let Some(v) = page.spec.get_untracked().embed {
        return view! { <Embedded v=v /> }.into_any();
    }
    let spec = page.spec;
    let status = Signal::derive(move || page.model_state.get().status());
    let current_model = Signal::derive(move || spec.get().model);
    let on_pick = Callback::new(move |id: String| page.pick(id));
    let on_files = Callback::new(move |files: web_sys::FileList| page.pick_files(files));
    let on_clear = Callback::new(move |()| page.clear_stored_models());
    // Drag-and-drop of model files anywhere on the page.
    let on_drop = move |ev: web_sys::DragEvent| {
        ev.prevent_default();
        if let Some(files) = ev.data_transfer().and_then(|d| d.files()) {
            if files.length() > 0 {
                page.pick_files(files);
            }
        }
    };
    // Memos: the layout changes only when these do, not with every edit of
    // the analysis state (which would re-create the views and lose the
    // keyboard focus).
    let classroom_on = Memo::new(move |_| spec.get().classroom.is_some());
    let classroom_at = Memo::new(move |_| spec.get().classroom.unwrap_or(0).min(STEPS.len() - 1));
    let backend = Signal::derive(move || page.backend.get());
    view! {
        <div class="page" class:classroom=move || classroom_on.get()
            on:dragover=move |ev: web_sys::DragEvent| ev.prevent_default() on:drop=on_drop>
        {move || if classroom_on.get() {
            view! { <main class="classroom-main"><Classroom step=classroom_at /><ShareBar /></main> }.into_any()
        } else {
            view! {
        <header class="masthead">
            <h1>"Linear Lens"</h1>
            <p class="tagline">
                "The exact linear map a language model applies to your prompt — computed in your browser."
            </p>
            <button type="button" class="secondary classroom-toggle" data-testid="classroom-toggle"
                aria-pressed="false" on:click=move |_| page.classroom_step(0)>
                "Classroom mode"
            </button>
        </header>
        <main>
            <ModelPicker catalog=page.catalog current=current_model status=status on_pick=on_pick
                on_files=on_files storage=page.storage.into() on_clear=on_clear />
            <PromptBar />
            <ProgressAndErrors />
            <AllViews />
            <ShareBar />
        </main>
            }.into_any()
        }}
        <footer>
            <EngineLabel info=backend />
            <GpuWorkDetails rows=Signal::derive(move || page.results.with(|r| r.gpu_work())) />
            {move || page.pool_size.get().map(|p| view! {
                " · " <span
                    data-testid="engine-pool"
                    data-shares=move || page.shares.get().all
                    data-helper-shares=move || page.shares.get().by_helpers
                >{p.describe()}</span>
            })}
            " · Linear Lens " <span data-testid="app-version">{APP_VERSION}</span>
            " · nothing leaves this device · J. R. Golden, "
            <a href="https://arxiv.org/abs/2505.24293">"Equivalent Linear Mappings of Large Language Models"</a>
            " (TMLR 2025)"
        </footer>
        </div>
    }
    .into_any()
}
