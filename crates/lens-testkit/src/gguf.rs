//! A tiny valid GGUF file (llama architecture, a GPT-2 style tokenizer in
//! its metadata, f32 and Q8_0 tensors), built with candle's GGUF writer, for
//! the bad-input tests to break one thing at a time and as a fuzz seed.

use super::Rng;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

pub const HIDDEN: usize = 32;
pub const HEADS: u32 = 2;
pub const KV_HEADS: u32 = 1;
pub const FFN: usize = 64;
pub const CONTEXT: u32 = 8;

/// A GGUF file under construction: metadata and f32 tensors (row-major
/// shapes), some stored as Q8_0.
pub struct Gguf {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>, GgmlDType)>,
}

pub fn strings(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect())
}

/// GPT-2 byte-level tokens: a–z, `Ġ` (space), three merges, an EOS.
pub fn gpt2_tokens() -> (Vec<String>, Vec<&'static str>) {
    let mut tokens: Vec<String> = ('a'..='z').map(String::from).collect();
    tokens.extend(["Ġ", "he", "ll", "Ġw", "<|endoftext|>"].map(String::from));
    (tokens, vec!["h e", "l l", "Ġ w"])
}

impl Gguf {
    pub fn tiny_llama() -> Self {
        let (tokens, merges) = gpt2_tokens();
        let vocab = tokens.len();
        let types: Vec<Value> = (0..vocab)
            .map(|i| Value::I32(if i + 1 == vocab { 3 } else { 1 }))
            .collect();
        let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let metadata = vec![
            ("general.architecture", Value::String("llama".into())),
            ("general.name", Value::String("tiny".into())),
            ("llama.context_length", Value::U32(CONTEXT)),
            ("llama.embedding_length", Value::U32(HIDDEN as u32)),
            ("llama.block_count", Value::U32(1)),
            ("llama.feed_forward_length", Value::U32(FFN as u32)),
            ("llama.attention.head_count", Value::U32(HEADS)),
            ("llama.attention.head_count_kv", Value::U32(KV_HEADS)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.rope.freq_base", Value::F32(10_000.0)),
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.tokens", strings(&token_refs)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.merges", strings(&merges)),
            ("tokenizer.ggml.eos_token_id", Value::U32(vocab as u32 - 1)),
        ];
        let hd = HIDDEN / HEADS as usize;
        let kv = hd * KV_HEADS as usize;
        let mut rng = Rng::new(7);
        let mut tensors = Vec::new();
        let mut add = |name: &str, shape: Vec<usize>, scale: f32, dtype: GgmlDType| {
            let n = shape.iter().product();
            tensors.push((name.to_string(), shape, rng.vec(n, scale), dtype));
        };
        let f32 = GgmlDType::F32;
        add("token_embd.weight", vec![vocab, HIDDEN], 1.0, f32);
        add("output_norm.weight", vec![HIDDEN], 1.0, f32);
        add("blk.0.attn_norm.weight", vec![HIDDEN], 1.0, f32);
        add("blk.0.attn_q.weight", vec![HIDDEN, HIDDEN], 0.3, f32);
        add("blk.0.attn_k.weight", vec![kv, HIDDEN], 0.3, f32);
        add("blk.0.attn_v.weight", vec![kv, HIDDEN], 0.3, f32);
        add("blk.0.attn_output.weight", vec![HIDDEN, HIDDEN], 0.3, f32);
        add("blk.0.ffn_norm.weight", vec![HIDDEN], 1.0, f32);
        add(
            "blk.0.ffn_gate.weight",
            vec![FFN, HIDDEN],
            0.3,
            GgmlDType::Q8_0,
        );
        add(
            "blk.0.ffn_up.weight",
            vec![FFN, HIDDEN],
            0.3,
            GgmlDType::Q8_0,
        );
        add("blk.0.ffn_down.weight", vec![HIDDEN, FFN], 0.2, f32);
        Self {
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            tensors,
        }
    }

    pub fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    pub fn tensor(&mut self, name: &str) -> &mut (String, Vec<usize>, Vec<f32>, GgmlDType) {
        self.tensors
            .iter_mut()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    pub fn bytes(&self) -> Vec<u8> {
        let qs: Vec<(String, QTensor)> = self
            .tensors
            .iter()
            .map(|(name, shape, data, dtype)| {
                let t =
                    Tensor::from_vec(data.clone(), shape.as_slice(), &Device::Cpu).expect("tensor");
                (
                    name.clone(),
                    QTensor::quantize(&t, *dtype).expect("quantize"),
                )
            })
            .collect();
        let meta: Vec<(&str, &Value)> =
            self.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (n.as_str(), q)).collect();
        let mut out = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut out, &meta, &tensors).expect("write gguf");
        out.into_inner()
    }
}
