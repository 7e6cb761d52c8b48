//! The frozen forward on the GPU (f32): the model's ordinary forward pass,
//! block by block, recording what the frozen-linear network needs (norm
//! scales, attention probabilities, gate activations, the residual stream)
//! into the same [`Trace`] the CPU's `lens_engine::trace::trace` makes.
//!
//! Kernels: RMSNorm with its scale recorded (`rms.wgsl`), RoPE
//! (`rope.wgsl`), scaled, masked (causal, sliding window) softmax
//! (`softmax.wgsl`), the gate activation (`gate.wgsl`), and the backend's
//! GEMM and elementwise ops for the projections, the attention's scores and
//! mixing, the gating product and the residual adds. Weights come from the
//! resident blocks ([`Gpu::resident_weight`]). Each block's records come
//! back in one readback; the final norm of the last position (one row) is
//! done on the host exactly as the CPU trace does it.

use crate::device::{Gpu, GpuBuf};
use crate::error::{GpuError, Result};
use candle_core::{DType, Device, Tensor};
use lens_engine::backend::{Backend, Batch, MatView, Store, Strided};
use lens_engine::forward::{
    check_final_norm, check_finite, check_ids, embed, norm_weight, rms_scale, scale_norm,
    LayerRecord, Precision, RopeTables,
};
use lens_engine::model::{Activation, Model};
use lens_engine::trace::Trace;

fn u32_of(v: usize) -> Result<u32> {
    crate::error::u32_index(v, "an index of the frozen forward")
}

impl Gpu {
    /// `dst = x · r · w` over `rows` rows of `width`, `scale[row] = r`.
    fn rms_norm(
        &self,
        dst: &GpuBuf,
        scale: &GpuBuf,
        x: &GpuBuf,
        w: &GpuBuf,
        (rows, width): (usize, usize),
        eps: f64,
    ) -> Result<()> {
        let max = self.max_groups as usize;
        let gx = rows.clamp(1, max);
        let params = [
            u32_of(rows)?,
            u32_of(width)?,
            (eps as f32).to_bits(),
            u32_of(gx)?,
        ];
        self.dispatch(
            &self.rms,
            &[dst, scale, x, w],
            &params,
            (gx as u32, u32_of(rows.div_ceil(gx))?, 1),
        );
        Ok(())
    }

    /// `dst = x · wᵀ` for `x` `[rows, k]` and a weight `w` `[out, k]`.
    fn project(&self, x: &GpuBuf, w: &GpuBuf, rows: usize, k: usize, out: usize) -> Result<GpuBuf> {
        let mut dst = self.zeros(rows * out)?;
        Backend::gemm(
            self,
            &mut dst,
            MatView::dense(0, rows, out),
            x,
            MatView::dense(0, rows, k),
            w,
            MatView::dense(0, out, k).t(),
            Batch::ONE,
            false,
        )?;
        Ok(dst)
    }

    /// `a + b`, both `[len]`.
    fn add(&self, a: &GpuBuf, b: &GpuBuf, len: usize) -> Result<GpuBuf> {
        let mut dst = self.zeros(len)?;
        let dense = Strided::dense(0, [1, 1, len]);
        Backend::elementwise(self, Store::Set, &mut dst, 0, [1, 1, len], (a, dense), None)?;
        Backend::elementwise(self, Store::Add, &mut dst, 0, [1, 1, len], (b, dense), None)?;
        Ok(dst)
    }
}

/// A block's records, on the GPU until read back.
struct LayerBufs {
    r_attn: GpuBuf,
    p: GpuBuf,
    r_post_attn: Option<GpuBuf>,
    attn_out: GpuBuf,
    h_mid: GpuBuf,
    r_ffn: GpuBuf,
    g: GpuBuf,
    r_post_ffn: Option<GpuBuf>,
    mlp_out: GpuBuf,
    h_out: GpuBuf,
}

/// One decoder block on the residual stream `h` (`[n, d]`), recorded.
fn layer(gpu: &Gpu, model: &Model, l: usize, h: &GpuBuf, ropes: &RopeTables) -> Result<LayerBufs> {
    let c = &model.config;
    let n = h.len / c.hidden;
    let d = c.hidden;
    let (hd, nh, nkv, ffn) = (c.head_dim, c.heads, c.kv_heads, c.ffn);
    let eps = c.norm_eps;
    let post_norms = c.recipe.post_norms;
    let name = |s: &str| format!("blk.{l}.{s}.weight");
    let norm = |s: &str| -> Result<GpuBuf> {
        Ok(Backend::upload(
            gpu,
            &norm_weight(model, &name(s), DType::F32)?,
        )?)
    };
    let weight = |s: &str| gpu.resident_weight(model, &name(s));

    // Attention.
    let a = gpu.zeros(n * d)?;
    let r_attn = gpu.zeros(n)?;
    gpu.rms_norm(&a, &r_attn, h, &norm("attn_norm")?, (n, d), eps)?;
    let mut q = gpu.project(&a, &weight("attn_q")?, n, d, nh * hd)?;
    let mut k = gpu.project(&a, &weight("attn_k")?, n, d, nkv * hd)?;
    let v = gpu.project(&a, &weight("attn_v")?, n, d, nkv * hd)?;
    if c.recipe.qk_norm {
        // Per-head norms of q and k (their scales are not frozen: the q/k
        // branch only makes P).
        for (x, heads, w) in [(&mut q, nh, "attn_q_norm"), (&mut k, nkv, "attn_k_norm")] {
            let normed = gpu.zeros(n * heads * hd)?;
            let scratch = gpu.zeros(n * heads)?;
            gpu.rms_norm(&normed, &scratch, x, &norm(w)?, (n * heads, hd), eps)?;
            *x = normed;
        }
    }
    let (cos, sin) = ropes.for_layer(model, l);
    let (cos, sin) = (Backend::upload(gpu, cos)?, Backend::upload(gpu, sin)?);
    for (x, heads) in [(&q, nh), (&k, nkv)] {
        let total = n * heads * (hd / 2);
        let params = [u32_of(n)?, u32_of(heads)?, u32_of(hd)?, u32_of(total)?];
        gpu.dispatch(&gpu.rope, &[x, &cos, &sin], &params, gpu.grid(total));
    }
    // Scores per kv head for the `group` query heads that share it.
    let group = nh / nkv;
    let mut p = gpu.zeros(nh * n * n)?;
    let head = |buf_heads: usize, h: usize| MatView {
        offset: h * hd,
        rows: n,
        cols: hd,
        rs: buf_heads * hd,
        cs: 1,
    };
    for g in 0..nkv {
        Backend::gemm(
            gpu,
            &mut p,
            MatView::dense(g * group * n * n, n, n),
            &q,
            head(nh, g * group),
            &k,
            head(nkv, g).t(),
            Batch {
                count: group,
                dst: n * n,
                a: hd,
                b: 0,
            },
            false,
        )?;
    }
    let window = match c.sliding[l] {
        Some(w) => u32::try_from(w.max(1)).unwrap_or(u32::MAX),
        None => 0,
    };
    let params = [
        u32_of(nh * n)?,
        u32_of(n)?,
        window,
        (c.attn_scale as f32).to_bits(),
    ];
    gpu.dispatch(&gpu.softmax, &[&p], &params, gpu.grid(nh * n));
    let mut mixed = gpu.zeros(n * nh * hd)?;
    for g in 0..nkv {
        Backend::gemm(
            gpu,
            &mut mixed,
            head(nh, g * group),
            &p,
            MatView::dense(g * group * n * n, n, n),
            &v,
            head(nkv, g),
            Batch {
                count: group,
                dst: hd,
                a: n * n,
                b: 0,
            },
            false,
        )?;
    }
    let mut attn_out = gpu.project(&mixed, &weight("attn_output")?, n, nh * hd, d)?;
    let mut r_post_attn = None;
    if post_norms {
        let normed = gpu.zeros(n * d)?;
        let r = gpu.zeros(n)?;
        gpu.rms_norm(
            &normed,
            &r,
            &attn_out,
            &norm("post_attention_norm")?,
            (n, d),
            eps,
        )?;
        attn_out = normed;
        r_post_attn = Some(r);
    }
    let h_mid = gpu.add(h, &attn_out, n * d)?;

    // Gated MLP.
    let m = gpu.zeros(n * d)?;
    let r_ffn = gpu.zeros(n)?;
    gpu.rms_norm(&m, &r_ffn, &h_mid, &norm("ffn_norm")?, (n, d), eps)?;
    let gate = gpu.project(&m, &weight("ffn_gate")?, n, d, ffn)?;
    let up = gpu.project(&m, &weight("ffn_up")?, n, d, ffn)?;
    let g = gpu.zeros(n * ffn)?;
    let params = [
        u32_of(n * ffn)?,
        (c.recipe.activation == Activation::GeluTanh) as u32,
        0,
        0,
    ];
    gpu.dispatch(&gpu.gate, &[&g, &gate], &params, gpu.grid(n * ffn));
    let mut gu = gpu.zeros(n * ffn)?;
    let dense = Strided::dense(0, [1, 1, n * ffn]);
    Backend::elementwise(
        gpu,
        Store::Set,
        &mut gu,
        0,
        [1, 1, n * ffn],
        (&g, dense),
        Some((&up, dense)),
    )?;
    let mut mlp_out = gpu.project(&gu, &weight("ffn_down")?, n, ffn, d)?;
    let mut r_post_ffn = None;
    if post_norms {
        let normed = gpu.zeros(n * d)?;
        let r = gpu.zeros(n)?;
        gpu.rms_norm(&normed, &r, &mlp_out, &norm("post_ffw_norm")?, (n, d), eps)?;
        mlp_out = normed;
        r_post_ffn = Some(r);
    }
    let h_out = gpu.add(&h_mid, &mlp_out, n * d)?;
    Ok(LayerBufs {
        r_attn,
        p,
        r_post_attn,
        attn_out,
        h_mid,
        r_ffn,
        g,
        r_post_ffn,
        mlp_out,
        h_out,
    })
}

/// A block's records on the host, as the CPU trace has them.
async fn read_back(
    gpu: &Gpu,
    b: &LayerBufs,
    h_in: Tensor,
    (n, d, heads, ffn): (usize, usize, usize, usize),
) -> Result<LayerRecord> {
    let mut parts: Vec<(&GpuBuf, usize, usize)> = [
        &b.r_attn,
        &b.p,
        &b.attn_out,
        &b.h_mid,
        &b.r_ffn,
        &b.g,
        &b.mlp_out,
        &b.h_out,
    ]
    .into_iter()
    .map(|x| (x, 0, x.len))
    .collect();
    for x in [&b.r_post_attn, &b.r_post_ffn].into_iter().flatten() {
        parts.push((x, 0, x.len));
    }
    let mut vals = gpu.read_many(&parts).await?.into_iter();
    let mut next = |shape: &[usize]| -> Result<Tensor> {
        let v = vals
            .next()
            .ok_or_else(|| GpuError::Readback("a record is missing".into()))?;
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    };
    let r_attn = next(&[n, 1])?;
    let p = next(&[heads, n, n])?;
    let attn_out = next(&[n, d])?;
    let h_mid = next(&[n, d])?;
    let r_ffn = next(&[n, 1])?;
    let g = next(&[n, ffn])?;
    let mlp_out = next(&[n, d])?;
    let h_out = next(&[n, d])?;
    let r_post_attn = b.r_post_attn.as_ref().map(|_| next(&[n, 1])).transpose()?;
    let r_post_ffn = b.r_post_ffn.as_ref().map(|_| next(&[n, 1])).transpose()?;
    Ok(LayerRecord {
        h_in,
        r_attn,
        p,
        r_post_attn,
        attn_out,
        h_mid,
        r_ffn,
        g,
        r_post_ffn,
        mlp_out,
        h_out,
    })
}

/// The frozen forward of `ids` on the GPU, in f32: the same [`Trace`] as
/// `lens_engine::trace::trace(model, ids, Precision::F32)` up to f32
/// rounding. Reports progress per block.
pub async fn trace(gpu: &Gpu, model: &Model, ids: &[u32]) -> Result<Trace> {
    check_ids(model, ids)?;
    let c = &model.config;
    let n = ids.len();
    let dims = (n, c.hidden, c.heads, c.ffn);
    let x = embed(model, ids, DType::F32)?;
    let ropes = RopeTables::new(model, n, DType::F32)?;
    let mut h = Backend::upload(gpu, &x)?;
    let mut h_host = x.clone();
    let mut layers = Vec::with_capacity(c.layers);
    for l in 0..c.layers {
        lens_engine::progress::report(l, c.layers);
        let bufs = layer(gpu, model, l, &h, &ropes)?;
        let rec = read_back(gpu, &bufs, h_host, dims).await?;
        check_finite(l, &rec)?;
        h_host = rec.h_out.clone();
        h = bufs.h_out;
        layers.push(rec);
    }
    lens_engine::progress::report(c.layers, c.layers);
    let last = h_host.narrow(0, n - 1, 1)?;
    let r_final = rms_scale(&last, c.norm_eps)?;
    check_final_norm(&r_final, c.layers)?;
    let w_final = norm_weight(model, "output_norm.weight", DType::F32)?;
    let y = scale_norm(&last, &r_final, &w_final)?;
    Ok(Trace {
        precision: Precision::F32,
        ids: ids.to_vec(),
        x,
        layers,
        r_final,
        w_final,
        y,
    })
}
