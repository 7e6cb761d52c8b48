//! One block of the frozen-linear network, with every frozen diagonal folded
//! into its matrices so that both directions (forward mode and the transpose
//! pass) are matrix products plus residual adds, written against
//! [`Backend`]:
//!
//! - attention: `o'_i = W̃o Σ_j P̂[h,i,j] (W̃v x_j)_{kv(h)}` with
//!   `W̃v = Wv diag(w_attn)`, `W̃o = diag(w_post) Wo` and
//!   `P̂[h,i,j] = r_post_i · P[h,i,j] · r_attn_j`;
//! - MLP: `f'_p = W̃down diag(g̃_p) W̃up x_p` with `W̃up = Wup diag(w_ffn)`,
//!   `W̃down = diag(w_post_ffn) Wdown`, `g̃_p = g_p · r_ffn_p · r_post_ffn_p`.
//!
//! The `q`, `k` and gate branches carry nothing: they only produced `P`, `g`.
//!
//! Layouts: tangents `[b, n, d]`; cotangent blocks `[m, k, d]` (the last `m`
//! positions, `k` rows each), so a row of `J_i` is contiguous.

use crate::backend::{Backend, Batch, MatView, Store, Strided};
use crate::error::Result;
use crate::forward::{norm_weight, LayerRecord};
use crate::model::Model;
use candle_core::{Device, Tensor};

pub struct FrozenLayer<B: Backend> {
    pub n: usize,
    pub d: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// `[kv·hd, d]`
    wv: B::Buf,
    /// `[d, heads·hd]`
    wo: B::Buf,
    /// `[ffn, d]`
    w_up: B::Buf,
    /// `[d, ffn]`
    w_down: B::Buf,
    /// `[heads, n, n]`, rows are queries.
    p_hat: B::Buf,
    /// `P̂ᵀ` grouped by kv head: `[kv, n (key), group·n (head, query)]`.
    p_t: B::Buf,
    /// `[n, ffn]`
    g_tilde: B::Buf,
}

/// Positions whose MLP maps are formed and applied together.
const MAP_GROUP: usize = 4;

/// Scratch the transpose pass reuses from layer to layer.
pub struct Workspace<B: Backend> {
    /// Per-head cotangents after `W̃o`, `[heads, m, k, hd]`.
    gm: Option<B::Buf>,
    /// Per-kv-head cotangents after `Pᵀ`, `[kv, n, k, hd]`.
    gv: Option<B::Buf>,
    /// `diag(g̃_p) W̃up` of a group of positions, `[group, ffn, d]`.
    scaled: Option<B::Buf>,
    /// The group's MLP maps, `[group, d, d]`.
    map: Option<B::Buf>,
    /// `I`, `[d, d]`.
    eye: Option<B::Buf>,
    /// Cotangent blocks given back, for the next layer's outputs: fresh
    /// allocations of this size cost page faults on every layer.
    spare: Vec<B::Buf>,
}

impl<B: Backend> Workspace<B> {
    /// A buffer of at least `len` elements with unspecified contents.
    fn take(&mut self, be: &B, len: usize) -> Result<B::Buf> {
        let best = (0..self.spare.len())
            .filter(|&i| be.len(&self.spare[i]) >= len)
            .min_by_key(|&i| be.len(&self.spare[i]));
        match best {
            Some(i) => Ok(self.spare.swap_remove(i)),
            None => be.zeros(len),
        }
    }

    fn give(&mut self, buf: B::Buf) {
        self.spare.push(buf);
    }
}

impl<B: Backend> Default for Workspace<B> {
    fn default() -> Self {
        Self {
            gm: None,
            gv: None,
            scaled: None,
            map: None,
            eye: None,
            spare: Vec::new(),
        }
    }
}

/// A buffer of at least `len` elements, kept for the next call.
fn scratch<'a, B: Backend>(
    be: &B,
    slot: &'a mut Option<B::Buf>,
    len: usize,
) -> Result<&'a mut B::Buf> {
    if slot.as_ref().is_none_or(|b| be.len(b) < len) {
        *slot = None; // free before allocating the larger one
        *slot = Some(be.zeros(len)?);
    }
    match slot {
        Some(b) => Ok(b),
        None => unreachable!("slot filled above"),
    }
}

/// Cotangents on the last `m` positions, `k` rows each: `[m, k, d]`.
pub struct Cotangents<B: Backend> {
    pub buf: B::Buf,
    pub m: usize,
    pub k: usize,
}

impl<B: Backend> FrozenLayer<B> {
    pub fn new(be: &B, model: &Model, l: usize, rec: &LayerRecord) -> Result<Self> {
        let dtype = be.dtype();
        let c = &model.config;
        let name = |s: &str| format!("blk.{l}.{s}.weight");
        let post_norms = c.recipe.post_norms;
        let d = c.hidden;
        let (kvd, hh) = (c.kv_heads * c.head_dim, c.heads * c.head_dim);
        // The norm weights fold into the matrices on the backend, so that a
        // GPU decodes its resident weights without a round trip.
        let fold = |w: &str, norm: &str, dims: [usize; 3], strides: [usize; 3]| {
            let mut m = be.weight(model, &name(w))?;
            let g = be.upload(&norm_weight(model, &name(norm), dtype)?)?;
            be.elementwise(
                Store::Mul,
                &mut m,
                0,
                dims,
                (&g, Strided { offset: 0, strides }),
                None,
            )?;
            Ok::<_, crate::EngineError>(m)
        };
        // Columns scaled by the pre-norm weight; rows by Gemma's post-norm.
        let wv = fold("attn_v", "attn_norm", [1, kvd, d], [0, 0, 1])?;
        let w_up = fold("ffn_up", "ffn_norm", [1, c.ffn, d], [0, 0, 1])?;
        let (wo, w_down) = if post_norms {
            (
                fold("attn_output", "post_attention_norm", [1, d, hh], [0, 1, 0])?,
                fold("ffn_down", "post_ffw_norm", [1, d, c.ffn], [0, 1, 0])?,
            )
        } else {
            (
                be.weight(model, &name("attn_output"))?,
                be.weight(model, &name("ffn_down"))?,
            )
        };
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
            n,
            d,
            ffn: c.ffn,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            wv,
            wo,
            w_up,
            w_down,
            p_t: be.upload(
                &p_hat
                    .reshape((c.kv_heads, c.heads / c.kv_heads, n, n))?
                    .permute((0, 3, 1, 2))?
                    .contiguous()?,
            )?,
            p_hat: be.upload(&p_hat)?,
            g_tilde: be.upload(&g_tilde)?,
        })
    }

    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// `kv·hd`, `heads·hd`
    fn widths(&self) -> (usize, usize) {
        (self.kv_heads * self.head_dim, self.heads * self.head_dim)
    }

    /// Forward mode: `b` tangents `t` (`[b, n - from, d]`, at the block input,
    /// on positions `from..n`; the tangents are zero before `from`, so
    /// those positions are skipped) → the same at its output.
    pub fn forward(&self, be: &B, t: &B::Buf, b: usize, from: usize) -> Result<B::Buf> {
        let (n, d, ffn, hd) = (self.n, self.d, self.ffn, self.head_dim);
        let (kvw, hw) = self.widths();
        let m = n - from;
        let rows = b * m;
        let mut v = be.zeros(rows * kvw)?;
        let wv_t = MatView::dense(0, kvw, d).t();
        be.gemm(
            &mut v,
            MatView::dense(0, rows, kvw),
            t,
            MatView::dense(0, rows, d),
            &self.wv,
            wv_t,
            Batch::ONE,
            false,
        )?;
        // Each head mixes its kv head's values over key positions, every tangent at once.
        let mut mixed = be.zeros(rows * hw)?;
        for h in 0..self.heads {
            let kv = h / self.group();
            let dst = MatView {
                offset: h * hd,
                rows: m,
                cols: hd,
                rs: hw,
                cs: 1,
            };
            let vals = MatView {
                offset: kv * hd,
                rows: m,
                cols: hd,
                rs: kvw,
                cs: 1,
            };
            let batch = Batch {
                count: b,
                dst: m * hw,
                a: 0,
                b: m * kvw,
            };
            // Queries and keys from..n of this head's P̂.
            let p = MatView {
                offset: h * n * n + from * n + from,
                rows: m,
                cols: m,
                rs: n,
                cs: 1,
            };
            be.gemm(&mut mixed, dst, &self.p_hat, p, &v, vals, batch, false)?;
        }
        drop(v);
        // h = t + W̃o·mixed
        let mut h = be.zeros(rows * d)?;
        be.elementwise(
            Store::Set,
            &mut h,
            0,
            [1, rows, d],
            (t, Strided::dense(0, [1, rows, d])),
            None,
        )?;
        let wo_t = MatView::dense(0, d, hw).t();
        be.gemm(
            &mut h,
            MatView::dense(0, rows, d),
            &mixed,
            MatView::dense(0, rows, hw),
            &self.wo,
            wo_t,
            Batch::ONE,
            true,
        )?;
        drop(mixed);
        // out = h + W̃down diag(g̃) W̃up h
        let mut u = be.zeros(rows * ffn)?;
        let up_t = MatView::dense(0, ffn, d).t();
        be.gemm(
            &mut u,
            MatView::dense(0, rows, ffn),
            &h,
            MatView::dense(0, rows, d),
            &self.w_up,
            up_t,
            Batch::ONE,
            false,
        )?;
        let g = Strided {
            offset: from * ffn,
            strides: [0, ffn, 1],
        };
        be.elementwise(Store::Mul, &mut u, 0, [b, m, ffn], (&self.g_tilde, g), None)?;
        let down_t = MatView::dense(0, d, ffn).t();
        be.gemm(
            &mut h,
            MatView::dense(0, rows, d),
            &u,
            MatView::dense(0, rows, ffn),
            &self.w_down,
            down_t,
            Batch::ONE,
            true,
        )?;
        Ok(h)
    }

    /// Transpose of the MLP module (plus its residual when `residual`) on
    /// every chunk of cotangents (all on the same last `m` positions).
    /// `compose`: form each position's map `C_p = W̃down diag(g̃_p) W̃up`
    /// once (`2·d²·ffn`) and apply it to every chunk (`2·k·d²`), which pays
    /// when `k` is large; otherwise apply the factors (`4·k·d·ffn`).
    pub fn mlp_transpose(
        &self,
        be: &B,
        chunks: &mut [Cotangents<B>],
        residual: bool,
        compose: bool,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        let (n, d, ffn) = (self.n, self.d, self.ffn);
        let Some(m) = chunks.first().map(|c| c.m) else {
            return Ok(());
        };
        // The composed form writes whole blocks (its maps carry the residual
        // as `I + C_p`); the factor form adds onto the residual path.
        let mut outs = Vec::with_capacity(chunks.len());
        for c in chunks.iter() {
            let mut out = ws.take(be, m * c.k * d)?;
            if compose {
                // written whole below
            } else if residual {
                let dims = [1, m * c.k, d];
                be.elementwise(
                    Store::Set,
                    &mut out,
                    0,
                    dims,
                    (&c.buf, Strided::dense(0, dims)),
                    None,
                )?;
            } else {
                be.fill(&mut out, 0, m * c.k * d, 0.0)?;
            }
            outs.push(out);
        }
        let up = MatView::dense(0, ffn, d);
        let down = MatView::dense(0, d, ffn);
        if compose {
            // A few positions at a time, so that their products can run side by side.
            for p0 in (0..m).step_by(MAP_GROUP) {
                let q = MAP_GROUP.min(m - p0);
                let scaled = scratch(be, &mut ws.scaled, q * ffn * d)?;
                let g = Strided {
                    offset: (n - m + p0) * ffn,
                    strides: [ffn, 1, 0],
                };
                let w = Strided {
                    offset: 0,
                    strides: [0, d, 1],
                };
                let dims = [q, ffn, d];
                be.elementwise(
                    Store::Set,
                    scaled,
                    0,
                    dims,
                    (&self.w_up, w),
                    Some((&self.g_tilde, g)),
                )?;
                let maps = scratch(be, &mut ws.map, q * d * d)?;
                if residual {
                    let eye = match &ws.eye {
                        Some(e) => e,
                        None => {
                            ws.eye
                                .insert(be.upload(&Tensor::eye(d, be.dtype(), &Device::Cpu)?)?)
                        }
                    };
                    let e = Strided {
                        offset: 0,
                        strides: [0, d, 1],
                    };
                    be.elementwise(Store::Set, maps, 0, [q, d, d], (eye, e), None)?;
                }
                let batch = Batch {
                    count: q,
                    dst: d * d,
                    a: 0,
                    b: ffn * d,
                };
                let dd = MatView::dense(0, d, d);
                be.gemm(maps, dd, &self.w_down, down, scaled, up, batch, residual)?;
                let maps = &*maps;
                for (c, out) in chunks.iter().zip(outs.iter_mut()) {
                    let block = MatView::dense(p0 * c.k * d, c.k, d);
                    let batch = Batch {
                        count: q,
                        dst: c.k * d,
                        a: c.k * d,
                        b: d * d,
                    };
                    be.gemm(out, block, &c.buf, block, maps, dd, batch, false)?;
                }
            }
        } else {
            for (c, out) in chunks.iter().zip(outs.iter_mut()) {
                let rows = m * c.k;
                let mut u = be.zeros(rows * ffn)?;
                be.gemm(
                    &mut u,
                    MatView::dense(0, rows, ffn),
                    &c.buf,
                    MatView::dense(0, rows, d),
                    &self.w_down,
                    down,
                    Batch::ONE,
                    false,
                )?;
                let g = Strided {
                    offset: (n - m) * ffn,
                    strides: [ffn, 0, 1],
                };
                be.elementwise(
                    Store::Mul,
                    &mut u,
                    0,
                    [m, c.k, ffn],
                    (&self.g_tilde, g),
                    None,
                )?;
                be.gemm(
                    out,
                    MatView::dense(0, rows, d),
                    &u,
                    MatView::dense(0, rows, ffn),
                    &self.w_up,
                    up,
                    Batch::ONE,
                    true,
                )?;
            }
        }
        for (c, out) in chunks.iter_mut().zip(outs) {
            ws.give(std::mem::replace(&mut c.buf, out));
        }
        Ok(())
    }

    /// Transpose of the attention module (plus its residual when `residual`):
    /// cotangents on the last `m` (query) positions → on all `n`.
    pub fn attn_transpose(
        &self,
        be: &B,
        c: &mut Cotangents<B>,
        residual: bool,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        let (n, d, hd, g) = (self.n, self.d, self.head_dim, self.group());
        let (m, k) = (c.m, c.k);
        let hw = self.heads * hd;
        let mut out = ws.take(be, n * k * d)?;
        // Per head: G·W̃o[:, head], each head's block contiguous: [heads, m·k, hd].
        let gm = scratch(be, &mut ws.gm, self.heads * m * k * hd)?;
        let batch = Batch {
            count: self.heads,
            dst: m * k * hd,
            a: 0,
            b: hd,
        };
        let wo_head = MatView::dense(0, d, hw).cols(0, hd);
        be.gemm(
            gm,
            MatView::dense(0, m * k, hd),
            &c.buf,
            MatView::dense(0, m * k, d),
            &self.wo,
            wo_head,
            batch,
            false,
        )?;
        // Pᵀ over the query rows n-m.., summed over the heads sharing a kv
        // head: [kv, n, k·hd].
        let gv = scratch(be, &mut ws.gv, self.kv_heads * n * k * hd)?;
        for kv in 0..self.kv_heads {
            let h0 = kv * g;
            let dst = MatView::dense(kv * n * k * hd, n, k * hd);
            if m == n {
                // One product over (head, query) pairs: each output element
                // is written once instead of once per head.
                let pt = MatView::dense(kv * n * g * n, n, g * n);
                let heads = MatView::dense(h0 * n * k * hd, g * n, k * hd);
                be.gemm(gv, dst, &self.p_t, pt, gm, heads, Batch::ONE, false)?;
            } else {
                let pt = MatView {
                    offset: h0 * n * n + (n - m) * n,
                    rows: n,
                    cols: m,
                    rs: 1,
                    cs: n,
                };
                let batch = Batch {
                    count: g,
                    dst: 0,
                    a: n * n,
                    b: m * k * hd,
                };
                let heads = MatView::dense(h0 * m * k * hd, m, k * hd);
                be.gemm(gv, dst, &self.p_hat, pt, gm, heads, batch, false)?;
            }
        }
        // Back to the residual: Σ_kv Gv_kv W̃v_kv, on top of the residual path.
        let zeros = if residual { (n - m) * k * d } else { n * k * d };
        be.fill(&mut out, 0, zeros, 0.0)?;
        if residual {
            let dims = [1, m * k, d];
            be.elementwise(
                Store::Set,
                &mut out,
                (n - m) * k * d,
                dims,
                (&c.buf, Strided::dense(0, dims)),
                None,
            )?;
        }
        let batch = Batch {
            count: self.kv_heads,
            dst: 0,
            a: n * k * hd,
            b: hd * d,
        };
        be.gemm(
            &mut out,
            MatView::dense(0, n * k, d),
            gv,
            MatView::dense(0, n * k, hd),
            &self.wv,
            MatView::dense(0, hd, d),
            batch,
            true,
        )?;
        ws.give(std::mem::replace(&mut c.buf, out));
        c.m = n;
        Ok(())
    }
}
