//! The detached Jacobian: a batched transpose pass (vector-Jacobian products
//! of the frozen-linear network) and forward-mode products through it.
//!
//! Row `r` of block `i` of `vjp(u)` is `u_r J_i`; the full Jacobian is
//! `vjp(I)`. Cotangents start at the last position and spread to every
//! position at the first attention they meet.

use crate::backend::{Backend, CpuBackend};
use crate::error::{EngineError, Result};
use crate::forward::rms_scale;
use crate::frozen::{Cotangents, FrozenLayer, Workspace};
use crate::model::Model;
use crate::trace::Trace;
use candle_core::{DType, Device, Tensor};
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// Runs `$body` with `$be` the CPU backend of precision `$dtype`.
macro_rules! on_cpu {
    ($dtype:expr, |$be:ident| $body:expr) => {
        match $dtype {
            DType::F64 => {
                let $be = CpuBackend::<f64>::new();
                $body
            }
            DType::F32 => {
                let $be = CpuBackend::<f32>::new();
                $body
            }
            other => Err(EngineError::Backend(format!(
                "no CPU backend for {other:?}"
            ))),
        }
    };
}

/// Bounds on the transpose pass's working memory.
#[derive(Debug, Clone, Copy)]
pub struct PassOptions {
    /// Bytes for temporaries (the output itself, `n·k·d` values, comes on top).
    pub memory_budget: usize,
}

impl Default for PassOptions {
    /// 256 MiB: fits a browser tab beside the model.
    fn default() -> Self {
        Self {
            memory_budget: 256 << 20,
        }
    }
}

/// Counts of the work a pass really did (for `bench`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PassStats {
    /// Floating-point operations of the matrix products, counted from shapes.
    pub flops: f64,
}

pub use lens_report::TapKind;

/// Where a Jacobian starts and ends. The end vector (at the last position) is
/// passed through the final norm frozen at its own value, so that it decodes
/// like the output; `y` itself is `Tap::output(L)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tap {
    /// 0-based block index.
    pub layer: usize,
    pub kind: TapKind,
    /// From the input embeddings (cumulative) or from the block's input (layerwise).
    pub cumulative: bool,
}

impl Tap {
    /// The model's output `y` (after the last block), from the embeddings.
    pub fn output(layers: usize) -> Self {
        Self {
            layer: layers - 1,
            kind: TapKind::Layer,
            cumulative: true,
        }
    }

    /// The vector the tap ends at (last position, before the final norm), `[1, d]`.
    pub fn raw_vector(&self, trace: &Trace) -> Result<Tensor> {
        let rec = &trace.layers[self.layer];
        let v = match self.kind {
            TapKind::Layer => &rec.h_out,
            TapKind::Attn => &rec.attn_out,
            TapKind::Mlp => &rec.mlp_out,
        };
        Ok(v.narrow(0, v.dim(0)? - 1, 1)?)
    }

    /// The input the tap's Jacobian multiplies: embeddings or the block input.
    pub fn input<'a>(&self, trace: &'a Trace) -> &'a Tensor {
        if self.cumulative {
            &trace.x
        } else {
            &trace.layers[self.layer].h_in
        }
    }
}

/// The tap's end vector through the final norm frozen at its own value, with
/// the diagonal `r · w` that the transpose pass starts from.
pub fn tap_output(model: &Model, trace: &Trace, tap: Tap) -> Result<(Tensor, Tensor)> {
    let raw = tap.raw_vector(trace)?;
    let r = rms_scale(&raw, model.config.norm_eps)?;
    let scale = r.broadcast_mul(&trace.w_final)?.reshape((1, ()))?;
    Ok((raw.broadcast_mul(&scale)?, scale))
}

/// Runs a pass on a CPU backend: it never waits, so the pass's future is
/// ready when first polled. (A GPU's passes are awaited instead.)
pub(crate) fn now<T>(pass: impl Future<Output = Result<T>>) -> Result<T> {
    let mut pass = std::pin::pin!(pass);
    match pass.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => Err(EngineError::Backend(
            "a CPU pass waited on its backend".into(),
        )),
    }
}

/// `u` (`[k, d]`, cotangents on `y`) → `[n, k, d]`: `u J_i` for every
/// position, on the CPU in the trace's precision.
pub fn vjp(
    model: &Model,
    trace: &Trace,
    u: &Tensor,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    vjp_tap(model, trace, Tap::output(model.config.layers), u, opts)
}

/// Like [`vjp`] for the Jacobian of any tap: `[n, k, d]` at the tap's input.
pub fn vjp_tap(
    model: &Model,
    trace: &Trace,
    tap: Tap,
    u: &Tensor,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    on_cpu!(trace.dtype(), |be| now(vjp_tap_on(
        &be, model, trace, tap, u, opts
    )))
}

/// The transpose pass on any backend: `u` through the final norm frozen at
/// its value, then down the blocks.
pub async fn vjp_tap_on<B: Backend>(
    be: &B,
    model: &Model,
    trace: &Trace,
    tap: Tap,
    u: &Tensor,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    let start = vjp_start(model, trace, tap, u, be.dtype())?;
    transpose_pass(be, model, trace, tap, &start, opts).await
}

/// The full detached Jacobian `[n, d, d]` on any backend.
pub async fn detached_jacobian_on<B: Backend>(
    be: &B,
    model: &Model,
    trace: &Trace,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    let eye = Tensor::eye(model.config.hidden, be.dtype(), &Device::Cpu)?;
    let tap = Tap::output(model.config.layers);
    vjp_tap_on(be, model, trace, tap, &eye, opts).await
}

/// The transpose pass's starting cotangents for `u` on the tap's output:
/// `u` through the final norm frozen at its value, in `dtype`.
fn vjp_start(model: &Model, trace: &Trace, tap: Tap, u: &Tensor, dtype: DType) -> Result<Tensor> {
    let (_, scale) = tap_output(model, trace, tap)?;
    Ok(u.to_dtype(dtype)?.broadcast_mul(&scale.to_dtype(dtype)?)?)
}

/// The full Jacobian of the tap's raw vector (the residual stream or module
/// output at the last position, without the final norm), `[n, d, d]`.
pub fn raw_tap_jacobian(
    model: &Model,
    trace: &Trace,
    tap: Tap,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    let eye = Tensor::eye(model.config.hidden, trace.dtype(), &Device::Cpu)?;
    on_cpu!(trace.dtype(), |be| now(transpose_pass(
        &be, model, trace, tap, &eye, opts
    )))
}

/// Joins the chunks of a pass (`[n, k_c, d]` each) along the rows.
fn assemble(blocks: Vec<Tensor>, n: usize, d: usize, dtype: DType) -> Result<Tensor> {
    Ok(match blocks.len() {
        0 => Tensor::zeros((n, 0, d), dtype, &Device::Cpu)?,
        1 => blocks.into_iter().next().expect("one block"),
        _ => Tensor::cat(&blocks, 1)?,
    })
}

/// The working memory the backend can give one buffer.
fn fitted(be: &impl Backend, opts: PassOptions) -> PassOptions {
    PassOptions {
        memory_budget: opts.memory_budget.min(be.max_buffer_bytes()),
    }
}

/// The transpose pass from cotangents `start` (`[k, d]`) on the tap's raw
/// vector down to the tap's input, waiting on the backend after each block
/// (so that progress follows a GPU, and a cancelled run leaves little
/// queued), then read back: `[n, k, d]`. The one driver of every backend.
async fn transpose_pass<B: Backend>(
    be: &B,
    model: &Model,
    trace: &Trace,
    tap: Tap,
    start: &Tensor,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    let mut pass = TransposePass::new(be, model, trace, tap, start, fitted(be, opts))?;
    while pass.step()? {
        be.settle().await?;
    }
    let (n, d) = (trace.n(), model.config.hidden);
    let mut out = Vec::with_capacity(pass.chunks.len());
    for c in &pass.chunks {
        out.push(be.read(&c.buf, 0, &[c.m, c.k, d]).await?);
    }
    Ok((assemble(out, n, d, be.dtype())?, pass.stats))
}

/// Whether the MLP's transpose composes each position's map for `k`
/// cotangent rows, and the flops per position of either form: composing
/// W̃down diag(g̃) W̃up (2·d²·ffn per position, once for all rows) and
/// applying it (2·k·d²) beats applying the factors (4·k·d·ffn) once k is
/// large.
fn mlp_form(c: &crate::model::ModelConfig, k: usize) -> (bool, f64, f64) {
    let (df, kf, ffn) = (c.hidden as f64, k as f64, c.ffn as f64);
    let compose_cost = 2.0 * df * df * ffn + 2.0 * kf * df * df;
    let factor_cost = 4.0 * kf * df * ffn;
    (compose_cost < factor_cost, compose_cost, factor_cost)
}

/// The products one block of the full J's transpose pass runs on an
/// `n`-token prompt, once the cotangents cover every position (what a GPU
/// tunes its product kernels on).
pub fn jacobian_products(model: &Model, n: usize) -> Vec<crate::backend::GemmShape> {
    let c = &model.config;
    let (compose, _, _) = mlp_form(c, c.hidden);
    crate::frozen::transpose_products(c, n, c.hidden, compose)
}

/// The transpose pass one block at a time, so that the driver can wait on
/// the backend between blocks.
struct TransposePass<'a, B: Backend> {
    be: &'a B,
    model: &'a Model,
    trace: &'a Trace,
    tap: Tap,
    chunks: Vec<Cotangents<B>>,
    ws: Workspace<B>,
    stats: PassStats,
    compose: bool,
    compose_cost: f64,
    factor_cost: f64,
    k: usize,
    /// The next block down, `None` when done.
    next: Option<usize>,
}

impl<'a, B: Backend> TransposePass<'a, B> {
    fn new(
        be: &'a B,
        model: &'a Model,
        trace: &'a Trace,
        tap: Tap,
        start: &Tensor,
        opts: PassOptions,
    ) -> Result<Self> {
        let c = &model.config;
        let (k, d) = start.dims2()?;
        let n = trace.n();
        let bytes = be.dtype().size_in_bytes();
        let (compose, compose_cost, factor_cost) = mlp_form(c, k);
        // Working values per cotangent row, all positions: the cotangents, the
        // attention's output, the MLP's output, the per-head and per-kv-head
        // blocks, and the factor form's ffn-wide product.
        let per_row = n
            * (3 * d
                + c.heads * c.head_dim
                + c.kv_heads * c.head_dim
                + if compose { 0 } else { c.ffn })
            * bytes;
        let chunk = (opts.memory_budget / per_row.max(1)).clamp(1, k.max(1));
        let start = start.to_dtype(be.dtype())?;
        let chunks = (0..k)
            .step_by(chunk)
            .map(|s| {
                let kc = chunk.min(k - s);
                Ok(Cotangents {
                    buf: be.upload(&start.narrow(0, s, kc)?)?,
                    m: 1,
                    k: kc,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ws = Workspace::default();
        let sizes: Vec<usize> = chunks.iter().map(|c| c.k).collect();
        ws.reserve(be, c, n, &sizes, compose)?;
        Ok(Self {
            be,
            model,
            trace,
            tap,
            chunks,
            ws,
            stats: PassStats::default(),
            compose,
            compose_cost,
            factor_cost,
            k,
            next: Some(tap.layer),
        })
    }

    fn lowest(&self) -> usize {
        if self.tap.cumulative {
            0
        } else {
            self.tap.layer
        }
    }

    /// Blocks done and in all.
    fn progress(&self) -> (usize, usize) {
        let steps = self.tap.layer + 1 - self.lowest();
        let done = self.next.map_or(steps, |l| self.tap.layer - l);
        (done, steps)
    }

    /// Runs the next block down; `false` once every block has run.
    fn step(&mut self) -> Result<bool> {
        let Some(l) = self.next else {
            return Ok(false);
        };
        let (done, steps) = self.progress();
        crate::progress::report(done, steps);
        let (be, tap, c) = (self.be, self.tap, &self.model.config);
        let n = self.trace.n();
        let (nh, hd) = (c.heads as f64, c.head_dim as f64);
        let (kvd, df, kf) = (
            (c.kv_heads * c.head_dim) as f64,
            c.hidden as f64,
            self.k as f64,
        );
        let fl = FrozenLayer::new(be, self.model, l, &self.trace.layers[l])?;
        let top = l == tap.layer;
        // The tap's own block: an attention tap skips the MLP; an MLP tap or
        // an attention tap enters its module without the residual path.
        let with_mlp = !(top && tap.kind == TapKind::Attn);
        let mlp_residual = !(top && tap.kind != TapKind::Layer);
        let attn_residual = !(top && tap.kind == TapKind::Attn);
        let m = self.chunks.first().map_or(n, |c| c.m);
        let mf = m as f64;
        if with_mlp {
            self.stats.flops += mf
                * if self.compose {
                    self.compose_cost
                } else {
                    self.factor_cost
                };
            fl.mlp_transpose(
                be,
                &mut self.chunks,
                mlp_residual,
                self.compose,
                &mut self.ws,
            )?;
        }
        // Attention: Wo on m positions, Pᵀ mixing, Wv on all n.
        self.stats.flops +=
            2.0 * kf * (mf * df * nh * hd + nh * mf * n as f64 * hd + n as f64 * kvd * df);
        for g in self.chunks.iter_mut() {
            fl.attn_transpose(be, g, attn_residual, &mut self.ws)?;
        }
        self.next = (l > self.lowest()).then(|| l - 1);
        if self.next.is_none() {
            crate::progress::report(steps, steps);
        }
        Ok(true)
    }
}

/// The full Jacobian of a tap, `[n, d, d]`, on the CPU.
pub fn tap_jacobian(
    model: &Model,
    trace: &Trace,
    tap: Tap,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    let eye = Tensor::eye(model.config.hidden, trace.dtype(), &Device::Cpu)?;
    vjp_tap(model, trace, tap, &eye, opts)
}

/// The full detached Jacobian `[n, d, d]`, `J[i] = ∂y/∂x_i`, on the CPU.
pub fn detached_jacobian(
    model: &Model,
    trace: &Trace,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    on_cpu!(trace.dtype(), |be| now(detached_jacobian_on(
        &be, model, trace, opts
    )))
}

/// Rows `start .. start + count` of the full detached Jacobian,
/// `[n, count, d]`, on the CPU: one chunk of `J` when several workers form
/// it together (each row is one cotangent row of the transpose pass).
pub fn jacobian_rows(
    model: &Model,
    trace: &Trace,
    start: usize,
    count: usize,
    opts: PassOptions,
) -> Result<(Tensor, PassStats)> {
    let d = model.config.hidden;
    if count == 0 || start + count > d {
        return Err(EngineError::Config(format!(
            "rows {start}..{} are outside the Jacobian's {d} rows",
            start + count
        )));
    }
    let eye = Tensor::eye(d, trace.dtype(), &Device::Cpu)?.narrow(0, start, count)?;
    vjp(model, trace, &eye, opts)
}

/// Forward mode on the CPU: tangents `v` (`[b, n, d]`, at the input
/// embeddings) → `[b, d]` (`Σ_i J_i v_i` for each of the `b` tangents).
pub fn jvp(model: &Model, trace: &Trace, v: &Tensor) -> Result<Tensor> {
    on_cpu!(trace.dtype(), |be| now(jvp_on(
        &be,
        model,
        trace,
        v,
        0,
        &|_| {}
    )))
}

/// Forward mode on any backend for tangents that are zero before position
/// `from`: `v` is `[b, n - from, d]` (positions `from..n`, the ones before
/// are not computed at all) → `[b, d]` in the trace's precision. Waits on
/// the backend after each block, reporting it to `block`.
pub async fn jvp_on<B: Backend>(
    be: &B,
    model: &Model,
    trace: &Trace,
    v: &Tensor,
    from: usize,
    block: &dyn Fn(usize),
) -> Result<Tensor> {
    let (b, m, d) = v.dims3()?;
    if from + m != trace.n() {
        return Err(EngineError::Backend(format!(
            "tangents on {m} positions from {from} do not end at the prompt's {}",
            trace.n()
        )));
    }
    let mut t = be.upload(v)?;
    for l in 0..trace.layers.len() {
        block(l);
        t = FrozenLayer::new(be, model, l, &trace.layers[l])?.forward(be, &t, b, from)?;
        be.settle().await?;
    }
    jvp_finish(trace, &be.read(&t, 0, &[b, m, d]).await?)
}

/// The last position of a forward-mode result (`[b, m, d]`) through the
/// final norm frozen at its value: `[b, d]` in the trace's precision.
fn jvp_finish(trace: &Trace, out: &Tensor) -> Result<Tensor> {
    let m = out.dim(1)?;
    let last = out
        .narrow(1, m - 1, 1)?
        .squeeze(1)?
        .to_dtype(trace.dtype())?;
    let scale = trace
        .r_final
        .broadcast_mul(&trace.w_final)?
        .reshape((1, ()))?;
    Ok(last.broadcast_mul(&scale)?)
}

/// The model's output `y = Σ_i J_i x_i` (`[1, d]`) by one forward-mode pass
/// of the frozen network on any backend.
pub async fn output_on<B: Backend>(be: &B, model: &Model, trace: &Trace) -> Result<Tensor> {
    let (n, d) = trace.x.dims2()?;
    jvp_on(be, model, trace, &trace.x.reshape((1, n, d))?, 0, &|_| {}).await
}

/// The contributions `c_i = J_i x_i` (`[n, d]`) without forming `J`, on the
/// CPU: forward mode with tangent `x_i` at position `i` alone, all `i` at
/// once (in batches that fit `opts`).
pub fn contributions(model: &Model, trace: &Trace, opts: PassOptions) -> Result<Tensor> {
    on_cpu!(trace.dtype(), |be| now(contributions_on(
        &be, model, trace, opts
    )))
}

/// The contributions on any backend, progress per block of each batch.
pub async fn contributions_on<B: Backend>(
    be: &B,
    model: &Model,
    trace: &Trace,
    opts: PassOptions,
) -> Result<Tensor> {
    let batches = contribution_batches(model, trace, be.dtype(), fitted(be, opts));
    let layers = trace.layers.len();
    let steps = batches.len() * layers;
    let mut out = Vec::with_capacity(batches.len());
    for (i, &(s, b)) in batches.iter().enumerate() {
        let v = contribution_tangents(trace, s, b)?;
        let report = |l: usize| crate::progress::report(i * layers + l, steps);
        out.push(jvp_on(be, model, trace, &v, s, &report).await?);
    }
    crate::progress::report(steps, steps);
    Ok(Tensor::cat(&out, 0)?)
}

/// The contributions' forward-mode batches `(first position, count)` that
/// fit `opts` in `dtype`.
fn contribution_batches(
    model: &Model,
    trace: &Trace,
    dtype: DType,
    opts: PassOptions,
) -> Vec<(usize, usize)> {
    let n = trace.n();
    let d = model.config.hidden;
    let per_tangent = n
        * (3 * d + model.config.ffn + 2 * model.config.heads * model.config.head_dim)
        * dtype.size_in_bytes();
    let batch = (opts.memory_budget / per_tangent.max(1)).clamp(1, n.max(1));
    (0..n)
        .step_by(batch)
        .map(|s| (s, batch.min(n - s)))
        .collect()
}

/// The tangents of one batch, `[b, n - s, d]`: tangent `j` is `x` at
/// position `s + j`, zero elsewhere (everything before `s` stays zero and
/// is skipped).
fn contribution_tangents(trace: &Trace, s: usize, b: usize) -> Result<Tensor> {
    let (n, d) = trace.x.dims2()?;
    let m = n - s;
    let mut mask = vec![0f64; b * m];
    for j in 0..b {
        mask[j * m + j] = 1.0;
    }
    let mask = Tensor::from_vec(mask, (b, m, 1), &Device::Cpu)?.to_dtype(trace.dtype())?;
    Ok(mask.broadcast_mul(&trace.x.narrow(0, s, m)?.reshape((1, m, d))?)?)
}

/// `‖Σ_i J_i x_i − y‖ / ‖y‖` for a Jacobian `[n, d_out, d]`.
pub fn reconstruction_error(j: &Tensor, x: &Tensor, y: &Tensor) -> Result<f64> {
    let (n, d) = x.dims2()?;
    let sum = j.matmul(&x.reshape((n, d, 1))?)?.sum(0)?.flatten_all()?;
    rel_error(&sum, y)
}

/// `‖a − b‖₂ / ‖b‖₂`, computed in f64.
pub fn rel_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.flatten_all()?.to_dtype(candle_core::DType::F64)?;
    let b = b.flatten_all()?.to_dtype(candle_core::DType::F64)?;
    let num = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let den = b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok(num / den)
}
