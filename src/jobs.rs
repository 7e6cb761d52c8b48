//! The jobs (context [`Jobs`]): the queue of jobs posted to the run's
//! worker, the one it is on, what they produced (Results), their error,
//! and where the latest run's passes ran.

use crate::browser;
use crate::messages::{self, Message};
use crate::queue::JobQueue;
use crate::run_state::{run_precision, BackendInfo, Results, Running, Task};
use lens_protocol::report::Report;
use lens_protocol::{AnalysisSpec, ErrorKind, Precision, Reply, Stage};
use leptos::prelude::*;

#[derive(Clone, Copy)]
pub(crate) struct Jobs {
    /// Jobs posted to the worker and not finished, in order (it works on
    /// one at a time), and the last id handed out.
    pub queue: StoredValue<JobQueue>,
    /// The job the worker is on, and how far it is.
    pub running: RwSignal<Option<Running>>,
    pub results: RwSignal<Results>,
    pub error: RwSignal<Option<Message>>,
    /// Where the latest run's passes run (the worker's Backend reply).
    pub backend: RwSignal<BackendInfo>,
}

impl Jobs {
    pub fn new() -> Self {
        Jobs {
            queue: StoredValue::new(JobQueue::default()),
            running: RwSignal::new(None),
            results: RwSignal::new(Results::default()),
            error: RwSignal::new(None),
            backend: RwSignal::new(BackendInfo::default()),
        }
    }

    pub fn get() -> Self {
        expect_context::<Jobs>()
    }

    pub fn is_mine(&self, j: u32) -> bool {
        self.queue.with_value(|q| q.contains(j))
    }

    pub fn idle(&self) -> bool {
        self.queue.with_value(JobQueue::is_empty)
    }

    /// A job of `task` queued; its id (the caller posts its request).
    pub fn enqueue(&self, task: Task) -> u32 {
        let (id, front) = self
            .queue
            .try_update_value(|q| q.push(task))
            .unwrap_or_default();
        if front {
            self.show_front();
        }
        id
    }

    /// Job `j` is over: the next one's progress shows.
    pub fn finish(&self, j: u32) {
        if self.queue.try_update_value(|q| q.finish(j)) == Some(true) {
            self.show_front();
        }
    }

    /// The worker is gone: its jobs with it.
    pub fn drop_all(&self) {
        self.queue.update_value(JobQueue::clear);
        self.running.set(None);
    }

    /// Job `j` failed: it ends, and the page says why (nothing for a job
    /// no longer queued).
    pub fn failed(&self, j: u32, kind: ErrorKind, message: &str) {
        if !self.is_mine(j) {
            return;
        }
        self.finish(j);
        self.error
            .set(Some(messages::worker_failed(kind, message, true)));
    }

    /// The progress bar follows the job the worker is on: the first queued
    /// (none for typing's live job: it takes a moment, and the Run button
    /// stays).
    fn show_front(&self) {
        let front = self
            .queue
            .with_value(JobQueue::front)
            .filter(|(_, task)| *task != Task::Live);
        self.running.set(front.map(|(job, task)| Running {
            job,
            task,
            stage: match task {
                Task::Run => Stage::Predict,
                Task::Layers => Stage::Layers,
                Task::Inspect => Stage::Inspect,
                Task::Steer => Stage::Steering,
                Task::Pin | Task::Live => Stage::Predict,
            },
            done: 0,
            total: 1,
            started: browser::now_ms(),
        }));
    }

    /// Progress of job `j`, shown when it is the one the worker is on.
    pub fn progress(&self, j: u32, stage: Stage, done: usize, total: usize) {
        self.running.update(|r| {
            if let Some(r) = r.as_mut().filter(|r| r.job == j) {
                r.stage = stage;
                r.done = done;
                r.total = total;
            }
        });
    }

    /// A queued job's result, into Results for the views.
    pub fn apply(&self, r: Reply) {
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
        self.results.update(|res| res.apply(r));
    }

    /// On-demand stages follow the latest run's precision (its Report's:
    /// f32 when it ran on the GPU), so the worker reuses its `J`.
    pub fn job_precision(&self, s: &AnalysisSpec) -> Precision {
        self.results
            .with_untracked(|r| r.report.as_ref().map(|rep| rep.precision))
            .unwrap_or_else(|| run_precision(s))
    }

    /// A run or an on-demand job is in progress.
    pub fn busy(&self) -> Signal<bool> {
        let running = self.running;
        Signal::derive(move || running.get().is_some())
    }

    /// A part of the Report, derived for a view's signal: `None` until a
    /// run has a Report and, where the part is optional, it has arrived.
    pub fn report_signal<T: Send + Sync + 'static>(
        &self,
        f: impl Fn(&Report) -> Option<T> + Send + Sync + 'static,
    ) -> Signal<Option<T>> {
        let results = self.results;
        Signal::derive(move || results.with(|r| r.report.as_ref().and_then(&f)))
    }
}
