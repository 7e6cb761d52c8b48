//! One block of the frozen-linear network, with every frozen diagonal folded
//! into its matrices so that both directions (forward mode and the transpose
//! pass) are matrix products plus residual adds:
//!
//! - attention: `o'_i = W̃o Σ_j P̂[h,i,j] (W̃v x_j)_{kv(h)}` with
//!   `W̃v = Wv diag(w_attn)`, `W̃o = diag(w_post) Wo` and
//!   `P̂[h,i,j] = r_post_i · P[h,i,j] · r_attn_j`;
//! - MLP: `f'_p = W̃down diag(g̃_p) W̃up x_p` with `W̃up = Wup diag(w_ffn)`,
//!   `W̃down = diag(w_post_ffn) Wdown`, `g̃_p = g_p · r_ffn_p · r_post_ffn_p`.
//!
//! The `q`, `k` and gate branches carry nothing: they only produced `P`, `g`.

use crate::error::Result;
use crate::forward::{matrix, norm_weight, LayerRecord};
use crate::model::{Arch, Model};
use candle_core::{DType, Tensor};

pub struct FrozenLayer {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// `[kv·hd, d]`
    pub wv: Tensor,
    /// `[d, heads·hd]`
    pub wo: Tensor,
    /// `[ffn, d]`
    pub w_up: Tensor,
    /// `[d, ffn]`
    pub w_down: Tensor,
    /// `[heads, n, n]`, rows are queries.
    pub p_hat: Tensor,
    /// `[n, ffn]`
    pub g_tilde: Tensor,
}

impl FrozenLayer {
    pub fn new(model: &Model, l: usize, rec: &LayerRecord, dtype: DType) -> Result<Self> {
        let c = &model.config;
        let name = |s: &str| format!("blk.{l}.{s}.weight");
        let gemma = c.arch == Arch::Gemma3;
        let d = c.hidden;
        let w_attn = norm_weight(model, &name("attn_norm"), dtype)?.reshape((1, d))?;
        let w_ffn = norm_weight(model, &name("ffn_norm"), dtype)?.reshape((1, d))?;
        let wv = matrix(model, &name("attn_v"), dtype)?.broadcast_mul(&w_attn)?;
        let mut wo = matrix(model, &name("attn_output"), dtype)?;
        let w_up = matrix(model, &name("ffn_up"), dtype)?.broadcast_mul(&w_ffn)?;
        let mut w_down = matrix(model, &name("ffn_down"), dtype)?;
        if gemma {
            let wp = norm_weight(model, &name("post_attention_norm"), dtype)?.reshape((d, 1))?;
            wo = wo.broadcast_mul(&wp)?;
            let wf = norm_weight(model, &name("post_ffw_norm"), dtype)?.reshape((d, 1))?;
            w_down = w_down.broadcast_mul(&wf)?;
        }
        let n = rec.h_in.dim(0)?;
        // P̂ = r_post_i · P · r_attn_j
        let mut p_hat = rec.p.broadcast_mul(&rec.r_attn.reshape((1, 1, n))?)?;
        let mut g_tilde = rec.g.broadcast_mul(&rec.r_ffn)?;
        if let Some(r) = &rec.r_post_attn {
            p_hat = p_hat.broadcast_mul(&r.reshape((1, n, 1))?)?;
        }
        if let Some(r) = &rec.r_post_ffn {
            g_tilde = g_tilde.broadcast_mul(r)?;
        }
        Ok(Self {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            wv: wv.contiguous()?,
            wo: wo.contiguous()?,
            w_up: w_up.contiguous()?,
            w_down: w_down.contiguous()?,
            p_hat: p_hat.contiguous()?,
            g_tilde: g_tilde.contiguous()?,
        })
    }

    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Forward mode: tangents `t` `[b, n, d]` at the block input → at its
    /// output (attention and MLP module outputs returned too).
    pub fn forward(&self, t: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, n, d) = t.dims3()?;
        let (nkv, hd, g) = (self.kv_heads, self.head_dim, self.group());
        let v = t.reshape((b * n, d))?.matmul(&self.wv.t()?)?;
        let v = v.reshape((b, n, nkv, hd))?.transpose(1, 2)?.contiguous()?; // [b, kv, n, hd]
        let p = self.p_hat.reshape((1, nkv, g * n, n))?;
        let mixed = p.broadcast_matmul(&v)?; // [b, kv, g·n, hd] = [b, H, n, hd]
        let mixed = mixed
            .reshape((b, self.heads, n, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * n, self.heads * hd))?;
        let attn = mixed.matmul(&self.wo.t()?)?.reshape((b, n, d))?;
        let h = (t + &attn)?;
        let u = h.reshape((b * n, d))?.matmul(&self.w_up.t()?)?;
        let u = u.reshape((b, n, ()))?.broadcast_mul(&self.g_tilde)?;
        let mlp = u
            .reshape((b * n, ()))?
            .matmul(&self.w_down.t()?)?
            .reshape((b, n, d))?;
        let out = (&h + &mlp)?;
        Ok((out, attn, mlp))
    }

    /// The per-position MLP maps `C_p = W̃down diag(g̃_p) W̃up` (`[m, d, d]`)
    /// for positions `from..n`.
    pub fn mlp_maps(&self, from: usize) -> Result<Tensor> {
        let n = self.g_tilde.dim(0)?;
        let (d, ffn) = self.w_down.dims2()?;
        let m = n - from;
        let g = self.g_tilde.narrow(0, from, m)?.reshape((m, 1, ffn))?;
        let scaled = self.w_down.reshape((1, d, ffn))?.broadcast_mul(&g)?;
        Ok(scaled
            .reshape((m * d, ffn))?
            .matmul(&self.w_up)?
            .reshape((m, d, d))?)
    }

    /// Transpose of the MLP module (plus its residual when `residual`) on
    /// cotangents `gc` `[m, k, d]` at the last `m` positions. `maps` =
    /// `mlp_maps(n - m)` when composing pays (k large), else the factors are
    /// applied.
    pub fn mlp_transpose(
        &self,
        gc: &Tensor,
        maps: Option<&Tensor>,
        residual: bool,
    ) -> Result<Tensor> {
        let (m, k, d) = gc.dims3()?;
        let through = match maps {
            Some(c) => gc.matmul(c)?,
            None => {
                let n = self.g_tilde.dim(0)?;
                let u = gc.reshape((m * k, d))?.matmul(&self.w_down)?;
                let g = self.g_tilde.narrow(0, n - m, m)?.unsqueeze(1)?;
                let u = u.reshape((m, k, ()))?.broadcast_mul(&g)?;
                u.reshape((m * k, ()))?
                    .matmul(&self.w_up)?
                    .reshape((m, k, d))?
            }
        };
        Ok(if residual { (gc + through)? } else { through })
    }

    /// Transpose of the attention module (plus its residual when `residual`):
    /// cotangents `gc` `[m, k, d]` at the last `m` (query) positions →
    /// `[n, k, d]` at all.
    pub fn attn_transpose(&self, gc: &Tensor, residual: bool) -> Result<Tensor> {
        let (m, k, d) = gc.dims3()?;
        let n = self.p_hat.dim(1)?;
        let (nkv, hd, g) = (self.kv_heads, self.head_dim, self.group());
        let flat = gc.reshape((m * k, d))?;
        // One product per head writes that head's block contiguously, so the
        // stack is already [kv, g·m, k·hd] (head h = kv·g + gi): no strided
        // permute of the large cotangent block.
        let heads = (0..self.heads)
            .map(|h| flat.matmul(&self.wo.narrow(1, h * hd, hd)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let gm = Tensor::stack(&heads, 0)?.reshape((nkv, g * m, k * hd))?;
        drop(heads);
        // Pᵀ of the query rows n-m.., stacked over the heads sharing a kv head.
        let pt = self
            .p_hat
            .narrow(1, n - m, m)?
            .reshape((nkv, g * m, n))?
            .transpose(1, 2)?
            .contiguous()?; // [kv, n, g·m]
                            // [kv, n, k·hd]
        let gv = pt.matmul(&gm)?;
        // Back to the residual: Σ_kv Gv_kv W̃v_kv, again without a permute.
        let per_kv = |kv: usize| {
            gv.get(kv)?
                .reshape((n * k, hd))?
                .matmul(&self.wv.narrow(0, kv * hd, hd)?)
        };
        let mut ga = per_kv(0)?;
        for kv in 1..nkv {
            ga = (ga + per_kv(kv)?)?;
        }
        let ga = ga.reshape((n, k, d))?;
        if !residual {
            Ok(ga)
        } else if m == n {
            Ok((ga + gc)?)
        } else {
            let zeros = Tensor::zeros((n - m, k, d), gc.dtype(), gc.device())?;
            Ok((ga + Tensor::cat(&[&zeros, gc], 0)?)?)
        }
    }
}
