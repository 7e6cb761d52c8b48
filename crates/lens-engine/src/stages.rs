//! The stages of an analysis, each a typed function that takes what it
//! needs and returns one [`Part`](lens_report::Part) of the Report (plain
//! data). Their order is written once, in [`crate::run`]; a part is folded
//! into the Report by `Report::apply`, nowhere else. Stages do not time
//! themselves (the engine has no clock): the run sets each part's `ms`.

use crate::analysis::attribution::{
    attribute, attribute_rows, norms_and_projections, unembedding_row,
};
use crate::analysis::steering::{self, SteerOptions};
use crate::analysis::{self, fro_norms, AnalyzeOptions, JacobianValues};
use crate::error::Result;
use crate::forward::{top_k, Precision};
use crate::jacobian::{self, reconstruction_error, rel_error, PassOptions};
use crate::model::Model;
use crate::trace::{trace, Trace};
use candle_core::Tensor;
use lens_report::{
    Attention, Contributions, JacobianPart, Layers, Ordinary, Prediction, Shares, Spectra, Steered,
    TokenRow,
};

/// `J_cat`'s top left singular vectors (as many as the spectrum keeps): the
/// first two are the axes of the layer path; a comparison reads them all.
pub type LeftVectors = Vec<Vec<f64>>;

/// The prediction of the frozen forward `tr`: its `top` next tokens.
pub fn prediction(model: &Model, prompt: &str, tr: &Trace, top: usize) -> Result<Prediction> {
    let logits = tr.logits(model)?;
    let spans = model.tokenizer.spans(prompt)?;
    if spans.len() != tr.ids.len() {
        return Err(crate::EngineError::Config(format!(
            "the tokenizer's offsets ({}) do not match its tokens ({})",
            spans.len(),
            tr.ids.len()
        )));
    }
    Ok(Prediction {
        model: model.name.clone(),
        precision: tr.precision,
        token_ids: tr.ids.clone(),
        tokens: tr
            .ids
            .iter()
            .map(|&i| model.tokenizer.token_str(i))
            .collect(),
        spans,
        top: top_k(model, &logits, top),
        ms: 0.0,
    })
}

/// The tokens whose logits a run splits among the prompt's tokens: the
/// target (default the `predicted` one), then the predicted token when the
/// target is another.
pub fn share_targets(target: Option<u32>, predicted: u32) -> Vec<u32> {
    match target {
        Some(t) if t != predicted => vec![t, predicted],
        _ => vec![predicted],
    }
}

/// The unembedding rows of `targets` (`[k, d]`, f64): the cotangents of the
/// shares' one transpose pass.
pub fn share_cotangents(model: &Model, targets: &[u32]) -> Result<Tensor> {
    let rows = targets
        .iter()
        .map(|&t| unembedding_row(model, t))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// Each token's exact share of the [`share_targets`]' logits from the
/// transpose pass of their rows `u` ([`share_cotangents`]; `v`: `[n, k, d]`,
/// `w_tᵀ J_i` in row `t`).
pub fn shares(
    model: &Model,
    tr: &Trace,
    u: &Tensor,
    v: &Tensor,
    targets: &[u32],
) -> Result<Shares> {
    let of = |k: usize, t: u32| {
        attribute_rows(
            model,
            tr,
            &v.narrow(1, k, 1)?.squeeze(1)?,
            &u.narrow(0, k, 1)?,
            t,
        )
    };
    let Some(&first) = targets.first() else {
        return Err(crate::EngineError::Config("no token to attribute".into()));
    };
    Ok(Shares {
        attribution: of(0, first)?,
        attribution_predicted: match targets.get(1) {
            Some(&p) => Some(of(1, p)?),
            None => None,
        },
        ms: 0.0,
    })
}

/// What the contributions `c` (`[n, d]`, from either backend's forward-mode
/// pass) give: the reconstruction, the per-token rows and the attribution
/// of `target` (default the `predicted` token, the prediction's first; then
/// also the predicted token's when the target is another).
pub fn contributions(
    model: &Model,
    tr: &Trace,
    c: &Tensor,
    target: Option<u32>,
    predicted: u32,
) -> Result<Contributions> {
    let target = target.unwrap_or(predicted);
    Ok(Contributions {
        rel_error: rel_error(&c.sum(0)?, &tr.y.flatten_all()?)?,
        other_precision_rel_error: None,
        per_token: token_rows(model, tr, c)?,
        attribution: attribute(model, tr, c, target)?,
        attribution_predicted: if target != predicted {
            Some(attribute(model, tr, c, predicted)?)
        } else {
            None
        },
        certificate: None,
        ms: 0.0,
    })
}

/// The contributions' reconstruction error at the other precision, from
/// its own frozen forward and CPU pass (the page shows both precisions),
/// with that frozen forward (an f32 run's certificate reads the f64 one).
pub fn other_precision(model: &Model, tr: &Trace) -> Result<(f64, Trace)> {
    let other = match tr.precision {
        Precision::F64 => Precision::F32,
        Precision::F32 => Precision::F64,
    };
    let tr_other = trace(model, &tr.ids, other)?;
    let c = jacobian::contributions(model, &tr_other, PassOptions::default())?;
    Ok((rel_error(&c.sum(0)?, &tr_other.y.flatten_all()?)?, tr_other))
}

/// The per-token rows from the contributions `c`; `‖J_i‖_F` comes with the
/// Jacobian part.
fn token_rows(model: &Model, tr: &Trace, c: &Tensor) -> Result<Vec<TokenRow>> {
    let (cn, proj) = norms_and_projections(c, &tr.y_vec()?)?;
    let xn = fro_norms(&tr.x.unsqueeze(1)?)?;
    Ok(tr
        .ids
        .iter()
        .enumerate()
        .map(|(i, &id)| TokenRow {
            token: model.tokenizer.token_str(id),
            embedding_norm: xn[i],
            jacobian_fro_norm: None,
            contribution_norm: cn[i],
            projection_on_y: proj[i],
        })
        .collect())
}

/// The full detached Jacobian `j` (`[n, d, d]`, from either backend) as the
/// Report reads it: its reconstruction error and per-token norms.
pub fn jacobian(tr: &Trace, j: &Tensor) -> Result<JacobianPart> {
    Ok(JacobianPart {
        detached_rel_error: reconstruction_error(j, &tr.x, &tr.y)?,
        fro_norms: fro_norms(j)?,
        certificate: None,
        gpu_work: None,
        ms: 0.0,
    })
}

/// The spectra: from `J`'s values when formed, else matrix-free (block
/// Lanczos on probe products, computed on this thread), decoded; and the
/// path's axes. Times itself with `now_ms` only to split the SVD from the
/// decoding.
pub fn spectra(
    model: &Model,
    tr: &Trace,
    jv: Option<&JacobianValues>,
    opts: &AnalyzeOptions,
    now_ms: &dyn Fn() -> f64,
) -> Result<(Spectra, LeftVectors)> {
    let on_this_thread = &mut crate::analysis::lanczos::OnThisThread;
    crate::jacobian::now(spectra_by(model, tr, jv, opts, now_ms, on_this_thread))
}

/// [`spectra`] with the matrix-free products computed by `products`.
pub async fn spectra_by(
    model: &Model,
    tr: &Trace,
    jv: Option<&JacobianValues>,
    opts: &AnalyzeOptions,
    now_ms: &dyn Fn() -> f64,
    products: &mut impl crate::analysis::lanczos::Products,
) -> Result<(Spectra, LeftVectors)> {
    let t = now_ms();
    let sp = match jv {
        Some(jv) => analysis::spectra(model, tr, jv, opts, now_ms)?,
        None => analysis::spectra_matrix_free(model, tr, opts, now_ms, products).await?,
    };
    let part = Spectra {
        svd: sp.svd,
        matrix_free: sp.matrix_free,
        decode: sp.decode,
        columns: sp.columns,
        svd_ms: now_ms() - t - sp.decode_ms,
        decode_ms: sp.decode_ms,
    };
    Ok((part, sp.u_cat))
}

/// The frozen attention probabilities.
pub fn attention(tr: &Trace) -> Result<Attention> {
    analysis::attention(tr)
}

/// The ordinary Jacobian's (nothing frozen) reconstruction error, by one
/// forward-mode pass along the input (the ordinary J is not formed).
pub fn ordinary(model: &Model, tr: &Trace) -> Result<Ordinary> {
    Ok(Ordinary {
        rel_error: crate::ordinary::ordinary_reconstruction_error(model, tr)?,
        ms: 0.0,
    })
}

/// Layer curves and the path for the 1-based `layers`, on `axes`.
pub fn layers(
    model: &Model,
    tr: &Trace,
    layers: &[usize],
    opts: &AnalyzeOptions,
    axes: &[Vec<f64>],
) -> Result<Layers> {
    let (layers, path) = analysis::layer_curves(model, tr, layers, opts, axes)?;
    Ok(Layers {
        layers,
        path,
        ms: 0.0,
    })
}

/// `text` continued with the source prompt's operator, and without.
pub fn steer(
    model: &Model,
    text: &str,
    so: &SteerOptions,
    precision: Precision,
    pass: PassOptions,
) -> Result<Steered> {
    Ok(Steered {
        steering: steering::steer(model, text, so, precision, pass)?,
        ms: 0.0,
    })
}
