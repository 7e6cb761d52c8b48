//! The one set of helpers the crates' integration tests share (each crate's
//! tests live beside it, in `crates/*/tests`): a fixed-seed RNG, tiny
//! random Hugging Face models (config.json + tokenizer.json +
//! model.safetensors) written to a temp dir, tiny GGUF files, the real
//! models by their catalog id, values shared by one test run's processes,
//! the relative errors and the checks on error messages. A dev-dependency
//! only: nothing ships with it.

pub mod gguf;
pub mod golden;
pub mod gpu;
pub mod per_run;
pub mod real_models;
pub mod worker;

use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// splitmix64: small, fixed-seed, good enough for random weights.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        2.0 * u - 1.0
    }

    /// `n` values uniform in `[-scale, scale)`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * self.uniform()).collect()
    }

    /// A random f32 tensor of `shape`, uniform in `[-scale, scale)`.
    pub fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(self.vec(n, scale), shape, &Device::Cpu).expect("tensor")
    }

    /// A random f32 tensor of `shape`, uniform in `[center - scale, center + scale)`.
    pub fn tensor_around(&mut self, shape: &[usize], center: f32, scale: f32) -> Tensor {
        let n = shape.iter().product();
        let v = self.vec(n, scale).into_iter().map(|x| center + x).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
    }
}

/// A fresh, empty directory under the system temp dir (unique per call).
pub fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let k = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "linear-lens-test-{}-{k}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// The architecture family of a tiny test model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Qwen3,
    Gemma3,
    Llama,
}

/// Shape of a tiny random model.
#[derive(Debug, Clone)]
pub struct Spec {
    pub family: Family,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub tie: bool,
    pub seed: u64,
}

impl Spec {
    pub fn new(family: Family) -> Self {
        Self {
            family,
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            ffn: 128,
            vocab: 100,
            tie: true,
            seed: 1,
        }
    }
}

/// Random weights under their Hugging Face names. Norm weights are
/// non-trivial: Gemma's stored `w` (applied as `1 + w`) in `[-0.5, 0.5]`,
/// the others' `w` in `[0.5, 1.5]`.
pub fn random_hf_tensors(s: &Spec) -> HashMap<String, Tensor> {
    let mut rng = Rng::new(s.seed);
    let (d, q, kv) = (s.hidden, s.heads * s.head_dim, s.kv_heads * s.head_dim);
    let gemma = s.family == Family::Gemma3;
    let norm = |rng: &mut Rng, n: usize| {
        if gemma {
            rng.tensor(&[n], 0.5)
        } else {
            rng.tensor_around(&[n], 1.0, 0.5)
        }
    };
    // uniform(-a, a) with a = sqrt(3 / fan_in): unit-variance outputs.
    let mat = |rng: &mut Rng, rows: usize, cols: usize| {
        rng.tensor(&[rows, cols], (3.0 / cols as f32).sqrt())
    };
    let mut t = HashMap::new();
    t.insert(
        "model.embed_tokens.weight".to_string(),
        rng.tensor(&[s.vocab, d], 1.0),
    );
    if !s.tie {
        t.insert("lm_head.weight".to_string(), mat(&mut rng, s.vocab, d));
    }
    t.insert("model.norm.weight".to_string(), norm(&mut rng, d));
    for l in 0..s.layers {
        let p = |n: &str| format!("model.layers.{l}.{n}.weight");
        t.insert(p("input_layernorm"), norm(&mut rng, d));
        t.insert(p("post_attention_layernorm"), norm(&mut rng, d));
        if gemma {
            t.insert(p("pre_feedforward_layernorm"), norm(&mut rng, d));
            t.insert(p("post_feedforward_layernorm"), norm(&mut rng, d));
        }
        t.insert(p("self_attn.q_proj"), mat(&mut rng, q, d));
        t.insert(p("self_attn.k_proj"), mat(&mut rng, kv, d));
        t.insert(p("self_attn.v_proj"), mat(&mut rng, kv, d));
        t.insert(p("self_attn.o_proj"), mat(&mut rng, d, q));
        if s.family != Family::Llama {
            t.insert(p("self_attn.q_norm"), norm(&mut rng, s.head_dim));
            t.insert(p("self_attn.k_norm"), norm(&mut rng, s.head_dim));
        }
        t.insert(p("mlp.gate_proj"), mat(&mut rng, s.ffn, d));
        t.insert(p("mlp.up_proj"), mat(&mut rng, s.ffn, d));
        t.insert(p("mlp.down_proj"), mat(&mut rng, d, s.ffn));
    }
    t
}

/// A `config.json` for `s` with the fields both our engine and
/// candle-transformers read; `extra` is merged on top.
pub fn hf_config(s: &Spec, extra: Value) -> Value {
    let mut c = json!({
        "hidden_size": s.hidden,
        "intermediate_size": s.ffn,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "vocab_size": s.vocab,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 64,
        "tie_word_embeddings": s.tie,
        "attention_bias": false,
    });
    let family = match s.family {
        Family::Qwen3 => json!({
            "model_type": "qwen3",
            "architectures": ["Qwen3ForCausalLM"],
            "head_dim": s.head_dim,
            "hidden_act": "silu",
            "rope_theta": 1_000_000.0,
            "use_sliding_window": false,
            "sliding_window": null,
            "max_window_layers": s.layers,
        }),
        Family::Gemma3 => json!({
            "model_type": "gemma3_text",
            "architectures": ["Gemma3ForCausalLM"],
            "head_dim": s.head_dim,
            "hidden_activation": "gelu_pytorch_tanh",
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
            "query_pre_attn_scalar": s.head_dim,
            "sliding_window": 4,
            "sliding_window_pattern": 6,
            "final_logit_softcapping": null,
            "attn_logit_softcapping": null,
        }),
        Family::Llama => json!({
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_act": "silu",
            "rope_theta": 10_000.0,
        }),
    };
    merge(&mut c, family);
    merge(&mut c, extra);
    c
}

/// Shallow merge of `extra`'s keys into `base` (both objects).
pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

/// Vocabulary of the word-level test tokenizer: `<unk>`, `<bos>`, `<eos>`,
/// then `w3`, `w4`, … (token `wN` has id `N`).
pub fn word_vocab(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i {
            0 => "<unk>".to_string(),
            1 => "<bos>".to_string(),
            2 => "<eos>".to_string(),
            i => format!("w{i}"),
        })
        .collect()
}

/// A word-level `tokenizer.json` over `vocab` (whitespace pre-tokenizer).
pub fn word_level_tokenizer_json(vocab: &[String]) -> String {
    let map: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = vocab
        .iter()
        .enumerate()
        .filter(|(_, t)| t.starts_with('<'))
        .map(|(i, t)| {
            json!({
                "id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            })
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": { "type": "Whitespace" },
        "post_processor": null,
        "decoder": null,
        "model": { "type": "WordLevel", "vocab": map, "unk_token": "<unk>" }
    })
    .to_string()
}

/// A text of the word tokens `ids` (`"w5 w17 …"`).
pub fn words(ids: &[u32]) -> String {
    ids.iter()
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A prompt of `n` random word tokens (ids 3..vocab).
pub fn prompt(seed: u64, n: usize, vocab: usize) -> String {
    let mut rng = Rng::new(seed);
    let ids: Vec<u32> = (0..n)
        .map(|_| 3 + (rng.next_u64() % (vocab as u64 - 3)) as u32)
        .collect();
    words(&ids)
}

/// Writes a Hugging Face model directory: `config.json`, `tokenizer.json`,
/// optional `tokenizer_config.json`, `model.safetensors` (f32).
pub fn write_hf_dir(
    dir: &Path,
    config: &Value,
    tensors: &HashMap<String, Tensor>,
    tokenizer_json: &str,
    tokenizer_config: Option<&Value>,
) {
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json).expect("write tokenizer");
    if let Some(tc) = tokenizer_config {
        std::fs::write(dir.join("tokenizer_config.json"), tc.to_string())
            .expect("write tokenizer config");
    }
    candle_core::safetensors::save(tensors, dir.join("model.safetensors")).expect("save");
}

/// A tiny random model of `spec` (its config with `extra` merged on top)
/// written as Hugging Face files with a word-level tokenizer to a fresh
/// temp dir named for `name`: the dir.
pub fn tiny_hf_dir(name: &str, spec: &Spec, extra: Value) -> PathBuf {
    tiny_hf_dir_with(name, spec, extra, &random_hf_tensors(spec))
}

/// [`tiny_hf_dir`] with the caller's `tensors`.
pub fn tiny_hf_dir_with(
    name: &str,
    spec: &Spec,
    extra: Value,
    tensors: &HashMap<String, Tensor>,
) -> PathBuf {
    let dir = temp_dir(name);
    let tok = word_level_tokenizer_json(&word_vocab(spec.vocab));
    write_hf_dir(&dir, &hf_config(spec, extra), tensors, &tok, None);
    dir
}

/// The bytes of a safetensors file holding `tensors`.
pub fn safetensors_bytes(tensors: &HashMap<String, Tensor>) -> Vec<u8> {
    let dir = temp_dir("safetensors");
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(tensors, &path).expect("save");
    let bytes = std::fs::read(&path).expect("read");
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// `max |a - b| / max |b|` (the scale floored at 1e-30, so that an all-zero
/// `b` is matched only by zeros). The one elementwise relative error of the
/// tests; `lens_engine::jacobian::rel_error` is the 2-norm one.
pub fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max).max(1e-30);
    diff / scale
}

/// [`max_rel`] of two tensors' values (any shape, any float dtype).
pub fn max_rel_t(a: &Tensor, b: &Tensor) -> f64 {
    let v = |t: &Tensor| -> Vec<f64> {
        t.flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F64))
            .and_then(|t| t.to_vec1::<f64>())
            .expect("tensor values")
    };
    max_rel(&v(a), &v(b))
}

/// `|a - b| <= rel · |b|` (the scale floored at 1e-300).
pub fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300)
}

/// The index of the largest value (by `total_cmp`; the last of equals).
pub fn argmax(v: &[f64]) -> usize {
    (0..v.len())
        .max_by(|&i, &j| v[i].total_cmp(&v[j]))
        .unwrap_or_default()
}

/// An error message the user can read: one non-empty line of sane length.
pub fn assert_one_line(msg: &str) {
    assert!(!msg.trim().is_empty(), "empty error message");
    assert!(!msg.contains('\n'), "error message spans lines: {msg:?}");
    assert!(msg.len() < 400, "error message too long: {msg:?}");
}
