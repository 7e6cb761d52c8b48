//! Shared by the tests that need the two real GGUF models (fetched by
//! tools/fetch-models.sh into `$LINEAR_LENS_MODELS` or ~/.cache/linear-lens).
#![allow(dead_code)]

use std::path::PathBuf;

pub const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";
pub const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Path of a real model file; panics with the fix if it is missing (these
/// tests must fail, not skip, on a machine without the models).
pub fn model_path(file: &str) -> PathBuf {
    let dir = std::env::var_os("LINEAR_LENS_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache")
                .join("linear-lens")
        });
    let p = dir.join(file);
    assert!(
        p.exists(),
        "{} is missing: run tools/fetch-models.sh first",
        p.display()
    );
    p
}
