//! Model hyper-parameters for the three families, read from GGUF metadata or
//! a Hugging Face `config.json`, with the Gemma 3 defaults GGUF omits.

use crate::error::{EngineError, Result};
use crate::weights::GgufFile;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Gemma3,
    Qwen3,
    Llama,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Gemma3 => "gemma3",
            Arch::Qwen3 => "qwen3",
            Arch::Llama => "llama",
        }
    }
}

/// Llama 3.x "llama3" RoPE scaling of the inverse frequencies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// The gate activation of the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GELU, tanh approximation (Gemma 3).
    GeluTanh,
    /// SiLU (Qwen 3, Llama).
    Silu,
}

/// How a family's decoder block differs from the others, as named fields
/// (the way candle-transformers' `Config` carries them): the passes read
/// these, never the architecture's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// A norm after attention and after the MLP, before each residual add.
    pub post_norms: bool,
    /// RMSNorm of each head's q and k before RoPE.
    pub qk_norm: bool,
    pub activation: Activation,
    /// Input embeddings are multiplied by `√d`.
    pub embedding_scale: bool,
    /// Norms multiply by `1 + w` (GGUF stores `1 + w`, safetensors `w`).
    pub norm_offset: bool,
    /// Sliding-window layers use their own RoPE base.
    pub local_rope: bool,
    /// GGUF stores q/k rows interleaved for RoPE (llama.cpp's conversion
    /// of llama-architecture models); they are read back as rotate-half.
    pub gguf_interleaved_qk: bool,
}

impl Recipe {
    pub fn of(arch: Arch) -> Self {
        match arch {
            Arch::Gemma3 => Recipe {
                post_norms: true,
                qk_norm: true,
                activation: Activation::GeluTanh,
                embedding_scale: true,
                norm_offset: true,
                local_rope: true,
                gguf_interleaved_qk: false,
            },
            Arch::Qwen3 => Recipe {
                post_norms: false,
                qk_norm: true,
                activation: Activation::Silu,
                embedding_scale: false,
                norm_offset: false,
                local_rope: false,
                gguf_interleaved_qk: false,
            },
            Arch::Llama => Recipe {
                post_norms: false,
                qk_norm: false,
                activation: Activation::Silu,
                embedding_scale: false,
                norm_offset: false,
                local_rope: false,
                gguf_interleaved_qk: true,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    /// What the block does differently (from `arch`).
    pub recipe: Recipe,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub norm_eps: f64,
    /// RoPE base of global (full-attention) layers.
    pub rope_theta: f64,
    /// Gemma 3: RoPE base of sliding (local) layers.
    pub rope_local_theta: f64,
    /// Gemma 3: linear position scaling of the global layers' RoPE (1 = none).
    pub rope_linear_factor: f64,
    pub llama3_scaling: Option<Llama3Scaling>,
    /// Per layer: `Some(window)` for sliding-window layers.
    pub sliding: Vec<Option<usize>>,
    /// Attention score scale (`q·k * attn_scale`).
    pub attn_scale: f64,
    pub context_length: usize,
    pub tie_embeddings: bool,
    /// Where the sizes above came from, for messages that name the field.
    #[serde(skip)]
    pub keys: ConfigKeys,
}

/// The name each size has in the model's own files (`qwen3.attention.head_count`
/// in a GGUF, `num_attention_heads` in a `config.json`), so that a message
/// about an inconsistent configuration names the field a person would fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKeys {
    pub hidden: String,
    pub layers: String,
    pub heads: String,
    pub kv_heads: String,
    pub head_dim: String,
    pub ffn: String,
    pub vocab: String,
    pub eps: String,
    pub rope: String,
    pub scale: String,
}

impl Default for ConfigKeys {
    /// A `config.json`'s names.
    fn default() -> Self {
        Self::hf(true, false)
    }
}

impl ConfigKeys {
    fn hf(head_dim_given: bool, gemma: bool) -> Self {
        let s = |x: &str| format!("`{x}`");
        ConfigKeys {
            hidden: s("hidden_size"),
            layers: s("num_hidden_layers"),
            heads: s("num_attention_heads"),
            kv_heads: s("num_key_value_heads"),
            head_dim: if head_dim_given {
                s("head_dim")
            } else {
                "`hidden_size` / `num_attention_heads`".into()
            },
            ffn: s("intermediate_size"),
            vocab: s("vocab_size"),
            eps: s("rms_norm_eps"),
            rope: s("rope_theta"),
            scale: if gemma {
                s("query_pre_attn_scalar")
            } else {
                s("head_dim")
            },
        }
    }

    fn gguf(arch: &str, head_dim_given: bool) -> Self {
        let s = |x: &str| format!("`{arch}.{x}`");
        ConfigKeys {
            hidden: s("embedding_length"),
            layers: s("block_count"),
            heads: s("attention.head_count"),
            kv_heads: s("attention.head_count_kv"),
            head_dim: if head_dim_given {
                s("attention.key_length")
            } else {
                format!("{} / {}", s("embedding_length"), s("attention.head_count"))
            },
            ffn: s("feed_forward_length"),
            vocab: "the rows of `token_embd.weight`".into(),
            eps: s("attention.layer_norm_rms_epsilon"),
            rope: s("rope.freq_base"),
            scale: s("attention.key_length"),
        }
    }
}

/// Gemma 3 facts a GGUF does not store (llama.cpp and transformers supply the same).
const GEMMA3_LOCAL_ROPE_BASE: f64 = 10_000.0;
const GEMMA3_SLIDING_PATTERN: usize = 6;

fn gemma3_sliding(layers: usize, window: usize) -> Vec<Option<usize>> {
    (0..layers)
        .map(|i| ((i + 1) % GEMMA3_SLIDING_PATTERN != 0).then_some(window))
        .collect()
}

/// Most layers a model may have; read before the per-layer tables are
/// allocated from the count (a file's count could be any number).
const MAX_LAYERS: usize = 1024;

fn layer_count(layers: usize, field: &str) -> Result<usize> {
    if layers > MAX_LAYERS {
        return Err(EngineError::Config(format!(
            "`{field}` = {layers} is more layers than any model this tool runs (at most {MAX_LAYERS})"
        )));
    }
    Ok(layers)
}

/// One line naming the first inconsistent field, before anything is
/// allocated from the sizes.
fn check(cfg: ModelConfig) -> Result<ModelConfig> {
    let k = &cfg.keys;
    let bad = |m: String| Err(EngineError::Config(m));
    for (v, key) in [
        (cfg.hidden, &k.hidden),
        (cfg.layers, &k.layers),
        (cfg.heads, &k.heads),
        (cfg.kv_heads, &k.kv_heads),
        (cfg.ffn, &k.ffn),
        (cfg.vocab, &k.vocab),
    ] {
        if v == 0 {
            return bad(format!("{key} is 0; it must be positive"));
        }
    }
    if cfg.head_dim == 0 || !cfg.head_dim.is_multiple_of(2) {
        return bad(format!(
            "{} = {} must be positive and even (RoPE turns pairs of dimensions)",
            k.head_dim, cfg.head_dim
        ));
    }
    if !cfg.heads.is_multiple_of(cfg.kv_heads) {
        return bad(format!(
            "{} = {} is not a multiple of {} = {}",
            k.heads, cfg.heads, k.kv_heads, cfg.kv_heads
        ));
    }
    // Guard against absurd sizes before anything is allocated from them.
    let limit = 1usize << 24;
    for (v, key) in [
        (cfg.hidden, k.hidden.clone()),
        (cfg.ffn, k.ffn.clone()),
        (cfg.vocab, k.vocab.clone()),
        (
            cfg.head_dim.saturating_mul(cfg.heads),
            format!("{} × {}", k.heads, k.head_dim),
        ),
    ] {
        if v > limit {
            return bad(format!(
                "{key} = {v} is larger than any model this tool runs (at most {limit})"
            ));
        }
    }
    if !(cfg.norm_eps.is_finite() && cfg.norm_eps >= 0.0) {
        return bad(format!(
            "{} = {} must be finite and not negative",
            k.eps, cfg.norm_eps
        ));
    }
    if !(cfg.rope_theta.is_finite() && cfg.rope_theta > 0.0) {
        return bad(format!(
            "{} = {} must be finite and positive",
            k.rope, cfg.rope_theta
        ));
    }
    if !(cfg.attn_scale.is_finite() && cfg.attn_scale > 0.0) {
        return bad(format!(
            "{} gives an attention scale of {}; it must be finite and positive",
            k.scale, cfg.attn_scale
        ));
    }
    Ok(cfg)
}

impl ModelConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch_name = f.architecture()?;
        let arch = match arch_name {
            "gemma3" => Arch::Gemma3,
            "qwen3" => Arch::Qwen3,
            "llama" => Arch::Llama,
            other => return Err(EngineError::UnknownArchitecture(other.to_string())),
        };
        let k = |s: &str| format!("{arch_name}.{s}");
        let hidden = f.usize(&k("embedding_length"))?;
        let layers = layer_count(f.usize(&k("block_count"))?, &k("block_count"))?;
        let heads = f.usize(&k("attention.head_count"))?;
        let kv_heads = f.usize_opt(&k("attention.head_count_kv"))?.unwrap_or(heads);
        let key_length = f.usize_opt(&k("attention.key_length"))?;
        let head_dim = key_length.unwrap_or_else(|| hidden.checked_div(heads).unwrap_or(0));
        let vocab = match f.weights.shape("token_embd.weight") {
            Ok(s) if s.len() == 2 => s[0],
            Ok(s) => {
                return Err(EngineError::ShapeMismatch {
                    name: "token_embd.weight".into(),
                    got: s.to_vec(),
                    expected: vec![0, hidden],
                })
            }
            Err(e) => return Err(e),
        };
        let eps = f
            .f64_opt(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-6);
        let rope_default = if arch == Arch::Gemma3 { 1e6 } else { 1e4 };
        let rope_theta = f.f64_opt(&k("rope.freq_base"))?.unwrap_or(rope_default);
        let (sliding, attn_scale) = match arch {
            Arch::Gemma3 => {
                let window = f.usize_opt(&k("attention.sliding_window"))?.unwrap_or(512);
                // query_pre_attn_scalar is not stored; for Gemma 3 it equals head_dim.
                (gemma3_sliding(layers, window), (head_dim as f64).powf(-0.5))
            }
            _ => (vec![None; layers], (head_dim as f64).powf(-0.5)),
        };
        let rope_linear_factor = match f.string(&k("rope.scaling.type")) {
            Ok("linear") => f.f64_opt(&k("rope.scaling.factor"))?.unwrap_or(1.0),
            _ => 1.0,
        };
        check(ModelConfig {
            arch,
            recipe: Recipe::of(arch),
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            ffn: f.usize(&k("feed_forward_length"))?,
            vocab,
            norm_eps: eps,
            rope_theta,
            rope_local_theta: GEMMA3_LOCAL_ROPE_BASE,
            rope_linear_factor,
            // Llama 3 GGUF files carry the scaling as a `rope_freqs` tensor instead.
            llama3_scaling: None,
            sliding,
            attn_scale,
            context_length: f.usize_opt(&k("context_length"))?.unwrap_or(2048),
            tie_embeddings: !f.weights.contains("output.weight"),
            keys: ConfigKeys::gguf(arch_name, key_length.is_some()),
        })
    }

    /// From a Hugging Face `config.json` (Gemma 3 multimodal configs: the `text_config`).
    pub fn from_hf_json(bytes: &[u8]) -> Result<Self> {
        let root: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| EngineError::Config(format!("config.json is not valid JSON: {e}")))?;
        let c = root.get("text_config").unwrap_or(&root);
        let model_type = c
            .get("model_type")
            .or_else(|| root.get("model_type"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let arch = match model_type {
            "gemma3" | "gemma3_text" => Arch::Gemma3,
            "qwen3" => Arch::Qwen3,
            "llama" => Arch::Llama,
            "" => {
                return Err(EngineError::Config(
                    "config.json has no `model_type`".into(),
                ))
            }
            other => return Err(EngineError::UnknownArchitecture(other.to_string())),
        };
        let num = |key: &str| -> Result<Option<f64>> {
            match c.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| EngineError::Config(format!("`{key}` is not a number"))),
            }
        };
        let int = |key: &str| -> Result<Option<usize>> {
            match num(key)? {
                None => Ok(None),
                Some(x) if x >= 0.0 && x.fract() == 0.0 && x < 1e15 => Ok(Some(x as usize)),
                Some(_) => Err(EngineError::Config(format!(
                    "`{key}` is not a non-negative integer"
                ))),
            }
        };
        let req = |key: &str| -> Result<usize> {
            int(key)?.ok_or_else(|| EngineError::Config(format!("`{key}` is missing")))
        };
        let hidden = req("hidden_size")?;
        let heads = req("num_attention_heads")?;
        let layers = layer_count(req("num_hidden_layers")?, "num_hidden_layers")?;
        let given_head_dim = int("head_dim")?;
        let head_dim = given_head_dim.unwrap_or_else(|| hidden.checked_div(heads).unwrap_or(0));
        let gemma = arch == Arch::Gemma3;
        let rope_theta = num("rope_theta")?.unwrap_or(if gemma { 1e6 } else { 1e4 });
        let sliding = if gemma {
            let window = int("sliding_window")?.unwrap_or(512);
            match c.get("layer_types").and_then(|v| v.as_array()) {
                Some(types) => types
                    .iter()
                    .map(|t| (t.as_str() == Some("sliding_attention")).then_some(window))
                    .collect(),
                None => {
                    let pattern = int("sliding_window_pattern")?.unwrap_or(GEMMA3_SLIDING_PATTERN);
                    (0..layers)
                        .map(|i| (pattern == 0 || (i + 1) % pattern != 0).then_some(window))
                        .collect()
                }
            }
        } else {
            vec![None; layers]
        };
        if sliding.len() != layers {
            return Err(EngineError::Config(
                "`layer_types` length differs from num_hidden_layers".into(),
            ));
        }
        let attn_scale = if gemma {
            num("query_pre_attn_scalar")?
                .unwrap_or(head_dim as f64)
                .powf(-0.5)
        } else {
            (head_dim as f64).powf(-0.5)
        };
        let scaling = c.get("rope_scaling").filter(|v| !v.is_null());
        let scaling_type = scaling
            .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
            .and_then(|v| v.as_str());
        let sf = |key: &str, default: f64| {
            scaling
                .and_then(|s| s.get(key))
                .and_then(|v| v.as_f64())
                .unwrap_or(default)
        };
        let llama3_scaling = (scaling_type == Some("llama3")).then(|| Llama3Scaling {
            factor: sf("factor", 8.0),
            low_freq_factor: sf("low_freq_factor", 1.0),
            high_freq_factor: sf("high_freq_factor", 4.0),
            original_max_position_embeddings: sf("original_max_position_embeddings", 8192.0),
        });
        let rope_linear_factor = if scaling_type == Some("linear") {
            sf("factor", 1.0)
        } else {
            1.0
        };
        let tie = c
            .get("tie_word_embeddings")
            .or_else(|| root.get("tie_word_embeddings"))
            .and_then(|v| v.as_bool())
            .unwrap_or(gemma);
        check(ModelConfig {
            arch,
            recipe: Recipe::of(arch),
            hidden,
            layers,
            heads,
            kv_heads: int("num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            ffn: req("intermediate_size")?,
            vocab: req("vocab_size")?,
            norm_eps: num("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_local_theta: num("rope_local_base_freq")?.unwrap_or(GEMMA3_LOCAL_ROPE_BASE),
            rope_linear_factor,
            llama3_scaling,
            sliding,
            attn_scale,
            context_length: int("max_position_embeddings")?.unwrap_or(2048),
            tie_embeddings: tie,
            keys: ConfigKeys::hf(given_head_dim.is_some(), gemma),
        })
    }
}
