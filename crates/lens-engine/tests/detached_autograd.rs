//! The transpose pass equals an independent autograd Jacobian.
//!
//! For tiny random Qwen 3, Gemma 3 and Llama models (Hugging Face directories
//! written by `common`), this file runs its own f64 forward of each family —
//! candle-core ops on a `Var` holding the input embeddings as the first block
//! receives them, weights read straight from `model.safetensors` under their
//! HF names, conventions from the HF modeling code — with `detach()` on exactly
//! the quantities the paper freezes (Golden 2025, arXiv:2505.24293): every RMSNorm's scalar
//! `r = rsqrt(mean(x²)+eps)`, every gate activation `g = act(W_gate m)`, every
//! head's attention probabilities `P`. One `backward()` per output coordinate
//! `o` gives row `o` of every `J_i`. That `J` must agree with the engine's
//! `detached_jacobian` to ≤ 1e-12 relative (Frobenius), the independent
//! forward's `y` with the engine's `tr.y`, and `Σ_i J_i x_i` with `y`.
//!
//! As a guard against a vacuous check, the same forward without the
//! `detach()`s (the ordinary Jacobian) must differ from the engine's `J` and
//! must not reconstruct `y`.
//!
//! Nothing here calls the engine's forward code: `lens_engine` only loads the
//! model, tokenizes, traces and runs the pass under test.

use candle_core::DType;
use lens_engine::forward::Precision;
use lens_engine::jacobian::{detached_jacobian, rel_error, PassOptions};
use lens_engine::trace::trace;
use lens_engine::Model;
use lens_testkit::{prompt, Family, Spec};
use serde_json::json;
use std::path::Path;

/// Autograd vs transpose pass, and the independent `y` vs the engine's.
const TOL: f64 = 1e-12;

mod autograd_reference;

use autograd_reference::{read_cfg, reconstruction, Reference};

// ---------------------------------------------------------------------------
// Test models and the check.

/// What one model and prompt measured.
#[derive(Debug)]
struct Measured {
    /// Engine J vs autograd J (relative Frobenius).
    j: f64,
    /// Independent y vs the engine's `tr.y`.
    y: f64,
    /// Independent embeddings vs the engine's `tr.x`.
    x: f64,
    /// `Σ_i J_i x_i` (autograd J) vs `y`.
    reconstruction: f64,
    /// Ordinary (nothing frozen) autograd J vs the engine's J, and its
    /// reconstruction error: both must be far from zero.
    ordinary_vs_engine: f64,
    ordinary_reconstruction: f64,
}

fn measure(name: &str, dir: &Path, text: &str, opts: PassOptions) -> Measured {
    let model = Model::load_path(dir).unwrap_or_else(|e| panic!("{name}: load: {e}"));
    let ids = model.encode(text).unwrap();
    let tr = trace(&model, &ids, Precision::F64).unwrap();
    let (j_engine, _) = detached_jacobian(&model, &tr, opts).unwrap();
    let (n, d) = tr.x.dims2().unwrap();
    assert_eq!(j_engine.dims(), &[n, d, d]);
    assert_eq!(j_engine.dtype(), DType::F64);

    let frozen = Reference::new(dir, true);
    let x = tr.x.to_dtype(DType::F64).unwrap();
    let x_err = rel_error(&frozen.embed(&tr.ids).unwrap(), &x).unwrap();
    let (y, j_auto) = frozen.jacobian(&x).unwrap();
    let ordinary = Reference::new(dir, false);
    let (y_ord, j_ord) = ordinary.jacobian(&x).unwrap();
    let m = Measured {
        j: rel_error(&j_engine, &j_auto).unwrap(),
        y: rel_error(&y, &tr.y).unwrap(),
        x: x_err,
        reconstruction: reconstruction(&j_auto, &x, &tr.y),
        ordinary_vs_engine: rel_error(&j_ord, &j_engine).unwrap(),
        ordinary_reconstruction: reconstruction(&j_ord, &x, &tr.y),
    };
    println!(
        "{name} (n={n}, d={d}): J engine vs autograd {:.2e}, y {:.2e}, x {:.2e}, \
         Σ J_i x_i vs y {:.2e}; ordinary J: vs engine {:.2e}, reconstruction {:.2e}",
        m.j, m.y, m.x, m.reconstruction, m.ordinary_vs_engine, m.ordinary_reconstruction
    );
    assert!(m.x <= TOL, "{name}: embeddings differ: {:e}", m.x);
    assert!(m.y <= TOL, "{name}: y differs from tr.y: {:e}", m.y);
    assert!(
        m.j <= TOL,
        "{name}: engine J vs autograd J: {:e} > {TOL:e}",
        m.j
    );
    assert!(
        m.reconstruction <= TOL,
        "{name}: autograd J does not reconstruct y: {:e}",
        m.reconstruction
    );
    // The ordinary forward is the same function: same y.
    assert!(rel_error(&y_ord, &y).unwrap() <= TOL, "{name}: ordinary y");
    assert!(
        m.ordinary_vs_engine > 1e-3 && m.ordinary_reconstruction > 1e-3,
        "{name}: freezing made no difference ({m:?}): the check would be vacuous"
    );
    m
}

fn qwen3_spec() -> Spec {
    // GQA (4 query heads on 2 kv heads) and head_dim 24 ≠ 64 / 4.
    Spec {
        head_dim: 24,
        seed: 11,
        ..Spec::new(Family::Qwen3)
    }
}

fn gemma3_spec() -> Spec {
    // 7 layers: sliding 0–4 and 6, global 5 (pattern 6); one kv head for
    // four query heads, head_dim 32 ≠ 64 / 4, like Gemma 3 270M's shape.
    Spec {
        layers: 7,
        kv_heads: 1,
        head_dim: 32,
        seed: 12,
        ..Spec::new(Family::Gemma3)
    }
}

#[test]
fn qwen3_gqa_explicit_head_dim_matches_autograd() {
    let s = qwen3_spec();
    let dir = lens_testkit::tiny_hf_dir("qwen3-autograd", &s, json!({}));
    assert_ne!(s.head_dim * s.heads, s.hidden);
    measure(
        "qwen3",
        &dir,
        &prompt(21, 7, s.vocab),
        PassOptions::default(),
    );
}

#[test]
fn gemma3_sliding_and_global_matches_autograd() {
    let s = gemma3_spec();
    // query_pre_attn_scalar ≠ head_dim so that the two scales differ.
    let dir = lens_testkit::tiny_hf_dir(
        "gemma3-autograd",
        &s,
        json!({ "sliding_window": 4, "query_pre_attn_scalar": 24 }),
    );
    let cfg = read_cfg(&dir);
    assert!(cfg.window.iter().any(Option::is_some) && cfg.window.iter().any(Option::is_none));
    let n = 11; // longer than the window of 4
    measure(
        "gemma3",
        &dir,
        &prompt(22, n, s.vocab),
        PassOptions::default(),
    );
}

/// Gemma 3 with explicit `layer_types` (global in the middle), window 3 and
/// linear rope scaling of the global layers (as the 4B+ models have).
#[test]
fn gemma3_layer_types_and_linear_rope_matches_autograd() {
    let s = Spec {
        layers: 3,
        heads: 4,
        kv_heads: 2,
        seed: 13,
        ..Spec::new(Family::Gemma3)
    };
    let dir = lens_testkit::tiny_hf_dir(
        "gemma3-types-autograd",
        &s,
        json!({
            "sliding_window": 3,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            "rope_scaling": { "rope_type": "linear", "factor": 8.0 },
        }),
    );
    let cfg = read_cfg(&dir);
    assert_eq!(cfg.window, vec![Some(3), None, Some(3)]);
    measure(
        "gemma3 layer_types",
        &dir,
        &prompt(23, 9, s.vocab),
        PassOptions::default(),
    );
}

/// Llama without GQA (4 heads, 4 kv heads).
#[test]
fn llama_matches_autograd() {
    let s = Spec {
        kv_heads: 4,
        seed: 14,
        ..Spec::new(Family::Llama)
    };
    let dir = lens_testkit::tiny_hf_dir("llama-autograd", &s, json!({}));
    measure(
        "llama",
        &dir,
        &prompt(24, 8, s.vocab),
        PassOptions::default(),
    );
}

/// Llama 3.x: GQA and "llama3" rope scaling (an original context of 64 puts
/// head_dim 16's frequencies in all three bands: kept, smoothed, divided).
#[test]
fn llama3_rope_scaling_gqa_matches_autograd() {
    let s = Spec {
        kv_heads: 1,
        seed: 15,
        ..Spec::new(Family::Llama)
    };
    let dir = lens_testkit::tiny_hf_dir(
        "llama3-autograd",
        &s,
        json!({
            "rope_theta": 500_000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        }),
    );
    measure(
        "llama3 rope",
        &dir,
        &prompt(25, 8, s.vocab),
        PassOptions::default(),
    );
}

/// A 64 KiB budget forces one cotangent row per chunk and the MLP's factor
/// form instead of its composed maps: the same J to ≤ 1e-14, and still the
/// autograd J.
#[test]
fn small_memory_budget_gives_the_same_jacobian() {
    let small = PassOptions {
        memory_budget: 64 * 1024,
    };
    for (name, s, extra, n) in [
        ("qwen3", qwen3_spec(), json!({}), 7),
        ("gemma3", gemma3_spec(), json!({ "sliding_window": 4 }), 11),
    ] {
        let dir = lens_testkit::tiny_hf_dir(&format!("{name}-budget"), &s, extra);
        let model = Model::load_path(&dir).unwrap();
        let ids = model.encode(&prompt(26, n, s.vocab)).unwrap();
        let tr = trace(&model, &ids, Precision::F64).unwrap();
        let (j_default, _) = detached_jacobian(&model, &tr, PassOptions::default()).unwrap();
        let (j_small, _) = detached_jacobian(&model, &tr, small).unwrap();
        let err = rel_error(&j_small, &j_default).unwrap();
        println!("{name}: 64 KiB budget vs default {err:.2e}");
        assert!(err <= 1e-14, "{name}: budget changes J by {err:e}");
        let m = measure(
            &format!("{name} 64 KiB"),
            &dir,
            &prompt(26, n, s.vocab),
            small,
        );
        assert!(m.j <= TOL);
    }
}
