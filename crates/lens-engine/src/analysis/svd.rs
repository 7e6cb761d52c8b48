//! Singular value decompositions of the detached Jacobian (faer, f64): of each
//! `J_i` and of `J_cat = [J_1 … J_n]` (`d × n·d`), and the stable rank
//! `‖J‖_F² / σ₁²` (the paper's dimensionality).

use crate::error::{EngineError, Result};
use candle_core::{DType, Tensor};
use faer::Mat;

/// A matrix's singular values (descending, all of them) and its top singular
/// pairs, signed so that `u_k · y ≥ 0` when a reference `y` is given.
#[derive(Debug, Clone)]
pub struct Decomposition {
    pub singular_values: Vec<f64>,
    /// Top left singular vectors (output space, `d` each).
    pub u: Vec<Vec<f64>>,
    /// Top right singular vectors (input space: `d`, or `n·d` for `J_cat`).
    pub v: Vec<Vec<f64>>,
}

pub use lens_report::Spectrum;

/// `‖J‖_F² / σ₁²`; 0 for a zero matrix.
pub fn stable_rank(singular_values: &[f64]) -> f64 {
    let s1 = singular_values.first().copied().unwrap_or(0.0);
    if s1 == 0.0 {
        return 0.0;
    }
    singular_values.iter().map(|s| s * s).sum::<f64>() / (s1 * s1)
}

impl Decomposition {
    pub fn spectrum(&self, keep: usize) -> Spectrum {
        Spectrum {
            singular_values: self.singular_values.iter().take(keep).copied().collect(),
            stable_rank: stable_rank(&self.singular_values),
            fro_norm: self
                .singular_values
                .iter()
                .map(|s| s * s)
                .sum::<f64>()
                .sqrt(),
        }
    }
}

/// The Jacobian `[n, d_out, d_in]` as f64 values.
pub fn jacobian_values(j: &Tensor) -> Result<(Vec<f64>, [usize; 3])> {
    let (n, r, c) = j.dims3()?;
    Ok((
        j.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
        [n, r, c],
    ))
}

/// SVD of a `rows × cols` matrix given element by element, keeping the top
/// `keep` pairs, signed so that `u_k · reference ≥ 0`.
pub fn decompose(
    rows: usize,
    cols: usize,
    at: impl Fn(usize, usize) -> f64,
    keep: usize,
    reference: Option<&[f64]>,
) -> Result<Decomposition> {
    let m = Mat::<f64>::from_fn(rows, cols, at);
    let svd = m
        .thin_svd()
        .map_err(|e| EngineError::Backend(format!("SVD did not converge: {e:?}")))?;
    let s = svd.S().column_vector();
    let count = rows.min(cols);
    let singular_values: Vec<f64> = (0..count).map(|k| s[k]).collect();
    let (u, v) = (svd.U(), svd.V());
    let keep = keep.min(count);
    let mut us = Vec::with_capacity(keep);
    let mut vs = Vec::with_capacity(keep);
    for k in 0..keep {
        let mut uk: Vec<f64> = (0..rows).map(|r| u[(r, k)]).collect();
        let mut vk: Vec<f64> = (0..cols).map(|c| v[(c, k)]).collect();
        if let Some(y) = reference {
            if uk.iter().zip(y).map(|(a, b)| a * b).sum::<f64>() < 0.0 {
                uk.iter_mut().for_each(|x| *x = -*x);
                vk.iter_mut().for_each(|x| *x = -*x);
            }
        }
        us.push(uk);
        vs.push(vk);
    }
    Ok(Decomposition {
        singular_values,
        u: us,
        v: vs,
    })
}

/// SVD of `J_i` (block `i` of `[n, d_out, d_in]` values).
pub fn decompose_token(
    values: &[f64],
    dims: [usize; 3],
    i: usize,
    keep: usize,
    reference: Option<&[f64]>,
) -> Result<Decomposition> {
    let [_, r, c] = dims;
    let base = i * r * c;
    decompose(r, c, |a, b| values[base + a * c + b], keep, reference)
}

/// SVD of `J_cat = [J_1 … J_n]` (`d_out × n·d_in`).
pub fn decompose_concat(
    values: &[f64],
    dims: [usize; 3],
    keep: usize,
    reference: Option<&[f64]>,
) -> Result<Decomposition> {
    let [n, r, c] = dims;
    decompose(
        r,
        n * c,
        |a, col| values[(col / c) * r * c + a * c + col % c],
        keep,
        reference,
    )
}
