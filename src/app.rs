//! Page layout and state: the model in use, the run's stages as they
//! arrive from the engine worker, the URL fragment ⇄ analysis state.

use crate::browser;
use crate::run_state::{ModelState, Results, Running};
use crate::views::exactness::{ExactnessData, ExactnessView};
use crate::views::format::mb;
use crate::views::model_picker::ModelPicker;
use crate::views::prediction::{PredictionData, PredictionView};
use crate::views::progress::ProgressView;
use crate::views::spectrum::{SpectrumData, SpectrumView};
use crate::views::token_strip::{StripData, TokenStrip};
use crate::worker_client::Engine;
use js_sys::Array;
use lens_protocol::catalog::{HF_BASE, MODEL_CACHE};
use lens_protocol::messages::RunRequest;
use lens_protocol::{AnalysisSpec, Catalog, ErrorKind, Precision, Reply, Request, Stage, View};
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

const CATALOG_JSON: &str = include_str!("../web/models.json");
const DEFAULT_PROMPT: &str = "The bridge out of Marin is the";
const TOP_K: usize = 10;

/// What is loaded into the worker, to reload it after a restart.
#[derive(Clone)]
enum Loadable {
    Remote(String),
    Files(Array),
}

fn view_title(v: View) -> &'static str {
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

#[component]
pub fn App() -> impl IntoView {
    let catalog = match Catalog::parse(CATALOG_JSON) {
        Ok(c) => c,
        Err(e) => return view! { <p class="error">{e}</p> }.into_any(),
    };
    let hf_base =
        StoredValue::new(browser::query_param("hf_base").unwrap_or_else(|| HF_BASE.to_string()));
    let defaults = AnalysisSpec::new(&catalog.default, DEFAULT_PROMPT);
    let from_link = AnalysisSpec::from_fragment(&browser::fragment(), &defaults);
    let linked = from_link.is_some();
    let spec = RwSignal::new(from_link.unwrap_or(defaults));
    let catalog = StoredValue::new(catalog);

    let model_state = RwSignal::new(ModelState::Starting);
    let running = RwSignal::new(None::<Running>);
    let results = RwSignal::new(Results::default());
    let error = RwSignal::new(None::<String>);
    let storage = RwSignal::new(None::<(f64, f64)>);
    let job = StoredValue::new(0u32);
    // Run once the model is ready (a share link, or a run asked for early).
    let run_when_ready = StoredValue::new(linked);
    let loaded: StoredValue<Option<Loadable>, LocalStorage> = StoredValue::new_local(None);
    let engine: StoredValue<Option<Rc<Engine>>, LocalStorage> = StoredValue::new_local(None);

    let refresh_storage = move || {
        spawn_local(async move { storage.set(browser::storage_estimate().await) });
    };

    let post = move |req: Request| {
        if let Some(e) = engine.get_value() {
            e.post(&req);
        }
    };

    let start_run = move || {
        if running.get_untracked().is_some() {
            // A new analysis (a link pasted into this tab) while one runs: the
            // busy worker is replaced, and the run starts once it is ready.
            running.set(None);
            run_when_ready.set_value(true);
            model_state.set(ModelState::Starting);
            if let Some(e) = engine.get_value() {
                e.spawn();
            }
            return;
        }
        if !matches!(model_state.get_untracked(), ModelState::Ready { .. }) {
            run_when_ready.set_value(true);
            return;
        }
        let s = spec.get_untracked();
        let id = job.get_value() + 1;
        job.set_value(id);
        error.set(None);
        results.set(Results {
            precision: s.precision,
            ..Results::default()
        });
        running.set(Some(Running {
            job: id,
            stage: Stage::Predict,
            done: 0,
            total: 1,
            started: browser::now_ms(),
        }));
        browser::set_fragment(&s.to_fragment());
        post(Request::Run(RunRequest {
            job: id,
            prompt: s.prompt,
            precision: s.precision,
            top: TOP_K,
            full: true,
            svd: s.svd,
        }));
    };

    let load_current = move || {
        let Some(what) = loaded.get_value() else {
            model_state.set(ModelState::Idle);
            return;
        };
        let Some(e) = engine.get_value() else { return };
        model_state.set(ModelState::Downloading {
            received: 0,
            total: None,
            rate: 0.0,
            file: String::new(),
            from_cache: false,
        });
        match what {
            Loadable::Remote(id) => {
                let resolved = catalog.with_value(|c| c.resolve(&id, &hf_base.get_value()));
                match resolved {
                    Ok(model) => e.post(&Request::Load { model }),
                    Err(msg) => {
                        error.set(Some(msg));
                        model_state.set(ModelState::Failed);
                    }
                }
            }
            Loadable::Files(files) => {
                let id = spec.get_untracked().model;
                e.post_files(&Request::LoadFiles { id }, &files);
            }
        }
    };

    let on_reply =
        Rc::new(move |r: Reply| {
            let current = job.get_value();
            let mine = |j: u32| j == current && running.get_untracked().is_some();
            match r {
                Reply::Started => load_current(),
                Reply::Download {
                    received,
                    total,
                    bytes_per_s,
                    file,
                    from_cache,
                } => model_state.set(ModelState::Downloading {
                    received,
                    total,
                    rate: bytes_per_s,
                    file,
                    from_cache,
                }),
                Reply::Progress { job: None, .. } => model_state.set(ModelState::Parsing),
                Reply::Progress {
                    job: Some(j),
                    stage,
                    done,
                    total,
                } if mine(j) => running.update(|r| {
                    if let Some(r) = r {
                        r.stage = stage;
                        r.done = done;
                        r.total = total;
                    }
                }),
                Reply::ModelReady {
                    name,
                    arch,
                    layers,
                    hidden,
                    vocab,
                    bytes,
                    from_cache,
                    load_ms,
                    ..
                } => {
                    model_state.set(ModelState::Ready {
                        name,
                        detail: format!(
                        "{arch}, {layers} layers, d = {hidden}, {vocab} tokens; {} {} in {:.1} s",
                        mb(bytes as f64),
                        if from_cache { "read from this device's cache" } else { "downloaded" },
                        load_ms / 1000.0
                    ),
                    });
                    refresh_storage();
                    if run_when_ready.get_value() {
                        run_when_ready.set_value(false);
                        start_run();
                    }
                }
                Reply::Prediction {
                    job: j,
                    tokens,
                    top,
                    ms,
                    ..
                } if mine(j) => results.update(|res| {
                    res.tokens = tokens.clone();
                    res.prediction = Some(PredictionData { tokens, top, ms });
                }),
                Reply::Contributions {
                    job: j,
                    target_token,
                    logit,
                    per_token,
                    rel_error,
                    other_precision_rel_error,
                    ..
                } if mine(j) => results.update(|res| {
                    res.rows = Some(per_token);
                    res.target_token = target_token;
                    res.logit = logit;
                    res.contributions = Some((rel_error, other_precision_rel_error));
                }),
                Reply::Jacobian {
                    job: j,
                    detached_rel_error,
                    fro_norms,
                    ..
                } if mine(j) => results.update(|res| {
                    res.detached = Some(detached_rel_error);
                    res.fro_norms = Some(fro_norms);
                }),
                Reply::Spectrum {
                    job: j,
                    singular_values,
                    stable_rank,
                    fro_norm,
                    ms,
                } if mine(j) => results.update(|res| {
                    res.spectrum = Some(SpectrumData {
                        singular_values,
                        stable_rank,
                        fro_norm,
                        ms,
                    })
                }),
                Reply::Ordinary {
                    job: j,
                    ordinary_rel_error,
                    ..
                } if mine(j) => results.update(|res| res.ordinary = Some(ordinary_rel_error)),
                Reply::Done { job: j, ms } if mine(j) => {
                    results.update(|res| res.done_ms = Some(ms));
                    running.set(None);
                    let v = spec.get_untracked().view;
                    if v != View::Prediction {
                        browser::scroll_to(&format!("view-{}", v.as_str()));
                    }
                }
                Reply::Failed {
                    job: j,
                    kind,
                    message,
                } => {
                    match j {
                        Some(j) if j == current => running.set(None),
                        Some(_) => return,
                        None if kind == ErrorKind::Quota => {}
                        None => model_state.set(ModelState::Failed),
                    }
                    error.set(Some(message));
                }
                _ => {}
            }
        });
    let on_crash = Rc::new(move |msg: String| {
        let was_running = running.get_untracked().is_some();
        running.set(None);
        error.set(Some(format!(
            "The engine stopped{}: {msg}. It has been restarted and the model is loading again.",
            if was_running {
                " while computing (most likely out of memory: try a shorter prompt or f32)"
            } else {
                ""
            }
        )));
        if let Some(e) = engine.get_value() {
            e.spawn();
        }
    });
    loaded.set_value(Some(Loadable::Remote(spec.get_untracked().model)));
    engine.set_value(Some(Engine::new(on_reply, on_crash)));

    let cancel = Callback::new(move |()| {
        let was_running = running.get_untracked().is_some();
        running.set(None);
        run_when_ready.set_value(false);
        if !was_running {
            // A download: drop it and wait for the user's next choice.
            loaded.set_value(None);
        }
        error.set(Some(if was_running {
            "Cancelled. The engine was stopped; the model is reloading from this device's cache."
                .into()
        } else {
            "Download cancelled. Pick a model to load it again.".into()
        }));
        if let Some(e) = engine.get_value() {
            e.spawn();
        }
    });

    let pick = Callback::new(move |id: String| {
        let resolved = catalog.with_value(|c| c.resolve(&id, &hf_base.get_value()));
        let id = match resolved {
            Ok(r) => r.id,
            Err(msg) => return error.set(Some(msg)),
        };
        error.set(None);
        spec.update(|s| {
            s.model = id.clone();
            s.token = None;
        });
        results.set(Results::default());
        running.set(None);
        // A model picked by hand: a link's pending run is not for it.
        run_when_ready.set_value(false);
        loaded.set_value(Some(Loadable::Remote(id)));
        browser::set_fragment(&spec.get_untracked().to_fragment());
        // A fresh worker: whatever the old one was doing stops.
        if let Some(e) = engine.get_value() {
            e.spawn();
        }
    });
    let pick_files = Callback::new(move |files: web_sys::FileList| {
        let arr = Array::new();
        let mut names = Vec::new();
        for i in 0..files.length() {
            if let Some(f) = files.get(i) {
                names.push(f.name());
                arr.push(&f);
            }
        }
        error.set(None);
        spec.update(|s| {
            s.model = format!("file:{}", names.join(","));
            s.token = None;
        });
        results.set(Results::default());
        running.set(None);
        run_when_ready.set_value(false);
        loaded.set_value(Some(Loadable::Files(arr)));
        if let Some(e) = engine.get_value() {
            e.spawn();
        }
    });
    let clear = Callback::new(move |()| {
        spawn_local(async move {
            if let Err(e) = browser::clear_model_cache(MODEL_CACHE).await {
                error.set(Some(format!("could not clear the stored models: {e}")));
            }
            storage.set(browser::storage_estimate().await);
        });
    });

    // Drag-and-drop of model files anywhere on the page.
    let on_drop = move |ev: web_sys::DragEvent| {
        ev.prevent_default();
        if let Some(files) = ev.data_transfer().and_then(|d| d.files()) {
            if files.length() > 0 {
                pick_files.run(files);
            }
        }
    };

    // A link pasted into this tab: apply it and run.
    let on_hash = Closure::<dyn FnMut()>::new(move || {
        let defaults = spec.get_untracked();
        let Some(s) = AnalysisSpec::from_fragment(&browser::fragment(), &defaults) else {
            return;
        };
        if s == defaults {
            return;
        }
        let model_changed = s.model != defaults.model;
        spec.set(s.clone());
        if model_changed {
            pick.run(s.model);
            run_when_ready.set_value(true);
        } else {
            start_run();
        }
    });
    if let Some(w) = web_sys::window() {
        let _ = w.add_event_listener_with_callback("hashchange", on_hash.as_ref().unchecked_ref());
    }
    on_hash.forget();

    let ready = move || matches!(model_state.get(), ModelState::Ready { .. });
    let status = Signal::derive(move || model_state.get().status());
    let progress = Signal::derive(move || match running.get() {
        Some(r) => Some(r.progress(browser::now_ms())),
        None => model_state.get().progress(),
    });
    let prediction = Signal::derive(move || results.get().prediction);
    let exactness = Signal::derive(move || {
        let r = results.get();
        ExactnessData {
            precision: r.precision.name(),
            contributions: r.contributions,
            detached: r.detached,
            ordinary: r.ordinary,
        }
    });
    let strip = Signal::derive(move || {
        let r = results.get();
        (!r.tokens.is_empty()).then_some(StripData {
            tokens: r.tokens,
            rows: r.rows,
            target_token: r.target_token,
            logit: r.logit,
            fro_norms: r.fro_norms,
        })
    });
    let selected = Signal::derive(move || spec.get().token);
    let select = Callback::new(move |i: usize| {
        spec.update(|s| s.token = Some(i));
        browser::set_fragment(&spec.get_untracked().to_fragment());
    });
    let spectrum = Signal::derive(move || results.get().spectrum);
    let spectrum_pending = Signal::derive(move || running.get().is_some());
    let share = move || browser::url_with_fragment(&spec.get().to_fragment());
    let focus_view = move |v: View| {
        spec.update(|s| s.view = v);
        browser::set_fragment(&spec.get_untracked().to_fragment());
        browser::scroll_to(&format!("view-{}", v.as_str()));
    };
    let (copied, set_copied) = signal(false);
    let current_model = Signal::derive(move || spec.get().model);

    view! {
        <div class="page" on:dragover=move |ev: web_sys::DragEvent| ev.prevent_default() on:drop=on_drop>
        <header class="masthead">
            <h1>"Linear Lens"</h1>
            <p class="tagline">
                "The exact linear map a language model applies to your prompt — computed in your browser."
            </p>
        </header>
        <main>
            <ModelPicker catalog=catalog current=current_model status=status on_pick=pick
                on_files=pick_files storage=storage.into() on_clear=clear />
            <form class="prompt-bar" on:submit=move |ev| { ev.prevent_default(); start_run(); }>
                <label for="prompt">"Prompt"</label>
                <div class="prompt-row">
                    <input id="prompt" type="text" data-testid="prompt-input" autocomplete="off"
                        spellcheck="false" maxlength="4000"
                        prop:value=move || spec.get().prompt
                        on:input=move |ev| spec.update(|s| s.prompt = event_target_value(&ev)) />
                    <select data-testid="precision-select" aria-label="precision"
                        prop:value=move || spec.get().precision.name()
                        on:change=move |ev| {
                            if let Some(p) = Precision::parse(&event_target_value(&ev)) {
                                spec.update(|s| s.precision = p);
                            }
                        }>
                        <option value="f64" selected=move || spec.get().precision == Precision::F64>"f64 (exact)"</option>
                        <option value="f32" selected=move || spec.get().precision == Precision::F32>"f32 (faster)"</option>
                    </select>
                    <button type="submit" data-testid="run-button"
                        disabled=move || !ready() || running.get().is_some()>
                        {move || if running.get().is_some() { "Computing…" } else { "Run" }}
                    </button>
                </div>
            </form>
            <ProgressView info=progress on_cancel=cancel />
            {move || error.get().map(|e| view! {
                <p class="error" role="alert" data-testid="error-message">{e}</p>
            })}
            <nav class="view-nav" aria-label="views">
                {View::ALL.into_iter().map(|v| view! {
                    <button type="button" class="view-tab" data-testid=format!("view-tab-{}", v.as_str())
                        aria-current=move || (spec.get().view == v).then_some("true")
                        on:click=move |_| focus_view(v)>
                        {view_title(v)}
                    </button>
                }).collect_view()}
            </nav>
            <div id="view-tokens" class="view-slot" class:focused=move || spec.get().view == View::Tokens>
                <TokenStrip data=strip selected=selected on_select=select />
            </div>
            <div class="grid2">
                <div id="view-prediction" class="view-slot" class:focused=move || spec.get().view == View::Prediction>
                    <PredictionView data=prediction />
                </div>
                <div id="view-spectrum" class="view-slot" class:focused=move || spec.get().view == View::Spectrum>
                    <SpectrumView data=spectrum pending=spectrum_pending />
                </div>
            </div>
            <div id="view-exactness" class="view-slot" class:focused=move || spec.get().view == View::Exactness>
                <ExactnessView data=exactness />
            </div>
            <p class="share">
                <a data-testid="share-link" href=share>"Link to this analysis"</a>
                " "
                <button type="button" class="secondary" data-testid="copy-link"
                    on:click=move |_| {
                        let url = share();
                        spawn_local(async move {
                            set_copied.set(browser::copy_text(&url).await.is_ok());
                        });
                    }>
                    {move || if copied.get() { "Copied" } else { "Copy link" }}
                </button>
                <span class="timing">{move || results.get().done_ms.map(|ms| format!(" · all stages in {:.1} s", ms / 1000.0))}</span>
            </p>
        </main>
        <footer>
            "Engine: " <span data-testid="backend-label">"CPU"</span>
            " (WebAssembly, in a Web Worker) · nothing leaves this device · J. R. Golden, "
            <a href="https://arxiv.org/abs/2505.24293">"Equivalent Linear Mappings of Large Language Models"</a>
            " (TMLR 2025)"
        </footer>
        </div>
    }
    .into_any()
}
