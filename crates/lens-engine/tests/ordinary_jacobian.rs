//! The ordinary Jacobian (nothing frozen): equal to central finite
//! differences of the ordinary forward on tiny random Qwen 3, Gemma 3
//! (sliding and global layers) and Llama models; different from the detached
//! Jacobian; its probe rows equal the full Jacobian's; its forward mode
//! (one pass) equals the full Jacobian's products, so the ordinary
//! reconstruction error needs no J; and on the real models it does not
//! reconstruct `y` (the paper's point), while the detached one does.

use candle_core::{DType, Device, Tensor};
use lens_engine::forward::{forward_from_embeddings, Precision};
use lens_engine::jacobian::{detached_jacobian, reconstruction_error, rel_error, PassOptions};
use lens_engine::ordinary::{
    ordinary_jacobian, ordinary_jvp, ordinary_reconstruction_error, ordinary_vjp,
};
use lens_engine::trace::{trace, Trace};
use lens_engine::Model;
use lens_testkit::real_models::{model_path, GEMMA, SMOLLM};
use lens_testkit::{tiny_hf_dir, Family, Rng, Spec};
use serde_json::json;
use std::time::Instant;

/// Prompt length: longer than the tiny Gemma's sliding window (4).
const N: usize = 7;

/// Central-difference step (f64): truncation ~h², rounding ~1e-16/h, both
/// far below the 1e-6 bound.
const FD_STEP: f64 = 1e-5;

/// A tiny random model of `family`; Gemma 3 gets one sliding layer (window 4)
/// and one global layer, and a `query_pre_attn_scalar` that is not head_dim.
fn tiny(family: Family) -> Model {
    let spec = Spec::new(family);
    let extra = match family {
        Family::Gemma3 => json!({ "sliding_window_pattern": 2, "query_pre_attn_scalar": 24 }),
        _ => json!({}),
    };
    let dir = tiny_hf_dir(&format!("ordinary-{family:?}"), &spec, extra);
    let model = Model::load_path(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    if family == Family::Gemma3 {
        assert_eq!(model.config.sliding, vec![Some(4), None]);
    }
    model
}

fn ids(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| 3 + (rng.next_u64() % (vocab as u64 - 3)) as u32)
        .collect()
}

fn trace_of(model: &Model, precision: Precision) -> Trace {
    let ids = ids(7, N, model.config.vocab);
    trace(model, &ids, precision).unwrap()
}

fn vec_of(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `[n, d, d]`, `J[i][:, j] = (y(x + h e_ij) − y(x − h e_ij)) / 2h`.
fn finite_difference_jacobian(model: &Model, x: &Tensor) -> Tensor {
    let (n, d) = x.dims2().unwrap();
    let x0 = vec_of(x);
    let y_at = |pos: usize, shift: f64| {
        let mut xs = x0.clone();
        xs[pos] += shift;
        let xt = Tensor::from_vec(xs, (n, d), &Device::Cpu).unwrap();
        vec_of(&forward_from_embeddings(model, &xt, Precision::F64).unwrap())
    };
    let mut j = vec![0f64; n * d * d];
    for i in 0..n {
        for c in 0..d {
            let plus = y_at(i * d + c, FD_STEP);
            let minus = y_at(i * d + c, -FD_STEP);
            for r in 0..d {
                j[i * d * d + r * d + c] = (plus[r] - minus[r]) / (2.0 * FD_STEP);
            }
        }
    }
    Tensor::from_vec(j, (n, d, d), &Device::Cpu).unwrap()
}

fn check_finite_differences(family: Family) {
    let model = tiny(family);
    let tr = trace_of(&model, Precision::F64);
    // The forward from embeddings is the traced forward.
    let y = forward_from_embeddings(&model, &tr.x, Precision::F64).unwrap();
    assert!(rel_error(&y, &tr.y).unwrap() <= 1e-15);
    let j = ordinary_jacobian(&model, &tr, PassOptions::default()).unwrap();
    assert_eq!(j.dims(), &[N, model.config.hidden, model.config.hidden]);
    assert_eq!(j.dtype(), DType::F64);
    let fd = finite_difference_jacobian(&model, &tr.x);
    let err = rel_error(&j, &fd).unwrap();
    // Per position too: the earliest positions reach y only through attention.
    let worst = (0..N)
        .map(|i| rel_error(&j.get(i).unwrap(), &fd.get(i).unwrap()).unwrap())
        .fold(0f64, f64::max);
    println!(
        "{family:?}: ordinary J vs central differences (h = {FD_STEP:e}): {err:.2e} (worst position {worst:.2e})"
    );
    assert!(err <= 1e-6, "{family:?}: ordinary J vs FD {err:.3e}");
    assert!(worst <= 1e-6, "{family:?}: worst position {worst:.3e}");
}

#[test]
fn qwen3_matches_finite_differences() {
    check_finite_differences(Family::Qwen3);
}

#[test]
fn gemma3_matches_finite_differences() {
    check_finite_differences(Family::Gemma3);
}

#[test]
fn llama_matches_finite_differences() {
    check_finite_differences(Family::Llama);
}

/// Ordinary ≠ detached; probe rows = full-Jacobian rows (chunked or not);
/// f32 follows f64.
#[test]
fn differs_from_detached_and_probes_match() {
    for family in [Family::Qwen3, Family::Gemma3, Family::Llama] {
        let model = tiny(family);
        let d = model.config.hidden;
        let tr = trace_of(&model, Precision::F64);
        let j = ordinary_jacobian(&model, &tr, PassOptions::default()).unwrap();
        let (det, _) = detached_jacobian(&model, &tr, PassOptions::default()).unwrap();
        let differ = rel_error(&j, &det).unwrap();
        let rec_ord = reconstruction_error(&j, &tr.x, &tr.y).unwrap();
        let rec_det = reconstruction_error(&det, &tr.x, &tr.y).unwrap();

        // A few random cotangent rows, and the same with one row per chunk.
        let u = Rng::new(11)
            .tensor(&[3, d], 1.0)
            .to_dtype(DType::F64)
            .unwrap();
        let probe = ordinary_vjp(&model, &tr, &u, PassOptions::default()).unwrap(); // [n, 3, d]
        let full = u.unsqueeze(0).unwrap().broadcast_matmul(&j).unwrap(); // [n, 3, d]
        let e_probe = rel_error(&probe, &full).unwrap();
        let tiny_budget = PassOptions { memory_budget: 1 };
        let chunked = ordinary_vjp(&model, &tr, &u, tiny_budget).unwrap();
        let e_chunked = rel_error(&chunked, &full).unwrap();

        // A budget that keeps the composed forms but builds the MLP maps one
        // position at a time and splits the rows into chunks.
        let small = PassOptions {
            memory_budget: 500_000,
        };
        let j_small = ordinary_jacobian(&model, &tr, small).unwrap();
        let e_small = rel_error(&j_small, &j).unwrap();

        // f32 pass against the f64 one.
        let tr32 = trace_of(&model, Precision::F32);
        let j32 = ordinary_jacobian(&model, &tr32, PassOptions::default()).unwrap();
        assert_eq!(j32.dtype(), DType::F32);
        let e32 = rel_error(&j32, &j).unwrap();

        println!(
            "{family:?}: ordinary vs detached {differ:.2e}; reconstruction ordinary {rec_ord:.2e}, detached {rec_det:.2e}; probe rows {e_probe:.2e}, chunked {e_chunked:.2e}, small budget {e_small:.2e}; f32 vs f64 {e32:.2e}"
        );
        assert!(
            differ > 1e-2,
            "{family:?}: ordinary ≈ detached ({differ:.3e})"
        );
        assert!(rec_det <= 1e-13, "{family:?}: detached {rec_det:.3e}");
        assert!(
            rec_ord > 1e-3,
            "{family:?}: ordinary reconstructs ({rec_ord:.3e})"
        );
        assert!(e_probe <= 1e-13, "{family:?}: probe rows {e_probe:.3e}");
        assert!(e_chunked <= 1e-13, "{family:?}: chunked {e_chunked:.3e}");
        assert!(e_small <= 1e-13, "{family:?}: small budget {e_small:.3e}");
        assert!(e32 <= 1e-4, "{family:?}: f32 vs f64 {e32:.3e}");
    }
}

/// `Σ_i J_i v_i` of the full ordinary J, `[1, d]`.
fn j_times(j: &Tensor, v: &Tensor) -> Tensor {
    let (n, d) = v.dims2().unwrap();
    j.matmul(&v.reshape((n, d, 1)).unwrap())
        .unwrap()
        .sum(0)
        .unwrap()
        .reshape((1, d))
        .unwrap()
}

/// Forward mode through the ordinary network against the full ordinary J:
/// along a random tangent (≤ 1e-12) and along the input itself, where it
/// gives the ordinary reconstruction error in one pass (equal to the full
/// J's to 1e-9 relative), in f64 on all three families.
#[test]
fn one_forward_pass_gives_the_ordinary_error() {
    for family in [Family::Qwen3, Family::Gemma3, Family::Llama] {
        let model = tiny(family);
        let d = model.config.hidden;
        let tr = trace_of(&model, Precision::F64);
        let j = ordinary_jacobian(&model, &tr, PassOptions::default()).unwrap();
        let v = Rng::new(13)
            .tensor(&[N, d], 1.0)
            .to_dtype(DType::F64)
            .unwrap();
        let e_v = rel_error(&ordinary_jvp(&model, &tr, &v).unwrap(), &j_times(&j, &v)).unwrap();
        let one_pass = ordinary_reconstruction_error(&model, &tr).unwrap();
        let full = reconstruction_error(&j, &tr.x, &tr.y).unwrap();
        let e_err = (one_pass - full).abs() / full;
        println!(
            "{family:?}: ordinary J·v by forward mode vs full J {e_v:.2e}; error by one pass {one_pass:.6e}, by the full J {full:.6e} ({e_err:.2e})"
        );
        assert!(e_v <= 1e-12, "{family:?}: forward mode vs J·v {e_v:.3e}");
        assert!(e_err <= 1e-9, "{family:?}: one-pass error {e_err:.3e}");
    }
}

/// Real SmolLM2 (Llama architecture), f64, a 3-token prompt: the one-pass
/// ordinary error equals the full ordinary J's, and is far from exact.
#[test]
fn smollm_ordinary_error_by_one_pass() {
    let model = Model::load_path(&model_path(SMOLLM)).unwrap();
    let ids = model.encode("Marin is the").unwrap();
    let tr = trace(&model, &ids, Precision::F64).unwrap();
    let j = ordinary_jacobian(&model, &tr, PassOptions::default()).unwrap();
    let full = reconstruction_error(&j, &tr.x, &tr.y).unwrap();
    let one_pass = ordinary_reconstruction_error(&model, &tr).unwrap();
    let e_err = (one_pass - full).abs() / full;
    println!("smollm2 f64 n={}: ordinary error {one_pass:.6e} by one pass, {full:.6e} by the full J ({e_err:.2e})", ids.len());
    assert!(e_err <= 1e-9, "one-pass error {e_err:.3e}");
    assert!(
        one_pass > 1e-3,
        "the ordinary J reconstructs ({one_pass:.3e})"
    );
}

/// Real Gemma 3 270M, f64: the ordinary Jacobian does not reconstruct `y`,
/// the detached one does; the ordinary one still is the derivative (a
/// directional central difference agrees).
#[test]
fn gemma_ordinary_does_not_reconstruct() {
    let model = Model::load_path(&model_path(GEMMA)).unwrap();
    // Short (4 tokens): the ordinary J is the costlier of the two.
    let ids = model.encode("Marin is the").unwrap();
    let tr = trace(&model, &ids, Precision::F64).unwrap();
    let (n, d) = tr.x.dims2().unwrap();

    let t0 = Instant::now();
    let j = ordinary_jacobian(&model, &tr, PassOptions::default()).unwrap();
    let secs_ord = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let (det, _) = detached_jacobian(&model, &tr, PassOptions::default()).unwrap();
    let secs_det = t0.elapsed().as_secs_f64();
    let err_ord = reconstruction_error(&j, &tr.x, &tr.y).unwrap();
    let err_det = reconstruction_error(&det, &tr.x, &tr.y).unwrap();

    // J·v against (y(x + h v) − y(x − h v)) / 2h along a random direction
    // of the embeddings' scale.
    let v = Rng::new(5)
        .tensor(&[n, d], 1.0)
        .to_dtype(DType::F64)
        .unwrap();
    let v = (v
        * (tr
            .x
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap())
        .sqrt())
    .unwrap();
    let jv = j
        .matmul(&v.reshape((n, d, 1)).unwrap())
        .unwrap()
        .sum(0)
        .unwrap()
        .flatten_all()
        .unwrap();
    let h = FD_STEP;
    let y_at = |s: f64| {
        let xs = (&tr.x + (&v * s).unwrap()).unwrap();
        forward_from_embeddings(&model, &xs, Precision::F64).unwrap()
    };
    let fd = ((y_at(h) - y_at(-h)).unwrap() / (2.0 * h))
        .unwrap()
        .flatten_all()
        .unwrap();
    let err_fd = rel_error(&jv, &fd).unwrap();

    println!(
        "gemma-3-270m f64 n={n}: ordinary J {secs_ord:.2}s (detached {secs_det:.2}s); reconstruction ordinary {err_ord:.3e}, detached {err_det:.2e}; ordinary J·v vs central difference {err_fd:.2e}"
    );
    // The same error by one forward-mode pass, without the ordinary J.
    let t0 = Instant::now();
    let one_pass = ordinary_reconstruction_error(&model, &tr).unwrap();
    let secs_one = t0.elapsed().as_secs_f64();
    let e_err = (one_pass - err_ord).abs() / err_ord;
    println!(
        "one-pass ordinary error {one_pass:.6e} in {secs_one:.2}s ({e_err:.2e} from the full J's)"
    );
    assert!(e_err <= 1e-9, "one-pass ordinary error {e_err:.3e}");
    assert!(err_det <= 1e-13, "detached {err_det:.3e}");
    assert!(err_ord > 1e-3, "ordinary reconstructs ({err_ord:.3e})");
    assert!(err_fd <= 1e-6, "ordinary J·v vs FD {err_fd:.3e}");
}
