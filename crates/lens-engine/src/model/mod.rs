//! A loaded model: config, compact weights under canonical names, tokenizer.

pub mod config;
mod hf_names;

pub use config::{Activation, Arch, Llama3Scaling, ModelConfig, Recipe};

use crate::error::{EngineError, Result};
use crate::tokenizer::LensTokenizer;
use crate::weights::{load_safetensors, GgufFile, StoredTensor, WeightStore};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Where a model's weights came from; decides a few storage conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Gguf,
    Safetensors,
}

pub struct Model {
    pub name: String,
    pub config: ModelConfig,
    pub weights: WeightStore,
    pub tokenizer: LensTokenizer,
    pub format: SourceFormat,
}

impl Model {
    /// A GGUF file held in memory (weights stay quantized inside it).
    pub fn from_gguf_bytes(name: &str, bytes: Arc<[u8]>) -> Result<Self> {
        let file = GgufFile::parse(bytes)?;
        let config = ModelConfig::from_gguf(&file)?;
        let tokenizer = LensTokenizer::from_gguf(&file)?;
        let model = Self {
            name: name.to_string(),
            config,
            weights: file.weights,
            tokenizer,
            format: SourceFormat::Gguf,
        };
        model.validate()?;
        Ok(model)
    }

    /// Hugging Face files: `config.json`, `tokenizer.json`, optional
    /// `tokenizer_config.json`, and the safetensors shard(s).
    pub fn from_hf_bytes(
        name: &str,
        config_json: &[u8],
        tokenizer_json: &[u8],
        tokenizer_config_json: Option<&[u8]>,
        shards: &[&[u8]],
    ) -> Result<Self> {
        let config = ModelConfig::from_hf_json(config_json)?;
        let raw = load_safetensors(shards)?;
        let mut tensors = HashMap::new();
        for (hf, t) in raw {
            if let Some(canon) = hf_names::canonical(&config.recipe, &hf) {
                tensors.insert(canon, StoredTensor::Dense(t));
            }
        }
        let tokenizer = LensTokenizer::from_json(tokenizer_json, tokenizer_config_json)?;
        let model = Self {
            name: name.to_string(),
            config,
            weights: WeightStore::new(tensors, Arc::from(Vec::new())),
            tokenizer,
            format: SourceFormat::Safetensors,
        };
        model.validate()?;
        Ok(model)
    }

    /// A `.gguf` file or a Hugging Face model directory.
    pub fn load_path(path: &Path) -> Result<Self> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| EngineError::Io {
                path: p.display().to_string(),
                source,
            })
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        if path.is_dir() {
            let config = read(&path.join("config.json"))?;
            let tokenizer = read(&path.join("tokenizer.json"))?;
            let tok_cfg = std::fs::read(path.join("tokenizer_config.json")).ok();
            let mut shard_paths: Vec<_> = std::fs::read_dir(path)
                .map_err(|source| EngineError::Io {
                    path: path.display().to_string(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            shard_paths.sort();
            if shard_paths.is_empty() {
                return Err(EngineError::Safetensors(format!(
                    "no .safetensors file in {}",
                    path.display()
                )));
            }
            let shards = shard_paths
                .iter()
                .map(|p| read(p))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&[u8]> = shards.iter().map(Vec::as_slice).collect();
            Self::from_hf_bytes(&name, &config, &tokenizer, tok_cfg.as_deref(), &refs)
        } else {
            Self::from_gguf_bytes(&name, Arc::from(read(path)?))
        }
    }

    /// Every tensor the recipe reads exists with the shape the config implies.
    fn validate(&self) -> Result<()> {
        let c = &self.config;
        let k = &c.keys;
        let w = &self.weights;
        let (d, q, kv) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        // A tensor of another shape than the configuration gives: the
        // message names the fields its expected shape came from.
        let expect = |name: &str, shape: &[usize], from: &str| -> Result<()> {
            match w.expect_shape(name, shape) {
                Err(EngineError::ShapeMismatch {
                    name,
                    got,
                    expected,
                }) => Err(EngineError::Config(format!(
                    "tensor `{name}` has shape {got:?}, but the configuration ({from}) says {expected:?}"
                ))),
                r => r,
            }
        };
        let qs = format!("{} × {}", k.heads, k.head_dim);
        let kvs = format!("{} × {}", k.kv_heads, k.head_dim);
        let two = |a: &str, b: &str| format!("{a}, {b}");
        expect(
            "token_embd.weight",
            &[c.vocab, d],
            &two(&k.vocab, &k.hidden),
        )?;
        if !c.tie_embeddings {
            expect("output.weight", &[c.vocab, d], &two(&k.vocab, &k.hidden))?;
        }
        expect("output_norm.weight", &[d], &k.hidden)?;
        for l in 0..c.layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            expect(&n("attn_norm"), &[d], &k.hidden)?;
            expect(&n("attn_q"), &[q, d], &two(&qs, &k.hidden))?;
            expect(&n("attn_k"), &[kv, d], &two(&kvs, &k.hidden))?;
            expect(&n("attn_v"), &[kv, d], &two(&kvs, &k.hidden))?;
            expect(&n("attn_output"), &[d, q], &two(&k.hidden, &qs))?;
            expect(&n("ffn_norm"), &[d], &k.hidden)?;
            expect(&n("ffn_gate"), &[c.ffn, d], &two(&k.ffn, &k.hidden))?;
            expect(&n("ffn_up"), &[c.ffn, d], &two(&k.ffn, &k.hidden))?;
            expect(&n("ffn_down"), &[d, c.ffn], &two(&k.hidden, &k.ffn))?;
            if c.recipe.qk_norm {
                expect(&n("attn_q_norm"), &[c.head_dim], &k.head_dim)?;
                expect(&n("attn_k_norm"), &[c.head_dim], &k.head_dim)?;
            }
            if c.recipe.post_norms {
                expect(&n("post_attention_norm"), &[d], &k.hidden)?;
                expect(&n("post_ffw_norm"), &[d], &k.hidden)?;
            }
        }
        let tv = self.tokenizer.vocab_size();
        if tv > c.vocab {
            return Err(EngineError::Tokenizer(format!(
                "the tokenizer has {tv} tokens but the model's vocabulary ({}) only {}",
                k.vocab, c.vocab
            )));
        }
        Ok(())
    }

    /// Tokenizes a prompt and checks it fits the model.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let ids = self.tokenizer.encode(prompt)?;
        if ids.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if ids.len() > self.config.context_length {
            return Err(EngineError::PromptTooLong {
                tokens: ids.len(),
                max: self.config.context_length,
            });
        }
        Ok(ids)
    }
}
