//! One run, stage by stage, each reported as soon as it is done: the
//! prediction, the contributions `c_i = J_i x_i` (forward mode, no `J`) with
//! exact attribution and both precisions' reconstruction, then the full
//! detached Jacobian, the SVD of `J_cat` and the ordinary Jacobian.

use lens_engine::analysis::attribution::{attribute, norms_and_projections};
use lens_engine::analysis::certificate;
use lens_engine::analysis::steering::SteerOptions;
use lens_engine::analysis::{
    attention, columns_at, fro_norms, heatmap, lanczos, layer_curves, spectra, spectra_matrix_free,
    token_rows, AnalyzeOptions, JacobianValues, Reconstruction, Report, Timings,
};
use lens_engine::forward::top_k;
use lens_engine::jacobian::{
    contributions, detached_jacobian, reconstruction_error, rel_error, PassOptions,
};
use lens_engine::ordinary::ordinary_jacobian;
use lens_engine::trace::{trace, Trace};
use lens_engine::{progress, Model, Precision, PrecisionDType};
use lens_gpu::passes;
use lens_protocol::messages::RunRequest;
use lens_protocol::report::Certificate;
use lens_protocol::{ErrorKind, Reply, Stage, SteerSpec, SvdMode, TokenRow, TopRow};
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

/// Where a run computes: the GPU (if any) and why auto did not take one.
pub struct Compute<'a> {
    pub gpu: Option<&'a lens_gpu::Gpu>,
    pub fallback: Option<String>,
}

impl Compute<'_> {
    pub const CPU: Compute<'static> = Compute {
        gpu: None,
        fallback: None,
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

/// Progress of a long pass, as replies for this job.
fn hook(emit: &Emit, job: u32, s: Stage) -> progress::Hook {
    let e = emit.clone();
    Rc::new(move |done, total| {
        e(Reply::Progress {
            job: Some(job),
            stage: s,
            done,
            total,
        })
    })
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

/// Runs `req` on `model`, sending each stage's reply to `emit` and
/// progress within the long stages; `now_ms` is the clock. What the
/// on-demand stages need is left in `session`.
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
    emit(Reply::Backend {
        job,
        name: if gpu.is_some() { "WebGPU" } else { "CPU" }.into(),
        adapter: gpu.map(|g| g.adapter().label()),
        fallback: compute.fallback.clone(),
    });
    // The GPU computes in f32.
    let precision = if gpu.is_some() {
        Precision::F32
    } else {
        req.precision
    };
    let stage = |s: Stage, done: usize, total: usize| {
        emit(Reply::Progress {
            job: Some(job),
            stage: s,
            done,
            total,
        })
    };
    let mut timings = Timings::default();

    stage(Stage::Predict, 0, 1);
    let t = now_ms();
    let tr = match gpu {
        Some(g) => {
            let _hook = progress::install(hook(&emit, job, Stage::Predict));
            lens_gpu::trace::trace(g, model, &ids).await?
        }
        None => trace(model, &ids, precision)?,
    };
    let logits = tr.logits(model)?;
    let top = top_k(model, &logits, req.top.clamp(1, 50));
    timings.forward = now_ms() - t;
    emit(Reply::Prediction {
        job,
        token_ids: ids.clone(),
        tokens: ids.iter().map(|&i| model.tokenizer.token_str(i)).collect(),
        top: top
            .iter()
            .map(|t| TopRow {
                id: t.id,
                token: t.token.clone(),
                logit: t.logit,
                prob: t.prob,
            })
            .collect(),
        ms: timings.forward,
    });
    let predicted = top.first().map(|t| t.id).unwrap_or_default();

    let t = now_ms();
    let c = {
        let _hook = progress::install(hook(&emit, job, Stage::Contributions));
        match gpu {
            Some(g) => passes::contributions(g, model, &tr, PassOptions::default()).await?,
            None => contributions(model, &tr, PassOptions::default())?,
        }
    };
    let rel = rel_error(&c.sum(0)?, &tr.y.flatten_all()?)?;
    let att = attribute(model, &tr, &c, predicted)?;
    let (norms, proj) = norms_and_projections(&c, &tr.y_vec()?)?;
    // The other precision's reconstruction from its own frozen forward.
    let other = match precision {
        Precision::F64 => Precision::F32,
        Precision::F32 => Precision::F64,
    };
    let tr_other = trace(model, &ids, other)?;
    let c_other = contributions(model, &tr_other, PassOptions::default())?;
    let other_rel = rel_error(&c_other.sum(0)?, &tr_other.y.flatten_all()?)?;
    drop(c_other);
    // On the GPU: its transpose pass on a few random probes against the
    // f64 CPU's (the other precision's trace is the f64 one).
    let probes = match gpu {
        Some(g) => {
            let t = now_ms();
            let u =
                certificate::probes(model.config.hidden, certificate::PROBES, CERTIFICATE_SEED)?;
            let reference = certificate::reference(model, &tr_other, &u)?;
            let (on_gpu, _) = passes::vjp(g, model, &tr, &u, PassOptions::default()).await?;
            let max_rel_error = certificate::max_rel_error(&on_gpu, &reference)?;
            let cert = Certificate {
                device: g.adapter().name.clone(),
                probes: certificate::PROBES,
                max_rel_error,
                seed: CERTIFICATE_SEED,
                ms: now_ms() - t,
            };
            Some((u, reference, cert))
        }
        None => None,
    };
    drop(tr_other);
    let mut cert = probes.as_ref().map(|p| p.2.clone());
    timings.contributions = now_ms() - t;
    emit(Reply::Contributions {
        job,
        target_id: att.target_id,
        target_token: att.target_token.clone(),
        logit: att.logit,
        per_token: ids
            .iter()
            .enumerate()
            .map(|(i, &id)| TokenRow {
                token: model.tokenizer.token_str(id),
                id,
                attribution: att.per_token[i],
                contribution_norm: norms[i],
                projection_on_y: proj[i],
            })
            .collect(),
        attribution_sum_rel_error: att.sum_rel_error,
        rel_error: rel,
        other_precision_rel_error: other_rel,
        certificate: cert.clone(),
        ms: timings.contributions,
    });
    let done = |emit: &Emit| {
        emit(Reply::Done {
            job,
            ms: now_ms() - start,
        })
    };
    if !req.full {
        *session = Some(Session {
            prompt: req.prompt.clone(),
            precision,
            tr,
            jv: None,
            axes: Vec::new(),
        });
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
    let opts = page_options(precision, matrix_free);
    let (jv, detached, fro) = if matrix_free {
        (None, None, None)
    } else {
        let t = now_ms();
        let (j, _) = {
            let _hook = progress::install(hook(&emit, job, Stage::Jacobian));
            match gpu {
                Some(g) => passes::detached_jacobian(g, model, &tr, PassOptions::default()).await?,
                None => detached_jacobian(model, &tr, PassOptions::default())?,
            }
        };
        let detached = reconstruction_error(&j, &tr.x, &tr.y)?;
        let fro = fro_norms(&j)?;
        timings.jacobian = now_ms() - t;
        // The certificate again, now on the GPU's J itself.
        if let Some((u, reference, c)) = &probes {
            let t = now_ms();
            let max_rel_error =
                certificate::max_rel_error(&certificate::through(&j, u)?, reference)?;
            cert = Some(Certificate {
                max_rel_error,
                ms: c.ms + now_ms() - t,
                ..c.clone()
            });
        }
        emit(Reply::Jacobian {
            job,
            detached_rel_error: detached,
            fro_norms: fro.clone(),
            certificate: cert.clone(),
            ms: timings.jacobian,
        });
        let jv = JacobianValues::of(&j)?;
        drop(j);
        (Some(jv), Some(detached), Some(fro))
    };

    let t = now_ms();
    let sp = match &jv {
        Some(jv) => {
            stage(Stage::Svd, 0, 1);
            spectra(model, &tr, jv, &opts, now_ms)?
        }
        None => progress::scoped(hook(&emit, job, Stage::Krylov), || {
            spectra_matrix_free(model, &tr, &opts, now_ms)
        })?,
    };
    timings.decode = sp.decode_ms;
    timings.svd = now_ms() - t - sp.decode_ms;
    if let Some(svd) = &sp.svd {
        emit(Reply::Spectrum {
            job,
            singular_values: svd.concat.singular_values.clone(),
            stable_rank: svd.concat.stable_rank,
            fro_norm: svd.concat.fro_norm,
            ms: now_ms() - t,
        });
    }
    let report = Report {
        model: model.name.clone(),
        precision,
        token_ids: ids.clone(),
        tokens: ids.iter().map(|&i| model.tokenizer.token_str(i)).collect(),
        top,
        reconstruction: Reconstruction {
            detached_rel_error: detached,
            ordinary_rel_error: None,
            contributions_rel_error: rel,
            certificate: cert,
        },
        per_token: token_rows(model, &tr, &c, fro.as_deref())?,
        layers: Vec::new(),
        svd: sp.svd,
        matrix_free: sp.matrix_free,
        decode: sp.decode,
        attribution: att,
        attribution_predicted: None,
        columns: sp.columns,
        path: Vec::new(),
        attention: if n <= ATTENTION_MAX_TOKENS {
            Some(attention(&tr)?)
        } else {
            None
        },
        steering: None,
        timings_ms: timings,
    };
    emit(Reply::Report {
        job,
        report: Box::new(report),
    });
    let axes = sp.axes;
    drop(c);

    if !matrix_free {
        let t = now_ms();
        let o = progress::scoped(hook(&emit, job, Stage::Ordinary), || {
            ordinary_jacobian(model, &tr, PassOptions::default())
        })?;
        let ordinary = reconstruction_error(&o, &tr.x, &tr.y)?;
        drop(o);
        emit(Reply::Ordinary {
            job,
            ordinary_rel_error: ordinary,
            ms: now_ms() - t,
        });
    }
    *session = Some(Session {
        prompt: req.prompt.clone(),
        precision,
        tr,
        jv,
        axes,
    });
    done(&emit);
    Ok(())
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
fn session_for<'a>(
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
        *session = Some(Session {
            prompt: prompt.to_string(),
            precision,
            tr: trace(model, &ids, precision)?,
            jv: None,
            axes: Vec::new(),
        });
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
    let (rows, path) = progress::scoped(hook(&emit, job, Stage::Layers), || {
        if s.axes.len() < 2 {
            // The path's axes: J_cat's top two left singular vectors, found
            // without forming J (the run that had them is gone).
            let mf =
                lanczos::top_triplets(model, &s.tr, lanczos::KrylovOptions::new(2), opts.pass)?;
            s.axes = mf.triplets.into_iter().map(|t| t.u).collect();
        }
        layer_curves(model, &s.tr, layers, &opts, &s.axes)
    })?;
    emit(Reply::Layers {
        job,
        layers: rows,
        path,
        ms: now_ms() - t,
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
    emit(Reply::Progress {
        job: Some(job),
        stage: Stage::Inspect,
        done: 0,
        total: 1,
    });
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
    let steering = progress::scoped(hook(&emit, job, Stage::Steering), || {
        lens_engine::analysis::steering::steer(
            model,
            &spec.text,
            &so,
            precision,
            PassOptions::default(),
        )
    })
    .map_err(|e| match e {
        lens_engine::EngineError::Config(m) => bad(m),
        e => e.into(),
    })?;
    emit(Reply::Steered {
        job,
        steering,
        ms: now_ms() - t,
    });
    Ok(())
}
