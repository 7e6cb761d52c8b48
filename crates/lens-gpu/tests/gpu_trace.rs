//! The frozen forward on the GPU (`lens_gpu::trace::trace`, f32) against the
//! CPU's in f64: every recorded coefficient (norm scales, attention
//! probabilities with causal and sliding-window masks, gate activations)
//! and the residual stream of tiny random Qwen 3, Gemma 3 and Llama models,
//! and on the real GGUF models (Gemma 3 270M: Q4_K/Q5_0/Q6_K/Q8_0 blocks
//! decoded on the GPU; SmolLM2: Q4_1, llama q/k order) the next-token
//! logits and the predicted token. The tiny models run twice: with the
//! optional features the adapter has (subgroup reductions) and with the
//! kernels that need none. Bound: 1e-4 relative (f32 against f64).

use candle_core::Tensor;
use lens_engine::forward::Precision;
use lens_engine::jacobian::rel_error;
use lens_engine::trace::{trace, Trace};
use lens_engine::Model;
use lens_gpu::{block_on, Gpu, GpuOptions};
use lens_testkit::gpu::{gpu, gpu_with};
use lens_testkit::real_models::{model_path, GEMMA, SMOLLM};
use lens_testkit::{prompt, tiny_hf_dir, Family, Spec};
use serde_json::json;

const VS_F64: f64 = 1e-4;

fn tiny(family: Family) -> Model {
    let spec = Spec::new(family);
    let dir = tiny_hf_dir(&format!("gpu-trace-{family:?}"), &spec, json!({}));
    Model::load_path(&dir).expect("tiny model loads")
}

fn rel(a: &Tensor, b: &Tensor, what: &str) -> f64 {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    rel_error(a, b).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The worst relative error over every record of every block.
fn records_match(gpu: &Trace, cpu: &Trace) -> f64 {
    assert_eq!(gpu.precision, Precision::F32);
    assert_eq!(gpu.layers.len(), cpu.layers.len());
    let mut worst = rel(&gpu.x, &cpu.x, "x").max(rel(&gpu.y, &cpu.y, "y"));
    worst = worst.max(rel(&gpu.r_final, &cpu.r_final, "r_final"));
    for (l, (g, c)) in gpu.layers.iter().zip(&cpu.layers).enumerate() {
        let pairs = [
            ("h_in", &g.h_in, &c.h_in),
            ("r_attn", &g.r_attn, &c.r_attn),
            ("p", &g.p, &c.p),
            ("attn_out", &g.attn_out, &c.attn_out),
            ("h_mid", &g.h_mid, &c.h_mid),
            ("r_ffn", &g.r_ffn, &c.r_ffn),
            ("g", &g.g, &c.g),
            ("mlp_out", &g.mlp_out, &c.mlp_out),
            ("h_out", &g.h_out, &c.h_out),
        ];
        for (what, a, b) in pairs {
            let e = rel(a, b, &format!("layer {l} {what}"));
            assert!(e <= VS_F64, "layer {l} {what}: GPU vs f64 {e:.3e}");
            worst = worst.max(e);
        }
        for (what, a, b) in [
            ("r_post_attn", &g.r_post_attn, &c.r_post_attn),
            ("r_post_ffn", &g.r_post_ffn, &c.r_post_ffn),
        ] {
            match (a, b) {
                (Some(a), Some(b)) => worst = worst.max(rel(a, b, what)),
                (None, None) => {}
                _ => panic!("layer {l} {what}: present on one side only"),
            }
        }
    }
    worst
}

fn tiny_trace_matches_f64(family: Family) {
    // With the optional features the adapter has (subgroup reductions), and
    // with the kernels that need none.
    for options in [GpuOptions::default(), GpuOptions::PLAIN] {
        tiny_trace_on(&gpu_with(options), family);
    }
}

fn tiny_trace_on(g: &Gpu, family: Family) {
    let m = tiny(family);
    // 9 tokens: longer than Gemma's sliding window of 4.
    let ids = m
        .encode(&prompt(9, 11, Spec::new(family).vocab))
        .expect("encode");
    let on_gpu = block_on(lens_gpu::trace::trace(g, &m, &ids)).expect("GPU trace");
    let cpu = trace(&m, &ids, Precision::F64).expect("CPU trace");
    let worst = records_match(&on_gpu, &cpu);
    let subgroups = g.adapter().subgroups;
    // The masks are right, not just close: masked probabilities are zero.
    let p = on_gpu.layers[0].p.to_vec3::<f32>().expect("p");
    let window = m.config.sliding[0];
    for head in &p {
        for (i, row) in head.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let hidden = j > i || window.is_some_and(|w| i - j >= w);
                assert!(!hidden || v == 0.0, "P[{i},{j}] = {v} is masked");
            }
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "row {i} sums to {sum}");
        }
    }
    eprintln!(
        "{family:?}: GPU trace vs f64 {worst:.2e} (window {window:?}, subgroups {subgroups})"
    );
    assert!(worst <= VS_F64, "{family:?}: {worst:.3e}");
}

#[test]
fn tiny_qwen3_trace() {
    tiny_trace_matches_f64(Family::Qwen3);
}

#[test]
fn tiny_gemma3_trace_with_sliding_window() {
    tiny_trace_matches_f64(Family::Gemma3);
}

#[test]
fn tiny_llama_trace() {
    tiny_trace_matches_f64(Family::Llama);
}

fn logits_match(file: &str, text: &str) {
    let g = gpu();
    let m = Model::load_path(&model_path(file)).expect("model loads");
    let ids = m.encode(text).expect("encode");
    let on_gpu = block_on(lens_gpu::trace::trace(&g, &m, &ids)).expect("GPU trace");
    let cpu = trace(&m, &ids, Precision::F64).expect("CPU trace");
    let a = on_gpu.logits(&m).expect("logits");
    let b = cpu.logits(&m).expect("logits");
    let scale = b.iter().fold(0.0f64, |s, x| s.max(x.abs()));
    let err = a
        .iter()
        .zip(&b)
        .fold(0.0f64, |s, (x, y)| s.max((x - y).abs()))
        / scale;
    let argmax = |v: &[f64]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j]));
    eprintln!(
        "{file}: {} tokens, GPU logits vs f64 {err:.2e}, predicted {:?}",
        ids.len(),
        argmax(&a).map(|i| m.tokenizer.token_str(i as u32))
    );
    assert!(err <= VS_F64, "{file}: logits vs f64 {err:.3e}");
    assert_eq!(argmax(&a), argmax(&b), "{file}: predicted token");
}

#[test]
fn gemma_270m_logits_from_the_gpu_trace() {
    logits_match(GEMMA, "The bridge out of Marin is the");
}

#[test]
fn smollm2_logits_from_the_gpu_trace() {
    logits_match(SMOLLM, "The capital of France is");
}
