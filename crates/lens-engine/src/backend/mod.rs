//! The small set of operations the frozen-linear passes are written against
//! (forward mode, the transpose pass, taps, probes), so that a GPU backend
//! runs the same passes by implementing the same trait.
//!
//! Buffers are flat arrays of the backend's float type; every operation
//! names the part of a buffer it reads or writes with element offsets and
//! strides, so the passes never copy a block just to change its layout:
//! a transposed operand, a head's column slice or a query row range of `P`
//! are all views.

pub mod cpu;
pub mod tiled;

pub use cpu::CpuBackend;

use crate::error::Result;
use crate::model::Model;
use candle_core::{DType, Tensor, WithDType};
use std::future::Future;

/// The float types the CPU backend (and its tiled products) compute in.
pub trait CpuFloat:
    WithDType
    + Copy
    + Send
    + Sync
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
{
    const ZERO: Self;
    const ONE: Self;
}

impl CpuFloat for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl CpuFloat for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// A `rows × cols` matrix inside a buffer: element `(r, c)` is at
/// `offset + r·rs + c·cs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatView {
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl MatView {
    /// A row-major block at `offset`.
    pub fn dense(offset: usize, rows: usize, cols: usize) -> Self {
        Self {
            offset,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The same elements read as the transpose.
    pub fn t(self) -> Self {
        Self {
            offset: self.offset,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Columns `from..from + cols`.
    pub fn cols(self, from: usize, cols: usize) -> Self {
        Self {
            offset: self.offset + from * self.cs,
            cols,
            ..self
        }
    }

    /// Rows `from..from + rows`.
    pub fn rows(self, from: usize, rows: usize) -> Self {
        Self {
            offset: self.offset + from * self.rs,
            rows,
            ..self
        }
    }

    /// The largest element index the view touches: `Ok(None)` when empty,
    /// an error when the index overflows (a bound that guards `unsafe`
    /// must not wrap).
    pub fn last(&self) -> Result<Option<usize>> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(None);
        }
        (self.rows - 1)
            .checked_mul(self.rs)
            .and_then(|r| (self.cols - 1).checked_mul(self.cs)?.checked_add(r))
            .and_then(|v| v.checked_add(self.offset))
            .map(Some)
            .ok_or_else(|| bad(format!("view {self:?} overflows an index")))
    }
}

/// Several products of the same shape, each operand `stride` elements after
/// the previous one (`0` reuses the operand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub count: usize,
    pub dst: usize,
    pub a: usize,
    pub b: usize,
}

impl Batch {
    pub const ONE: Batch = Batch {
        count: 1,
        dst: 0,
        a: 0,
        b: 0,
    };
}

/// A 3-d read view: element `[i, j, l]` is at
/// `offset + i·strides[0] + j·strides[1] + l·strides[2]`; a zero stride
/// broadcasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strided {
    pub offset: usize,
    pub strides: [usize; 3],
}

impl Strided {
    /// A row-major `[_, d1, d2]` block at `offset`.
    pub fn dense(offset: usize, dims: [usize; 3]) -> Self {
        Self {
            offset,
            strides: [dims[1] * dims[2], dims[2], 1],
        }
    }

    /// The largest element index read for `dims`: `Ok(None)` when empty,
    /// an error when the index overflows.
    pub fn last(&self, dims: [usize; 3]) -> Result<Option<usize>> {
        if dims.contains(&0) {
            return Ok(None);
        }
        (0..3)
            .try_fold(self.offset, |acc, a| {
                (dims[a] - 1).checked_mul(self.strides[a])?.checked_add(acc)
            })
            .map(Some)
            .ok_or_else(|| bad(format!("view {self:?} of {dims:?} overflows an index")))
    }
}

/// What runs inside a product besides it ([`Backend::gemm_fused`]): the
/// elementwise steps that follow a product in the passes, so that a GPU
/// spends no dispatch (and no buffer) on them.
pub struct Epilogue<'a, Buf> {
    /// `a·diag(s)·b`: product `z`'s inner-dimension diagonal is the
    /// `av.cols` values of `buf` from `offset + z·stride`.
    pub scale: Option<(&'a Buf, usize, usize)>,
    /// `+ c`: product `z`'s addend is the view `view` (of the destination's
    /// shape) moved by `z·stride` (the batch's destination stride is 0:
    /// one addend for the sum).
    pub addend: Option<(&'a Buf, MatView, usize)>,
}

impl<Buf> Epilogue<'_, Buf> {
    pub const NONE: Self = Self {
        scale: None,
        addend: None,
    };
}

/// The contract of [`Backend::gemm_fused`]'s epilogue, beyond
/// [`check_gemm`]'s (`lens`: the scale's and the addend's buffers).
pub fn check_epilogue<Buf>(
    dv: &MatView,
    av: &MatView,
    batch: &Batch,
    ep: &Epilogue<'_, Buf>,
    lens: [usize; 2],
) -> Result<()> {
    let products = if batch.dst == 0 { 1 } else { batch.count };
    if let Some((_, offset, stride)) = ep.scale {
        if av.cols > 0 && batch.count > 0 {
            let last = (batch.count - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(offset))
                .and_then(|v| v.checked_add(av.cols - 1))
                .ok_or_else(|| {
                    bad(format!(
                        "scale at {offset} (batch {}×{stride}) overflows",
                        batch.count
                    ))
                })?;
            if last >= lens[0] {
                return Err(bad(format!(
                    "scale of {} at {offset} (batch {}×{stride}) past buffer of {}",
                    av.cols, batch.count, lens[0]
                )));
            }
        }
    }
    if let Some((_, cv, stride)) = ep.addend {
        if cv.rows != dv.rows || cv.cols != dv.cols {
            return Err(bad(format!("addend {cv:?} is not the shape of {dv:?}")));
        }
        if let Some(last) = cv.last()? {
            if batch_last(last, products, stride)? >= lens[1] {
                return Err(bad(format!(
                    "addend {cv:?} (batch {products}×{stride}) past buffer of {}",
                    lens[1]
                )));
            }
        }
    }
    Ok(())
}

/// One product's shape: `count` products of `rows × inner` by
/// `inner × cols` (what a GPU times its kernel variants on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GemmShape {
    pub rows: usize,
    pub cols: usize,
    pub inner: usize,
    pub count: usize,
}

impl GemmShape {
    pub fn flops(&self) -> f64 {
        2.0 * self.rows as f64 * self.cols as f64 * self.inner as f64 * self.count as f64
    }
}

/// How an elementwise result lands in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `dst = v`
    Set,
    /// `dst += v`
    Add,
    /// `dst *= v`
    Mul,
}

/// The contract of [`Backend::gemm`], checked by every backend before it
/// runs: the shapes agree, the destination does not overlap itself within
/// one product, and every view, at every product of the batch, lies inside
/// its buffer (`lens` are the buffers' lengths: dst, a, b).
pub fn check_gemm(
    dv: &MatView,
    av: &MatView,
    bv: &MatView,
    batch: &Batch,
    lens: [usize; 3],
) -> Result<()> {
    if av.rows != dv.rows || bv.cols != dv.cols || av.cols != bv.rows {
        return Err(bad(format!("gemm shapes {dv:?} = {av:?} · {bv:?}")));
    }
    // Distinct destination elements: rows apart by at least a row's span,
    // or columns apart by a column's.
    let distinct = (dv.cs >= 1 && dv.rs >= dv.cols * dv.cs)
        || (dv.rs >= 1 && dv.cs >= dv.rows * dv.rs)
        || dv.rows <= 1 && dv.cs >= 1
        || dv.cols <= 1 && dv.rs >= 1;
    if !distinct {
        return Err(bad(format!("gemm destination {dv:?} overlaps itself")));
    }
    let views = [
        ("dst", dv, batch.dst),
        ("lhs", av, batch.a),
        ("rhs", bv, batch.b),
    ];
    for ((name, v, stride), len) in views.into_iter().zip(lens) {
        if let Some(last) = v.last()? {
            if batch_last(last, batch.count, stride)? >= len {
                return Err(bad(format!(
                    "{name} view {v:?} (batch {}×{stride}) past buffer of {len}",
                    batch.count
                )));
            }
        }
    }
    Ok(())
}

/// The contract of [`Backend::elementwise`]: the dense `dims` block at
/// `dst_offset` lies inside a destination of `dst_len`, and every read
/// (a buffer's length and its strided view) inside its buffer.
pub fn check_elementwise(
    dst_len: usize,
    dst_offset: usize,
    dims: [usize; 3],
    reads: &[(usize, Strided)],
) -> Result<()> {
    let total = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|t| Some((t, t.checked_add(dst_offset)?)));
    match total {
        Some((0, _)) => {}
        Some((_, end)) if end <= dst_len => {}
        _ => {
            return Err(bad(format!(
                "elementwise {dims:?} at {dst_offset} past buffer"
            )))
        }
    }
    for (len, v) in reads {
        if v.last(dims)?.is_some_and(|last| last >= *len) {
            return Err(bad(format!("elementwise read {v:?} {dims:?} past buffer")));
        }
    }
    Ok(())
}

/// A buffer of at least `len` elements in `slot`, kept there for the next
/// call (a larger one replaces it).
pub fn scratch<'a, B: Backend + ?Sized>(
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

/// The last index a batch of `count` views `stride` apart touches, the
/// first view's being `last`.
fn batch_last(last: usize, count: usize, stride: usize) -> Result<usize> {
    count
        .saturating_sub(1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(last))
        .ok_or_else(|| {
            bad(format!(
                "a batch of {count} views {stride} apart overflows an index"
            ))
        })
}

/// The contract of [`Backend::fill`]: `offset..offset + len` inside `dst_len`.
pub fn check_fill(dst_len: usize, offset: usize, len: usize) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= dst_len => Ok(()),
        _ => Err(bad(format!(
            "fill of {len} at {offset} past buffer of {dst_len}"
        ))),
    }
}

/// A broken backend contract (a view past its buffer, shapes that do not
/// agree): the one error every backend reports it with.
pub fn bad(what: impl Into<String>) -> crate::EngineError {
    crate::EngineError::Backend(what.into())
}

/// The operations of the frozen-linear passes. `Buf` holds values of the
/// backend's precision ([`Backend::dtype`]).
pub trait Backend {
    type Buf;

    /// The precision every buffer holds.
    fn dtype(&self) -> DType;

    /// `len` zeros.
    fn zeros(&self, len: usize) -> Result<Self::Buf>;

    /// Number of elements in `buf`.
    fn len(&self, buf: &Self::Buf) -> usize;

    /// A host tensor's elements in row-major order, converted to `dtype()`.
    fn upload(&self, t: &Tensor) -> Result<Self::Buf>;

    /// `shape`'s worth of elements from `offset`, as a host tensor.
    fn download(&self, buf: &Self::Buf, offset: usize, shape: &[usize]) -> Result<Tensor>;

    /// `shape`'s worth of elements from `offset`, read back when the
    /// backend has them (a GPU in a browser reads back asynchronously; the
    /// default is [`Backend::download`]).
    fn read(
        &self,
        buf: &Self::Buf,
        offset: usize,
        shape: &[usize],
    ) -> impl Future<Output = Result<Tensor>> {
        std::future::ready(self.download(buf, offset, shape))
    }

    /// Waits until the work queued so far is done. The passes settle after
    /// each block, so that progress follows the device and a cancelled run
    /// leaves little queued; a CPU's work is done when it returns.
    fn settle(&self) -> impl Future<Output = Result<()>> {
        std::future::ready(Ok(()))
    }

    /// The largest buffer the backend can bind at once; the passes size
    /// their working memory under it.
    fn max_buffer_bytes(&self) -> usize {
        usize::MAX
    }

    /// `dst ← a·b` (or `dst += a·b` when `accumulate`), `batch.count` times;
    /// with `batch.dst == 0` the products are summed into one destination.
    /// `dst` must not overlap itself within one product. Checks the
    /// contract ([`check_gemm`]), then runs [`Backend::gemm_unchecked`].
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        dst: &mut Self::Buf,
        dv: MatView,
        a: &Self::Buf,
        av: MatView,
        b: &Self::Buf,
        bv: MatView,
        batch: Batch,
        accumulate: bool,
    ) -> Result<()> {
        let lens = [self.len(dst), self.len(a), self.len(b)];
        check_gemm(&dv, &av, &bv, &batch, lens)?;
        self.gemm_unchecked(dst, dv, a, av, b, bv, batch, accumulate)
    }

    /// [`Backend::gemm`]'s kernel, called only once its contract holds:
    /// every index it touches lies inside its buffer.
    #[allow(clippy::too_many_arguments)]
    fn gemm_unchecked(
        &self,
        dst: &mut Self::Buf,
        dv: MatView,
        a: &Self::Buf,
        av: MatView,
        b: &Self::Buf,
        bv: MatView,
        batch: Batch,
        accumulate: bool,
    ) -> Result<()>;

    /// `dst ← a·diag(s)·b + c` (either part of the epilogue optional; with
    /// neither, `gemm` without accumulating), batched as [`Backend::gemm`].
    /// Checks the contract ([`check_gemm`], [`check_epilogue`]), then runs
    /// [`Backend::gemm_fused_unchecked`].
    #[allow(clippy::too_many_arguments)]
    fn gemm_fused(
        &self,
        dst: &mut Self::Buf,
        dv: MatView,
        a: &Self::Buf,
        av: MatView,
        b: &Self::Buf,
        bv: MatView,
        batch: Batch,
        ep: Epilogue<'_, Self::Buf>,
        scratch: &mut Option<Self::Buf>,
    ) -> Result<()> {
        let lens = [self.len(dst), self.len(a), self.len(b)];
        check_gemm(&dv, &av, &bv, &batch, lens)?;
        let ep_lens = [
            ep.scale.map_or(0, |s| self.len(s.0)),
            ep.addend.map_or(0, |c| self.len(c.0)),
        ];
        check_epilogue(&dv, &av, &batch, &ep, ep_lens)?;
        self.gemm_fused_unchecked(dst, dv, a, av, b, bv, batch, ep, scratch)
    }

    /// [`Backend::gemm_fused`]'s kernel, its contract checked. The default
    /// scales `a` into `scratch` (kept by the caller between calls) and
    /// adds `c` first, by the checked operations; a backend that runs both
    /// inside the product overrides it and leaves `scratch` alone. The
    /// addend of the default needs a dense destination.
    #[allow(clippy::too_many_arguments)]
    fn gemm_fused_unchecked(
        &self,
        dst: &mut Self::Buf,
        dv: MatView,
        a: &Self::Buf,
        av: MatView,
        b: &Self::Buf,
        bv: MatView,
        batch: Batch,
        ep: Epilogue<'_, Self::Buf>,
        scratch: &mut Option<Self::Buf>,
    ) -> Result<()> {
        if let Some((c, cv, stride)) = ep.addend {
            let products = if batch.dst == 0 { 1 } else { batch.count };
            let dense =
                dv.cs == 1 && dv.rs == dv.cols && (products == 1 || batch.dst == dv.rows * dv.cols);
            if !dense {
                return Err(bad(format!(
                    "an addend needs a dense destination here, not {dv:?}"
                )));
            }
            let read = Strided {
                offset: cv.offset,
                strides: [stride, cv.rs, cv.cs],
            };
            let dims = [products, dv.rows, dv.cols];
            self.elementwise(Store::Set, dst, dv.offset, dims, (c, read), None)?;
        }
        let accumulate = ep.addend.is_some();
        let Some((s, offset, stride)) = ep.scale else {
            return self.gemm(dst, dv, a, av, b, bv, batch, accumulate);
        };
        let (rows, inner, count) = (av.rows, av.cols, batch.count);
        let scaled = crate::backend::scratch(self, scratch, count * rows * inner)?;
        let from_a = Strided {
            offset: av.offset,
            strides: [batch.a, av.rs, av.cs],
        };
        let from_s = Strided {
            offset,
            strides: [stride, 0, 1],
        };
        let dims = [count, rows, inner];
        self.elementwise(Store::Set, scaled, 0, dims, (a, from_a), Some((s, from_s)))?;
        let batch = Batch {
            a: rows * inner,
            ..batch
        };
        let scaled = &*scaled;
        self.gemm(
            dst,
            dv,
            scaled,
            MatView::dense(0, rows, inner),
            b,
            bv,
            batch,
            accumulate,
        )
    }

    /// On the dense `dims` block of `dst` at `dst_offset`:
    /// `dst (store) a` or `dst (store) a ⊙ b`. Checks the contract
    /// ([`check_elementwise`]), then runs [`Backend::elementwise_unchecked`]
    /// (nothing for an empty block).
    fn elementwise(
        &self,
        store: Store,
        dst: &mut Self::Buf,
        dst_offset: usize,
        dims: [usize; 3],
        a: (&Self::Buf, Strided),
        b: Option<(&Self::Buf, Strided)>,
    ) -> Result<()> {
        if dims.contains(&0) {
            return Ok(());
        }
        let reads: Vec<(usize, Strided)> = std::iter::once(a)
            .chain(b)
            .map(|(buf, v)| (self.len(buf), v))
            .collect();
        check_elementwise(self.len(dst), dst_offset, dims, &reads)?;
        self.elementwise_unchecked(store, dst, dst_offset, dims, a, b)
    }

    /// [`Backend::elementwise`]'s kernel, its contract checked and its
    /// block not empty.
    fn elementwise_unchecked(
        &self,
        store: Store,
        dst: &mut Self::Buf,
        dst_offset: usize,
        dims: [usize; 3],
        a: (&Self::Buf, Strided),
        b: Option<(&Self::Buf, Strided)>,
    ) -> Result<()>;

    /// `dst[offset..offset + len] = value`: checked ([`check_fill`]), then
    /// [`Backend::fill_unchecked`].
    fn fill(&self, dst: &mut Self::Buf, offset: usize, len: usize, value: f64) -> Result<()> {
        check_fill(self.len(dst), offset, len)?;
        self.fill_unchecked(dst, offset, len, value)
    }

    /// [`Backend::fill`]'s kernel, its range checked.
    fn fill_unchecked(
        &self,
        dst: &mut Self::Buf,
        offset: usize,
        len: usize,
        value: f64,
    ) -> Result<()>;

    /// The model's weight matrix `name` (`[out, in]`, as
    /// [`crate::forward::matrix`] gives it) in a fresh buffer. The default
    /// decodes it on the host and uploads it; a GPU keeps the stored
    /// (quantized) form resident and decodes it on the device.
    fn weight(&self, model: &Model, name: &str) -> Result<Self::Buf> {
        self.upload(&crate::forward::matrix(model, name, self.dtype())?)
    }
}
