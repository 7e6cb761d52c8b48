//! Typing (context [`Typing`]): after a pause in the prompt box, the
//! prompt's prediction and each token's exact share of the predicted
//! token's logit (a run of `Extent::Shares`: one transpose pass), in place
//! of the last results, without Run or a progress bar. Its state is plain
//! data (`queue::TypingState`); this posts the live jobs and takes their
//! replies, which the session routes here.

use crate::jobs::Jobs;
use crate::loading::Model;
use crate::queue::{JobQueue, TypingState};
use crate::run_state::{run_precision, Results, Task, TOP_K};
use crate::url_sync::Link;
use lens_protocol::messages::RunRequest;
use lens_protocol::report::Extent;
use lens_protocol::{Reply, Request};
use leptos::prelude::*;

/// The pause in typing after which the page shows the prompt's prediction
/// and shares (short: the visitor waits for this and the job together).
const LIVE_PAUSE_MS: u64 = 150;

#[derive(Clone, Copy)]
pub(crate) struct Typing {
    link: Link,
    model: Model,
    jobs: Jobs,
    state: StoredValue<TypingState>,
}

impl Typing {
    pub fn new(link: Link, model: Model, jobs: Jobs) -> Self {
        Typing {
            link,
            model,
            jobs,
            state: StoredValue::new(TypingState::default()),
        }
    }

    pub fn get() -> Self {
        expect_context::<Typing>()
    }

    /// The prompt box changed: a live job once no key came for a moment.
    pub fn typed(&self) {
        let Some(key) = self.state.try_update_value(TypingState::key) else {
            return;
        };
        let typing = *self;
        set_timeout(
            move || {
                if typing.state.with_value(|s| s.paused(key)) {
                    typing.live();
                }
            },
            std::time::Duration::from_millis(LIVE_PAUSE_MS),
        );
    }

    /// One live job of the prompt as it is now, unless it is shown
    /// already; while the worker is busy, one when it is free.
    fn live(&self) {
        let s = self.link.spec.get_untracked();
        if !self.model.ready() || s.prompt.trim().is_empty() {
            return;
        }
        let precision = run_precision(&s);
        let shown = self
            .jobs
            .results
            .with_untracked(|r| r.prompt == s.prompt && r.report.is_some() && r.asked == precision);
        if shown {
            return;
        }
        if !self.jobs.idle() {
            self.state.update_value(TypingState::wait);
            return;
        }
        let job = self.jobs.enqueue(Task::Live);
        self.state
            .update_value(|t| t.started(job, s.prompt.clone(), precision));
        self.model.post(&Request::Run(RunRequest {
            job,
            prompt: s.prompt,
            precision,
            top: TOP_K,
            extent: Extent::Shares,
            svd: s.svd,
            backend: s.backend,
            pool: 1,
            target: s.target,
        }));
    }

    /// A job ended: the live job typing left waiting, once the worker is free.
    pub fn then_live(&self) {
        if self.jobs.idle() && self.state.try_update_value(TypingState::take_pending) == Some(true)
        {
            self.live();
        }
    }

    /// A job was asked for: typing gives way (queued live jobs are dropped,
    /// their replies stale; a live run leaves the worker's kept run as it
    /// was; nothing waits, and an earlier key's pause does not fire).
    pub fn give_way(&self) {
        self.jobs.queue.update_value(JobQueue::drop_live);
        self.state.update_value(TypingState::gave_way);
    }

    /// Whether `job` is typing's live job.
    pub fn is_live(&self, job: u32) -> bool {
        self.state.with_value(|t| t.is_live(job))
    }

    /// Job `job` failed (the session shows why).
    pub fn failed(&self, job: u32) {
        self.state.update_value(|t| t.ended(job));
    }

    /// A reply of the live job `job`: its prediction replaces the page's
    /// results (not before: nothing blanks between keystrokes).
    pub fn on_reply(&self, job: u32, ends: bool, r: Reply) {
        if matches!(r, Reply::Prediction { .. }) {
            let of = self
                .state
                .with_value(|t| t.of(job).map(|(p, precision)| (p.to_string(), precision)));
            if let Some((prompt, precision)) = of {
                self.jobs.results.set(Results::asking(&prompt, precision));
                self.jobs.error.set(None);
            }
        }
        self.jobs.apply(r);
        if ends {
            self.jobs.finish(job);
            self.state.update_value(|t| t.ended(job));
        }
    }
}
