//! One run, stage by stage, each reported as soon as it is done: the
//! prediction, the contributions `c_i = J_i x_i` (forward mode, no `J`) with
//! exact attribution and both precisions' reconstruction, then the full
//! detached Jacobian, the SVD of `J_cat` and the ordinary Jacobian.

use candle_core::DType;
use lens_engine::analysis::attribution::{attribute, norms_and_projections};
use lens_engine::analysis::svd::{decompose_concat, jacobian_values};
use lens_engine::forward::top_k;
use lens_engine::jacobian::{
    contributions, detached_jacobian, reconstruction_error, rel_error, PassOptions,
};
use lens_engine::ordinary::ordinary_jacobian;
use lens_engine::trace::{trace, Trace};
use lens_engine::{progress, Model, Precision};
use lens_protocol::messages::RunRequest;
use lens_protocol::{ErrorKind, Reply, Stage, TokenRow, TopRow};
use std::rc::Rc;

/// Singular values of `J_cat` sent to the page.
pub const SPECTRUM_KEEP: usize = 16;
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

impl From<candle_core::Error> for Failure {
    fn from(e: candle_core::Error) -> Self {
        Failure {
            kind: ErrorKind::Engine,
            message: e.to_string(),
        }
    }
}

fn engine_precision(p: lens_protocol::Precision) -> Precision {
    match p {
        lens_protocol::Precision::F64 => Precision::F64,
        lens_protocol::Precision::F32 => Precision::F32,
    }
}

/// Runs `req` on `model`, sending each stage's reply to `emit` and
/// progress within the long stages; `now_ms` is the clock.
pub fn run(
    model: &Model,
    req: &RunRequest,
    emit: Emit,
    now_ms: &dyn Fn() -> f64,
) -> Result<(), Failure> {
    let job = req.job;
    let start = now_ms();
    let precision = engine_precision(req.precision);
    let bad = |message: String| Failure {
        kind: ErrorKind::BadPrompt,
        message,
    };
    if req.prompt.trim().is_empty() {
        return Err(bad("the prompt is empty: type some text first".into()));
    }
    let ids = model.encode(&req.prompt).map_err(|e| bad(e.to_string()))?;
    if ids.len() > MAX_TOKENS {
        return Err(bad(format!(
            "the prompt has {} tokens; the page analyses at most {MAX_TOKENS}",
            ids.len()
        )));
    }
    let stage = |s: Stage, done: usize, total: usize| {
        emit(Reply::Progress {
            job: Some(job),
            stage: s,
            done,
            total,
        })
    };

    stage(Stage::Predict, 0, 1);
    let t = now_ms();
    let tr = trace(model, &ids, precision)?;
    let logits = tr.logits(model)?;
    let top = top_k(model, &logits, req.top.clamp(1, 50));
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
        ms: now_ms() - t,
    });
    let predicted = top.first().map(|t| t.id).unwrap_or_default();

    let t = now_ms();
    // Progress of a long pass, as replies for this job.
    let hook = |s: Stage| -> progress::Hook {
        let e = emit.clone();
        Rc::new(move |done, total| {
            e(Reply::Progress {
                job: Some(job),
                stage: s,
                done,
                total,
            })
        })
    };
    let (rows, att, rel) = progress::scoped(hook(Stage::Contributions), || {
        contribution_rows(model, &tr, predicted)
    })?;
    // The other precision's reconstruction from its own frozen forward.
    let other = match precision {
        Precision::F64 => Precision::F32,
        Precision::F32 => Precision::F64,
    };
    let tr_other = trace(model, &ids, other)?;
    let c_other = contributions(model, &tr_other, PassOptions::default())?;
    let other_rel = rel_error(&c_other.sum(0)?, &tr_other.y.flatten_all()?)?;
    drop((tr_other, c_other));
    emit(Reply::Contributions {
        job,
        target_id: att.target_id,
        target_token: att.target_token.clone(),
        logit: att.logit,
        per_token: rows,
        attribution_sum_rel_error: att.sum_rel_error,
        rel_error: rel,
        other_precision_rel_error: other_rel,
        ms: now_ms() - t,
    });
    if !req.full {
        emit(Reply::Done {
            job,
            ms: now_ms() - start,
        });
        return Ok(());
    }

    let d = model.config.hidden;
    let j_bytes = ids.len() * d * d * precision.dtype().size_in_bytes();
    if j_bytes > FULL_JACOBIAN_BYTES {
        return Err(Failure {
            kind: ErrorKind::BadPrompt,
            message: format!(
                "the full Jacobian of {} tokens would take {} MB, more than a browser tab \
                 can spare ({} MB): shorten the prompt (the prediction and the exact \
                 attribution above need no full Jacobian)",
                ids.len(),
                j_bytes >> 20,
                FULL_JACOBIAN_BYTES >> 20
            ),
        });
    }
    let t = now_ms();
    let (j, _) = progress::scoped(hook(Stage::Jacobian), || {
        detached_jacobian(model, &tr, PassOptions::default())
    })?;
    let detached = reconstruction_error(&j, &tr.x, &tr.y)?;
    let fro_norms = j
        .sqr()?
        .sum((1, 2))?
        .sqrt()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    emit(Reply::Jacobian {
        job,
        detached_rel_error: detached,
        fro_norms,
        ms: now_ms() - t,
    });

    stage(Stage::Svd, 0, 1);
    let t = now_ms();
    let (values, dims) = jacobian_values(&j)?;
    drop(j);
    let spectrum = decompose_concat(&values, dims, SPECTRUM_KEEP, None)?.spectrum(SPECTRUM_KEEP);
    drop(values);
    emit(Reply::Spectrum {
        job,
        singular_values: spectrum.singular_values,
        stable_rank: spectrum.stable_rank,
        fro_norm: spectrum.fro_norm,
        ms: now_ms() - t,
    });

    let t = now_ms();
    let o = progress::scoped(hook(Stage::Ordinary), || {
        ordinary_jacobian(model, &tr, PassOptions::default())
    })?;
    let ordinary = reconstruction_error(&o, &tr.x, &tr.y)?;
    drop(o);
    emit(Reply::Ordinary {
        job,
        ordinary_rel_error: ordinary,
        ms: now_ms() - t,
    });
    emit(Reply::Done {
        job,
        ms: now_ms() - start,
    });
    Ok(())
}

/// Per-token rows (attribution to `target`), the attribution itself and
/// `‖Σ c_i − y‖/‖y‖`.
fn contribution_rows(
    model: &Model,
    tr: &Trace,
    target: u32,
) -> Result<
    (
        Vec<TokenRow>,
        lens_engine::analysis::attribution::Attribution,
        f64,
    ),
    Failure,
> {
    let c = contributions(model, tr, PassOptions::default())?;
    let rel = rel_error(&c.sum(0)?, &tr.y.flatten_all()?)?;
    let att = attribute(model, tr, &c, target)?;
    let (norms, proj) = norms_and_projections(&c, &tr.y_vec()?)?;
    let ids = tr.ids.clone();
    let rows = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| TokenRow {
            token: model.tokenizer.token_str(id),
            id,
            attribution: att.per_token[i],
            contribution_norm: norms[i],
            projection_on_y: proj[i],
        })
        .collect();
    Ok((rows, att, rel))
}
