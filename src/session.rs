//! The session with the engine worker: the job queue (a run, then the
//! on-demand layers, `J_i` and steering), the replies routed (the model's
//! to the model state, a job's into Results), a crash or a cancel.

use crate::browser;
use crate::messages::{self, Message};
use crate::page::Page;
use crate::run_state::{run_precision, BackendInfo, ModelState, Results, Running, Task};
use crate::views::snapshot::SnapshotCheck;
use lens_protocol::messages::RunRequest;
use lens_protocol::{AnalysisSpec, ErrorKind, Precision, Reply, Request, Snapshot, Stage, View};
use leptos::prelude::*;

/// Top next tokens a run asks for.
const TOP_K: usize = 10;

impl Page {
    pub fn post(&self, req: &Request) {
        if let Some(e) = self.engine.get_value() {
            e.post(req);
        }
    }

    /// The progress bar follows the job the worker is on: the first queued.
    fn show_front(&self) {
        let front = self.queue.with_value(|q| q.first().copied());
        self.running.set(front.map(|(job, task)| Running {
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
    }

    fn finish(&self, j: u32) {
        let was_front = self.queue.with_value(|q| q.first().map(|f| f.0) == Some(j));
        self.queue.update_value(|q| q.retain(|(k, _)| *k != j));
        if was_front {
            self.show_front();
        }
    }

    fn enqueue(&self, task: Task, make: &dyn Fn(u32) -> Request) {
        let id = self.job.get_value() + 1;
        self.job.set_value(id);
        let empty = self.queue.with_value(|q| q.is_empty());
        self.queue.update_value(|q| q.push((id, task)));
        if empty {
            self.show_front();
        }
        self.post(&make(id));
    }

    pub(crate) fn is_mine(&self, j: u32) -> bool {
        self.queue.with_value(|q| q.iter().any(|(k, _)| *k == j))
    }

    /// On-demand stages follow the latest run's precision (its Report's:
    /// f32 when it ran on the GPU), so the worker reuses its `J`.
    fn job_precision(&self, s: &AnalysisSpec) -> Precision {
        self.results
            .with_untracked(|r| r.report.as_ref().map(|rep| rep.precision))
            .unwrap_or_else(|| run_precision(s))
    }

    /// The heatmap and columns of `J_i` at `position` (needs the full `J`).
    pub fn inspect(&self, position: usize) {
        let s = self.spec.get_untracked();
        if !self.results.with_untracked(Results::has_full_j) || !self.model_ready() {
            return;
        }
        self.results.update(|r| r.inspect = None);
        let precision = self.job_precision(&s);
        let prompt = self.results.with_untracked(|r| r.prompt.clone());
        self.enqueue(Task::Inspect, &|job| Request::Inspect {
            job,
            prompt: prompt.clone(),
            precision,
            position,
        });
    }

    pub fn compute_layers(&self) {
        let s = self.spec.get_untracked();
        // The curves of the prompt on screen (the run's), not of an edit
        // typed since.
        let prompt = self.results.with_untracked(|r| r.prompt.clone());
        if s.layers.is_empty() || prompt.is_empty() || !self.model_ready() {
            return;
        }
        let precision = self.job_precision(&s);
        self.enqueue(Task::Layers, &|job| Request::Layers {
            job,
            prompt: prompt.clone(),
            precision,
            layers: s.layers.clone(),
        });
    }

    pub fn run_steering(&self) {
        let s = self.spec.get_untracked();
        if !self.model_ready() {
            return;
        }
        let precision = self.job_precision(&s);
        self.enqueue(Task::Steer, &|job| Request::Steer {
            job,
            precision,
            steer: s.steer.clone(),
        });
    }

    /// Runs the analysis the link state describes.
    pub fn start_run(&self) {
        if !self.queue.with_value(|q| q.is_empty()) {
            // A new analysis (a link pasted into this tab) while the worker
            // is busy: it is replaced, and the run starts once it is ready.
            self.run_when_ready.set_value(true);
            self.model_state.set(ModelState::Starting);
            self.restart_engine();
            return;
        }
        if !self.model_ready() {
            self.run_when_ready.set_value(true);
            return;
        }
        let s = self.spec.get_untracked();
        self.error.set(None);
        self.pool_note.set(None);
        self.results
            .set(Results::asking(&s.prompt, run_precision(&s)));
        self.sync_url();
        self.enqueue(Task::Run, &|job| {
            Request::Run(RunRequest {
                job,
                prompt: s.prompt.clone(),
                precision: run_precision(&s),
                top: TOP_K,
                full: true,
                svd: s.svd,
                backend: s.backend,
                pool: self.pool_size.get_untracked().map_or(1, |p| p.workers),
            })
        });
    }

    /// After a run: the selected token's `J_i`, then whatever the link asked
    /// for on demand; and the link's snapshot checked.
    pub fn after_run(&self) {
        let s = self.spec.get_untracked();
        let n = self.results.with_untracked(|r| r.tokens().len());
        // An embed link draws one view: J_i only when that is the heatmap.
        if n > 0 && matches!(s.embed, None | Some(View::Heatmap)) {
            self.inspect(s.token.filter(|&t| t < n).unwrap_or(n - 1));
        }
        let (has_layers, has_steering) = self.results.with_untracked(|r| {
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
        if let Some(report) = self.results.with_untracked(|r| r.report.clone()) {
            let computed = Snapshot::of(&report);
            self.snapshot.update(|snap| {
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
    }

    /// Routes one reply of the worker.
    pub fn on_reply(&self, r: Reply) {
        match r {
            Reply::Started => self.load_current(),
            Reply::Download {
                received,
                total,
                bytes_per_s,
                file,
                from_cache,
            } => self.model_state.set(ModelState::Downloading {
                received,
                total,
                rate: bytes_per_s,
                file,
                from_cache,
            }),
            Reply::Progress { job: None, .. } => self.model_state.set(ModelState::Parsing),
            Reply::Progress {
                job: Some(j),
                stage,
                done,
                total,
            } if self.is_mine(j) => self.running.update(|r| {
                if let Some(r) = r.as_mut().filter(|r| r.job == j) {
                    r.stage = stage;
                    r.done = done;
                    r.total = total;
                }
            }),
            ready @ Reply::ModelReady { .. } => self.on_model_ready(ready),
            Reply::Notice { message } => self.load_note.set(Some(Message::from_text(&message))),
            Reply::Failed {
                job: j,
                kind,
                message,
            } => {
                match j {
                    Some(j) if self.is_mine(j) => self.finish(j),
                    Some(_) => return,
                    None if kind == ErrorKind::Quota => {
                        // The model still loads, only not kept: a note, not an error.
                        self.load_note
                            .set(Some(messages::worker_failed(kind, &message, false)));
                        return;
                    }
                    None => self.model_state.set(ModelState::Failed),
                }
                self.error
                    .set(Some(messages::worker_failed(kind, &message, j.is_some())));
            }
            r => self.on_job_reply(r),
        }
    }

    /// A job's result: into Results for the views.
    fn on_job_reply(&self, r: Reply) {
        let Some(j) = r.job().filter(|&j| self.is_mine(j)) else {
            return;
        };
        if let Reply::Backend {
            device,
            adapter,
            fallback,
            ..
        } = &r
        {
            self.backend.set(BackendInfo {
                device: *device,
                adapter: adapter.clone(),
                fallback: fallback.clone(),
            });
        }
        let ends = r.ends_job();
        let done = matches!(r, Reply::Done { .. });
        self.results.update(|res| res.apply(r));
        if ends {
            self.finish(j);
        }
        if done {
            let s = self.spec.get_untracked();
            if s.view != View::Prediction && s.embed.is_none() {
                browser::scroll_to(&format!("view-{}", s.view.as_str()));
            }
            self.after_run();
        }
    }

    /// The worker died (a trap: out of memory, a panic).
    pub fn on_crash(&self, msg: String) {
        let was_running = self.running.get_untracked().is_some();
        if !was_running && self.model_state.with_untracked(|m| m.is_loading()) {
            // Loading the same files again would end the same way: nothing
            // loads until the next choice.
            self.loaded.set_value(None);
            self.run_when_ready.set_value(false);
            self.error.set(Some(messages::crash(&msg, true, false)));
            self.restart_engine();
            return;
        }
        self.error
            .set(Some(messages::crash(&msg, false, was_running)));
        self.restart_engine();
    }

    /// The Cancel button: stops a run (the model reloads from the cache)
    /// or a download (nothing loads until the next choice).
    pub fn cancel(&self) {
        let was_running = self.running.get_untracked().is_some();
        self.run_when_ready.set_value(false);
        if !was_running {
            self.loaded.set_value(None);
            // Said at once: the fresh worker only confirms it.
            self.model_state.set(ModelState::Idle);
        }
        self.error.set(Some(messages::cancelled(was_running)));
        self.restart_engine();
    }
}
