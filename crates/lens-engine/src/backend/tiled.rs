//! Register-tiled products for the page's second WebAssembly build, the one
//! with relaxed SIMD: its `f64x2_relaxed_madd` / `f32x4_relaxed_madd`
//! compile to the processor's fused multiply-add, which the `gemm` crate's
//! wasm kernels (SIMD128: a multiply, then an add) cannot use. Written once
//! over [`Lanes`]: the packing and blocking are tested natively with
//! [`Portable`] lanes against a plain product; the wasm lanes only load,
//! broadcast, fuse and store.
//!
//! Layout (the usual one for such kernels): `b` is packed `KC × NC` at a
//! time into panels `NR` columns wide, `a` `MC × KC` at a time into panels
//! `MR` rows tall; a micro-kernel keeps an `MR × NR` block of the product in
//! registers over the whole `KC` and adds it to the destination once. Edges
//! are packed with zeros, so the micro-kernel never branches.

use super::CpuFloat;
pub use lens_report::KernelPeaks;

/// A SIMD vector of `W` values of `T`, as the micro-kernel uses it.
pub trait Lanes: Copy {
    type T: CpuFloat;
    /// Values per vector.
    const W: usize;
    fn zero() -> Self;
    /// # Safety
    /// `p` is valid for `W` reads (no alignment needed).
    unsafe fn load(p: *const Self::T) -> Self;
    /// `x` in every lane.
    fn splat(x: Self::T) -> Self;
    /// `a·b + c` (fused where the lanes say so).
    fn madd(a: Self, b: Self, c: Self) -> Self;
    /// # Safety
    /// `p` is valid for `W` writes.
    unsafe fn store(self, p: *mut Self::T);
}

/// Plain arrays: the same kernel anywhere (tests; no fusing, `a·b + c`).
#[derive(Clone, Copy)]
pub struct Portable<T, const W: usize>([T; W]);

impl<T: CpuFloat, const W: usize> Lanes for Portable<T, W> {
    type T = T;
    const W: usize = W;
    #[inline(always)]
    fn zero() -> Self {
        Portable([T::ZERO; W])
    }
    #[inline(always)]
    unsafe fn load(p: *const T) -> Self {
        Portable(std::array::from_fn(|l| *p.add(l)))
    }
    #[inline(always)]
    fn splat(x: T) -> Self {
        Portable([x; W])
    }
    #[inline(always)]
    fn madd(a: Self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|l| a.0[l] * b.0[l] + c.0[l]))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut T) {
        for (l, v) in self.0.into_iter().enumerate() {
            *p.add(l) = v;
        }
    }
}

/// Rows of `k` packed at a time (an `MR × KC` and a `KC × NR` panel stay in
/// the first-level cache).
const KC: usize = 256;
/// Rows of `a` packed at a time (`MC × KC` in the second-level cache).
const MC: usize = 96;
/// Columns of `b` packed at a time.
const NC: usize = 512;

/// A matrix at element strides: `(r, c)` at `p + r·rs + c·cs`.
#[derive(Clone, Copy)]
pub struct Mat<P> {
    pub p: P,
    pub rs: usize,
    pub cs: usize,
}

impl<T> Mat<*const T> {
    pub fn cast<U>(self) -> Mat<*const U> {
        Mat {
            p: self.p.cast(),
            rs: self.rs,
            cs: self.cs,
        }
    }
}

impl<T> Mat<*mut T> {
    pub fn cast<U>(self) -> Mat<*mut U> {
        Mat {
            p: self.p.cast(),
            rs: self.rs,
            cs: self.cs,
        }
    }
}

/// One packed block of `a` (`mc × kc`, in panels `MR` tall) times one
/// packed panel of `b` (`kc × nc`, in panels `NR` wide), stored at (or,
/// with `add`, added into) the destination from its top-left corner.
pub struct Block<T> {
    pub ap: *const T,
    pub bp: *const T,
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
    pub dst: Mat<*mut T>,
    pub add: bool,
}

/// A macro-kernel: one [`Block`] through the micro-kernel. A function of
/// its own that the driver calls many times (never inlined into it): the
/// browser first runs a wasm function as its baseline compiler's code and
/// moves a call to the optimized code only when it is called again.
pub type Macro<T> = unsafe fn(&Block<T>);

/// `dst = a·b` (`dst += a·b` when `read_dst`) for `a` `m × k`, `b` `k × n`,
/// packed for `MR × NR` register blocks, each block multiplied by `kernel`.
///
/// # Safety
/// Every element `(r, c)` the strides name inside `m × k`, `k × n` and
/// `m × n` lies inside its buffer; `dst` overlaps neither operand;
/// `kernel` computes `MR × NR` register blocks.
pub unsafe fn gemm<T: CpuFloat, const MR: usize, const NR: usize>(
    (m, n, k): (usize, usize, usize),
    dst: Mat<*mut T>,
    read_dst: bool,
    a: Mat<*const T>,
    b: Mat<*const T>,
    kernel: Macro<T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !read_dst {
            for r in 0..m {
                for c in 0..n {
                    *dst.p.add(r * dst.rs + c * dst.cs) = T::ZERO;
                }
            }
        }
        return;
    }
    let mut bp = vec![T::ZERO; KC * NC.div_ceil(NR) * NR];
    let mut ap = vec![T::ZERO; KC * MC.div_ceil(MR) * MR];
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            pack(&mut bp, NR, kc, nc, |p, c| {
                *b.p.add((p0 + p) * b.rs + (j0 + c) * b.cs)
            });
            for i0 in (0..m).step_by(MC) {
                let mc = MC.min(m - i0);
                pack(&mut ap, MR, kc, mc, |p, r| {
                    *a.p.add((i0 + r) * a.rs + (p0 + p) * a.cs)
                });
                let corner = dst.p.add(i0 * dst.rs + j0 * dst.cs);
                kernel(&Block {
                    ap: ap.as_ptr(),
                    bp: bp.as_ptr(),
                    kc,
                    mc,
                    nc,
                    dst: Mat { p: corner, ..dst },
                    add: read_dst || p0 > 0,
                });
            }
        }
    }
}

/// The macro-kernel with `MR × NV·W` register blocks of lanes `L`.
///
/// # Safety
/// The block's panels hold what its sizes say; its destination holds
/// `mc × nc` values at its strides.
#[inline(always)]
pub unsafe fn macro_kernel<L: Lanes, const MR: usize, const NV: usize>(b: &Block<L::T>) {
    // A row of a register block fits the 64 values its store goes through.
    const { assert!(MR > 0 && NV > 0 && NV * L::W <= 64) };
    let nr = NV * L::W;
    let (kc, dst) = (b.kc, b.dst);
    for jr in (0..b.nc).step_by(nr) {
        for ir in (0..b.mc).step_by(MR) {
            let block = micro::<L, MR, NV>(kc, b.ap.add(ir * kc), b.bp.add(jr * kc));
            let (rows, cols) = (MR.min(b.mc - ir), nr.min(b.nc - jr));
            for (r, row) in block.iter().enumerate().take(rows) {
                let mut vals = [L::T::ZERO; 64];
                for (v, x) in row.iter().enumerate() {
                    x.store(vals.as_mut_ptr().add(v * L::W));
                }
                let d = dst.p.add((ir + r) * dst.rs + jr * dst.cs);
                for (c, x) in vals.iter().enumerate().take(cols) {
                    let o = d.add(c * dst.cs);
                    *o = if b.add { *o + *x } else { *x };
                }
            }
        }
    }
}

/// Packs a `kc × len` slice (element `(p, q)` from `at`) into panels `w`
/// wide: panel `q / w` holds, for each `p`, its `w` values in a row, the
/// last panel padded with zeros.
#[inline(always)]
fn pack<T: CpuFloat>(
    buf: &mut [T],
    w: usize,
    kc: usize,
    len: usize,
    at: impl Fn(usize, usize) -> T,
) {
    for (panel, q0) in (0..len).step_by(w).enumerate() {
        let out = &mut buf[panel * kc * w..(panel + 1) * kc * w];
        let width = w.min(len - q0);
        for p in 0..kc {
            let row = &mut out[p * w..(p + 1) * w];
            for (q, o) in row.iter_mut().enumerate() {
                *o = if q < width { at(p, q0 + q) } else { T::ZERO };
            }
        }
    }
}

/// One `MR × NV·W` block over `kc` steps of packed panels.
///
/// # Safety
/// `ap` holds `kc·MR` values and `bp` `kc·NV·W`.
#[inline(always)]
unsafe fn micro<L: Lanes, const MR: usize, const NV: usize>(
    kc: usize,
    ap: *const L::T,
    bp: *const L::T,
) -> [[L; NV]; MR] {
    let mut acc = [[L::zero(); NV]; MR];
    let nr = NV * L::W;
    for p in 0..kc {
        let b: [L; NV] = std::array::from_fn(|v| L::load(bp.add(p * nr + v * L::W)));
        for (r, row) in acc.iter_mut().enumerate() {
            let a = L::splat(*ap.add(p * MR + r));
            for (x, bv) in row.iter_mut().zip(b) {
                *x = L::madd(a, bv, *x);
            }
        }
    }
    acc
}

/// Micro-kernel runs on the same panels: what [`peak`] times, a function of
/// its own for the reason [`Macro`] is.
pub type Burst<T> = unsafe fn(*const T, *const T) -> T;

/// Runs of one burst.
const BURST: usize = 64;

/// [`BURST`] runs of the `MR × NV·W` micro-kernel over `KC` steps, every
/// accumulator summed (or the compiler drops their work).
///
/// # Safety
/// `ap` holds `KC·MR` values and `bp` `KC·NV·W`.
#[inline(always)]
pub unsafe fn burst<L: Lanes, const MR: usize, const NV: usize>(
    ap: *const L::T,
    bp: *const L::T,
) -> L::T {
    let mut sink = L::T::ZERO;
    for _ in 0..BURST {
        let block = micro::<L, MR, NV>(KC, std::hint::black_box(ap), bp);
        let mut vals = [L::T::ZERO; 64];
        for x in block.iter().flatten() {
            x.store(vals.as_mut_ptr());
            for v in &vals[..L::W] {
                sink += *v;
            }
        }
    }
    sink
}

/// The GFLOP/s of `burst` (with `MR × NR` blocks) on panels in cache, for
/// about `budget_ms` of `now_ms`: the roofline's peak (a real run's
/// products also pack and store).
pub fn peak<T: CpuFloat, const MR: usize, const NR: usize>(
    now_ms: &dyn Fn() -> f64,
    budget_ms: f64,
    burst: Burst<T>,
) -> f64 {
    let ap: Vec<T> = (0..KC * MR)
        .map(|i| T::from_f64(1.0 + (i % 7) as f64 * 1e-3))
        .collect();
    let bp: Vec<T> = (0..KC * NR)
        .map(|i| T::from_f64(1.0 - (i % 5) as f64 * 1e-3))
        .collect();
    // A few bursts first: the browser's optimized code takes over.
    let mut sink = T::ZERO;
    for _ in 0..8 {
        // SAFETY: the panels hold `KC·MR` and `KC·NR` values.
        sink += unsafe { burst(ap.as_ptr(), bp.as_ptr()) };
    }
    let (start, mut bursts) = (now_ms(), 0u64);
    loop {
        // SAFETY: as above.
        sink += unsafe { burst(ap.as_ptr(), bp.as_ptr()) };
        bursts += 1;
        let ms = now_ms() - start;
        if ms >= budget_ms {
            std::hint::black_box(sink);
            return (bursts * (BURST * 2 * MR * NR * KC) as u64) as f64 / (ms * 1e6);
        }
    }
}

/// WebAssembly's 128-bit lanes: SIMD128 (a multiply, then an add) and, in
/// the relaxed build, relaxed SIMD's fused multiply-add.
#[cfg(target_arch = "wasm32")]
pub mod wasm {
    use super::Lanes;
    use core::arch::wasm32::*;

    macro_rules! lanes {
        ($name:ident, $t:ty, $w:expr, $splat:ident, $madd:expr) => {
            #[derive(Clone, Copy)]
            pub struct $name(v128);
            impl Lanes for $name {
                type T = $t;
                const W: usize = $w;
                #[inline(always)]
                fn zero() -> Self {
                    $name($splat(0.0))
                }
                #[inline(always)]
                unsafe fn load(p: *const $t) -> Self {
                    $name(v128_load(p as *const v128))
                }
                #[inline(always)]
                fn splat(x: $t) -> Self {
                    $name($splat(x))
                }
                #[inline(always)]
                fn madd(a: Self, b: Self, c: Self) -> Self {
                    #[allow(unused_unsafe)]
                    // SAFETY (relaxed lanes): only instantiated inside the
                    // `relaxed-simd` entry points below; a browser without
                    // relaxed SIMD rejects the whole module before it runs.
                    $name(unsafe { ($madd)(a.0, b.0, c.0) })
                }
                #[inline(always)]
                unsafe fn store(self, p: *mut $t) {
                    v128_store(p as *mut v128, self.0)
                }
            }
        };
    }

    lanes!(Simd64, f64, 2, f64x2_splat, |a, b, c| f64x2_add(
        f64x2_mul(a, b),
        c
    ));
    lanes!(Simd32, f32, 4, f32x4_splat, |a, b, c| f32x4_add(
        f32x4_mul(a, b),
        c
    ));
    #[cfg(feature = "relaxed-simd")]
    lanes!(Fma64, f64, 2, f64x2_splat, f64x2_relaxed_madd);
    #[cfg(feature = "relaxed-simd")]
    lanes!(Fma32, f32, 4, f32x4_splat, f32x4_relaxed_madd);
}

/// The relaxed build's kernels: fused multiply-add in `MR = 4` rows by two
/// vectors (f64: 4 × 4, f32: 4 × 8; eight accumulators, enough to keep two
/// fused units busy through their latency). Each a function compiled with
/// relaxed SIMD, so that its lanes' intrinsics inline into it.
#[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
pub mod fma {
    use super::wasm::{Fma32, Fma64};
    use super::{burst, macro_kernel, Block};

    /// # Safety
    /// As [`macro_kernel`].
    #[target_feature(enable = "relaxed-simd")]
    pub unsafe fn macro_f64(b: &Block<f64>) {
        macro_kernel::<Fma64, 4, 2>(b)
    }

    /// # Safety
    /// As [`macro_kernel`].
    #[target_feature(enable = "relaxed-simd")]
    pub unsafe fn macro_f32(b: &Block<f32>) {
        macro_kernel::<Fma32, 4, 2>(b)
    }

    /// # Safety
    /// As [`burst`].
    #[target_feature(enable = "relaxed-simd")]
    pub unsafe fn burst_f64(ap: *const f64, bp: *const f64) -> f64 {
        burst::<Fma64, 4, 2>(ap, bp)
    }

    /// # Safety
    /// As [`burst`].
    #[target_feature(enable = "relaxed-simd")]
    pub unsafe fn burst_f32(ap: *const f32, bp: *const f32) -> f32 {
        burst::<Fma32, 4, 2>(ap, bp)
    }
}

/// The smallest side a product needs for the tiled kernel: thinner ones
/// (a single cotangent row, a head's few columns) are mostly memory
/// traffic, where packing would only add to it.
const MIN_SIDE: usize = 8;

/// `dst (+)= a·b` by the fused kernel where this build has one and the
/// shape suits it; `false` where the caller's own product must run.
///
/// # Safety
/// As [`gemm`].
#[allow(unused_variables)]
pub unsafe fn fused<T: CpuFloat>(
    shape: (usize, usize, usize),
    dst: Mat<*mut T>,
    read_dst: bool,
    a: Mat<*const T>,
    b: Mat<*const T>,
) -> bool {
    let (m, n, k) = shape;
    if m < MIN_SIDE || n < MIN_SIDE || k < MIN_SIDE {
        return false;
    }
    #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
    {
        // `T` is f64 or f32, as its dtype says: the pointers re-typed.
        match T::DTYPE {
            candle_core::DType::F64 => {
                gemm::<f64, 4, 4>(
                    shape,
                    dst.cast(),
                    read_dst,
                    a.cast(),
                    b.cast(),
                    fma::macro_f64,
                );
                return true;
            }
            candle_core::DType::F32 => {
                gemm::<f32, 4, 8>(
                    shape,
                    dst.cast(),
                    read_dst,
                    a.cast(),
                    b.cast(),
                    fma::macro_f32,
                );
                return true;
            }
            _ => {}
        }
    }
    false
}

/// Which products this build's CPU backend multiplies with, and the peak
/// of its micro-kernel here with and without fused multiply-add (GFLOP/s
/// on data in cache; f64 and f32), each measured for about `budget_ms`.
pub fn kernel_peaks(now_ms: &dyn Fn() -> f64, budget_ms: f64) -> KernelPeaks {
    let plain = (
        peak::<f64, 4, 4>(now_ms, budget_ms, plain_burst_f64),
        peak::<f32, 4, 8>(now_ms, budget_ms, plain_burst_f32),
    );
    #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
    let fused = Some((
        peak::<f64, 4, 4>(now_ms, budget_ms, fma::burst_f64),
        peak::<f32, 4, 8>(now_ms, budget_ms, fma::burst_f32),
    ));
    #[cfg(not(all(target_arch = "wasm32", feature = "relaxed-simd")))]
    let fused: Option<(f64, f64)> = None;
    KernelPeaks {
        fused_multiply_add: FUSED,
        f64_plain: plain.0,
        f32_plain: plain.1,
        f64_fma: fused.map(|f| f.0),
        f32_fma: fused.map(|f| f.1),
    }
}

/// Without fused multiply-add (SIMD128's multiply, then add, in wasm), a
/// function of its own for the reason [`Macro`] is.
#[inline(never)]
unsafe fn plain_burst_f64(ap: *const f64, bp: *const f64) -> f64 {
    #[cfg(target_arch = "wasm32")]
    return burst::<wasm::Simd64, 4, 2>(ap, bp);
    #[cfg(not(target_arch = "wasm32"))]
    return burst::<Portable<f64, 2>, 4, 2>(ap, bp);
}

#[inline(never)]
unsafe fn plain_burst_f32(ap: *const f32, bp: *const f32) -> f32 {
    #[cfg(target_arch = "wasm32")]
    return burst::<wasm::Simd32, 4, 2>(ap, bp);
    #[cfg(not(target_arch = "wasm32"))]
    return burst::<Portable<f32, 4>, 4, 2>(ap, bp);
}

/// This build multiplies with fused multiply-add (the relaxed build).
pub const FUSED: bool = cfg!(all(target_arch = "wasm32", feature = "relaxed-simd"));

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic matrix with values in (-1, 1).
    fn values<T: CpuFloat>(len: usize, seed: u64) -> Vec<T> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                T::from_f64(((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
            })
            .collect()
    }

    /// The tiled product equals a plain triple loop, for shapes across the
    /// block edges, transposed operands and a destination with column
    /// stride, set and accumulated.
    fn agrees<T: CpuFloat, const MR: usize, const NR: usize>(kernel: Macro<T>, tol: f64) {
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (8, 8, 8),
            (97, 13, 300),
            (5, 600, 257),
            (130, 70, 513),
        ];
        for &(m, n, k) in &shapes {
            for &(ta, tb, td, read) in &[
                (false, false, false, false),
                (true, true, true, true),
                (false, true, false, true),
            ] {
                let a = values::<T>(m * k, 1);
                let b = values::<T>(k * n, 2);
                let d0 = values::<T>(m * n, 3);
                let (ars, acs) = if ta { (1, m) } else { (k, 1) };
                let (brs, bcs) = if tb { (1, k) } else { (n, 1) };
                let (drs, dcs) = if td { (1, m) } else { (n, 1) };
                let mut d = d0.clone();
                unsafe {
                    gemm::<T, MR, NR>(
                        (m, n, k),
                        Mat {
                            p: d.as_mut_ptr(),
                            rs: drs,
                            cs: dcs,
                        },
                        read,
                        Mat {
                            p: a.as_ptr(),
                            rs: ars,
                            cs: acs,
                        },
                        Mat {
                            p: b.as_ptr(),
                            rs: brs,
                            cs: bcs,
                        },
                        kernel,
                    )
                };
                for r in 0..m {
                    for c in 0..n {
                        let mut want = if read {
                            d0[r * drs + c * dcs].to_f64()
                        } else {
                            0.0
                        };
                        for p in 0..k {
                            want += a[r * ars + p * acs].to_f64() * b[p * brs + c * bcs].to_f64();
                        }
                        let got = d[r * drs + c * dcs].to_f64();
                        assert!(
                            (got - want).abs() <= tol * (k as f64).sqrt(),
                            "{m}×{n}×{k} ta={ta} tb={tb} td={td} read={read} at ({r},{c}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn tiled_products_equal_the_plain_product_f64() {
        agrees::<f64, 4, 4>(macro_kernel::<Portable<f64, 2>, 4, 2>, 1e-14);
    }

    #[test]
    fn tiled_products_equal_the_plain_product_f32() {
        agrees::<f32, 4, 8>(macro_kernel::<Portable<f32, 4>, 4, 2>, 2e-6);
    }
}
