//! `linear-lens predict` end to end: the JSON a user gets, and the one-line
//! `error:` a user gets for bad input (never a panic or a backtrace).

mod common;
use common::{assert_clean_error, run};

#[test]
fn predict_json_on_gemma() {
    let out = run(&[
        "predict",
        "--model",
        "gemma-3-270m",
        "--prompt",
        "The capital of France is",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["model"], "gemma-3-270m");
    assert_eq!(v["precision"], "f32");
    // Token ids from transformers' tokenizer (crates/lens-engine/tests/fixtures/golden_tokens.json).
    assert_eq!(
        v["token_ids"],
        serde_json::json!([2, 818, 5279, 529, 7001, 563])
    );
    assert_eq!(v["tokens"][4], " France");
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    // transformers' argmax for this prompt (crates/lens-engine/tests/fixtures/golden_logits).
    assert_eq!(top[0]["id"], 506);
    let probs: Vec<f64> = top.iter().map(|t| t["prob"].as_f64().unwrap()).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]) && probs[0] < 1.0 && probs[4] > 0.0);
    assert!(top.iter().any(|t| t["token"] == " Paris"));
}

#[test]
fn predict_f64_top_k_on_smollm() {
    let out = run(&[
        "predict",
        "--model",
        "smollm2-135m",
        "--prompt",
        "The capital of France is",
        "--top",
        "3",
        "--precision",
        "f64",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["precision"], "f64");
    assert_eq!(v["top"].as_array().unwrap().len(), 3);
    assert_eq!(v["top"][0]["token"], " Paris");
}

#[test]
fn missing_model_file_is_a_clean_error() {
    let out = run(&[
        "predict",
        "--model",
        "/nonexistent/model.gguf",
        "--prompt",
        "hi",
    ]);
    assert_clean_error(&out, "/nonexistent/model.gguf");
}

#[test]
fn not_a_gguf_file_is_a_clean_error() {
    let p = std::env::temp_dir().join(format!("lens-cli-not-gguf-{}.gguf", std::process::id()));
    std::fs::write(&p, b"this is not a model file at all").unwrap();
    let out = run(&["predict", "--model", p.to_str().unwrap(), "--prompt", "hi"]);
    std::fs::remove_file(&p).ok();
    assert_clean_error(&out, "GGUF");
}

#[test]
fn empty_prompt_is_a_clean_error() {
    let out = run(&["predict", "--model", "smollm2-135m", "--prompt", ""]);
    assert_clean_error(&out, "empty");
}

#[test]
fn bad_arguments_are_a_clean_error() {
    let out = run(&[
        "predict",
        "--model",
        "smollm2-135m",
        "--prompt",
        "hi",
        "--precision",
        "f16",
    ]);
    assert_clean_error(&out, "f16");
    let out = run(&["predict", "--prompt", "hi"]);
    assert_clean_error(&out, "--model");
}
