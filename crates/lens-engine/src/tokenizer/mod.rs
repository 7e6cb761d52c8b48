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
use std::collections::HashMap;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::pre_tokenizers::metaspace::PrependScheme;
use tokenizers::{Decoder, Tokenizer};

mod gguf;
mod merges;

use gguf::*;
use merges::*;

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
        // tokenizers panics on an error inside the `decoder` value (its
        // deserializer `expect`s one), found by fuzzing: that value is read
        // here first (the rest is skipped), so only a well-formed one reaches it.
        #[derive(serde::Deserialize)]
        struct DecoderOnly {
            #[allow(dead_code)]
            decoder: Option<serde_json::Value>,
        }
        serde_json::from_slice::<DecoderOnly>(tokenizer_json)
            .map_err(|e| err(format!("tokenizer.json is not valid JSON: {e}")))?;
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

    /// The characters of `text` each of [`Tokenizer::encode`]'s tokens covers,
    /// `[start, end)` counted in chars; none for a token the tokenizer adds
    /// (BOS and the like). Two tokenizers' tokens of one text line up by these.
    pub fn spans(&self, text: &str) -> Result<Vec<Option<[usize; 2]>>> {
        let enc = self
            .tok
            .encode_char_offsets(text, true)
            .map_err(|e| err(format!("cannot tokenize the text: {e}")))?;
        let mut spans: Vec<Option<[usize; 2]>> = enc
            .get_offsets()
            .iter()
            .zip(enc.get_special_tokens_mask())
            .map(|(&(s, e), &special)| (special == 0).then_some([s, e]))
            .collect();
        if self.force_bos {
            if let Some(bos) = self.bos {
                if enc.get_ids().first() != Some(&bos) {
                    spans.insert(0, None);
                }
            }
        }
        Ok(spans)
    }

    /// The one token a user names: `text` as the tokenizer splits it (with
    /// no BOS), e.g. `" Paris"`; or `id:N` for a raw id.
    pub fn token_id(&self, text: &str) -> Result<u32> {
        if let Some(n) = text.strip_prefix("id:") {
            let id: u32 = n
                .trim()
                .parse()
                .map_err(|_| err(format!("`{text}` is not a token id")))?;
            if (id as usize) >= self.vocab_size() {
                return Err(EngineError::TokenOutOfRange {
                    id,
                    vocab: self.vocab_size(),
                });
            }
            return Ok(id);
        }
        let enc = self
            .tok
            .encode(text, false)
            .map_err(|e| err(format!("cannot tokenize `{text}`: {e}")))?;
        match enc.get_ids() {
            [id] => Ok(*id),
            [] => Err(err(format!(
                "`{text}` is no token; name one, e.g. \" Paris\""
            ))),
            ids => Err(err(format!(
                "`{text}` is {} tokens ({}); name a single token",
                ids.len(),
                ids.iter()
                    .map(|&i| format!("{:?}", self.token_str(i)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::SplitDelimiterBehavior;

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
