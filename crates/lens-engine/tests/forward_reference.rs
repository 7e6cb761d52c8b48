//! Our forward pass on the two real GGUF models against independent
//! implementations fed the same weights:
//! - Python `transformers` + torch (f32) loading the same GGUF files: golden
//!   logits made by `tools/golden_logits.py`, committed under
//!   `tests/fixtures/golden_logits/`. This is the reference for Gemma 3:
//!   candle-transformers' quantized Gemma 3 uses SiLU in its MLP where Gemma 3
//!   uses GELU-tanh, so it cannot serve.
//! - candle-transformers' quantized Llama (SmolLM2), run in the test with
//!   every matmul dequantized to f32 (`CANDLE_DEQUANTIZE_ALL`, so the
//!   reference is not blurred by Q8 activation quantization). It differs from
//!   ours where it matters: interleaved RoPE on llama.cpp's permuted q/k rows
//!   (we un-permute and use rotate-half), its own norms, masks, GQA repeat.

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use lens_engine::forward::{forward, Precision};
use lens_engine::Model;
use lens_testkit::argmax;
use lens_testkit::golden::golden_logits;
use lens_testkit::max_rel;
use lens_testkit::real_models::{model_path, GEMMA, SMOLLM};

const PROMPTS: &[&str] = &[
    "The capital of France is",
    "The bridge out of Marin is the",
    "def fibonacci(n):\n    if n < 2:\n        return",
    "Once upon a time, in a small village nestled between two mountains, there lived an old clockmaker who",
    "1, 2, 3, 5, 8, 13,",
];

/// Our f32 and f64 logits against the transformers golden file.
fn check_against_transformers(model_id: &str, file: &str) {
    let model = Model::load_path(&model_path(file)).unwrap();
    let (meta, logits) = golden_logits(model_id);
    println!("reference: {}", meta.reference);
    for (entry, theirs) in meta.entries.iter().zip(&logits) {
        let ids = model.encode(&entry.prompt).unwrap();
        assert_eq!(ids, entry.token_ids, "{:?}: token ids differ", entry.prompt);
        let ours32 = forward(&model, &ids, Precision::F32).unwrap();
        let ours64 = forward(&model, &ids, Precision::F64).unwrap();
        let e32 = max_rel(&ours32.logits, theirs);
        let e64 = max_rel(&ours64.logits, theirs);
        let e_prec = max_rel(&ours32.logits, &ours64.logits);
        println!(
            "{model_id} {:?}: {} tokens, f32 vs transformers {e32:.2e}, f64 vs transformers {e64:.2e}, f32 vs f64 {e_prec:.2e}",
            entry.prompt,
            ids.len()
        );
        assert!(
            e32 <= 1e-4,
            "{:?}: f32 logits differ from transformers by {e32:.3e}",
            entry.prompt
        );
        assert_eq!(
            argmax(&ours32.logits),
            entry.argmax,
            "{:?}: argmax differs",
            entry.prompt
        );
        assert_eq!(
            argmax(&ours64.logits),
            entry.argmax,
            "{:?}: f64 argmax differs",
            entry.prompt
        );
        assert!(
            e_prec <= 1e-5,
            "{:?}: f32 and f64 differ by {e_prec:.3e}",
            entry.prompt
        );
    }
}

#[test]
fn gemma3_270m_matches_transformers() {
    check_against_transformers("gemma-3-270m", GEMMA);
}

#[test]
fn smollm2_135m_matches_transformers() {
    check_against_transformers("smollm2-135m", SMOLLM);
}

fn candle_llama(file: &str) -> candle_transformers::models::quantized_llama::ModelWeights {
    // Read per thread when the first QMatMul is built: set before loading.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let mut f = std::fs::File::open(model_path(file)).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    candle_transformers::models::quantized_llama::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu)
        .unwrap()
}

#[test]
fn smollm2_135m_matches_candle_transformers() {
    let model = Model::load_path(&model_path(SMOLLM)).unwrap();
    let mut reference = candle_llama(SMOLLM);
    for prompt in PROMPTS {
        let ids = model.encode(prompt).unwrap();
        let ours32 = forward(&model, &ids, Precision::F32).unwrap();
        let ours64 = forward(&model, &ids, Precision::F64).unwrap();
        let x = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let theirs: Vec<f64> = reference
            .forward(&x, 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        let e_ref = max_rel(&ours32.logits, &theirs);
        let e_prec = max_rel(&ours32.logits, &ours64.logits);
        println!(
            "smollm2 {prompt:?}: {} tokens, f32 vs candle {e_ref:.2e}, f32 vs f64 {e_prec:.2e}",
            ids.len()
        );
        assert!(
            e_ref <= 1e-4,
            "{prompt:?}: f32 logits differ from candle by {e_ref:.3e}"
        );
        assert_eq!(
            argmax(&ours32.logits),
            argmax(&theirs),
            "{prompt:?}: argmax differs"
        );
        assert!(
            e_prec <= 1e-5,
            "{prompt:?}: f32 and f64 differ by {e_prec:.3e}"
        );
    }
}
