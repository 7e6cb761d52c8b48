//! The session's plain logic: the job queue (the worker works on one job
//! at a time, in the order they were posted) and where each reply of the
//! run's worker goes. Plain data, tested natively; `session` acts on it.

use crate::run_state::Task;
use lens_protocol::report::Part;
use lens_protocol::{ErrorKind, Precision, Reply, Stage};

/// Jobs posted to the worker and not finished, in order, and the last id
/// handed out (ids are never reused, so a late reply of a dropped job is
/// never taken for a new one's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobQueue {
    last: u32,
    jobs: Vec<(u32, Task)>,
}

impl JobQueue {
    /// Queues a job of `task` under a fresh id; says whether it is the
    /// front (the one the worker is on).
    pub fn push(&mut self, task: Task) -> (u32, bool) {
        self.last += 1;
        self.jobs.push((self.last, task));
        (self.last, self.jobs.len() == 1)
    }

    /// The job the worker is on.
    pub fn front(&self) -> Option<(u32, Task)> {
        self.jobs.first().copied()
    }

    pub fn contains(&self, job: u32) -> bool {
        self.jobs.iter().any(|(k, _)| *k == job)
    }

    /// What queued job `job` computes.
    pub fn task_of(&self, job: u32) -> Option<Task> {
        self.jobs.iter().find(|(k, _)| *k == job).map(|(_, t)| *t)
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// `job` is over; says whether it was the front (the next one starts).
    pub fn finish(&mut self, job: u32) -> bool {
        let was_front = self.front().map(|f| f.0) == Some(job);
        self.jobs.retain(|(k, _)| *k != job);
        was_front
    }

    /// Drops the live jobs (a run asked for, a newer prompt typed): the
    /// worker still ends them, their replies now stale.
    pub fn drop_live(&mut self) {
        self.jobs.retain(|(_, t)| *t != Task::Live);
    }

    /// The worker is gone (a crash, a cancel, a restart): its jobs with it.
    pub fn clear(&mut self) {
        self.jobs.clear();
    }
}

/// Typing's live jobs, as plain data: keystrokes counted (a pause's job
/// starts only if no key came after it), the live job in flight with the
/// prompt and precision its results are of, and whether the prompt changed
/// while the worker was busy (then one job when it is free, of the prompt
/// as it is then: typing never queues stale work).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypingState {
    keys: u64,
    in_flight: Option<(u32, String, Precision)>,
    pending: bool,
}

impl TypingState {
    /// A key: its number, for [`TypingState::paused`].
    pub fn key(&mut self) -> u64 {
        self.keys = self.keys.wrapping_add(1);
        self.keys
    }

    /// No key came after `key`.
    pub fn paused(&self, key: u64) -> bool {
        self.keys == key
    }

    /// The worker is busy: one live job when it is free.
    pub fn wait(&mut self) {
        self.pending = true;
    }

    /// A job ended with the worker now free: whether a live job waits.
    pub fn take_pending(&mut self) -> bool {
        std::mem::take(&mut self.pending)
    }

    /// Live job `job` of `prompt` at `precision` posted.
    pub fn started(&mut self, job: u32, prompt: String, precision: Precision) {
        self.in_flight = Some((job, prompt, precision));
    }

    /// Whether `job` is the live job in flight.
    pub fn is_live(&self, job: u32) -> bool {
        self.in_flight.as_ref().is_some_and(|(j, ..)| *j == job)
    }

    /// What the live job `job`'s results are of (its prompt, precision).
    pub fn of(&self, job: u32) -> Option<(&str, Precision)> {
        self.in_flight
            .as_ref()
            .filter(|(j, ..)| *j == job)
            .map(|(_, p, precision)| (p.as_str(), *precision))
    }

    /// Job `job` ended (done or failed): no live job in flight if it was
    /// the one (a key pressed meanwhile still waits).
    pub fn ended(&mut self, job: u32) {
        if self.is_live(job) {
            self.in_flight = None;
        }
    }

    /// A job was asked for (Run, a token's J_i, a pin…): the visitor works
    /// with the results on screen, so typing's live job in flight, the one
    /// waiting and the pause of an earlier key all give way (the next key
    /// starts again).
    pub fn gave_way(&mut self) {
        self.in_flight = None;
        self.pending = false;
        self.keys = self.keys.wrapping_add(1);
    }
}

/// Where a reply of the run's worker goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The pool's: `J` or a block's products wanted, rows computed, the
    /// progress on the pooled `J`.
    Pool,
    /// The model's: the worker started, a download, parsing, the model
    /// ready, a note.
    Model,
    /// A failure outside a job: the model did not load.
    ModelFailed,
    /// The browser would not keep the model: a note, the load goes on.
    NotKept,
    /// Progress of a queued job.
    Progress(u32),
    /// A queued job failed: it ends, with the message.
    JobFailed(u32),
    /// A queued job's result, for Results; `ends` when it is its last.
    Job { job: u32, ends: bool },
    /// A job no longer queued (replaced, cancelled): dropped.
    Stale,
}

/// Where `r` goes, given the queue and the job the pool works for.
pub fn route(r: &Reply, queue: &JobQueue, pooled: Option<u32>) -> Route {
    let mine = |j: u32| queue.contains(j);
    match r {
        Reply::JacobianWanted { job, .. } | Reply::ProductsWanted { job, .. } if mine(*job) => {
            Route::Pool
        }
        Reply::Joining { job } if pooled == Some(*job) => Route::Pool,
        // Rows are checked against the pooled job by the pool itself.
        Reply::Rows { .. } => Route::Pool,
        Reply::Progress {
            job: Some(job),
            stage: Stage::Jacobian,
            ..
        } if pooled == Some(*job) => Route::Pool,
        Reply::Started
        | Reply::Download { .. }
        | Reply::Progress { job: None, .. }
        | Reply::ModelReady { .. }
        | Reply::Notice { .. } => Route::Model,
        Reply::Failed {
            job: None,
            kind: ErrorKind::Quota,
            ..
        } => Route::NotKept,
        Reply::Failed { job: None, .. } => Route::ModelFailed,
        Reply::Progress { job: Some(j), .. } if mine(*j) => Route::Progress(*j),
        Reply::Failed { job: Some(j), .. } if mine(*j) => Route::JobFailed(*j),
        r => match r.job().and_then(|j| queue.task_of(j).map(|t| (j, t))) {
            Some((job, task)) => Route::Job {
                job,
                ends: ends(task, r),
            },
            None => Route::Stale,
        },
    }
}

/// Whether `r` is the last reply of a job of `task` (a failure ends any).
/// A run's layer curves (a comparison's B asks for them) do not end it.
pub fn ends(task: Task, r: &Reply) -> bool {
    match (task, r) {
        (_, Reply::Done { .. }) => true,
        (Task::Layers, Reply::Part { part, .. }) => matches!(part, Part::Layers(_)),
        (Task::Steer, Reply::Part { part, .. }) => matches!(part, Part::Steered(_)),
        (Task::Inspect, Reply::Inspect { .. }) => true,
        (Task::Pin, Reply::Pinned { .. }) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lens_protocol::report::{Layers, Part};

    #[test]
    fn live_jobs_give_way_and_their_replies_go_stale() {
        let mut q = queue(&[Task::Live]);
        let (run, front) = q.push(Task::Run);
        assert!(!front);
        q.drop_live();
        assert_eq!(q.front(), Some((run, Task::Run)));
        let late = Reply::Done { job: 1, ms: 3.0 };
        assert_eq!(route(&late, &q, None), Route::Stale);
    }

    #[test]
    fn typing_starts_after_a_pause_and_waits_for_a_busy_worker() {
        let mut t = TypingState::default();
        let first = t.key();
        let last = t.key();
        assert!(!t.paused(first) && t.paused(last));
        t.started(4, "The sky".into(), Precision::F64);
        assert!(t.is_live(4) && !t.is_live(3));
        assert_eq!(t.of(4), Some(("The sky", Precision::F64)));
        t.wait();
        assert!(t.take_pending() && !t.take_pending());
        t.wait();
        t.ended(3);
        assert!(t.is_live(4));
        t.ended(4);
        assert!(!t.is_live(4) && t.take_pending());
        let key = t.key();
        t.started(5, "The sea".into(), Precision::F32);
        t.wait();
        t.gave_way();
        assert!(!t.is_live(5) && t.of(5).is_none() && !t.take_pending() && !t.paused(key));
    }

    fn queue(tasks: &[Task]) -> JobQueue {
        let mut q = JobQueue::default();
        for t in tasks {
            q.push(*t);
        }
        q
    }

    fn failed(job: Option<u32>, kind: ErrorKind) -> Reply {
        Reply::Failed {
            job,
            kind,
            message: "x".into(),
        }
    }

    #[test]
    fn jobs_finish_in_order_and_the_next_becomes_the_front() {
        let mut q = JobQueue::default();
        assert_eq!(q.push(Task::Run), (1, true));
        assert_eq!(q.push(Task::Inspect), (2, false));
        assert_eq!(q.push(Task::Layers), (3, false));
        assert_eq!(q.front(), Some((1, Task::Run)));
        // A job behind the front may end first (a failure): the front stays.
        assert!(!q.finish(3));
        assert_eq!(q.front(), Some((1, Task::Run)));
        assert!(q.finish(1));
        assert_eq!(q.front(), Some((2, Task::Inspect)));
        assert!(q.finish(2));
        assert!(q.is_empty() && q.front().is_none());
        // Ids go on from the last one handed out.
        assert_eq!(q.push(Task::Steer), (4, true));
    }

    #[test]
    fn a_crash_or_a_cancel_drops_the_queue_and_its_late_replies() {
        let mut q = queue(&[Task::Run, Task::Inspect]);
        q.clear();
        assert!(q.is_empty() && !q.contains(1) && !q.contains(2));
        let done = Reply::Done { job: 1, ms: 1.0 };
        assert_eq!(route(&done, &q, None), Route::Stale);
        assert_eq!(
            route(&failed(Some(2), ErrorKind::Engine), &q, None),
            Route::Stale
        );
        // The next job is a new id, not one of the dropped.
        assert_eq!(q.push(Task::Run), (3, true));
    }

    #[test]
    fn the_models_replies_go_to_loading() {
        let q = queue(&[Task::Run]);
        let progress = |job| Reply::Progress {
            job,
            stage: Stage::Parse,
            done: 1,
            total: 2,
        };
        assert_eq!(route(&Reply::Started, &q, None), Route::Model);
        assert_eq!(route(&progress(None), &q, None), Route::Model);
        let notice = Reply::Notice {
            message: "a mirror".into(),
        };
        assert_eq!(route(&notice, &q, None), Route::Model);
        assert_eq!(
            route(&failed(None, ErrorKind::Quota), &q, None),
            Route::NotKept
        );
        assert_eq!(
            route(&failed(None, ErrorKind::Network), &q, None),
            Route::ModelFailed
        );
        assert_eq!(route(&progress(Some(1)), &q, None), Route::Progress(1));
        assert_eq!(route(&progress(Some(9)), &q, None), Route::Stale);
    }

    #[test]
    fn a_jobs_replies_go_to_results_and_its_last_ends_it() {
        let q = queue(&[Task::Run, Task::Layers]);
        let done = Reply::Done { job: 1, ms: 3.0 };
        assert_eq!(route(&done, &q, None), Route::Job { job: 1, ends: true });
        let layers = Reply::Part {
            job: 2,
            part: Part::Layers(Layers {
                layers: Vec::new(),
                path: Vec::new(),
                ms: 1.0,
            }),
        };
        assert_eq!(route(&layers, &q, None), Route::Job { job: 2, ends: true });
        // A comparison's run asks for its layer curves: they do not end it.
        let Reply::Part { part, .. } = layers.clone() else {
            unreachable!()
        };
        let in_run = Reply::Part { job: 1, part };
        assert_eq!(
            route(&in_run, &q, None),
            Route::Job {
                job: 1,
                ends: false
            }
        );
        let q = queue(&[Task::Pin]);
        let pinned = Reply::Pinned {
            job: 1,
            u: Vec::new(),
            depth: 18,
        };
        assert_eq!(route(&pinned, &q, None), Route::Job { job: 1, ends: true });
        let q = queue(&[Task::Run, Task::Layers]);
        let long = Reply::LongPrompt {
            job: 1,
            tokens: 60,
            reason: "long".into(),
        };
        assert_eq!(
            route(&long, &q, None),
            Route::Job {
                job: 1,
                ends: false
            }
        );
        assert_eq!(
            route(&failed(Some(2), ErrorKind::BadPrompt), &q, None),
            Route::JobFailed(2)
        );
    }

    #[test]
    fn the_pools_replies_go_to_the_pool_while_it_works_for_that_job() {
        let q = queue(&[Task::Run]);
        let wanted = Reply::JacobianWanted {
            job: 1,
            n: 2,
            rows: 4,
            width: 4,
            elem: 8,
        };
        assert_eq!(route(&wanted, &q, None), Route::Pool);
        let stale = Reply::JacobianWanted {
            job: 7,
            n: 2,
            rows: 4,
            width: 4,
            elem: 8,
        };
        assert_eq!(route(&stale, &q, None), Route::Stale);
        let jacobian = Reply::Progress {
            job: Some(1),
            stage: Stage::Jacobian,
            done: 1,
            total: 8,
        };
        assert_eq!(route(&jacobian, &q, Some(1)), Route::Pool);
        // Not pooled: the progress bar of the job itself.
        assert_eq!(route(&jacobian, &q, None), Route::Progress(1));
        assert_eq!(route(&Reply::Joining { job: 1 }, &q, Some(1)), Route::Pool);
        // Not pooled: a reply of the job that changes nothing.
        assert_eq!(
            route(&Reply::Joining { job: 1 }, &q, None),
            Route::Job {
                job: 1,
                ends: false
            }
        );
        let rows = Reply::Rows {
            job: 1,
            start: 0,
            count: 2,
            ms: 1.0,
        };
        assert_eq!(route(&rows, &q, Some(1)), Route::Pool);
    }
}
