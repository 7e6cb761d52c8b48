//! Exact logit attribution: the logit of token `t` is `w_t · y` and
//! `y = Σ_i c_i` with `c_i = J_i x_i`, so `w_t · c_i` splits it exactly among
//! the input tokens. The same shares come without the `c_i` from one
//! transpose pass of `w_t`: `w_t · c_i = (w_tᵀ J_i) · x_i`.

use crate::error::Result;
use crate::forward::unembedding_name;
use crate::model::Model;
use crate::trace::Trace;
use candle_core::{DType, Tensor};

pub use lens_report::Attribution;

/// Attribution of token `target`'s logit to the contributions `c` (`[n, d]`).
pub fn attribute(model: &Model, trace: &Trace, c: &Tensor, target: u32) -> Result<Attribution> {
    let w = unembedding_row(model, target)?.reshape(((), 1))?;
    let per_token = c
        .to_dtype(DType::F64)?
        .matmul(&w)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    attribution(model, trace, &w, target, per_token)
}

/// Attribution of token `target`'s logit from `w_tᵀ J_i` (`rows`, `[n, d]`,
/// one transpose pass of `w_t`, the unembedding row given): each share is
/// `(w_tᵀ J_i) · x_i`, so the `c_i` are never formed.
pub fn attribute_rows(
    model: &Model,
    trace: &Trace,
    rows: &Tensor,
    w_t: &Tensor,
    target: u32,
) -> Result<Attribution> {
    let per_token = (rows.to_dtype(DType::F64)? * trace.x.to_dtype(DType::F64)?)?
        .sum(1)?
        .to_vec1::<f64>()?;
    attribution(model, trace, &w_t.reshape(((), 1))?, target, per_token)
}

/// The unembedding row `w_t` (`[1, d]`, f64).
pub fn unembedding_row(model: &Model, target: u32) -> Result<Tensor> {
    model
        .weights
        .select_rows(unembedding_name(model), &[target], DType::F64)
}

/// The attribution of `target` (unembedding column `w`, `[d, 1]`) given each
/// token's share: the logit `w_t · y` they must sum to, and how well they do.
fn attribution(
    model: &Model,
    trace: &Trace,
    w: &Tensor,
    target: u32,
    per_token: Vec<f64>,
) -> Result<Attribution> {
    let logit = trace
        .y
        .to_dtype(DType::F64)?
        .matmul(w)?
        .flatten_all()?
        .to_vec1::<f64>()?[0];
    let sum: f64 = per_token.iter().sum();
    Ok(Attribution {
        target_id: target,
        target_token: model.tokenizer.token_str(target),
        logit,
        per_token,
        sum_rel_error: (sum - logit).abs() / logit.abs().max(f64::MIN_POSITIVE),
    })
}

/// `‖c_i‖` and `c_i · y / ‖y‖` for each row of `c` (`[n, d]`); the
/// projections sum to `‖y‖` when `Σ c_i = y`.
pub fn norms_and_projections(c: &Tensor, y: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    let c = c.to_dtype(DType::F64)?;
    let norms = c.sqr()?.sum(1)?.sqrt()?.to_vec1::<f64>()?;
    let y_norm = y
        .iter()
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    let yt = Tensor::from_slice(y, (y.len(), 1), c.device())?;
    let proj = c
        .matmul(&yt)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|p| p / y_norm)
        .collect();
    Ok((norms, proj))
}
