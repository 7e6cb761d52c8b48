//! The engine's pass drivers on the GPU backend (f32, wgpu), from the GPU's own frozen
//! forward, against the CPU in f64: the
//! full detached Jacobian of tiny random Qwen 3, Gemma 3 (sliding window
//! shorter than the prompt) and Llama models, and on Gemma 3 270M the
//! output and its logits, the contributions and random probe products.
//! Bounds: 1e-4 relative against f64, 1e-5 for the f32 reconstruction.

use candle_core::{DType, Device, Tensor};
use lens_engine::forward::{unembed, Precision};
use lens_engine::jacobian::{
    contributions, contributions_on, detached_jacobian, detached_jacobian_on, output_on,
    reconstruction_error, rel_error, vjp, vjp_tap_on, PassOptions, Tap,
};
use lens_engine::trace::trace;
use lens_engine::Model;
use lens_gpu::block_on;
use lens_testkit::gpu::gpu;
use lens_testkit::real_models::{model_path, GEMMA};
use lens_testkit::{argmax, max_rel, prompt, tiny_hf_dir, Family, Rng, Spec};
use serde_json::json;

const VS_F64: f64 = 1e-4;
const RECONSTRUCTION: f64 = 1e-5;

fn tiny(family: Family) -> Model {
    let spec = Spec::new(family);
    let dir = tiny_hf_dir(&format!("gpu-{family:?}"), &spec, json!({}));
    Model::load_path(&dir).expect("tiny model loads")
}

fn full_jacobian_matches_f64(family: Family) {
    let g = gpu();
    let m = tiny(family);
    let ids = m
        .encode(&prompt(5, 7, Spec::new(family).vocab))
        .expect("encode");
    let tr32 = block_on(lens_gpu::trace::trace(&g, &m, &ids)).expect("GPU trace");
    let tr64 = trace(&m, &ids, Precision::F64).expect("trace f64");
    let opts = PassOptions::default();
    let (j_gpu, _) = block_on(detached_jacobian_on(&g, &m, &tr32, opts)).expect("GPU J");
    let (j_cpu, _) = detached_jacobian(&m, &tr64, opts).expect("CPU J");
    assert_eq!(j_gpu.dims(), j_cpu.dims());
    let vs = rel_error(&j_gpu, &j_cpu).expect("rel");
    let rec = reconstruction_error(&j_gpu, &tr32.x, &tr32.y).expect("reconstruction");
    let c_gpu = block_on(contributions_on(&g, &m, &tr32, opts)).expect("GPU c");
    let c_cpu = contributions(&m, &tr64, opts).expect("CPU c");
    let vs_c = rel_error(&c_gpu, &c_cpu).expect("rel");
    eprintln!("{family:?}: J vs f64 {vs:.2e}, reconstruction {rec:.2e}, contributions {vs_c:.2e}");
    assert!(vs <= VS_F64, "{family:?}: GPU J vs f64 {vs:.3e}");
    assert!(
        rec <= RECONSTRUCTION,
        "{family:?}: reconstruction {rec:.3e}"
    );
    assert!(
        vs_c <= VS_F64,
        "{family:?}: contributions vs f64 {vs_c:.3e}"
    );
}

#[test]
fn tiny_qwen3_full_jacobian() {
    full_jacobian_matches_f64(Family::Qwen3);
}

#[test]
fn tiny_gemma3_full_jacobian() {
    full_jacobian_matches_f64(Family::Gemma3);
}

#[test]
fn tiny_llama_full_jacobian() {
    full_jacobian_matches_f64(Family::Llama);
}

#[test]
fn gemma_270m_output_contributions_and_probes() {
    let g = gpu();
    let m = Model::load_path(&model_path(GEMMA)).expect("gemma loads");
    // Short (4 tokens): lavapipe runs these passes on the CPU.
    let ids = m.encode("Marin is the").expect("encode");
    let tr32 = block_on(lens_gpu::trace::trace(&g, &m, &ids)).expect("GPU trace");
    let tr64 = trace(&m, &ids, Precision::F64).expect("trace f64");
    let opts = PassOptions::default();

    // The output by forward mode through the frozen network on the GPU.
    let y = block_on(output_on(&g, &m, &tr32)).expect("GPU y");
    let vs_y = rel_error(&y, &tr64.y).expect("rel");
    let logits = unembed(&m, &y.to_dtype(DType::F64).expect("f64")).expect("logits");
    let reference = tr64.logits(&m).expect("logits f64");
    let vs_logits = max_rel(&logits, &reference);
    eprintln!("y vs f64 {vs_y:.2e}, logits {vs_logits:.2e}");
    assert!(vs_y <= VS_F64, "y vs f64 {vs_y:.3e}");
    assert!(vs_logits <= VS_F64, "logits vs f64 {vs_logits:.3e}");
    assert_eq!(argmax(&logits), argmax(&reference), "predicted token");

    let c_gpu = block_on(contributions_on(&g, &m, &tr32, opts)).expect("GPU c");
    let c_cpu = contributions(&m, &tr64, opts).expect("CPU c");
    let vs_c = rel_error(&c_gpu, &c_cpu).expect("rel");
    let sum = rel_error(
        &c_gpu.sum(0).expect("sum"),
        &tr32.y.flatten_all().expect("y"),
    )
    .expect("rel");
    eprintln!("contributions vs f64 {vs_c:.2e}, Σc vs y (f32) {sum:.2e}");
    assert!(vs_c <= VS_F64, "contributions vs f64 {vs_c:.3e}");
    assert!(sum <= RECONSTRUCTION, "Σ c_i vs y {sum:.3e}");

    // Three random probes uᵀJ_i, every position.
    let d = m.config.hidden;
    let mut rng = Rng::new(3);
    let u = Tensor::from_vec(rng.vec(3 * d, 1.0), (3, d), &Device::Cpu).expect("u");
    let (p_gpu, _) = block_on(vjp_tap_on(
        &g,
        &m,
        &tr32,
        Tap::output(m.config.layers),
        &u,
        opts,
    ))
    .expect("GPU probes");
    let (p_cpu, _) = vjp(&m, &tr64, &u.to_dtype(DType::F64).expect("f64"), opts).expect("CPU");
    let vs_p = rel_error(&p_gpu, &p_cpu).expect("rel");
    eprintln!("probes vs f64 {vs_p:.2e}");
    assert!(vs_p <= VS_F64, "probe products vs f64 {vs_p:.3e}");
}
