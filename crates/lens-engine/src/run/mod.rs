//! The one run driver: the order of the stages, the SVD plan, the other
//! precision, the certificate and the ordinary error, written once. The
//! CLI's `analyze`, the browser worker, the comparison and the Python
//! package drive [`run`] and add only their transport: where the events go
//! ([`Hooks`]), where the passes compute ([`Compute`]).
//!
//! A run: the prediction, each token's exact share of the target's logit
//! (one transpose pass: all a typing visitor waits for), the contributions
//! `c_i = J_i x_i` with both precisions' reconstruction (and, on an
//! accelerator, a certificate against the f64 CPU pass), then in full: the ordinary
//! Jacobian's error, the full detached `J` (or, by the plan, the top of its
//! spectrum matrix-free), the spectra decoded, the attention, the layer
//! curves and steering asked for. Each part is emitted as soon as it is
//! done and folded into the run's Report by `Report::apply`.

mod compare;
mod compute;
mod session;

pub use compare::{
    compare_here, compare_on, compare_to, log_probs, options_b, run_side, side, vocabularies,
    LookupA,
};
pub use compute::{Accelerator, Boxed, Compute, Pool};
pub use session::{inspect, layers, steer, Session, HEATMAP_CELLS};

pub use crate::analysis::Limits;
use crate::analysis::{certificate, AnalyzeOptions, Extent, JacobianValues};
use crate::error::{EngineError, Result};
use crate::forward::{Precision, PrecisionDType};
use crate::jacobian;
use crate::memory::MemoryNeed;
use crate::model::Model;
use crate::progress;
use crate::stages;
use crate::trace::trace;
use lens_report::{
    Certificate, Columns, Device, Heatmap, Part, Prediction, Report, Stage, SvdMode,
};
use std::rc::Rc;

/// The probes' seed: fixed, so a certificate is reproducible.
pub const CERTIFICATE_SEED: u64 = 2505_24293;
/// Prompts longer than this (tokens) run matrix-free in `SvdMode::Auto`.
pub const LONG_PROMPT_TOKENS: usize = 48;

/// What a run says as it goes. The transport turns these into replies
/// (the worker), a folded Report and a progress line (the CLI), Python
/// callbacks (the package).
#[derive(Debug, Clone)]
pub enum Event {
    /// Where the run computes, said first.
    Backend {
        device: Device,
        adapter: Option<String>,
        fallback: Option<String>,
    },
    /// The frozen forward's prediction: it starts the Report.
    Prediction(Prediction),
    /// One stage's result, to fold with `Report::apply`.
    Part(Part),
    /// Progress within a stage.
    Progress {
        stage: Stage,
        done: usize,
        total: usize,
    },
    /// The run finds the top of the spectrum matrix-free, and why.
    LongPrompt { tokens: usize, reason: String },
    /// Something the user should know that is not an error (a fallback).
    Notice(String),
    /// A `J_i`'s heatmap and decoded columns (on demand).
    Inspect {
        heatmap: Heatmap,
        columns: Columns,
        ms: f64,
    },
    /// Two runs compared (a comparison's B run, said before its `Done`).
    Comparison(Box<lens_report::Comparison>),
    /// The run is over.
    Done { ms: f64 },
}

/// The caller's side of a run: where its events go, its clock (the engine
/// has none: `Instant` does not exist in the browser), and whether it
/// should stop (checked between stages).
pub trait Hooks {
    fn emit(&self, event: Event);
    fn now_ms(&self) -> f64;
    fn cancelled(&self) -> bool {
        false
    }
}

/// The progress of the passes inside `stage`, as events.
pub(crate) fn progress_of(hooks: &Rc<dyn Hooks>, stage: Stage) -> progress::Hook {
    let h = hooks.clone();
    Rc::new(move |done, total| h.emit(Event::Progress { stage, done, total }))
}

fn check_cancel(hooks: &Rc<dyn Hooks>) -> Result<()> {
    if hooks.cancelled() {
        return Err(EngineError::Cancelled);
    }
    Ok(())
}

fn bad(message: impl Into<String>) -> EngineError {
    EngineError::BadRequest(message.into())
}

/// The token ids of `prompt`, refused with a sentence when the run cannot
/// take it (empty, past the model's window or the caller's limit).
pub fn encode(model: &Model, prompt: &str, limits: &Limits) -> Result<Vec<u32>> {
    if prompt.trim().is_empty() {
        return Err(bad("the prompt is empty: type some text first"));
    }
    let ids = model.encode(prompt).map_err(|e| bad(e.to_string()))?;
    if let Some(max) = limits.max_tokens.filter(|&m| ids.len() > m) {
        return Err(bad(format!(
            "the prompt has {} tokens; at most {max} are analysed here",
            ids.len()
        )));
    }
    Ok(ids)
}

/// The bytes of a full `J` of `n` tokens at width `d`, or an error when
/// they overflow (a prompt no machine holds).
fn jacobian_bytes(n: usize, d: usize, precision: Precision) -> Result<usize> {
    n.checked_mul(d)
        .and_then(|v| v.checked_mul(d))
        .and_then(|v| v.checked_mul(precision.dtype().size_in_bytes()))
        .ok_or_else(|| {
            bad(format!(
                "a Jacobian of {n} tokens at width {d} is too large"
            ))
        })
}

/// How a run of `n` tokens finds `J_cat`'s spectrum: `None` by forming `J`,
/// `Some(why)` matrix-free; an error when `mode` asks for a `J` past the
/// limit.
pub fn svd_plan(
    n: usize,
    d: usize,
    precision: Precision,
    mode: SvdMode,
    limits: &Limits,
) -> Result<Option<String>> {
    let j_bytes = jacobian_bytes(n, d, precision)?;
    let too_big = limits.max_jacobian_bytes.filter(|&max| j_bytes > max);
    Ok(match (mode, too_big) {
        (SvdMode::Krylov, _) => Some("matrix-free was asked for".into()),
        (SvdMode::Full, Some(max)) => {
            return Err(bad(format!(
                "the full Jacobian of {n} tokens would take {} MB, more than a browser tab \
                 can spare ({} MB): shorten the prompt, or let the page find the top of the \
                 spectrum without it (SVD: auto or matrix-free)",
                j_bytes >> 20,
                max >> 20
            )))
        }
        (SvdMode::Full, None) => None,
        (SvdMode::Auto, Some(_)) => Some(format!(
            "its full Jacobian would take {} MB, more than a tab can spare",
            j_bytes >> 20
        )),
        (SvdMode::Auto, None) if n > LONG_PROMPT_TOKENS => {
            Some(format!("it has more than {LONG_PROMPT_TOKENS} tokens"))
        }
        (SvdMode::Auto, None) => None,
    })
}

/// Refuses a run whose estimated memory (the model, the prompt's frozen
/// forward and `J`) is past the limit, with the numbers.
fn room_for_run(
    model: &Model,
    n: usize,
    precision: Precision,
    full_j: bool,
    limits: &Limits,
) -> Result<()> {
    let Some(limit) = limits.memory_bytes else {
        return Ok(());
    };
    let held = MemoryNeed::held_by_model(model.weights.stored_bytes() as u64);
    let need = MemoryNeed::to_run(held, &model.config, n, precision, full_j);
    match need.refuse(limit, &format!("This prompt ({n} tokens)")) {
        Some(m) => Err(EngineError::OutOfMemory(format!(
            "{m}: shorten the prompt, or choose f32"
        ))),
        None => Ok(()),
    }
}

/// Runs `body`, returning its result and the time it took on `hooks`' clock.
fn timed<T>(hooks: &Rc<dyn Hooks>, body: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = hooks.now_ms();
    let out = body()?;
    Ok((out, hooks.now_ms() - t))
}

/// The run of `prompt` with `opts` on `compute`. Where an accelerator's
/// device is lost in the middle (a driver reset, the browser's GPU process
/// gone), the run is done again on the CPU and the caller told why (the
/// parts already emitted are replaced by the CPU's). Returns the folded
/// Report and what the on-demand stages need.
pub async fn run(
    model: &Model,
    prompt: &str,
    opts: &AnalyzeOptions,
    compute: Compute<'_>,
    hooks: &Rc<dyn Hooks>,
) -> Result<(Report, Session)> {
    let gpu = compute.gpu;
    let out = run_on(model, prompt, opts, &compute, hooks).await;
    let Some(why) = gpu.and_then(|g| g.lost()).filter(|_| out.is_err()) else {
        return out;
    };
    hooks.emit(Event::Notice(format!(
        "The graphics device stopped in the middle of the run ({why}); \
         the run is being done again on the CPU."
    )));
    let cpu = Compute {
        gpu: None,
        fallback: Some(format!("the GPU device was {why} in the middle of the run")),
        pool: compute.pool,
    };
    run_on(model, prompt, opts, &cpu, hooks).await
}

/// [`run`] on the CPU of this thread, at once (the CLI, tests, Python).
pub fn run_here(
    model: &Model,
    prompt: &str,
    opts: &AnalyzeOptions,
    hooks: &Rc<dyn Hooks>,
) -> Result<(Report, Session)> {
    jacobian::now(run(model, prompt, opts, Compute::CPU, hooks))
}

/// Hooks that drop every event, on the process's clock (natively).
#[cfg(not(target_arch = "wasm32"))]
pub fn quiet() -> Rc<dyn Hooks> {
    struct Quiet(std::time::Instant);
    impl Hooks for Quiet {
        fn emit(&self, _: Event) {}
        fn now_ms(&self) -> f64 {
            self.0.elapsed().as_secs_f64() * 1e3
        }
    }
    Rc::new(Quiet(std::time::Instant::now()))
}

/// The whole analysis on this thread's CPU, its events dropped: the Report.
#[cfg(not(target_arch = "wasm32"))]
pub fn analyze(model: &Model, prompt: &str, opts: &AnalyzeOptions) -> Result<Report> {
    Ok(run_here(model, prompt, opts, &quiet())?.0)
}

async fn run_on(
    model: &Model,
    prompt: &str,
    opts: &AnalyzeOptions,
    compute: &Compute<'_>,
    hooks: &Rc<dyn Hooks>,
) -> Result<(Report, Session)> {
    let start = hooks.now_ms();
    let gpu = compute.gpu;
    let limits = &opts.limits;
    // A bad prompt or target fails before anything is said about the run.
    let ids = encode(model, prompt, limits)?;
    let target = match &opts.target {
        Some(name) => Some(model.tokenizer.token_id(name)?),
        None => None,
    };
    let n = ids.len();
    let d = model.config.hidden;
    // Where the run computes, and how it finds the spectrum: decided here once.
    let device = compute.device(opts.precision);
    let precision = device.precision();
    let plan = svd_plan(n, d, precision, opts.svd_mode, limits);
    let full = opts.extent == Extent::Full;
    let full_j = full && matches!(plan, Ok(None));
    room_for_run(model, n, precision, full_j, limits)?;
    hooks.emit(Event::Backend {
        device,
        adapter: gpu.map(|g| g.label()),
        fallback: compute.fallback.clone(),
    });
    let emit = |part: Part, report: &mut Report| {
        report.apply(part.clone());
        hooks.emit(Event::Part(part));
    };
    let pass = opts.pass;

    hooks.emit(Event::Progress {
        stage: Stage::Predict,
        done: 0,
        total: 1,
    });
    let t = hooks.now_ms();
    let tr = match gpu {
        Some(g) => {
            let _hook = progress::install(progress_of(hooks, Stage::Predict));
            g.trace(model, &ids).await?
        }
        None => trace(model, &ids, precision)?,
    };
    let mut prediction = stages::prediction(model, prompt, &tr, opts.top.max(1))?;
    let predicted = prediction.top.first().map(|t| t.id).unwrap_or_default();
    prediction.ms = hooks.now_ms() - t;
    let mut report = Report::new(prediction.clone());
    hooks.emit(Event::Prediction(prediction));
    let done = |hooks: &Rc<dyn Hooks>| {
        hooks.emit(Event::Done {
            ms: hooks.now_ms() - start,
        })
    };
    check_cancel(hooks)?;
    // The pool (when it has more than this worker) forms a full J on the
    // CPU, the others starting on their rows now.
    let pool = compute
        .pool
        .filter(|p| full && gpu.is_none() && p.workers() > 1);
    if let Some(p) = pool.filter(|_| full_j) {
        p.start_jacobian(n, d, precision.dtype().size_in_bytes());
    }

    // The shares: one transpose pass of the targets' unembedding rows.
    let t = hooks.now_ms();
    let targets = stages::share_targets(target, predicted);
    let u = stages::share_cotangents(model, &targets)?;
    let v = match gpu {
        Some(g) => g.vjp_output(model, &tr, &u).await?,
        None => jacobian::vjp(model, &tr, &u, pass)?.0,
    };
    let mut shares = stages::shares(model, &tr, &u, &v, &targets)?;
    shares.ms = hooks.now_ms() - t;
    emit(Part::Shares(shares), &mut report);
    if opts.extent == Extent::Shares {
        done(hooks);
        return Ok((report, Session::new(prompt, tr)));
    }
    check_cancel(hooks)?;
    let t = hooks.now_ms();
    let c = {
        let _hook = progress::install(progress_of(hooks, Stage::Contributions));
        match gpu {
            Some(g) => g.contributions(model, &tr).await?,
            None => jacobian::contributions(model, &tr, pass)?,
        }
    };
    let mut contrib = stages::contributions(model, &tr, &c, target, predicted)?;
    drop(c);
    let (other_rel, tr_other) = stages::other_precision(model, &tr)?;
    contrib.other_precision_rel_error = Some(other_rel);
    // On an accelerator: its transpose pass on a few random probes against
    // the f64 CPU's (the accelerator computes in f32: the other trace is f64).
    let probes = match gpu {
        Some(g) => {
            let t = hooks.now_ms();
            let u = certificate::probes(d, certificate::PROBES, CERTIFICATE_SEED)?;
            let reference = certificate::reference(model, &tr_other, &u)?;
            let on_gpu = g.vjp_output(model, &tr, &u).await?;
            let cert = Certificate {
                device: g.name(),
                probes: certificate::PROBES,
                max_rel_error: certificate::max_rel_error(&on_gpu, &reference)?,
                seed: CERTIFICATE_SEED,
                ms: hooks.now_ms() - t,
            };
            Some((u, reference, cert))
        }
        None => None,
    };
    drop(tr_other);
    contrib.certificate = probes.as_ref().map(|p| p.2.clone());
    contrib.ms = hooks.now_ms() - t;
    emit(Part::Contributions(contrib), &mut report);
    let mut session = Session::new(prompt, tr);
    if !full {
        done(hooks);
        return Ok((report, session));
    }
    check_cancel(hooks)?;
    let tr = &session.tr;

    let plan = plan?;
    if let Some(reason) = &plan {
        hooks.emit(Event::LongPrompt {
            tokens: n,
            reason: reason.clone(),
        });
    }
    // The ordinary error is one forward-mode pass: on screen in seconds,
    // before the J, and for long prompts too.
    if opts.ordinary {
        let (mut o, ms) = progress::scoped(progress_of(hooks, Stage::Ordinary), || {
            timed(hooks, || stages::ordinary(model, tr))
        })?;
        o.ms = ms;
        emit(Part::Ordinary(o), &mut report);
        check_cancel(hooks)?;
    }

    let jv = if plan.is_some() {
        None
    } else {
        let t = hooks.now_ms();
        let (j, work) = {
            let _hook = progress::install(progress_of(hooks, Stage::Jacobian));
            match (gpu, pool) {
                (Some(g), _) => {
                    let (j, work) = g.jacobian(model, tr).await?;
                    (j, Some(work))
                }
                (None, Some(p)) => (p.jacobian(model, tr).await?, None),
                (None, None) => (jacobian::detached_jacobian(model, tr, pass)?.0, None),
            }
        };
        let mut jp = stages::jacobian(tr, &j)?;
        // The certificate again, now on the accelerator's J itself.
        if let Some((u, reference, c)) = &probes {
            let t = hooks.now_ms();
            let max_rel_error =
                certificate::max_rel_error(&certificate::through(&j, u)?, reference)?;
            jp.certificate = Some(Certificate {
                max_rel_error,
                ms: c.ms + hooks.now_ms() - t,
                ..c.clone()
            });
        }
        jp.gpu_work = work;
        jp.ms = hooks.now_ms() - t;
        emit(Part::Jacobian(jp), &mut report);
        let jv = JacobianValues::of(&j)?;
        drop(j);
        check_cancel(hooks)?;
        Some(jv)
    };

    let now = || hooks.now_ms();
    let (sp, u_cat) = match &jv {
        Some(jv) => {
            hooks.emit(Event::Progress {
                stage: Stage::Svd,
                done: 0,
                total: 1,
            });
            stages::spectra(model, tr, Some(jv), opts, &now)?
        }
        None => {
            let _hook = progress::install(progress_of(hooks, Stage::Krylov));
            match pool {
                Some(pool) => {
                    let by_pool = &mut compute::ByPool(pool);
                    stages::spectra_by(model, tr, None, opts, &now, by_pool).await?
                }
                None => stages::spectra(model, tr, None, opts, &now)?,
            }
        }
    };
    emit(Part::Spectra(sp), &mut report);
    if opts.attention && limits.max_attention_tokens.is_none_or(|max| n <= max) {
        emit(Part::Attention(stages::attention(tr)?), &mut report);
    }
    session.jv = jv;
    session.u_cat = u_cat;
    check_cancel(hooks)?;

    if !opts.layers.is_empty() {
        let part = session::layers_part(model, &mut session, &opts.layers, opts, hooks)?;
        emit(Part::Layers(part), &mut report);
        check_cancel(hooks)?;
    }
    if let Some(so) = &opts.steer {
        let s = session::steered_part(model, prompt, so, opts, hooks)?;
        emit(Part::Steered(s), &mut report);
    }
    done(hooks);
    Ok((report, session))
}
