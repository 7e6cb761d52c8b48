//! `linear-lens bench`: how fast the detached Jacobian is on this machine,
//! against the machine's own matmul rate measured in the same run.

use lens_engine::forward::Precision;
use lens_engine::jacobian::{detached_jacobian, detached_jacobian_on, PassOptions};
use lens_engine::trace::trace;
use lens_engine::Model;
use lens_engine::PrecisionDType;
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize)]
pub struct BenchReport {
    pub model: String,
    /// "cpu" or "gpu".
    pub backend: &'static str,
    /// The GPU adapter (`--backend gpu`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// The optional WebGPU features the kernels used (`--backend gpu`):
    /// `shader-f16`, `subgroups`, or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_features: Option<Vec<&'static str>>,
    pub precision: &'static str,
    pub n_tokens: usize,
    pub threads: usize,
    pub forward_ms: f64,
    pub jacobian_ms: f64,
    /// Counted from the shapes the pass really multiplied.
    pub jacobian_gflop: f64,
    /// The factor-form count (`naive_flops_per_row`: 6.88 MFLOP per position·layer·row
    /// for Gemma 3 270M), for comparison across methods.
    pub naive_gflop: f64,
    pub jacobian_gflops: f64,
    /// The machine's matmul rate: BLAS on the CPU, or the GPU backend's own
    /// GEMM kernel (square products) with `--backend gpu`.
    pub gemm_gflops: f64,
    pub efficiency: f64,
    pub peak_rss_mib: f64,
    /// `--backend gpu`: what the (best) full J asked of the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_work: Option<lens_gpu::GpuWork>,
    /// `--backend gpu`: each product kernel variant timed on the pass's own
    /// products (the fastest of each class is used, and remembered for the
    /// adapter in the cache directory's `gpu-tuning.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gemm_variants: Option<Vec<lens_gpu::VariantRate>>,
    /// `--backend gpu`: each variant's rate on the square GEMM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gemm_sweep: Option<Vec<lens_gpu::bench::GemmRate>>,
}

/// Flops per position, layer and cotangent row of the factor form: `up` and
/// `down` (4·d·ffn), `o` (2·d·H·hd) and `v` (2·kv·hd·d).
pub fn naive_flops_per_row(model: &Model) -> f64 {
    let c = &model.config;
    let (d, ffn) = (c.hidden as f64, c.ffn as f64);
    4.0 * d * ffn
        + 2.0 * d * (c.heads * c.head_dim) as f64
        + 2.0 * (c.kv_heads * c.head_dim) as f64 * d
}

/// Best-of-3 rate of a matmul shaped like the pass's big products.
pub fn gemm_gflops(precision: Precision) -> Result<f64, String> {
    use candle_core::{Device, Tensor};
    let (m, k, n) = (1280, 640, 2048);
    let e = |e: candle_core::Error| e.to_string();
    let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)
        .map_err(e)?
        .to_dtype(precision.dtype())
        .map_err(e)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu)
        .map_err(e)?
        .to_dtype(precision.dtype())
        .map_err(e)?;
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let t = Instant::now();
        let c = a.matmul(&b).map_err(e)?;
        std::hint::black_box(c);
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (m * k * n) as f64 / best / 1e9)
}

pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

pub fn run(
    model_name: &str,
    model: &Model,
    prompt: &str,
    precision: Precision,
    repeat: usize,
    save_jacobian: Option<&std::path::Path>,
) -> Result<BenchReport, String> {
    let e = |e: lens_engine::EngineError| e.to_string();
    let ids = model.encode(prompt).map_err(e)?;
    let n = ids.len();
    let (mut forward_ms, mut jacobian_ms) = (f64::INFINITY, f64::INFINITY);
    let mut flops = 0.0;
    for i in 0..repeat.max(1) {
        let t = Instant::now();
        let tr = trace(model, &ids, precision).map_err(e)?;
        forward_ms = forward_ms.min(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let (j, stats) = detached_jacobian(model, &tr, PassOptions::default()).map_err(e)?;
        jacobian_ms = jacobian_ms.min(t.elapsed().as_secs_f64() * 1e3);
        flops = stats.flops;
        if let (0, Some(path)) = (i, save_jacobian) {
            let data: Vec<f64> = j
                .flatten_all()
                .and_then(|t| t.to_dtype(candle_core::DType::F64))
                .and_then(|t| t.to_vec1())
                .map_err(|e| e.to_string())?;
            let d = model.config.hidden;
            crate::npy::write_f64(path, &[n, d, d], &data)
                .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        }
    }
    let c = &model.config;
    let naive = naive_flops_per_row(model) * (n * c.layers * c.hidden) as f64;
    let gemm = gemm_gflops(precision)?;
    let secs = jacobian_ms / 1e3;
    Ok(BenchReport {
        model: model_name.to_string(),
        backend: "cpu",
        adapter: None,
        gpu_features: None,
        precision: precision.name(),
        n_tokens: n,
        threads: candle_core::utils::get_num_threads(),
        forward_ms,
        jacobian_ms,
        jacobian_gflop: flops / 1e9,
        naive_gflop: naive / 1e9,
        jacobian_gflops: flops / 1e9 / secs,
        gemm_gflops: gemm,
        efficiency: naive / 1e9 / secs / gemm,
        peak_rss_mib: peak_rss_mib(),
        gpu_work: None,
        gemm_variants: None,
        gemm_sweep: None,
    })
}

/// The same measurement with everything on the GPU (f32): the frozen
/// forward (`forward_ms`, its records read back) and the transpose pass
/// (`jacobian_ms`, J read back). The first repeat also uploads the weights'
/// blocks; with `--repeat` the best time counts.
pub fn run_gpu(
    model_name: &str,
    model: &Model,
    prompt: &str,
    repeat: usize,
    options: lens_gpu::GpuOptions,
) -> Result<BenchReport, String> {
    let e = |e: lens_engine::EngineError| e.to_string();
    let g = |e: lens_gpu::GpuError| e.to_string();
    let gpu = lens_gpu::block_on(lens_gpu::Gpu::with_options(options)).map_err(g)?;
    let ids = model.encode(prompt).map_err(e)?;
    let n = ids.len();
    let precision = Precision::F32;
    // The adapter's remembered tuning, or the variants timed now (and
    // remembered) on this prompt's products.
    let tuning = lens_local::tuned(&gpu, model, n).map_err(g)?;
    let mut gpu_work = None;
    let (mut forward_ms, mut jacobian_ms) = (f64::INFINITY, f64::INFINITY);
    let mut flops = 0.0;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let tr = lens_gpu::block_on(lens_gpu::trace::trace(&gpu, model, &ids)).map_err(g)?;
        forward_ms = forward_ms.min(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let before = gpu.work();
        let (_, stats) = lens_gpu::block_on(detached_jacobian_on(
            &gpu,
            model,
            &tr,
            PassOptions::default(),
        ))
        .map_err(e)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if ms < jacobian_ms {
            gpu_work = Some(gpu.work().since(&before));
        }
        jacobian_ms = jacobian_ms.min(ms);
        flops = stats.flops;
    }
    let c = &model.config;
    let naive = naive_flops_per_row(model) * (n * c.layers * c.hidden) as f64;
    // Emulated GPUs (lavapipe, SwiftShader) run at about 0.5 GFLOP/s.
    let (size, reps) = if gpu.adapter().device_type.is_software() {
        (256, 3)
    } else {
        (2048, 20)
    };
    let sweep = lens_gpu::bench::gemm_sweep(&gpu, size, reps).map_err(g)?;
    let rate = lens_gpu::bench::gemm_rate(&gpu, size, reps).map_err(g)?;
    let secs = jacobian_ms / 1e3;
    Ok(BenchReport {
        model: model_name.to_string(),
        backend: "gpu",
        adapter: Some(format!(
            "{} ({}, {})",
            gpu.adapter().name,
            gpu.adapter().backend,
            gpu.adapter().device_type
        )),
        gpu_features: Some(gpu.adapter().features_in_use()),
        precision: precision.name(),
        n_tokens: n,
        threads: candle_core::utils::get_num_threads(),
        forward_ms,
        jacobian_ms,
        jacobian_gflop: flops / 1e9,
        naive_gflop: naive / 1e9,
        jacobian_gflops: flops / 1e9 / secs,
        gemm_gflops: rate.gflops,
        efficiency: naive / 1e9 / secs / rate.gflops,
        peak_rss_mib: peak_rss_mib(),
        gpu_work,
        gemm_variants: Some(tuning.rates),
        gemm_sweep: Some(sweep),
    })
}
