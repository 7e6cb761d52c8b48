//! Numbers that go wrong are named, not drawn: weights that pass the load
//! check but overflow f32 on a prompt give one line naming the layer and the
//! quantity (and that f64 would hold it), on the CPU and on the GPU; the
//! same model in f64 runs and agrees with its own forward.

use lens_engine::forward::{forward, Precision};
use lens_engine::trace::trace;
use lens_engine::{EngineError, Model};
use lens_testkit::gpu::gpu;
use lens_testkit::{assert_one_line, random_hf_tensors, tiny_hf_dir_with, Family, Spec};
use serde_json::json;

/// A tiny Llama whose first block's MLP up- and down-projections are scaled
/// by `up` and `down`: its output, and the residual stream after it, grow by
/// `up · down` (each weight stays within f32's range).
fn loud_model(tag: &str, up: f64, down: f64) -> Model {
    let spec = Spec::new(Family::Llama);
    let mut tensors = random_hf_tensors(&spec);
    for (part, scale) in [("up_proj", up), ("down_proj", down)] {
        let name = format!("model.layers.0.mlp.{part}.weight");
        let loud = (tensors[&name].clone() * scale).expect("scale");
        tensors.insert(name, loud);
    }
    let dir = tiny_hf_dir_with(&format!("non-finite-{tag}"), &spec, json!({}), &tensors);
    let model = Model::load_path(&dir).expect("finite weights load");
    let _ = std::fs::remove_dir_all(&dir);
    model
}

const PROMPT: &[u32] = &[5, 17, 42, 8, 3];

/// (up scale, down scale, the layer and the quantity named in f32):
/// 1e25: the block's output is finite in f32, but the next block's norm
/// squares it past f32's range (its scale would be 0, silently);
/// 1e40: the MLP output itself is past f32's range (about 3.4e38).
const CASES: [(f64, f64, usize, &str); 2] = [
    (1.0, 1e25, 2, "input of the attention norm"),
    (1e20, 1e20, 1, "MLP output"),
];

fn expect_named(e: EngineError, layer: usize, quantity: &str) {
    let msg = e.to_string();
    eprintln!("{msg}");
    assert_one_line(&msg);
    match e {
        EngineError::NonFiniteActivation {
            layer: l,
            quantity: q,
            ..
        } => {
            assert_eq!((l, q), (layer, quantity), "{msg}");
            assert!(msg.contains("run in f64"), "{msg}");
        }
        other => panic!("expected a named non-finite activation, got {other}"),
    }
}

#[test]
fn an_f32_overflow_is_named_and_f64_runs() {
    for (up, down, layer, quantity) in CASES {
        let model = loud_model(&format!("{up:e}-{down:e}"), up, down);
        let e = trace(&model, PROMPT, Precision::F32).expect_err("f32 overflows");
        expect_named(e, layer, quantity);
        // The plain forward (predict) refuses the same way.
        let e = forward(&model, PROMPT, Precision::F32).expect_err("f32 overflows");
        expect_named(e, layer, quantity);
        // f64 holds these numbers: the run goes on, finite, and the trace's
        // y is the forward's.
        let t = trace(&model, PROMPT, Precision::F64).expect("f64 runs");
        let f = forward(&model, PROMPT, Precision::F64).expect("f64 runs");
        let y = t.y_vec().expect("y");
        assert!(y.iter().all(|v| v.is_finite()));
        assert!(f.logits.iter().all(|v| v.is_finite()));
        let err = lens_testkit::max_rel(&y, &f.y);
        assert!(err <= 1e-12, "trace vs forward in f64: {err:e}");
    }
}

#[test]
fn the_gpu_names_the_same_overflow() {
    let gpu = gpu();
    for (up, down, layer, quantity) in CASES {
        let model = loud_model(&format!("gpu-{up:e}-{down:e}"), up, down);
        let e = lens_gpu::block_on(lens_gpu::trace::trace(&gpu, &model, PROMPT))
            .expect_err("the GPU's f32 overflows");
        match e {
            lens_gpu::GpuError::Engine(e) => expect_named(e, layer, quantity),
            other => panic!("expected the engine's named error, got {other}"),
        }
    }
}
