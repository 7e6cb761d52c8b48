//! A `tokenizers::Tokenizer` rebuilt from GGUF metadata, as transformers does.

use super::*;
use crate::error::Result;
use crate::weights::MetadataValue;
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
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub(super) const TOKEN_CONTROL: i64 = 3;
pub(super) const TOKEN_USER_DEFINED: i64 = 4;

/// Pre-tokenizer regexes by `tokenizer.ggml.pre`, as transformers'
/// `GGUF_PRE_TOKENIZER_SPLITS`.
pub(super) const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(super) const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(super) const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(super) const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(super) const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub(super) fn pre_tokenizer_split(pre: &str) -> Option<&'static str> {
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
pub(super) enum Kind {
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
pub(super) struct GgufTokenizer {
    pub(super) kind: Kind,
    pub(super) pre: Option<String>,
    pub(super) tokens: Vec<String>,
    pub(super) scores: Option<Vec<f64>>,
    pub(super) token_types: Vec<i64>,
    pub(super) merges: Option<Vec<String>>,
    pub(super) bos: Option<usize>,
    pub(super) eos: Option<usize>,
    pub(super) unk: Option<usize>,
    pub(super) pad: Option<usize>,
    pub(super) add_bos: bool,
    pub(super) add_eos: bool,
}

pub(super) fn meta_str<'a>(
    m: &'a HashMap<String, MetadataValue>,
    key: &str,
) -> Result<Option<&'a str>> {
    match m.get(key) {
        None => Ok(None),
        Some(MetadataValue::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(format!("GGUF metadata `{key}` is not a string"))),
    }
}

pub(super) fn meta_int(v: &MetadataValue) -> Option<i64> {
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

pub(super) fn meta_float(v: &MetadataValue) -> Option<f64> {
    match v {
        MetadataValue::F32(x) => Some(*x as f64),
        MetadataValue::F64(x) => Some(*x),
        other => meta_int(other).map(|i| i as f64),
    }
}

pub(super) fn meta_bool(m: &HashMap<String, MetadataValue>, key: &str) -> Option<bool> {
    match m.get(key) {
        Some(MetadataValue::Bool(b)) => Some(*b),
        Some(v) => meta_int(v).map(|i| i != 0),
        None => None,
    }
}

pub(super) fn meta_array<'a>(
    m: &'a HashMap<String, MetadataValue>,
    key: &str,
) -> Result<Option<&'a [MetadataValue]>> {
    match m.get(key) {
        None => Ok(None),
        Some(MetadataValue::Array(a)) => Ok(Some(a)),
        Some(_) => Err(err(format!("GGUF metadata `{key}` is not an array"))),
    }
}

pub(super) fn meta_strings(
    m: &HashMap<String, MetadataValue>,
    key: &str,
) -> Result<Option<Vec<String>>> {
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
pub(super) fn meta_token_id(
    m: &HashMap<String, MetadataValue>,
    key: &str,
    n: usize,
) -> Result<Option<usize>> {
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
    pub(super) fn read(m: &HashMap<String, MetadataValue>) -> Result<Self> {
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

    pub(super) fn build(self) -> Result<LensTokenizer> {
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
    pub(super) fn add_special_tokens(&self, tok: &mut Tokenizer) -> Result<()> {
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
pub(super) fn template(
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
pub(super) fn sentencepiece_decoder(strip_first_space: bool) -> Result<DecoderWrapper> {
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
