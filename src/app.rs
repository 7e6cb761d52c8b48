//! Page layout and state: the model in use, the run's stages as they
//! arrive from the engine worker, the on-demand stages (layers, the
//! selected token's J_i, steering), the URL fragment ⇄ analysis state,
//! share snapshots, the embed and classroom modes, exports.

use crate::browser;
use crate::classroom::{ClassroomNav, EmbeddingBars, STEPS};
use crate::export::ExportBar;
use crate::replies;
use crate::run_state::{run_precision, BackendInfo, ModelState, Results, Running, Task};
use crate::views::attention::AttentionView;
use crate::views::backend::{
    BackendFallback, BackendSelect, EngineLabel, GpuPrecisionNote, PrecisionSelect,
};
use crate::views::decode::DecodeView;
use crate::views::exactness::ExactnessView;
use crate::views::format::mb;
use crate::views::heatmap::HeatmapView;
use crate::views::layers::LayersView;
use crate::views::model_picker::ModelPicker;
use crate::views::path::PathView;
use crate::views::prediction::PredictionView;
use crate::views::progress::ProgressView;
use crate::views::snapshot::{SnapshotCheck, SnapshotView};
use crate::views::spectrum::SpectrumView;
use crate::views::steering::SteeringView;
use crate::views::token_strip::TokenStrip;
use crate::worker_client::Engine;
use js_sys::Array;
use lens_protocol::catalog::{HF_BASE, MODEL_CACHE};
use lens_protocol::messages::RunRequest;
use lens_protocol::spec::parse_layers;
use lens_protocol::{
    AnalysisSpec, BackendChoice, Catalog, ErrorKind, Precision, Reply, Request, Snapshot, Stage,
    SteerSpec, SvdMode, View,
};
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

/// The first of the default layer set a user is offered: every third layer.
fn default_layers(layers: usize) -> String {
    let step = (layers / 6).max(1);
    let mut out: Vec<String> = (1..=layers)
        .filter(|l| l % step == 0)
        .map(|l| l.to_string())
        .collect();
    if out.is_empty() {
        out.push("1".into());
    }
    out.join(",")
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
    // Where the latest run's passes run (the worker's Backend reply).
    let backend = RwSignal::new(BackendInfo::default());
    let storage = RwSignal::new(None::<(f64, f64)>);
    let num_layers = RwSignal::new(0usize);
    let job = StoredValue::new(0u32);
    // Jobs posted to the worker and not finished, in order (it works on one
    // at a time).
    let queue: StoredValue<Vec<(u32, Task)>> = StoredValue::new(Vec::new());
    // Run once the model is ready (a share link, or a run asked for early).
    let run_when_ready = StoredValue::new(linked);
    let loaded: StoredValue<Option<Loadable>, LocalStorage> = StoredValue::new_local(None);
    let engine: StoredValue<Option<Rc<Engine>>, LocalStorage> = StoredValue::new_local(None);
    // A link's snapshot, shown until the page has recomputed it.
    let snapshot = RwSignal::new(
        spec.get_untracked()
            .snapshot
            .as_deref()
            .and_then(Snapshot::parse)
            .map(|s| (s, SnapshotCheck::Pending)),
    );
    let layers_input = RwSignal::new({
        let l = &spec.get_untracked().layers;
        l.iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(",")
    });

    let refresh_storage = move || {
        spawn_local(async move { storage.set(browser::storage_estimate().await) });
    };
    let sync_url = move || browser::set_fragment(&spec.get_untracked().to_fragment());

    let post = move |req: Request| {
        if let Some(e) = engine.get_value() {
            e.post(&req);
        }
    };
    // The progress bar follows the job the worker is on: the first queued.
    let show_front = move || {
        let front = queue.with_value(|q| q.first().copied());
        running.set(front.map(|(job, task)| Running {
            job,
            task,
            stage: match task {
                Task::Run => Stage::Predict,
                Task::Layers => Stage::Layers,
                Task::Inspect => Stage::Inspect,
                Task::Steer => Stage::Steering,
            },
            done: 0,
            total: 1,
            started: browser::now_ms(),
        }));
    };
    let finish = move |j: u32| {
        let was_front = queue.with_value(|q| q.first().map(|f| f.0) == Some(j));
        queue.update_value(|q| q.retain(|(k, _)| *k != j));
        if was_front {
            show_front();
        }
    };
    let enqueue = move |task: Task, make: &dyn Fn(u32) -> Request| {
        let id = job.get_value() + 1;
        job.set_value(id);
        let empty = queue.with_value(|q| q.is_empty());
        queue.update_value(|q| q.push((id, task)));
        if empty {
            show_front();
        }
        post(make(id));
    };
    let model_ready = move || matches!(model_state.get_untracked(), ModelState::Ready { .. });
    // On-demand stages follow the latest run: f32 when it ran on WebGPU
    // (auto included), so the worker reuses its J.
    let job_precision = move |s: &AnalysisSpec| {
        if backend.with_untracked(|b| b.name == "WebGPU") {
            Precision::F32
        } else {
            run_precision(s)
        }
    };

    let inspect = move |position: usize| {
        let s = spec.get_untracked();
        let full =
            results.with_untracked(|r| r.report.as_ref().is_some_and(|rep| rep.svd.is_some()));
        if !full || !model_ready() {
            return;
        }
        results.update(|r| r.inspect = None);
        enqueue(Task::Inspect, &|job| Request::Inspect {
            job,
            prompt: s.prompt.clone(),
            precision: job_precision(&s),
            position,
        });
    };
    let compute_layers = move || {
        let s = spec.get_untracked();
        if s.layers.is_empty() || !model_ready() {
            return;
        }
        enqueue(Task::Layers, &|job| Request::Layers {
            job,
            prompt: s.prompt.clone(),
            precision: job_precision(&s),
            layers: s.layers.clone(),
        });
    };
    let run_steering = move || {
        let s = spec.get_untracked();
        if !model_ready() {
            return;
        }
        enqueue(Task::Steer, &|job| Request::Steer {
            job,
            precision: job_precision(&s),
            steer: s.steer.clone(),
        });
    };

    let start_run = move || {
        if !queue.with_value(|q| q.is_empty()) {
            // A new analysis (a link pasted into this tab) while the worker
            // is busy: it is replaced, and the run starts once it is ready.
            queue.update_value(|q| q.clear());
            running.set(None);
            run_when_ready.set_value(true);
            model_state.set(ModelState::Starting);
            if let Some(e) = engine.get_value() {
                e.spawn();
            }
            return;
        }
        if !model_ready() {
            run_when_ready.set_value(true);
            return;
        }
        let s = spec.get_untracked();
        error.set(None);
        results.set(Results {
            precision: run_precision(&s),
            ..Results::default()
        });
        sync_url();
        enqueue(Task::Run, &|job| {
            Request::Run(RunRequest {
                job,
                prompt: s.prompt.clone(),
                precision: run_precision(&s),
                top: TOP_K,
                full: true,
                svd: s.svd,
                backend: s.backend,
            })
        });
    };

    // After a run: the selected token's J_i, then whatever the link asked
    // for on demand; and the link's snapshot checked.
    let after_run = move || {
        let s = spec.get_untracked();
        let n = results.with_untracked(|r| r.tokens.len());
        // An embed link draws one view: J_i only when that is the heatmap.
        if n > 0 && matches!(s.embed, None | Some(View::Heatmap)) {
            inspect(s.token.filter(|&t| t < n).unwrap_or(n - 1));
        }
        let has_layers =
            results.with_untracked(|r| r.report.as_ref().is_some_and(|x| !x.layers.is_empty()));
        if !s.layers.is_empty() && !has_layers {
            compute_layers();
        }
        let has_steering =
            results.with_untracked(|r| r.report.as_ref().is_some_and(|x| x.steering.is_some()));
        if s.steer_run && !has_steering {
            run_steering();
        }
        if let Some(report) = results.with_untracked(|r| r.report.clone()) {
            let computed = Snapshot::of(&report);
            snapshot.update(|snap| {
                if let Some((link, check)) = snap {
                    let d = link.disagreements(&computed);
                    *check = if d.is_empty() {
                        SnapshotCheck::Confirmed
                    } else {
                        SnapshotCheck::Mismatch(d)
                    };
                }
            });
        }
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
            let mine = |j: u32| queue.with_value(|q| q.iter().any(|(k, _)| *k == j));
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
                    if let Some(r) = r.as_mut().filter(|r| r.job == j) {
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
                    num_layers.set(layers);
                    if layers_input.get_untracked().trim().is_empty() {
                        layers_input.set(default_layers(layers));
                    }
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
                Reply::Failed {
                    job: j,
                    kind,
                    message,
                } => {
                    match j {
                        Some(j) if mine(j) => finish(j),
                        Some(_) => return,
                        None if kind == ErrorKind::Quota => {}
                        None => model_state.set(ModelState::Failed),
                    }
                    error.set(Some(message));
                }
                r => {
                    // A job's result: into Results for the views.
                    let Some(j) = r.job().filter(|&j| mine(j)) else {
                        return;
                    };
                    if let Reply::Backend {
                        name,
                        adapter,
                        fallback,
                        ..
                    } = &r
                    {
                        backend.set(BackendInfo {
                            name: name.clone(),
                            adapter: adapter.clone(),
                            fallback: fallback.clone(),
                        });
                    }
                    let ends = replies::ends_job(&r);
                    let done = matches!(r, Reply::Done { .. });
                    results.update(|res| replies::apply(res, r));
                    if ends {
                        finish(j);
                    }
                    if done {
                        let v = spec.get_untracked().view;
                        if v != View::Prediction && spec.get_untracked().embed.is_none() {
                            browser::scroll_to(&format!("view-{}", v.as_str()));
                        }
                        after_run();
                    }
                }
            }
        });
    let on_crash = Rc::new(move |msg: String| {
        let was_running = running.get_untracked().is_some();
        queue.update_value(|q| q.clear());
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
        queue.update_value(|q| q.clear());
        running.set(None);
        run_when_ready.set_value(false);
        if !was_running {
            // A download: drop it and wait for the user's next choice.
            loaded.set_value(None);
        }
        error.set(Some(if was_running {
            "Cancelled. The engine was stopped; the model is reloading from this device's cache. \
             Results already shown are kept."
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
        queue.update_value(|q| q.clear());
        running.set(None);
        // A model picked by hand: a link's pending run is not for it.
        run_when_ready.set_value(false);
        loaded.set_value(Some(Loadable::Remote(id)));
        sync_url();
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
        queue.update_value(|q| q.clear());
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
        let rerun = model_changed
            || s.prompt != defaults.prompt
            || s.precision != defaults.precision
            || s.svd != defaults.svd
            || s.backend != defaults.backend;
        snapshot.set(
            s.snapshot
                .as_deref()
                .and_then(Snapshot::parse)
                .map(|x| (x, SnapshotCheck::Pending)),
        );
        layers_input.set(
            s.layers
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        spec.set(s.clone());
        if model_changed {
            pick.run(s.model);
            run_when_ready.set_value(true);
        } else if rerun {
            start_run();
        } else {
            after_run();
        }
    });
    let classroom_step = move |step: usize| {
        spec.update(|s| {
            s.classroom = Some(step.min(STEPS.len() - 1));
            if let Some(v) = STEPS[step.min(STEPS.len() - 1)].view {
                s.view = v;
            }
        });
        sync_url();
    };
    // ← and → step through the classroom walkthrough (not while typing).
    let on_key =
        Closure::<dyn FnMut(web_sys::KeyboardEvent)>::new(move |ev: web_sys::KeyboardEvent| {
            let Some(step) = spec.get_untracked().classroom else {
                return;
            };
            let typing = ev
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .is_some_and(|e| matches!(e.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"));
            if typing || ev.alt_key() || ev.ctrl_key() || ev.meta_key() {
                return;
            }
            match ev.key().as_str() {
                "ArrowRight" => classroom_step((step + 1).min(STEPS.len() - 1)),
                "ArrowLeft" => classroom_step(step.saturating_sub(1)),
                _ => return,
            }
            ev.prevent_default();
        });
    if let Some(w) = web_sys::window() {
        let _ = w.add_event_listener_with_callback("hashchange", on_hash.as_ref().unchecked_ref());
        let _ = w.add_event_listener_with_callback("keydown", on_key.as_ref().unchecked_ref());
    }
    on_hash.forget();
    on_key.forget();

    let ready = move || matches!(model_state.get(), ModelState::Ready { .. });
    let busy = Signal::derive(move || running.get().is_some());
    let status = Signal::derive(move || model_state.get().status());
    let progress = Signal::derive(move || match running.get() {
        Some(r) => Some(r.progress(browser::now_ms())),
        None => model_state.get().progress(),
    });
    let prediction = Signal::derive(move || results.with(|r| r.prediction.clone()));
    let exactness = Signal::derive(move || results.with(Results::exactness));
    let strip = Signal::derive(move || results.with(Results::strip));
    let selected = Signal::derive(move || spec.get().token);
    let select = Callback::new(move |i: usize| {
        spec.update(|s| s.token = Some(i));
        sync_url();
        inspect(i);
    });
    let tokens = Signal::derive(move || results.with(|r| r.tokens.clone()));
    let spectrum = Signal::derive(move || {
        let selected = spec.get().token;
        results.with(|r| r.spectrum(selected))
    });
    let decode =
        Signal::derive(move || results.with(|r| r.report.as_ref().and_then(|r| r.decode.clone())));
    let matrix_free = Signal::derive(move || {
        results.with(|r| r.report.as_ref().is_some_and(|r| r.matrix_free.is_some()))
    });
    let layer_rows = Signal::derive(move || {
        results.with(|r| {
            r.report
                .as_ref()
                .map(|r| r.layers.clone())
                .unwrap_or_default()
        })
    });
    let path = Signal::derive(move || {
        results.with(|r| {
            r.report
                .as_ref()
                .map(|r| r.path.clone())
                .unwrap_or_default()
        })
    });
    let attention = Signal::derive(move || {
        results.with(|r| r.report.as_ref().and_then(|r| r.attention.clone()))
    });
    let attn_layer = Signal::derive(move || spec.get().attn_layer);
    let attn_head = Signal::derive(move || spec.get().attn_head);
    let on_attn = Callback::new(move |(l, h): (usize, usize)| {
        spec.update(|s| {
            s.attn_layer = l;
            s.attn_head = h;
        });
        sync_url();
    });
    let heatmap = Signal::derive(move || results.with(|r| r.inspect.clone()));
    let heatmap_pending =
        Signal::derive(move || results.with(|r| r.inspect.is_none()) && running.get().is_some());
    let analysed = Signal::derive(move || results.with(|r| r.report.is_some()) && ready());
    let on_layers_input = Callback::new(move |text: String| {
        layers_input.set(text);
    });
    let on_compute_layers = Callback::new(move |()| {
        let wanted = parse_layers(&layers_input.get_untracked());
        let max = num_layers.get_untracked();
        let bad: Vec<usize> = wanted.iter().copied().filter(|&l| l > max).collect();
        if wanted.is_empty() || !bad.is_empty() {
            error.set(Some(format!(
                "Layers must be numbers from 1 to {max}, separated by commas{}.",
                if bad.is_empty() {
                    String::new()
                } else {
                    format!(" ({bad:?} is out of range)")
                }
            )));
            return;
        }
        error.set(None);
        spec.update(|s| s.layers = wanted);
        sync_url();
        compute_layers();
    });
    let steer_spec = Signal::derive(move || spec.get().steer);
    let on_steer_change = Callback::new(move |st: SteerSpec| {
        spec.update(|s| s.steer = st);
        sync_url();
    });
    let on_steer_run = Callback::new(move |()| {
        spec.update(|s| s.steer_run = true);
        sync_url();
        run_steering();
    });
    let steering = Signal::derive(move || results.with(|r| r.steering.clone()));
    let can_steer = Signal::derive(ready);

    let share = move || {
        let mut s = spec.get();
        s.snapshot = None;
        browser::url_with_fragment(&s.to_fragment())
    };
    let share_snapshot = move || {
        let mut s = spec.get();
        s.snapshot = results.with(|r| r.report.as_ref().map(|r| Snapshot::of(r).to_json()));
        s.embed = None;
        browser::url_with_fragment(&s.to_fragment())
    };
    let embed_link = move || {
        let mut s = spec.get();
        s.embed = Some(s.view);
        s.classroom = None;
        s.snapshot = results.with(|r| r.report.as_ref().map(|r| Snapshot::of(r).to_json()));
        browser::url_with_fragment(&s.to_fragment())
    };
    let full_page = move || {
        let mut s = spec.get();
        s.embed = None;
        browser::url_with_fragment(&s.to_fragment())
    };
    let focus_view = move |v: View| {
        spec.update(|s| s.view = v);
        sync_url();
        browser::scroll_to(&format!("view-{}", v.as_str()));
    };
    let (copied, set_copied) = signal(false);
    let current_model = Signal::derive(move || spec.get().model);
    let layers_text = Signal::derive(move || layers_input.get());
    let num_layers_sig = Signal::derive(move || num_layers.get());
    let embed_rows =
        Signal::derive(move || results.with(|r| r.report.as_ref().map(|r| r.per_token.clone())));
    let snapshot_sig = Signal::derive(move || snapshot.get());
    let long_prompt = Signal::derive(move || results.with(|r| r.long_prompt.clone()));
    let backend_sig = Signal::derive(move || backend.get());
    let backend_choice = Signal::derive(move || spec.get().backend);
    let on_webgpu = Signal::derive(move || spec.get().backend == BackendChoice::Webgpu);
    let run_precision_sig = Signal::derive(move || run_precision(&spec.get()));
    let on_precision = Callback::new(move |p: Precision| spec.update(|s| s.precision = p));
    let on_backend = Callback::new(move |b: BackendChoice| {
        spec.update(|s| s.backend = b);
        sync_url();
    });

    // One view by name: the page's slots, the embed mode and the classroom
    // steps all draw through this.
    let render = move |v: View| -> AnyView {
        match v {
            View::Prediction => view! { <PredictionView data=prediction /> }.into_any(),
            View::Exactness => view! { <ExactnessView data=exactness /> }.into_any(),
            View::Tokens => view! { <TokenStrip data=strip selected=selected on_select=select /> }.into_any(),
            View::Spectrum => view! { <SpectrumView data=spectrum pending=busy /> }.into_any(),
            View::Decode => view! { <DecodeView decode=decode tokens=tokens matrix_free=matrix_free /> }.into_any(),
            View::Layers => view! {
                <LayersView rows=layer_rows num_layers=num_layers_sig layers_input=layers_text
                    on_layers_input=on_layers_input on_compute=on_compute_layers busy=busy available=analysed />
            }.into_any(),
            View::Path => view! { <PathView points=path /> }.into_any(),
            View::Attention => view! {
                <AttentionView attention=attention tokens=tokens layer=attn_layer head=attn_head on_select=on_attn />
            }.into_any(),
            View::Heatmap => view! { <HeatmapView data=heatmap tokens=tokens pending=heatmap_pending /> }.into_any(),
            View::Steering => view! {
                <SteeringView spec=steer_spec on_change=on_steer_change on_run=on_steer_run result=steering
                    busy=busy available=can_steer num_layers=num_layers_sig />
            }.into_any(),
        }
    };
    let slot = move |v: View| {
        view! {
            <div id=format!("view-{}", v.as_str()) class="view-slot"
                class:focused=move || spec.get().view == v>
                {render(v)}
            </div>
        }
    };
    let on_export_error = Callback::new(move |e: String| error.set(Some(e)));
    let view_in_focus = Signal::derive(move || spec.get().view);
    let progress_and_errors = move || {
        view! {
            <ProgressView info=progress on_cancel=cancel />
            {move || error.get().map(|e| view! {
                <p class="error" role="alert" data-testid="error-message">{e}</p>
            })}
            {move || long_prompt.get().map(|m| view! {
                <p class="notice" role="status" data-testid="long-prompt-notice">{m}</p>
            })}
            <BackendFallback info=backend_sig />
            <SnapshotView data=snapshot_sig />
        }
    };

    // An embed link: one view, nothing around it.
    if let Some(v) = spec.get_untracked().embed {
        return view! {
            <div class="page embed" data-testid="embed" data-view=v.as_str()>
                {progress_and_errors}
                {slot(v)}
                <p class="embed-foot">
                    <span data-testid="model-status" class="hint">{move || status.get()}</span>
                    " · "
                    <a href=full_page target="_blank" rel="noopener">"Linear Lens: open the full analysis"</a>
                </p>
            </div>
        }
        .into_any();
    }

    let prompt_bar = move || {
        view! {
            <form class="prompt-bar" on:submit=move |ev| { ev.prevent_default(); start_run(); }>
                <label for="prompt">"Prompt"</label>
                <div class="prompt-row">
                    <input id="prompt" type="text" data-testid="prompt-input" autocomplete="off"
                        spellcheck="false" maxlength="4000"
                        prop:value=move || spec.get().prompt
                        on:input=move |ev| spec.update(|s| s.prompt = event_target_value(&ev)) />
                    <PrecisionSelect precision=run_precision_sig gpu=on_webgpu on_change=on_precision />
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
                    <BackendSelect choice=backend_choice on_change=on_backend />
                    <button type="submit" data-testid="run-button"
                        disabled=move || !ready() || running.get().is_some()>
                        {move || if running.get().is_some() { "Computing…" } else { "Run" }}
                    </button>
                </div>
                <GpuPrecisionNote gpu=on_webgpu />
            </form>
        }
    };

    // Memos: the page's layout changes only when these do, not with every
    // edit of the analysis state (which would re-create the views and lose
    // the keyboard focus).
    let classroom_on = Memo::new(move |_| spec.get().classroom.is_some());
    let classroom_at = Memo::new(move |_| spec.get().classroom.unwrap_or(0).min(STEPS.len() - 1));
    let classroom = move || {
        let step_sig = Signal::derive(move || classroom_at.get());
        let on_step = Callback::new(classroom_step);
        let on_preset = Callback::new(move |p: String| {
            spec.update(|s| s.prompt = p);
            start_run();
        });
        let on_exit = Callback::new(move |()| {
            spec.update(|s| s.classroom = None);
            sync_url();
        });
        let prompt = Signal::derive(move || spec.get().prompt);
        view! {
            <div class="classroom-layout">
                <ClassroomNav step=step_sig on_step=on_step prompt=prompt on_preset=on_preset on_exit=on_exit />
                <div class="classroom-picture">
                    {move || match STEPS[classroom_at.get()].view {
                        Some(v) => slot(v).into_any(),
                        None => view! { <div id="view-embed" class="view-slot"><EmbeddingBars rows=embed_rows /></div> }.into_any(),
                    }}
                </div>
            </div>
        }
    };

    view! {
        <div class="page" class:classroom=move || classroom_on.get()
            on:dragover=move |ev: web_sys::DragEvent| ev.prevent_default() on:drop=on_drop>
        <header class="masthead">
            <h1>"Linear Lens"</h1>
            <p class="tagline">
                "The exact linear map a language model applies to your prompt — computed in your browser."
            </p>
            <button type="button" class="secondary classroom-toggle" data-testid="classroom-toggle"
                aria-pressed=move || spec.get().classroom.is_some().to_string()
                on:click=move |_| {
                    let on = spec.get_untracked().classroom.is_some();
                    if on {
                        spec.update(|s| s.classroom = None);
                        sync_url();
                    } else {
                        classroom_step(0);
                    }
                }>
                {move || if spec.get().classroom.is_some() { "Full page" } else { "Classroom mode" }}
            </button>
        </header>
        <main>
            <ModelPicker catalog=catalog current=current_model status=status on_pick=pick
                on_files=pick_files storage=storage.into() on_clear=clear />
            {prompt_bar}
            {progress_and_errors}
            {move || if classroom_on.get() {
                classroom().into_any()
            } else {
                view! {
                    <nav class="view-nav" aria-label="views">
                        {View::ALL.into_iter().map(|v| view! {
                            <button type="button" class="view-tab" data-testid=format!("view-tab-{}", v.as_str())
                                aria-current=move || (spec.get().view == v).then_some("true")
                                on:click=move |_| focus_view(v)>
                                {view_title(v)}
                            </button>
                        }).collect_view()}
                    </nav>
                    {slot(View::Tokens)}
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
                }.into_any()
            }}
            <ExportBar results=results view=view_in_focus on_error=on_export_error />
            <p class="share">
                <a data-testid="share-link" href=share>"Link to this analysis"</a>
                " · "
                <a data-testid="share-link-snapshot" href=share_snapshot>"Link with results"</a>
                " · "
                <a data-testid="embed-link" href=embed_link>"Embed this view"</a>
                " "
                <button type="button" class="secondary" data-testid="copy-link"
                    on:click=move |_| {
                        let url = share_snapshot();
                        spawn_local(async move {
                            set_copied.set(browser::copy_text(&url).await.is_ok());
                        });
                    }>
                    {move || if copied.get() { "Copied" } else { "Copy link with results" }}
                </button>
                <span class="timing">{move || results.with(|r| r.done_ms).map(|ms| format!(" · all stages in {:.1} s", ms / 1000.0))}</span>
            </p>
        </main>
        <footer>
            <EngineLabel info=backend_sig />
            " · nothing leaves this device · J. R. Golden, "
            <a href="https://arxiv.org/abs/2505.24293">"Equivalent Linear Mappings of Large Language Models"</a>
            " (TMLR 2025)"
        </footer>
        </div>
    }
    .into_any()
}
