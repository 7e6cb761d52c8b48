//! The worker's transport for the engine's one run driver
//! (`lens_engine::run`): a request becomes the run's options, the run's
//! events become replies for the page, its errors a kind and a sentence.
//! The order of the stages is the engine's; nothing here computes.

use crate::pool::{Pool, Pooled};
use crate::reply::progress_reply;
pub use crate::reply::{Clock, Emit, Failure};
use lens_engine::analysis::steering::SteerOptions;
use lens_engine::analysis::{AnalyzeOptions, Extent};
use lens_engine::run::{self, Accelerator, Event, Hooks, Limits, Session};
use lens_engine::{Model, Precision};
use lens_protocol::messages::RunRequest;
use lens_protocol::{Reply, SteerSpec};
use std::rc::Rc;

/// The run's events as this job's replies.
struct Replies {
    job: u32,
    emit: Emit,
    now_ms: Clock,
}

impl Hooks for Replies {
    fn emit(&self, event: Event) {
        let job = self.job;
        (self.emit)(match event {
            Event::Backend {
                device,
                adapter,
                fallback,
            } => Reply::Backend {
                job,
                device,
                adapter,
                fallback,
            },
            Event::Prediction(prediction) => Reply::Prediction { job, prediction },
            Event::Part(part) => Reply::Part { job, part },
            Event::Progress { stage, done, total } => progress_reply(job, stage, done, total),
            Event::LongPrompt { tokens, reason } => Reply::LongPrompt {
                job,
                tokens,
                reason,
            },
            Event::Notice(message) => Reply::Notice { message },
            Event::Inspect {
                heatmap,
                columns,
                ms,
            } => Reply::Inspect {
                job,
                heatmap,
                columns,
                ms,
            },
            Event::Comparison(comparison) => Reply::Comparison { job, comparison },
            Event::Done { ms } => Reply::Done { job, ms },
        })
    }

    fn now_ms(&self) -> f64 {
        (self.now_ms)()
    }
}

fn hooks(job: u32, emit: Emit, now_ms: Clock) -> Rc<dyn Hooks> {
    Rc::new(Replies { job, emit, now_ms })
}

/// The options the page's runs use: the CLI's `analyze` defaults within a
/// tab's limits.
pub fn page_options(precision: Precision, memory_limit: Option<u64>) -> AnalyzeOptions {
    AnalyzeOptions {
        limits: Limits {
            memory_bytes: memory_limit,
            ..Limits::TAB
        },
        ..AnalyzeOptions::new(precision)
    }
}

/// The options of `req`.
pub fn request_options(req: &RunRequest, memory_limit: Option<u64>) -> AnalyzeOptions {
    AnalyzeOptions {
        top: req.top.clamp(1, 50),
        extent: req.extent,
        svd_mode: req.svd,
        target: req.target.clone(),
        ..page_options(req.precision, memory_limit)
    }
}

/// Where a run computes, as the worker has it: the GPU (if any) and why
/// auto did not take one, the page's pool of workers for `J` on the CPU,
/// the memory the worker may use.
pub struct Compute<'a> {
    pub gpu: Option<&'a dyn Accelerator>,
    pub fallback: Option<String>,
    pub pool: Option<&'a dyn Pool>,
    pub memory_limit: Option<u64>,
}

impl<'a> Compute<'a> {
    pub const CPU: Compute<'static> = Compute {
        gpu: None,
        fallback: None,
        pool: None,
        memory_limit: None,
    };

    /// The page's pool as the engine's `run::Pool` for `job`.
    fn pooled(&self, job: u32, emit: &Emit, now_ms: &Clock) -> Option<Pooled<'a>> {
        self.pool.map(|pool| Pooled {
            job,
            pool,
            emit: emit.clone(),
            now_ms: now_ms.clone(),
        })
    }

    /// Where the engine's run computes.
    fn engine<'p>(self, pooled: &'p Option<Pooled<'a>>) -> run::Compute<'p>
    where
        'a: 'p,
    {
        run::Compute {
            gpu: self.gpu,
            fallback: self.fallback,
            pool: pooled.as_ref().map(|p| p as &dyn run::Pool),
        }
    }
}

/// Runs `req` on `model` by the engine's run driver, each event sent as a
/// reply; what the on-demand stages need is left in `session`.
pub async fn run(
    model: &Model,
    req: &RunRequest,
    emit: Emit,
    now_ms: Clock,
    session: &mut Option<Session>,
    compute: Compute<'_>,
) -> Result<(), Failure> {
    // A live run (typing's shares) leaves the last run kept: the page pins
    // that one, and the on-demand stages reuse it.
    let keep = req.extent == Extent::Shares;
    if !keep {
        *session = None;
    }
    let opts = request_options(req, compute.memory_limit);
    let pooled = compute.pooled(req.job, &emit, &now_ms);
    let hooks = hooks(req.job, emit, now_ms);
    let (_, s) = run::run(model, &req.prompt, &opts, compute.engine(&pooled), &hooks).await?;
    if !keep {
        *session = Some(s);
    }
    Ok(())
}

/// What the page keeps of a run as a comparison's side A, beside its
/// Report: `J_cat`'s top left singular vectors, the model's depth, the
/// log-probabilities.
pub struct Kept {
    pub u: Vec<Vec<f64>>,
    pub depth: usize,
    pub log_probs: Vec<f64>,
}

/// What the page keeps of the last run as side A.
pub fn pin(model: &Model, session: &Option<Session>) -> Result<Kept, Failure> {
    let Some(s) = session else {
        return Err(Failure {
            kind: lens_protocol::ErrorKind::Engine,
            message: "there is no finished run to compare with: run the prompt first".into(),
        });
    };
    Ok(Kept {
        u: s.u_cat.clone(),
        depth: model.config.layers,
        log_probs: run::log_probs(model, s)?,
    })
}

/// Runs `req` as a comparison's side B against side `a` (the page's pinned
/// run, with its log-probabilities put back), B's layers at A's `layers`;
/// the comparison is a reply before `Done`.
#[allow(clippy::too_many_arguments)]
pub async fn compare(
    model: &Model,
    req: &RunRequest,
    layers: Vec<usize>,
    a: &lens_engine::analysis::compare::Side,
    same_model: bool,
    emit: Emit,
    now_ms: Clock,
    session: &mut Option<Session>,
    compute: Compute<'_>,
) -> Result<(), Failure> {
    *session = None;
    let opts = AnalyzeOptions {
        layers,
        ..request_options(req, compute.memory_limit)
    };
    let pooled = compute.pooled(req.job, &emit, &now_ms);
    let hooks = hooks(req.job, emit, now_ms);
    // A's model may be gone (another was picked): B's top token is looked
    // for among A's listed top tokens.
    let (_, s, _) = run::compare_on(
        a,
        run::LookupA::Listed,
        model,
        same_model,
        &req.prompt,
        &opts,
        compute.engine(&pooled),
        &hooks,
    )
    .await?;
    *session = Some(s);
    Ok(())
}

/// Layer curves and the path for `layers` (1-based), on demand.
#[allow(clippy::too_many_arguments)]
pub fn layers(
    model: &Model,
    job: u32,
    prompt: &str,
    precision: Precision,
    layers: &[usize],
    emit: Emit,
    now_ms: Clock,
    session: &mut Option<Session>,
) -> Result<(), Failure> {
    let opts = AnalyzeOptions {
        layers: layers.to_vec(),
        ..page_options(precision, None)
    };
    Ok(run::layers(
        model,
        prompt,
        &opts,
        session,
        &hooks(job, emit, now_ms),
    )?)
}

/// The heatmap of `J_i` at `position` and its largest columns and rows.
#[allow(clippy::too_many_arguments)]
pub fn inspect(
    model: &Model,
    job: u32,
    prompt: &str,
    precision: Precision,
    position: usize,
    emit: Emit,
    now_ms: Clock,
    session: &mut Option<Session>,
) -> Result<(), Failure> {
    let opts = page_options(precision, None);
    let hooks = hooks(job, emit, now_ms);
    Ok(run::inspect(
        model, prompt, position, &opts, session, &hooks,
    )?)
}

/// Steers `spec.text` with `spec.source`'s operator.
pub fn steer(
    model: &Model,
    job: u32,
    precision: Precision,
    spec: &SteerSpec,
    emit: Emit,
    now_ms: Clock,
) -> Result<(), Failure> {
    let mut so = SteerOptions::new(model, &spec.source);
    if let Some(l) = spec.layer {
        so.layer = l;
    }
    so.lambda = spec.lambda;
    so.tokens = spec.tokens.clamp(1, lens_protocol::spec::MAX_STEER_TOKENS);
    let opts = page_options(precision, None);
    Ok(run::steer(
        model,
        &spec.text,
        &so,
        &opts,
        &hooks(job, emit, now_ms),
    )?)
}
