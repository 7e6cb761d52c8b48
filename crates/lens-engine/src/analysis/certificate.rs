//! A check of a Jacobian computed elsewhere (on a GPU, in f32) against the
//! f64 transpose pass, without forming `J` in f64: `k` random unit probes
//! `u`, `uᵀJ_i` for every position both ways. Seconds where the f64 `J`
//! would take minutes.

use crate::error::Result;
use crate::jacobian::{rel_error, vjp, PassOptions};
use crate::model::Model;
use crate::trace::Trace;
use candle_core::{DType, Device, Tensor};

/// Probes a certificate uses.
pub const PROBES: usize = 3;

/// `k` unit vectors of length `d` (`[k, d]`, f64), reproducible from `seed`.
pub fn probes(d: usize, k: usize, seed: u64) -> Result<Tensor> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        // splitmix64, to a uniform in [-1, 1)
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    };
    let mut v = Vec::with_capacity(k * d);
    for _ in 0..k {
        let row: Vec<f64> = (0..d).map(|_| next()).collect();
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
        v.extend(row.iter().map(|x| x / norm));
    }
    Ok(Tensor::from_vec(v, (k, d), &Device::Cpu)?)
}

/// The f64 reference `uᵀJ_i` (`[n, k, d]`) by the transpose pass on an f64
/// trace of the same prompt.
pub fn reference(model: &Model, trace64: &Trace, u: &Tensor) -> Result<Tensor> {
    Ok(vjp(
        model,
        trace64,
        &u.to_dtype(DType::F64)?,
        PassOptions::default(),
    )?
    .0)
}

/// `uᵀJ_i` from a formed `J` (`[n, d_out, d_in]`) → `[n, k, d_in]` (f64).
pub fn through(j: &Tensor, u: &Tensor) -> Result<Tensor> {
    let j = j.to_dtype(DType::F64)?;
    let n = j.dim(0)?;
    let (k, d) = u.dims2()?;
    let u = u
        .to_dtype(DType::F64)?
        .reshape((1, k, d))?
        .broadcast_as((n, k, d))?
        .contiguous()?;
    Ok(u.matmul(&j)?)
}

/// `max_r ‖a_r − b_r‖ / ‖b_r‖` over the probes `r`, each taken over every
/// position (`[n, k, d]` both).
pub fn max_rel_error(a: &Tensor, reference: &Tensor) -> Result<f64> {
    let k = reference.dim(1)?;
    let mut worst = 0.0f64;
    for r in 0..k {
        let e = rel_error(&a.narrow(1, r, 1)?, &reference.narrow(1, r, 1)?)?;
        worst = worst.max(e);
    }
    Ok(worst)
}
