//! The GEMM kernel's own rate, for `linear-lens bench --backend gpu`.

use crate::device::Gpu;
use crate::error::Result;
use crate::gemm::{ShapeClass, Variant};
use lens_engine::backend::{Batch, Epilogue, MatView};

/// One square product size's measurement.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GemmRate {
    /// The kernel variant (the tuned one for [`gemm_rate`]).
    pub variant: Variant,
    pub n: usize,
    pub reps: usize,
    pub seconds: f64,
    pub gflops: f64,
}

/// Times `reps` products of two `n × n` matrices on the GPU (after one
/// warm-up), waiting for the GPU to finish.
pub fn gemm_rate(gpu: &Gpu, n: usize, reps: usize) -> Result<GemmRate> {
    rate_of(gpu, gpu.tuning().variant(ShapeClass::of(n)), n, reps)
}

/// [`gemm_rate`] for every variant.
pub fn gemm_sweep(gpu: &Gpu, n: usize, reps: usize) -> Result<Vec<GemmRate>> {
    Variant::ALL
        .iter()
        .map(|&v| rate_of(gpu, v, n, reps))
        .collect()
}

fn rate_of(gpu: &Gpu, variant: Variant, n: usize, reps: usize) -> Result<GemmRate> {
    let vals: Vec<f32> = (0..n * n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let a = gpu.upload_f32(&vals)?;
    let b = gpu.upload_f32(&vals)?;
    let c = gpu.zeros(n * n)?;
    let v = MatView::dense(0, n, n);
    let run = |count: usize| -> Result<f64> {
        let t = std::time::Instant::now();
        for _ in 0..count {
            gpu.product_with(
                variant,
                &c,
                v,
                (&a, v),
                (&b, v),
                Batch::ONE,
                false,
                Epilogue::NONE,
            )?;
        }
        gpu.wait()?;
        Ok(t.elapsed().as_secs_f64())
    };
    run(1)?;
    let seconds = run(reps.max(1))?;
    Ok(GemmRate {
        variant,
        n,
        reps: reps.max(1),
        seconds,
        gflops: 2.0 * (n as f64).powi(3) * reps.max(1) as f64 / seconds / 1e9,
    })
}
