//! Exact logit attribution: the logit of token `t` is `w_t · y` and
//! `y = Σ_i c_i` with `c_i = J_i x_i`, so `w_t · c_i` splits it exactly among
//! the input tokens.

use super::decode::unembedding_name;
use crate::error::Result;
use crate::model::Model;
use crate::trace::Trace;
use candle_core::{DType, Tensor};

pub use lens_report::Attribution;

/// Attribution of token `target`'s logit to the contributions `c` (`[n, d]`).
pub fn attribute(model: &Model, trace: &Trace, c: &Tensor, target: u32) -> Result<Attribution> {
    let w = model
        .weights
        .select_rows(unembedding_name(model), &[target], DType::F64)?
        .reshape(((), 1))?;
    let dot = |m: &Tensor| -> Result<Vec<f64>> {
        Ok(m.to_dtype(DType::F64)?
            .matmul(&w)?
            .flatten_all()?
            .to_vec1::<f64>()?)
    };
    let logit = dot(&trace.y)?[0];
    let per_token = dot(c)?;
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
