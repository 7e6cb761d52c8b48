//! The detached Jacobian reconstructs the output exactly, on the real models:
//! `‖Σ_i J_i x_i − y‖ / ‖y‖ ≤ 1e-13` in f64 (≤ 1e-5 in f32), the same for the
//! forward-mode contributions `c_i = J_i x_i` on every prompt, and the probe
//! products agree with the full `J`.

use candle_core::{DType, Device, Tensor};
use lens_engine::forward::Precision;
use lens_engine::jacobian::{
    contributions, detached_jacobian, jvp, reconstruction_error, rel_error, vjp, PassOptions,
};
use lens_engine::trace::trace;
use lens_engine::Model;
use lens_testkit::real_models::{model_path, GEMMA, SMOLLM};

const PROMPTS: &[&str] = &[
    "Hi",
    "The capital of France is",
    "The bridge out of Marin is the",
    "def add(a, b):\n    return",
    "1, 2, 3, 5, 8,",
    "In the beginning of the twentieth century, the small coastal town had grown",
];

/// How many of [`PROMPTS`] also get the full `J` (the transpose pass, `d`
/// rows): the shortest, which prove the same property at a fraction of the
/// cost. Every prompt gets the forward-mode reconstruction `Σ_i c_i = y`.
const FULL_J: usize = 2;

fn check(file: &str, precision: Precision, bound: f64, prompts: &[&str], full_j: usize) {
    let model = Model::load_path(&model_path(file)).unwrap();
    for (k, prompt) in prompts.iter().enumerate() {
        let ids = model.encode(prompt).unwrap();
        let tr = trace(&model, &ids, precision).unwrap();
        let n = tr.x.dims2().unwrap().0;
        let c = contributions(&model, &tr, PassOptions::default()).unwrap();
        let err_c = rel_error(&c.sum(0).unwrap(), &tr.y.flatten_all().unwrap()).unwrap();
        println!(
            "{file} {} {prompt:?} n={n}: contributions {err_c:.2e}",
            precision.name()
        );
        assert!(err_c <= bound, "{prompt:?}: contributions {err_c:.3e}");
        if k >= full_j {
            continue;
        }
        let t0 = std::time::Instant::now();
        let (j, _) = detached_jacobian(&model, &tr, PassOptions::default()).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let err = reconstruction_error(&j, &tr.x, &tr.y).unwrap();
        // c_i from forward mode equals J_i x_i from the transpose pass.
        let (n, d) = tr.x.dims2().unwrap();
        let jx = j
            .matmul(&tr.x.reshape((n, d, 1)).unwrap())
            .unwrap()
            .squeeze(2)
            .unwrap();
        let err_cj = rel_error(&c, &jx).unwrap();
        println!("  J {secs:.2}s, reconstruction {err:.2e}, c vs Jx {err_cj:.2e}");
        assert!(err <= bound, "{prompt:?}: reconstruction {err:.3e}");
        assert!(err_cj <= bound * 10.0, "{prompt:?}: c vs Jx {err_cj:.3e}");
    }
}

#[test]
fn gemma_f64_reconstruction_is_exact() {
    check(GEMMA, Precision::F64, 1e-13, PROMPTS, FULL_J);
}

/// The long prompt is Gemma's alone (its sliding-window layers are where
/// length matters); SmolLM2 takes the short ones.
#[test]
fn smollm_f64_reconstruction_is_exact() {
    check(
        SMOLLM,
        Precision::F64,
        1e-13,
        &PROMPTS[..PROMPTS.len() - 1],
        FULL_J,
    );
}

#[test]
fn f32_reconstruction_within_1e5() {
    check(GEMMA, Precision::F32, 1e-5, &PROMPTS[..3], FULL_J);
    check(SMOLLM, Precision::F32, 1e-5, &PROMPTS[..3], FULL_J);
}

/// `J·v` (forward mode) and `uᵀJ` (transpose pass with few rows) agree with
/// the full `J` to ≤ 1e-13 in f64.
#[test]
fn probe_products_match_full_jacobian() {
    let model = Model::load_path(&model_path(SMOLLM)).unwrap();
    let ids = model.encode("The bridge out of Marin is the").unwrap();
    let tr = trace(&model, &ids, Precision::F64).unwrap();
    let (j, _) = detached_jacobian(&model, &tr, PassOptions::default()).unwrap();
    let (n, d) = tr.x.dims2().unwrap();
    let v = Tensor::randn(0f64, 1.0, (3, n, d), &Device::Cpu).unwrap();
    let jv = jvp(&model, &tr, &v).unwrap(); // [3, d]
                                            // Σ_i J_i v_i from the full J
    let full = j
        .unsqueeze(0)
        .unwrap()
        .broadcast_matmul(&v.unsqueeze(3).unwrap())
        .unwrap()
        .squeeze(3)
        .unwrap()
        .sum(1)
        .unwrap();
    let e_jv = rel_error(&jv, &full).unwrap();
    let u = Tensor::randn(0f64, 1.0, (4, d), &Device::Cpu).unwrap();
    let (ut_j, _) = vjp(&model, &tr, &u, PassOptions::default()).unwrap(); // [n, 4, d]
    let full_t = u.unsqueeze(0).unwrap().broadcast_matmul(&j).unwrap(); // [n, 4, d]
    let e_vjp = rel_error(&ut_j, &full_t).unwrap();
    println!("probe J·v {e_jv:.2e}, uᵀJ {e_vjp:.2e}");
    assert!(e_jv <= 1e-13 && e_vjp <= 1e-13);
    assert_eq!(jv.dtype(), DType::F64);
}

/// Every tap (layer / attn / mlp; cumulative and layerwise) on the first
/// block and the middle one reconstructs its own output: `‖Σ_i J_i in_i − out‖/‖out‖ ≤ 1e-13` in f64.
#[test]
fn taps_reconstruct_exactly() {
    use lens_engine::jacobian::{tap_jacobian, tap_output, Tap, TapKind};
    for file in [GEMMA, SMOLLM] {
        let model = Model::load_path(&model_path(file)).unwrap();
        // Short prompt: 12 tap Jacobians per model, each costs ∝ n.
        let ids = model.encode("Marin is the").unwrap();
        let tr = trace(&model, &ids, Precision::F64).unwrap();
        let layers = model.config.layers;
        for layer in [0, layers / 2] {
            for kind in [TapKind::Layer, TapKind::Attn, TapKind::Mlp] {
                for cumulative in [true, false] {
                    let tap = Tap {
                        layer,
                        kind,
                        cumulative,
                    };
                    let (j, _) = tap_jacobian(&model, &tr, tap, PassOptions::default()).unwrap();
                    let (out, _) = tap_output(&model, &tr, tap).unwrap();
                    let err = reconstruction_error(&j, tap.input(&tr), &out).unwrap();
                    println!("{file} layer {layer} {kind:?} cumulative={cumulative}: {err:.2e}");
                    assert!(err <= 1e-13, "{tap:?}: {err:.3e}");
                }
            }
        }
        // The output tap is the model's own output (its J is the model's
        // by construction: `detached_jacobian` is the output tap's).
        let (out, _) = tap_output(&model, &tr, Tap::output(layers)).unwrap();
        let err = rel_error(&out.flatten_all().unwrap(), &tr.y.flatten_all().unwrap()).unwrap();
        assert!(err <= 1e-15, "output tap vs y: {err:.3e}");
    }
}
