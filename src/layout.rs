//! The page's layout: masthead, model picker, prompt bar, progress and
//! messages, the views (full page, classroom walkthrough, or one embedded
//! view), exports, share links, footer. Every part reads the rooms' state
//! it shows from their contexts (`Link`, `Model`, `Jobs`, `Pool`) and asks
//! the `Session` for what it does; the views in `views/` only draw.

use crate::browser;
use crate::classroom::{ClassroomBar, ClassroomNav, EmbeddingBars, STEPS};
use crate::compare::Compare;
use crate::export::ExportBar;
use crate::jobs::Jobs;
use crate::loading::Model;
use crate::messages::{self, Message};
use crate::pool::Pool;
use crate::prompt_bar::{can_pin, PromptBar};
use crate::run_state::{Results, APP_VERSION};
use crate::session::Session;
use crate::url_sync::{Link, LinkKind};
use crate::view_data::{compare_data, view_title};
use crate::views::attention::AttentionView;
use crate::views::backend::{BackendFallback, EngineLabel, GpuWorkDetails};
use crate::views::compare::CompareView;
use crate::views::decode::DecodeView;
use crate::views::exactness::ExactnessView;
use crate::views::heatmap::HeatmapView;
use crate::views::layers::LayersView;
use crate::views::message::{MessageBox, Tone};
use crate::views::model_picker::ModelPicker;
use crate::views::path::PathView;
use crate::views::prediction::PredictionView;
use crate::views::progress::ProgressView;
use crate::views::snapshot::{SnapshotCheck, SnapshotView};
use crate::views::spectrum::SpectrumView;
use crate::views::steering::SteeringView;
use crate::views::token_strip::TokenStrip;
use lens_protocol::spec::parse_layers;
use lens_protocol::{Snapshot, SteerSpec, View};
use leptos::prelude::*;
use leptos::task::spawn_local;

/// A run has a Report and the model is ready: on-demand stages may go.
fn analysed(jobs: Jobs, model: Model) -> Signal<bool> {
    Signal::derive(move || jobs.results.with(|r| r.report.is_some()) && model.is_ready())
}

/// A link of `kind` to the page's analysis (with its results' snapshot
/// and the loaded model's SHA-256).
fn link_to(kind: LinkKind, link: Link, jobs: Jobs, model: Model) -> String {
    let snapshot = || {
        jobs.results
            .with(|r| r.report.as_ref().map(|r| Snapshot::of(r).to_json()))
    };
    let compare = Compare::get();
    let snapshot_a = || {
        compare
            .pinned
            .with(|p| p.as_ref().map(|p| Snapshot::of(&p.side.report).to_json()))
    };
    link.link(kind, snapshot, snapshot_a, model.model_sha256.get())
}

/// One view by name: the page's slots, the embed mode and the classroom
/// steps all draw through this.
fn render(v: View) -> AnyView {
    let link = Link::get();
    let model = Model::get();
    let jobs = Jobs::get();
    let session = Session::get();
    let results = jobs.results;
    let spec = link.spec;
    let tokens = Signal::derive(move || results.with(Results::tokens));
    let num_layers = Signal::derive(move || model.num_layers.get());
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
                link.sync_url();
                session.inspect(i);
            });
            view! { <TokenStrip data=data selected=selected on_select=select /> }.into_any()
        }
        View::Spectrum => {
            let data = Signal::derive(move || {
                let selected = spec.get().token;
                results.with(|r| r.spectrum(selected))
            });
            view! { <SpectrumView data=data pending=jobs.busy() /> }.into_any()
        }
        View::Decode => {
            let decode = jobs.report_signal(|r| r.decode.clone());
            let matrix_free = jobs.report_signal(|r| r.matrix_free.as_ref().map(|_| true));
            let matrix_free = Signal::derive(move || matrix_free.get().unwrap_or(false));
            view! { <DecodeView decode=decode tokens=tokens matrix_free=matrix_free /> }.into_any()
        }
        View::Layers => {
            let rows = jobs.report_signal(|r| Some(r.layers.clone()));
            let rows = Signal::derive(move || rows.get().unwrap_or_default());
            let input = Signal::derive(move || link.layers_input.get());
            let on_input = Callback::new(move |text: String| link.layers_input.set(text));
            let on_compute = Callback::new(move |()| {
                let wanted = parse_layers(&link.layers_input.get_untracked());
                let max = model.num_layers.get_untracked();
                let bad: Vec<usize> = wanted.iter().copied().filter(|&l| l > max).collect();
                if wanted.is_empty() || !bad.is_empty() {
                    jobs.error.set(Some(messages::bad_layers(max, &bad)));
                    return;
                }
                jobs.error.set(None);
                spec.update(|s| s.layers = wanted);
                link.sync_url();
                session.compute_layers();
            });
            view! {
                <LayersView rows=rows num_layers=num_layers layers_input=input
                    on_layers_input=on_input on_compute=on_compute busy=jobs.busy() available=analysed(jobs, model) />
            }
            .into_any()
        }
        View::Path => {
            let points = jobs.report_signal(|r| Some(r.path.clone()));
            let points = Signal::derive(move || points.get().unwrap_or_default());
            view! { <PathView points=points /> }.into_any()
        }
        View::Attention => {
            let attention = jobs.report_signal(|r| r.attention.clone());
            let layer = Signal::derive(move || spec.get().attn_layer);
            let head = Signal::derive(move || spec.get().attn_head);
            let on_select = Callback::new(move |(l, h): (usize, usize)| {
                spec.update(|s| {
                    s.attn_layer = l;
                    s.attn_head = h;
                });
                link.sync_url();
            });
            view! {
                <AttentionView attention=attention tokens=tokens layer=layer head=head on_select=on_select />
            }
            .into_any()
        }
        View::Heatmap => {
            let data = Signal::derive(move || results.with(|r| r.inspect.clone()));
            let pending = Signal::derive(move || {
                results.with(|r| r.inspect.is_none()) && jobs.running.get().is_some()
            });
            view! { <HeatmapView data=data tokens=tokens pending=pending /> }.into_any()
        }
        View::Compare => {
            let compare = Compare::get();
            let data = Signal::derive(move || {
                let c = compare.comparison.get()?;
                let pinned = compare.pinned.get()?;
                results.with(|r| {
                    let b = r.report.as_ref()?;
                    Some(compare_data(
                        &c,
                        &pinned.side.report,
                        &pinned.side.prompt,
                        b,
                        &r.prompt,
                    ))
                })
            });
            let pinned = Signal::derive(move || {
                compare
                    .pinned
                    .with(|p| p.as_ref().map(|p| p.side.prompt.clone()))
            });
            let on_clear = Callback::new(move |()| session.clear_pin());
            let on_pin = Callback::new(move |()| session.pin());
            let on_pair = Callback::new(move |(a, b): (String, String)| session.compare_pair(a, b));
            let on_target = Callback::new(move |id: u32| session.retarget(id));
            let can_pin = can_pin(jobs, model);
            let snapshot_a = Signal::derive(move || {
                compare.snapshot_a.with(|s| {
                    s.as_ref().map(|(_, check)| match check {
                        SnapshotCheck::Pending => (
                            "pending",
                            "A's results from the link: being recomputed here…".to_string(),
                        ),
                        SnapshotCheck::Confirmed => (
                            "confirmed",
                            "✓ A recomputed on this device: the link's results agree.".to_string(),
                        ),
                        SnapshotCheck::Mismatch(d) => (
                            "mismatch",
                            format!(
                                "A's results in the link disagree with the recomputation: {}",
                                d.join("; ")
                            ),
                        ),
                    })
                })
            });
            view! {
                <CompareView data=data pinned=pinned can_pin=can_pin on_pin=on_pin on_pair=on_pair
                    on_clear=on_clear on_target=on_target snapshot_a=snapshot_a />
            }
            .into_any()
        }
        View::Steering => {
            let steer = Signal::derive(move || spec.get().steer);
            let on_change = Callback::new(move |st: SteerSpec| {
                spec.update(|s| s.steer = st);
                link.sync_url();
            });
            let on_run = Callback::new(move |()| {
                spec.update(|s| s.steer_run = true);
                link.sync_url();
                session.run_steering();
            });
            let result = jobs.report_signal(|r| r.steering.clone());
            // Steering folds into the run's Report: it follows a run.
            view! {
                <SteeringView spec=steer on_change=on_change on_run=on_run result=result
                    busy=jobs.busy() available=analysed(jobs, model) num_layers=num_layers />
            }
            .into_any()
        }
    }
}

fn slot(v: View) -> impl IntoView {
    let link = Link::get();
    view! {
        <div id=format!("view-{}", v.as_str()) class="view-slot"
            class:focused=move || link.spec.get().view == v>
            {render(v)}
        </div>
    }
}

/// The progress bar, the messages, the backend's fallback note and a
/// link's snapshot check.
#[component]
fn ProgressAndErrors() -> impl IntoView {
    let link = Link::get();
    let model = Model::get();
    let jobs = Jobs::get();
    let pool = Pool::get();
    let session = Session::get();
    let progress = Signal::derive(move || match jobs.running.get() {
        Some(r) => Some(r.progress(browser::now_ms())),
        None => model.model_state.get().progress(),
    });
    let cancel = Callback::new(move |()| session.cancel());
    let long_prompt = Signal::derive(move || jobs.results.with(|r| r.long_prompt.clone()));
    let backend = Signal::derive(move || jobs.backend.get());
    let snapshot = Signal::derive(move || link.snapshot.get());
    view! {
        <ProgressView info=progress on_cancel=cancel />
        {move || jobs.error.get().map(|m| view! {
            <MessageBox message=m tone=Tone::Error testid="error-message" />
        })}
        {move || long_prompt.get().map(|m| view! {
            <p class="notice" role="status" data-testid="long-prompt-notice">{m}</p>
        })}
        <BackendFallback info=backend />
        {move || pool.pool_note.get().map(|m| view! {
            <MessageBox message=m tone=Tone::Notice testid="pool-note" />
        })}
        {move || model.load_note.get().map(|m| view! {
            <MessageBox message=m tone=Tone::Notice testid="load-note" />
        })}
        {move || link.link_note.get().map(|m| view! {
            <MessageBox message=Message::from_text(&m) tone=Tone::Notice testid="link-note" />
        })}
        <SnapshotView data=snapshot />
    }
}

/// The classroom's first screen, all of it the lesson: one line of
/// controls (model, preset, run), a slim progress bar and any message, the
/// step bar, and the step's text beside its picture, sized to the screen
/// (a projector's 1280×720 shows it all without scrolling).
#[component]
fn Classroom(step: Memo<usize>) -> impl IntoView {
    let link = Link::get();
    let model = Model::get();
    let jobs = Jobs::get();
    let session = Session::get();
    let spec = link.spec;
    let step_sig = Signal::derive(move || step.get());
    let on_step = Callback::new(move |s: usize| link.classroom_step(s));
    let on_preset = Callback::new(move |p: String| {
        spec.update(|s| s.prompt = p);
        session.start_run();
    });
    let on_exit = Callback::new(move |()| {
        spec.update(|s| s.classroom = None);
        link.sync_url();
    });
    let on_pick = Callback::new(move |id: String| session.pick(id));
    let on_run = Callback::new(move |()| session.start_run());
    let can_run = Signal::derive(move || model.is_ready() && jobs.running.get().is_none());
    let status = Signal::derive(move || model.model_state.get().status());
    let current_model = Signal::derive(move || spec.get().model);
    let models = model.catalog.with_value(|c| {
        c.models
            .iter()
            .map(|m| (m.id.clone(), m.name.clone()))
            .collect::<Vec<_>>()
    });
    // The layer curves are computed on demand; the Layers step asks for
    // them (the default layers) so that its picture is there when shown.
    Effect::new(move |_| {
        let at_layers = STEPS[step.get()].view == Some(View::Layers);
        let missing = jobs
            .results
            .with(|r| r.report.as_ref().is_some_and(|x| x.layers.is_empty()));
        if at_layers
            && missing
            && analysed(jobs, model).get_untracked()
            && jobs.running.get_untracked().is_none()
        {
            if spec.with_untracked(|s| s.layers.is_empty()) {
                let wanted = parse_layers(&link.layers_input.get_untracked());
                spec.update(|s| s.layers = wanted);
            }
            session.compute_layers();
        }
    });
    let prompt = Signal::derive(move || spec.get().prompt);
    let embed_rows = Signal::derive(move || {
        jobs.results.with(|r| {
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
                    Some(v) => slot(v).into_any(),
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
    let link = Link::get();
    let focus = move |v: View| {
        link.spec.update(|s| s.view = v);
        link.sync_url();
        browser::scroll_to(&format!("view-{}", v.as_str()));
    };
    view! {
        <nav class="view-nav" aria-label="views">
            {View::ALL.into_iter().map(|v| view! {
                <button type="button" class="view-tab" data-testid=format!("view-tab-{}", v.as_str())
                    aria-current=move || (link.spec.get().view == v).then_some("true")
                    on:click=move |_| focus(v)>
                    {view_title(v)}
                </button>
            }).collect_view()}
        </nav>
        {slot(View::Tokens)}
        {slot(View::Compare)}
        <div class="grid2">
            {slot(View::Prediction)}
            {slot(View::Spectrum)}
        </div>
        {slot(View::Exactness)}
        {slot(View::Decode)}
        {slot(View::Layers)}
        <div class="grid2">
            {slot(View::Path)}
            {slot(View::Attention)}
        </div>
        {slot(View::Heatmap)}
        {slot(View::Steering)}
    }
}

/// Exports, share links and the copy button.
#[component]
fn ShareBar() -> impl IntoView {
    let link = Link::get();
    let model = Model::get();
    let jobs = Jobs::get();
    let on_export_error =
        Callback::new(move |e: String| jobs.error.set(Some(messages::export_failed(&e))));
    let view_in_focus = Signal::derive(move || link.spec.get().view);
    let (copied, set_copied) = signal(false);
    let compare = Compare::get();
    // The comparison as `linear-lens compare --json` writes it, and its CSV.
    let comparison = Callback::new(move |()| {
        let c = compare.comparison.get_untracked()?;
        let a = compare.pinned.get_untracked()?;
        jobs.results.with_untracked(|r| {
            let b = r.report.as_ref()?;
            let json = serde_json::json!({ "a": &a.side.report, "b": b, "comparison": &c });
            let d = compare_data(&c, &a.side.report, &a.side.prompt, b, &r.prompt);
            Some((
                serde_json::to_string_pretty(&json).unwrap_or_default(),
                crate::csv::comparison(&d),
            ))
        })
    });
    view! {
        <ExportBar results=jobs.results view=view_in_focus on_error=on_export_error comparison=comparison />
        <p class="share">
            <a data-testid="share-link" href=move || link_to(LinkKind::Analysis, link, jobs, model)>"Link to this analysis"</a>
            " · "
            <a data-testid="share-link-snapshot" href=move || link_to(LinkKind::Snapshot, link, jobs, model)>"Link with results"</a>
            " · "
            <a data-testid="embed-link" href=move || link_to(LinkKind::Embed, link, jobs, model)>"Embed this view"</a>
            " "
            <button type="button" class="secondary" data-testid="copy-link"
                on:click=move |_| {
                    let url = link_to(LinkKind::Snapshot, link, jobs, model);
                    spawn_local(async move {
                        set_copied.set(browser::copy_text(&url).await.is_ok());
                    });
                }>
                {move || if copied.get() { "Copied" } else { "Copy link with results" }}
            </button>
            <span class="timing">{move || jobs.results.with(|r| r.done_ms).map(|ms| format!(" · all stages in {:.1} s", ms / 1000.0))}</span>
        </p>
    }
}

/// An embed link: one view, nothing around it.
#[component]
fn Embedded(v: View) -> impl IntoView {
    let link = Link::get();
    let model = Model::get();
    let jobs = Jobs::get();
    view! {
        <div class="page embed" data-testid="embed" data-view=v.as_str()>
            <ProgressAndErrors />
            {slot(v)}
            <p class="embed-foot">
                <span data-testid="model-status" class="hint">{move || model.model_state.get().status()}</span>
                " · "
                <a href=move || link_to(LinkKind::FullPage, link, jobs, model) target="_blank" rel="noopener">"Linear Lens: open the full analysis"</a>
            </p>
        </div>
    }
}

/// The whole page, or for an embed link the one view. A link pasted into the
/// tab that changes only `embed=` switches the view without a new run.
#[component]
pub fn Layout() -> impl IntoView {
    let spec = Link::get().spec;
    let embed = Memo::new(move |_| spec.with(|s| s.embed));
    move || match embed.get() {
        Some(v) => view! { <Embedded v=v /> }.into_any(),
        None => view! { <FullPage /> }.into_any(),
    }
}

/// The whole page: picker, prompt, every view, the share bar, the footer.
#[component]
fn FullPage() -> impl IntoView {
    let link = Link::get();
    let model = Model::get();
    let jobs = Jobs::get();
    let pool = Pool::get();
    let session = Session::get();
    let spec = link.spec;
    let status = Signal::derive(move || model.model_state.get().status());
    let current_model = Signal::derive(move || spec.get().model);
    let on_pick = Callback::new(move |id: String| session.pick(id));
    let on_files = Callback::new(move |files: web_sys::FileList| session.pick_files(files));
    let on_clear = Callback::new(move |()| session.clear_stored_models());
    // Drag-and-drop of model files anywhere on the page.
    let on_drop = move |ev: web_sys::DragEvent| {
        ev.prevent_default();
        if let Some(files) = ev.data_transfer().and_then(|d| d.files()) {
            if files.length() > 0 {
                session.pick_files(files);
            }
        }
    };
    // Memos: the layout changes only when these do, not with every edit of
    // the analysis state (which would re-create the views and lose the
    // keyboard focus).
    let classroom_on = Memo::new(move |_| spec.get().classroom.is_some());
    let classroom_at = Memo::new(move |_| spec.get().classroom.unwrap_or(0).min(STEPS.len() - 1));
    let backend = Signal::derive(move || jobs.backend.get());
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
                aria-pressed="false" on:click=move |_| link.classroom_step(0)>
                "Classroom mode"
            </button>
        </header>
        <main>
            <ModelPicker catalog=model.catalog current=current_model status=status on_pick=on_pick
                on_files=on_files storage=model.storage.into() on_clear=on_clear />
            <PromptBar />
            <ProgressAndErrors />
            <AllViews />
            <ShareBar />
        </main>
            }.into_any()
        }}
        <footer>
            <EngineLabel info=backend />
            <GpuWorkDetails rows=Signal::derive(move || jobs.results.with(|r| r.gpu_work())) />
            {move || pool.pool_size.get().map(|p| view! {
                " · " <span
                    data-testid="engine-pool"
                    data-shares=move || pool.shares.get().all
                    data-helper-shares=move || pool.shares.get().by_helpers
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
