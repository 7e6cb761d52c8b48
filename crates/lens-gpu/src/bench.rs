//! The GEMM kernel's own rate, for `linear-lens bench --backend gpu`.

use crate::device::Gpu;
use crate::error::Result;
use lens_engine::backend::{Backend, Batch, MatView};

/// One square product size's measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmRate {
    pub n: usize,
    pub reps: usize,
    pub seconds: f64,
    pub gflops: f64,
}

/// Times `reps` products of two `n × n` matrices on the GPU (after one
/// warm-up), waiting for the GPU to finish.
pub fn gemm_rate(gpu: &Gpu, n: usize, reps: usize) -> Result<GemmRate> {
    let vals: Vec<f32> = (0..n * n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let a = gpu.upload_f32(&vals)?;
    let b = gpu.upload_f32(&vals)?;
    let mut c = gpu.zeros(n * n)?;
    let v = MatView::dense(0, n, n);
    let mut run = |count: usize| -> Result<f64> {
        let t = std::time::Instant::now();
        for _ in 0..count {
            Backend::gemm(gpu, &mut c, v, &a, v, &b, v, Batch::ONE, false)?;
        }
        gpu.wait()?;
        Ok(t.elapsed().as_secs_f64())
    };
    run(1)?;
    let seconds = run(reps.max(1))?;
    Ok(GemmRate {
        n,
        reps: reps.max(1),
        seconds,
        gflops: 2.0 * (n as f64).powi(3) * reps.max(1) as f64 / seconds / 1e9,
    })
}
