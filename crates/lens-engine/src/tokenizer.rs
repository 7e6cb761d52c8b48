//! The model's tokenizer, as a `tokenizers::Tokenizer`: read from a Hugging
//! Face `tokenizer.json`, or rebuilt from a GGUF file's metadata exactly as
//! Python `transformers` (5.x, `AutoTokenizer.from_pretrained(.., gguf_file=..)`)
//! rebuilds it (see `integrations/gguf/gguf_tokenizer_mapping.py` there).
//!
//! GGUF tokenizer kinds (`tokenizer.ggml.model`):
//! - `llama`: sentencepiece BPE with byte fallback. Gemma files (architecture
//!   `gemma*`) get Gemma's normalizer and pre-tokenizer, their all-space
//!   tokens respelled with `▁`, and merges derived from the vocabulary in
//!   token order; other files get Llama's `Metaspace` and merges ordered by
//!   score. BOS is added unless the file says otherwise.
//! - `gemma4`: sentencepiece BPE with Gemma's pipeline, no BOS.
//! - `gpt2`: byte-level BPE from the file's tokens and merges.

use crate::error::{EngineError, Result};
use crate::weights::{GgufFile, MetadataValue};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BpeBuilder, Vocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, Template, TemplateProcessing};
use tokenizers::{AddedToken, Decoder, SplitDelimiterBehavior, Tokenizer};

/// A model's tokenizer plus its BOS/EOS conventions.
pub struct LensTokenizer {
    tok: Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    /// `tokenizer_config.json` says `add_bos_token: true`: make sure the ids
    /// start with BOS even if the `tokenizer.json` post-processor adds none.
    force_bos: bool,
    /// The decoder used for one token's display text: the tokenizer's own,
    /// minus the steps that strip the leading space of a text's first token.
    display: Option<DecoderWrapper>,
}

impl std::fmt::Debug for LensTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LensTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn err(msg: impl Into<String>) -> EngineError {
    EngineError::Tokenizer(msg.into())
}

impl LensTokenizer {
    /// From Hugging Face files: `tokenizer.json` and, if present,
    /// `tokenizer_config.json` (for `add_bos_token`, `bos_token`, `eos_token`).
    pub fn from_json(tokenizer_json: &[u8], tokenizer_config_json: Option<&[u8]>) -> Result<Self> {
        let mut tok = Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| err(format!("cannot read tokenizer.json: {e}")))?;
        // A prompt is never cut or padded behind the user's back.
        tok.with_truncation(None)
            .map_err(|e| err(format!("cannot read tokenizer.json: {e}")))?;
        tok.with_padding(None);
        let config: Option<serde_json::Value> = tokenizer_config_json
            .map(|b| {
                serde_json::from_slice(b)
                    .map_err(|e| err(format!("tokenizer_config.json is not valid JSON: {e}")))
            })
            .transpose()?;
        let named = |key: &str| -> Option<u32> {
            let v = config.as_ref()?.get(key)?;
            let content = match v {
                serde_json::Value::String(s) => s.as_str(),
                serde_json::Value::Object(o) => o.get("content")?.as_str()?,
                _ => return None,
            };
            tok.token_to_id(content)
        };
        let add_bos = config
            .as_ref()
            .and_then(|c| c.get("add_bos_token"))
            .and_then(serde_json::Value::as_bool);
        // BOS: the config's, else the special token the post-processor puts
        // in front of a text (Llama 3, Gemma 3 ...).
        let bos = named("bos_token").or_else(|| leading_special(&tok));
        let eos = named("eos_token");
        let display = tok.get_decoder().map(display_decoder);
        Ok(Self {
            force_bos: add_bos == Some(true) && bos.is_some(),
            tok,
            bos,
            eos,
            display,
        })
    }

    /// From the `tokenizer.ggml.*` metadata of a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        Self::from_gguf_metadata(&file.metadata)
    }

    /// From GGUF metadata (what [`LensTokenizer::from_gguf`] reads).
    pub fn from_gguf_metadata(metadata: &HashMap<String, MetadataValue>) -> Result<Self> {
        GgufTokenizer::read(metadata)?.build()
    }

    /// Token ids of `text`, BOS prepended exactly when the model's tokenizer
    /// says so.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tok
            .encode(text, true)
            .map_err(|e| err(format!("cannot tokenize the text: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if self.force_bos {
            if let Some(bos) = self.bos {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
        }
        Ok(ids)
    }

    /// The display text of one token (`" Paris"`; special tokens as their
    /// literal text, e.g. `"<bos>"`; a partial UTF-8 byte as `"�"`).
    pub fn token_str(&self, id: u32) -> String {
        if let Some(added) = self.tok.get_added_vocabulary().simple_id_to_token(id) {
            return added;
        }
        let Some(token) = self.tok.id_to_token(id) else {
            return format!("<token {id}?>");
        };
        match &self.display {
            Some(d) => d.decode(vec![token.clone()]).unwrap_or(token),
            None => token,
        }
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.tok
    }
}

/// The special token a post-processor puts before an (empty) text, if any.
fn leading_special(tok: &Tokenizer) -> Option<u32> {
    let enc = tok.encode("", true).ok()?;
    match (enc.get_ids().first(), enc.get_special_tokens_mask().first()) {
        (Some(&id), Some(1)) => Some(id),
        _ => None,
    }
}

/// A copy of `d` that keeps a token's leading space: no `Strip`, and a
/// `Metaspace` that never treats the token as the text's first.
fn display_decoder(d: &DecoderWrapper) -> DecoderWrapper {
    match d {
        DecoderWrapper::Sequence(s) => DecoderWrapper::Sequence(DecoderSequence::new(
            s.get_decoders()
                .iter()
                .filter(|d| !matches!(d, DecoderWrapper::Strip(_)))
                .map(display_decoder)
                .collect(),
        )),
        DecoderWrapper::Metaspace(m) => {
            let mut m = m.clone();
            m.set_prepend_scheme(PrependScheme::Never);
            DecoderWrapper::Metaspace(m)
        }
        DecoderWrapper::Strip(_) => DecoderWrapper::Sequence(DecoderSequence::new(vec![])),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------
// GGUF

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// Pre-tokenizer regexes by `tokenizer.ggml.pre`, as transformers'
/// `GGUF_PRE_TOKENIZER_SPLITS`.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn pre_tokenizer_split(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// Which pipeline a GGUF tokenizer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `llama` model in a Gemma file: `GemmaTokenizer`, respelled spaces,
    /// merges in token order.
    Gemma,
    /// `gemma4` model: `GemmaTokenizer`, merges from the file or by score.
    Gemma4,
    /// `llama` model otherwise: `LlamaTokenizer` (Metaspace), merges by score.
    Llama,
    /// `gpt2` model: byte-level BPE.
    Gpt2,
}

/// The tokenizer metadata of a GGUF file.
struct GgufTokenizer {
    kind: Kind,
    pre: Option<String>,
    tokens: Vec<String>,
    scores: Option<Vec<f64>>,
    token_types: Vec<i64>,
    merges: Option<Vec<String>>,
    bos: Option<usize>,
    eos: Option<usize>,
    unk: Option<usize>,
    pad: Option<usize>,
    add_bos: bool,
    add_eos: bool,
}

fn meta_str<'a>(m: &'a HashMap<String, MetadataValue>, key: &str) -> Result<Option<&'a str>> {
    match m.get(key) {
        None => Ok(None),
        Some(MetadataValue::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(format!("GGUF metadata `{key}` is not a string"))),
    }
}

fn meta_int(v: &MetadataValue) -> Option<i64> {
    Some(match v {
        MetadataValue::U8(x) => *x as i64,
        MetadataValue::I8(x) => *x as i64,
        MetadataValue::U16(x) => *x as i64,
        MetadataValue::I16(x) => *x as i64,
        MetadataValue::U32(x) => *x as i64,
        MetadataValue::I32(x) => *x as i64,
        MetadataValue::U64(x) => i64::try_from(*x).ok()?,
        MetadataValue::I64(x) => *x,
        _ => return None,
    })
}

fn meta_float(v: &MetadataValue) -> Option<f64> {
    match v {
        MetadataValue::F32(x) => Some(*x as f64),
        MetadataValue::F64(x) => Some(*x),
        other => meta_int(other).map(|i| i as f64),
    }
}

fn meta_bool(m: &HashMap<String, MetadataValue>, key: &str) -> Option<bool> {
    match m.get(key) {
        Some(MetadataValue::Bool(b)) => Some(*b),
        Some(v) => meta_int(v).map(|i| i != 0),
        None => None,
    }
}

fn meta_array<'a>(
    m: &'a HashMap<String, MetadataValue>,
    key: &str,
) -> Result<Option<&'a [MetadataValue]>> {
    match m.get(key) {
        None => Ok(None),
        Some(MetadataValue::Array(a)) => Ok(Some(a)),
        Some(_) => Err(err(format!("GGUF metadata `{key}` is not an array"))),
    }
}

fn meta_strings(m: &HashMap<String, MetadataValue>, key: &str) -> Result<Option<Vec<String>>> {
    meta_array(m, key)?
        .map(|a| {
            a.iter()
                .map(|v| match v {
                    MetadataValue::String(s) => Ok(s.clone()),
                    _ => Err(err(format!("GGUF metadata `{key}` holds a non-string"))),
                })
                .collect()
        })
        .transpose()
}

/// A token id from the metadata, checked against the vocabulary.
fn meta_token_id(m: &HashMap<String, MetadataValue>, key: &str, n: usize) -> Result<Option<usize>> {
    let Some(v) = m.get(key) else {
        return Ok(None);
    };
    match meta_int(v) {
        Some(i) if i >= 0 && (i as u64) < n as u64 => Ok(Some(i as usize)),
        // llama.cpp writes -1 (or a huge u32) for "none".
        Some(i) if i < 0 || i == u32::MAX as i64 => Ok(None),
        Some(i) => Err(err(format!(
            "GGUF metadata `{key}` = {i} is outside the vocabulary ({n} tokens)"
        ))),
        None => Err(err(format!("GGUF metadata `{key}` is not an integer"))),
    }
}

impl GgufTokenizer {
    fn read(m: &HashMap<String, MetadataValue>) -> Result<Self> {
        let model = meta_str(m, "tokenizer.ggml.model")?.ok_or_else(|| {
            err("the GGUF file has no tokenizer (`tokenizer.ggml.model` is missing)")
        })?;
        let arch = meta_str(m, "general.architecture")?.unwrap_or("");
        let kind = match model {
            "llama" if matches!(arch, "gemma" | "gemma2" | "gemma3") => Kind::Gemma,
            "llama" => Kind::Llama,
            "gemma4" => Kind::Gemma4,
            "gpt2" => Kind::Gpt2,
            other => {
                return Err(err(format!(
                    "unknown tokenizer model `{other}` (supported: llama, gpt2, gemma4)"
                )))
            }
        };
        let tokens = meta_strings(m, "tokenizer.ggml.tokens")?
            .ok_or_else(|| err("GGUF metadata `tokenizer.ggml.tokens` is missing"))?;
        let n = tokens.len();
        if n == 0 {
            return Err(err("GGUF metadata `tokenizer.ggml.tokens` is empty"));
        }
        let scores = meta_array(m, "tokenizer.ggml.scores")?
            .map(|a| {
                a.iter()
                    .map(|v| meta_float(v).ok_or_else(|| err("GGUF token scores are not numbers")))
                    .collect::<Result<Vec<f64>>>()
            })
            .transpose()?;
        if scores.as_ref().is_some_and(|s| s.len() != n) {
            return Err(err(format!(
                "GGUF metadata has {} token scores for {n} tokens",
                scores.as_ref().map_or(0, Vec::len)
            )));
        }
        let token_types = meta_array(m, "tokenizer.ggml.token_type")?
            .map(|a| {
                a.iter()
                    .map(|v| meta_int(v).ok_or_else(|| err("GGUF token types are not integers")))
                    .collect::<Result<Vec<i64>>>()
            })
            .transpose()?
            .unwrap_or_default();
        let merges = meta_strings(m, "tokenizer.ggml.merges")?;
        let add_bos = match kind {
            // Older sentencepiece files have no flag; llama.cpp adds BOS then.
            Kind::Gemma | Kind::Llama => {
                meta_bool(m, "tokenizer.ggml.add_bos_token").unwrap_or(true)
            }
            // The chat template writes `<bos>` itself.
            Kind::Gemma4 => false,
            Kind::Gpt2 => meta_bool(m, "tokenizer.ggml.add_bos_token").unwrap_or(false),
        };
        Ok(Self {
            kind,
            pre: meta_str(m, "tokenizer.ggml.pre")?.map(str::to_string),
            scores,
            token_types,
            merges,
            bos: meta_token_id(m, "tokenizer.ggml.bos_token_id", n)?,
            eos: meta_token_id(m, "tokenizer.ggml.eos_token_id", n)?,
            unk: meta_token_id(m, "tokenizer.ggml.unknown_token_id", n)?,
            pad: meta_token_id(m, "tokenizer.ggml.padding_token_id", n)?,
            add_bos,
            add_eos: meta_bool(m, "tokenizer.ggml.add_eos_token").unwrap_or(false),
            tokens,
        })
    }

    fn build(self) -> Result<LensTokenizer> {
        // The vocabulary as the BPE model spells it.
        let spelled: Vec<String> = match self.kind {
            Kind::Gemma => self.tokens.iter().map(|t| respell_spaces(t)).collect(),
            Kind::Gpt2 => {
                let table = bytes_to_unicode();
                let alphabet: HashSet<char> = table.iter().copied().collect();
                self.tokens
                    .iter()
                    .map(|t| {
                        if t.chars().all(|c| alphabet.contains(&c)) {
                            t.clone()
                        } else {
                            t.bytes().map(|b| table[b as usize]).collect()
                        }
                    })
                    .collect()
            }
            Kind::Gemma4 | Kind::Llama => self.tokens.clone(),
        };
        let merges = match &self.merges {
            Some(m) => m
                .iter()
                .map(|s| {
                    let mut parts = s.split(' ');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                        _ => Err(err(format!("GGUF merge `{s}` is not two tokens"))),
                    }
                })
                .collect::<Result<Vec<_>>>()?,
            None => {
                let order =
                    match (self.kind, &self.scores) {
                        (Kind::Gemma, _) => MergeOrder::Position,
                        (_, Some(s)) => MergeOrder::Scores(s),
                        (_, None) => return Err(err(
                            "the GGUF file has neither merges nor token scores to derive them from",
                        )),
                    };
                derive_merges(&spelled, order)
            }
        };
        let vocab: Vocab = spelled
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();

        let bpe_error = |e| err(format!("cannot build the BPE model: {e}"));
        let (bpe, decoder): (BPE, DecoderWrapper) = match self.kind {
            Kind::Gemma | Kind::Gemma4 => (
                BpeBuilder::new()
                    .vocab_and_merges(vocab, merges)
                    .unk_token("<unk>".to_string())
                    .fuse_unk(true)
                    .byte_fallback(true)
                    .build()
                    .map_err(bpe_error)?,
                sentencepiece_decoder(false)?,
            ),
            Kind::Llama => (
                BpeBuilder::new()
                    .vocab_and_merges(vocab, merges)
                    .fuse_unk(true)
                    .byte_fallback(true)
                    .build()
                    .map_err(bpe_error)?,
                sentencepiece_decoder(true)?,
            ),
            Kind::Gpt2 => (
                BpeBuilder::new()
                    .vocab_and_merges(vocab, merges)
                    .continuing_subword_prefix(String::new())
                    .end_of_word_suffix(String::new())
                    .build()
                    .map_err(bpe_error)?,
                ByteLevel::default().into(),
            ),
        };
        let display = Some(display_decoder(&decoder));
        let mut tok = Tokenizer::new(bpe);
        match self.kind {
            Kind::Gemma | Kind::Gemma4 => {
                let replace = Replace::new(" ", "▁").map_err(|e| err(e.to_string()))?;
                tok.with_normalizer(Some(replace))
                    .map_err(|e| err(e.to_string()))?;
                let split = Split::new(
                    SplitPattern::String(" ".into()),
                    SplitDelimiterBehavior::MergedWithPrevious,
                    false,
                )
                .map_err(|e| err(e.to_string()))?;
                tok.with_pre_tokenizer(Some(split));
            }
            Kind::Llama => {
                tok.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::First, false)));
            }
            Kind::Gpt2 => {
                if self.pre.as_deref() == Some("smollm") {
                    // SmolLM2's own tokenizer.json (and llama.cpp's "smollm"
                    // pre-tokenizer): every digit on its own, then GPT-2.
                    tok.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
                        Digits::new(true).into(),
                        ByteLevel::new(false, true, true).into(),
                    ])));
                } else {
                    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
                }
            }
        }
        // transformers swaps in a split regex for the `pre` types it knows.
        if let Some(re) = self.pre.as_deref().and_then(pre_tokenizer_split) {
            let split = Split::new(
                SplitPattern::Regex(re.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| err(format!("bad pre-tokenizer regex: {e}")))?;
            tok.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])));
        }
        tok.with_decoder(Some(decoder));

        self.add_special_tokens(&mut tok)?;

        // The named tokens' text and id (as the tokenizer now maps the text).
        let named = |i: Option<usize>| {
            let text = self.tokens[i?].as_str();
            Some((text, tok.token_to_id(text)?))
        };
        let (bos, eos) = (named(self.bos), named(self.eos));
        let post = template(
            bos.filter(|_| self.add_bos).map(|(t, id)| (t, id, "BOS")),
            eos.filter(|_| self.add_eos).map(|(t, id)| (t, id, "EOS")),
        )?;
        tok.with_post_processor(Some(post));
        Ok(LensTokenizer {
            tok,
            bos: bos.map(|b| b.1),
            eos: eos.map(|e| e.1),
            force_bos: false,
            display,
        })
    }

    /// Control tokens as special added tokens, user-defined tokens present
    /// in the (respelled) vocabulary as plain added tokens, then the named
    /// special tokens (bos, eos, unk, pad) not already added.
    fn add_special_tokens(&self, tok: &mut Tokenizer) -> Result<()> {
        let byte_alphabet: Option<HashSet<char>> =
            (self.kind == Kind::Gpt2).then(|| bytes_to_unicode().into_iter().collect());
        let typed = || self.tokens.iter().zip(self.token_types.iter().copied());
        let control: Vec<AddedToken> = typed()
            .filter(|(t, ty)| {
                *ty == TOKEN_CONTROL
                    && byte_alphabet
                        .as_ref()
                        .is_none_or(|a| t.chars().all(|c| a.contains(&c)))
            })
            .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        let add_error = |e| err(format!("cannot add the special tokens: {e}"));
        if !control.is_empty() {
            tok.add_special_tokens(control).map_err(add_error)?;
        }
        // `token in tokenizer.get_vocab()`: the model's (respelled) vocabulary
        // or an added token.
        let user: Vec<AddedToken> = typed()
            .filter(|(t, ty)| *ty == TOKEN_USER_DEFINED && tok.token_to_id(t).is_some())
            .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
            .collect();
        if !user.is_empty() {
            tok.add_tokens(user).map_err(add_error)?;
        }
        let already: HashSet<String> = tok
            .get_added_vocabulary()
            .get_vocab()
            .keys()
            .cloned()
            .collect();
        let named: Vec<AddedToken> = [self.bos, self.eos, self.unk, self.pad]
            .into_iter()
            .flatten()
            .map(|i| &self.tokens[i])
            .filter(|t| !already.contains(*t))
            .map(|t| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        if !named.is_empty() {
            tok.add_special_tokens(named).map_err(add_error)?;
        }
        Ok(())
    }
}

/// transformers' post-processor: `[bos] $A [eos]` (and the pair form).
fn template(
    bos: Option<(&str, u32, &str)>,
    eos: Option<(&str, u32, &str)>,
) -> Result<TemplateProcessing> {
    // A token's text is the template key unless the template syntax would
    // misread it (`:` separates the type id, `$` marks a sequence).
    let key = |(content, _, alias): (&str, u32, &str)| -> String {
        if content.is_empty()
            || content.contains(':')
            || content.starts_with('$')
            || content.chars().any(char::is_whitespace)
        {
            alias.to_string()
        } else {
            content.to_string()
        }
    };
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Vec::new();
    if let Some(b) = bos {
        single.push(format!("{}:0", key(b)));
        specials.push(SpecialToken::new(key(b), vec![b.1], vec![b.0.to_string()]));
    }
    single.push("$A:0".to_string());
    if let Some(e) = eos {
        single.push(format!("{}:0", key(e)));
        if key(e) != bos.map(key).unwrap_or_default() {
            specials.push(SpecialToken::new(key(e), vec![e.1], vec![e.0.to_string()]));
        }
    }
    pair.extend(single.iter().cloned());
    if let Some(b) = bos {
        pair.push(format!("{}:1", key(b)));
    }
    pair.push("$B:1".to_string());
    if let Some(e) = eos {
        pair.push(format!("{}:1", key(e)));
    }
    let specials = specials
        .into_iter()
        .collect::<std::result::Result<Vec<SpecialToken>, _>>()
        .map_err(|e| err(format!("bad special token: {e}")))?;
    let to_template =
        |v: Vec<String>| Template::try_from(v).map_err(|e| err(format!("bad template: {e}")));
    let mut builder = TemplateProcessing::builder();
    builder
        .single(to_template(single)?)
        .pair(to_template(pair)?)
        .special_tokens(specials);
    builder
        .build()
        .map_err(|e| err(format!("bad post-processor: {e}")))
}

/// Sentencepiece decoding: `▁` to space, `<0xNN>` to bytes, then join
/// (`LlamaTokenizer` also strips the first leading space).
fn sentencepiece_decoder(strip_first_space: bool) -> Result<DecoderWrapper> {
    let replace = Replace::new("▁", " ").map_err(|e| err(e.to_string()))?;
    let mut steps: Vec<DecoderWrapper> = vec![
        replace.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if strip_first_space {
        steps.push(Strip::new(' ', 1, 0).into());
    }
    Ok(DecoderSequence::new(steps).into())
}

/// Python's `str.isspace`.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Gemma files store a token of spaces as real spaces; `GemmaTokenizer`
/// looks it up as `▁`s.
fn respell_spaces(t: &str) -> String {
    if t.contains(' ') && t.chars().all(py_isspace) {
        "▁".repeat(t.chars().count())
    } else {
        t.to_string()
    }
}

/// GPT-2's byte → character table (`bytes_to_unicode`).
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid code point")
        };
    }
    table
}

/// How derived merges are ranked.
#[derive(Clone, Copy)]
enum MergeOrder<'a> {
    /// By the token's position in the vocabulary, first best (Gemma).
    Position,
    /// By the token's score, highest best.
    Scores(&'a [f64]),
}

/// The merges a sentencepiece vocabulary implies, as transformers'
/// `generate_merges(vocab, vocab_scores)` orders them: every split of every
/// token into two vocabulary tokens, sorted (stably) by the token's score,
/// then by the left and right pieces' lengths in characters, all descending.
/// Within one token the pieces' lengths already differ, so the order there
/// is the split point from right to left.
fn derive_merges(tokens: &[String], order: MergeOrder) -> Vec<(String, String)> {
    // Python dicts built from the token list: a repeated token keeps its
    // first place in iteration order and the id (and score) of its last.
    // `first[t]` is where `t` first appears, `last[i]` (for such an `i`)
    // where it last does.
    let mut first: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
    let mut last: Vec<u32> = (0..tokens.len() as u32).collect();
    let mut is_first = vec![true; tokens.len()];
    for (i, t) in tokens.iter().enumerate() {
        match first.entry(t.as_str()) {
            Entry::Vacant(e) => {
                e.insert(i as u32);
            }
            Entry::Occupied(e) => {
                last[*e.get() as usize] = i as u32;
                is_first[i] = false;
            }
        }
    }
    let id = |piece: &str| first.get(piece).map(|&f| last[f as usize]);
    struct Cand {
        score: f64,
        len_l: u32,
        len_r: u32,
        l: u32,
        r: u32,
        split: u32,
        token: u32,
    }
    let mut cands: Vec<Cand> = Vec::with_capacity(tokens.len() * 2);
    let mut local: Vec<Cand> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !is_first[i] {
            continue;
        }
        let last = last[i];
        let score = match order {
            MergeOrder::Position => -(last as f64),
            MergeOrder::Scores(s) => s[last as usize],
        };
        let n_chars = t.chars().count() as u32;
        local.clear();
        for (k, (b, _)) in t.char_indices().enumerate().skip(1) {
            let (l, r) = t.split_at(b);
            let Some(il) = id(l) else {
                continue;
            };
            let Some(ir) = id(r) else {
                continue;
            };
            local.push(Cand {
                score,
                len_l: k as u32,
                len_r: n_chars - k as u32,
                l: il,
                r: ir,
                split: b as u32,
                token: last,
            });
        }
        local.sort_by_key(|c| (c.l, c.r));
        cands.append(&mut local);
    }
    // Python's `sorted(.., reverse=True)` is stable, like `sort_by` with the
    // comparison reversed.
    cands.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.len_l.cmp(&a.len_l))
            .then(b.len_r.cmp(&a.len_r))
    });
    cands
        .into_iter()
        .map(|c| {
            let (l, r) = tokens[c.token as usize].split_at(c.split as usize);
            (l.to_string(), r.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> MetadataValue {
        MetadataValue::String(x.to_string())
    }

    fn strings(xs: &[&str]) -> MetadataValue {
        MetadataValue::Array(xs.iter().map(|x| s(x)).collect())
    }

    fn ints(xs: &[i32]) -> MetadataValue {
        MetadataValue::Array(xs.iter().map(|&x| MetadataValue::I32(x)).collect())
    }

    /// A tiny Gemma-like sentencepiece vocabulary, no merges stored.
    fn gemma_like() -> HashMap<String, MetadataValue> {
        let tokens = [
            "<pad>", "<eos>", "<bos>", "<unk>", "<b>", "  ", "▁", "a", "b", "c", "ab", "▁ab",
            "abc", "bc", "<0x41>",
        ];
        let types = [3, 3, 3, 3, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1, 6];
        HashMap::from([
            ("general.architecture".to_string(), s("gemma3")),
            ("tokenizer.ggml.model".to_string(), s("llama")),
            ("tokenizer.ggml.pre".to_string(), s("default")),
            ("tokenizer.ggml.tokens".to_string(), strings(&tokens)),
            (
                "tokenizer.ggml.scores".to_string(),
                MetadataValue::Array(tokens.iter().map(|_| MetadataValue::F32(0.0)).collect()),
            ),
            ("tokenizer.ggml.token_type".to_string(), ints(&types)),
            (
                "tokenizer.ggml.bos_token_id".to_string(),
                MetadataValue::U32(2),
            ),
            (
                "tokenizer.ggml.eos_token_id".to_string(),
                MetadataValue::U32(1),
            ),
            (
                "tokenizer.ggml.unknown_token_id".to_string(),
                MetadataValue::U32(3),
            ),
        ])
    }

    #[test]
    fn unknown_tokenizer_model_is_an_error() {
        let mut m = gemma_like();
        m.insert("tokenizer.ggml.model".into(), s("wordpiece"));
        let e = LensTokenizer::from_gguf_metadata(&m).unwrap_err();
        assert!(matches!(e, EngineError::Tokenizer(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains("unknown tokenizer model `wordpiece`"),
            "{e}"
        );
        let file = GgufFile {
            metadata: m,
            weights: Default::default(),
        };
        assert!(LensTokenizer::from_gguf(&file).is_err());
    }

    #[test]
    fn missing_tokenizer_is_an_error() {
        let mut m = gemma_like();
        m.remove("tokenizer.ggml.model");
        let e = LensTokenizer::from_gguf_metadata(&m).unwrap_err();
        assert!(matches!(e, EngineError::Tokenizer(_)), "{e:?}");
        let mut m = gemma_like();
        m.remove("tokenizer.ggml.tokens");
        assert!(LensTokenizer::from_gguf_metadata(&m).is_err());
    }

    #[test]
    fn derived_merges_follow_transformers_order() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        // By position: "ab" (3), "bc" (4), then "abc" split right to left.
        let m = derive_merges(&tokens, MergeOrder::Position);
        let m: Vec<(&str, &str)> = m.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        assert_eq!(m, [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]);
        // By score (highest first), then longer left piece, then longer
        // right piece (as Python `generate_merges` gives them).
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -1.0];
        let m = derive_merges(&tokens, MergeOrder::Scores(&scores));
        let m: Vec<(&str, &str)> = m.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        assert_eq!(m, [("ab", "c"), ("a", "bc"), ("b", "c"), ("a", "b")]);
        // Equal keys keep the vocabulary order; a repeated token counts once,
        // with the id and score of its last occurrence (Python dicts).
        let tokens: Vec<String> = ["a", "b", "c", "d", "cd", "ab", "dc", "ab", "abcd"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        let scores = [0.0, 0.0, 0.0, 0.0, -1.0, -1.0, -1.0, -3.0, -1.0];
        let m = derive_merges(&tokens, MergeOrder::Scores(&scores));
        let m: Vec<(&str, &str)> = m.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        assert_eq!(m, [("ab", "cd"), ("c", "d"), ("d", "c"), ("a", "b")]);
    }

    #[test]
    fn gemma_like_gguf() {
        let t = LensTokenizer::from_gguf_metadata(&gemma_like()).unwrap();
        assert_eq!(t.vocab_size(), 15);
        assert_eq!((t.bos_id(), t.eos_id()), (Some(2), Some(1)));
        // BOS first; "▁ab" merges; "<b>" stays whole; the user-defined "  "
        // is respelled "▁▁", so it is no added token but a BPE merge.
        assert_eq!(t.encode("abc").unwrap(), [2, 12]);
        assert_eq!(t.encode(" ab<b>c").unwrap(), [2, 11, 4, 9]);
        assert_eq!(t.encode("A").unwrap(), [2, 14]);
        assert_eq!(t.encode("  ").unwrap(), [2, 5]);
        assert_eq!(t.token_str(11), " ab");
        assert_eq!(t.token_str(2), "<bos>");
        assert_eq!(t.token_str(14), "A");
    }

    #[test]
    fn llama_like_gguf() {
        // Not Gemma: Metaspace adds "▁" in front, tokens keep their spelling
        // ("  " is a user-defined added token), merges ranked by score.
        let mut m = gemma_like();
        m.insert("general.architecture".into(), s("llama"));
        let t = LensTokenizer::from_gguf_metadata(&m).unwrap();
        assert_eq!(t.encode("ab").unwrap(), [2, 11]);
        assert_eq!(t.encode("ab  c").unwrap(), [2, 11, 5, 9]);
        // The display text keeps the leading space the decoder would strip
        // from a text's first token.
        assert_eq!(t.token_str(11), " ab");
        assert_eq!(t.inner().decode(&[11], false).unwrap(), "ab");
        // An explicit `add_bos_token = false` is obeyed.
        m.insert(
            "tokenizer.ggml.add_bos_token".into(),
            MetadataValue::Bool(false),
        );
        let t = LensTokenizer::from_gguf_metadata(&m).unwrap();
        assert_eq!(t.encode("ab").unwrap(), [11]);
    }

    #[test]
    fn split_regexes_compile() {
        for re in [
            LLAMA3_SPLIT,
            TEKKEN_SPLIT,
            GPT4O_SPLIT,
            QWEN2_SPLIT,
            QWEN35_SPLIT,
        ] {
            Split::new(
                SplitPattern::Regex(re.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .unwrap();
        }
    }

    #[test]
    fn byte_table_matches_gpt2() {
        let t = bytes_to_unicode();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[0xAD], 'Ń');
    }

    const TINY_WORDLEVEL: &str = r#"{
      "version": "1.0",
      "added_tokens": [
        {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": null,
      "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": null,
      "decoder": null,
      "model": {"type": "WordLevel", "vocab": {"<s>": 0, "[UNK]": 1, "hello": 2, "world": 3}, "unk_token": "[UNK]"}
    }"#;

    const TINY_BPE: &str = r#"{
      "version": "1.0",
      "added_tokens": [
        {"id": 0, "content": "<|begin|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": null,
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "post_processor": {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|begin|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|begin|>": {"id": "<|begin|>", "ids": [0], "tokens": ["<|begin|>"]}}
      },
      "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
      "model": {
        "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
        "vocab": {"<|begin|>": 0, "h": 1, "i": 2, "Ġ": 3, "hi": 4, "Ġhi": 5},
        "merges": [["h", "i"], ["Ġ", "hi"]]
      }
    }"#;

    #[test]
    fn from_json_wordlevel() {
        // No config: ids as the tokenizer.json makes them (no BOS).
        let t = LensTokenizer::from_json(TINY_WORDLEVEL.as_bytes(), None).unwrap();
        assert_eq!(t.encode("hello world").unwrap(), [2, 3]);
        assert_eq!(t.encode("hello there").unwrap(), [2, 1]);
        assert_eq!(t.bos_id(), None);
        assert_eq!(t.vocab_size(), 4);
        // The config asks for BOS: prepended.
        let cfg =
            br#"{"add_bos_token": true, "bos_token": "<s>", "eos_token": {"content": "world"}}"#;
        let t = LensTokenizer::from_json(TINY_WORDLEVEL.as_bytes(), Some(cfg)).unwrap();
        assert_eq!(t.encode("hello world").unwrap(), [0, 2, 3]);
        assert_eq!((t.bos_id(), t.eos_id()), (Some(0), Some(3)));
        assert_eq!(t.token_str(2), "hello");
        assert_eq!(t.token_str(0), "<s>");
    }

    #[test]
    fn from_json_bpe_with_post_processor_bos() {
        let t = LensTokenizer::from_json(TINY_BPE.as_bytes(), None).unwrap();
        assert_eq!(t.bos_id(), Some(0));
        assert_eq!(t.encode("hi hi").unwrap(), [0, 4, 5]);
        assert_eq!(t.token_str(5), " hi");
        assert_eq!(t.token_str(0), "<|begin|>");
        // add_bos_token true, already there: not doubled. False: left as is.
        for cfg in [
            &br#"{"add_bos_token": true, "bos_token": "<|begin|>"}"#[..],
            br#"{"add_bos_token": false}"#,
        ] {
            let t = LensTokenizer::from_json(TINY_BPE.as_bytes(), Some(cfg)).unwrap();
            assert_eq!(t.encode("hi").unwrap(), [0, 4]);
        }
    }

    #[test]
    fn from_json_errors() {
        let bad_model = TINY_WORDLEVEL.replace("\"WordLevel\"", "\"NoSuchModel\"");
        let e = LensTokenizer::from_json(bad_model.as_bytes(), None).unwrap_err();
        assert!(matches!(e, EngineError::Tokenizer(_)), "{e:?}");
        assert!(e.to_string().contains("tokenizer.json"), "{e}");
        assert!(LensTokenizer::from_json(b"not json", None).is_err());
        let e = LensTokenizer::from_json(TINY_WORDLEVEL.as_bytes(), Some(b"{oops")).unwrap_err();
        assert!(e.to_string().contains("tokenizer_config.json"), "{e}");
    }
}
