//! One run, stage by stage, each part sent as soon as it is done: the
//! prediction, the contributions `c_i = J_i x_i` (forward mode, no `J`) with
//! exact attribution and both precisions' reconstruction, the ordinary
//! Jacobian's error (one forward-mode pass), then the full detached
//! Jacobian, the spectra (from `J`, or matrix-free for a long prompt) and
//! the attention; then, on demand, the
//! layer curves, a `J_i`'s heatmap and columns, steering. The stages are the
//! engine's; this adds messages, progress and the GPU's passes.

use crate::pool::{self, Pool};
use lens_engine::analysis::certificate;
use lens_engine::analysis::steering::SteerOptions;
use lens_engine::analysis::{columns_at, heatmap, lanczos, AnalyzeOptions, JacobianValues};
use lens_engine::jacobian::{
    contributions, contributions_on, detached_jacobian, detached_jacobian_on, vjp_tap_on,
    PassOptions, Tap,
};
use lens_engine::memory::MemoryNeed;
use lens_engine::trace::{trace, Trace};
use lens_engine::{progress, stages, Model, Precision, PrecisionDType};
use lens_protocol::messages::RunRequest;
use lens_protocol::report::{Certificate, Part};
use lens_protocol::{Device, ErrorKind, Reply, Stage, SteerSpec, SvdMode};
use std::rc::Rc;

/// The full Jacobian (`n·d²` values) must fit this many bytes; past it the
/// run stops after the contributions and says why. The SVD holds about
/// three copies at once (J's values, faer's matrix, V), so this keeps the
/// peak near 1.5 GB, inside a wasm32 tab's 4 GB.
pub const FULL_JACOBIAN_BYTES: usize = 384 << 20;
/// Longest prompt analysed (tokens).
pub const MAX_TOKENS: usize = 512;

/// Where the replies go.
pub type Emit = Rc<dyn Fn(Reply)>;

/// A failed run: what kind of failure and a sentence for the page.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<lens_engine::EngineError> for Failure {
    fn from(e: lens_engine::EngineError) -> Self {
        Failure {
            kind: ErrorKind::Engine,
            message: e.to_string(),
        }
    }
}

impl From<lens_gpu::GpuError> for Failure {
    fn from(e: lens_gpu::GpuError) -> Self {
        Failure {
            kind: ErrorKind::Engine,
            message: format!("on the GPU: {e}"),
        }
    }
}

/// Where a run computes: the GPU (if any) and why auto did not take one,
/// and the page's pool of workers for `J` on the CPU.
pub struct Compute<'a> {
    pub gpu: Option<&'a lens_gpu::Gpu>,
    pub fallback: Option<String>,
    pub pool: Option<&'a dyn Pool>,
    /// The most memory the worker may use: a run estimated past it is
    /// refused before its frozen forward (`None`: no limit).
    pub memory_limit: Option<u64>,
}

impl Compute<'_> {
    pub const CPU: Compute<'static> = Compute {
        gpu: None,
        fallback: None,
        pool: None,
        memory_limit: None,
    };
}

/// The probes' seed: fixed, so a certificate is reproducible.
pub const CERTIFICATE_SEED: u64 = 2505_24293;

impl From<candle_core::Error> for Failure {
    fn from(e: candle_core::Error) -> Self {
        Failure {
            kind: ErrorKind::Engine,
            message: e.to_string(),
        }
    }
}

/// Prompts longer than this (tokens) run matrix-free in `SvdMode::Auto`.
pub const LONG_PROMPT_TOKENS: usize = 48;
/// Longest prompt whose attention probabilities go to the page (all layers
/// and heads: `L·H·n²` numbers, 0.3 M for Gemma 3 270M at 64 tokens).
pub const ATTENTION_MAX_TOKENS: usize = 64;
/// Cells per side of a `J_i` heatmap.
pub const HEATMAP_CELLS: usize = 64;

/// What a run leaves behind for the on-demand stages (layers, heatmaps):
/// its frozen forward and, when formed, `J`'s values.
pub struct Session {
    pub prompt: String,
    pub precision: Precision,
    pub tr: Trace,
    pub jv: Option<JacobianValues>,
    /// `J_cat`'s `u_1`, `u_2` (the path's axes).
    pub axes: Vec<Vec<f64>>,
}

impl Session {
    fn new(prompt: &str, tr: Trace) -> Self {
        Session {
            prompt: prompt.to_string(),
            precision: tr.precision,
            tr,
            jv: None,
            axes: Vec::new(),
        }
    }

    fn matches(&self, prompt: &str, precision: Precision) -> bool {
        self.prompt == prompt && self.precision == precision
    }
}

/// The analysis options the page runs with: the CLI's `analyze` defaults.
pub fn page_options(precision: Precision, matrix_free: bool) -> AnalyzeOptions {
    AnalyzeOptions {
        ordinary: false,
        matrix_free,
        ..AnalyzeOptions::new(precision)
    }
}

fn progress_reply(job: u32, stage: Stage, done: usize, total: usize) -> Reply {
    Reply::Progress {
        job: Some(job),
        stage,
        done,
        total,
    }
}

/// Progress of a long pass, as replies for this job.
pub(crate) fn hook(emit: &Emit, job: u32, s: Stage) -> progress::Hook {
    let e = emit.clone();
    Rc::new(move |done, total| e(progress_reply(job, s, done, total)))
}

fn bad(message: String) -> Failure {
    Failure {
        kind: ErrorKind::BadPrompt,
        message,
    }
}

fn encode(model: &Model, prompt: &str) -> Result<Vec<u32>, Failure> {
    if prompt.trim().is_empty() {
        return Err(bad("the prompt is empty: type some text first".into()));
    }
    let ids = model.encode(prompt).map_err(|e| bad(e.to_string()))?;
    if ids.len() > MAX_TOKENS {
        return Err(bad(format!(
            "the prompt has {} tokens; the page analyses at most {MAX_TOKENS}",
            ids.len()
        )));
    }
    Ok(ids)
}

/// As [`run`]; where the GPU's device is lost in the middle (a driver reset,
/// the browser's GPU process gone), the run is done again on the CPU and the
/// page is told why. The parts already shown stay until the CPU's replace
/// them.
pub async fn run_or_cpu(
    model: &Model,
    req: &RunRequest,
    emit: Emit,
    now_ms: &dyn Fn() -> f64,
    session: &mut Option<Session>,
    compute: Compute<'_>,
) -> Result<(), Failure> {
    let (gpu, pool, memory_limit) = (compute.gpu, compute.pool, compute.memory_limit);
    let out = run(model, req, emit.clone(), now_ms, session, compute).await;
    let Some(why) = gpu.and_then(|g| g.lost()).filter(|_| out.is_err()) else {
        return out;
    };
    emit(Reply::Notice {
        message: format!(
            "The graphics device stopped in the middle of the run ({why}); \
             the run is being done again on the CPU."
        ),
    });
    let cpu = Compute {
        gpu: None,
        fallback: Some(format!("the GPU device was {why} in the middle of the run")),
        pool,
        memory_limit,
    };
    run(model, req, emit, now_ms, session, cpu).await
}

/// Runs `req` on `model`, sending each stage's part to `emit` as soon as it
/// is done, with progress within the long stages; `now_ms` is the clock.
/// The stages are the engine's (`lens_engine::stages`), as in the CLI's
/// `analyze`; this adds the messages, progress and the GPU's passes. What
/// the on-demand stages need is left in `session`.
pub async fn run(
    model: &Model,
    req: &RunRequest,
    emit: Emit,
    now_ms: &dyn Fn() -> f64,
    session: &mut Option<Session>,
    compute: Compute<'_>,
) -> Result<(), Failure> {
    *session = None;
    let job = req.job;
    let start = now_ms();
    let gpu = compute.gpu;
    // A bad prompt fails before anything is said about the run.
    let ids = encode(model, &req.prompt)?;
    // Where the run computes, decided here once.
    let device = Device::choose(gpu.is_some(), req.precision);
    let precision = device.precision();
    room_for_run(model, ids.len(), precision, req, compute.memory_limit)?;
    emit(Reply::Backend {
        job,
        device,
        adapter: gpu.map(|g| g.adapter().label()),
        fallback: compute.fallback.clone(),
    });
    let part = |part: Part| emit(Reply::Part { job, part });
    let pass = PassOptions::default();

    emit(progress_reply(job, Stage::Predict, 0, 1));
    let t = now_ms();
    let tr = match gpu {
        Some(g) => {
            let _hook = progress::install(hook(&emit, job, Stage::Predict));
            lens_gpu::trace::trace(g, model, &ids).await?
        }
        None => trace(model, &ids, precision)?,
    };
    let mut prediction = stages::prediction(model, &tr, req.top.clamp(1, 50))?;
    prediction.ms = now_ms() - t;
    emit(Reply::Prediction { job, prediction });
    // On the CPU, the page's pool (when it has more than this worker) forms
    // a full J, the others starting on their rows now, or computes a
    // matrix-free run's products.
    let d = model.config.hidden;
    let pool = compute
        .pool
        .filter(|p| req.full && gpu.is_none() && p.workers() > 1);
    let full_j = matches!(svd_plan(ids.len(), d, precision, req.svd), Ok(None));
    if pool.is_some() && full_j {
        emit(Reply::JacobianWanted {
            job,
            n: ids.len(),
            rows: d,
            width: d,
            elem: precision.dtype().size_in_bytes(),
        });
    }

    let t = now_ms();
    let c = {
        let _hook = progress::install(hook(&emit, job, Stage::Contributions));
        match gpu {
            Some(g) => contributions_on(g, model, &tr, pass).await?,
            None => contributions(model, &tr, pass)?,
        }
    };
    let mut contrib = stages::contributions(model, &tr, &c, None)?;
    drop(c);
    let (other_rel, tr_other) = stages::other_precision(model, &tr)?;
    contrib.other_precision_rel_error = Some(other_rel);
    // On the GPU: its transpose pass on a few random probes against the
    // f64 CPU's.
    let probes = match gpu {
        Some(g) => {
            let t = now_ms();
            let u =
                certificate::probes(model.config.hidden, certificate::PROBES, CERTIFICATE_SEED)?;
            let output = Tap::output(model.config.layers);
            // The GPU computes in f32: the other precision's trace is f64.
            let reference = certificate::reference(model, &tr_other, &u)?;
            let (on_gpu, _) = vjp_tap_on(g, model, &tr, output, &u, pass).await?;
            let cert = Certificate {
                device: g.adapter().name.clone(),
                probes: certificate::PROBES,
                max_rel_error: certificate::max_rel_error(&on_gpu, &reference)?,
                seed: CERTIFICATE_SEED,
                ms: now_ms() - t,
            };
            Some((u, reference, cert))
        }
        None => None,
    };
    drop(tr_other);
    contrib.certificate = probes.as_ref().map(|p| p.2.clone());
    contrib.ms = now_ms() - t;
    part(Part::Contributions(contrib));
    let done = |emit: &Emit| {
        emit(Reply::Done {
            job,
            ms: now_ms() - start,
        })
    };
    if !req.full {
        *session = Some(Session::new(&req.prompt, tr));
        done(&emit);
        return Ok(());
    }

    let n = ids.len();
    let plan = svd_plan(n, model.config.hidden, precision, req.svd)?;
    let matrix_free = plan.is_some();
    if let Some(reason) = &plan {
        emit(Reply::LongPrompt {
            job,
            tokens: n,
            reason: reason.clone(),
        });
    }
    // The ordinary error is one forward-mode pass: on screen in seconds,
    // before the J, and for long prompts too.
    let (mut o, ms) = progress::scoped(hook(&emit, job, Stage::Ordinary), || {
        stages::timed(now_ms, || stages::ordinary(model, &tr))
    })?;
    o.ms = ms;
    part(Part::Ordinary(o));

    let opts = page_options(precision, matrix_free);
    let jv = if matrix_free {
        None
    } else {
        let t = now_ms();
        let mut work_before = None;
        let j = {
            let _hook = progress::install(hook(&emit, job, Stage::Jacobian));
            match (gpu, pool) {
                (Some(g), _) => {
                    crate::tuning::ensure(g, model, tr.n()).await;
                    // The J's own work, not the tuning's.
                    work_before = Some(g.work());
                    detached_jacobian_on(g, model, &tr, pass).await?.0
                }
                (None, Some(p)) => pool::from_pool(model, &tr, job, p, &emit, now_ms).await?,
                (None, None) => detached_jacobian(model, &tr, pass)?.0,
            }
        };
        let mut jp = stages::jacobian(&tr, &j)?;
        // The certificate again, now on the GPU's J itself.
        if let Some((u, reference, c)) = &probes {
            let t = now_ms();
            let max_rel_error =
                certificate::max_rel_error(&certificate::through(&j, u)?, reference)?;
            jp.certificate = Some(Certificate {
                max_rel_error,
                ms: c.ms + now_ms() - t,
                ..c.clone()
            });
        }
        jp.ms = now_ms() - t;
        if let (Some(g), Some(before)) = (gpu, work_before) {
            jp.gpu_work = Some(g.work().since(&before));
        }
        part(Part::Jacobian(jp));
        let jv = JacobianValues::of(&j)?;
        drop(j);
        Some(jv)
    };

    let (sp, axes) = match &jv {
        Some(jv) => {
            emit(progress_reply(job, Stage::Svd, 0, 1));
            stages::spectra(model, &tr, Some(jv), &opts, now_ms)?
        }
        None => {
            let _hook = progress::install(hook(&emit, job, Stage::Krylov));
            match pool {
                Some(pool) => {
                    let pooled = &mut pool::PooledProducts { job, pool, now_ms };
                    stages::spectra_by(model, &tr, None, &opts, now_ms, pooled).await?
                }
                None => stages::spectra(model, &tr, None, &opts, now_ms)?,
            }
        }
    };
    part(Part::Spectra(sp));
    if n <= ATTENTION_MAX_TOKENS {
        part(Part::Attention(stages::attention(&tr)?));
    }

    let mut s = Session::new(&req.prompt, tr);
    s.jv = jv;
    s.axes = axes;
    *session = Some(s);
    done(&emit);
    Ok(())
}

/// Refuses a run whose estimated memory (the model, the prompt's frozen
/// forward and `J`) is past `limit`, with the numbers.
fn room_for_run(
    model: &Model,
    n: usize,
    precision: Precision,
    req: &RunRequest,
    limit: Option<u64>,
) -> Result<(), Failure> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let d = model.config.hidden;
    let full_j = req.full && matches!(svd_plan(n, d, precision, req.svd), Ok(None));
    let held = MemoryNeed::held_by_model(model.weights.stored_bytes() as u64);
    let need = MemoryNeed::to_run(held, &model.config, n, precision, full_j);
    match need.refuse(limit, &format!("This prompt ({n} tokens)")) {
        Some(m) => Err(Failure {
            kind: ErrorKind::OutOfMemory,
            message: format!("{m}: shorten the prompt, or choose f32"),
        }),
        None => Ok(()),
    }
}

/// How a run of `n` tokens finds `J_cat`'s spectrum: `None` by forming `J`,
/// `Some(why)` matrix-free; an error when `mode` asks for a `J` too large.
pub fn svd_plan(
    n: usize,
    d: usize,
    precision: Precision,
    mode: SvdMode,
) -> Result<Option<String>, Failure> {
    let j_bytes = n * d * d * precision.dtype().size_in_bytes();
    let too_big = j_bytes > FULL_JACOBIAN_BYTES;
    Ok(match mode {
        SvdMode::Krylov => Some("matrix-free was asked for".into()),
        SvdMode::Full if too_big => {
            return Err(bad(format!(
                "the full Jacobian of {n} tokens would take {} MB, more than a browser tab \
                 can spare ({} MB): shorten the prompt, or let the page find the top of the \
                 spectrum without it (SVD: auto or matrix-free)",
                j_bytes >> 20,
                FULL_JACOBIAN_BYTES >> 20
            )))
        }
        SvdMode::Full => None,
        SvdMode::Auto if too_big => Some(format!(
            "its full Jacobian would take {} MB, more than a tab can spare",
            j_bytes >> 20
        )),
        SvdMode::Auto if n > LONG_PROMPT_TOKENS => {
            Some(format!("it has more than {LONG_PROMPT_TOKENS} tokens"))
        }
        SvdMode::Auto => None,
    })
}

/// The session for `prompt` at `precision`: the last run's when it matches,
/// else a fresh frozen forward (the worker may have been restarted since).
pub(crate) fn session_for<'a>(
    model: &Model,
    prompt: &str,
    precision: Precision,
    session: &'a mut Option<Session>,
) -> Result<&'a mut Session, Failure> {
    if !session
        .as_ref()
        .is_some_and(|s| s.matches(prompt, precision))
    {
        let ids = encode(model, prompt)?;
        *session = Some(Session::new(prompt, trace(model, &ids, precision)?));
    }
    session
        .as_mut()
        .ok_or_else(|| bad("no analysis to continue".into()))
}

/// Layer curves and the path for `layers` (1-based), one progress step per
/// tap Jacobian.
#[allow(clippy::too_many_arguments)]
pub fn layers(
    model: &Model,
    job: u32,
    prompt: &str,
    precision: Precision,
    layers: &[usize],
    emit: Emit,
    now_ms: &dyn Fn() -> f64,
    session: &mut Option<Session>,
) -> Result<(), Failure> {
    if layers.is_empty() {
        return Err(bad("pick at least one layer".into()));
    }
    let s = session_for(model, prompt, precision, session)?;
    let t = now_ms();
    let opts = page_options(precision, false);
    let mut part = progress::scoped(hook(&emit, job, Stage::Layers), || {
        if s.axes.len() < 2 {
            // The path's axes: J_cat's top two left singular vectors, found
            // without forming J (the run that had them is gone).
            let mf =
                lanczos::top_triplets(model, &s.tr, lanczos::KrylovOptions::new(2), opts.pass)?;
            s.axes = mf.triplets.into_iter().map(|t| t.u).collect();
        }
        stages::layers(model, &s.tr, layers, &opts, &s.axes)
    })?;
    part.ms = now_ms() - t;
    emit(Reply::Part {
        job,
        part: Part::Layers(part),
    });
    Ok(())
}

/// The heatmap of `J_i` at `position` and its largest columns and rows,
/// decoded (forming `J` again when the run that had it is gone).
#[allow(clippy::too_many_arguments)]
pub fn inspect(
    model: &Model,
    job: u32,
    prompt: &str,
    precision: Precision,
    position: usize,
    emit: Emit,
    now_ms: &dyn Fn() -> f64,
    session: &mut Option<Session>,
) -> Result<(), Failure> {
    let s = session_for(model, prompt, precision, session)?;
    let n = s.tr.n();
    if position >= n {
        return Err(bad(format!(
            "token {position} is past the prompt's {n} tokens"
        )));
    }
    let t = now_ms();
    if s.jv.is_none() {
        let d = model.config.hidden;
        if n * d * d * precision.dtype().size_in_bytes() > FULL_JACOBIAN_BYTES {
            return Err(bad(
                "the heatmap needs the full Jacobian, too large for this prompt in a tab".into(),
            ));
        }
        let (j, _) = progress::scoped(hook(&emit, job, Stage::Jacobian), || {
            detached_jacobian(model, &s.tr, PassOptions::default())
        })?;
        s.jv = Some(JacobianValues::of(&j)?);
    }
    let Some(jv) = &s.jv else {
        return Err(bad("no Jacobian".into()));
    };
    emit(progress_reply(job, Stage::Inspect, 0, 1));
    let opts = page_options(precision, false);
    let heatmap = heatmap(jv, position, HEATMAP_CELLS)?;
    let columns = columns_at(model, jv, position, opts.columns, opts.decode_top)?;
    emit(Reply::Inspect {
        job,
        heatmap,
        columns,
        ms: now_ms() - t,
    });
    Ok(())
}

/// Steers `spec.text` with `spec.source`'s operator (the CLI's
/// `analyze TEXT --steer SOURCE`).
pub fn steer(
    model: &Model,
    job: u32,
    precision: Precision,
    spec: &SteerSpec,
    emit: Emit,
    now_ms: &dyn Fn() -> f64,
) -> Result<(), Failure> {
    encode(model, &spec.source)?;
    encode(model, &spec.text)?;
    let t = now_ms();
    let mut so = SteerOptions::new(model, &spec.source);
    if let Some(l) = spec.layer {
        so.layer = l;
    }
    so.lambda = spec.lambda;
    so.tokens = spec.tokens.clamp(1, lens_protocol::spec::MAX_STEER_TOKENS);
    let mut steered = progress::scoped(hook(&emit, job, Stage::Steering), || {
        stages::steer(model, &spec.text, &so, precision, PassOptions::default())
    })
    .map_err(|e| match e {
        lens_engine::EngineError::Config(m) => bad(m),
        e => e.into(),
    })?;
    steered.ms = now_ms() - t;
    emit(Reply::Part {
        job,
        part: Part::Steered(steered),
    });
    Ok(())
}
