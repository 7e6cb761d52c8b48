//! The CPU backend: f64 or f32 in plain vectors, products by the `gemm`
//! crate (the kernel candle's own matmul uses) called with strides and
//! accumulation, so that views and residual adds cost no copies; every core
//! natively (rayon), one thread in wasm.

use super::{bad, tiled, Backend, Batch, CpuFloat, MatView, Store, Strided};
use crate::error::Result;
use candle_core::{DType, Device, Tensor};

/// CPU backend in precision `T`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend<T> {
    _t: std::marker::PhantomData<T>,
}

impl<T: CpuFloat> CpuBackend<T> {
    pub fn new() -> Self {
        Self {
            _t: std::marker::PhantomData,
        }
    }
}

/// Threads the products and elementwise loops use.
fn threads() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        rayon::current_num_threads().max(1)
    }
}

/// The products run fastest on this kind of machine with about this many
/// destination rows at a time (larger blocks fall out of cache: measured
/// 14080×640×1024 at 64 GFLOP/s whole, ~95 in blocks of ~1000 rows, f64).
const ROW_BLOCK: usize = 1280;

/// Products of at least this many flops may run side by side.
#[cfg(not(target_arch = "wasm32"))]
const SIDE_BY_SIDE_FLOPS: f64 = 5e7;

/// Buffer addresses, shareable across threads (the views say what each
/// thread touches).
#[derive(Clone, Copy)]
struct Ptrs {
    dst: usize,
    a: usize,
    b: usize,
}

/// One product `dst (+)= a·b` in row blocks of [`ROW_BLOCK`].
///
/// # Safety
/// The views (at their extra offsets) lie inside the buffers behind `ptrs`,
/// and no other thread writes what this product reads or writes.
unsafe fn product<T: CpuFloat>(
    ptrs: Ptrs,
    (dv, dst_off): (MatView, usize),
    (av, a_off): (MatView, usize),
    (bv, b_off): (MatView, usize),
    read_dst: bool,
    parallel: bool,
) {
    let parallelism = if parallel {
        #[cfg(not(target_arch = "wasm32"))]
        {
            gemm::Parallelism::Rayon(threads())
        }
        #[cfg(target_arch = "wasm32")]
        {
            gemm::Parallelism::None
        }
    } else {
        gemm::Parallelism::None
    };
    let blocks = dv.rows.div_ceil(ROW_BLOCK);
    let per = dv.rows.div_ceil(blocks).max(1);
    let (dst, a, b) = (ptrs.dst as *mut T, ptrs.a as *const T, ptrs.b as *const T);
    for r0 in (0..dv.rows).step_by(per) {
        let rows = per.min(dv.rows - r0);
        let d = dv.rows(r0, rows);
        let l = av.rows(r0, rows);
        let (dp, ap) = (dst.add(d.offset + dst_off), a.add(l.offset + a_off));
        let bp = b.add(bv.offset + b_off);
        // The relaxed build's fused kernel where it applies, else `gemm`.
        if tiled::fused(
            (rows, dv.cols, av.cols),
            tiled::Mat {
                p: dp,
                rs: d.rs,
                cs: d.cs,
            },
            read_dst,
            tiled::Mat {
                p: ap,
                rs: l.rs,
                cs: l.cs,
            },
            tiled::Mat {
                p: bp,
                rs: bv.rs,
                cs: bv.cs,
            },
        ) {
            continue;
        }
        gemm::gemm(
            rows,
            dv.cols,
            av.cols,
            dp,
            d.cs as isize,
            d.rs as isize,
            read_dst,
            ap,
            l.cs as isize,
            l.rs as isize,
            bp,
            bv.cs as isize,
            bv.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Elementwise work below this many values stays on one thread.
#[cfg(not(target_arch = "wasm32"))]
const PAR_MIN: usize = 1 << 16;

impl<T: CpuFloat> Backend for CpuBackend<T> {
    type Buf = Vec<T>;

    fn dtype(&self) -> DType {
        T::DTYPE
    }

    fn zeros(&self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::ZERO; len])
    }

    fn len(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }

    fn upload(&self, t: &Tensor) -> Result<Vec<T>> {
        Ok(t.flatten_all()?.to_dtype(T::DTYPE)?.to_vec1::<T>()?)
    }

    fn download(&self, buf: &Vec<T>, offset: usize, shape: &[usize]) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        let data = buf.get(offset..offset + len).ok_or_else(|| {
            bad(format!(
                "download of {shape:?} at {offset} past {}",
                buf.len()
            ))
        })?;
        Ok(Tensor::from_slice(data, shape, &Device::Cpu)?)
    }

    fn gemm_unchecked(
        &self,
        dst: &mut Vec<T>,
        dv: MatView,
        a: &Vec<T>,
        av: MatView,
        b: &Vec<T>,
        bv: MatView,
        batch: Batch,
        accumulate: bool,
    ) -> Result<()> {
        if dv.rows == 0 || dv.cols == 0 {
            return Ok(());
        }
        let t = threads();
        let ptrs = Ptrs {
            dst: dst.as_mut_ptr() as usize,
            a: a.as_ptr() as usize,
            b: b.as_ptr() as usize,
        };
        let one = |i: usize, parallel: bool| {
            let read_dst = accumulate || (i > 0 && batch.dst == 0);
            // SAFETY: every index the product touches was bounds-checked
            // by `Backend::gemm` (views and batch strides, without overflow); the destination does not
            // overlap itself, nor (being `&mut`) the operands, nor, when
            // products run side by side, another product's destination.
            unsafe {
                product::<T>(
                    ptrs,
                    (dv, i * batch.dst),
                    (av, i * batch.a),
                    (bv, i * batch.b),
                    read_dst,
                    parallel,
                )
            }
        };
        // Independent products big enough to keep a core busy run side by
        // side, one per core, each on operands in its own core's cache
        // (rather than every product split across all cores).
        #[cfg(not(target_arch = "wasm32"))]
        {
            let span = dv.last()?.map_or(0, |l| l - dv.offset + 1);
            let flops = 2.0 * (dv.rows * dv.cols * av.cols) as f64;
            if t > 1 && batch.count >= t && batch.dst >= span && flops >= SIDE_BY_SIDE_FLOPS {
                use rayon::prelude::*;
                (0..batch.count).into_par_iter().for_each(|i| one(i, false));
                return Ok(());
            }
        }
        for i in 0..batch.count {
            one(i, t > 1);
        }
        Ok(())
    }

    fn elementwise_unchecked(
        &self,
        store: Store,
        dst: &mut Vec<T>,
        dst_offset: usize,
        dims: [usize; 3],
        a: (&Vec<T>, Strided),
        b: Option<(&Vec<T>, Strided)>,
    ) -> Result<()> {
        let total: usize = dims.iter().product();
        let out = &mut dst[dst_offset..dst_offset + total];
        let row = dims[2];
        let kernel = |r: usize, out: &mut [T]| {
            let (i, j) = (r / dims[1], r % dims[1]);
            let base = |v: &Strided| v.offset + i * v.strides[0] + j * v.strides[1];
            let (abuf, av) = a;
            let ab = base(&av);
            let get_a = |l: usize| abuf[ab + l * av.strides[2]];
            match b {
                None => apply(store, out, get_a),
                Some((bbuf, bvw)) => {
                    let bb = base(&bvw);
                    apply(store, out, |l| get_a(l) * bbuf[bb + l * bvw.strides[2]])
                }
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        if threads() > 1 && total >= PAR_MIN {
            {
                use rayon::prelude::*;
                let rows_per_task = (PAR_MIN / row.max(1)).max(1);
                out.par_chunks_mut(row * rows_per_task)
                    .enumerate()
                    .for_each(|(c, chunk)| {
                        for (q, o) in chunk.chunks_mut(row).enumerate() {
                            kernel(c * rows_per_task + q, o);
                        }
                    });
                return Ok(());
            }
        }
        for (r, o) in out.chunks_mut(row).enumerate() {
            kernel(r, o);
        }
        Ok(())
    }

    fn fill_unchecked(
        &self,
        dst: &mut Vec<T>,
        offset: usize,
        len: usize,
        value: f64,
    ) -> Result<()> {
        let out = dst
            .get_mut(offset..offset + len)
            .ok_or_else(|| bad(format!("fill of {len} at {offset} past buffer")))?;
        out.fill(T::from_f64(value));
        Ok(())
    }
}

#[inline]
fn apply<T: CpuFloat>(store: Store, out: &mut [T], v: impl Fn(usize) -> T) {
    match store {
        Store::Set => out.iter_mut().enumerate().for_each(|(l, o)| *o = v(l)),
        Store::Add => out.iter_mut().enumerate().for_each(|(l, o)| *o += v(l)),
        Store::Mul => out.iter_mut().enumerate().for_each(|(l, o)| *o *= v(l)),
    }
}
