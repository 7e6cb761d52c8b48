//! `linear-lens analyze` end to end: the Report a user gets from the run
//! driver the page drives too (the other precision's error included), on
//! the CPU and on the GPU (lavapipe here), and a clean error for a backend
//! that does not exist.

use lens_testkit::{prompt, tiny_hf_dir, Family, Spec};
use serde_json::json;
mod common;
use common::{json_of as report, num, run};

#[test]
fn analyze_json_is_exact_in_both_precisions() {
    let spec = Spec::new(Family::Llama);
    let dir = tiny_hf_dir("cli-analyze-cpu", &spec, json!({}));
    let text = prompt(4, 5, spec.vocab);
    let r = report(&[
        "analyze",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        &text,
        "--json",
        "-",
    ]);
    assert_eq!(
        r["model"],
        dir.to_str().unwrap(),
        "named as the user named it"
    );
    assert_eq!(r["precision"], "f64");
    let rec = &r["reconstruction"];
    assert!(num(&rec["detached_rel_error"]) <= 1e-13, "{rec}");
    let other = num(&rec["other_precision_rel_error"]);
    assert!(
        other <= 1e-4 && other > 1e-12,
        "the f32 run's error {other}"
    );
    assert!(num(&rec["ordinary_rel_error"]) > 1e-6);
    assert!(rec["certificate"].is_null(), "no certificate on the CPU");
    let a = &r["attribution"];
    let sum: f64 = a["per_token"].as_array().unwrap().iter().map(num).sum();
    let logit = num(&a["logit"]);
    assert!(
        (sum - logit).abs() <= 1e-10 * logit.abs().max(1.0),
        "{sum} vs {logit}"
    );
}

#[test]
fn analyze_on_the_gpu_is_certified_against_f64() {
    let spec = Spec::new(Family::Qwen3);
    let dir = tiny_hf_dir("cli-analyze-gpu", &spec, json!({}));
    let text = prompt(6, 4, spec.vocab);
    let r = report(&[
        "analyze",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        &text,
        "--backend",
        "gpu",
        "--json",
        "-",
    ]);
    assert_eq!(r["precision"], "f32", "the GPU computes in f32");
    let cert = &r["reconstruction"]["certificate"];
    assert!(num(&cert["max_rel_error"]) <= 1e-4, "{cert}");
    assert!(num(&r["reconstruction"]["detached_rel_error"]) <= 1e-5);
    assert!(num(&r["gpu_work"]["dispatches"]) > 0.0, "{}", r["gpu_work"]);
}

#[test]
fn an_unknown_backend_is_a_clean_error() {
    let out = run(&[
        "analyze",
        "--model",
        "x.gguf",
        "--prompt",
        "hi",
        "--backend",
        "tpu",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with("error: ") && stderr.contains("tpu"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cpu") && stderr.contains("gpu"),
        "names the choices: {stderr}"
    );
    assert!(!stderr.contains("panicked"));
}
