//! The ordinary Jacobian (nothing frozen), for contrast with the detached one:
//! a batched transpose pass through the true derivatives of every operation,
//! and its forward-mode twin, which gives the ordinary reconstruction error
//! in one pass (`ordinary_reconstruction_error`) without forming J.
//!
//! Besides what the detached pass carries (`v`, `o`, `up`, `down`, residual
//! adds, `P` moving cotangents from queries to keys), it differentiates:
//! - every RMSNorm `y = z · r(z) · w`: `∂y/∂z = diag(r w) (I − z zᵀ r² / dim)`,
//!   so a cotangent row `g` becomes `r (g⊙w) − z (r³/dim) ((g⊙w)·z)` — the
//!   input norms, Gemma's post-attention and post-FFN norms, the per-head
//!   `q_norm`/`k_norm` and the final norm at the last position;
//! - the gate activation (`SiLU`, or Gemma's GELU-tanh as candle computes it);
//! - the softmax: `dS = P ⊙ (dP − rowsum(P ⊙ dP))` (masked entries have
//!   `P = 0` and carry nothing);
//! - the scores through `q` and `k`: the scale, RoPE's transpose, GQA sharing.
//!
//! The trace stores the frozen coefficients and the residual stream; the
//! rest (`q`, `k`, `v` before and after their norms and RoPE, the gate
//! pre-activation, `up`, the module outputs before Gemma's post-norms) is
//! recomputed from it one layer at a time with the forward's own helpers.
//!
//! Cotangents are kept as `[n, k, d]` (position-major, like the detached
//! pass); inside attention as `[kv, k, group, n, head_dim]` so that every
//! product is one batched matmul over the kv heads. Two products have a
//! cheaper composed form that is chosen by flop count: the per-position MLP
//! Jacobians `M_p` (`d × d`) when `k` is large, and the score derivatives as
//! `d`-vectors per (head, query, key) while `n` is small.

use crate::error::Result;
use crate::forward::{apply_rope, matrix, norm_weight, rms_scale, scale_norm, RopeTables};
use crate::jacobian::PassOptions;
use crate::model::{Activation, Model};
use crate::trace::Trace;
use candle_core::{Device, Tensor, D};

mod forward_mode;
pub use forward_mode::{ordinary_jvp, ordinary_reconstruction_error};

/// One RMSNorm application, differentiated: its input `z`, its scale
/// `r = rsqrt(mean(z²) + eps)` (one per row, size-1 last dim) and its
/// effective weight `w`.
struct Norm {
    z: Tensor,
    r: Tensor,
    w: Tensor,
}

impl Norm {
    fn new(z: &Tensor, r: &Tensor, w: &Tensor) -> Result<Self> {
        Ok(Self {
            z: z.contiguous()?,
            r: r.contiguous()?,
            w: w.contiguous()?,
        })
    }

    /// The same norm with `z` viewed as `dims` (and `r` alike, last dim 1),
    /// to broadcast against cotangents of another layout.
    fn reshaped(&self, dims: &[usize]) -> Result<Self> {
        let mut rdims = dims.to_vec();
        if let Some(last) = rdims.last_mut() {
            *last = 1;
        }
        Ok(Self {
            z: self.z.reshape(dims)?,
            r: self.r.reshape(rdims)?,
            w: self.w.clone(),
        })
    }

    /// Cotangent rows `g` on the output → on the input. `g` may carry
    /// leading dims that `z`, `r` broadcast over (size 1 or absent).
    fn vjp(&self, g: &Tensor) -> Result<Tensor> {
        let dim = self.z.dim(D::Minus1)? as f64;
        let s = g.broadcast_mul(&self.w)?;
        let sz = s.broadcast_mul(&self.z)?.sum_keepdim(D::Minus1)?;
        let r3 = ((self.r.sqr()? * &self.r)? / dim)?;
        let corr = sz.broadcast_mul(&r3)?.broadcast_mul(&self.z)?;
        Ok((s.broadcast_mul(&self.r)? - corr)?)
    }
}

/// Derivative of the gate activation at the pre-activation `x`.
fn activation_derivative(activation: Activation, x: &Tensor) -> Result<Tensor> {
    Ok(match activation {
        // candle's gelu: 0.5·x·(1 + tanh(c·(x + a·x³))), c = √(2/π).
        Activation::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let a = 0.044715;
            let x2 = x.sqr()?;
            let t = (x * (x2.affine(a, 1.0)? * c)?)?.tanh()?;
            let outer = (t.affine(0.5, 0.5))?;
            let sech2 = t.sqr()?.affine(-1.0, 1.0)?;
            let inner = x2.affine(3.0 * a * c, c)?;
            (outer + ((x * 0.5)? * sech2)?.mul(&inner)?)?
        }
        // silu: x·σ(x) → σ(x)·(1 + x·(1 − σ(x))).
        Activation::Silu => {
            let s = (x.neg()?.exp()? + 1.0)?.recip()?;
            let one_minus = s.affine(-1.0, 1.0)?;
            (&s * (x * one_minus)?.affine(1.0, 1.0)?)?
        }
    })
}

/// Transpose of rotate-half RoPE (`x⊙cos + rot(x)⊙sin`, `rot(x) = [−x₂, x₁]`)
/// on the last dim: `g⊙cos + [(g⊙sin)₂, −(g⊙sin)₁]`.
fn rope_transpose(g: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = g.dim(D::Minus1)?;
    let gs = g.broadcast_mul(sin)?;
    let s1 = gs.narrow(D::Minus1, 0, hd / 2)?;
    let s2 = gs.narrow(D::Minus1, hd / 2, hd / 2)?;
    let back = Tensor::cat(&[&s2, &s1.neg()?], D::Minus1)?;
    Ok((g.broadcast_mul(cos)? + back)?)
}

/// One decoder block with everything its true derivative needs. Cotangents
/// are `[n, k, d]`; inside attention `[kv, k, group, n, head_dim]`.
struct OrdinaryLayer {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
    scale: f64,
    /// Input norm, `z` as `[n, 1, d]`.
    norm_attn: Norm,
    /// `[heads·hd, d]`, `[kv·hd, d]`, `[kv·hd, d]`, `[d, heads·hd]`.
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    /// Per-head norms, `z` as `[heads, n, hd]` / `[kv, n, hd]` (reshaped on use).
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
    /// RoPE tables of this layer, `[n, hd]`.
    cos: Tensor,
    sin: Tensor,
    /// After norms and RoPE: `[kv, group·n, hd]`, `[kv, n, hd]`.
    qr: Tensor,
    kr: Tensor,
    /// `[kv, n, hd]`
    v: Tensor,
    /// `[kv, 1, group·n, n]`, rows are queries.
    p: Tensor,
    /// `[kv, n, group·n]`
    p_t: Tensor,
    post_attn: Option<Norm>,
    norm_ffn: Norm,
    /// `[ffn, d]`, `[ffn, d]`, `[d, ffn]`.
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
    /// `act(gate)`, `[n, 1, ffn]`.
    g: Tensor,
    /// `up ⊙ act'(gate)`, `[n, 1, ffn]`.
    dgate: Tensor,
    post_ffn: Option<Norm>,
}

impl OrdinaryLayer {
    fn new(model: &Model, l: usize, trace: &Trace, ropes: &RopeTables) -> Result<Self> {
        let c = &model.config;
        let dtype = trace.dtype();
        let rec = &trace.layers[l];
        let (n, d) = rec.h_in.dims2()?;
        let name = |s: &str| format!("blk.{l}.{s}.weight");
        let eps = c.norm_eps;
        let (hd, nh, nkv) = (c.head_dim, c.heads, c.kv_heads);
        let group = nh / nkv;
        let col = |t: &Tensor| t.reshape((n, 1, ())); // rows → [n, 1, ·]

        // Attention, recomputed as forward::layer does.
        let w_attn = norm_weight(model, &name("attn_norm"), dtype)?;
        let a = scale_norm(&rec.h_in, &rec.r_attn, &w_attn)?;
        let wq = matrix(model, &name("attn_q"), dtype)?.contiguous()?;
        let wk = matrix(model, &name("attn_k"), dtype)?.contiguous()?;
        let wv = matrix(model, &name("attn_v"), dtype)?.contiguous()?;
        let wo = matrix(model, &name("attn_output"), dtype)?.contiguous()?;
        let heads = |t: Tensor, h: usize| -> Result<Tensor> {
            Ok(t.reshape((n, h, hd))?.transpose(0, 1)?.contiguous()?)
        };
        let q0 = heads(a.matmul(&wq.t()?)?, nh)?;
        let k0 = heads(a.matmul(&wk.t()?)?, nkv)?;
        let v = heads(a.matmul(&wv.t()?)?, nkv)?;
        let (mut qn, mut kn) = (q0.clone(), k0.clone());
        let (mut q_norm, mut k_norm) = (None, None);
        if c.recipe.qk_norm {
            let wqn = norm_weight(model, &name("attn_q_norm"), dtype)?;
            let wkn = norm_weight(model, &name("attn_k_norm"), dtype)?;
            let rq = rms_scale(&q0, eps)?;
            let rk = rms_scale(&k0, eps)?;
            qn = scale_norm(&q0, &rq, &wqn)?;
            kn = scale_norm(&k0, &rk, &wkn)?;
            q_norm = Some(Norm::new(&q0, &rq, &wqn)?);
            k_norm = Some(Norm::new(&k0, &rk, &wkn)?);
        }
        let (cos, sin) = ropes.for_layer(model, l);
        let qr = apply_rope(&qn, cos, sin)?.reshape((nkv, group * n, hd))?;
        let kr = apply_rope(&kn, cos, sin)?;
        let p = rec.p.reshape((nkv, group * n, n))?;
        let p_t = p.transpose(1, 2)?.contiguous()?;
        let mut post_attn = None;
        if let Some(r) = &rec.r_post_attn {
            let mixed = p
                .matmul(&v)?
                .reshape((nh, n, hd))?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((n, nh * hd))?;
            let raw = mixed.matmul(&wo.t()?)?;
            let w = norm_weight(model, &name("post_attention_norm"), dtype)?;
            post_attn = Some(Norm::new(&col(&raw)?, &col(r)?, &w)?);
        }

        // Gated MLP.
        let w_ffn = norm_weight(model, &name("ffn_norm"), dtype)?;
        let m = scale_norm(&rec.h_mid, &rec.r_ffn, &w_ffn)?;
        let w_gate = matrix(model, &name("ffn_gate"), dtype)?.contiguous()?;
        let w_up = matrix(model, &name("ffn_up"), dtype)?.contiguous()?;
        let w_down = matrix(model, &name("ffn_down"), dtype)?.contiguous()?;
        let gate = m.matmul(&w_gate.t()?)?;
        let up = m.matmul(&w_up.t()?)?;
        let dgate = (activation_derivative(c.recipe.activation, &gate)? * &up)?;
        let mut post_ffn = None;
        if let Some(r) = &rec.r_post_ffn {
            let raw = (&rec.g * &up)?.matmul(&w_down.t()?)?;
            let w = norm_weight(model, &name("post_ffw_norm"), dtype)?;
            post_ffn = Some(Norm::new(&col(&raw)?, &col(r)?, &w)?);
        }
        debug_assert_eq!(d, c.hidden);

        Ok(Self {
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            ffn: c.ffn,
            scale: c.attn_scale,
            norm_attn: Norm::new(&col(&rec.h_in)?, &col(&rec.r_attn)?, &w_attn)?,
            wq,
            wk,
            wv,
            wo,
            q_norm,
            k_norm,
            cos: cos.clone(),
            sin: sin.clone(),
            qr: qr.contiguous()?,
            kr: kr.contiguous()?,
            v,
            p: p.unsqueeze(1)?.contiguous()?,
            p_t,
            post_attn,
            norm_ffn: Norm::new(&col(&rec.h_mid)?, &col(&rec.r_ffn)?, &w_ffn)?,
            w_gate,
            w_up,
            w_down,
            g: col(&rec.g)?.contiguous()?,
            dgate: col(&dgate)?.contiguous()?,
            post_ffn,
        })
    }

    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// The per-position MLP Jacobians `M_p = W_down (diag(g_p) W_up +
    /// diag(up_p ⊙ act'(gate_p)) W_gate)` (`[n, d, d]`, acting on cotangent
    /// rows from the right), built `block` positions at a time.
    fn mlp_maps(&self, block: usize) -> Result<Tensor> {
        let (n, _, ffn) = self.g.dims3()?;
        let d = self.w_down.dim(0)?;
        let up_t = self.w_up.t()?.contiguous()?.unsqueeze(0)?; // [1, d, ffn]
        let gate_t = self.w_gate.t()?.contiguous()?.unsqueeze(0)?;
        let down_t = self.w_down.t()?.contiguous()?; // [ffn, d]
        let mut maps = Vec::new();
        for s in (0..n).step_by(block.max(1)) {
            let b = block.max(1).min(n - s);
            // B_pᵀ = W_upᵀ diag(g_p) + W_gateᵀ diag(dgate_p), [b, d, ffn]
            let bt = (up_t.broadcast_mul(&self.g.narrow(0, s, b)?)?
                + gate_t.broadcast_mul(&self.dgate.narrow(0, s, b)?)?)?;
            // M_pᵀ = B_pᵀ W_downᵀ
            let mt = bt.reshape((b * d, ffn))?.matmul(&down_t)?;
            maps.push(mt.reshape((b, d, d))?.transpose(1, 2)?.contiguous()?);
        }
        let refs: Vec<&Tensor> = maps.iter().collect();
        Ok(Tensor::cat(&refs, 0)?)
    }

    /// The score derivatives as vectors on the normed input `a`:
    /// `AQ[i, (h, j)] = ∂S[h,i,j]/∂a_i` and `AK[j, (h, i)] = ∂S[h,i,j]/∂a_j`
    /// (both `[n, heads·n, d]`, without the score scale). Cheaper than
    /// carrying cotangents through `Wq`, `Wk` while `n` is small.
    fn score_vectors(&self) -> Result<(Tensor, Tensor)> {
        let (nh, nkv, hd, g) = (self.heads, self.kv_heads, self.head_dim, self.group());
        let n = self.kr.dim(1)?;
        let d = self.wq.dim(1)?;
        // AQ[h,i,j] = Wq_hᵀ Nq_{h,i}ᵀ R_iᵀ kr_j
        let kb = self
            .kr
            .reshape((nkv, 1, 1, n, hd))?
            .broadcast_as((nkv, g, n, n, hd))?;
        let mut t = rope_transpose(
            &kb,
            &self.cos.reshape((n, 1, hd))?,
            &self.sin.reshape((n, 1, hd))?,
        )?;
        if let Some(norm) = &self.q_norm {
            t = norm.reshaped(&[nkv, g, n, 1, hd])?.vjp(&t)?;
        }
        let aq = t
            .reshape((nh, n * n, hd))?
            .matmul(&self.wq.reshape((nh, hd, d))?)?
            .reshape((nh, n, n, d))?
            .permute((1, 0, 2, 3))?
            .contiguous()?
            .reshape((n, nh * n, d))?;
        // AK[h,i,j] = Wk_kvᵀ Nk_jᵀ R_jᵀ qr_{h,i}
        let qb = self
            .qr
            .reshape((nkv, 1, g, n, hd))?
            .broadcast_as((nkv, n, g, n, hd))?;
        let mut t = rope_transpose(
            &qb,
            &self.cos.reshape((n, 1, 1, hd))?,
            &self.sin.reshape((n, 1, 1, hd))?,
        )?;
        if let Some(norm) = &self.k_norm {
            t = norm.reshaped(&[nkv, n, 1, 1, hd])?.vjp(&t)?;
        }
        let ak = t
            .reshape((nkv, n * g * n, hd))?
            .matmul(&self.wk.reshape((nkv, hd, d))?)?
            .reshape((nkv, n, g, n, d))?
            .permute((1, 0, 2, 3, 4))?
            .contiguous()?
            .reshape((n, nh * n, d))?;
        Ok((aq, ak))
    }

    /// MLP module plus its residual: cotangents `[n, k, d]` on the block
    /// output → on the residual stream after attention.
    fn mlp_vjp(&self, gout: &Tensor, maps: Option<&Tensor>) -> Result<Tensor> {
        let (n, k, d) = gout.dims3()?;
        let ffn = self.ffn;
        let gz = match &self.post_ffn {
            Some(norm) => norm.vjp(gout)?,
            None => gout.clone(),
        };
        let gm = match maps {
            Some(m) => gz.matmul(m)?,
            None => {
                let gu = gz
                    .reshape((n * k, d))?
                    .matmul(&self.w_down)?
                    .reshape((n, k, ffn))?;
                let g_up = gu.broadcast_mul(&self.g)?.reshape((n * k, ffn))?;
                let g_gate = gu.broadcast_mul(&self.dgate)?.reshape((n * k, ffn))?;
                (g_up.matmul(&self.w_up)? + g_gate.matmul(&self.w_gate)?)?.reshape((n, k, d))?
            }
        };
        Ok((gout + self.norm_ffn.vjp(&gm)?)?)
    }

    /// Attention module plus its residual: cotangents `[n, k, d]` on the
    /// residual after attention → on the block input. `vectors` =
    /// `score_vectors()` when they pay, else `q`, `k` carry the cotangents.
    fn attn_vjp(&self, gmid: &Tensor, vectors: Option<&(Tensor, Tensor)>) -> Result<Tensor> {
        let (n, k, d) = gmid.dims3()?;
        let (nh, nkv, hd, g) = (self.heads, self.kv_heads, self.head_dim, self.group());
        let ga = match &self.post_attn {
            Some(norm) => norm.vjp(gmid)?,
            None => gmid.clone(),
        };
        // Through Wo, heads split: (n, k, kv, g, hd) → (kv, k, g, n, hd).
        let go = ga
            .reshape((n * k, d))?
            .matmul(&self.wo)?
            .reshape((n, k, nkv, g, hd))?
            .permute((2, 1, 3, 0, 4))?
            .contiguous()?;
        // O = P V: dP = dO Vᵀ, dV = Pᵀ dO (over the heads sharing V).
        let gp = go
            .reshape((nkv, k * g * n, hd))?
            .matmul(&self.v.t()?)?
            .reshape((nkv, k, g * n, n))?;
        let gv = self
            .p_t
            .matmul(
                &go.permute((0, 2, 3, 1, 4))?
                    .contiguous()?
                    .reshape((nkv, g * n, k * hd))?,
            )?
            .reshape((nkv, n, k, hd))?
            .permute((1, 2, 0, 3))?
            .contiguous()?
            .reshape((n * k, nkv * hd))?
            .matmul(&self.wv)?
            .reshape((n, k, d))?;
        // Softmax: dS = P ⊙ (dP − rowsum(P ⊙ dP)), times the score scale.
        let pg = self.p.broadcast_mul(&gp)?;
        let gs = ((&pg - self.p.broadcast_mul(&pg.sum_keepdim(D::Minus1)?)?)? * self.scale)?;
        // S = Q Kᵀ: dQ = dS K, dK = dSᵀ Q (summed over the heads sharing K).
        let gs5 = gs.reshape((nkv, k, g, n, n))?;
        let gqk = match vectors {
            Some((aq, ak)) => {
                let by_query =
                    gs5.permute((3, 1, 0, 2, 4))?
                        .contiguous()?
                        .reshape((n, k, nh * n))?;
                let by_key = gs5
                    .permute((4, 1, 0, 2, 3))?
                    .contiguous()?
                    .reshape((n, k, nh * n))?;
                (by_query.matmul(aq)? + by_key.matmul(ak)?)?
            }
            None => {
                let gq = gs
                    .reshape((nkv, k * g * n, n))?
                    .matmul(&self.kr)?
                    .reshape((nkv, k, g, n, hd))?;
                let mut gq = rope_transpose(&gq, &self.cos, &self.sin)?;
                if let Some(norm) = &self.q_norm {
                    gq = norm.reshaped(&[nkv, 1, g, n, hd])?.vjp(&gq)?;
                }
                let gk = gs5
                    .permute((0, 1, 4, 2, 3))?
                    .contiguous()?
                    .reshape((nkv, k * n, g * n))?
                    .matmul(&self.qr)?
                    .reshape((nkv, k, n, hd))?;
                let mut gk = rope_transpose(&gk, &self.cos, &self.sin)?;
                if let Some(norm) = &self.k_norm {
                    gk = norm.reshaped(&[nkv, 1, n, hd])?.vjp(&gk)?;
                }
                let gq = gq
                    .permute((3, 1, 0, 2, 4))?
                    .contiguous()?
                    .reshape((n * k, nh * hd))?
                    .matmul(&self.wq)?;
                let gk = gk
                    .permute((2, 1, 0, 3))?
                    .contiguous()?
                    .reshape((n * k, nkv * hd))?
                    .matmul(&self.wk)?;
                (gq + gk)?.reshape((n, k, d))?
            }
        };
        Ok((gmid + self.norm_attn.vjp(&(gv + gqk)?)?)?)
    }
}

/// `u` (`[k, d]`, cotangents on `y`) → `[n, k, d]`: `u J_i` for every
/// position, `J_i = ∂y/∂x_i` of the ordinary network (nothing frozen).
/// Rows are processed in chunks whose temporaries fit `opts.memory_budget`
/// (the `n·k·d` cotangents themselves come on top).
pub fn ordinary_vjp(model: &Model, trace: &Trace, u: &Tensor, opts: PassOptions) -> Result<Tensor> {
    let c = &model.config;
    let (k, d) = u.dims2()?;
    let n = trace.n();
    let dtype = trace.dtype();
    let bytes = dtype.size_in_bytes();
    let (nh, nkv, hd, ffn) = (c.heads, c.kv_heads, c.head_dim, c.ffn);
    // Temporaries per cotangent row: d-wide buffers, the MLP's ffn-wide
    // products, the attention's head-split copies and score cotangents.
    let per_row = n * (8 * d + 4 * ffn + 8 * nh * hd + 6 * nh * n) * bytes;
    let chunk = (opts.memory_budget / per_row.max(1)).clamp(1, k.max(1));

    // Which form pays, by flop counts over all k rows (per position):
    // MLP: compose M_p once (2·d²·ffn) and apply it (2·k·d²), or apply the
    // three factors (6·k·d·ffn); scores: the q/k vectors (4·heads·n·hd·d to
    // build, 4·k·heads·n·d to apply), or Wq, Wk on the cotangents
    // (2·k·(heads + kv)·hd·d).
    let (df, kf, nf, ffnf) = (d as f64, k as f64, n as f64, ffn as f64);
    let (nhf, hdf) = (nh as f64, hd as f64);
    // The maps (n·d²) plus, per position being composed, three d·ffn buffers.
    let (maps_bytes, per_position) = (n * d * d * bytes, 3 * d * ffn * bytes);
    let map_block =
        (opts.memory_budget.saturating_sub(maps_bytes) / per_position.max(1)).clamp(1, n);
    let use_maps = 2.0 * df * df * ffnf + 2.0 * kf * df * df < 6.0 * kf * df * ffnf
        && maps_bytes + per_position <= opts.memory_budget;
    let use_vectors = 4.0 * nhf * nf * hdf * df + 4.0 * kf * nhf * nf * df
        < 2.0 * kf * (nhf + nkv as f64) * hdf * df
        && 2 * nh * n * n * (d + 2 * hd) * bytes <= opts.memory_budget;

    let start = final_norm(trace)?.vjp(&u.to_dtype(dtype)?)?; // [k, d]

    let mut chunks = Vec::new();
    for s in (0..k).step_by(chunk) {
        let kc = chunk.min(k - s);
        let top = start.narrow(0, s, kc)?.unsqueeze(0)?;
        chunks.push(if n == 1 {
            top
        } else {
            let zeros = Tensor::zeros((n - 1, kc, d), dtype, &Device::Cpu)?;
            Tensor::cat(&[&zeros, &top], 0)?
        });
    }
    let ropes = RopeTables::new(model, n, dtype)?;
    for l in (0..c.layers).rev() {
        crate::progress::report(c.layers - 1 - l, c.layers);
        let ol = OrdinaryLayer::new(model, l, trace, &ropes)?;
        let maps = if use_maps {
            Some(ol.mlp_maps(map_block)?)
        } else {
            None
        };
        let vectors = if use_vectors {
            Some(ol.score_vectors()?)
        } else {
            None
        };
        for g in chunks.iter_mut() {
            let mid = ol.mlp_vjp(g, maps.as_ref())?;
            *g = ol.attn_vjp(&mid, vectors.as_ref())?;
        }
    }
    crate::progress::report(c.layers, c.layers);
    if chunks.is_empty() {
        return Ok(Tensor::zeros((n, 0, d), dtype, &Device::Cpu)?);
    }
    let refs: Vec<&Tensor> = chunks.iter().collect();
    Ok(Tensor::cat(&refs, 1)?)
}

/// The final norm at the last position, differentiated.
fn final_norm(trace: &Trace) -> Result<Norm> {
    let n = trace.n();
    let last = match trace.layers.last() {
        Some(rec) => rec.h_out.narrow(0, n - 1, 1)?,
        None => trace.x.narrow(0, n - 1, 1)?,
    };
    Norm::new(&last, &trace.r_final, &trace.w_final)
}

/// The full ordinary Jacobian `[n, d, d]`, `J[i] = ∂y/∂x_i` (nothing frozen).
pub fn ordinary_jacobian(model: &Model, trace: &Trace, opts: PassOptions) -> Result<Tensor> {
    let d = model.config.hidden;
    let eye = Tensor::eye(d, trace.dtype(), &Device::Cpu)?;
    ordinary_vjp(model, trace, &eye, opts)
}
