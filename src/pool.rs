//! The page's pool of engine workers: beside the run's own worker (worker
//! 0), helpers that load the same model, as many as the visitor's cores and
//! memory allow. While a run needs its full `J` on the CPU, the page hands
//! out `J`'s rows in chunks to whichever worker is free, puts the values in
//! place (`lens_protocol::pool::Assembly`) and sends the whole `J` to the run.
//! A matrix-free run's Lanczos blocks go the same way: each block's vectors
//! shared out, their products `A x_j` assembled and sent back.
//! A helper that dies is replaced and its chunk redone; a chunk lost twice
//! ends the run with a message. No shared memory: chunks travel as
//! transferred buffers, so the page needs no cross-origin isolation.

use crate::browser;
use crate::jobs::Jobs;
use crate::loading::Model;
use crate::messages::{self, Message};
use crate::url_sync::Link;
use crate::worker_client::Engine;
use js_sys::{ArrayBuffer, Uint8Array};
use lens_protocol::pool::{Assembly, Chunk, PoolSize};
use lens_protocol::{ErrorKind, Precision, Reply, Request, Stage};
use leptos::prelude::*;
use std::rc::Rc;

/// The pool's state: its helpers, how many workers this machine allows,
/// the work in progress and what it did.
#[derive(Clone, Copy)]
pub(crate) struct Pool {
    /// The pool's other workers: worker `w` is `helpers[w - 1]`.
    pub helpers: StoredValue<Vec<Helper>, LocalStorage>,
    /// How many workers this machine allows, and why (engine details).
    pub pool_size: RwSignal<Option<PoolSize>>,
    /// The run's `J`, or a Lanczos block's products, being computed.
    pub pooled: StoredValue<Option<Pooled>, LocalStorage>,
    /// Chunks the pool computed since the model loaded, and by whom.
    pub shares: RwSignal<Shares>,
    /// What happened to the pool during the run (a worker replaced).
    pub pool_note: RwSignal<Option<Message>>,
}

impl Pool {
    pub fn new() -> Self {
        Pool {
            helpers: StoredValue::new_local(Vec::new()),
            pool_size: RwSignal::new(None),
            pooled: StoredValue::new_local(None),
            shares: RwSignal::new(Shares::default()),
            pool_note: RwSignal::new(None),
        }
    }

    pub fn get() -> Self {
        expect_context::<Pool>()
    }

    /// Workers for a run (the run's own included).
    pub fn workers(&self) -> usize {
        self.pool_size.get_untracked().map_or(1, |p| p.workers)
    }

    /// The job the pool works for.
    pub fn pooled_job(&self) -> Option<u32> {
        self.pooled
            .with_value(|p| p.as_ref().map(|p| p.assembly.job))
    }
}

/// The pool at work: its state, the model its workers load, the jobs it
/// works for (and the link, whose model id a helper loads).
#[derive(Clone, Copy)]
pub(crate) struct Workers {
    pub pool: Pool,
    pub model: Model,
    pub jobs: Jobs,
    pub link: Link,
}

/// A worker of the pool other than the run's.
pub(crate) struct Helper {
    engine: Rc<Engine>,
    /// It has the model.
    ready: bool,
}

/// What the pool is computing for a run.
enum Work {
    /// Rows of its `J` (`Request::Rows`).
    Rows,
    /// A matrix-free block's products (`Request::Products`): the block's
    /// vectors (`[count, width]`, f64 bytes), a chunk of them to each worker.
    Products {
        position: Option<usize>,
        vectors: Vec<u8>,
        width: usize,
    },
}

/// A run's `J`, or one of its Lanczos blocks, being computed by the pool.
pub(crate) struct Pooled {
    assembly: Assembly,
    work: Work,
    prompt: String,
    precision: Precision,
    /// The run's worker takes chunks too (it is done with the earlier stages).
    lead_joined: bool,
}

/// Chunks the pool computed for the runs since the model loaded, and how
/// many of them the helpers did (the footer's `data-` attributes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shares {
    pub all: usize,
    pub by_helpers: usize,
}

impl Workers {
    /// Starts the helpers this machine allows for a model of `model_bytes`
    /// (once the run's worker has the model, so they read it from the cache).
    pub fn start_helpers(&self, model_bytes: u64) {
        self.stop_helpers();
        let size = PoolSize::choose(browser::cores(), browser::device_memory_gb(), model_bytes);
        self.pool.pool_size.set(Some(size));
        self.pool.shares.set(Shares::default());
        let helpers = (1..size.workers)
            .map(|w| Helper {
                engine: self.spawn_helper(w),
                ready: false,
            })
            .collect();
        self.pool.helpers.set_value(helpers);
    }

    fn spawn_helper(&self, w: usize) -> Rc<Engine> {
        let workers = *self;
        Engine::new(
            Rc::new(move |r, buffer| workers.on_helper_reply(w, r, buffer)),
            Rc::new(move |msg| workers.on_helper_crash(w, msg)),
        )
    }

    /// Terminates every helper at once (a cancel, a crash, another model).
    pub fn stop_helpers(&self) {
        self.pool.helpers.update_value(|hs| {
            for h in hs.drain(..) {
                h.engine.terminate();
            }
        });
        self.pool.pooled.set_value(None);
    }

    /// A reply of the run's worker that is the pool's (`queue::route`).
    pub fn on_lead_reply(&self, r: Reply, buffer: Option<ArrayBuffer>) {
        match r {
            Reply::JacobianWanted {
                job,
                n,
                rows,
                width,
                elem,
            } if self.jobs.is_mine(job) => {
                self.pool.pool_note.set(None);
                self.start_pooled(
                    Assembly::new(job, n, rows, width, elem, self.workers()),
                    Work::Rows,
                    false,
                );
            }
            Reply::ProductsWanted {
                job,
                position,
                count,
                width,
            } if self.jobs.is_mine(job) => {
                let Some(buffer) = buffer else {
                    return self.pool_failed(job, "a block came without its vectors");
                };
                let vectors = Uint8Array::new(&buffer).to_vec();
                let assembly = Assembly::new(job, 1, count, width, 8, self.workers());
                let work = Work::Products {
                    position,
                    vectors,
                    width,
                };
                // The run's worker waits on the block: it takes a share at once.
                self.start_pooled(assembly, work, true);
            }
            Reply::Joining { job } if self.pooled_job() == Some(job) => {
                self.pool.pooled.update_value(|p| {
                    if let Some(p) = p {
                        p.lead_joined = true;
                    }
                });
                self.hand_out(0);
                self.show_pool_progress(job);
            }
            Reply::Rows {
                job, start, count, ..
            } => self.rows_arrived(0, job, Chunk { start, count }, buffer),
            Reply::Progress {
                job: Some(job),
                stage: Stage::Jacobian,
                done,
                total,
            } if self.pooled_job() == Some(job) => self.pool_progress(0, job, done, total),
            _ => {}
        }
    }

    /// The run's worker ended job `job` (done or failed): no more chunks
    /// for it.
    pub fn job_ended(&self, job: u32) {
        if self.pooled_job() == Some(job) {
            self.pool.pooled.set_value(None);
        }
    }

    fn on_helper_reply(&self, w: usize, r: Reply, buffer: Option<ArrayBuffer>) {
        match r {
            Reply::Started => {
                if let Some(e) = self.helper(w) {
                    // A load the run's worker could make; no message twice.
                    let id = self.link.spec.with_untracked(|s| s.model.clone());
                    let _ = self.model.load_into(&e, id);
                }
            }
            Reply::ModelReady { .. } => {
                self.set_ready(w, true);
                self.hand_out(w);
            }
            Reply::Progress {
                job: Some(job),
                done,
                total,
                ..
            } => self.pool_progress(w, job, done, total),
            Reply::Rows {
                job, start, count, ..
            } => self.rows_arrived(w, job, Chunk { start, count }, buffer),
            Reply::Failed {
                job: Some(job),
                message,
                ..
            } => self.chunk_lost(w, job, &message),
            Reply::Failed {
                job: None, message, ..
            } => {
                // It could not load the model: the others go on without it.
                self.set_ready(w, false);
                web_sys::console::warn_1(&format!("engine worker {w}: {message}").into());
            }
            _ => {}
        }
    }

    /// A helper died (a trap: out of memory, a panic): its chunk is redone
    /// and a fresh helper takes its place.
    fn on_helper_crash(&self, w: usize, msg: String) {
        // Not ready first, so that its chunk goes to another worker.
        self.set_ready(w, false);
        if let Some(job) = self.pooled_job() {
            self.chunk_lost(w, job, &msg);
        }
        if let Some(e) = self.helper(w) {
            e.spawn();
            if self.pooled_job().is_some() {
                self.pool
                    .pool_note
                    .set(Some(messages::helper_replaced(w, &msg)));
            }
        }
    }

    fn workers(&self) -> usize {
        self.pool.workers()
    }

    fn pooled_job(&self) -> Option<u32> {
        self.pool.pooled_job()
    }

    /// The pool starts on `assembly`'s chunks for the run in progress.
    fn start_pooled(&self, assembly: Assembly, work: Work, lead_joined: bool) {
        let prompt = self.jobs.results.with_untracked(|r| r.prompt.clone());
        let precision = self
            .jobs
            .results
            .with_untracked(|r| r.report.as_ref().map(|x| x.precision))
            .unwrap_or_default();
        self.pool.pooled.set_value(Some(Pooled {
            assembly,
            work,
            prompt,
            precision,
            lead_joined,
        }));
        for w in 0..self.workers() {
            self.hand_out(w);
        }
    }

    fn helper(&self, w: usize) -> Option<Rc<Engine>> {
        self.pool.helpers.with_value(|hs| {
            w.checked_sub(1)
                .and_then(|i| hs.get(i))
                .map(|h| h.engine.clone())
        })
    }

    fn set_ready(&self, w: usize, ready: bool) {
        self.pool.helpers.update_value(|hs| {
            if let Some(h) = w.checked_sub(1).and_then(|i| hs.get_mut(i)) {
                h.ready = ready;
            }
        });
    }

    /// The next chunk to worker `w`, if it is free and has the model.
    fn hand_out(&self, w: usize) {
        let engine = if w == 0 {
            let joined = self
                .pool
                .pooled
                .with_value(|p| p.as_ref().is_some_and(|p| p.lead_joined));
            self.model.engine.get_value().filter(|_| joined)
        } else {
            self.pool
                .helpers
                .with_value(|hs| hs.get(w - 1).filter(|h| h.ready).map(|h| h.engine.clone()))
        };
        let Some(engine) = engine else {
            return;
        };
        let request = self.pool.pooled.try_update_value(|p| {
            let p = p.as_mut()?;
            let c = p.assembly.next_for(w)?;
            let job = p.assembly.job;
            let (prompt, precision) = (p.prompt.clone(), p.precision);
            Some(match &p.work {
                Work::Rows => (
                    Request::Rows {
                        job,
                        prompt,
                        precision,
                        start: c.start,
                        count: c.count,
                    },
                    None,
                ),
                Work::Products {
                    position,
                    vectors,
                    width,
                } => {
                    let row = width * 8;
                    let share = vectors.get(c.start * row..(c.start + c.count) * row);
                    (
                        Request::Products {
                            job,
                            prompt,
                            precision,
                            position: *position,
                            start: c.start,
                            count: c.count,
                        },
                        share.map(Uint8Array::from),
                    )
                }
            })
        });
        match request {
            Some(Some((req, None))) => engine.post(&req),
            Some(Some((req, Some(share)))) => engine.post_buffer(&req, &share.buffer()),
            _ => {}
        }
    }

    fn rows_arrived(&self, w: usize, job: u32, chunk: Chunk, buffer: Option<ArrayBuffer>) {
        if self.pooled_job() != Some(job) {
            return;
        }
        let Some(buffer) = buffer else {
            return self.chunk_lost(w, job, "its rows came without their values");
        };
        let values = Uint8Array::new(&buffer).to_vec();
        let delivered = self
            .pool
            .pooled
            .try_update_value(|p| p.as_mut().map(|p| p.assembly.deliver(w, chunk, &values)));
        drop(values);
        match delivered {
            Some(Some(Ok(()))) => self.pool.shares.update(|s| {
                s.all += 1;
                s.by_helpers += usize::from(w > 0);
            }),
            Some(Some(Err(e))) => return self.chunk_lost(w, job, &e),
            _ => return,
        }
        if self
            .pool
            .pooled
            .with_value(|p| p.as_ref().is_some_and(|p| p.assembly.is_complete()))
        {
            self.send_assembled();
        } else {
            self.hand_out(w);
            self.show_pool_progress(job);
        }
    }

    /// What the pool assembled (`J`, or a block's products) to the run's
    /// worker (transferred, not copied).
    fn send_assembled(&self) {
        let Some(p) = self.pool.pooled.try_update_value(|p| p.take()).flatten() else {
            return;
        };
        let job = p.assembly.job;
        let Some(bytes) = p.assembly.into_bytes() else {
            return;
        };
        let array = Uint8Array::from(bytes.as_slice());
        drop(bytes);
        if let Some(e) = self.model.engine.get_value() {
            e.post_buffer(&Request::Assembled { job }, &array.buffer());
        }
    }

    /// Worker `w` failed its chunk: it goes to another worker, or the run
    /// ends when that chunk has failed too often.
    fn chunk_lost(&self, w: usize, job: u32, why: &str) {
        if self.pooled_job() != Some(job) {
            return;
        }
        let lost = self
            .pool
            .pooled
            .try_update_value(|p| p.as_mut().map(|p| p.assembly.lost(w, why)));
        if let Some(Some(Err(e))) = lost {
            return self.pool_failed(job, &e);
        }
        for v in 0..self.workers() {
            self.hand_out(v);
        }
    }

    /// The pool cannot finish the run's work: the run ends with why.
    fn pool_failed(&self, job: u32, why: &str) {
        let message =
            format!("The run stopped: {why}. Try again, or choose f32 or a shorter prompt.");
        self.jobs.failed(job, ErrorKind::Engine, &message);
        self.restart_engine();
    }

    /// Stops whatever the workers do: the job queue is dropped, every
    /// worker of the pool is terminated at once, and a fresh run worker
    /// starts (it reloads the model from `loaded`; the helpers follow once
    /// it has). Every restart of the page goes through here.
    pub fn restart_engine(&self) {
        self.jobs.drop_all();
        self.stop_helpers();
        self.model.respawn();
    }

    fn pool_progress(&self, w: usize, job: u32, done: usize, total: usize) {
        if self.pooled_job() != Some(job) {
            return;
        }
        self.pool.pooled.update_value(|p| {
            if let Some(p) = p {
                p.assembly.progress_of(w, done, total);
            }
        });
        self.show_pool_progress(job);
    }

    /// The progress bar, summed over the workers, once the run's worker
    /// is on `J` itself (a matrix-free run's bar counts its blocks).
    fn show_pool_progress(&self, job: u32) {
        let Some((done, total)) = self.pool.pooled.with_value(|p| {
            p.as_ref()
                .filter(|p| p.lead_joined && matches!(p.work, Work::Rows))
                .map(|p| p.assembly.progress())
        }) else {
            return;
        };
        self.jobs.running.update(|r| {
            if let Some(r) = r.as_mut().filter(|r| r.job == job) {
                r.stage = Stage::Jacobian;
                r.done = done;
                r.total = total;
            }
        });
    }
}
