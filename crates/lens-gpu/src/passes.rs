//! The engine's passes on the GPU with asynchronous readback: the same
//! code in a browser (awaited) and natively ([`crate::block_on`]).

use crate::device::{Gpu, GpuBuf};
use crate::error::Result;
use candle_core::{DType, Device, Tensor};
use lens_engine::jacobian::{
    assemble, contribution_batches, contribution_tangents, forward_layer, jvp_finish, vjp_start,
    PassOptions, PassStats, Tap, TransposePass,
};
use lens_engine::model::Model;
use lens_engine::trace::Trace;

/// `shape`'s worth of values from `offset`, as a host tensor (f32).
pub async fn download(gpu: &Gpu, buf: &GpuBuf, offset: usize, shape: &[usize]) -> Result<Tensor> {
    let len = shape.iter().product();
    let data = gpu.read(buf, offset, len).await?;
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// Pass options that keep every buffer inside one binding.
pub fn options(gpu: &Gpu, opts: PassOptions) -> PassOptions {
    PassOptions {
        memory_budget: opts
            .memory_budget
            .min(usize::try_from(gpu.adapter().max_binding).unwrap_or(usize::MAX)),
    }
}

/// `u` (`[k, d]`, cotangents on the tap's output) → `[n, k, d]` (f32).
pub async fn vjp_tap(
    gpu: &Gpu,
    model: &Model,
    trace: &Trace,
    tap: Tap,
    u: &Tensor,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    let start = vjp_start(model, trace, tap, u, DType::F32)?;
    let mut pass = TransposePass::new(gpu, model, trace, tap, &start, options(gpu, opts))?;
    while pass.step()? {
        gpu.settle().await?;
    }
    let blocks = pass.finish();
    let mut out = Vec::with_capacity(blocks.chunks.len());
    for c in &blocks.chunks {
        out.push(download(gpu, &c.buf, 0, &[c.m, c.k, blocks.d]).await?);
    }
    Ok((assemble(out, blocks.n, blocks.d, DType::F32)?, blocks.stats))
}

/// `u J_i` for every position (`[n, k, d]`, f32).
pub async fn vjp(
    gpu: &Gpu,
    model: &Model,
    trace: &Trace,
    u: &Tensor,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    vjp_tap(gpu, model, trace, Tap::output(model.config.layers), u, opts).await
}

/// The full detached Jacobian `[n, d, d]` (f32).
pub async fn detached_jacobian(
    gpu: &Gpu,
    model: &Model,
    trace: &Trace,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    let eye = Tensor::eye(model.config.hidden, DType::F32, &Device::Cpu)?;
    vjp(gpu, model, trace, &eye, opts).await
}

/// The contributions `c_i = J_i x_i` (`[n, d]`, in the trace's dtype) by
/// forward mode on the GPU.
pub async fn contributions(
    gpu: &Gpu,
    model: &Model,
    trace: &Trace,
    opts: PassOptions,
) -> Result<Tensor> {
    let n = trace.n();
    let d = model.config.hidden;
    let mut out = Vec::new();
    let batches = contribution_batches(model, trace, DType::F32, options(gpu, opts));
    let layers = trace.layers.len();
    let steps = batches.len() * layers;
    for (i, &(s, b)) in batches.iter().enumerate() {
        let v = contribution_tangents(trace, s, b)?;
        let t = forward(gpu, model, trace, &v, s, |l| {
            lens_engine::progress::report(i * layers + l, steps)
        })
        .await?;
        let raw = download(gpu, &t, 0, &[b, n - s, d]).await?;
        out.push(jvp_finish(trace, &raw)?);
    }
    lens_engine::progress::report(steps, steps);
    Ok(Tensor::cat(&out, 0)?)
}

/// Forward mode block by block, settling the GPU after each.
async fn forward(
    gpu: &Gpu,
    model: &Model,
    trace: &Trace,
    v: &Tensor,
    from: usize,
    report: impl Fn(usize),
) -> Result<GpuBuf> {
    let b = v.dim(0)?;
    let mut t = lens_engine::backend::Backend::upload(gpu, v)?;
    for l in 0..trace.layers.len() {
        report(l);
        t = forward_layer(gpu, model, trace, l, &t, b, from)?;
        gpu.settle().await?;
    }
    Ok(t)
}

/// The model's output `y = Σ_i J_i x_i` (`[1, d]`) by one forward-mode pass
/// of the frozen network on the GPU.
pub async fn output(gpu: &Gpu, model: &Model, trace: &Trace) -> Result<Tensor> {
    let (n, d) = trace.x.dims2()?;
    let v = trace.x.reshape((1, n, d))?;
    let t = forward(gpu, model, trace, &v, 0, |_| {}).await?;
    let raw = download(gpu, &t, 0, &[1, n, d]).await?;
    Ok(jvp_finish(trace, &raw)?)
}
