//! Writes a tiny random model as Hugging Face files (`config.json`,
//! `tokenizer.json`, `model.safetensors`), for the browser tests that load a
//! model through the Hugging Face URL layout from a local server.
//!
//!   cargo run --release --example tiny_model -- qwen3|gemma3|llama DIR
//!
//! Deterministic (fixed seed); its tokenizer is word-level over `w3 w4 …`.

use lens_testkit::{
    hf_config, random_hf_tensors, word_level_tokenizer_json, word_vocab, write_hf_dir, Family, Spec,
};
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (family, dir) = match args.as_slice() {
        [f, d] => (f.as_str(), PathBuf::from(d)),
        _ => {
            eprintln!("usage: tiny_model qwen3|gemma3|llama DIR");
            std::process::exit(2);
        }
    };
    let family = match family {
        "qwen3" => Family::Qwen3,
        "gemma3" => Family::Gemma3,
        "llama" => Family::Llama,
        other => {
            eprintln!("error: unknown family `{other}`");
            std::process::exit(2);
        }
    };
    let spec = Spec::new(family);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let config = hf_config(&spec, serde_json::json!({}));
    let tok = word_level_tokenizer_json(&word_vocab(spec.vocab));
    write_hf_dir(&dir, &config, &random_hf_tensors(&spec), &tok, None);
    println!("{}", dir.display());
}
