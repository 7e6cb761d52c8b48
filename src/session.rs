//! The session with the engine workers (context [`Session`]): what the
//! page asks of them (a run, then the on-demand layers, `J_i` and
//! steering; a model picked; a link pasted), each reply of the run's
//! worker routed (`queue::route`) to the room it is for, a crash or a
//! cancel. The rooms' state is theirs (`Link`, `Model`, `Jobs`, `Pool`);
//! this only ties them together.

use crate::browser;
use crate::compare::{Compare, Pinned};
use crate::jobs::Jobs;
use crate::loading::{files_of, Loadable, Model};
use crate::messages;
use crate::pool::{Pool, Workers};
use crate::queue::{route, Route};
use crate::run_state::{run_precision, ModelState, Results, Task, TOP_K};
use crate::typing::Typing;
use crate::url_sync::Link;
use js_sys::ArrayBuffer;
use lens_protocol::messages::RunRequest;
use lens_protocol::report::Extent;
use lens_protocol::report::Side;
use lens_protocol::{AnalysisSpec, CompareSpec, Reply, Request, Snapshot, View};
use leptos::prelude::*;
use std::sync::Arc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

#[derive(Clone, Copy)]
pub(crate) struct Session {
    link: Link,
    model: Model,
    jobs: Jobs,
    pool: Pool,
    compare: Compare,
    typing: Typing,
}

impl Session {
    pub fn new(
        link: Link,
        model: Model,
        jobs: Jobs,
        pool: Pool,
        compare: Compare,
        typing: Typing,
    ) -> Self {
        Session {
            link,
            model,
            jobs,
            pool,
            compare,
            typing,
        }
    }

    pub fn get() -> Self {
        expect_context::<Session>()
    }

    fn workers(&self) -> Workers {
        Workers {
            pool: self.pool,
            model: self.model,
            jobs: self.jobs,
            link: self.link,
        }
    }

    /// Queues a job of `task` and posts its request to the run's worker
    /// (typing's live job gives way: its results would replace those the
    /// job is asked about).
    fn enqueue(&self, task: Task, make: impl FnOnce(u32) -> Request) {
        self.typing.give_way();
        let id = self.jobs.enqueue(task);
        self.model.post(&make(id));
    }

    /// The heatmap and columns of `J_i` at `position` (needs the full `J`).
    pub fn inspect(&self, position: usize) {
        let s = self.link.spec.get_untracked();
        if !self.jobs.results.with_untracked(Results::has_full_j) || !self.model.ready() {
            return;
        }
        self.jobs.results.update(|r| r.inspect = None);
        let precision = self.jobs.job_precision(&s);
        let prompt = self.jobs.results.with_untracked(|r| r.prompt.clone());
        self.enqueue(Task::Inspect, |job| Request::Inspect {
            job,
            prompt,
            precision,
            position,
        });
    }

    pub fn compute_layers(&self) {
        let s = self.link.spec.get_untracked();
        // The curves of the prompt on screen (the run's), not of an edit
        // typed since.
        let prompt = self.jobs.results.with_untracked(|r| r.prompt.clone());
        if s.layers.is_empty() || prompt.is_empty() || !self.model.ready() {
            return;
        }
        let precision = self.jobs.job_precision(&s);
        self.enqueue(Task::Layers, |job| Request::Layers {
            job,
            prompt,
            precision,
            layers: s.layers,
        });
    }

    pub fn run_steering(&self) {
        let s = self.link.spec.get_untracked();
        if !self.model.ready() {
            return;
        }
        let precision = self.jobs.job_precision(&s);
        self.enqueue(Task::Steer, |job| Request::Steer {
            job,
            precision,
            steer: s.steer,
        });
    }

    /// Runs the analysis the link state describes: against the pinned side
    /// A when there is one; a comparison link's A first when it is not
    /// pinned yet.
    pub fn start_run(&self) {
        self.typing.give_way();
        if !self.jobs.idle() {
            // A new analysis (a link pasted into this tab) while the worker
            // is busy: it is replaced, and the run starts once it is ready.
            self.link.run_when_ready.set_value(true);
            self.model.model_state.set(ModelState::Starting);
            self.workers().restart_engine();
            return;
        }
        if !self.model.ready() {
            self.link.run_when_ready.set_value(true);
            return;
        }
        let s = self.link.spec.get_untracked();
        let pinned = self.compare.pinned.get_untracked();
        // A comparison link's side A, not pinned yet: A's prompt first.
        let side_a = s.compare.clone().filter(|_| pinned.is_none());
        let prompt = side_a
            .as_ref()
            .map_or(s.prompt.clone(), |a| a.prompt.clone());
        let precision = side_a
            .as_ref()
            .and_then(|a| a.precision)
            .unwrap_or_else(|| run_precision(&s));
        self.compare.then_b.set_value(side_a.is_some());
        self.jobs.error.set(None);
        self.pool.pool_note.set(None);
        self.compare.comparison.set(None);
        self.jobs.results.set(Results::asking(&prompt, precision));
        if let Some(a) = &pinned {
            // The link names A's precision where B runs at another.
            let a_precision = (a.precision != precision).then_some(a.precision);
            self.link.spec.update(|x| {
                if let Some(c) = x.compare.as_mut() {
                    c.precision = a_precision;
                }
            });
        }
        self.link.sync_url();
        let run = |job| RunRequest {
            job,
            prompt: prompt.clone(),
            precision,
            top: TOP_K,
            extent: Extent::Full,
            svd: s.svd,
            backend: s.backend,
            pool: self.pool.workers(),
            target: s.target.clone(),
        };
        let Some(a) = pinned else {
            return self.enqueue(Task::Run, |job| Request::Run(run(job)));
        };
        let job = self.jobs.enqueue(Task::Run);
        let request = Request::Compare {
            run: run(job),
            layers: s.layers.clone(),
            a: Box::new(a.side.clone()),
            same_model: a.model == s.model,
        };
        let bytes = js_sys::Uint8Array::from(a.log_probs.as_slice());
        if let Some(e) = self.model.engine.get_value() {
            e.post_buffer(&request, &bytes.buffer());
        }
    }

    /// Keeps the run on screen as the comparison's side A.
    pub fn pin(&self) {
        if !self.jobs.results.with_untracked(Results::has_spectrum) || !self.model.ready() {
            return;
        }
        self.enqueue(Task::Pin, |job| Request::Pin { job });
    }

    /// The worker's part of side A is in: A is pinned (in the link too);
    /// a comparison link goes on to B (on B's model when it is another).
    fn on_pinned(&self, u: Vec<Vec<f64>>, depth: usize, log_probs: Option<ArrayBuffer>) {
        let Some(report) = self.jobs.results.with_untracked(|r| r.report.clone()) else {
            return;
        };
        let s = self.link.spec.get_untracked();
        let prompt = self.jobs.results.with_untracked(|r| r.prompt.clone());
        let pinned = Pinned {
            side: Side {
                prompt: prompt.clone(),
                report,
                u,
                log_probs: Vec::new(),
                depth,
            },
            log_probs: log_probs
                .map(|b| js_sys::Uint8Array::new(&b).to_vec())
                .unwrap_or_default(),
            model: s.model_a().to_string(),
            precision: self.jobs.job_precision(&s),
        };
        let then_b = self.compare.then_b.get_value();
        self.compare.then_b.set_value(false);
        if !then_b {
            // Pinned by hand: the page's own analysis becomes A.
            self.link.spec.update(|s| {
                s.compare = Some(CompareSpec::of(prompt));
                s.view = View::Compare;
            });
            self.link.sync_url();
        }
        let model_a = pinned.model.clone();
        self.compare.pinned.set(Some(Arc::new(pinned)));
        if !then_b {
            return;
        }
        if model_a == s.model {
            self.start_run();
        } else {
            // B's model replaces A's in a fresh worker; A stays pinned here.
            self.load_then_run(&s.model);
        }
    }

    /// A fresh worker loads model `id` (a comparison's A or B, the link's
    /// model kept as it is), and the run starts once it is ready.
    fn load_then_run(&self, id: &str) {
        match self.model.resolve(id) {
            Ok((_, what)) => {
                self.jobs.results.set(Results::default());
                self.model.loaded.set_value(Some(what));
                self.link.run_when_ready.set_value(true);
                self.workers().restart_engine();
            }
            Err(m) => self.jobs.error.set(Some(m)),
        }
    }

    /// Compares prompt `a` (run and pinned first) with prompt `b` on the
    /// model loaded (the classroom's pairs).
    pub fn compare_pair(&self, a: String, b: String) {
        self.clear_pin();
        self.link.spec.update(|s| {
            s.compare = Some(CompareSpec::of(a));
            s.prompt = b;
            s.view = View::Compare;
        });
        self.start_run();
    }

    /// Attributes token `id` (of A's vocabulary): a pinned A is run again
    /// for it, then B.
    pub fn retarget(&self, id: u32) {
        self.link
            .spec
            .update(|s| s.target = Some(format!("id:{id}")));
        if self.compare.is_pinned() {
            self.compare.pinned.set(None);
            self.compare.comparison.set(None);
        }
        self.start_run();
    }

    /// Drops side A: the page shows one analysis again.
    pub fn clear_pin(&self) {
        self.compare.pinned.set(None);
        self.compare.comparison.set(None);
        self.compare.snapshot_a.set(None);
        self.compare.then_b.set_value(false);
        self.link.spec.update(|s| {
            s.compare = None;
            if s.view == View::Compare {
                s.view = View::Prediction;
            }
        });
        self.link.sync_url();
    }

    /// After a run: the selected token's `J_i`, then whatever the link asked
    /// for on demand; and the link's snapshot checked.
    pub fn after_run(&self) {
        let s = self.link.spec.get_untracked();
        let results = self.jobs.results;
        let n = results.with_untracked(|r| r.tokens().len());
        // An embed link draws one view: J_i only when that is the heatmap.
        if n > 0 && matches!(s.embed, None | Some(View::Heatmap)) {
            self.inspect(s.token.filter(|&t| t < n).unwrap_or(n - 1));
        }
        let (has_layers, has_steering) = results.with_untracked(|r| {
            r.report.as_ref().map_or((false, false), |x| {
                (!x.layers.is_empty(), x.steering.is_some())
            })
        });
        if !s.layers.is_empty() && !has_layers {
            self.compute_layers();
        }
        if s.steer_run && !has_steering {
            self.run_steering();
        }
        if let Some(report) = results.with_untracked(|r| r.report.clone()) {
            if self.compare.then_b.get_value() {
                // A comparison link's side A: checked, then pinned.
                self.compare.check_snapshot_a(&Snapshot::of(&report));
                self.pin();
            } else {
                self.link.check_snapshot(&Snapshot::of(&report));
            }
        }
    }

    /// Routes one reply of the run's worker (and the buffer beside it).
    pub fn on_reply(&self, r: Reply, buffer: Option<ArrayBuffer>) {
        let pooled = self.pool.pooled_job();
        let to = self.jobs.queue.with_value(|q| route(&r, q, pooled));
        match (to, r) {
            (Route::Pool, r) => self.workers().on_lead_reply(r, buffer),
            (Route::Model, Reply::Started) => {
                let id = self.link.spec.with_untracked(|s| s.model.clone());
                // (`id` names local files; a catalog model loads what
                // `loaded` holds: a comparison link's A first.)
                if let Err(m) = self.model.load_current(id) {
                    self.jobs.error.set(Some(m));
                }
            }
            (Route::Model, ready @ Reply::ModelReady { .. }) => self.on_model_ready(ready),
            (Route::Model, r) => self.model.on_loading(r),
            (Route::NotKept, Reply::Failed { kind, message, .. }) => {
                // The model still loads, only not kept: a note, not an error.
                self.model
                    .load_note
                    .set(Some(messages::worker_failed(kind, &message, false)));
            }
            (Route::ModelFailed, Reply::Failed { kind, message, .. }) => {
                self.model.model_state.set(ModelState::Failed);
                self.jobs
                    .error
                    .set(Some(messages::worker_failed(kind, &message, false)));
            }
            (
                Route::Progress(j),
                Reply::Progress {
                    stage, done, total, ..
                },
            ) => self.jobs.progress(j, stage, done, total),
            (Route::JobFailed(j), Reply::Failed { kind, message, .. }) => {
                self.typing.failed(j);
                self.workers().job_ended(j);
                self.jobs.failed(j, kind, &message);
            }
            (Route::Job { job, ends }, Reply::Pinned { u, depth, .. }) => {
                self.jobs.finish(job);
                debug_assert!(ends);
                self.on_pinned(u, depth, buffer);
            }
            (Route::Job { .. }, Reply::Comparison { comparison, .. }) => {
                self.compare.comparison.set(Some(*comparison));
            }
            (Route::Job { job, ends }, r) if self.typing.is_live(job) => {
                self.typing.on_reply(job, ends, r)
            }
            (Route::Job { job, ends }, r) => {
                let done = matches!(r, Reply::Done { .. });
                if done {
                    self.workers().job_ended(job);
                }
                self.jobs.apply(r);
                if ends {
                    self.jobs.finish(job);
                }
                if done {
                    let s = self.link.spec.get_untracked();
                    if s.view != View::Prediction && s.embed.is_none() {
                        browser::scroll_to(&format!("view-{}", s.view.as_str()));
                    }
                    self.after_run();
                }
            }
            _ => {}
        }
        self.typing.then_live();
    }

    /// The worker has the model: say what it is, start the pool's
    /// helpers, and run what waits for it.
    fn on_model_ready(&self, ready: Reply) {
        // A comparison link's side A on another model than the link's.
        let side_a_first = self.compare.then_b.get_value()
            && !self.compare.is_pinned()
            && self.link.spec.with_untracked(|s| s.model_a() != s.model);
        let Some(bytes) = self.model.arrived(ready, &self.link, !side_a_first) else {
            return;
        };
        self.workers().start_helpers(bytes);
        if self.link.run_when_ready.get_value() {
            self.link.run_when_ready.set_value(false);
            self.start_run();
        }
    }

    /// The run's worker died (a trap: out of memory, a panic).
    pub fn on_crash(&self, msg: String) {
        let was_running = self.jobs.running.get_untracked().is_some();
        let loading = self.model.model_state.with_untracked(|m| m.is_loading());
        if !was_running && loading {
            // Loading the same files again would end the same way: nothing
            // loads until the next choice.
            self.model.loaded.set_value(None);
            self.link.run_when_ready.set_value(false);
            self.jobs
                .error
                .set(Some(messages::crash(&msg, true, false)));
        } else {
            self.jobs
                .error
                .set(Some(messages::crash(&msg, false, was_running)));
        }
        self.workers().restart_engine();
    }

    /// The Cancel button: stops a run (the model reloads from the cache)
    /// or a download (nothing loads until the next choice).
    pub fn cancel(&self) {
        let was_running = self.jobs.running.get_untracked().is_some();
        self.link.run_when_ready.set_value(false);
        if !was_running {
            self.model.loaded.set_value(None);
            // Said at once: the fresh worker only confirms it.
            self.model.model_state.set(ModelState::Idle);
        }
        self.jobs.error.set(Some(messages::cancelled(was_running)));
        self.workers().restart_engine();
    }

    /// Replaces the model: results dropped, a fresh worker loads `what`
    /// (a pinned side A stays: B will run on the new model).
    fn switch_model(&self, model_id: String, what: Loadable) {
        self.jobs.error.set(None);
        let model_a = self
            .compare
            .pinned
            .with_untracked(|p| p.as_ref().map(|p| p.model.clone()));
        self.compare.comparison.set(None);
        self.link.spec.update(|s| {
            if let (Some(c), Some(a)) = (s.compare.as_mut(), model_a) {
                c.model = (a != model_id).then_some(a);
            }
            s.model = model_id;
            s.token = None;
        });
        self.jobs.results.set(Results::default());
        // A model picked by hand: a link's pending run is not for it.
        self.link.run_when_ready.set_value(false);
        self.model.loaded.set_value(Some(what));
        self.workers().restart_engine();
    }

    /// A catalog model (or repository, or URL) picked by hand.
    pub fn pick(&self, id: String) {
        match self.model.resolve(&id) {
            Ok((id, what)) => {
                self.switch_model(id, what);
                self.link.sync_url();
            }
            Err(m) => self.jobs.error.set(Some(m)),
        }
    }

    /// Local model files, picked or dropped on the page.
    pub fn pick_files(&self, files: web_sys::FileList) {
        let (id, what) = files_of(files);
        self.switch_model(id, what);
    }

    /// Drops the models this browser has stored.
    pub fn clear_stored_models(&self) {
        let error = self.jobs.error;
        self.model.clear_stored_models(move |m| error.set(Some(m)));
    }

    /// A link pasted into this tab: apply it, and run what it changes.
    fn on_hash_change(&self) {
        let current = self.link.spec.get_untracked();
        let Some(s) = AnalysisSpec::from_fragment(&browser::fragment(), &current) else {
            return;
        };
        if s == current {
            return;
        }
        // Another side A: the pinned one is dropped, the link's is run first.
        let side_a = |x: &AnalysisSpec| {
            x.compare
                .as_ref()
                .map(|c| (c.prompt.clone(), x.model_a().to_string(), c.precision))
        };
        let a_changed = side_a(&s) != side_a(&current);
        if a_changed {
            self.compare.pinned.set(None);
            self.compare.comparison.set(None);
            self.compare.snapshot_a.set(
                s.compare
                    .as_ref()
                    .and_then(|c| c.snapshot.as_deref())
                    .and_then(Snapshot::parse)
                    .map(|x| (x, crate::views::snapshot::SnapshotCheck::Pending)),
            );
        }
        // The model the next run needs: A's while A is not pinned.
        let need = |x: &AnalysisSpec, pinned: bool| {
            if x.compare.is_some() && !pinned {
                x.model_a().to_string()
            } else {
                x.model.clone()
            }
        };
        let pinned = self.compare.is_pinned();
        let loaded = match self.model.loaded.get_value() {
            Some(Loadable::Remote(id)) => id,
            _ => current.model.clone(),
        };
        let model_changed = need(&s, pinned) != loaded;
        let rerun = model_changed
            || a_changed
            || s.prompt != current.prompt
            || s.precision != current.precision
            || s.svd != current.svd
            || s.backend != current.backend
            || s.target != current.target;
        self.link.set_spec(s.clone());
        if model_changed {
            self.load_then_run(&need(&s, pinned));
        } else if rerun {
            self.start_run();
        } else {
            self.after_run();
        }
    }

    /// Listens for links pasted into the tab and for the classroom keys,
    /// for the page's lifetime.
    pub fn listen_to_window(&self) {
        let (session, link) = (*self, self.link);
        let on_hash = Closure::<dyn FnMut()>::new(move || session.on_hash_change());
        let on_key =
            Closure::<dyn FnMut(web_sys::KeyboardEvent)>::new(move |ev: web_sys::KeyboardEvent| {
                link.on_key(ev)
            });
        if let Some(w) = web_sys::window() {
            let _ =
                w.add_event_listener_with_callback("hashchange", on_hash.as_ref().unchecked_ref());
            let _ = w.add_event_listener_with_callback("keydown", on_key.as_ref().unchecked_ref());
        }
        on_hash.forget();
        on_key.forget();
    }
}
