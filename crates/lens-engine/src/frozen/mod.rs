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

use crate::backend::{scratch, Backend, Batch, GemmShape, MatView, Store, Strided};
use crate::error::Result;
use crate::forward::{norm_weight, LayerRecord};
use crate::model::Model;

mod transpose;

pub struct FrozenLayer<B: Backend> {
    pub n: usize,
    pub d: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    // In the reverse of the order `new` makes them: they drop in this
    // order, and a GPU's pool gives the last dropped first, so each comes
    // back to the next block in its own role (and its bind groups with it).
    /// `[d, ffn]`
    w_down: B::Buf,
    /// `[d, heads·hd]`
    wo: B::Buf,
    /// `[ffn, d]`
    w_up: B::Buf,
    /// `[kv·hd, d]`
    wv: B::Buf,
    /// `[n, ffn]`
    g_tilde: B::Buf,
    /// `[heads, n, n]`, rows are queries.
    p_hat: B::Buf,
    /// `P̂ᵀ` grouped by kv head: `[kv, n (key), group·n (head, query)]`.
    p_t: B::Buf,
}

/// Bytes of MLP maps (and of their scaled factor, on a backend that cannot
/// scale inside a product) formed at a time: the positions of a group run
/// side by side, in one dispatch on a GPU.
const MAP_BYTES: usize = 64 << 20;

/// The positions whose MLP maps are formed together (a group).
fn map_group(d: usize, ffn: usize, bytes: usize, m: usize) -> usize {
    (MAP_BYTES / (d * d.max(ffn) * bytes).max(1)).clamp(4, m.max(4))
}

/// The products of [`FrozenLayer::mlp_transpose`] and
/// [`FrozenLayer::attn_transpose`] on `k` cotangent rows covering all `n`
/// positions, in f32 (what a GPU runs).
pub fn transpose_products(
    c: &crate::model::ModelConfig,
    n: usize,
    k: usize,
    compose: bool,
) -> Vec<GemmShape> {
    let (d, ffn, hd) = (c.hidden, c.ffn, c.head_dim);
    let g = c.heads / c.kv_heads.max(1);
    let shape = |rows, cols, inner, count| GemmShape {
        rows,
        cols,
        inner,
        count,
    };
    let mut out = if compose {
        let q = map_group(d, ffn, 4, n).min(n);
        vec![shape(d, d, ffn, q), shape(k, d, d, q)]
    } else {
        vec![shape(n * k, ffn, d, 1), shape(k, d, ffn, n)]
    };
    out.extend([
        shape(n * k, hd, d, c.heads),
        shape(n, k * hd, g * n, c.kv_heads),
        shape(n * k, d, hd, c.kv_heads),
    ]);
    out
}

/// Scratch the transpose pass reuses from layer to layer.
pub struct Workspace<B: Backend> {
    /// Per-head cotangents after `W̃o`, `[heads, m, k, hd]`.
    gm: Option<B::Buf>,
    /// Per-kv-head cotangents after `Pᵀ`, `[kv, n, k, hd]`.
    gv: Option<B::Buf>,
    /// A product's operand scaled by a frozen diagonal, on a backend that
    /// does not scale inside the product ([`Backend::gemm_fused`]).
    scaled: Option<B::Buf>,
    /// The factor form's `G·W̃down`, `[m, k, ffn]`.
    through: Option<B::Buf>,
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

    /// Makes, at the size the blocks over every position need, what the
    /// transpose pass would otherwise grow block by block: per chunk of
    /// `k` rows two cotangent blocks, and the per-head, per-kv-head, MLP
    /// map (or factor) scratch. A GPU then makes no buffer after the
    /// pass's first block.
    pub fn reserve(
        &mut self,
        be: &B,
        c: &crate::model::ModelConfig,
        n: usize,
        chunks: &[usize],
        compose: bool,
    ) -> Result<()> {
        let (d, hd, ffn) = (c.hidden, c.head_dim, c.ffn);
        let k = chunks.iter().copied().max().unwrap_or(0);
        for &kc in chunks {
            for _ in 0..2 {
                self.spare.push(be.zeros(n * kc * d)?);
            }
        }
        scratch(be, &mut self.gm, c.heads * n * k * hd)?;
        scratch(be, &mut self.gv, c.kv_heads * n * k * hd)?;
        if compose {
            let q = map_group(d, ffn, be.dtype().size_in_bytes(), n).min(n);
            scratch(be, &mut self.map, q * d * d)?;
        } else {
            scratch(be, &mut self.through, n * k * ffn)?;
        }
        Ok(())
    }
}

impl<B: Backend> Default for Workspace<B> {
    fn default() -> Self {
        Self {
            gm: None,
            gv: None,
            scaled: None,
            through: None,
            map: None,
            eye: None,
            spare: Vec::new(),
        }
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
        // Every upload before the first kernel: a GPU then sends the
        // block's work in one submit.
        let p_t = be.upload(
            &p_hat
                .reshape((c.kv_heads, c.heads / c.kv_heads, n, n))?
                .permute((0, 3, 1, 2))?
                .contiguous()?,
        )?;
        let p_hat = be.upload(&p_hat)?;
        let g_tilde = be.upload(&g_tilde)?;
        let norm = |norm: &str| be.upload(&norm_weight(model, &name(norm), dtype)?);
        let attn_norm = norm("attn_norm")?;
        let ffn_norm = norm("ffn_norm")?;
        let post = if post_norms {
            Some((norm("post_attention_norm")?, norm("post_ffw_norm")?))
        } else {
            None
        };
        // The norm weights fold into the matrices on the backend, so that a
        // GPU decodes its resident weights without a round trip.
        let fold = |w: &str, g: &B::Buf, dims: [usize; 3], strides: [usize; 3]| {
            let mut m = be.weight(model, &name(w))?;
            be.elementwise(
                Store::Mul,
                &mut m,
                0,
                dims,
                (g, Strided { offset: 0, strides }),
                None,
            )?;
            Ok::<_, crate::EngineError>(m)
        };
        // Columns scaled by the pre-norm weight; rows by Gemma's post-norm.
        let wv = fold("attn_v", &attn_norm, [1, kvd, d], [0, 0, 1])?;
        let w_up = fold("ffn_up", &ffn_norm, [1, c.ffn, d], [0, 0, 1])?;
        let (wo, w_down) = match &post {
            Some((pa, pf)) => (
                fold("attn_output", pa, [1, d, hh], [0, 1, 0])?,
                fold("ffn_down", pf, [1, d, c.ffn], [0, 1, 0])?,
            ),
            None => (
                be.weight(model, &name("attn_output"))?,
                be.weight(model, &name("ffn_down"))?,
            ),
        };
        Ok(Self {
            n,
            d,
            ffn: c.ffn,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            w_down,
            wo,
            w_up,
            wv,
            g_tilde,
            p_hat,
            p_t,
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
}
