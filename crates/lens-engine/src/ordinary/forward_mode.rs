//! Forward mode through the ordinary network: one tangent carried through
//! every true derivative, as the forward computes each block. Along the
//! input itself it gives `Σ_i J_i x_i`, so the ordinary reconstruction error
//! costs one pass instead of the `d` rows of the ordinary J.

use super::{final_norm, Norm, OrdinaryLayer};
use crate::error::Result;
use crate::forward::{apply_rope, RopeTables};
use crate::jacobian::rel_error;
use crate::model::Model;
use crate::trace::Trace;
use candle_core::{Tensor, D};

impl Norm {
    /// Tangents `t` on the input → on the output (`t` shaped like `z`):
    /// `w ⊙ (r t − z (r³/dim) (z·t))`.
    fn jvp(&self, t: &Tensor) -> Result<Tensor> {
        let dim = self.z.dim(D::Minus1)? as f64;
        let zt = t.broadcast_mul(&self.z)?.sum_keepdim(D::Minus1)?;
        let r3 = ((self.r.sqr()? * &self.r)? / dim)?;
        let corr = zt.broadcast_mul(&r3)?.broadcast_mul(&self.z)?;
        Ok((t.broadcast_mul(&self.r)? - corr)?.broadcast_mul(&self.w)?)
    }
}

impl OrdinaryLayer {
    /// The block in forward mode: one tangent `dh` (`[n, d]`) on its input
    /// → on its output, through every true derivative (the norms' scales,
    /// the softmax, the gate), as the forward computes the block.
    fn jvp(&self, dh: &Tensor) -> Result<Tensor> {
        let (n, d) = dh.dims2()?;
        let (nh, nkv, hd, g) = (self.heads, self.kv_heads, self.head_dim, self.group());
        let col = |t: &Tensor| t.reshape((n, 1, d));
        let heads = |t: Tensor, h: usize| -> Result<Tensor> {
            Ok(t.reshape((n, h, hd))?.transpose(0, 1)?.contiguous()?)
        };
        // Attention: the input norm, q/k/v with their norms and RoPE.
        let da = self.norm_attn.jvp(&col(dh)?)?.reshape((n, d))?;
        let mut dq = heads(da.matmul(&self.wq.t()?)?, nh)?;
        let mut dk = heads(da.matmul(&self.wk.t()?)?, nkv)?;
        let dv = heads(da.matmul(&self.wv.t()?)?, nkv)?;
        if let Some(norm) = &self.q_norm {
            dq = norm.jvp(&dq)?;
        }
        if let Some(norm) = &self.k_norm {
            dk = norm.jvp(&dk)?;
        }
        let dq = apply_rope(&dq, &self.cos, &self.sin)?.reshape((nkv, g * n, hd))?;
        let dk = apply_rope(&dk, &self.cos, &self.sin)?;
        // S = Q Kᵀ: dS = (dQ Kᵀ + Q dKᵀ)·scale; softmax: dP = P ⊙ (dS −
        // rowsum(P ⊙ dS)) (masked entries have P = 0 and move nothing).
        let ds = ((dq.matmul(&self.kr.t()?)? + self.qr.matmul(&dk.t()?)?)? * self.scale)?;
        let p = self.p.squeeze(1)?;
        let pds = (&p * &ds)?;
        let dp = (&pds - p.broadcast_mul(&pds.sum_keepdim(D::Minus1)?)?)?;
        // O = P V: dO = dP V + P dV, then the heads merged through Wo.
        let dmixed = (dp.matmul(&self.v)? + p.matmul(&dv)?)?
            .reshape((nh, n, hd))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((n, nh * hd))?;
        let mut dattn = dmixed.matmul(&self.wo.t()?)?;
        if let Some(norm) = &self.post_attn {
            dattn = norm.jvp(&col(&dattn)?)?.reshape((n, d))?;
        }
        let dmid = (dh + dattn)?;
        // Gated MLP: d(act(gate) ⊙ up) = up ⊙ act'(gate) ⊙ dgate + act(gate) ⊙ dup.
        let dm = self.norm_ffn.jvp(&col(&dmid)?)?.reshape((n, d))?;
        let dgate = dm.matmul(&self.w_gate.t()?)?;
        let dup = dm.matmul(&self.w_up.t()?)?;
        let ffn = self.ffn;
        let dact = ((self.dgate.reshape((n, ffn))? * dgate)? + (self.g.reshape((n, ffn))? * dup)?)?;
        let mut dmlp = dact.matmul(&self.w_down.t()?)?;
        if let Some(norm) = &self.post_ffn {
            dmlp = norm.jvp(&col(&dmlp)?)?.reshape((n, d))?;
        }
        Ok((dmid + dmlp)?)
    }
}

/// Forward mode through the ordinary network (nothing frozen): one tangent
/// `v` (`[n, d]`, at the input embeddings) → `Σ_i J_i v_i` (`[1, d]`). About
/// the cost of one forward pass.
pub fn ordinary_jvp(model: &Model, trace: &Trace, v: &Tensor) -> Result<Tensor> {
    let layers = model.config.layers;
    let n = trace.n();
    let dtype = trace.dtype();
    let ropes = RopeTables::new(model, n, dtype)?;
    let mut dh = v.to_dtype(dtype)?;
    for l in 0..layers {
        crate::progress::report(l, layers);
        dh = OrdinaryLayer::new(model, l, trace, &ropes)?.jvp(&dh)?;
    }
    crate::progress::report(layers, layers);
    final_norm(trace)?.jvp(&dh.narrow(0, n - 1, 1)?)
}

/// The ordinary Jacobian's reconstruction error `‖Σ_i J_i x_i − y‖ / ‖y‖`
/// without forming it: `Σ_i J_i x_i` is the derivative of the true network
/// along the input itself, one forward-mode pass.
pub fn ordinary_reconstruction_error(model: &Model, trace: &Trace) -> Result<f64> {
    let jx = ordinary_jvp(model, trace, &trace.x)?;
    rel_error(&jx, &trace.y)
}
